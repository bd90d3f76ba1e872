//! Property tests of the wire decoders against hostile input (issue 8): the
//! frame decoder and the REST body types never panic, whatever the bytes or
//! JSON, and classify bad input with the documented code while keeping the
//! correlation id. The cargo-fuzz targets in fuzz/ search the same surface
//! for longer; these run on every `cargo test`.

use missive_proto::rest::{
    AddMembersRequest, CreateGroupRequest, LoginRequest, PollRequest, Privacy, RegisterRequest,
    RenameGroupRequest, UsernameBody,
};
use missive_proto::{ClientFrame, ErrorCode, TypingState, decode_client_frame};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,8}", inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn opt_id() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{0,8}")
}

/// Valid client frames of every kind, with arbitrary field values. The
/// weights are the kinds each sub-strategy picks from, so every kind stays
/// as likely as the others.
fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let text = ".{0,24}";
    let names = prop::collection::vec("[a-z0-9_.]{0,12}", 0..4);
    prop_oneof![
        1 => (opt_id(), text).prop_map(|(id, token)| ClientFrame::Auth { id, token }),
        4 => message_frame(),
        1 => (opt_id(), any::<i64>(), any::<bool>()).prop_map(|(id, conversation, start)| {
            ClientFrame::Typing {
                id,
                conversation,
                state: if start {
                    TypingState::Start
                } else {
                    TypingState::Stop
                },
            }
        }),
        1 => (opt_id(), names)
            .prop_map(|(id, users)| ClientFrame::SubscribePresence { id, users }),
        6 => group_frame(),
        1 => (opt_id(), any::<i64>())
            .prop_map(|(id, conversation)| ClientFrame::Encrypt { id, conversation }),
        1 => (opt_id(), any::<i64>(), any::<i64>()).prop_map(|(id, conversation, seq)| {
            ClientFrame::Ack {
                id,
                conversation,
                seq,
            }
        }),
        1 => (opt_id(), any::<i64>(), any::<i64>()).prop_map(|(id, conversation, seq)| {
            ClientFrame::Read {
                id,
                conversation,
                seq,
            }
        }),
        1 => opt_id().prop_map(|id| ClientFrame::Ping { id }),
    ]
}

/// Frames that write to a conversation: send, react, edit, delete.
fn message_frame() -> impl Strategy<Value = ClientFrame> {
    let text = ".{0,24}";
    prop_oneof![
        (
            opt_id(),
            prop::option::of(text),
            prop::option::of(any::<i64>()),
            text,
            text,
            prop::option::of(text),
            prop::collection::vec(text, 0..3),
            any::<bool>(),
        )
            .prop_map(
                |(id, to, conversation, client_msg_id, text, reply_to, media, encrypted)| {
                    ClientFrame::Send {
                        id,
                        to,
                        conversation,
                        client_msg_id,
                        text,
                        reply_to,
                        media,
                        encrypted,
                    }
                }
            ),
        (opt_id(), any::<i64>(), text, text, prop::option::of(text)).prop_map(
            |(id, conversation, client_msg_id, target, emoji)| ClientFrame::React {
                id,
                conversation,
                client_msg_id,
                target,
                emoji,
            }
        ),
        (opt_id(), any::<i64>(), text, text, text).prop_map(
            |(id, conversation, client_msg_id, target, text)| ClientFrame::Edit {
                id,
                conversation,
                client_msg_id,
                target,
                text,
            }
        ),
        (opt_id(), any::<i64>(), text, text).prop_map(
            |(id, conversation, client_msg_id, target)| ClientFrame::Delete {
                id,
                conversation,
                client_msg_id,
                target,
            }
        ),
    ]
}

/// Frames that manage a group: create, info, rename, add, remove/promote/
/// demote, leave.
fn group_frame() -> impl Strategy<Value = ClientFrame> {
    let text = ".{0,24}";
    let names = prop::collection::vec("[a-z0-9_.]{0,12}", 0..4);
    prop_oneof![
        (opt_id(), text, names.clone(), any::<Option<bool>>()).prop_map(
            |(id, name, members, encrypted)| ClientFrame::GroupCreate {
                id,
                name,
                members,
                encrypted,
            }
        ),
        (opt_id(), any::<i64>())
            .prop_map(|(id, conversation)| ClientFrame::GroupInfo { id, conversation }),
        (opt_id(), any::<i64>(), text).prop_map(|(id, conversation, name)| {
            ClientFrame::GroupRename {
                id,
                conversation,
                name,
            }
        }),
        (opt_id(), any::<i64>(), names).prop_map(|(id, conversation, members)| {
            ClientFrame::GroupAdd {
                id,
                conversation,
                members,
            }
        }),
        (opt_id(), any::<i64>(), text, 0..3u8).prop_map(|(id, conversation, username, op)| {
            match op {
                0 => ClientFrame::GroupRemove {
                    id,
                    conversation,
                    username,
                },
                1 => ClientFrame::GroupPromote {
                    id,
                    conversation,
                    username,
                },
                _ => ClientFrame::GroupDemote {
                    id,
                    conversation,
                    username,
                },
            }
        }),
        (opt_id(), any::<i64>())
            .prop_map(|(id, conversation)| ClientFrame::GroupLeave { id, conversation }),
    ]
}

