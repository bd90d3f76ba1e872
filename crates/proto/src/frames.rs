//! WebSocket frames: JSON text messages tagged by `type`.
//!
//! Client frames may carry an `id` (a correlation id chosen by the client);
//! replies and errors caused by that frame echo it.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Must be the first frame of a connection.
    Auth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        token: String,
    },
    /// Send a text. Exactly one of `to` (a username, 1:1) or `conversation`.
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<i64>,
        client_msg_id: String,
        text: String,
        /// A message id in the same conversation this text replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
        /// Media ids you uploaded (`POST /v1/media`) to share with the
        /// conversation; with media, `text` may be empty (no caption).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        media: Vec<String>,
        /// `text` is ciphertext, for an end-to-end encrypted conversation
        /// (sent `to` a user with no conversation yet, it creates an
        /// encrypted one).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypted: bool,
    },
    /// Turns end-to-end encryption on in a conversation, for good (any
    /// member of a 1:1; an admin of a group). Answered `ok`.
    Encrypt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
    },
    /// Sets the conversation's disappearing timer: messages sent from now
    /// on disappear `secs` after they were sent (0: off). Who may: as for
    /// `encrypt`. Answered `ok`.
    SetTimer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        secs: u32,
    },
    /// Set (or, with no `emoji`, remove) your reaction to a message.
    React {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        client_msg_id: String,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
    },
    /// Replace the text of your own message (within the edit window).
    Edit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        client_msg_id: String,
        target: String,
        text: String,
    },
    /// Delete your own message for everyone (leaves a tombstone).
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        client_msg_id: String,
        target: String,
    },
    /// Tell the conversation's live members you are (or stopped) typing.
    /// Never stored.
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        state: TypingState,
    },
    /// Receive `presence` frames for these users (replaces the previous
    /// subscription of this connection).
    SubscribePresence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        users: Vec<String>,
    },
    // Group management over the socket: the same operations and rules as
    // the `/v1/groups` endpoints, answered with `group` (or `ok`).
    /// Create a group (you become its admin).
    GroupCreate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        name: String,
        #[serde(default)]
        members: Vec<String>,
        /// End-to-end encrypted from the start (the default under the
        /// server's `e2ee = "required"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encrypted: Option<bool>,
    },
    /// A group's name and members (members only).
    GroupInfo {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
    },
    /// Rename a group (admins).
    GroupRename {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        name: String,
    },
    /// Add members (admins).
    GroupAdd {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        members: Vec<String>,
    },
    /// Remove a member (admins).
    GroupRemove {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        username: String,
    },
    /// Make a member an admin (admins).
    GroupPromote {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        username: String,
    },
    /// Make an admin a plain member (admins).
    GroupDemote {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        username: String,
    },
    /// Leave a group; answered with `ok`.
    GroupLeave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
    },
    /// Cumulative: this device has every event of `conversation` up to and
    /// including `seq` that was meant for it. Its position there moves
    /// forward (never back) and those events are not sent to it again.
    /// Answered with `acked` only when the frame carries an `id`; refusals
    /// always get an `error`.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        seq: i64,
    },
    /// Mark a conversation as read up to and including `seq`.
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        seq: i64,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Opaque messages for single devices (Olm-encrypted key shares), each
    /// stored for its device until that device acks it; answered with `ok`.
    ToDevice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        messages: Vec<ToDeviceOut>,
    },
    /// Removes this device's to-device messages up to and including seq
    /// `up_to` (cumulative); answered with `ok`.
    ToDeviceAck {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        up_to: i64,
    },
}

/// One message of a `to_device` frame: for device `device_id` of `user`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToDeviceOut {
    pub user: String,
    pub device_id: i64,
    pub body: String,
}

