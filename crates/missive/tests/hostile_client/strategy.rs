//! What mallory sends: the pools she names things from, the picks a
//! proptest strategy makes, and the frames built from them.

use missive_proto::{ClientFrame, TypingState};
use proptest::prelude::*;
use proptest::sample::Index;

/// A text over `limits.text_bytes_max` (64 KiB) inside one frame (256 KiB).
pub(crate) const OVERSIZED_TEXT: usize = 100_000;
/// Over `limits.frame_bytes_max`.
pub(crate) const OVERSIZED_FRAME: usize = 300 * 1024;

/// What mallory may name: the victim's things, her own, and made-up ones.
/// Choices are indices into these, so a seed replays the same choices.
#[derive(Clone, Debug)]
pub(crate) struct Pools {
    pub conversations: Vec<i64>,
    /// The victim's conversations (mallory is in none of them).
    pub victim_conversations: Vec<i64>,
    pub message_ids: Vec<String>,
    pub media_ids: Vec<String>,
    /// Names mallory may address or invite: never the victim, who would
    /// then legitimately get a message or a group (only sends that must be
    /// refused go to the victim: [`refused_send_to_victim`]).
    pub recipients: Vec<String>,
    /// Names for operations that must not affect the named user.
    pub targets: Vec<String>,
    pub client_msg_ids: Vec<String>,
    pub texts: Vec<String>,
    pub seqs: Vec<i64>,
}

impl Pools {
    pub(crate) fn pick<T: Clone>(pool: &[T], at: &Index) -> T {
        pool[at.index(pool.len())].clone()
    }
}

/// One frame field choice, resolved against [`Pools`] when the case runs.
#[derive(Clone, Debug)]
pub(crate) struct Picks {
    conversation: Index,
    message: Index,
    media: Vec<Index>,
    recipient: Index,
    target: Index,
    names: Vec<Index>,
    client_msg_id: Index,
    text: Index,
    seq: Index,
    id: Option<String>,
    with_to: bool,
    reply: bool,
    emoji: Option<String>,
    many: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// A frame of the given kind (0..19) built from picks.
    Frame { kind: u8, picks: Box<Picks> },
    /// Raw text: arbitrary, or a valid frame bent out of shape.
    Raw(String),
    /// A valid send to carol (the n-th of a few `client_msg_id`s, so some
    /// are duplicates): the store is reached, and hostile frames are mixed
    /// with legitimate ones.
    Legit(u8),
}

#[derive(Clone, Debug)]
pub(crate) struct Sequence {
    pub actions: Vec<(Action, bool)>,
    /// End by sending a frame over `frame_bytes_max` (the socket closes).
    pub end_oversized: bool,
    /// Also post an over-limit body to `/v1/frames`.
    pub http_oversized: bool,
}

fn picks() -> impl Strategy<Value = Picks> {
    (
        (
            any::<Index>(),
            any::<Index>(),
            prop_oneof![
                3 => Just(Vec::new()),
                1 => prop::collection::vec(any::<Index>(), 1..3),
            ],
            any::<Index>(),
            any::<Index>(),
            prop::collection::vec(any::<Index>(), 0..4),
        ),
        (
            any::<Index>(),
            any::<Index>(),
            any::<Index>(),
            prop::option::of("[a-z0-9]{0,6}"),
            any::<bool>(),
            prop::bool::weighted(0.3),
            prop::option::of(prop_oneof!["👍", "", "a b", "[a-z]{17,40}"]),
            prop_oneof![Just(1usize), Just(300), Just(2000)],
        ),
    )
        .prop_map(
            |(
                (conversation, message, media, recipient, target, names),
                (client_msg_id, text, seq, id, with_to, reply, emoji, many),
            )| Picks {
                conversation,
                message,
                media,
                recipient,
                target,
                names,
                client_msg_id,
                text,
                seq,
                id,
                with_to,
                reply,
                emoji,
                many,
            },
        )
}

