//! What goes out once per connection: texts waiting in the outbox
//! (written under the client id they were given when typed, so a retry
//! stores nothing twice) and the open conversation's read cursor.

use std::time::Instant;

use missive_proto::ClientFrame;

use super::super::model::{ConvKey, Outgoing};
use super::{App, Effect, Request};

impl App {
    /// Writes every waiting text not yet written on this connection.
    pub(super) fn flush_outbox(&mut self) {
        if !self.online() {
            return;
        }
        let now = Instant::now();
        let epoch = self.epoch;
        let mut frames = Vec::new();
        for item in &mut self.outbox {
            let due = item.retry_at.is_none_or(|at| at <= now);
            if item.failed.is_some() || item.epoch == epoch || !due {
                continue;
            }
            item.epoch = epoch;
            item.retry_at = None;
            frames.push(send_frame(item));
        }
        for (client_msg_id, frame) in frames {
            self.requests
                .insert(client_msg_id.clone(), Request::Send(client_msg_id));
            self.effects.push(Effect::Frame(frame));
        }
    }

    /// Marks the open conversation read up to its newest event.
    pub(super) fn mark_read(&mut self) {
        if !self.online() {
            return;
        }
        let Some(c) = self.open_conversation_mut() else {
            return;
        };
        let Some(id) = c.id() else { return };
        c.unread = 0;
        if c.last_seq <= c.read_seq.max(c.read_asked) {
            return;
        }
        c.read_asked = c.last_seq;
        let seq = c.last_seq;
        let request = self.fresh_id(Request::Other("mark read"));
        self.effects.push(Effect::Frame(ClientFrame::Read {
            id: Some(request),
            conversation: id,
            seq,
        }));
    }
}

