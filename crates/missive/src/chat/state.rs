//! What the terminal app knows and how it changes: conversations, loaded
//! messages, receipts, presence, the outbox and the screen's focus. It
//! never talks to the network itself: every change that needs the server
//! becomes an [`Effect`] the event loop carries out, and every answer comes
//! back as an [`AppEvent`]. That keeps the rules here testable without a
//! terminal or a socket. The records live in [`super::model`]. This file
//! holds the state itself, the connection coming and going, and the tick;
//! the rules are split by what sets them off: a key ([`keys`]), a frame
//! ([`frames`]), the conversation list and history pages
//! ([`conversations`]), the outbox and read cursor ([`outbox`]), a key
//! verification ([`verification`]); [`prompt`] is the bottom-line
//! question. Each has its unit tests beside it.

mod conversations;
mod frames;
mod keys;
mod outbox;
mod prompt;
#[cfg(test)]
mod testing;
mod verification;

pub(super) use prompt::Prompt;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use missive_client::ClientError;
use missive_proto::rest::{ConversationList, History, MediaRef};
use missive_proto::{ClientFrame, ServerFrame};

use super::model::{ConnectionState, ConvKey, Conversation, Outgoing, describe};
use super::text::Editor;
use super::verify::{VerifyAction, VerifyUpdate};

/// Quick reactions: the digit keys of the reaction prompt.
pub(super) const QUICK_REACTIONS: [&str; 6] = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
/// How long a typing indicator we send lasts without another key.
const TYPING_IDLE: Duration = Duration::from_secs(5);
/// How often a `typing start` is repeated while keys keep coming.
const TYPING_REPEAT: Duration = Duration::from_secs(3);
/// How long a notice stays on the status line.
const NOTICE_FOR: Duration = Duration::from_secs(10);
pub(super) const HISTORY_PAGE: u32 = 50;
/// What an encrypted message this device cannot decrypt shows instead.
pub(super) const UNREADABLE: &str = "🔒 encrypted message: this device cannot decrypt it";

/// What happened outside the app: the connection, a frame, an answer.
pub(super) enum AppEvent {
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
pub(super) enum Effect {
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
pub(super) enum Focus {
    List,
    Compose,
    Messages,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ComposeMode {
    New,
    Reply(String),
    Edit(String),
}

pub(super) struct Notice {
    pub text: String,
    pub error: bool,
    shown: Instant,
}

pub(super) struct App {
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
    pub(super) fn new(me: &str, server: &str) -> Self {
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

    pub(super) fn take_effects(&mut self) -> Vec<Effect> {
        if std::mem::take(&mut self.read_due) {
            self.mark_read();
        }
        std::mem::take(&mut self.effects)
    }

    pub(super) fn online(&self) -> bool {
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

    pub(super) fn conversation(&self, key: &ConvKey) -> Option<&Conversation> {
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

    pub(super) fn open_conversation(&self) -> Option<&Conversation> {
        self.open.as_ref().and_then(|key| self.conversation(key))
    }

    /// The list as shown: most recent activity first, new chats on top,
    /// filtered by the search.
    pub(super) fn visible(&self) -> Vec<&Conversation> {
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

    pub(super) fn outbox_of(&self, key: &ConvKey) -> impl Iterator<Item = &Outgoing> {
        self.outbox.iter().filter(move |item| &item.target == key)
    }

    // ----- events from outside -----

    pub(super) fn on_event(&mut self, event: AppEvent) {
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

    pub(super) fn on_tick(&mut self) {
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

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
