//! Groups and their members: fan-out to every device, membership
//! boundaries, admin rules, what a non-member can do, and group management
//! over the WebSocket.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_every_member_gets_every_group_message_once_in_order() {
    // Goal: in a group of 3 users × 2 devices, each device receives the
    // `created` event and every message except those it sent itself, exactly
    // once and in seq order. Method: each device sends two messages in turn;
    // each device then drains what waits for it and compares with the
    // expected list.
    let server = TestServer::start().await;
    let mut tokens = Vec::new();
    for name in ["alice", "bob", "carol"] {
        tokens.push(server.user(name).await);
        tokens.push(server.device(name).await);
    }
    let group = server
        .api
        .create_group(&tokens[0], "trio", &["bob", "carol"])
        .await
        .unwrap();
    let mut devices = Vec::new();
    for token in &tokens {
        devices.push(server.connect(token).await);
    }
    let mut sent_by = Vec::new(); // (device index, seq)
    for round in 0..2 {
        for (idx, device) in devices.iter_mut().enumerate() {
            let text = format!("r{round}-d{idx}");
            let (_, _, seq) = sent_message(
                device
                    .send_to(group.conversation, &text, &text, None)
                    .await
                    .unwrap(),
            );
            sent_by.push((idx, seq));
        }
    }
    let n_events = 1 + sent_by.len() as i64;
    for (idx, device) in devices.iter_mut().enumerate() {
        let mut expected: Vec<i64> = (1..=n_events)
            .filter(|seq| !sent_by.contains(&(idx, *seq)))
            .collect();
        if idx == 0 {
            // The creating device does not get its own `created` event.
            expected.retain(|seq| *seq != 1);
        }
        let frames = drain_messages(device, expected.len()).await;
        assert_eq!(seqs(&frames), expected, "device {idx}");
    }
    // Receipts caused by the drains arrive now; no further message may.
    for device in &mut devices {
        let ping = ClientFrame::Ping {
            id: Some("end".into()),
        };
        device.send_frame(&ping).await.unwrap();
        loop {
            match device.next_frame(PROMPTLY).await.unwrap() {
                ServerFrame::Pong { id } if id.as_deref() == Some("end") => break,
                frame @ ServerFrame::Message { .. } => panic!("extra message {frame:?}"),
                _ => {}
            }
        }
    }
}

