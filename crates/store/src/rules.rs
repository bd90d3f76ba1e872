//! What both adapters decide the same way: the codes stored for an event's
//! kind, and whether an event may be stored against its target (who may
//! edit or delete, the edit window, nothing on a deleted message). Each
//! adapter looks the target up and applies the effect in its own SQL; the
//! judgement between the two lives here once.

use missive_core::{AccountId, Seq, UnixMillis};

use crate::StoreError;
use crate::model::{Body, ConversationRecord, EventKind, NewMessage, Setting};

/// `messages.kind` codes, the same on every backend.
pub(crate) const EVENT_TEXT: i16 = 0;
pub(crate) const EVENT_SYSTEM: i16 = 1;
pub(crate) const EVENT_REACTION: i16 = 2;
pub(crate) const EVENT_EDIT: i16 = 3;
pub(crate) const EVENT_DELETE: i16 = 4;
/// Written as the literal `5` beside `EVENT_TEXT` in the SQL that counts
/// messages (unread counts, receipts, media, delete targets).
pub(crate) const EVENT_ENCRYPTED: i16 = 5;

pub(crate) fn event_kind(code: i64) -> EventKind {
    match i16::try_from(code).unwrap_or(EVENT_TEXT) {
        EVENT_SYSTEM => EventKind::System,
        EVENT_REACTION => EventKind::Reaction,
        EVENT_EDIT => EventKind::Edit,
        EVENT_DELETE => EventKind::Delete,
        EVENT_ENCRYPTED => EventKind::Encrypted,
        _ => EventKind::Text,
    }
}

/// The text message an event is about (replied to, reacted to, edited,
/// deleted), as the sender may see it.
pub(crate) struct Target {
    pub author: AccountId,
    pub created_ms: UnixMillis,
    pub deleted: bool,
    pub seq: Seq,
}

/// What the event row stores, once the event is allowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub kind: i16,
    pub body: String,
    /// The message replied to or acted on.
    pub target: Option<String>,
    /// For an event about an earlier message, that message's seq: members
    /// who joined after it never hear of the event.
    pub about_seq: Option<Seq>,
}

pub(crate) fn kind_code(kind: EventKind) -> i16 {
    match kind {
        EventKind::Text => EVENT_TEXT,
        EventKind::System => EVENT_SYSTEM,
        EventKind::Reaction => EVENT_REACTION,
        EventKind::Edit => EVENT_EDIT,
        EventKind::Delete => EVENT_DELETE,
        EventKind::Encrypted => EVENT_ENCRYPTED,
    }
}

/// When an event stored at `ts_ms` in a conversation whose timer is
/// `disappear_secs` disappears (`None`: no timer).
pub(crate) fn expiry(ts_ms: UnixMillis, disappear_secs: i64) -> Option<UnixMillis> {
    (disappear_secs > 0).then(|| ts_ms.saturating_add(disappear_secs.saturating_mul(1000)))
}

/// The system event recording a setting's change by `actor`.
pub(crate) fn setting_event(setting: Setting, actor: &str) -> serde_json::Value {
    match setting {
        Setting::Encrypt => serde_json::json!({"v": 1, "action": "encrypted", "actor": actor}),
        Setting::DisappearAfter(secs) => {
            serde_json::json!({"v": 1, "action": "timer", "actor": actor, "secs": secs})
        }
    }
}

/// The content type of media a client uploaded encrypted (`POST
/// /v1/media?encrypted=true`): the only media an encrypted message may
/// carry.
pub const ENCRYPTED_MEDIA_TYPE: &str = "application/octet-stream";

/// Whether `body` may go into a conversation that is (or is not)
/// end-to-end encrypted: there, every message is ciphertext, and replies,
/// edits and reactions travel inside it; only a delete (which makes the
/// server purge a ciphertext) is plain. Elsewhere, no ciphertext.
pub(crate) fn check_encryption(encrypted: bool, body: &Body) -> Result<(), StoreError> {
    match (encrypted, body) {
        (_, Body::Delete { .. }) => Ok(()),
        (true, Body::Encrypted { .. })
        | (false, Body::Text { .. } | Body::Reaction { .. } | Body::Edit { .. }) => Ok(()),
        (true, _) => Err(StoreError::ConversationEncrypted),
        (false, Body::Encrypted { .. }) => Err(StoreError::ConversationNotEncrypted),
    }
}

