//! What the terminal app knows and how it changes: conversations, loaded
//! messages, receipts, presence, the outbox and the screen's focus. It
//! never talks to the network itself: every change that needs the server
//! becomes an [`Effect`] the event loop carries out, and every answer comes
//! back as an [`AppEvent`]. That keeps the rules here testable without a
//! terminal or a socket. The records live in [`super::model`]; what each
//! key does, in [`keys`].

mod keys;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use missive_client::ClientError;
use missive_proto::rest::{ConversationKind, ConversationList, GroupInfo, History, MediaRef};
use missive_proto::{ClientFrame, ErrorCode, MessageKind, ServerFrame, TypingState};

use super::model::{
    ConnectionState, ConvKey, Conversation, HistoryState, Msg, Outgoing, describe, explain,
    msg_from_history, msg_preview, refresh_preview, system_text,
};
use super::text::Editor;
use super::verify::{VerifyAction, VerifyUpdate};

/// Quick reactions: the digit keys of the reaction prompt.
pub const QUICK_REACTIONS: [&str; 6] = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
/// How long a typing indicator we send lasts without another key.
const TYPING_IDLE: Duration = Duration::from_secs(5);
/// How often a `typing start` is repeated while keys keep coming.
const TYPING_REPEAT: Duration = Duration::from_secs(3);
/// How long a notice stays on the status line.
const NOTICE_FOR: Duration = Duration::from_secs(10);
pub const HISTORY_PAGE: u32 = 50;
/// What an encrypted message this device cannot decrypt shows instead.
pub const UNREADABLE: &str = "🔒 encrypted message: this device cannot decrypt it";

/// What happened outside the app: the connection, a frame, an answer.
pub enum AppEvent {
    Connecting,
    /// Connected and authenticated; `conversations` read after connecting.
    Online {
        conversations: ConversationList,
    },
    /// Lost; the connection task tries again after `retry_in`.
    Offline {
        reason: String,
        retry_in: Duration,
    },
    /// Will not reconnect by itself (revoked, or replaced by another
    /// connection of this device).
    Stopped {
        reason: String,
    },
    Frame(ServerFrame),
    Conversations(Result<ConversationList, ClientError>),
    History {
        conversation: i64,
        older: bool,
        result: Result<History, ClientError>,
    },
    /// A download finished: what to say on the status line.
    Downloaded(Result<String, String>),
    /// A warning from the keys (a room key that did not open, keys that
    /// could not be saved).
    Notice(String),
    /// A key verification moved on.
    Verify(VerifyUpdate),
    /// Whether every device of `user` is verified here.
    PeerVerified {
        user: String,
        verified: bool,
    },
}

/// What the app asks the event loop to do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    Frame(ClientFrame),
    Reconnect,
    LoadConversations,
    LoadHistory {
        conversation: i64,
        before: Option<i64>,
    },
    Download(MediaRef),
    /// The user's decision in a key verification.
    Verify(VerifyAction),
    /// Find out whether `user`'s devices are all verified here.
    CheckVerified {
        user: String,
    },
}