fn raw_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        // Valid-looking frames with a wrong type, an unknown field, or
        // fields of the wrong type.
        (0..4u8, "[a-z_]{0,16}", any::<i64>()).prop_map(|(shape, word, number)| match shape {
            0 => format!(r#"{{"type":"{word}","id":"r","conversation":{number}}}"#),
            1 => format!(r#"{{"type":"read","conversation":{number},"seq":1,"{word}x":true}}"#),
            2 => format!(r#"{{"type":"send","to":{number},"client_msg_id":"r","text":"x"}}"#),
            _ => format!(r#"{{"type":"auth","id":"{word}","token":"{number:064}"}}"#),
        }),
        Just("[]".to_owned()),
        Just("null".to_owned()),
        Just("{\"type\":\"ack\",\"conversation\":1,\"seq\":1e999}".to_owned()),
        Just("{\"type\":\"ping\",\"id\":\"\\ud800\"}".to_owned()),
        Just("[".repeat(10_000)),
    ]
}

pub(crate) fn sequence() -> impl Strategy<Value = Sequence> {
    let action = prop_oneof![
        // Sends, reactions, edits and deletes (kinds 0-3) more often: they
        // write to the store.
        4 => (prop_oneof![3 => 0..4u8, 2 => 4..18u8, 1 => Just(18u8)], picks())
            .prop_map(|(kind, picks)| Action::Frame { kind, picks: Box::new(picks) }),
        1 => raw_text().prop_map(Action::Raw),
        1 => (0..4u8).prop_map(Action::Legit),
    ];
    (
        prop::collection::vec((action, any::<bool>()), 1..24),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(actions, end_oversized, http_oversized)| Sequence {
            actions,
            end_oversized,
            http_oversized,
        })
}

pub(crate) fn build_frame(kind: u8, picks: &Picks, pools: &Pools) -> ClientFrame {
    match kind {
        0..=3 => message_frame(kind, picks, pools),
        6..=13 => group_frame(kind, picks, pools),
        18 => refused_send_to_victim(picks.id.clone(), picks.seq.index(7)),
        _ => session_frame(kind, picks, pools),
    }
}

/// Kinds 0-3: send, react, edit, delete.
fn message_frame(kind: u8, picks: &Picks, pools: &Pools) -> ClientFrame {
    let id = picks.id.clone();
    let conversation = Pools::pick(&pools.conversations, &picks.conversation);
    let target = Pools::pick(&pools.message_ids, &picks.message);
    let client_msg_id = Pools::pick(&pools.client_msg_ids, &picks.client_msg_id);
    let text = Pools::pick(&pools.texts, &picks.text);
    match kind {
        0 => ClientFrame::Send {
            id,
            to: picks
                .with_to
                .then(|| Pools::pick(&pools.recipients, &picks.recipient)),
            conversation: (!picks.with_to).then_some(conversation),
            client_msg_id,
            text,
            reply_to: picks.reply.then_some(target),
            media: picks
                .media
                .iter()
                .map(|at| Pools::pick(&pools.media_ids, at))
                .collect(),
            encrypted: false,
        },
        1 => ClientFrame::React {
            id,
            conversation,
            client_msg_id,
            target,
            emoji: picks.emoji.clone(),
        },
        2 => ClientFrame::Edit {
            id,
            conversation,
            client_msg_id,
            target,
            text,
        },
        _ => ClientFrame::Delete {
            id,
            conversation,
            client_msg_id,
            target,
        },
    }
}

/// Kinds 6-13: group create, info, rename, add, remove, promote, demote,
/// leave.
fn group_frame(kind: u8, picks: &Picks, pools: &Pools) -> ClientFrame {
    let id = picks.id.clone();
    let conversation = Pools::pick(&pools.conversations, &picks.conversation);
    let name = Pools::pick(&pools.texts, &picks.text);
    let members: Vec<String> = picks
        .names
        .iter()
        .map(|at| Pools::pick(&pools.recipients, at))
        .collect();
    let username = Pools::pick(&pools.targets, &picks.target);
    match kind {
        6 => ClientFrame::GroupCreate {
            id,
            name,
            members,
            encrypted: None,
        },
        7 => ClientFrame::GroupInfo { id, conversation },
        8 => ClientFrame::GroupRename {
            id,
            conversation,
            name,
        },
        9 => ClientFrame::GroupAdd {
            id,
            conversation,
            members,
        },
        10 => ClientFrame::GroupRemove {
            id,
            conversation,
            username,
        },
        11 => ClientFrame::GroupPromote {
            id,
            conversation,
            username,
        },
        12 => ClientFrame::GroupDemote {
            id,
            conversation,
            username,
        },
        _ => ClientFrame::GroupLeave { id, conversation },
    }
}

/// Kinds 4, 5 and 14-17 (and anything else): typing, presence, ack, read,
/// auth, ping.
fn session_frame(kind: u8, picks: &Picks, pools: &Pools) -> ClientFrame {
    let id = picks.id.clone();
    let conversation = Pools::pick(&pools.conversations, &picks.conversation);
    let seq = Pools::pick(&pools.seqs, &picks.seq);
    match kind {
        4 => ClientFrame::Typing {
            id,
            conversation,
            state: if picks.with_to {
                TypingState::Start
            } else {
                TypingState::Stop
            },
        },
        5 => {
            let username = Pools::pick(&pools.targets, &picks.target);
            ClientFrame::SubscribePresence {
                id,
                users: (0..picks.many.min(300)).map(|_| username.clone()).collect(),
            }
        }
        14 => ClientFrame::Ack {
            id,
            conversation,
            seq,
        },
        15 => ClientFrame::Read {
            id,
            conversation,
            seq,
        },
        16 => ClientFrame::Auth {
            id,
            token: format!("{:064x}", picks.many),
        },
        _ => ClientFrame::Ping { id },
    }
}

/// A send to the victim that must be refused before anything is stored:
/// exactly one field is bad. A refused request changes nothing, so not
/// even the 1:1 conversation may appear in the victim's list.
pub(crate) fn refused_send_to_victim(id: Option<String>, bad: usize) -> ClientFrame {
    let mut client_msg_id = "m-v".to_owned();
    let mut text = "hi".to_owned();
    let mut reply_to = None;
    let mut media = Vec::new();
    match bad {
        0 => client_msg_id.clear(),
        1 => text.clear(),
        2 => text = "t".repeat(OVERSIZED_TEXT),
        3 => text = "nul\0byte".into(),
        4 => reply_to = Some("not-a-message-id".into()),
        5 => media = vec!["0123456789abcdef0123456789abcdef".to_owned(); 11],
        _ => media = vec!["../../etc/passwd".to_owned()],
    }
    ClientFrame::Send {
        id,
        to: Some("victim".into()),
        conversation: None,
        client_msg_id,
        text,
        reply_to,
        media,
        encrypted: false,
    }
}