/// Frames the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Authentication succeeded; queued frames follow, then live ones.
    Ready {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        username: String,
        device_id: i64,
    },
    /// The message is durably stored. `duplicate` is true when this
    /// client_msg_id was seen before and nothing new was stored.
    Sent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        message_id: String,
        conversation: i64,
        seq: i64,
        ts_ms: i64,
        duplicate: bool,
        /// When it disappears: its conversation has a timer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<i64>,
    },
    /// A stored event of a conversation above this device's position
    /// there. `kind` says what it is; see docs/PROTOCOL.md.
    Message {
        message_id: String,
        conversation: i64,
        seq: i64,
        from: String,
        from_device: i64,
        client_msg_id: String,
        #[serde(default)]
        kind: MessageKind,
        /// Text (text, edit), emoji (reaction; empty = removed), or empty.
        text: String,
        /// For `text`: attached media (download with `GET /v1/media/{id}`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        media: Vec<crate::rest::MediaRef>,
        /// The message replied to (text) or acted on (reaction/edit/delete).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        /// For `system`: what happened to the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<serde_json::Value>,
        /// For `text`: when it was last edited (the text is the current one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edited_ms: Option<i64>,
        /// For `text`: deleted for everyone (the text is empty).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
        ts_ms: i64,
        /// When it disappears: its conversation had a timer when it was
        /// sent. Clients remove it then; the server purges it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<i64>,
    },
    /// A receipt cursor moved: some device of `by` has received every event
    /// of `conversation` up to and including `seq`. Live only (a device
    /// that was away reads the cursors with `GET /v1/conversations`).
    Delivered {
        conversation: i64,
        by: String,
        seq: i64,
        ts_ms: i64,
    },
    /// A receipt cursor moved: `by` read `conversation` up to and including
    /// `seq`. Live only, like `delivered`.
    Read {
        conversation: i64,
        by: String,
        seq: i64,
        ts_ms: i64,
    },
    /// Events `from_seq..=to_seq` of `conversation` will not be delivered to
    /// this device: they passed the offline TTL (or the history retention)
    /// before it received them. Sent in order, where those events would
    /// have been; acking `to_seq` (or any later seq) moves past them.
    Expired {
        conversation: i64,
        from_seq: i64,
        to_seq: i64,
    },
    /// Reply to an `ack` that carried an `id`: the device's position in
    /// the conversation after it.
    Acked {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        seq: i64,
    },
    /// Reply to `read`.
    ReadOk {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation: i64,
        seq: i64,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Reply to a `group` frame: the group after the operation.
    Group {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        group: crate::rest::GroupInfo,
    },
    /// Reply to `typing`, `subscribe_presence` and `group` leave.
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A member of `conversation` started or stopped typing. Ephemeral:
    /// only live devices get it, and it lapses at `expires_ms`.
    Typing {
        conversation: i64,
        from: String,
        state: TypingState,
        expires_ms: i64,
    },
    /// A subscribed user's presence, as far as their privacy setting lets
    /// you see it. `last_seen_ms` is absent when hidden.
    Presence {
        user: String,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen_ms: Option<i64>,
    },
    /// A claim left this device fewer one-time keys than the server keeps
    /// asking for (`PUT /v1/keys` to add more): ephemeral, sent to the
    /// device while it is connected.
    KeysLow { one_time_keys: u64 },
    /// `user`'s list of devices with published keys changed: one of their
    /// devices published identity keys for the first time, or one that had
    /// was revoked. A client reads `GET /v1/users/{user}/keys` again before
    /// it next encrypts to them. Ephemeral: sent to the connected devices
    /// of everyone sharing a conversation with `user`, and to `user`'s
    /// other devices.
    DevicesChanged { user: String, ts_ms: i64 },
    /// A to-device message waiting for this device: delivered again on
    /// every new connection (and in every poll) until acked with
    /// `to_device_ack`; `seq` increases in the order they were sent.
    ToDevice {
        seq: i64,
        from: String,
        from_device: i64,
        body: String,
        ts_ms: i64,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
        /// With `rate_limited`: how long to wait before sending again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `(conversation, seq)` of a frame that stands for stored events (a
    /// `message`, or the last seq of an `expired` range): what a client
    /// acks. `None` for replies, receipts and ephemeral frames.
    pub fn ack_point(&self) -> Option<(i64, i64)> {
        match self {
            Self::Message {
                conversation, seq, ..
            } => Some((*conversation, *seq)),
            Self::Expired {
                conversation,
                to_seq,
                ..
            } => Some((*conversation, *to_seq)),
            _ => None,
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: no maps with non-string
        // keys, no custom Serialize impls.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// What a stored conversation event is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    /// A group change (created, added, removed, left, promoted, demoted,
    /// renamed), described by `event`.
    System,
    Reaction,
    Edit,
    Delete,
    /// A message of an end-to-end encrypted conversation: `text` is the
    /// sender's ciphertext, which only members' devices can decrypt.
    Encrypted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypingState {
    Start,
    Stop,
}

/// Why a client frame could not be decoded. Carries the correlation id when
/// the frame was JSON with a string `id`, so even errors can be matched.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeError {
    pub id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

const CLIENT_TYPES: &[&str] = &[
    "auth",
    "send",
    "react",
    "edit",
    "delete",
    "typing",
    "subscribe_presence",
    "encrypt",
    "set_timer",
    "group_create",
    "group_info",
    "group_rename",
    "group_add",
    "group_remove",
    "group_promote",
    "group_demote",
    "group_leave",
    "ack",
    "read",
    "ping",
    "to_device",
    "to_device_ack",
];

/// Decodes one text frame, classifying failures as `bad_frame` (not a JSON
/// object with a string `type`), `unknown_type`, or `invalid_field`.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|err| DecodeError {
        id: None,
        code: ErrorCode::BadFrame,
        message: format!("frame is not valid JSON: {err}"),
    })?;
    let Some(object) = value.as_object() else {
        return Err(DecodeError {
            id: None,
            code: ErrorCode::BadFrame,
            message: "frame must be a JSON object".into(),
        });
    };
    let id = object
        .get("id")
        .and_then(|id| id.as_str())
        .map(str::to_owned);
    let Some(frame_type) = object.get("type").and_then(|t| t.as_str()) else {
        return Err(DecodeError {
            id,
            code: ErrorCode::BadFrame,
            message: "frame must have a string field \"type\"".into(),
        });
    };
    if !CLIENT_TYPES.contains(&frame_type) {
        return Err(DecodeError {
            id,
            code: ErrorCode::UnknownType,
            message: format!("unknown frame type {frame_type:?}"),
        });
    }
    serde_json::from_value(value).map_err(|err| DecodeError {
        id,
        code: ErrorCode::InvalidField,
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(text: &str, code: ErrorCode, id: Option<&str>) {
        let err = decode_client_frame(text).unwrap_err();
        assert_eq!(err.code, code, "{text}: {}", err.message);
        assert_eq!(err.id.as_deref(), id, "{text}");
    }

    #[test]
    fn bad_frames_are_classified() {
        // Goal: every malformed input maps to one stable code, keeping the id.
        check_error("not json", ErrorCode::BadFrame, None);
        check_error("[1,2]", ErrorCode::BadFrame, None);
        check_error(r#"{"id":"7"}"#, ErrorCode::BadFrame, Some("7"));
        check_error(r#"{"type":5}"#, ErrorCode::BadFrame, None);
        check_error(
            r#"{"type":"fly","id":"x"}"#,
            ErrorCode::UnknownType,
            Some("x"),
        );
        check_error(
            r#"{"type":"send","id":"s"}"#,
            ErrorCode::InvalidField,
            Some("s"),
        );
        check_error(
            r#"{"type":"read","conversation":"one","seq":1}"#,
            ErrorCode::InvalidField,
            None,
        );
        check_error(
            r#"{"type":"ping","extra":1}"#,
            ErrorCode::InvalidField,
            None,
        );
    }

    #[test]
    fn client_frames_round_trip() {
        // Goal: what the client library encodes, the server decodes unchanged.
        let frames = [
            ClientFrame::Auth {
                id: None,
                token: "t".into(),
            },
            ClientFrame::Send {
                id: Some("1".into()),
                to: Some("bob".into()),
                conversation: None,
                client_msg_id: "c1".into(),
                text: "hi".into(),
                reply_to: None,
                media: vec!["m1".into()],
                encrypted: false,
            },
            ClientFrame::React {
                id: None,
                conversation: 3,
                client_msg_id: "c2".into(),
                target: "m".into(),
                emoji: Some("👍".into()),
            },
            ClientFrame::Typing {
                id: None,
                conversation: 3,
                state: TypingState::Start,
            },
            ClientFrame::GroupAdd {
                id: Some("g".into()),
                conversation: 3,
                members: vec!["bob".into()],
            },
            ClientFrame::Ack {
                id: None,
                conversation: 3,
                seq: 9,
            },
            ClientFrame::Read {
                id: None,
                conversation: 3,
                seq: 4,
            },
            ClientFrame::Ping { id: None },
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            assert_eq!(decode_client_frame(&text).unwrap(), frame, "{text}");
        }
    }

    #[test]
    fn server_frame_spelling() {
        // Goal: the documented JSON shape of `sent` is what goes on the wire.
        let frame = ServerFrame::Sent {
            id: Some("1".into()),
            message_id: "m".into(),
            conversation: 2,
            seq: 3,
            ts_ms: 4,
            duplicate: false,
            expires_ms: None,
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"sent","id":"1","message_id":"m","conversation":2,"seq":3,"ts_ms":4,"duplicate":false}"#
        );
        // And of `devices_changed`, which clients decode by this name.
        let frame = ServerFrame::DevicesChanged {
            user: "alice".into(),
            ts_ms: 5,
        };
        let text = frame.to_json();
        assert_eq!(
            text,
            r#"{"type":"devices_changed","user":"alice","ts_ms":5}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), frame);
    }
}