fn send_frame(item: &Outgoing) -> (String, ClientFrame) {
    let (to, conversation) = match &item.target {
        ConvKey::Id(id) => (None, Some(*id)),
        ConvKey::Draft(peer) => (Some(peer.clone()), None),
    };
    (
        item.client_msg_id.clone(),
        ClientFrame::Send {
            id: Some(item.client_msg_id.clone()),
            to,
            conversation,
            client_msg_id: item.client_msg_id.clone(),
            text: item.text.clone(),
            reply_to: item.reply_to.clone(),
            media: Vec::new(),
            // Sealed by the connection task (`crypto`) before it goes.
            encrypted: item.encrypted,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::chat::model::Tick;
    use missive_proto::{ErrorCode, MessageKind};
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn texts_go_sealed_in_encrypted_conversations_and_again_sealed_when_refused_plain() {
        // Goal: a text typed in a conversation listed as encrypted asks to
        // be sealed; one refused plain because encryption went on since the
        // list was read is sent again, sealed, under the same client id,
        // and shows as the sender's own encrypted message once `sent`.
        let mut app = App::new("alice", "http://x");
        let mut sealed = summary(8, &["alice", "carol"], 1, 0);
        sealed.encrypted = true;
        online(&mut app, vec![summary(7, &["alice", "bob"], 3, 0), sealed]);
        app.take_effects();
        app.open_key(ConvKey::Id(8));
        typed(&mut app, "secret");
        app.on_input(key(KeyCode::Enter));
        let effects = app.take_effects();
        let &ClientFrame::Send { encrypted, .. } = sent_frames(&effects)[0] else {
            unreachable!()
        };
        assert!(encrypted, "a text in an encrypted conversation is sealed");

        app.open_key(ConvKey::Id(7));
        typed(&mut app, "hello");
        app.on_input(key(KeyCode::Enter));
        let effects = app.take_effects();
        let ClientFrame::Send {
            id,
            client_msg_id,
            encrypted: false,
            ..
        } = sent_frames(&effects)[0].clone()
        else {
            panic!("a text in a plain conversation goes plain")
        };
        app.on_event(AppEvent::Frame(ServerFrame::Error {
            id: id.clone(),
            code: ErrorCode::ConversationEncrypted,
            message: "encrypted".into(),
            retry_after_ms: None,
        }));
        let effects = app.take_effects();
        let ClientFrame::Send {
            client_msg_id: again,
            encrypted: true,
            ..
        } = sent_frames(&effects)[0].clone()
        else {
            panic!("the refused text goes again, sealed")
        };
        assert_eq!(again, client_msg_id);
        assert!(
            app.conversation(&ConvKey::Id(7))
                .is_some_and(|c| c.encrypted)
        );
        app.on_event(sent(id, 7, 4));
        let c = app.conversation(&ConvKey::Id(7)).expect("conversation");
        assert_eq!(
            c.messages.get(&4).map(|m| (m.kind, m.text.as_str())),
            Some((MessageKind::Encrypted, "hello"))
        );
    }

    #[test]
    fn a_text_typed_offline_waits_and_goes_out_once_per_connection() {
        // Goal: the outbox keeps what was typed while away, writes it when
        // the connection comes back under the same client id, writes it
        // again only on a later connection, and leaves once `sent`.
        let mut app = App::new("alice", "http://x");
        online(&mut app, vec![summary(7, &["alice", "bob"], 3, 0)]);
        app.take_effects();
        app.on_event(AppEvent::Offline {
            reason: "gone".into(),
            retry_in: Duration::from_secs(1),
        });
        app.open_key(ConvKey::Id(7));
        typed(&mut app, "hello");
        app.on_input(key(KeyCode::Enter));
        assert!(sent_frames(&app.take_effects()).is_empty());
        assert_eq!(app.outbox.len(), 1);
        online(&mut app, vec![summary(7, &["alice", "bob"], 3, 0)]);
        let effects = app.take_effects();
        let first = sent_frames(&effects);
        assert_eq!(first.len(), 1);
        online(&mut app, vec![summary(7, &["alice", "bob"], 3, 0)]);
        let effects = app.take_effects();
        let again = sent_frames(&effects);
        assert_eq!(again, first, "the same frame, the same client id");
        let ClientFrame::Send { id, .. } = again[0] else {
            unreachable!()
        };
        app.on_event(sent(id.clone(), 7, 4));
        assert!(app.outbox.is_empty());
        let c = app.conversation(&ConvKey::Id(7)).unwrap();
        assert_eq!(c.messages[&4].text, "hello");
        assert_eq!(c.tick(4, "alice"), Tick::Sent);
    }

    #[test]
    fn a_refused_send_says_why_and_a_rate_limited_one_waits() {
        // Goal: a permanent refusal marks the text failed with a readable
        // reason; `rate_limited` keeps it for a later try.
        let mut app = App::new("alice", "http://x");
        online(&mut app, vec![]);
        app.on_input(key(KeyCode::Char('n')));
        typed(&mut app, "zed");
        app.on_input(key(KeyCode::Enter));
        assert_eq!(app.open, Some(ConvKey::Draft("zed".into())));
        typed(&mut app, "hi");
        app.on_input(key(KeyCode::Enter));
        let effects = app.take_effects();
        let frames = sent_frames(&effects);
        let ClientFrame::Send { id, to, .. } = frames[0] else {
            unreachable!()
        };
        assert_eq!(to.as_deref(), Some("zed"));
        app.on_event(AppEvent::Frame(ServerFrame::Error {
            id: id.clone(),
            code: ErrorCode::UnknownUser,
            message: "no user zed".into(),
            retry_after_ms: None,
        }));
        let notice = app.notice.as_ref().unwrap();
        assert!(notice.error);
        assert!(
            notice.text.contains("there is no such user"),
            "{}",
            notice.text
        );
        assert!(app.outbox[0].failed.is_some());
        typed(&mut app, "again");
        app.on_input(key(KeyCode::Enter));
        let effects = app.take_effects();
        let ClientFrame::Send { id, .. } = sent_frames(&effects)[0] else {
            unreachable!()
        };
        app.on_event(AppEvent::Frame(ServerFrame::Error {
            id: id.clone(),
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after_ms: Some(0),
        }));
        assert!(app.outbox[1].failed.is_none());
        app.on_tick();
        assert_eq!(sent_frames(&app.take_effects()).len(), 1);
    }
}
