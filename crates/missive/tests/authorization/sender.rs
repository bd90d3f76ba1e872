//! Nothing in a frame makes a message come from someone else.

use missive_proto::ServerFrame;
use serde_json::json;

use crate::common::*;
use crate::support::*;
use crate::table::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_is_always_the_authenticated_device() {
    // Goal: nothing in a frame can make a message come from someone else:
    // fields naming a sender or device are refused (`invalid_field`), a
    // second `auth` with alice's token on mallory's socket (or on
    // /v1/frames) is `already_authenticated` and changes nobody's identity,
    // and client_msg_ids are per device, so reusing alice's neither
    // returns her message nor stores anything in her chat.
    // Method: raw frames over both transports; bob's received frames show
    // who the server says sent them.
    let mut world = World::new().await;
    let before = world.members_view(world.direct, &world.message).await;
    let table = forged_identity_rows(&world);
    world.refuse(table).await;
    world.assert_members_undisturbed().await;
    let after = world.members_view(world.direct, &world.message).await;
    assert_eq!(after, before);
    a_reused_client_msg_id_is_a_new_message(&mut world).await;
}

/// Sends with a field naming a sender or device (to bob by name and into
/// alice's chat), reactions, edits and deletes with a `from`: all
/// `invalid_field`; a second `auth` with alice's token:
/// `already_authenticated`; alice's client_msg_id in alice's chat:
/// `unknown_conversation`.
fn forged_identity_rows(world: &World) -> Vec<Row> {
    let (direct, message) = (world.direct, &world.message);
    let alice_device = world.alice_ws.device_id;
    let forged_fields = [
        json!({"from": "alice"}),
        json!({"from_device": alice_device}),
        json!({"sender": "alice"}),
        json!({"device_id": alice_device}),
        json!({"account_id": 1}),
        json!({"token": world.alice.clone()}),
    ];
    let mut forged = Vec::new();
    for (n, extra) in forged_fields.iter().enumerate() {
        for to in [json!({"to": "bob"}), json!({"conversation": direct})] {
            let mut frame = frame("send", "f", &n.to_string(), to);
            frame["text"] = json!("it's me, alice");
            for (key, value) in extra.as_object().expect("object") {
                frame[key] = value.clone();
            }
            forged.push(Action::frame(frame));
        }
    }
    // The same for reactions, edits and deletes in alice's chat.
    let (c, t) = (direct, message);
    for (kind, fields) in [
        (
            "react",
            json!({"conversation": c, "target": t, "emoji": "👍", "from": "alice"}),
        ),
        (
            "edit",
            json!({"conversation": c, "target": t, "text": "x", "from": "alice"}),
        ),
        (
            "delete",
            json!({"conversation": c, "target": t, "from": "alice"}),
        ),
    ] {
        forged.push(Action::frame(frame(kind, "k", kind, fields)));
    }
    let mut table = rows(Who::Mallory, forged, "invalid_field");
    // A second auth frame does not switch the connection to alice.
    let auth = json!({"type": "auth", "id": "again", "token": world.alice});
    table.extend(rows(
        Who::Mallory,
        [Action::frame(auth)],
        "already_authenticated",
    ));
    // alice's client_msg_id, from mallory: not a duplicate of alice's
    // message in alice's chat.
    let reuse = json!({"type": "send", "id": "reuse", "conversation": direct, "client_msg_id": "a-1", "text": "dup?"});
    table.extend(rows(
        Who::Mallory,
        [Action::frame(reuse)],
        "unknown_conversation",
    ));
    table
}

/// alice's client_msg_id from mallory is a new message of mallory's to
/// bob; from bob in the very conversation alice used it in, a new message
/// too (idempotency is per device, not per conversation or per id).
async fn a_reused_client_msg_id_is_a_new_message(world: &mut World) {
    let mallory_device = world.mallory_ws.device_id;
    let sent = world.mallory_ws.send_text("bob", "a-1", "hello bob").await;
    let (message_id, conversation) = not_a_duplicate(sent.expect("send"));
    assert_ne!(message_id, world.message);
    assert_ne!(conversation, world.direct);
    let got = queued(&mut world.bob_ws, 1).await;
    let ServerFrame::Message {
        from,
        from_device,
        conversation: got_conversation,
        text,
        ..
    } = &got[0]
    else {
        panic!("expected a message, got {:?}", got[0])
    };
    assert_eq!(
        (
            from.as_str(),
            *from_device,
            *got_conversation,
            text.as_str()
        ),
        ("mallory", mallory_device, conversation, "hello bob")
    );
    let sent = world
        .bob_ws
        .send_to(world.direct, "a-1", "same id, other device", None)
        .await;
    let (message_id, _) = not_a_duplicate(sent.expect("send"));
    assert_ne!(message_id, world.message);
    assert_eq!(
        texts(&queued(&mut world.alice_ws, 1).await),
        ["same id, other device"]
    );
    assert_nothing_queued(&mut world.alice_ws).await;
}

/// The message id and conversation of a `sent` that is no duplicate.
fn not_a_duplicate(frame: ServerFrame) -> (String, i64) {
    let ServerFrame::Sent {
        message_id,
        conversation,
        duplicate,
        ..
    } = frame
    else {
        panic!("expected sent, got {frame:?}")
    };
    assert!(!duplicate, "client_msg_ids are per device");
    (message_id, conversation)
}
