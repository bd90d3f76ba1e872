//! What each frame from the server changes: stored events (texts,
//! reactions, edits, deletes, group events), receipts, typing, presence,
//! and the answers to the app's own requests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use missive_proto::rest::{ConversationKind, GroupInfo};
use missive_proto::{ErrorCode, MessageKind, ServerFrame, TypingState};

use super::super::model::{ConvKey, Msg, explain, msg_preview, refresh_preview, system_text};
use super::{App, Effect, Request, now_ms};

impl App {
    pub(super) fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Message { .. } => self.on_message(frame),
            ServerFrame::Delivered {
                conversation,
                by,
                seq,
                ..
            } => {
                let c = self.by_id(conversation);
                let cursor = c.receipts.entry(by).or_insert((0, 0));
                cursor.0 = cursor.0.max(seq);
            }
            ServerFrame::Read {
                conversation,
                by,
                seq,
                ..
            } => self.on_read(conversation, by, seq),
            ServerFrame::Expired {
                conversation,
                from_seq,
                to_seq,
            } => self.on_expired(conversation, from_seq, to_seq),
            ServerFrame::Sent {
                id,
                message_id,
                conversation,
                seq,
                ts_ms,
                expires_ms,
                ..
            } => {
                let request = id.and_then(|id| self.requests.remove(&id));
                self.on_sent(request, message_id, conversation, (seq, ts_ms, expires_ms));
            }
            ServerFrame::Group { id, group } => {
                let request = id.and_then(|id| self.requests.remove(&id));
                self.on_group(request, group);
            }
            ServerFrame::Typing {
                conversation,
                from,
                state,
                expires_ms,
            } => self.on_typing(conversation, from, state, expires_ms),
            ServerFrame::Presence {
                user,
                online,
                last_seen_ms,
            } => {
                self.presence.insert(user, (online, last_seen_ms));
            }
            // Taken by the connection task's keys (`crypto.rs`); a device
            // list change needs nothing here, since each sealed send reads
            // the members' keys afresh.
            ServerFrame::KeysLow { .. } | ServerFrame::ToDevice { .. } => {}
            // A new device of theirs is not verified: asked again.
            ServerFrame::DevicesChanged { user, .. } => {
                if self.peer_verified.remove(&user).is_some() {
                    self.effects.push(Effect::CheckVerified { user });
                }
            }
            frame @ (ServerFrame::Error { .. }
            | ServerFrame::ReadOk { .. }
            | ServerFrame::Ok { .. }
            | ServerFrame::Pong { .. }
            | ServerFrame::Acked { .. }
            | ServerFrame::Ready { .. }) => self.on_answer(frame),
        }
    }

    /// A stored event another device (or user) made.
    fn on_message(&mut self, frame: ServerFrame) {
        let ServerFrame::Message {
            message_id,
            conversation,
            seq,
            from,
            kind,
            text,
            media,
            target,
            event,
            edited_ms,
            deleted,
            ts_ms,
            expires_ms,
            ..
        } = frame
        else {
            return;
        };
        let msg = Msg {
            seq,
            message_id,
            from,
            kind,
            text: match (kind, &event) {
                (MessageKind::System, Some(event)) => system_text(event),
                _ => text,
            },
            media,
            reply_to: target,
            edited: edited_ms.is_some(),
            deleted,
            ts_ms,
            expires_ms,
            reactions: BTreeMap::new(),
        };
        if kind == MessageKind::System {
            self.on_system(conversation, event.as_ref());
        }
        self.on_event_stored(conversation, msg);
        if self.open == Some(ConvKey::Id(conversation)) {
            self.read_due = true;
        }
    }

    /// Events that disappeared before this device got them: skipped, and
    /// said so.
    fn on_expired(&mut self, conversation: i64, from_seq: i64, to_seq: i64) {
        let me = self.me.clone();
        let c = self.by_id(conversation);
        c.last_seq = c.last_seq.max(to_seq);
        let count = to_seq - from_seq + 1;
        let title = c.title(&me);
        self.warn(format!(
            "{count} event(s) in {title} expired before this device received them"
        ));
    }

    /// A read cursor moved: ours (from another device: fewer unread) or
    /// another member's (a read also means delivered).
    fn on_read(&mut self, conversation: i64, by: String, seq: i64) {
        let me = self.me.clone();
        let c = self.by_id(conversation);
        if by == me {
            c.read_seq = c.read_seq.max(seq);
            if c.read_seq >= c.last_seq {
                c.unread = 0;
            }
        } else {
            let cursor = c.receipts.entry(by).or_insert((0, 0));
            cursor.1 = cursor.1.max(seq);
            cursor.0 = cursor.0.max(seq);
        }
    }

    fn on_typing(&mut self, conversation: i64, from: String, state: TypingState, expires_ms: i64) {
        let c = self.by_id(conversation);
        match state {
            TypingState::Start => {
                let left = u64::try_from(expires_ms - now_ms())
                    .unwrap_or(0)
                    .min(10_000);
                c.typing
                    .insert(from, Instant::now() + Duration::from_millis(left));
            }
            TypingState::Stop => {
                c.typing.remove(&from);
            }
        }
    }

    /// The server's answer to one of the app's requests: a refusal, a read
    /// cursor kept, or a plain acknowledgement.
    fn on_answer(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Error {
                id,
                code,
                message,
                retry_after_ms,
            } => {
                let request = id.and_then(|id| self.requests.remove(&id));
                self.on_refused(request, code, &message, retry_after_ms);
            }
            ServerFrame::ReadOk {
                id,
                conversation,
                seq,
            } => {
                if let Some(id) = id {
                    self.requests.remove(&id);
                }
                let c = self.by_id(conversation);
                c.read_seq = c.read_seq.max(seq);
            }
            ServerFrame::Ok { id }
            | ServerFrame::Pong { id }
            | ServerFrame::Acked { id, .. }
            | ServerFrame::Ready { id, .. } => {
                if let Some(id) = id {
                    self.requests.remove(&id);
                }
            }
            // `on_frame` hands over only the answers above.
            _ => {}
        }
    }

    /// A stored event of ours or another's, from a frame or our own `sent`.
    pub(super) fn on_event_stored(&mut self, conversation: i64, msg: Msg) {
        let me = self.me.clone();
        let c = self.by_id(conversation);
        let new = msg.seq > c.last_seq;
        c.last_seq = c.last_seq.max(msg.seq);
        c.typing.remove(&msg.from);
        let target = msg
            .reply_to
            .as_ref()
            .and_then(|id| c.messages.values_mut().find(|m| &m.message_id == id));
        match msg.kind {
            MessageKind::Text | MessageKind::System | MessageKind::Encrypted => {
                if new && msg.kind != MessageKind::System && msg.from != me && !msg.deleted {
                    c.unread += 1;
                }
                if new || c.last.is_none() {
                    let group = c.kind == ConversationKind::Group;
                    c.last = Some((msg.from.clone(), msg_preview(&msg, &me, group), msg.ts_ms));
                }
                c.messages.insert(msg.seq, msg);
            }
            MessageKind::Reaction => {
                if let Some(target) = target {
                    if msg.text.is_empty() {
                        target.reactions.remove(&msg.from);
                    } else {
                        target.reactions.insert(msg.from, msg.text);
                    }
                }
            }
            MessageKind::Edit => {
                if let Some(target) = target {
                    target.text = msg.text;
                    target.edited = true;
                }
                refresh_preview(c, &me);
            }
            MessageKind::Delete => {
                if let Some(target) = target {
                    target.text.clear();
                    target.media.clear();
                    target.deleted = true;
                    target.reactions.clear();
                }
                refresh_preview(c, &me);
            }
        }
    }

    pub(super) fn on_system(&mut self, conversation: i64, event: Option<&serde_json::Value>) {
        let Some(event) = event else { return };
        let action = event["action"].as_str().unwrap_or_default();
        if action == "encrypted" {
            self.by_id(conversation).encrypted = true;
        }
        if action == "renamed" {
            if let Some(name) = event["name"].as_str() {
                self.by_id(conversation).name = Some(name.to_owned());
            }
        }
        if action != "renamed" {
            // Members or roles changed: read the conversation again.
            self.effects.push(Effect::LoadConversations);
        }
    }

    /// Where the outbox holds the text sent under `client_msg_id`.
    fn outbox_at(&self, client_msg_id: &str) -> Option<usize> {
        self.outbox
            .iter()
            .position(|item| item.client_msg_id == client_msg_id)
    }

    pub(super) fn on_sent(
        &mut self,
        request: Option<Request>,
        message_id: String,
        conversation: i64,
        (seq, ts_ms, expires_ms): (i64, i64, Option<i64>),
    ) {
        let me = self.me.clone();
        // The sending device gets no `message` frame for its own events:
        // what it did is applied here from the request.
        let (kind, text, reply_to, media) = match request {
            Some(Request::Send(client_msg_id)) => {
                let Some(at) = self.outbox_at(&client_msg_id) else {
                    return;
                };
                let item = self.outbox.remove(at);
                if let ConvKey::Draft(peer) = &item.target {
                    self.adopt_draft(peer, conversation);
                    self.effects.push(Effect::LoadConversations);
                }
                let kind = if item.encrypted {
                    MessageKind::Encrypted
                } else {
                    MessageKind::Text
                };
                (kind, item.text, item.reply_to, Vec::new())
            }
            Some(Request::React { target, emoji }) => (
                MessageKind::Reaction,
                emoji.unwrap_or_default(),
                Some(target),
                Vec::new(),
            ),
            Some(Request::Edit { target, text, .. }) => {
                (MessageKind::Edit, text, Some(target), Vec::new())
            }
            Some(Request::Delete { target, .. }) => {
                (MessageKind::Delete, String::new(), Some(target), Vec::new())
            }
            _ => return,
        };
        let msg = Msg {
            seq,
            message_id,
            from: me,
            kind,
            text,
            media,
            reply_to,
            edited: false,
            deleted: false,
            ts_ms,
            expires_ms,
            reactions: BTreeMap::new(),
        };
        self.on_event_stored(conversation, msg);
    }

    pub(super) fn on_group(&mut self, request: Option<Request>, group: GroupInfo) {
        let key = ConvKey::Id(group.conversation);
        let c = self.by_id(group.conversation);
        c.kind = ConversationKind::Group;
        c.name = Some(group.name.clone());
        c.members = group.members.iter().map(|m| m.username.clone()).collect();
        c.last_seq = c.last_seq.max(group.last_seq);
        if c.last.is_none() {
            c.last = Some((String::new(), String::from("group created"), now_ms()));
        }
        match request {
            Some(Request::CreateGroup) => {
                self.notify(format!("Created group {}", group.name));
                self.open_key(key);
            }
            Some(Request::AddMembers) => self.notify(format!("Added to {}", group.name)),
            _ => {}
        }
        self.effects.push(Effect::LoadConversations);
    }

    pub(super) fn on_refused(
        &mut self,
        request: Option<Request>,
        code: ErrorCode,
        message: &str,
        retry_after_ms: Option<u64>,
    ) {
        let why = explain(code, message);
        match request {
            Some(Request::Send(client_msg_id)) => {
                let Some(at) = self.outbox_at(&client_msg_id) else {
                    return;
                };
                let item = &mut self.outbox[at];
                let must_seal = matches!(
                    code,
                    ErrorCode::ConversationEncrypted | ErrorCode::EncryptionRequired
                );
                if must_seal && !item.encrypted {
                    // Encryption went on after the list was read (or the
                    // server requires it): the same text again, sealed.
                    item.encrypted = true;
                    item.epoch = 0;
                    let target = item.target.clone();
                    if let Some(c) = self.conversation_mut(&target) {
                        c.encrypted = true;
                    }
                    self.flush_outbox();
                } else if code == ErrorCode::RateLimited {
                    let wait = Duration::from_millis(retry_after_ms.unwrap_or(1_000));
                    item.retry_at = Some(Instant::now() + wait);
                    item.epoch = 0;
                    self.warn(format!(
                        "Sending too fast; retrying in {} s",
                        wait.as_secs().max(1)
                    ));
                } else {
                    item.failed = Some(why.clone());
                    self.warn(format!("Not sent: {why}"));
                }
            }
            Some(Request::React { .. }) => self.warn(format!("Could not react: {why}")),
            Some(Request::Edit { .. }) => self.warn(format!("Could not edit: {why}")),
            Some(Request::Delete { .. }) => self.warn(format!("Could not delete: {why}")),
            Some(Request::CreateGroup) => self.warn(format!("Could not create the group: {why}")),
            Some(Request::AddMembers) => self.warn(format!("Could not add members: {why}")),
            Some(Request::Other(what)) => self.warn(format!("Could not {what}: {why}")),
            None => self.warn(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::chat::model::Tick;
    use missive_proto::rest::ConversationKind;

    #[test]
    fn ticks_follow_the_receipt_cursors_and_unread_counts_only_others_texts() {
        // Goal: delivered and read ticks need every other member's cursor
        // past the message; our own texts and events of an open
        // conversation do not count as unread.
        let mut app = App::new("alice", "http://x");
        let mut group = summary(9, &["alice", "bob", "carol"], 0, 0);
        group.kind = ConversationKind::Group;
        group.name = Some("trip".into());
        online(&mut app, vec![group]);
        let message =
            |seq: i64, from: &str| text_arrives(9, seq, from, &format!("text {seq}"), now_ms());
        app.on_event(message(1, "alice"));
        app.on_event(message(2, "bob"));
        app.on_event(message(3, "carol"));
        let c = app.conversation(&ConvKey::Id(9)).unwrap();
        assert_eq!(c.unread, 2);
        assert_eq!(c.tick(1, "alice"), Tick::Sent);
        for by in ["bob", "carol"] {
            app.on_event(AppEvent::Frame(ServerFrame::Delivered {
                conversation: 9,
                by: by.into(),
                seq: 1,
                ts_ms: 0,
            }));
        }
        let c = app.conversation(&ConvKey::Id(9)).unwrap();
        assert_eq!(c.tick(1, "alice"), Tick::Delivered);
        app.on_event(AppEvent::Frame(ServerFrame::Read {
            conversation: 9,
            by: "bob".into(),
            seq: 3,
            ts_ms: 0,
        }));
        assert_eq!(
            app.conversation(&ConvKey::Id(9)).unwrap().tick(1, "alice"),
            Tick::Delivered
        );
        app.on_event(AppEvent::Frame(ServerFrame::Read {
            conversation: 9,
            by: "carol".into(),
            seq: 1,
            ts_ms: 0,
        }));
        assert_eq!(
            app.conversation(&ConvKey::Id(9)).unwrap().tick(1, "alice"),
            Tick::Read
        );
        app.take_effects();
        app.open_key(ConvKey::Id(9));
        assert!(
            app.take_effects()
                .contains(&Effect::Frame(ClientFrame::Read {
                    id: Some(format!("q{}", app.next_id)),
                    conversation: 9,
                    seq: 3,
                }))
        );
        assert_eq!(app.conversation(&ConvKey::Id(9)).unwrap().unread, 0);
    }
}
