//! Stable machine-readable error codes and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Every error a client can be told about. The snake_case name is the wire
/// code and never changes meaning once published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Framing.
    BadFrame,
    /// No endpoint at this path (REST).
    UnknownRoute,
    /// The path exists but not with this HTTP method.
    MethodNotAllowed,
    UnknownType,
    InvalidField,
    FrameTooLarge,
    // Session.
    NotAuthenticated,
    AlreadyAuthenticated,
    TokenInvalid,
    // Input validation.
    InvalidUsername,
    InvalidPassword,
    InvalidClientMsgId,
    /// A `client_msg_id` this device already used for a different message.
    ClientMsgIdReused,
    /// A key upload whose identity keys differ from the ones the device
    /// uploaded before (a new identity is a new device).
    IdentityKeyMismatch,
    EmptyText,
    TextTooLong,
    // Domain.
    UsernameTaken,
    UnknownUser,
    UnknownDevice,
    UnknownConversation,
    NotMember,
    TooManyDevices,
    WrongCredentials,
    /// An operator suspended the account: no login until it is resumed.
    AccountSuspended,
    /// Registration is closed on this server (`registration.mode`).
    RegistrationClosed,
    /// Registration needs an invite (`registration.mode = "invite"`) and
    /// none was given.
    InviteRequired,
    /// The invite is unknown, already used, or expired.
    InviteInvalid,
    UnknownMessage,
    NotAuthor,
    EditWindowClosed,
    MessageDeleted,
    Blocked,
    GroupFull,
    NotAdmin,
    NotAGroup,
    AlreadyMember,
    /// The user a group change names is not a member of the group.
    UnknownMember,
    UnknownMedia,
    /// A plain message, reply, edit or reaction sent into an end-to-end
    /// encrypted conversation (send ciphertext).
    ConversationEncrypted,
    /// Ciphertext sent into a conversation that is not encrypted.
    ConversationNotEncrypted,
    /// The server's policy (`e2ee = "required"`) refuses plaintext.
    EncryptionRequired,
    /// The server's policy (`e2ee = "off"`) refuses encrypted conversations.
    EncryptionDisabled,
    MediaTooLarge,
    MediaTypeNotAllowed,
    RateLimited,
    /// A count kept per account is at its configured maximum (contacts,
    /// blocks); the request changed nothing.
    LimitExceeded,
    /// A browser WebSocket from a page whose `Origin` is not allowed.
    OriginNotAllowed,
    // Operations.
    ShuttingDown,
    /// A backend (store) cannot be reached now; nothing changed, retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The wire spelling, e.g. `not_member`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownType => "unknown_type",
            Self::InvalidField => "invalid_field",
            Self::FrameTooLarge => "frame_too_large",
            Self::NotAuthenticated => "not_authenticated",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::TokenInvalid => "token_invalid",
            Self::InvalidUsername => "invalid_username",
            Self::InvalidPassword => "invalid_password",
            Self::InvalidClientMsgId => "invalid_client_msg_id",
            Self::UnknownRoute => "unknown_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::ClientMsgIdReused => "client_msg_id_reused",
            Self::IdentityKeyMismatch => "identity_key_mismatch",
            Self::EmptyText => "empty_text",
            Self::TextTooLong => "text_too_long",
            Self::UsernameTaken => "username_taken",
            Self::UnknownUser => "unknown_user",
            Self::UnknownDevice => "unknown_device",
            Self::UnknownConversation => "unknown_conversation",
            Self::NotMember => "not_member",
            Self::TooManyDevices => "too_many_devices",
            Self::WrongCredentials => "wrong_credentials",
            Self::AccountSuspended => "account_suspended",
            Self::RegistrationClosed => "registration_closed",
            Self::InviteRequired => "invite_required",
            Self::InviteInvalid => "invite_invalid",
            Self::UnknownMessage => "unknown_message",
            Self::NotAuthor => "not_author",
            Self::EditWindowClosed => "edit_window_closed",
            Self::MessageDeleted => "message_deleted",
            Self::Blocked => "blocked",
            Self::GroupFull => "group_full",
            Self::NotAdmin => "not_admin",
            Self::NotAGroup => "not_a_group",
            Self::AlreadyMember => "already_member",
            Self::UnknownMember => "unknown_member",
            Self::UnknownMedia => "unknown_media",
            Self::ConversationEncrypted => "conversation_encrypted",
            Self::ConversationNotEncrypted => "conversation_not_encrypted",
            Self::EncryptionRequired => "encryption_required",
            Self::EncryptionDisabled => "encryption_disabled",
            Self::MediaTooLarge => "media_too_large",
            Self::MediaTypeNotAllowed => "media_type_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::LimitExceeded => "limit_exceeded",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Maps a domain input-error code (see `missive_core::InputError`).
    pub fn from_input_code(code: &str) -> Self {
        match code {
            "invalid_username" => Self::InvalidUsername,
            "invalid_password" => Self::InvalidPassword,
            "invalid_client_msg_id" => Self::InvalidClientMsgId,
            "empty_text" => Self::EmptyText,
            "text_too_long" => Self::TextTooLong,
            "invalid_emoji" | "invalid_group_name" => Self::InvalidField,
            _ => Self::InvalidField,
        }
    }
}