/// What a frame we sent with a correlation id was for.
#[derive(Clone, Debug)]
enum Request {
    Send(String),
    React {
        target: String,
        emoji: Option<String>,
    },
    Edit {
        target: String,
        text: String,
    },
    Delete {
        target: String,
    },
    CreateGroup,
    AddMembers,
    Other(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    List,
    Compose,
    Messages,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComposeMode {
    New,
    Reply(String),
    Edit(String),
}

/// A one-line question at the bottom of the screen.
#[derive(Clone, Debug)]
pub enum Prompt {
    Search(Editor),
    NewChat(Editor),
    GroupName(Editor),
    GroupMembers {
        name: String,
        editor: Editor,
    },
    AddMembers {
        conversation: i64,
        editor: Editor,
    },
    React {
        conversation: i64,
        target: String,
        editor: Editor,
    },
    ConfirmDelete {
        conversation: i64,
        target: String,
    },
    ConfirmQuit,
    /// Another device asks to verify keys.
    VerifyOffer {
        from: String,
        device: i64,
    },
    /// The codes to compare with the other user.
    VerifyCompare {
        user: String,
        code: String,
    },
}

impl Prompt {
    pub fn label(&self) -> String {
        match self {
            Self::Search(_) => "Search: ".into(),
            Self::NewChat(_) => "Chat with (username): ".into(),
            Self::GroupName(_) => "New group's name: ".into(),
            Self::GroupMembers { .. } => "Members (usernames, comma-separated): ".into(),
            Self::AddMembers { .. } => "Add members (usernames, comma-separated): ".into(),
            Self::React { .. } => {
                let quick: Vec<String> = QUICK_REACTIONS
                    .iter()
                    .enumerate()
                    .map(|(at, emoji)| format!("{} {emoji}", at + 1))
                    .collect();
                format!("React ({} or type one): ", quick.join(" "))
            }
            Self::ConfirmDelete { .. } => "Delete this message for everyone? (y/n) ".into(),
            Self::ConfirmQuit => {
                "Messages are still waiting to be sent; quit anyway? (y/n) ".into()
            }
            Self::VerifyOffer { from, device } => {
                format!("{from} (device {device}) asks to verify keys with you; accept? (y/n) ")
            }
            Self::VerifyCompare { user, code } => {
                format!("Does {user} see {code}? (y/n) ")
            }
        }
    }

    pub fn editor(&self) -> Option<&Editor> {
        match self {
            Self::Search(editor)
            | Self::NewChat(editor)
            | Self::GroupName(editor)
            | Self::GroupMembers { editor, .. }
            | Self::AddMembers { editor, .. }
            | Self::React { editor, .. } => Some(editor),
            Self::ConfirmDelete { .. }
            | Self::ConfirmQuit
            | Self::VerifyOffer { .. }
            | Self::VerifyCompare { .. } => None,
        }
    }

    fn editor_mut(&mut self) -> Option<&mut Editor> {
        match self {
            Self::Search(editor)
            | Self::NewChat(editor)
            | Self::GroupName(editor)
            | Self::GroupMembers { editor, .. }
            | Self::AddMembers { editor, .. }
            | Self::React { editor, .. } => Some(editor),
            Self::ConfirmDelete { .. }
            | Self::ConfirmQuit
            | Self::VerifyOffer { .. }
            | Self::VerifyCompare { .. } => None,
        }
    }
}

pub struct Notice {
    pub text: String,
    pub error: bool,
    shown: Instant,
}

pub struct App {
    pub me: String,
    pub server: String,
    pub connection: ConnectionState,
    epoch: u64,
    pub conversations: Vec<Conversation>,
    /// The conversation highlighted in the list.
    pub selected: Option<ConvKey>,
    /// The conversation on the right.
    pub open: Option<ConvKey>,
    pub focus: Focus,
    pub composer: Editor,
    pub compose_mode: ComposeMode,
    /// The highlighted message of the open conversation, by seq.
    pub selected_message: Option<i64>,
    pub prompt: Option<Prompt>,
    pub filter: String,
    pub help: bool,
    pub notice: Option<Notice>,
    /// Users whose every device with keys this device verified (true) or
    /// not (false); absent: not asked yet.
    pub peer_verified: BTreeMap<String, bool>,
    pub outbox: Vec<Outgoing>,
    requests: HashMap<String, Request>,
    next_id: u64,
    /// user → (online, last seen)
    pub presence: HashMap<String, (bool, Option<i64>)>,
    /// Where we last said we were typing, and when.
    typing_sent: Option<(i64, Instant)>,
    last_key: Instant,
    /// Events arrived in the open conversation: mark it read once the
    /// burst is handled.
    read_due: bool,
    effects: Vec<Effect>,
    pub quit: bool,
}

impl App {
    pub fn new(me: &str, server: &str) -> Self {
        Self {
            me: me.to_owned(),
            server: server.to_owned(),
            connection: ConnectionState::Connecting,
            epoch: 0,
            conversations: Vec::new(),
            selected: None,
            open: None,
            focus: Focus::List,
            composer: Editor::default(),
            compose_mode: ComposeMode::New,
            selected_message: None,
            prompt: None,
            filter: String::new(),
            help: false,
            notice: None,
            peer_verified: BTreeMap::new(),
            outbox: Vec::new(),
            requests: HashMap::new(),
            next_id: 0,
            presence: HashMap::new(),
            typing_sent: None,
            last_key: Instant::now(),
            read_due: false,
            effects: Vec::new(),
            quit: false,
        }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        if std::mem::take(&mut self.read_due) {
            self.mark_read();
        }
        std::mem::take(&mut self.effects)
    }

    pub fn online(&self) -> bool {
        self.connection == ConnectionState::Online
    }

    fn notify(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: false,
            shown: Instant::now(),
        });
    }

