//! Helpers shared by the state's unit tests: keys typed, conversation
//! summaries, texts and their `sent` replies, going online, the sends
//! among the effects.

use missive_proto::rest::{
    ConversationKind, ConversationList, ConversationSummary, HistoryMessage, MemberReceipts,
};
use missive_proto::{ClientFrame, MessageKind, ServerFrame};
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

use super::{App, AppEvent, Effect};

pub(super) fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub(super) fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.on_input(key(KeyCode::Char(c)));
    }
}

pub(super) fn summary(
    id: i64,
    members: &[&str],
    last_seq: i64,
    unread: i64,
) -> ConversationSummary {
    ConversationSummary {
        conversation: id,
        kind: ConversationKind::Direct,
        name: None,
        encrypted: false,
        disappear_secs: 0,
        members: members.iter().map(ToString::to_string).collect(),
        last_seq,
        read_seq: last_seq - unread,
        unread,
        last_message: None,
        receipts: members
            .iter()
            .filter(|m| **m != "alice")
            .map(|m| MemberReceipts {
                user: m.to_string(),
                delivered_seq: 0,
                read_seq: 0,
            })
            .collect(),
    }
}

pub(super) fn online(app: &mut App, conversations: Vec<ConversationSummary>) {
    app.on_event(AppEvent::Online {
        conversations: ConversationList {
            conversations,
            next: None,
        },
    });
}

pub(super) fn sent_frames(effects: &[Effect]) -> Vec<&ClientFrame> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Frame(frame @ ClientFrame::Send { .. }) => Some(frame),
            _ => None,
        })
        .collect()
}

/// A text `from` wrote, stored as `seq` of `conversation` (message id
/// `m<seq>`, client id `c<seq>`), as history lists it.
pub(super) fn history_text(
    conversation: i64,
    seq: i64,
    from: &str,
    text: &str,
    ts_ms: i64,
) -> HistoryMessage {
    HistoryMessage {
        message_id: format!("m{seq}"),
        conversation,
        seq,
        from: from.into(),
        from_device: 1,
        client_msg_id: format!("c{seq}"),
        kind: MessageKind::Text,
        text: text.into(),
        media: Vec::new(),
        target: None,
        event: None,
        edited_ms: None,
        deleted: false,
        ts_ms,
        expires_ms: None,
        reactions: Vec::new(),
    }
}

/// The same text as it arrives live: a `message` frame.
pub(super) fn text_arrives(
    conversation: i64,
    seq: i64,
    from: &str,
    text: &str,
    ts_ms: i64,
) -> AppEvent {
    let m = history_text(conversation, seq, from, text, ts_ms);
    AppEvent::Frame(ServerFrame::Message {
        message_id: m.message_id,
        conversation,
        seq,
        from: m.from,
        from_device: m.from_device,
        client_msg_id: m.client_msg_id,
        kind: m.kind,
        text: m.text,
        media: m.media,
        target: m.target,
        event: m.event,
        edited_ms: m.edited_ms,
        deleted: m.deleted,
        ts_ms,
        expires_ms: m.expires_ms,
    })
}

/// The server's `sent` for our frame `id`: stored as `seq` of
/// `conversation`, now.
pub(super) fn sent(id: Option<String>, conversation: i64, seq: i64) -> AppEvent {
    AppEvent::Frame(ServerFrame::Sent {
        id,
        message_id: format!("m{seq}"),
        conversation,
        seq,
        ts_ms: super::now_ms(),
        duplicate: false,
        expires_ms: None,
    })
}
