//! Blocks and per-account settings.

use missive_proto::rest::PresenceVisibility;
use missive_proto::{ServerFrame, TypingState};
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::support::*;
use crate::table::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_is_fully_blocked() {
    // Goal: once alice blocks mallory, mallory cannot send to alice (by
    // name or conversation id), react, edit or delete in their chat, reach
    // alice through a group she creates or adds alice to, see alice typing
    // (in a shared group too) or her presence — not even as the timing of
    // "offline" frames when alice comes and goes — and cannot lift the
    // block from her side. Everything is checked on alice's live socket.
    // Method: mallory and alice chat first (so there is a message to react
    // to) and share a group bob made; mallory watches alice's presence;
    // then alice blocks her.
    let mut world = World::new().await;
    let chats = chats_before_the_block(&mut world).await;
    typing_before_the_block(&mut world, chats.shared).await;
    block_mallory(&mut world).await;
    let before = observed(&world.server, &world.alice, chats.chat, &chats.message).await;
    refuse_the_blocked(&mut world, &chats).await;
    typing_after_the_block(&mut world, &chats).await;
    mallory_cannot_unblock_herself(&mut world).await;
    // Checked while the members' sockets are live: after a reconnect, the
    // backlog could still be on its way when the first pong arrives.
    world.assert_members_undisturbed().await;
    presence_is_hidden(&mut world).await;
    let after = observed(&world.server, &world.alice, chats.chat, &chats.message).await;
    assert_eq!(after, before);
    group_messages_still_arrive(&mut world, chats.shared).await;
}

/// Mallory's chat with alice (and her text in it), bob's group of the
/// three, and mallory's own group with bob.
struct Chats {
    chat: i64,
    message: String,
    shared: i64,
    mallorys: i64,
}

async fn chats_before_the_block(world: &mut World) -> Chats {
    let sent = world.mallory_ws.send_text("alice", "m-1", "hi alice").await;
    let (message, chat, _) = sent_message(sent.expect("send"));
    let shared = world.group(&world.bob, "both", &["alice", "mallory"]).await;
    let mallorys = world.group(&world.mallory, "mallory's", &["bob"]).await;
    let got = queued(&mut world.alice_ws, 2).await;
    ack_received(&mut world.alice_ws, &got).await;
    queued(&mut world.bob_ws, 1).await;
    // mallory: alice's delivered cursor (over her text) and bob's group.
    let mallory_got = queued(&mut world.mallory_ws, 2).await;
    assert!(
        mallory_got
            .iter()
            .any(|f| matches!(f, ServerFrame::Delivered { by, conversation, .. } if by == "alice" && *conversation == chat)),
        "{mallory_got:?}"
    );
    Chats {
        chat,
        message,
        shared,
        mallorys,
    }
}

/// Typing in the shared group reaches both ways before the block (and
/// fills the relay caches the block must invalidate); mallory watches
/// alice's presence.
async fn typing_before_the_block(world: &mut World, shared: i64) {
    let start = TypingState::Start;
    world
        .types("mallory", shared, start, &["alice", "bob"])
        .await;
    world
        .types("alice", shared, start, &["mallory", "bob"])
        .await;
    let now = world
        .mallory_ws
        .subscribe_presence(&["alice"])
        .await
        .expect("subscribe");
    assert_eq!(presence_of(&now[0]), ("alice".into(), true, None));
}

async fn block_mallory(world: &mut World) {
    let api = &world.server.api;
    api.block(&world.alice, "mallory").await.expect("block");
    assert_eq!(
        presence_of(&next_ephemeral(&mut world.mallory_ws).await),
        ("alice".into(), false, None),
        "the block hides alice at once"
    );
}

/// Everything by which mallory would reach alice is `blocked`.
async fn refuse_the_blocked(world: &mut World, chats: &Chats) {
    let (c, t, m) = (chats.chat, &chats.message, chats.mallorys);
    let actions = [
        Action::frame(frame(
            "send",
            "b",
            "1",
            json!({"to": "alice", "text": "unblock me"}),
        )),
        Action::frame(frame(
            "send",
            "b",
            "2",
            json!({"conversation": c, "text": "unblock me"}),
        )),
        Action::frame(frame(
            "react",
            "b",
            "3",
            json!({"conversation": c, "target": t, "emoji": "🙏"}),
        )),
        Action::frame(frame(
            "edit",
            "b",
            "4",
            json!({"conversation": c, "target": t, "text": "please"}),
        )),
        Action::frame(frame(
            "delete",
            "b",
            "5",
            json!({"conversation": c, "target": t}),
        )),
        Action::frame(
            json!({"type": "group_create", "id": "b6", "name": "surprise", "members": ["alice"]}),
        )
        .or_rest(
            Method::POST,
            "/v1/groups",
            Some(json!({"name": "surprise", "members": ["alice"]})),
        ),
        Action::rest(
            Method::POST,
            "/v1/groups",
            Some(json!({"name": "surprise", "members": ["bob", "alice"]})),
        ),
        Action::frame(
            json!({"type": "group_add", "id": "b7", "conversation": m, "members": ["alice"]}),
        )
        .or_rest(
            Method::POST,
            format!("/v1/groups/{m}/members"),
            Some(json!({"members": ["alice"]})),
        ),
    ];
    world.refuse(rows(Who::Mallory, actions, "blocked")).await;
}

