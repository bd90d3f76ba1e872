//! What the terminal app knows and how it changes: conversations, loaded
//! messages, receipts, presence, the outbox and the screen's focus. It
//! never talks to the network itself: every change that needs the server
//! becomes an [`Effect`] the event loop carries out, and every answer comes
//! back as an [`AppEvent`]. That keeps the rules here testable without a
//! terminal or a socket.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use missive_client::ClientError;
use missive_proto::rest::{
    ConversationKind, ConversationList, ConversationSummary, GroupInfo, History, HistoryMessage,
    MediaRef,
};
use missive_proto::{ClientFrame, ErrorCode, MessageKind, ServerFrame, TypingState};
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::text::Editor;

/// Quick reactions: the digit keys of the reaction prompt.
pub const QUICK_REACTIONS: [&str; 6] = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
/// How long a typing indicator we send lasts without another key.
const TYPING_IDLE: Duration = Duration::from_secs(5);
/// How often a `typing start` is repeated while keys keep coming.
const TYPING_REPEAT: Duration = Duration::from_secs(3);
/// How long a notice stays on the status line.
const NOTICE_FOR: Duration = Duration::from_secs(10);
pub const HISTORY_PAGE: u32 = 50;

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
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConnectionState {
    Connecting,
    Online,
    Offline { reason: String, retry_at: Instant },
    Stopped(String),
}

