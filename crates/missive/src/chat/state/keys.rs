//! Keys: what each does in the list, the composer, a selected message
//! and a prompt.

use std::time::Instant;

use missive_proto::rest::ConversationKind;
use missive_proto::{ClientFrame, MessageKind, TypingState};
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::super::model::{ConnectionState, ConvKey, Conversation, HistoryState, Msg, Outgoing};
use super::super::text::Editor;
use super::super::verify::VerifyAction;
use super::{
    App, ComposeMode, Effect, Focus, Prompt, QUICK_REACTIONS, Request, TYPING_REPEAT,
    client_msg_id, usernames,
};

impl App {
    pub(crate) fn on_input(&mut self, event: Event) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Event::Paste(text) => {
                if let Some(editor) = self.prompt.as_mut().and_then(Prompt::editor_mut) {
                    editor.insert_str(&text.replace('\n', " "));
                } else if self.open.is_some() {
                    self.focus = Focus::Compose;
                    self.composer.insert_str(&text);
                }
            }
            _ => {}
        }
    }

    fn on_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        if self.prompt.is_some() {
            self.on_prompt_key(key);
            return;
        }
        match self.focus {
            Focus::List => self.on_list_key(key),
            Focus::Compose => self.on_compose_key(key),
            Focus::Messages => self.on_messages_key(key),
        }
    }

    fn request_quit(&mut self) {
        if self.outbox.iter().any(|item| item.failed.is_none()) {
            self.prompt = Some(Prompt::ConfirmQuit);
        } else {
            self.quit = true;
        }
    }

    fn on_list_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                if let Some(key) = self.selected.clone() {
                    self.open_key(key);
                }
            }
            KeyCode::Tab if self.open.is_some() => self.focus = Focus::Compose,
            KeyCode::Char('/') => {
                self.prompt = Some(Prompt::Search(Editor::with_text(&self.filter)));
            }
            KeyCode::Char('n') => self.prompt = Some(Prompt::NewChat(Editor::default())),
            KeyCode::Char('g') => self.prompt = Some(Prompt::GroupName(Editor::default())),
            KeyCode::Char('a') => self.ask_add_members(),
            KeyCode::Char('v') => self.start_verification(),
            KeyCode::Char('r') => self.reconnect(),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('q') => self.request_quit(),
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            _ => {}
        }
    }

    fn reconnect(&mut self) {
        if !self.online() {
            self.effects.push(Effect::Reconnect);
            self.connection = ConnectionState::Connecting;
        }
    }

    /// `v` on an encrypted 1:1: compare short codes with its other user.
    fn start_verification(&mut self) {
        let me = self.me.clone();
        let peer = self
            .selected
            .as_ref()
            .and_then(|key| self.conversation(key))
            .filter(|c| c.encrypted && c.kind == ConversationKind::Direct)
            .and_then(|c| c.peer(&me).map(str::to_owned));
        match peer {
            Some(user) => self
                .effects
                .push(Effect::Verify(VerifyAction::Start { user })),
            None => self.warn("Select an encrypted 1:1 chat to verify its keys"),
        }
    }

    fn ask_add_members(&mut self) {
        let group = self
            .selected
            .as_ref()
            .and_then(|key| self.conversation(key))
            .filter(|c| c.kind == ConversationKind::Group)
            .and_then(Conversation::id);
        match group {
            Some(conversation) => {
                self.prompt = Some(Prompt::AddMembers {
                    conversation,
                    editor: Editor::default(),
                });
            }
            None => self.warn("Select a group to add members to"),
        }
    }

    fn move_selection(&mut self, by: isize) {
        let keys: Vec<ConvKey> = self.visible().iter().map(|c| c.key.clone()).collect();
        if keys.is_empty() {
            return;
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|key| keys.iter().position(|k| k == key))
            .unwrap_or(0);
        let next = at.saturating_add_signed(by).min(keys.len() - 1);
        self.selected = Some(keys[next].clone());
    }

    pub(crate) fn open_key(&mut self, key: ConvKey) {
        if self.open.as_ref() != Some(&key) {
            if let Some((conversation, _)) = self.typing_sent {
                self.stop_typing(conversation);
            }
            self.compose_mode = ComposeMode::New;
            self.selected_message = None;
        }
        self.selected = Some(key.clone());
        self.open = Some(key.clone());
        self.focus = Focus::Compose;
        self.check_verified(&key);
        let load = self.conversation_mut(&key).and_then(|c| {
            if c.history != HistoryState::NotLoaded {
                return None;
            }
            c.history = HistoryState::Loading;
            c.id()
        });
        if let Some(conversation) = load {
            self.effects.push(Effect::LoadHistory {
                conversation,
                before: None,
            });
        }
        self.mark_read();
    }

    fn on_compose_key(&mut self, key: KeyEvent) {
        let alt_or_shift = key
            .modifiers
            .intersects(KeyModifiers::ALT | KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Enter if alt_or_shift => self.composer.insert('\n'),
            KeyCode::Enter => self.submit(),
            KeyCode::Esc => {
                if self.compose_mode == ComposeMode::New {
                    self.focus = Focus::List;
                } else {
                    if matches!(self.compose_mode, ComposeMode::Edit(_)) {
                        self.composer.take();
                    }
                    self.compose_mode = ComposeMode::New;
                }
            }
            KeyCode::Tab => self.focus = Focus::List,
            KeyCode::Up if !self.composer.up() => self.select_last_message(),
            KeyCode::PageUp => {
                self.select_last_message();
                self.move_message(-10);
            }
            KeyCode::Down => {
                self.composer.down();
            }
            KeyCode::Left => self.composer.left(),
            KeyCode::Right => self.composer.right(),
            KeyCode::Home => self.composer.home(),
            KeyCode::End => self.composer.end(),
            KeyCode::Backspace => self.composer.backspace(),
            KeyCode::Delete => self.composer.delete(),
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                self.composer.insert(c);
                self.typed();
            }
            _ => {}
        }
    }

    /// A key went into the composer: say we are typing (not more often
    /// than every few seconds).
    fn typed(&mut self) {
        self.last_key = Instant::now();
        let Some(conversation) = self.open_conversation().and_then(Conversation::id) else {
            return;
        };
        let fresh = self
            .typing_sent
            .is_some_and(|(c, at)| c == conversation && at.elapsed() < TYPING_REPEAT);
        if fresh || !self.online() {
            return;
        }
        self.typing_sent = Some((conversation, Instant::now()));
        self.effects.push(Effect::Frame(ClientFrame::Typing {
            id: None,
            conversation,
            state: TypingState::Start,
        }));
    }

    pub(super) fn stop_typing(&mut self, conversation: i64) {
        self.typing_sent = None;
        if self.online() {
            self.effects.push(Effect::Frame(ClientFrame::Typing {
                id: None,
                conversation,
                state: TypingState::Stop,
            }));
        }
    }

    fn submit(&mut self) {
        let Some(key) = self.open.clone() else { return };
        if self.composer.text().trim().is_empty() {
            return;
        }
        let mode = std::mem::replace(&mut self.compose_mode, ComposeMode::New);
        if let ComposeMode::Edit(target) = mode {
            let Some(conversation) = self.conversation(&key).and_then(Conversation::id) else {
                return;
            };
            let text = self.composer.text().to_owned();
            let request = self.fresh_id(Request::Edit {
                target: target.clone(),
                text: text.clone(),
            });
            let frame = ClientFrame::Edit {
                id: Some(request),
                conversation,
                client_msg_id: client_msg_id(self.next_id),
                target: target.clone(),
                text,
            };
            if self.send_online("edit", frame) {
                self.composer.take();
            } else {
                self.compose_mode = ComposeMode::Edit(target);
            }
            return;
        }
        let text = self.composer.take();
        if let Some((conversation, _)) = self.typing_sent {
            self.stop_typing(conversation);
        }
        self.next_id += 1;
        let encrypted = self.conversation(&key).is_some_and(|c| c.encrypted);
        self.outbox.push(Outgoing {
            client_msg_id: client_msg_id(self.next_id),
            target: key,
            text,
            reply_to: match mode {
                ComposeMode::Reply(target) => Some(target),
                _ => None,
            },
            encrypted,
            epoch: 0,
            retry_at: None,
            failed: None,
        });
        self.selected_message = None;
        self.flush_outbox();
    }

    /// Seqs of the open conversation's messages, oldest first.
    fn message_seqs(&self) -> Vec<i64> {
        self.open_conversation()
            .map(|c| c.messages.keys().copied().collect())
            .unwrap_or_default()
    }

    fn select_last_message(&mut self) {
        if let Some(last) = self.message_seqs().last() {
            self.selected_message = Some(*last);
            self.focus = Focus::Messages;
        }
    }

    fn move_message(&mut self, by: isize) {
        let seqs = self.message_seqs();
        let Some(current) = self.selected_message else {
            return;
        };
        let at = seqs.iter().position(|s| *s == current).unwrap_or(0);
        let wanted = at.checked_add_signed(by);
        match wanted {
            Some(next) if next < seqs.len() => self.selected_message = Some(seqs[next]),
            Some(_) => {
                self.selected_message = None;
                self.focus = Focus::Compose;
            }
            None => {
                self.selected_message = seqs.first().copied();
                self.load_older();
            }
        }
    }

    /// Asks for the page before the oldest loaded message, if there is one.
    fn load_older(&mut self) {
        let Some(c) = self.open_conversation_mut() else {
            return;
        };
        let (
            Some(id),
            HistoryState::Loaded {
                older: Some(before),
            },
        ) = (c.id(), c.history)
        else {
            return;
        };
        c.history = HistoryState::Loading;
        self.effects.push(Effect::LoadHistory {
            conversation: id,
            before: Some(before),
        });
    }

    pub(crate) fn selected_msg(&self) -> Option<&Msg> {
        let seq = self.selected_message?;
        self.open_conversation()?.messages.get(&seq)
    }

    fn on_messages_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.move_message(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_message(1),
            KeyCode::PageUp => self.move_message(-10),
            KeyCode::PageDown => self.move_message(10),
            KeyCode::Esc | KeyCode::Enter | KeyCode::Tab => self.back_to_composer(),
            KeyCode::Char('r') => self.reply_to_selected(),
            KeyCode::Char('e') => self.edit_selected(),
            KeyCode::Char('x') | KeyCode::Delete => self.ask_delete_selected(),
            KeyCode::Char('+' | 'a') => self.ask_react(),
            KeyCode::Char('-') => {
                self.react_selected(None);
                self.back_to_composer();
            }
            KeyCode::Char('d') => self.download_selected(),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('q') => self.request_quit(),
            _ => {}
        }
    }

    fn back_to_composer(&mut self) {
        self.selected_message = None;
        self.focus = Focus::Compose;
    }

    /// The selected message if it is a text that is still there.
    fn selected_text(&mut self) -> Option<(i64, Msg)> {
        let conversation = self.open_conversation().and_then(Conversation::id)?;
        let msg = self.selected_msg()?.clone();
        if msg.kind != MessageKind::Text || msg.deleted {
            self.warn("Select a message that is still there");
            return None;
        }
        Some((conversation, msg))
    }

    fn reply_to_selected(&mut self) {
        if let Some((_, msg)) = self.selected_text() {
            self.compose_mode = ComposeMode::Reply(msg.message_id);
            self.selected_message = None;
            self.focus = Focus::Compose;
        }
    }

    /// Edits and reactions would travel in the clear, which an encrypted
    /// conversation refuses (after the server saw them): not offered there.
    fn in_encrypted_conversation(&mut self, what: &str) -> bool {
        let encrypted = self
            .open
            .as_ref()
            .and_then(|key| self.conversation(key))
            .is_some_and(|c| c.encrypted);
        if encrypted {
            self.warn(format!("{what} are not available in encrypted chats yet"));
        }
        encrypted
    }

    fn edit_selected(&mut self) {
        if self.in_encrypted_conversation("Edits") {
            return;
        }
        let Some((_, msg)) = self.selected_text() else {
            return;
        };
        if msg.from != self.me {
            self.warn("You can edit only your own messages");
            return;
        }
        self.composer = Editor::with_text(&msg.text);
        self.compose_mode = ComposeMode::Edit(msg.message_id);
        self.selected_message = None;
        self.focus = Focus::Compose;
    }

    fn ask_delete_selected(&mut self) {
        let Some((conversation, msg)) = self.selected_text() else {
            return;
        };
        if msg.from != self.me {
            self.warn("You can delete only your own messages");
            return;
        }
        self.prompt = Some(Prompt::ConfirmDelete {
            conversation,
            target: msg.message_id,
        });
    }

    fn ask_react(&mut self) {
        if self.in_encrypted_conversation("Reactions") {
            return;
        }
        if let Some((conversation, msg)) = self.selected_text() {
            self.prompt = Some(Prompt::React {
                conversation,
                target: msg.message_id,
                editor: Editor::default(),
            });
        }
    }

    fn react_selected(&mut self, emoji: Option<String>) {
        if self.in_encrypted_conversation("Reactions") {
            return;
        }
        if let Some((conversation, msg)) = self.selected_text() {
            self.react(conversation, msg.message_id, emoji);
        }
    }

    fn react(&mut self, conversation: i64, target: String, emoji: Option<String>) {
        let request = self.fresh_id(Request::React {
            target: target.clone(),
            emoji: emoji.clone(),
        });
        let frame = ClientFrame::React {
            id: Some(request),
            conversation,
            client_msg_id: client_msg_id(self.next_id),
            target,
            emoji,
        };
        self.send_online("react", frame);
    }

    fn download_selected(&mut self) {
        let media = self
            .selected_msg()
            .map(|m| m.media.clone())
            .unwrap_or_default();
        if media.is_empty() {
            self.warn("This message has no attachment");
            return;
        }
        for item in media {
            self.effects.push(Effect::Download(item));
        }
        self.notify("Downloading…");
    }

    fn on_prompt_key(&mut self, key: KeyEvent) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        if let Some(editor) = prompt.editor_mut() {
            match key.code {
                KeyCode::Esc => {
                    if matches!(prompt, Prompt::Search(_)) {
                        self.filter.clear();
                    }
                    self.prompt = None;
                }
                KeyCode::Enter => {
                    if let Some(prompt) = self.prompt.take() {
                        self.submit_prompt(prompt);
                    }
                }
                KeyCode::Backspace => editor.backspace(),
                KeyCode::Delete => editor.delete(),
                KeyCode::Left => editor.left(),
                KeyCode::Right => editor.right(),
                KeyCode::Home => editor.home(),
                KeyCode::End => editor.end(),
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    editor.insert(c);
                }
                _ => {}
            }
            if let Some(Prompt::Search(editor)) = &self.prompt {
                self.filter = editor.text().to_owned();
            }
            return;
        }
        let yes = matches!(key.code, KeyCode::Char('y' | 'Y'));
        let Some(prompt) = self.prompt.take() else {
            return;
        };
        match prompt {
            Prompt::ConfirmDelete {
                conversation,
                target,
            } if yes => {
                let request = self.fresh_id(Request::Delete {
                    target: target.clone(),
                });
                let frame = ClientFrame::Delete {
                    id: Some(request),
                    conversation,
                    client_msg_id: client_msg_id(self.next_id),
                    target,
                };
                self.send_online("delete", frame);
                self.back_to_composer();
            }
            Prompt::ConfirmQuit if yes => self.quit = true,
            Prompt::VerifyOffer { .. } => {
                let action = if yes {
                    VerifyAction::Accept
                } else {
                    VerifyAction::Decline
                };
                self.effects.push(Effect::Verify(action));
            }
            Prompt::VerifyCompare { .. } => {
                let action = if yes {
                    VerifyAction::Match
                } else {
                    VerifyAction::Mismatch
                };
                self.effects.push(Effect::Verify(action));
            }
            _ => {}
        }
    }

    fn submit_prompt(&mut self, prompt: Prompt) {
        match prompt {
            Prompt::Search(editor) => {
                self.filter = editor.text().to_owned();
                self.selected = self.visible().first().map(|c| c.key.clone());
            }
            Prompt::NewChat(editor) => {
                let user = editor.text().trim().to_lowercase();
                if !user.is_empty() {
                    self.start_chat(&user);
                }
            }
            Prompt::GroupName(editor) => {
                let name = editor.text().trim().to_owned();
                if !name.is_empty() {
                    self.prompt = Some(Prompt::GroupMembers {
                        name,
                        editor: Editor::default(),
                    });
                }
            }
            Prompt::GroupMembers { name, editor } => {
                let members = usernames(editor.text());
                let request = self.fresh_id(Request::CreateGroup);
                self.send_online(
                    "create a group",
                    ClientFrame::GroupCreate {
                        id: Some(request),
                        name,
                        members,
                        encrypted: None,
                    },
                );
            }
            Prompt::AddMembers {
                conversation,
                editor,
            } => {
                let members = usernames(editor.text());
                if members.is_empty() {
                    return;
                }
                let request = self.fresh_id(Request::AddMembers);
                self.send_online(
                    "add members",
                    ClientFrame::GroupAdd {
                        id: Some(request),
                        conversation,
                        members,
                    },
                );
            }
            Prompt::React {
                conversation,
                target,
                editor,
            } => {
                let typed = editor.text().trim();
                let emoji = typed
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|at| QUICK_REACTIONS.get(at))
                    .map_or_else(|| typed.to_owned(), |emoji| (*emoji).to_owned());
                if !emoji.is_empty() {
                    self.react(conversation, target, Some(emoji));
                    self.back_to_composer();
                }
            }
            Prompt::ConfirmDelete { .. }
            | Prompt::ConfirmQuit
            | Prompt::VerifyOffer { .. }
            | Prompt::VerifyCompare { .. } => {}
        }
    }

    /// Opens the 1:1 chat with `user`, a new one if there is none yet (it
    /// becomes real with its first message).
    fn start_chat(&mut self, user: &str) {
        let existing = self
            .conversations
            .iter()
            .find(|c| c.peer(&self.me) == Some(user))
            .map(|c| c.key.clone());
        let key = match existing {
            Some(key) => key,
            None => {
                let draft = Conversation::draft(user, &self.me);
                let key = draft.key.clone();
                self.conversations.push(draft);
                key
            }
        };
        self.open_key(key);
    }
}