/// Typing: accepted, relayed to nobody on alice's side, in the 1:1 and in
/// the group they share (bob still gets it there).
async fn typing_after_the_block(world: &mut World, chats: &Chats) {
    let start = TypingState::Start;
    world
        .mallory_ws
        .typing(chats.chat, start)
        .await
        .expect("typing");
    world.types("mallory", chats.shared, start, &["bob"]).await;
    world.types("alice", chats.shared, start, &["bob"]).await;
    assert_no_ephemeral(&mut world.mallory_ws).await;
}

/// Mallory's own block list is hers: "unblocking" alice lifts nothing.
async fn mallory_cannot_unblock_herself(world: &mut World) {
    let api = &world.server.api;
    api.unblock(&world.mallory, "alice")
        .await
        .expect("not an error");
    assert_eq!(
        api.blocks(&world.alice).await.expect("blocks").users,
        ["mallory"]
    );
    let retry = frame("send", "b", "8", json!({"to": "alice", "text": "now?"}));
    world
        .refuse(rows(Who::Mallory, [Action::frame(retry)], "blocked"))
        .await;
}

/// Presence: alice's comings and goings are invisible to mallory, in the
/// subscription's answer and as later frames. Alice goes offline and comes
/// back: bob (who may see her) is told, mallory must not get so much as an
/// "offline" frame, whose timing alone would tell her. A connect announces
/// before `ready`, so once `connect` returns the frames are out.
async fn presence_is_hidden(world: &mut World) {
    world.assert_alice_hidden_from_mallory().await;
    let subscribe = json!({"type": "subscribe_presence", "id": "p", "users": ["alice"]});
    let (_, frames) = over_http(&world.server, &world.mallory, &subscribe).await;
    assert_eq!(presence_of(&frames[1]), ("alice".into(), false, None));
    let [offline, online] = world.alice_goes_and_comes_back().await;
    assert!(offline.2.is_some());
    assert_eq!(online, ("alice".into(), true, None));
}

/// Group messages are not affected (docs/PROTOCOL.md): the block is about
/// mallory reaching alice directly.
async fn group_messages_still_arrive(world: &mut World, shared: i64) {
    let alice_groups = world
        .server
        .api
        .conversations(&world.alice)
        .await
        .expect("list");
    assert_eq!(
        alice_groups.conversations.len(),
        3,
        "alice is in her chats with bob and mallory and bob's group only: {alice_groups:?}"
    );
    world
        .mallory_ws
        .send_to(shared, "g", "hello group", None)
        .await
        .expect("group send");
    assert_eq!(
        texts(&queued(&mut world.alice_ws, 1).await),
        ["hello group"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_settings_are_theirs_alone() {
    // Goal: contacts, blocks and the presence setting are per account:
    // whatever mallory does with her own lists and setting changes nothing
    // of alice's, and she cannot see alice's lists.
    let mut world = World::new().await;
    let api = &world.server.api;
    api.add_contact(&world.alice, "bob").await.expect("contact");
    api.block(&world.alice, "mallory").await.expect("block");
    api.set_privacy(&world.alice, PresenceVisibility::Contacts)
        .await
        .expect("privacy");
    let alice_before = alice_settings(&world).await;

    api.add_contact(&world.mallory, "alice")
        .await
        .expect("contact");
    api.remove_contact(&world.mallory, "bob")
        .await
        .expect("no-op");
    api.unblock(&world.mallory, "alice").await.expect("no-op");
    api.block(&world.mallory, "bob").await.expect("block");
    api.set_privacy(&world.mallory, PresenceVisibility::Everyone)
        .await
        .expect("privacy");
    let mallorys_contacts = api.contacts(&world.mallory).await.expect("contacts");
    assert_eq!(mallorys_contacts.users, ["alice"]);
    let mallorys_blocks = api.blocks(&world.mallory).await.expect("blocks");
    assert_eq!(mallorys_blocks.users, ["bob"]);
    assert_eq!(alice_settings(&world).await, alice_before);
    // Alice's "contacts" setting does not admit mallory, who added her,
    // and her comings and goings do not show as frames either (the next
    // connect announces before `ready`).
    world.assert_alice_hidden_from_mallory().await;
    // Checked while the members' sockets are live: a fresh connection's
    // backlog could still be on its way when its first pong arrives.
    world.assert_members_undisturbed().await;
    // Bob, her contact, sees her go and come back (so the changes did
    // happen); mallory gets no frame at all.
    world.alice_goes_and_comes_back().await;
}

/// Alice's contacts, blocks and presence setting, as JSON.
async fn alice_settings(world: &World) -> serde_json::Value {
    let api = &world.server.api;
    json!([
        api.contacts(&world.alice).await.expect("contacts"),
        api.blocks(&world.alice).await.expect("blocks"),
        api.privacy(&world.alice).await.expect("privacy"),
    ])
}