/// Reads until `n` `message` frames arrived (skipping receipts), acking all.
async fn drain_messages(connection: &mut Connection, n: usize) -> Vec<ServerFrame> {
    let mut messages = Vec::with_capacity(n);
    while messages.len() < n {
        let frame = connection.next_frame(PROMPTLY).await.unwrap();
        if let Some((conversation, seq)) = frame.ack_point() {
            connection.ack(conversation, seq).await.unwrap();
        }
        if matches!(frame, ServerFrame::Message { .. }) {
            messages.push(frame);
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_boundaries_hold_for_added_and_removed_members() {
    // Goal: a new member receives nothing sent before joining (delivery and
    // history); a removed member receives the removal and nothing after, and
    // can no longer send, read history or see the group.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dave = server.user("dave").await;
    let group = server
        .api
        .create_group(&alice, "g", &["bob"])
        .await
        .unwrap();
    let id = group.conversation;
    let mut alice_ws = server.connect(&alice).await;
    sent_message(
        alice_ws
            .send_to(id, "before", "before dave", None)
            .await
            .unwrap(),
    );
    let info = server.api.add_members(&alice, id, &["dave"]).await.unwrap();
    assert_eq!(info.members.len(), 3);
    sent_message(
        alice_ws
            .send_to(id, "after", "after dave", None)
            .await
            .unwrap(),
    );

    let mut dave_ws = server.connect(&dave).await;
    let frames = drain(&mut dave_ws, 2).await;
    assert_eq!(system_action(&frames[0]).as_deref(), Some("added"));
    assert_eq!(events(&frames)[1].3, "after dave");
    assert_nothing_queued(&mut dave_ws).await;
    let history = server.api.history(&dave, id, "").await.unwrap();
    let texts: Vec<_> = history.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["after dave", ""],
        "newest first; nothing before joining"
    );

    server.api.remove_member(&alice, id, "bob").await.unwrap();
    sent_message(
        alice_ws
            .send_to(id, "gone", "bob is gone", None)
            .await
            .unwrap(),
    );
    let mut bob_ws = server.connect(&bob).await;
    // created, "before dave", added, "after dave", removed — then nothing.
    let frames = drain(&mut bob_ws, 5).await;
    assert_eq!(system_action(&frames[4]).as_deref(), Some("removed"));
    assert_nothing_queued(&mut bob_ws).await;
    let refused = bob_ws.send_to(id, "x", "let me in", None).await;
    assert_eq!(refused_code(refused), "not_member");
    assert_eq!(
        refused_code(server.api.history(&bob, id, "").await),
        "not_member"
    );
    assert_eq!(refused_code(server.api.group(&bob, id).await), "not_member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rules_and_the_last_admin_leaving() {
    // Goal: only admins add, remove, rename, promote; the group size limit
    // holds; when the last admin leaves, the longest-standing member is
    // promoted.
    let server = TestServer::start_with(|config| config.limits.group_members_max = 3).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    server.user("dave").await;
    let id = server.group(&alice, "g", &["bob"]).await;
    only_admins_change_the_group(&server, &alice, &bob, id).await;
    the_last_admin_leaving_promotes_the_longest_standing(&server, &alice, &bob, id).await;
}

/// Refusals to a member who is not an admin, and to an admin past the
/// rules; then the admin adds carol and renames the group.
async fn only_admins_change_the_group(server: &TestServer, alice: &str, bob: &str, id: i64) {
    assert_eq!(
        refused_code(server.api.add_members(bob, id, &["carol"]).await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.rename_group(bob, id, "mine").await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.remove_member(bob, id, "alice").await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.promote(bob, id, "bob").await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.add_members(alice, id, &["carol", "dave"]).await),
        "group_full"
    );
    assert_eq!(
        refused_code(server.api.add_members(alice, id, &["bob"]).await),
        "already_member"
    );
    assert_eq!(
        refused_code(server.api.add_members(alice, id, &["nobody"]).await),
        "unknown_user"
    );
    assert_eq!(
        refused_code(server.api.rename_group(alice, id, "  ").await),
        "invalid_field"
    );
    let info = server.api.add_members(alice, id, &["carol"]).await.unwrap();
    assert_eq!(info.members.len(), 3);
    let info = server.api.rename_group(alice, id, "renamed").await.unwrap();
    assert_eq!(info.name, "renamed");
}

async fn the_last_admin_leaving_promotes_the_longest_standing(
    server: &TestServer,
    alice: &str,
    bob: &str,
    id: i64,
) {
    server.api.leave_group(alice, id).await.unwrap();
    let info = server.api.group(bob, id).await.unwrap();
    let roles: Vec<_> = info
        .members
        .iter()
        .map(|m| (m.username.as_str(), m.role))
        .collect();
    assert_eq!(
        roles,
        [("bob", MemberRole::Admin), ("carol", MemberRole::Member)]
    );
    assert_eq!(
        refused_code(server.api.group(alice, id).await),
        "not_member"
    );
    // The new admin can act; demoting the only admin promotes someone else.
    server.api.promote(bob, id, "carol").await.unwrap();
    let info = server.api.demote(bob, id, "bob").await.unwrap();
    let admins: Vec<_> = info
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Admin)
        .map(|m| m.username.as_str())
        .collect();
    assert_eq!(admins, ["carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_can_do_nothing_to_a_group() {
    // Goal: every group operation by an outsider is refused as if the group
    // did not exist (unknown_conversation: she cannot learn that it does)
    // and changes nothing.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let eve = server.user("eve").await;
    let id = server.group(&alice, "private", &["bob"]).await;
    let mut alice_ws = server.connect(&alice).await;
    let (message, _, seq) = sent_message(alice_ws.send_to(id, "m", "secret", None).await.unwrap());
    let _eve_ws = every_frame_of_an_outsider_is_refused(&server, &eve, id, &message, seq).await;
    every_request_of_an_outsider_is_refused(&server, &eve, id, &message).await;
    // Nothing changed: the next message is seq 3 (created, secret, this).
    let (_, _, next) = sent_message(
        alice_ws
            .send_to(id, "m2", "still private", None)
            .await
            .unwrap(),
    );
    assert_eq!(next, seq + 1);
    assert_eq!(server.api.group(&alice, id).await.unwrap().members.len(), 2);
    assert!(
        server
            .api
            .conversations(&eve)
            .await
            .unwrap()
            .conversations
            .is_empty()
    );
}

/// Over the WebSocket: sends, reactions, edits, deletes and reads.
/// Returns eve's connection.
async fn every_frame_of_an_outsider_is_refused(
    server: &TestServer,
    eve: &str,
    id: i64,
    message: &str,
    seq: i64,
) -> Connection {
    let mut eve_ws = server.connect(eve).await;
    assert_eq!(
        refused_code(eve_ws.send_to(id, "x", "hi", None).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(eve_ws.react(id, "x2", message, Some("👍")).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(eve_ws.edit(id, "x3", message, "mine").await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(eve_ws.delete(id, "x4", message).await),
        "unknown_conversation"
    );
    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation: id,
        seq,
    };
    assert_eq!(
        refused_code(eve_ws.request(&read, "r").await),
        "unknown_conversation"
    );
    eve_ws
}

/// Over REST: the group, its history and receipts, and its management.
async fn every_request_of_an_outsider_is_refused(
    server: &TestServer,
    eve: &str,
    id: i64,
    message: &str,
) {
    assert_eq!(
        refused_code(server.api.group(eve, id).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.history(eve, id, "").await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.receipts(eve, id, message).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.add_members(eve, id, &["eve"]).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.leave_group(eve, id).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.rename_group(eve, id, "mine").await),
        "unknown_conversation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_can_be_managed_over_the_websocket_too() {
    // Goal: the group_* frames do what the REST endpoints do, with the same
    // rules and typed errors, answered with `group` / `ok`.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    let created = alice_ws
        .call(|id| ClientFrame::GroupCreate {
            id,
            name: "ws group".into(),
            members: vec!["bob".into()],
            encrypted: None,
        })
        .await
        .unwrap();
    let ServerFrame::Group { group, .. } = created else {
        panic!("{created:?}")
    };
    let id = group.conversation;
    assert_eq!(group.members.len(), 2);
    let refused = bob_ws
        .call(|cid| ClientFrame::GroupAdd {
            id: cid,
            conversation: id,
            members: vec!["carol".into()],
        })
        .await;
    assert_eq!(refused_code(refused), "not_admin");
    let added = alice_ws
        .call(|cid| ClientFrame::GroupAdd {
            id: cid,
            conversation: id,
            members: vec!["carol".into()],
        })
        .await
        .unwrap();
    assert!(
        matches!(&added, ServerFrame::Group { group, .. } if group.members.len() == 3),
        "{added:?}"
    );
    let left = bob_ws
        .call(|cid| ClientFrame::GroupLeave {
            id: cid,
            conversation: id,
        })
        .await
        .unwrap();
    assert!(matches!(left, ServerFrame::Ok { .. }), "{left:?}");
    let info = alice_ws
        .call(|cid| ClientFrame::GroupInfo {
            id: cid,
            conversation: id,
        })
        .await
        .unwrap();
    let ServerFrame::Group { group, .. } = info else {
        panic!("{info:?}")
    };
    let names: Vec<_> = group.members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(names, ["alice", "carol"]);
    // Bob saw created, added, and his own leave; the REST view agrees.
    let frames = drain(&mut bob_ws, 2).await;
    let actions: Vec<_> = frames.iter().filter_map(system_action).collect();
    assert_eq!(actions, ["created", "added"]);
    assert_eq!(server.api.group(&alice, id).await.unwrap(), group);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_learns_nothing_about_messages_from_before_joining() {
    // Goal: edits, reactions and deletes of a message sent before someone
    // joined never reach them (delivery or history); they cannot act on it or
    // ask for its receipts; their unread count starts at their joining.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let dave = server.user("dave").await;
    let id = server.group(&alice, "g", &["bob"]).await;
    let mut alice_ws = server.connect(&alice).await;
    let (old, _, _) = sent_message(alice_ws.send_to(id, "m1", "plan v1", None).await.unwrap());
    server.api.add_members(&alice, id, &["dave"]).await.unwrap();
    sent_message(
        alice_ws
            .edit(id, "e1", &old, "secret plan v2")
            .await
            .unwrap(),
    );
    let (fresh, _, _) = sent_message(
        alice_ws
            .send_to(id, "m2", "welcome dave", None)
            .await
            .unwrap(),
    );

    let mut dave_ws = server.connect(&dave).await;
    let frames = drain(&mut dave_ws, 2).await;
    assert_eq!(system_action(&frames[0]).as_deref(), Some("added"));
    assert_eq!(events(&frames)[1].3, "welcome dave");
    assert_nothing_queued(&mut dave_ws).await;
    let history = server.api.history(&dave, id, "").await.unwrap();
    assert!(
        !history.messages.iter().any(|m| m.text.contains("secret")),
        "{history:?}"
    );
    assert_eq!(history.messages.len(), 2);
    assert_eq!(
        refused_code(dave_ws.react(id, "r1", &old, Some("👍")).await),
        "unknown_message"
    );
    assert_eq!(
        refused_code(dave_ws.send_to(id, "r2", "re", Some(&old)).await),
        "unknown_message"
    );
    assert_eq!(
        refused_code(server.api.receipts(&dave, id, &old).await),
        "unknown_message"
    );
    sent_message(dave_ws.react(id, "r3", &fresh, Some("👋")).await.unwrap());
    let list = server.api.conversations(&dave).await.unwrap();
    // Of added, the hidden edit, welcome and the own reaction, only
    // alice's text counts.
    assert_eq!(list.conversations[0].unread, 1);
}