/// Judges `message` against its target (`None`: it has none, or the
/// sender may not see it). A reply needs a visible target too, but is not
/// "about" it: it reaches every member.
pub(crate) fn plan(message: &NewMessage, target: Option<&Target>) -> Result<Plan, StoreError> {
    let by_author = |target: &Target| target.author == message.sender_account;
    let about_seq = match (&message.body, target) {
        (Body::Text { reply_to: None, .. } | Body::Encrypted { .. }, _) => None,
        (_, None) => return Err(StoreError::UnknownMessage),
        (Body::Text { .. }, Some(_)) => None,
        (Body::Reaction { .. }, Some(target)) => {
            if target.deleted {
                return Err(StoreError::MessageDeleted);
            }
            Some(target.seq)
        }
        (Body::Edit { window_ms, .. }, Some(target)) => {
            if !by_author(target) {
                return Err(StoreError::NotAuthor);
            }
            if target.deleted {
                return Err(StoreError::MessageDeleted);
            }
            if message.now_ms.saturating_sub(target.created_ms) > *window_ms {
                return Err(StoreError::EditWindowClosed);
            }
            Some(target.seq)
        }
        (Body::Delete { .. }, Some(target)) => {
            if !by_author(target) {
                return Err(StoreError::NotAuthor);
            }
            if target.deleted {
                return Err(StoreError::MessageDeleted);
            }
            Some(target.seq)
        }
    };
    let (kind, body, target) = message.body.stored_form();
    Ok(Plan {
        kind: kind_code(kind),
        body,
        target: target.map(ToString::to_string),
        about_seq,
    })
}

/// What a send asked for, in 64 bits: stored with the message, so that a
/// later send under the same `(sender device, client_msg_id)` is told
/// apart as a retry (same fingerprint) or a reuse of the key for another
/// message (refused, `ClientMsgIdReused`), whatever edits or retention did
/// to the stored body since. FNV-1a: stable across builds and releases
/// (a retry may span an upgrade); the input is the sender's own request,
/// so there is no one to collide against.
pub(crate) fn fingerprint(message: &NewMessage) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (kind, body, target) = message.body.stored_form();
    let media = message.body.media();
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        // Length first, so field boundaries cannot shift.
        for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
    };
    feed(&message.conversation.0.to_le_bytes());
    feed(&kind_code(kind).to_le_bytes());
    feed(body.as_bytes());
    feed(target.map_or("", |target| target.as_str()).as_bytes());
    for media_id in media {
        feed(media_id.as_bytes());
    }
    hash as i64
}

/// The message id a body is about or replies to, if any.
pub(crate) fn target_of(body: &Body) -> Option<&missive_core::MessageId> {
    match body {
        Body::Text { reply_to, .. } => reply_to.as_ref(),
        Body::Reaction { target, .. } | Body::Edit { target, .. } | Body::Delete { target } => {
            Some(target)
        }
        Body::Encrypted { .. } => None,
    }
}

/// A conversation list's order: most recent activity first; ties: newest
/// conversation first.
pub(crate) fn sort_by_activity(records: &mut [ConversationRecord]) {
    records.sort_by_key(|record| {
        (
            std::cmp::Reverse(record.activity_ms),
            std::cmp::Reverse(record.conversation),
        )
    });
}

#[cfg(test)]
mod tests {
    use missive_core::{ClientMsgId, ConversationId, DeviceId, MessageId, MessageText};

    use super::*;

    fn message(sender: i64, now_ms: UnixMillis, body: Body) -> NewMessage {
        NewMessage {
            message_id: MessageId::generate(),
            conversation: ConversationId(1),
            sender_account: AccountId(sender),
            sender_device: DeviceId(1),
            client_msg_id: ClientMsgId::parse("c-1").expect("valid"),
            body,
            now_ms,
        }
    }

    fn target(author: i64, deleted: bool) -> Target {
        Target {
            author: AccountId(author),
            created_ms: 1_000,
            deleted,
            seq: 7,
        }
    }

    #[test]
    fn the_author_edits_within_the_window_and_nobody_acts_on_a_deleted_message() {
        // Goal: each refusal has its own error, and an allowed event names
        // its target and the target's seq (who may hear of it).
        let id = MessageId::generate();
        let text = MessageText::parse("new", 100).expect("valid");
        let edit = |window_ms| Body::Edit {
            target: id.clone(),
            text: text.clone(),
            window_ms,
        };
        let allowed = plan(&message(1, 1_500, edit(1_000)), Some(&target(1, false)));
        assert_eq!(
            allowed,
            Ok(Plan {
                kind: EVENT_EDIT,
                body: "new".into(),
                target: Some(id.to_string()),
                about_seq: Some(7),
            })
        );
        let late = plan(&message(1, 2_500, edit(1_000)), Some(&target(1, false)));
        assert_eq!(late, Err(StoreError::EditWindowClosed));
        let other = plan(&message(2, 1_500, edit(1_000)), Some(&target(1, false)));
        assert_eq!(other, Err(StoreError::NotAuthor));
        let delete = Body::Delete { target: id.clone() };
        let gone = plan(&message(1, 1_500, delete), Some(&target(1, true)));
        assert_eq!(gone, Err(StoreError::MessageDeleted));
        let react = Body::Reaction {
            target: id.clone(),
            emoji: Some("👍".into()),
        };
        assert_eq!(
            plan(&message(2, 1_500, react.clone()), Some(&target(1, true))),
            Err(StoreError::MessageDeleted)
        );
        assert_eq!(
            plan(&message(2, 1_500, react), None),
            Err(StoreError::UnknownMessage)
        );
    }
}