    fn warn(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            error: true,
            shown: Instant::now(),
        });
    }

    fn fresh_id(&mut self, request: Request) -> String {
        self.next_id += 1;
        let id = format!("q{}", self.next_id);
        self.requests.insert(id.clone(), request);
        id
    }

    /// Sends a frame that needs the connection, or says why it cannot.
    fn send_online(&mut self, what: &str, frame: ClientFrame) -> bool {
        if !self.online() {
            self.warn(format!("Offline: cannot {what} until reconnected"));
            return false;
        }
        self.effects.push(Effect::Frame(frame));
        true
    }

    pub fn conversation(&self, key: &ConvKey) -> Option<&Conversation> {
        self.conversations.iter().find(|c| &c.key == key)
    }

    fn conversation_mut(&mut self, key: &ConvKey) -> Option<&mut Conversation> {
        self.conversations.iter_mut().find(|c| &c.key == key)
    }

    fn by_id(&mut self, id: i64) -> &mut Conversation {
        let key = ConvKey::Id(id);
        if let Some(at) = self.conversations.iter().position(|c| c.key == key) {
            return &mut self.conversations[at];
        }
        // An event of a conversation the list does not have yet (a group
        // we were just added to): show it now, fill it in from the server.
        self.effects.push(Effect::LoadConversations);
        self.conversations.push(Conversation::placeholder(id));
        let last = self.conversations.len() - 1;
        &mut self.conversations[last]
    }

    fn open_conversation_mut(&mut self) -> Option<&mut Conversation> {
        let key = self.open.clone()?;
        self.conversation_mut(&key)
    }

    pub fn open_conversation(&self) -> Option<&Conversation> {
        self.open.as_ref().and_then(|key| self.conversation(key))
    }

    /// The list as shown: most recent activity first, new chats on top,
    /// filtered by the search.
    pub fn visible(&self) -> Vec<&Conversation> {
        let filter = self.filter.to_lowercase();
        let mut shown: Vec<&Conversation> = self
            .conversations
            .iter()
            .filter(|c| filter.is_empty() || c.title(&self.me).to_lowercase().contains(&filter))
            .collect();
        shown.sort_by_key(|c| {
            (
                !matches!(c.key, ConvKey::Draft(_)),
                std::cmp::Reverse(c.activity()),
                c.id(),
            )
        });
        shown
    }

    pub fn outbox_of(&self, key: &ConvKey) -> impl Iterator<Item = &Outgoing> {
        self.outbox.iter().filter(move |item| &item.target == key)
    }

    // ----- events from outside -----

    pub fn on_event(&mut self, event: AppEvent) {
        match event {
            AppEvent::Connecting => {
                if !matches!(self.connection, ConnectionState::Stopped(_)) {
                    self.connection = ConnectionState::Connecting;
                }
            }
            AppEvent::Online { conversations } => {
                self.epoch += 1;
                self.connection = ConnectionState::Online;
                for conversation in &mut self.conversations {
                    conversation.read_asked = 0;
                }
                self.merge_conversations(conversations);
                self.subscribe_presence();
                self.flush_outbox();
                if let Some(conversation) = self.open_conversation().and_then(Conversation::id) {
                    // Events sent while away arrive as frames; a page read
                    // now fills in whatever an edit or reaction changed.
                    self.effects.push(Effect::LoadHistory {
                        conversation,
                        before: None,
                    });
                }
                self.mark_read();
            }
            AppEvent::Offline { reason, retry_in } => {
                self.connection = ConnectionState::Offline {
                    reason,
                    retry_at: Instant::now() + retry_in,
                };
                self.typing_sent = None;
                for conversation in &mut self.conversations {
                    conversation.typing.clear();
                }
            }
            AppEvent::Stopped { reason } => {
                self.connection = ConnectionState::Stopped(reason);
            }
            AppEvent::Frame(frame) => self.on_frame(frame),
            AppEvent::Conversations(Ok(list)) => {
                self.merge_conversations(list);
                self.subscribe_presence();
            }
            AppEvent::Conversations(Err(err)) => {
                self.warn(format!("Could not load conversations: {}", describe(&err)));
            }
            AppEvent::History {
                conversation,
                older,
                result,
            } => self.on_history(conversation, older, result),
            AppEvent::Downloaded(Ok(text)) => self.notify(text),
            AppEvent::Notice(text) => self.warn(text),
            AppEvent::Verify(update) => self.on_verify(update),
            AppEvent::PeerVerified { user, verified } => {
                self.peer_verified.insert(user, verified);
            }
            AppEvent::Downloaded(Err(text)) => self.warn(text),
        }
    }

    fn merge_conversations(&mut self, list: ConversationList) {
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
    fn adopt_draft(&mut self, peer: &str, id: i64) {
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

    fn subscribe_presence(&mut self) {
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

    fn on_history(&mut self, id: i64, older: bool, result: Result<History, ClientError>) {
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

    fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Message {
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
            } => {
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
            } => {
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
            ServerFrame::Expired {
                conversation,
                from_seq,
                to_seq,
            } => {
                let me = self.me.clone();
                let c = self.by_id(conversation);
                c.last_seq = c.last_seq.max(to_seq);
                let count = to_seq - from_seq + 1;
                let title = c.title(&me);
                self.warn(format!(
                    "{count} event(s) in {title} expired before this device received them"
                ));
            }
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
            } => {
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
        }
    }

    /// A stored event of ours or another's, from a frame or our own `sent`.
    fn on_event_stored(&mut self, conversation: i64, msg: Msg) {
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

    fn on_verify(&mut self, update: VerifyUpdate) {
        match update {
            VerifyUpdate::Offered { from, device } => {
                self.prompt = Some(Prompt::VerifyOffer { from, device });
            }
            VerifyUpdate::Waiting { user } => self.notify(format!("Verifying keys with {user}…")),
            VerifyUpdate::Compare { user, code } => {
                self.prompt = Some(Prompt::VerifyCompare { user, code });
            }
            VerifyUpdate::Verified {
                user,
                device,
                forwarded,
            } => {
                self.notify(match forwarded {
                    0 => format!("✓ {user}'s device {device} is verified"),
                    n => format!(
                        "✓ your device {device} is verified and has {n} room key{} from this one",
                        if n == 1 { "" } else { "s" }
                    ),
                });
                self.peer_verified.remove(&user);
                self.effects.push(Effect::CheckVerified { user });
            }
            VerifyUpdate::Failed(why) => {
                if matches!(
                    self.prompt,
                    Some(Prompt::VerifyOffer { .. } | Prompt::VerifyCompare { .. })
                ) {
                    self.prompt = None;
                }
                self.warn(why);
            }
        }
    }

    /// An encrypted 1:1 just opened: whether its other user is verified
    /// here, if not known yet.
    fn check_verified(&mut self, key: &ConvKey) {
        let me = self.me.clone();
        let peer = self
            .conversation(key)
            .filter(|c| c.encrypted && c.kind == ConversationKind::Direct)
            .and_then(|c| c.peer(&me).map(str::to_owned));
        if let Some(user) = peer.filter(|user| !self.peer_verified.contains_key(user)) {
            self.effects.push(Effect::CheckVerified { user });
        }
    }

    fn on_system(&mut self, conversation: i64, event: Option<&serde_json::Value>) {
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

    fn on_sent(
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
                let Some(at) = self
                    .outbox
                    .iter()
                    .position(|item| item.client_msg_id == client_msg_id)
                else {
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

    fn on_group(&mut self, request: Option<Request>, group: GroupInfo) {
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

    fn on_refused(
        &mut self,
        request: Option<Request>,
        code: ErrorCode,
        message: &str,
        retry_after_ms: Option<u64>,
    ) {
        let why = explain(code, message);
        match request {
            Some(Request::Send(client_msg_id)) => {
                let Some(item) = self
                    .outbox
                    .iter_mut()
                    .find(|item| item.client_msg_id == client_msg_id)
                else {
                    return;
                };
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

    /// Writes every waiting text not yet written on this connection.
    fn flush_outbox(&mut self) {
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
    fn mark_read(&mut self) {
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

    pub fn on_tick(&mut self) {
        let now = Instant::now();
        let now_ms = now_ms();
        for conversation in &mut self.conversations {
            conversation.typing.retain(|_, until| *until > now);
            // Disappearing messages leave the screen at their time.
            conversation
                .messages
                .retain(|_, msg| msg.expires_ms.is_none_or(|at| at > now_ms));
        }
        if self
            .notice
            .as_ref()
            .is_some_and(|n| n.shown.elapsed() > NOTICE_FOR)
        {
            self.notice = None;
        }
        if let Some((conversation, _)) = self.typing_sent {
            if self.last_key.elapsed() > TYPING_IDLE {
                self.stop_typing(conversation);
            }
        }
        if self
            .outbox
            .iter()
            .any(|item| item.retry_at.is_some_and(|at| at <= now))
        {
            self.flush_outbox();
        }
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

/// A client message id unique to this device: the clock and a counter.
fn client_msg_id(counter: u64) -> String {
    format!("tui-{}-{counter}", now_ms())
}

fn usernames(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(|name| name.trim().to_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::Tick;
    use missive_proto::rest::{ConversationSummary, HistoryMessage, MemberReceipts};
    use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            app.on_input(key(KeyCode::Char(c)));
        }
    }

    fn summary(id: i64, members: &[&str], last_seq: i64, unread: i64) -> ConversationSummary {
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

    fn online(app: &mut App, conversations: Vec<ConversationSummary>) {
        app.on_event(AppEvent::Online {
            conversations: ConversationList {
                conversations,
                next: None,
            },
        });
    }

    fn sent_frames(effects: &[Effect]) -> Vec<&ClientFrame> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Frame(frame @ ClientFrame::Send { .. }) => Some(frame),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn verification_starts_with_v_and_prompts_for_each_decision() {
        // Goal: `v` on an encrypted 1:1 asks to verify its other user; a
        // request from another device and the codes to compare each show
        // as a y/n prompt whose answer becomes the matching action; a
        // plain chat cannot be verified from here.
        let verify_effects = |effects: Vec<Effect>| -> Vec<VerifyAction> {
            effects
                .into_iter()
                .filter_map(|effect| match effect {
                    Effect::Verify(action) => Some(action),
                    _ => None,
                })
                .collect()
        };
        let mut app = App::new("alice", "http://x");
        let mut sealed = summary(8, &["alice", "carol"], 1, 0);
        sealed.encrypted = true;
        online(&mut app, vec![summary(7, &["alice", "bob"], 3, 0), sealed]);
        app.take_effects();
        app.selected = Some(ConvKey::Id(7));
        app.focus = Focus::List;
        app.on_input(key(KeyCode::Char('v')));
        assert!(
            verify_effects(app.take_effects()).is_empty(),
            "not encrypted"
        );
        app.selected = Some(ConvKey::Id(8));
        app.on_input(key(KeyCode::Char('v')));
        assert_eq!(
            verify_effects(app.take_effects()),
            vec![VerifyAction::Start {
                user: "carol".into()
            }]
        );
        app.on_event(AppEvent::Verify(VerifyUpdate::Offered {
            from: "dave".into(),
            device: 4,
        }));
        assert!(
            app.prompt
                .as_ref()
                .is_some_and(|p| p.label().contains("dave (device 4)"))
        );
        app.on_input(key(KeyCode::Char('y')));
        assert_eq!(
            verify_effects(app.take_effects()),
            vec![VerifyAction::Accept]
        );
        app.on_event(AppEvent::Verify(VerifyUpdate::Compare {
            user: "dave".into(),
            code: "🐶 Dog".into(),
        }));
        app.on_input(key(KeyCode::Char('n')));
        assert_eq!(
            verify_effects(app.take_effects()),
            vec![VerifyAction::Mismatch]
        );
        assert!(app.prompt.is_none());
    }

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
        app.on_event(AppEvent::Frame(ServerFrame::Sent {
            id,
            message_id: "m4".into(),
            conversation: 7,
            seq: 4,
            ts_ms: now_ms(),
            duplicate: false,
            expires_ms: None,
        }));
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
        app.on_event(AppEvent::Frame(ServerFrame::Sent {
            id: id.clone(),
            message_id: "m4".into(),
            conversation: 7,
            seq: 4,
            ts_ms: now_ms(),
            duplicate: false,
            expires_ms: None,
        }));
        assert!(app.outbox.is_empty());
        let c = app.conversation(&ConvKey::Id(7)).unwrap();
        assert_eq!(c.messages[&4].text, "hello");
        assert_eq!(c.tick(4, "alice"), Tick::Sent);
    }

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
        let message = |seq: i64, from: &str| {
            AppEvent::Frame(ServerFrame::Message {
                message_id: format!("m{seq}"),
                conversation: 9,
                seq,
                from: from.into(),
                from_device: 1,
                client_msg_id: format!("c{seq}"),
                kind: MessageKind::Text,
                text: format!("text {seq}"),
                media: Vec::new(),
                target: None,
                event: None,
                edited_ms: None,
                deleted: false,
                ts_ms: now_ms(),
                expires_ms: None,
            })
        };
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
                .map(|seq| HistoryMessage {
                    message_id: format!("m{seq}"),
                    conversation: 1,
                    seq,
                    from: "bob".into(),
                    from_device: 2,
                    client_msg_id: format!("c{seq}"),
                    kind: MessageKind::Text,
                    text: format!("text {seq}"),
                    media: Vec::new(),
                    target: None,
                    event: None,
                    edited_ms: None,
                    deleted: false,
                    ts_ms: seq,
                    expires_ms: None,
                    reactions: Vec::new(),
                })
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
                conversation: summary.conversation,
                seq: 1,
                from: "alice".into(),
                from_device: 1,
                client_msg_id: format!("c{ts_ms}"),
                kind: MessageKind::Text,
                text: "hi".into(),
                media: Vec::new(),
                target: None,
                event: None,
                edited_ms: None,
                deleted: false,
                ts_ms,
                expires_ms: None,
                reactions: Vec::new(),
            });
        }
        online(&mut app, vec![older, newer]);
        let titles =
            |app: &App| -> Vec<String> { app.visible().iter().map(|c| c.title("alice")).collect() };
        assert_eq!(titles(&app), vec!["carol", "bob"]);
        app.on_event(AppEvent::Frame(ServerFrame::Message {
            message_id: "m3".into(),
            conversation: 1,
            seq: 2,
            from: "bob".into(),
            from_device: 2,
            client_msg_id: "c3".into(),
            kind: MessageKind::Text,
            text: "news".into(),
            media: Vec::new(),
            target: None,
            event: None,
            edited_ms: None,
            deleted: false,
            ts_ms: 3_000,
            expires_ms: None,
        }));
        assert_eq!(titles(&app), vec!["bob", "carol"]);
        assert_eq!(app.conversation(&ConvKey::Id(1)).unwrap().unread, 1);
        app.on_input(key(KeyCode::Char('n')));
        typed(&mut app, "dave");
        app.on_input(key(KeyCode::Enter));
        assert_eq!(titles(&app), vec!["dave", "bob", "carol"]);
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
