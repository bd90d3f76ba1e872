//! The one mapping from stored events to the wire: history pages,
//! conversation summaries, the frames a device reads from the store and
//! the live frames the send path hands over all describe an event the same
//! way.

use missive_core::model::{EventKind, PendingItem, StoredEvent};
use missive_proto::rest::{HistoryMessage, ReactionInfo};
use missive_proto::{MessageKind, ServerFrame};

/// The wire form of a stored event, shared with the `message` frame.
fn wire_kind(kind: EventKind) -> MessageKind {
    match kind {
        EventKind::Text => MessageKind::Text,
        EventKind::Encrypted => MessageKind::Encrypted,
        EventKind::System => MessageKind::System,
        EventKind::Reaction => MessageKind::Reaction,
        EventKind::Edit => MessageKind::Edit,
        EventKind::Delete => MessageKind::Delete,
    }
}

/// The wire form of an attachment.
fn wire_media(media: missive_core::model::MediaRef) -> missive_proto::rest::MediaRef {
    missive_proto::rest::MediaRef {
        media_id: media.id,
        content_type: media.content_type,
        size_bytes: media.size_bytes,
        width: media.width,
        height: media.height,
        thumbnail: media.thumbnail,
        filename: media.filename,
    }
}

/// A system event's stored description as JSON; other kinds have none.
fn system_event(kind: EventKind, body: &str) -> Option<serde_json::Value> {
    (kind == EventKind::System)
        .then(|| serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

pub(crate) fn history_message(event: StoredEvent) -> HistoryMessage {
    let system = system_event(event.kind, &event.body);
    HistoryMessage {
        message_id: event.message_id.to_string(),
        conversation: event.conversation.0,
        seq: event.seq,
        from: event.from,
        from_device: event.from_device.0,
        client_msg_id: event.client_msg_id,
        kind: wire_kind(event.kind),
        text: if system.is_some() {
            String::new()
        } else {
            event.body
        },
        media: event.media.into_iter().map(wire_media).collect(),
        target: event.target.map(|target| target.to_string()),
        event: system,
        edited_ms: event.edited_ms,
        deleted: event.deleted,
        ts_ms: event.ts_ms,
        expires_ms: event.expires_ms,
        reactions: event
            .reactions
            .into_iter()
            .map(|(user, emoji)| ReactionInfo { user, emoji })
            .collect(),
    }
}

/// The frame that stands for what waits for a device.
pub(crate) fn pending_frame(item: PendingItem) -> ServerFrame {
    match item {
        PendingItem::Event(event) => event_frame(event),
        PendingItem::Expired {
            conversation,
            from_seq,
            to_seq,
        } => ServerFrame::Expired {
            conversation: conversation.0,
            from_seq,
            to_seq,
        },
    }
}

/// The `message` frame of a stored event: the history form, moved into
/// the frame, so the two describe an event the same way by construction.
pub(crate) fn event_frame(event: StoredEvent) -> ServerFrame {
    let shown = history_message(event);
    ServerFrame::Message {
        message_id: shown.message_id,
        conversation: shown.conversation,
        seq: shown.seq,
        from: shown.from,
        from_device: shown.from_device,
        client_msg_id: shown.client_msg_id,
        kind: shown.kind,
        text: shown.text,
        media: shown.media,
        target: shown.target,
        event: shown.event,
        edited_ms: shown.edited_ms,
        deleted: shown.deleted,
        ts_ms: shown.ts_ms,
        expires_ms: shown.expires_ms,
    }
}
