//! The records the terminal app keeps: conversations with their loaded
//! messages and receipt cursors, texts waiting to be sent, and how they
//! read in words (previews, group events, refusals).

use std::collections::BTreeMap;
use std::time::Instant;

use missive_client::ClientError;
use missive_proto::rest::{ConversationKind, ConversationSummary, HistoryMessage, MediaRef};
use missive_proto::{ErrorCode, MessageKind};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum ConnectionState {
    Connecting,
    Online,
    Offline { reason: String, retry_at: Instant },
    Stopped(String),
}

/// A conversation as the app names it: by id, or (before its first
/// message) by the user a new 1:1 chat is with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum ConvKey {
    Id(i64),
    Draft(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HistoryState {
    NotLoaded,
    Loading,
    /// Loaded down from the newest; `older` is where the next older page
    /// starts (`None`: the beginning is loaded).
    Loaded {
        older: Option<i64>,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Msg {
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
    /// A disappearing message's time: it leaves the screen then.
    pub expires_ms: Option<i64>,
    /// user → emoji
    pub reactions: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub(super) struct Conversation {
    pub key: ConvKey,
    pub kind: ConversationKind,
    pub name: Option<String>,
    pub members: Vec<String>,
    /// End-to-end encrypted: texts typed here go out sealed.
    pub encrypted: bool,
    pub last_seq: i64,
    /// Our read cursor as the server confirmed it.
    pub read_seq: i64,
    /// How far this connection asked to move it (a `read` lost with its
    /// connection is asked again on the next).
    pub(super) read_asked: i64,
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
    fn new(
        key: ConvKey,
        kind: ConversationKind,
        members: Vec<String>,
        history: HistoryState,
    ) -> Self {
        Self {
            key,
            kind,
            name: None,
            members,
            encrypted: false,
            last_seq: 0,
            read_seq: 0,
            read_asked: 0,
            unread: 0,
            last: None,
            receipts: BTreeMap::new(),
            messages: BTreeMap::new(),
            history,
            typing: BTreeMap::new(),
        }
    }

    /// A 1:1 chat with `peer` before its first message: nothing to load.
    pub(super) fn draft(peer: &str, me: &str) -> Self {
        Self::new(
            ConvKey::Draft(peer.to_owned()),
            ConversationKind::Direct,
            vec![me.to_owned(), peer.to_owned()],
            HistoryState::Loaded { older: None },
        )
    }

    /// A conversation known only by an event of it, until the list is read.
    pub(super) fn placeholder(id: i64) -> Self {
        Self::new(
            ConvKey::Id(id),
            ConversationKind::Group,
            Vec::new(),
            HistoryState::NotLoaded,
        )
    }

    pub(super) fn id(&self) -> Option<i64> {
        match self.key {
            ConvKey::Id(id) => Some(id),
            ConvKey::Draft(_) => None,
        }
    }

    /// For a 1:1: the other member.
    pub(super) fn peer<'a>(&'a self, me: &'a str) -> Option<&'a str> {
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

    pub(super) fn title(&self, me: &str) -> String {
        match (&self.name, self.peer(me)) {
            (Some(name), _) => name.clone(),
            (None, Some(peer)) => peer.to_owned(),
            (None, None) => match self.id() {
                Some(id) => format!("conversation {id}"),
                None => String::from("new chat"),
            },
        }
    }

    pub(super) fn activity(&self) -> i64 {
        self.last.as_ref().map_or(0, |(_, _, ts)| *ts)
    }

    /// Ticks for a message of ours at `seq`.
    pub(super) fn tick(&self, seq: i64, me: &str) -> Tick {
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

    pub(super) fn apply_summary(&mut self, summary: ConversationSummary, me: &str) {
        self.kind = summary.kind;
        self.name = summary.name;
        self.members = summary.members;
        self.encrypted = summary.encrypted;
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
pub(super) enum Tick {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

/// A text typed here that the server has not confirmed yet.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    pub client_msg_id: String,
    pub target: ConvKey,
    pub text: String,
    pub reply_to: Option<String>,
    /// Goes out sealed: its conversation is end-to-end encrypted.
    pub encrypted: bool,
    /// The connection it was last written to (0: none yet).
    pub(super) epoch: u64,
    /// After `rate_limited`: not before then.
    pub(super) retry_at: Option<Instant>,
    /// Refused for good: why.
    pub failed: Option<String>,
}

pub(super) fn msg_from_history(message: HistoryMessage) -> Option<Msg> {
    if !matches!(
        message.kind,
        MessageKind::Text | MessageKind::System | MessageKind::Encrypted
    ) {
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
        expires_ms: message.expires_ms,
        reactions: message
            .reactions
            .into_iter()
            .map(|r| (r.user, r.emoji))
            .collect(),
    })
}

/// A group change in words: "alice added bob, carol".
pub(super) fn system_text(event: &serde_json::Value) -> String {
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
        "encrypted" => format!("{actor} turned on end-to-end encryption"),
        "timer" => match event["secs"].as_u64().unwrap_or(0) {
            0 => format!("{actor} turned off disappearing messages"),
            secs => format!(
                "{actor} set messages to disappear after {}",
                match secs {
                    3_600 => "1 hour".to_owned(),
                    86_400 => "1 day".to_owned(),
                    604_800 => "7 days".to_owned(),
                    7_776_000 => "90 days".to_owned(),
                    other => format!("{other} s"),
                }
            ),
        },
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
pub(super) fn msg_preview(msg: &Msg, me: &str, group: bool) -> String {
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

pub(super) fn media_name(media: &MediaRef) -> String {
    media
        .filename
        .clone()
        .unwrap_or_else(|| media.media_id.clone())
}

/// After an edit or delete: the preview from the newest loaded text.
pub(super) fn refresh_preview(c: &mut Conversation, me: &str) {
    let group = c.kind == ConversationKind::Group;
    if let Some(msg) = c.messages.values().next_back() {
        c.last = Some((msg.from.clone(), msg_preview(msg, me, group), msg.ts_ms));
    }
}

/// A refusal in words for the status line.
pub(super) fn explain(code: ErrorCode, message: &str) -> String {
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

pub(super) fn describe(err: &ClientError) -> String {
    match err {
        ClientError::Refused { code, message } => explain(*code, message),
        other => other.to_string(),
    }
}
