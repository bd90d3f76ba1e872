//! Helpers shared by the state's unit tests: keys typed, conversation
//! summaries, going online, the sends among the effects.

use missive_proto::ClientFrame;
use missive_proto::rest::{
    ConversationKind, ConversationList, ConversationSummary, MemberReceipts,
};
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
        members: members.iter().map(|m| m.to_string()).collect(),
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
