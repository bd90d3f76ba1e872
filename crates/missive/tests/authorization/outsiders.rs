//! Outsiders: mallory against alice and bob's 1:1 and group, messages of
//! another conversation named from one's own, and acks.

use missive_proto::ServerFrame;
use serde_json::json;

use crate::common::*;
use crate::support::*;
use crate::table::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_can_do_nothing_in_a_one_to_one() {
    // Goal: every frame and REST endpoint that names a conversation is
    // refused with `unknown_conversation` when mallory aims it at alice and
    // bob's 1:1, exactly as for an id that does not exist (she cannot even
    // learn that it exists), over both transports, and changes nothing
    // alice or bob can observe.
    // Method: snapshot what alice and bob see (history with reactions and
    // edits, receipts, conversation lists), fire every frame and endpoint,
    // then compare and prove with ping round trips that no frame, receipt
    // or typing indication reached either of them.
    let mut world = World::new().await;
    let (direct, message) = (world.direct, world.message.clone());
    let before = world.members_view(direct, &message).await;

    let mut actions = conversation_actions(direct, &message, "direct");
    actions.extend(conversation_actions(NO_SUCH_CONVERSATION, &message, "none"));
    world
        .refuse(rows(Who::Mallory, actions, "unknown_conversation"))
        .await;

    world.assert_members_undisturbed().await;
    assert_eq!(world.members_view(direct, &message).await, before);
    let mallory_sees = world.server.api.conversations(&world.mallory).await;
    assert!(
        mallory_sees
            .expect("conversations")
            .conversations
            .is_empty(),
        "mallory's list must not show alice and bob's chat"
    );
    // The members themselves still can (the refusals above were about
    // mallory, not a broken conversation).
    let sent = world.alice_ws.send_to(direct, "a-2", "still private", None);
    let (_, _, seq) = sent_message(sent.await.expect("send"));
    assert_eq!(seq, 2, "no refused attempt took a seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_can_do_nothing_in_a_group() {
    // Goal: the same sweep against a group of alice (admin) and bob:
    // mallory can neither read, write, react, edit, delete, type, read-mark,
    // look at the group, rename it, add herself, remove or promote anyone,
    // nor leave it, over frames or REST.
    let mut world = World::new().await;
    let group = world.group(&world.alice, "trip", &["bob"]).await;
    let sent = world.alice_ws.send_to(group, "g-1", "group secret", None);
    let (message, _, _) = sent_message(sent.await.expect("send"));
    let got = queued(&mut world.bob_ws, 2).await;
    ack_received(&mut world.bob_ws, &got).await;
    let delivered = queued(&mut world.alice_ws, 1).await;
    assert!(
        matches!(&delivered[0], ServerFrame::Delivered { conversation, seq: 2, .. } if *conversation == group),
        "{delivered:?}"
    );
    let before = world.members_view(group, &message).await;

    let actions = conversation_actions(group, &message, "group");
    world
        .refuse(rows(Who::Mallory, actions, "unknown_conversation"))
        .await;

    world.assert_members_undisturbed().await;
    assert_eq!(world.members_view(group, &message).await, before);
    let group_now = world.server.api.group(&world.alice, group).await;
    let members: Vec<String> = group_now
        .expect("group")
        .members
        .into_iter()
        .map(|member| member.username)
        .collect();
    assert_eq!(members, ["alice", "bob"]);
    assert_nothing_queued(&mut world.mallory_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_another_conversation_cannot_be_named_from_ones_own() {
    // Goal: membership of *some* conversation is no key to another's
    // messages: naming alice's message (from her 1:1 with bob) as the target
    // of a react, edit, delete, reply or receipts query in a conversation
    // the caller belongs to is `unknown_message` — also for bob, who may
    // see that message but only in its own conversation; editing or
    // deleting it where it lives is `not_author` for bob.
    // Method: mallory has a group of her own, bob and mallory share one;
    // every attempt is made over both transports; then alice and bob's
    // view of the 1:1 is compared with the one from before.
    let mut world = World::new().await;
    let (direct, message) = (world.direct, world.message.clone());
    let own = world.group(&world.mallory, "mine", &[]).await;
    let shared = world.group(&world.mallory, "shared", &["bob"]).await;
    let created = queued(&mut world.bob_ws, 1).await;
    ack_received(&mut world.bob_ws, &created).await;
    let before = world.members_view(direct, &message).await;

    let mut table = rows(
        Who::Mallory,
        message_actions(own, &message, "👀", "own"),
        "unknown_message",
    );
    table.extend(rows(
        Who::Bob,
        message_actions(shared, &message, "👀", "shared"),
        "unknown_message",
    ));
    // Where the message lives, bob is a member but not its author.
    let (c, t) = (direct, &message);
    table.extend(rows(
        Who::Bob,
        [
            Action::frame(frame(
                "edit",
                "b",
                "edit",
                json!({"conversation": c, "target": t, "text": "bob's words"}),
            )),
            Action::frame(frame(
                "delete",
                "b",
                "delete",
                json!({"conversation": c, "target": t}),
            )),
        ],
        "not_author",
    ));
    world.refuse(table).await;

    assert_nothing_queued(&mut world.alice_ws).await;
    assert_eq!(world.members_view(direct, &message).await, before);
    let history = world.server.api.history(&world.mallory, shared, "").await;
    assert_eq!(
        history.expect("history").messages.len(),
        1,
        "only the creation event: no refused attempt was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_touch_only_the_callers_own_positions() {
    // Goal: positions are per device and acks are checked against the
    // caller's memberships: mallory acking bob and alice's conversation
    // (over the socket, /v1/frames and /v1/poll, at its last seq or far
    // beyond) is `unknown_conversation`, moves nothing of bob's, sends alice no
    // `delivered` cursor, and bob gets the same events again on his next
    // connection.
    // Method: alice sends two texts; bob receives them without acking;
    // mallory acks; bob reconnects and must be sent both again with the
    // same ids.
    let mut world = World::new().await;
    for (n, text) in ["one", "two"].into_iter().enumerate() {
        world
            .alice_ws
            .send_to(world.direct, &format!("a-ack-{n}"), text, None)
            .await
            .expect("send");
    }
    let first = queued(&mut world.bob_ws, 2).await;
    assert_eq!(ack_points(&first), [(world.direct, 3)]);
    let before = world.members_view(world.direct, &world.message).await;

    let actions = [
        ack(world.direct, 3, "k1"),
        ack(world.direct, i64::MAX, "k2"),
    ];
    world
        .refuse(rows(Who::Mallory, actions, "unknown_conversation"))
        .await;
    assert_nothing_queued(&mut world.alice_ws).await;
    assert_eq!(
        world.members_view(world.direct, &world.message).await,
        before
    );

    let bob_ws = std::mem::replace(&mut world.bob_ws, world.server.connect(&world.bob).await);
    drop(bob_ws);
    let again = queued(&mut world.bob_ws, 2).await;
    assert_eq!(again, first, "bob's position is untouched");
}
