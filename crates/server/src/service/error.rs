//! The typed refusal every service returns: a stable wire code, a message
//! for people and, for rate limits, when to retry. Nothing here knows HTTP
//! or frames: the gateway alone maps it to a status (`gateway::refusal`) or
//! an `error` frame. A store failure is logged here and becomes `internal`,
//! so its text never reaches a client.

use std::time::Duration;

use missive_core::InputError;
use missive_proto::ErrorCode;

use missive_store::StoreError;

#[derive(Debug, Clone)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// How long a client should wait before retrying (rate limits).
    pub retry_after: Option<Duration>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `rate_limited`, to be retried after `wait`.
    pub fn rate_limited(wait: Duration, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

impl From<InputError> for ServiceError {
    fn from(err: InputError) -> Self {
        Self::new(ErrorCode::from_input_code(err.code), err.message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::UsernameTaken => Self::new(ErrorCode::UsernameTaken, "username is taken"),
            StoreError::ClientMsgIdReused => Self::new(
                ErrorCode::ClientMsgIdReused,
                "this client_msg_id was already used for a different message; retries must repeat the same request",
            ),
            StoreError::ConversationEncrypted => Self::new(
                ErrorCode::ConversationEncrypted,
                "this conversation is end-to-end encrypted: send ciphertext (\"encrypted\": true); replies, edits and reactions go inside it",
            ),
            StoreError::ConversationNotEncrypted => Self::new(
                ErrorCode::ConversationNotEncrypted,
                "this conversation is not end-to-end encrypted; turn encryption on first",
            ),
            StoreError::AccountSuspended => Self::new(
                ErrorCode::AccountSuspended,
                "this account is suspended; ask the server's operator",
            ),
            StoreError::InviteInvalid => Self::new(
                ErrorCode::InviteInvalid,
                "the invite is unknown, already used or expired",
            ),
            StoreError::TooManyDevices => Self::new(
                ErrorCode::TooManyDevices,
                "this account has the maximum number of devices; revoke one first",
            ),
            StoreError::UnknownConversation => {
                Self::new(ErrorCode::UnknownConversation, "no such conversation")
            }
            StoreError::NotMember => Self::new(
                ErrorCode::NotMember,
                "you are not a member of this conversation",
            ),
            StoreError::UnknownMessage => Self::new(
                ErrorCode::UnknownMessage,
                "no such message in this conversation",
            ),
            StoreError::SeqOutOfRange => Self::new(
                ErrorCode::InvalidField,
                "seq is above the conversation's last seq",
            ),
            StoreError::NotAuthor => Self::new(ErrorCode::NotAuthor, "only the author may do that"),
            StoreError::EditWindowClosed => Self::new(
                ErrorCode::EditWindowClosed,
                "the message is too old to edit",
            ),
            StoreError::MessageDeleted => {
                Self::new(ErrorCode::MessageDeleted, "the message was deleted")
            }
            StoreError::Blocked => Self::new(
                ErrorCode::Blocked,
                "you cannot message this user: one of you has blocked the other",
            ),
            StoreError::GroupFull => Self::new(ErrorCode::GroupFull, "the group is full"),
            StoreError::NotAdmin => {
                Self::new(ErrorCode::NotAdmin, "only a group admin may do that")
            }
            StoreError::NotAGroup => {
                Self::new(ErrorCode::NotAGroup, "this conversation is not a group")
            }
            StoreError::AlreadyMember => Self::new(ErrorCode::AlreadyMember, "already a member"),
            StoreError::UnknownMember => Self::new(
                ErrorCode::UnknownMember,
                "that user is not a member of the group",
            ),
            StoreError::UnknownMedia => Self::new(
                ErrorCode::UnknownMedia,
                "no such media of yours; upload it first",
            ),
            StoreError::IdentityKeyMismatch => Self::new(
                ErrorCode::IdentityKeyMismatch,
                "this device uploaded other identity keys; a new identity needs a new device (log in again)",
            ),
            StoreError::IdentityKeyMissing => Self::new(
                ErrorCode::InvalidField,
                "identity: this device has no identity keys yet; upload them with its first keys",
            ),
            StoreError::TooManyKeys => Self::new(
                ErrorCode::LimitExceeded,
                "one_time_keys: the device would hold more unclaimed one-time keys than allowed",
            ),
            StoreError::UnknownDevice => Self::new(
                ErrorCode::UnknownDevice,
                "no such device of that user (it may have been revoked)",
            ),
            StoreError::InboxFull => Self::new(
                ErrorCode::LimitExceeded,
                "a recipient device has as many to-device messages waiting as it may",
            ),
            StoreError::Closed => Self::new(ErrorCode::ShuttingDown, "the server is shutting down"),
            StoreError::Unavailable => Self::new(
                ErrorCode::Unavailable,
                "the store cannot be reached right now; nothing changed, retry later",
            ),
            StoreError::Full => Self::new(
                ErrorCode::Unavailable,
                "the server's storage is full; nothing changed, retry later",
            ),
            StoreError::Backend(detail) => {
                tracing::error!(%detail, "store failure");
                Self::internal()
            }
        }
    }
}