/// One way a hostile client bends a valid frame.
#[derive(Clone, Debug)]
enum Mutation {
    /// Drop the field with this index (in key order), if any.
    Remove(prop::sample::Index),
    /// Replace the field with this index by any JSON value.
    Replace(prop::sample::Index, Value),
    /// Add a field no frame has.
    AddUnknown(Value),
    /// Replace `type` by a string that is not a frame type.
    UnknownType(String),
    /// Drop `type`.
    RemoveType,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (any::<prop::sample::Index>(), any_json()).prop_map(|(at, v)| Mutation::Replace(at, v)),
        any_json().prop_map(Mutation::AddUnknown),
        "[A-Z0-9 ]{0,10}".prop_map(Mutation::UnknownType),
        Just(Mutation::RemoveType),
    ]
}

/// Whether `kind` is the `type` of a client frame.
fn is_frame_type(kind: &str) -> bool {
    let probe = json!({"type": kind});
    decode_client_frame(&probe.to_string())
        .map_or_else(|err| err.code != ErrorCode::UnknownType, |_| true)
}

/// The codes the decoder may answer with.
fn is_decode_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::InvalidField
    )
}

fn object(frame: &ClientFrame) -> Map<String, Value> {
    match serde_json::to_value(frame).expect("encode") {
        Value::Object(map) => map,
        other => panic!("a frame encodes as an object, not {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frame_decoder_never_panics_on_any_text(text in ".{0,64}") {
        // Goal: any text at all is a frame or a classified error.
        if let Err(err) = decode_client_frame(&text) {
            prop_assert!(is_decode_code(err.code), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn frame_decoder_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        // Goal: the lossy UTF-8 of any body (`/v1/frames`) decodes or is
        // classified.
        let text = String::from_utf8_lossy(&bytes);
        if let Err(err) = decode_client_frame(&text) {
            prop_assert!(is_decode_code(err.code), "{bytes:?}: {err:?}");
        }
    }

    #[test]
    fn frame_decoder_classifies_any_json(value in any_json(), frame_type in "[a-z_]{0,20}") {
        // Goal: any JSON document, also with a plausible `type`, is a frame
        // or a classified error; a string `id` is always kept.
        for value in [value.clone(), with_type(value, &frame_type)] {
            let text = value.to_string();
            match decode_client_frame(&text) {
                Ok(frame) => prop_assert_eq!(decode_client_frame(&serde_json::to_string(&frame).unwrap()), Ok(frame)),
                Err(err) => {
                    prop_assert!(is_decode_code(err.code), "{text}: {err:?}");
                    let id = value.get("id").and_then(Value::as_str);
                    prop_assert_eq!(err.id.as_deref(), id, "{}", text);
                }
            }
        }
    }

    #[test]
    fn valid_frames_round_trip(frame in client_frame()) {
        // Goal: whatever the client library encodes, the server decodes
        // unchanged, whatever the field values.
        let text = serde_json::to_string(&frame).unwrap();
        prop_assert_eq!(decode_client_frame(&text), Ok(frame), "{}", text);
    }

    #[test]
    fn mutated_frames_are_classified(frame in client_frame(), mutations in prop::collection::vec(mutation(), 1..4)) {
        // Goal: a valid frame bent by a hostile client is refused with the
        // right code and its correlation id, or still decodes to a frame;
        // never a panic.
        let mut map = object(&frame);
        for mutation in &mutations {
            let keys: Vec<String> = map.keys().filter(|key| *key != "type").cloned().collect();
            match mutation {
                Mutation::Remove(at) if !keys.is_empty() => {
                    map.remove(&keys[at.index(keys.len())]);
                }
                Mutation::Replace(at, value) if !keys.is_empty() => {
                    map.insert(keys[at.index(keys.len())].clone(), value.clone());
                }
                Mutation::AddUnknown(value) => {
                    map.insert("x_unknown".into(), value.clone());
                }
                Mutation::UnknownType(name) => {
                    map.insert("type".into(), Value::String(name.clone()));
                }
                Mutation::RemoveType => {
                    map.remove("type");
                }
                _ => {}
            }
        }
        // What the decoder must answer, in the order it checks: `type`
        // first, then the fields. Other mutations may or may not leave a
        // valid frame.
        let expect = match map.get("type") {
            Some(Value::String(kind)) if is_frame_type(kind) => {
                map.contains_key("x_unknown").then_some(ErrorCode::InvalidField)
            }
            Some(Value::String(_)) => Some(ErrorCode::UnknownType),
            _ => Some(ErrorCode::BadFrame),
        };
        let text = Value::Object(map.clone()).to_string();
        match decode_client_frame(&text) {
            Ok(decoded) => {
                prop_assert!(expect.is_none(), "{text} decoded as {decoded:?}, expected {expect:?}");
                prop_assert_eq!(decode_client_frame(&serde_json::to_string(&decoded).unwrap()), Ok(decoded));
            }
            Err(err) => {
                prop_assert!(is_decode_code(err.code), "{text}: {err:?}");
                if let Some(code) = expect {
                    prop_assert_eq!(err.code, code, "{}", text);
                }
                prop_assert_eq!(err.id.as_deref(), map.get("id").and_then(Value::as_str), "{}", text);
            }
        }
    }

    #[test]
    fn rest_bodies_never_panic_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        // Goal: every REST body type refuses garbage with an error.
        decode_every_body(&bytes);
    }

    #[test]
    fn rest_bodies_never_panic_on_any_json(value in any_json(), body in 0..8usize, field in "[a-z_]{1,12}") {
        // Goal: JSON of any shape, also a valid body with a field replaced
        // or added, decodes or is refused — for every REST body type.
        decode_every_body(value.to_string().as_bytes());
        let mut valid = valid_body(body);
        valid.insert(field, value);
        decode_every_body(Value::Object(valid).to_string().as_bytes());
    }
}

fn with_type(value: Value, frame_type: &str) -> Value {
    match value {
        Value::Object(mut map) => {
            map.insert("type".into(), Value::String(frame_type.into()));
            Value::Object(map)
        }
        other => json!({"type": frame_type, "v": other}),
    }
}

/// A valid instance of the n-th REST body type, as a JSON object.
fn valid_body(n: usize) -> Map<String, Value> {
    let value = match n {
        0 => json!({"username": "alice", "password": "correct horse", "phone": "+4915112345678"}),
        1 => json!({"username": "alice", "password": "correct horse", "device_name": "laptop"}),
        2 => json!({"name": "trip", "members": ["bob", "carol"]}),
        3 => json!({"name": "new name"}),
        4 => json!({"members": ["dave"]}),
        5 => json!({"username": "bob"}),
        6 => json!({"presence": "contacts"}),
        _ => json!({"acks": [{"conversation": 7, "seq": 41}], "timeout_ms": 25000}),
    };
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Decodes `bytes` as every REST request body type the server reads (as
/// axum's `Json` does: `serde_json` from the bytes); a body that decodes
/// must encode and decode again.
fn decode_every_body(bytes: &[u8]) {
    fn one<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8]) {
        if let Ok(body) = serde_json::from_slice::<T>(bytes) {
            let again = serde_json::to_vec(&body).expect("encode");
            serde_json::from_slice::<T>(&again).expect("a decoded body decodes again");
        }
    }
    one::<RegisterRequest>(bytes);
    one::<LoginRequest>(bytes);
    one::<CreateGroupRequest>(bytes);
    one::<RenameGroupRequest>(bytes);
    one::<AddMembersRequest>(bytes);
    one::<UsernameBody>(bytes);
    one::<Privacy>(bytes);
    one::<PollRequest>(bytes);
}

#[test]
fn valid_bodies_decode() {
    // Goal: the mutation base of the body properties is itself valid, so
    // the properties exercise more than the first refusal.
    for n in 0..8 {
        let bytes = Value::Object(valid_body(n)).to_string();
        let ok = match n {
            0 => serde_json::from_str::<RegisterRequest>(&bytes).is_ok(),
            1 => serde_json::from_str::<LoginRequest>(&bytes).is_ok(),
            2 => serde_json::from_str::<CreateGroupRequest>(&bytes).is_ok(),
            3 => serde_json::from_str::<RenameGroupRequest>(&bytes).is_ok(),
            4 => serde_json::from_str::<AddMembersRequest>(&bytes).is_ok(),
            5 => serde_json::from_str::<UsernameBody>(&bytes).is_ok(),
            6 => serde_json::from_str::<Privacy>(&bytes).is_ok(),
            _ => serde_json::from_str::<PollRequest>(&bytes).is_ok(),
        };
        assert!(ok, "{bytes}");
    }
}
