//! The conversation list and history pages: summaries merged in, a draft
//! chat becoming real once its first message makes it, presence followed
//! for every 1:1, and pages of history loaded.

use missive_client::ClientError;
use missive_proto::ClientFrame;
use missive_proto::rest::{ConversationKind, ConversationList, History};

use super::super::model::{ConvKey, HistoryState, describe, msg_from_history, msg_preview};
use super::{App, Effect, Request};

impl App {
    pub(super) fn merge_conversations(&mut self, list: ConversationList) {
        let me = self.me.clone();
        for summary in list.conversations {
            let id = summary.conversation;
            // A new 1:1 chat whose first message made it real.
            if summary.kind == ConversationKind::Direct {
                let peer = summary
                    .members
                    .iter()
                    .find(|member| **member != me)
                    .cloned()
                    .unwrap_or_else(|| me.clone());
                self.adopt_draft(&peer, id);
            }
            self.by_id(id).apply_summary(summary, &me);
        }
        self.effects.retain(|e| *e != Effect::LoadConversations);
        if self.selected.is_none() {
            self.selected = self.visible().first().map(|c| c.key.clone());
        }
    }

    /// Turns the draft chat with `peer` (if any) into conversation `id`.
    pub(super) fn adopt_draft(&mut self, peer: &str, id: i64) {
        let draft = ConvKey::Draft(peer.to_owned());
        let real = ConvKey::Id(id);
        let Some(at) = self.conversations.iter().position(|c| c.key == draft) else {
            return;
        };
        if self.conversation(&real).is_some() {
            self.conversations.remove(at);
        } else {
            let conversation = &mut self.conversations[at];
            conversation.key = real.clone();
            conversation.history = HistoryState::NotLoaded;
        }
        for item in &mut self.outbox {
            if item.target == draft {
                item.target = real.clone();
            }
        }
        for key in [&mut self.open, &mut self.selected].into_iter().flatten() {
            if *key == draft {
                *key = real.clone();
            }
        }
        if self.open == Some(real) {
            self.effects.push(Effect::LoadHistory {
                conversation: id,
                before: None,
            });
        }
    }

    pub(super) fn subscribe_presence(&mut self) {
        if !self.online() {
            return;
        }
        let mut users: Vec<String> = self
            .conversations
            .iter()
            .filter_map(|c| c.peer(&self.me).map(str::to_owned))
            .filter(|peer| *peer != self.me)
            .collect();
        users.sort();
        users.dedup();
        let id = self.fresh_id(Request::Other("follow presence"));
        self.effects
            .push(Effect::Frame(ClientFrame::SubscribePresence {
                id: Some(id),
                users,
            }));
    }