/// WebSocket close codes missive uses besides the standard ones
/// (1000 normal, 1001 going away on shutdown, 1009 frame too large, 1013
/// try again later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// No valid `auth` frame arrived within the deadline.
    AuthTimeout,
    /// The first frame was not a valid `auth`.
    AuthFailed,
    /// The device was revoked (or logged out) while connected.
    Revoked,
    /// The same device connected again; this older connection is replaced.
    Replaced,
    /// The client did not read its frames fast enough; they stay queued.
    SlowConsumer,
    /// Nothing (not even a pong) arrived for three keepalive intervals.
    IdleTimeout,
    /// The server is shutting down (standard 1001, going away).
    GoingAway,
    /// A frame exceeded the size limit (standard 1009).
    FrameTooLarge,
    /// A text frame that is not valid UTF-8 (standard 1007).
    InvalidUtf8,
    /// The account has too many connections open; sent after `auth`, with
    /// a `rate_limited` error frame (standard 1013, try again later).
    TooManyConnections,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            Self::AuthTimeout => 4001,
            Self::AuthFailed => 4002,
            Self::Revoked => 4003,
            Self::Replaced => 4004,
            Self::SlowConsumer => 4008,
            Self::IdleTimeout => 4009,
            Self::GoingAway => 1001,
            Self::FrameTooLarge => 1009,
            Self::InvalidUtf8 => 1007,
            Self::TooManyConnections => 1013,
        }
    }

    /// The close reason text, also stable.
    pub fn reason(self) -> &'static str {
        match self {
            Self::AuthTimeout => "auth_timeout",
            Self::AuthFailed => "auth_failed",
            Self::Revoked => "revoked",
            Self::Replaced => "replaced",
            Self::SlowConsumer => "slow_consumer",
            Self::IdleTimeout => "idle_timeout",
            Self::GoingAway => "shutting_down",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::TooManyConnections => "too_many_connections",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_spelling() {
        // Goal: the hand-written spelling can never drift from serde's.
        for code in [
            ErrorCode::BadFrame,
            ErrorCode::UnknownRoute,
            ErrorCode::MethodNotAllowed,
            ErrorCode::UnknownType,
            ErrorCode::InvalidField,
            ErrorCode::FrameTooLarge,
            ErrorCode::NotAuthenticated,
            ErrorCode::AlreadyAuthenticated,
            ErrorCode::TokenInvalid,
            ErrorCode::InvalidUsername,
            ErrorCode::InvalidPassword,
            ErrorCode::InvalidClientMsgId,
            ErrorCode::ClientMsgIdReused,
            ErrorCode::EmptyText,
            ErrorCode::TextTooLong,
            ErrorCode::UsernameTaken,
            ErrorCode::UnknownUser,
            ErrorCode::UnknownDevice,
            ErrorCode::UnknownConversation,
            ErrorCode::NotMember,
            ErrorCode::IdentityKeyMismatch,
            ErrorCode::TooManyDevices,
            ErrorCode::WrongCredentials,
            ErrorCode::AccountSuspended,
            ErrorCode::RegistrationClosed,
            ErrorCode::InviteRequired,
            ErrorCode::InviteInvalid,
            ErrorCode::UnknownMessage,
            ErrorCode::NotAuthor,
            ErrorCode::EditWindowClosed,
            ErrorCode::MessageDeleted,
            ErrorCode::Blocked,
            ErrorCode::GroupFull,
            ErrorCode::NotAdmin,
            ErrorCode::NotAGroup,
            ErrorCode::AlreadyMember,
            ErrorCode::UnknownMember,
            ErrorCode::UnknownMedia,
            ErrorCode::ConversationEncrypted,
            ErrorCode::ConversationNotEncrypted,
            ErrorCode::EncryptionRequired,
            ErrorCode::EncryptionDisabled,
            ErrorCode::MediaTooLarge,
            ErrorCode::MediaTypeNotAllowed,
            ErrorCode::RateLimited,
            ErrorCode::LimitExceeded,
            ErrorCode::OriginNotAllowed,
            ErrorCode::ShuttingDown,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
