//! JSON bodies of the REST endpoints under `/v1`.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// An operator's invite code; needed when the server's registration
    /// mode is `invite`, ignored when it is `open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// How this server takes registrations (`GET /v1/registration`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistrationInfo {
    /// `open`, `invite` or `closed`.
    pub mode: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub account_id: i64,
    pub username: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub device_id: i64,
    pub token: String,
    pub username: String,
    /// The device revoked to make room for this one (the account was at
    /// its device limit), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_device_id: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_id: i64,
    pub name: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// True for the device whose token made the request.
    pub current: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// Body of every non-2xx REST response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `PUT /v1/conversations/{id}/timer`: messages sent from now on
/// disappear `secs` after they were sent (0: off).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerRequest {
    pub secs: u32,
}

/// `POST /v1/groups`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
    /// Usernames besides the creator.
    #[serde(default)]
    pub members: Vec<String>,
    /// End-to-end encrypted from the start (default: only under the
    /// server's `e2ee = "required"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
}

/// `PATCH /v1/groups/{id}`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameGroupRequest {
    pub name: String,
}

/// `POST /v1/groups/{id}/members`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMembersRequest {
    pub members: Vec<String>,
}

/// A body naming one user: contacts, blocks, group admins.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsernameBody {
    pub username: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Admin,
    Member,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub username: String,
    pub role: MemberRole,
    pub joined_ms: i64,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub conversation: i64,
    pub name: String,
    /// End-to-end encrypted: its messages are ciphertext.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Messages disappear this long after they were sent (absent: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disappear_secs: u32,
    pub members: Vec<MemberInfo>,
    /// The seq of the group's latest event.
    pub last_seq: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReactionInfo {
    pub user: String,
    pub emoji: String,
}

/// One stored event as history returns it; the same fields as the
/// `message` frame plus the current reactions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    pub message_id: String,
    pub conversation: i64,
    pub seq: i64,
    pub from: String,
    pub from_device: i64,
    pub client_msg_id: String,
    pub kind: crate::MessageKind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<MediaRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
    pub ts_ms: i64,
    /// When it disappears (its conversation had a timer when it was sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionInfo>,
}

/// `GET /v1/conversations/{id}/messages`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub messages: Vec<HistoryMessage>,
    /// Pass as `before` to get the next (older) page; absent at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub conversation: i64,
    pub kind: ConversationKind,
    /// Group name; absent for 1:1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// End-to-end encrypted: its messages are ciphertext.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Messages disappear this long after they were sent (absent: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disappear_secs: u32,
    pub members: Vec<String>,
    pub last_seq: i64,
    pub read_seq: i64,
    /// `last_seq - read_seq`.
    pub unread: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<HistoryMessage>,
    /// The other members' receipt cursors: how far a device of each has
    /// received, and how far each has read.
    #[serde(default)]
    pub receipts: Vec<MemberReceipts>,
}

/// One member's receipt cursors in a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberReceipts {
    pub user: String,
    pub delivered_seq: i64,
    pub read_seq: i64,
}

/// `GET /v1/conversations`, most recent activity first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationList {
    pub conversations: Vec<ConversationSummary>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    pub user: String,
    pub ts_ms: i64,
}

/// `GET /v1/conversations/{id}/messages/{message_id}/receipts`:
/// WhatsApp's "message info".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub message_id: String,
    pub seq: i64,
    /// Members a device of whom has it: their delivered cursor covers it
    /// (time: when that cursor last moved).
    pub delivered: Vec<ReceiptEntry>,
    /// Members whose read pointer covers the message, time it moved there.
    pub read: Vec<ReceiptEntry>,
}

/// Contacts or blocked users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<String>,
}

/// Read through a string, so a value of the wrong type (`null`, `5`) is a
/// field error like any other (`invalid_field`), not what serde_json
/// reports for an enum given a non-string: a syntax error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum PresenceVisibility {
    Everyone,
    Contacts,
    Nobody,
}

impl TryFrom<String> for PresenceVisibility {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "everyone" => Ok(Self::Everyone),
            "contacts" => Ok(Self::Contacts),
            "nobody" => Ok(Self::Nobody),
            other => Err(format!(
                "unknown presence visibility {other:?}, expected one of everyone, contacts, nobody"
            )),
        }
    }
}

/// `GET`/`PUT /v1/privacy`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    pub presence: PresenceVisibility,
}

/// `(conversation, seq)`: "everything of this conversation up to `seq`",
/// as acks and receipt cursors say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckPoint {
    pub conversation: i64,
    pub seq: i64,
}

/// `POST /v1/poll`: long-poll for the events above this device's positions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// Removes this device's to-device messages up to this seq before
    /// polling, as the `to_device_ack` frame does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_device_ack: Option<i64>,
    /// Cumulative acks applied before polling, as the `ack` frame does
    /// (typically the last seq of each conversation the previous poll
    /// returned). At most 1,024.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<AckPoint>,
    /// How long to wait when nothing is waiting; at most 60,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PollResponse {
    /// Stored events above the device's positions (in seq order within
    /// each conversation), then any live frames (receipts, typing,
    /// presence). Unacked events come again in the next poll.
    pub frames: Vec<crate::ServerFrame>,
    /// Set when this poll ended because the device was revoked or a newer
    /// connection of it (poll or WebSocket) took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

/// `POST /v1/frames`: the replies to one client frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameReplies {
    pub frames: Vec<crate::ServerFrame>,
}

/// `POST /v1/media` → 201: the stored object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub media_id: String,
    /// Sniffed from the bytes; the request's Content-Type is ignored.
    pub content_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Pixel size, for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Whether `GET /v1/media/{id}/thumbnail` has a JPEG preview.
    #[serde(default)]
    pub thumbnail: bool,
    /// The file's name as uploaded (`?filename=`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// An attachment as messages and history describe it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaRef {
    pub media_id: String,
    pub content_type: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default)]
    pub thumbnail: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A device's identity keys for end-to-end encryption: unpadded base64 of
/// the Curve25519 and Ed25519 public keys (32 bytes each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityKeysBody {
    pub curve25519: String,
    pub ed25519: String,
}

/// A one-time Curve25519 public key, signed with the device's Ed25519
/// key (unpadded base64; the signature is 64 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneTimeKeyBody {
    pub key_id: String,
    pub key: String,
    pub signature: String,
}

/// `PUT /v1/keys`: the calling device's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUploadRequest {
    /// Required on the first upload; afterwards, if given, the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityKeysBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_time_keys: Vec<OneTimeKeyBody>,
}

/// `PUT /v1/keys` and `GET /v1/keys`: how many one-time keys the calling
/// device holds unclaimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    pub one_time_keys: u64,
}

/// One device's identity keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeysBody {
    pub device_id: i64,
    pub curve25519: String,
    pub ed25519: String,
}

/// `GET /v1/keys/{username}`: the user's devices that uploaded keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserKeys {
    pub user: String,
    pub devices: Vec<DeviceKeysBody>,
}

/// `POST /v1/keys/claim`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyClaimRequest {
    pub user: String,
}

/// One device's keys as a claim hands them out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedDeviceKey {
    pub device_id: i64,
    pub curve25519: String,
    pub ed25519: String,
    /// Absent when the device has none left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_key: Option<OneTimeKeyBody>,
}

/// `POST /v1/keys/claim`: a one-time key of each of the user's devices,
/// each handed out once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClaim {
    pub user: String,
    pub devices: Vec<ClaimedDeviceKey>,
}