    pub(super) fn on_history(
        &mut self,
        id: i64,
        older: bool,
        result: Result<History, ClientError>,
    ) {
        let me = self.me.clone();
        let page = match result {
            Ok(page) => page,
            Err(err) => {
                if let Some(c) = self.conversation_mut(&ConvKey::Id(id)) {
                    if c.history == HistoryState::Loading {
                        c.history = HistoryState::NotLoaded;
                    }
                }
                self.warn(format!("Could not load history: {}", describe(&err)));
                return;
            }
        };
        let conversation = self.by_id(id);
        let older_start = page.next_before;
        for message in page.messages {
            conversation.last_seq = conversation.last_seq.max(message.seq);
            if let Some(msg) = msg_from_history(message) {
                conversation.messages.insert(msg.seq, msg);
            }
        }
        conversation.history = match (older, conversation.history) {
            // An older page moves the start back; the newest page keeps an
            // older start already loaded.
            (true, _) | (false, HistoryState::NotLoaded | HistoryState::Loading) => {
                HistoryState::Loaded { older: older_start }
            }
            (false, loaded) => loaded,
        };
        if let Some((seq, msg)) = conversation.messages.iter().next_back() {
            let newer = conversation
                .last
                .as_ref()
                .is_none_or(|(_, _, ts)| msg.ts_ms >= *ts);
            if newer && *seq == conversation.last_seq {
                let group = conversation.kind == ConversationKind::Group;
                conversation.last =
                    Some((msg.from.clone(), msg_preview(msg, &me, group), msg.ts_ms));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::chat::model::HistoryState;
    use missive_proto::rest::HistoryMessage;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn search_filters_the_list_and_selecting_above_a_page_reads_the_one_before() {
        // Goal: `/` narrows the list by name as typed; moving up past the
        // oldest loaded message asks for the page before it, once.
        let mut app = App::new("alice", "http://x");
        online(
            &mut app,
            vec![
                summary(1, &["alice", "bob"], 60, 0),
                summary(2, &["alice", "carol"], 1, 0),
            ],
        );
        app.on_input(key(KeyCode::Char('/')));
        typed(&mut app, "car");
        let shown: Vec<String> = app.visible().iter().map(|c| c.title("alice")).collect();
        assert_eq!(shown, vec!["carol"]);
        app.on_input(key(KeyCode::Esc));
        assert_eq!(app.visible().len(), 2);

        app.take_effects();
        app.open_key(ConvKey::Id(1));
        assert!(app.take_effects().contains(&Effect::LoadHistory {
            conversation: 1,
            before: None
        }));
        let page = |seqs: std::ops::RangeInclusive<i64>, next_before: Option<i64>| History {
            messages: seqs
                .rev()
                .map(|seq| history_text(1, seq, "bob", &format!("text {seq}"), seq))
                .collect(),
            next_before,
        };
        app.on_event(AppEvent::History {
            conversation: 1,
            older: false,
            result: Ok(page(11..=60, Some(11))),
        });
        app.on_input(key(KeyCode::Up));
        assert_eq!(app.selected_message, Some(60));
        for _ in 0..5 {
            app.on_input(key(KeyCode::PageUp));
        }
        assert_eq!(app.selected_message, Some(11));
        assert_eq!(
            app.take_effects(),
            vec![Effect::LoadHistory {
                conversation: 1,
                before: Some(11)
            }]
        );
        app.on_input(key(KeyCode::Up));
        assert!(app.take_effects().is_empty(), "asked once while loading");
        app.on_event(AppEvent::History {
            conversation: 1,
            older: true,
            result: Ok(page(1..=10, None)),
        });
        app.on_input(key(KeyCode::Up));
        assert_eq!(app.selected_message, Some(10));
        let c = app.conversation(&ConvKey::Id(1)).unwrap();
        assert_eq!(c.messages.len(), 60);
        assert_eq!(c.history, HistoryState::Loaded { older: None });
    }

    #[test]
    fn the_list_puts_new_chats_first_then_the_latest_activity() {
        // Goal: a chat being started sits on top; the others follow by
        // their newest event, and a live message moves its conversation up.
        let mut app = App::new("alice", "http://x");
        let mut older = summary(1, &["alice", "bob"], 1, 0);
        let mut newer = summary(2, &["alice", "carol"], 1, 0);
        for (summary, ts_ms) in [(&mut older, 1_000), (&mut newer, 2_000)] {
            summary.last_message = Some(HistoryMessage {
                message_id: format!("m{ts_ms}"),
                client_msg_id: format!("c{ts_ms}"),
                ..history_text(summary.conversation, 1, "alice", "hi", ts_ms)
            });
        }
        online(&mut app, vec![older, newer]);
        let titles =
            |app: &App| -> Vec<String> { app.visible().iter().map(|c| c.title("alice")).collect() };
        assert_eq!(titles(&app), vec!["carol", "bob"]);
        app.on_event(text_arrives(1, 2, "bob", "news", 3_000));
        assert_eq!(titles(&app), vec!["bob", "carol"]);
        assert_eq!(app.conversation(&ConvKey::Id(1)).unwrap().unread, 1);
        app.on_input(key(KeyCode::Char('n')));
        typed(&mut app, "dave");
        app.on_input(key(KeyCode::Enter));
        assert_eq!(titles(&app), vec!["dave", "bob", "carol"]);
    }
}