/// A conversation as the app names it: by id, or (before its first
/// message) by the user a new 1:1 chat is with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConvKey {
    Id(i64),
    Draft(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryState {
    NotLoaded,
    Loading,
    /// Loaded down from the newest; `older` is where the next older page
    /// starts (`None`: the beginning is loaded).
    Loaded {
        older: Option<i64>,
    },
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub seq: i64,
    pub message_id: String,
    pub from: String,
    pub kind: MessageKind,
    pub text: String,
    pub media: Vec<MediaRef>,
    pub reply_to: Option<String>,
    pub edited: bool,
    pub deleted: bool,
    pub ts_ms: i64,
    /// user → emoji
    pub reactions: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Conversation {
    pub key: ConvKey,
    pub kind: ConversationKind,
    pub name: Option<String>,
    pub members: Vec<String>,
    pub last_seq: i64,
    /// Our read cursor as the server confirmed it.
    pub read_seq: i64,
    /// How far this connection asked to move it (a `read` lost with its
    /// connection is asked again on the next).
    read_asked: i64,
    pub unread: i64,
    /// The newest event's author, what it said and when.
    pub last: Option<(String, String, i64)>,
    /// Other members' receipt cursors: user → (delivered seq, read seq).
    pub receipts: BTreeMap<String, (i64, i64)>,
    pub messages: BTreeMap<i64, Msg>,
    pub history: HistoryState,
    /// Who is typing here, until when.
    pub typing: BTreeMap<String, Instant>,
}

impl Conversation {
    fn draft(peer: &str, me: &str) -> Self {
        Self {
            key: ConvKey::Draft(peer.to_owned()),
            kind: ConversationKind::Direct,
            name: None,
            members: vec![me.to_owned(), peer.to_owned()],
            last_seq: 0,
            read_seq: 0,
            read_asked: 0,
            unread: 0,
            last: None,
            receipts: BTreeMap::new(),
            messages: BTreeMap::new(),
            history: HistoryState::Loaded { older: None },
            typing: BTreeMap::new(),
        }
    }

    fn placeholder(id: i64) -> Self {
        Self {
            key: ConvKey::Id(id),
            kind: ConversationKind::Group,
            name: None,
            members: Vec::new(),
            last_seq: 0,
            read_seq: 0,
            read_asked: 0,
            unread: 0,
            last: None,
            receipts: BTreeMap::new(),
            messages: BTreeMap::new(),
            history: HistoryState::NotLoaded,
            typing: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> Option<i64> {
        match self.key {
            ConvKey::Id(id) => Some(id),
            ConvKey::Draft(_) => None,
        }
    }

    /// For a 1:1: the other member.
    pub fn peer<'a>(&'a self, me: &'a str) -> Option<&'a str> {
        if self.kind != ConversationKind::Direct {
            return None;
        }
        match &self.key {
            ConvKey::Draft(peer) => Some(peer),
            ConvKey::Id(_) => Some(
                self.members
                    .iter()
                    .map(String::as_str)
                    .find(|member| *member != me)
                    .unwrap_or(me),
            ),
        }
    }

    pub fn title(&self, me: &str) -> String {
        match (&self.name, self.peer(me)) {
            (Some(name), _) => name.clone(),
            (None, Some(peer)) => peer.to_owned(),
            (None, None) => match self.id() {
                Some(id) => format!("conversation {id}"),
                None => String::from("new chat"),
            },
        }
    }

    fn activity(&self) -> i64 {
        self.last.as_ref().map_or(0, |(_, _, ts)| *ts)
    }

    /// Ticks for a message of ours at `seq`.
    pub fn tick(&self, seq: i64, me: &str) -> Tick {
        let others: Vec<&(i64, i64)> = self
            .members
            .iter()
            .filter(|member| member.as_str() != me)
            .filter_map(|member| self.receipts.get(member))
            .collect();
        let everyone = self.members.iter().filter(|m| m.as_str() != me).count();
        if everyone == 0 || others.len() < everyone {
            return Tick::Sent;
        }
        if others.iter().all(|(_, read)| *read >= seq) {
            Tick::Read
        } else if others
            .iter()
            .all(|(delivered, read)| (*delivered).max(*read) >= seq)
        {
            Tick::Delivered
        } else {
            Tick::Sent
        }
    }

    fn apply_summary(&mut self, summary: ConversationSummary, me: &str) {
        self.kind = summary.kind;
        self.name = summary.name;
        self.members = summary.members;
        self.read_seq = self.read_seq.max(summary.read_seq);
        let current = summary.last_seq >= self.last_seq;
        if current {
            self.unread = summary.unread;
        }
        self.last_seq = self.last_seq.max(summary.last_seq);
        let group = self.kind == ConversationKind::Group;
        if let Some(last) = summary.last_message {
            if current || self.last.is_none() {
                self.last = Some((last.from.clone(), preview(&last, me, group), last.ts_ms));
            }
        }
        for receipt in summary.receipts {
            let cursor = self.receipts.entry(receipt.user).or_insert((0, 0));
            cursor.0 = cursor.0.max(receipt.delivered_seq);
            cursor.1 = cursor.1.max(receipt.read_seq);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

/// A text typed here that the server has not confirmed yet.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub target: ConvKey,
    pub text: String,
    pub reply_to: Option<String>,
    /// The connection it was last written to (0: none yet).
    epoch: u64,
    /// After `rate_limited`: not before then.
    retry_at: Option<Instant>,
    /// Refused for good: why.
    pub failed: Option<String>,
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
            Self::ConfirmDelete { .. } | Self::ConfirmQuit => None,
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
            Self::ConfirmDelete { .. } | Self::ConfirmQuit => None,
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
    pub outbox: Vec<Outgoing>,
    requests: HashMap<String, Request>,
    next_id: u64,
    /// user → (online, last seen)
    pub presence: HashMap<String, (bool, Option<i64>)>,
    /// Where we last said we were typing, and when.
    typing_sent: Option<(i64, Instant)>,
    last_key: Instant,
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
            outbox: Vec::new(),
            requests: HashMap::new(),
            next_id: 0,
            presence: HashMap::new(),
            typing_sent: None,
            last_key: Instant::now(),
            effects: Vec::new(),
            quit: false,
        }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
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
                    reactions: BTreeMap::new(),
                };
                if kind == MessageKind::System {
                    self.on_system(conversation, event.as_ref());
                }
                self.on_event_stored(conversation, msg);
                if self.open == Some(ConvKey::Id(conversation)) {
                    self.mark_read();
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
                ..
            } => {
                let request = id.and_then(|id| self.requests.remove(&id));
                self.on_sent(request, message_id, conversation, seq, ts_ms);
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
            MessageKind::Text | MessageKind::System => {
                if new && msg.kind == MessageKind::Text && msg.from != me && !msg.deleted {
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

    fn on_system(&mut self, conversation: i64, event: Option<&serde_json::Value>) {
        let Some(event) = event else { return };
        let action = event["action"].as_str().unwrap_or_default();
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
        seq: i64,
        ts_ms: i64,
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
                (MessageKind::Text, item.text, item.reply_to, Vec::new())
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
                if code == ErrorCode::RateLimited {
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
        let Some(c) = self
            .open
            .clone()
            .and_then(|key| self.conversation_mut(&key))
        else {
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
        for conversation in &mut self.conversations {
            conversation.typing.retain(|_, until| *until > now);
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

    // ----- keys -----

    pub fn on_input(&mut self, event: Event) {
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

    pub fn open_key(&mut self, key: ConvKey) {
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

    fn stop_typing(&mut self, conversation: i64) {
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
        self.outbox.push(Outgoing {
            client_msg_id: client_msg_id(self.next_id),
            target: key,
            text,
            reply_to: match mode {
                ComposeMode::Reply(target) => Some(target),
                _ => None,
            },
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
        let Some(c) = self
            .open
            .clone()
            .and_then(|key| self.conversation_mut(&key))
        else {
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

    pub fn selected_msg(&self) -> Option<&Msg> {
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
            KeyCode::Char('+') | KeyCode::Char('a') => self.ask_react(),
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

    fn edit_selected(&mut self) {
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
        if let Some((conversation, msg)) = self.selected_text() {
            self.prompt = Some(Prompt::React {
                conversation,
                target: msg.message_id,
                editor: Editor::default(),
            });
        }
    }

    fn react_selected(&mut self, emoji: Option<String>) {
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
        let yes = matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y'));
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
            Prompt::ConfirmDelete { .. } | Prompt::ConfirmQuit => {}
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

fn msg_from_history(message: HistoryMessage) -> Option<Msg> {
    if !matches!(message.kind, MessageKind::Text | MessageKind::System) {
        // Reactions, edits and deletes are already folded into the texts
        // they act on.
        return None;
    }
    Some(Msg {
        seq: message.seq,
        text: match (message.kind, &message.event) {
            (MessageKind::System, Some(event)) => system_text(event),
            _ => message.text,
        },
        message_id: message.message_id,
        from: message.from,
        kind: message.kind,
        media: message.media,
        reply_to: message.target,
        edited: message.edited_ms.is_some(),
        deleted: message.deleted,
        ts_ms: message.ts_ms,
        reactions: message
            .reactions
            .into_iter()
            .map(|r| (r.user, r.emoji))
            .collect(),
    })
}

/// A group change in words: "alice added bob, carol".
pub fn system_text(event: &serde_json::Value) -> String {
    let actor = event["actor"].as_str().unwrap_or("someone");
    let users = event["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter_map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let name = event["name"].as_str().unwrap_or_default();
    let mut text = match event["action"].as_str().unwrap_or_default() {
        "created" => format!("{actor} created the group {name}"),
        "added" => format!("{actor} added {users}"),
        "removed" => format!("{actor} removed {users}"),
        "left" => format!("{actor} left"),
        "promoted" => format!("{actor} made {users} admin"),
        "demoted" => format!("{actor} made {users} a member"),
        "renamed" => format!("{actor} renamed the group to {name}"),
        other => format!("{actor}: {other}"),
    };
    if let Some(promoted) = event["promoted"].as_str() {
        text.push_str(&format!("; {promoted} is now admin"));
    }
    text
}

fn preview(message: &HistoryMessage, me: &str, group: bool) -> String {
    msg_from_history(message.clone())
        .map(|msg| msg_preview(&msg, me, group))
        .unwrap_or_default()
}

/// One line for the conversation list: "you: …", in a group "bob: …".
pub fn msg_preview(msg: &Msg, me: &str, group: bool) -> String {
    let body = if msg.deleted {
        String::from("(deleted)")
    } else if msg.text.is_empty() && !msg.media.is_empty() {
        format!("📎 {}", media_name(&msg.media[0]))
    } else {
        msg.text.clone()
    };
    if msg.kind == MessageKind::System {
        body
    } else if msg.from == me {
        format!("you: {body}")
    } else if group {
        format!("{}: {body}", msg.from)
    } else {
        body
    }
}

pub fn media_name(media: &MediaRef) -> String {
    media
        .filename
        .clone()
        .unwrap_or_else(|| media.media_id.clone())
}

/// After an edit or delete: the preview from the newest loaded text.
fn refresh_preview(c: &mut Conversation, me: &str) {
    let group = c.kind == ConversationKind::Group;
    if let Some(msg) = c.messages.values().next_back() {
        c.last = Some((msg.from.clone(), msg_preview(msg, me, group), msg.ts_ms));
    }
}

/// A refusal in words for the status line.
pub fn explain(code: ErrorCode, message: &str) -> String {
    let plain = match code {
        ErrorCode::Blocked => "you cannot message this user",
        ErrorCode::UnknownUser => "there is no such user",
        ErrorCode::NotMember => "you are not a member of this conversation",
        ErrorCode::RateLimited => "too many requests; wait a moment",
        ErrorCode::TextTooLong => "the message is too long",
        ErrorCode::EditWindowClosed => "it is too late to edit that message",
        ErrorCode::NotAuthor => "that is not your message",
        ErrorCode::NotAdmin => "only the group's admins can do that",
        ErrorCode::GroupFull => "the group is full",
        _ => "",
    };
    if plain.is_empty() {
        format!("{message} ({})", code.as_str())
    } else {
        format!("{plain} ({}: {message})", code.as_str())
    }
}

pub fn describe(err: &ClientError) -> String {
    match err {
        ClientError::Refused { code, message } => explain(*code, message),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_proto::rest::MemberReceipts;

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
