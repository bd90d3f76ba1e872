//! Groups, message kinds (reply, reaction, edit, delete), receipts per
//! member, history and the conversation list, over real sockets.

mod common;

use common::*;
use missive_client::Connection;
use missive_proto::rest::MemberRole;
use missive_proto::{ClientFrame, MessageKind, ServerFrame};

/// (message_id, conversation, seq) of a `sent` reply.
fn sent(frame: ServerFrame) -> (String, i64, i64) {
    match frame {
        ServerFrame::Sent {
            message_id,
            conversation,
            seq,
            ..
        } => (message_id, conversation, seq),
        other => panic!("expected sent, got {other:?}"),
    }
}

/// (seq, kind, from, text) of each `message` frame.
fn events(frames: &[ServerFrame]) -> Vec<(i64, MessageKind, String, String)> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message {
                seq,
                kind,
                from,
                text,
                ..
            } => Some((*seq, *kind, from.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

fn system_action(frame: &ServerFrame) -> Option<String> {
    match frame {
        ServerFrame::Message {
            kind: MessageKind::System,
            event: Some(event),
            ..
        } => event["action"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// Reads delivery frames until `n` arrived and acks them all (one
/// cumulative ack per conversation).
async fn drain(connection: &mut Connection, n: usize) -> Vec<ServerFrame> {
    let frames = queued(connection, n).await;
    ack_received(connection, &frames).await;
    frames
}

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
            let (_, _, seq) = sent(
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
    for device in devices.iter_mut() {
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
    sent(
        alice_ws
            .send_to(id, "before", "before dave", None)
            .await
            .unwrap(),
    );
    let info = server.api.add_members(&alice, id, &["dave"]).await.unwrap();
    assert_eq!(info.members.len(), 3);
    sent(
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
    sent(
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
    let id = server
        .api
        .create_group(&alice, "g", &["bob"])
        .await
        .unwrap()
        .conversation;
    assert_eq!(
        refused_code(server.api.add_members(&bob, id, &["carol"]).await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.rename_group(&bob, id, "mine").await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.remove_member(&bob, id, "alice").await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.promote(&bob, id, "bob").await),
        "not_admin"
    );
    assert_eq!(
        refused_code(server.api.add_members(&alice, id, &["carol", "dave"]).await),
        "group_full"
    );
    assert_eq!(
        refused_code(server.api.add_members(&alice, id, &["bob"]).await),
        "already_member"
    );
    assert_eq!(
        refused_code(server.api.add_members(&alice, id, &["nobody"]).await),
        "unknown_user"
    );
    assert_eq!(
        refused_code(server.api.rename_group(&alice, id, "  ").await),
        "invalid_field"
    );
    let info = server
        .api
        .add_members(&alice, id, &["carol"])
        .await
        .unwrap();
    assert_eq!(info.members.len(), 3);
    let info = server
        .api
        .rename_group(&alice, id, "renamed")
        .await
        .unwrap();
    assert_eq!(info.name, "renamed");

    server.api.leave_group(&alice, id).await.unwrap();
    let info = server.api.group(&bob, id).await.unwrap();
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
        refused_code(server.api.group(&alice, id).await),
        "not_member"
    );
    // The new admin can act; demoting the only admin promotes someone else.
    server.api.promote(&bob, id, "carol").await.unwrap();
    let info = server.api.demote(&bob, id, "bob").await.unwrap();
    let admins: Vec<_> = info
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Admin)
        .map(|m| m.username.as_str())
        .collect();
    assert_eq!(admins, ["carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_kept_per_member() {
    // Goal: in a group, each member's ack moves its own delivered cursor,
    // told live to the connected author as a `delivered` frame; read
    // cursors are per member; only the author of a covered text is told
    // (bob, who wrote nothing, gets no frame for carol's cursors); message
    // info and the conversation list show who has it and who read it.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let id = server
        .api
        .create_group(&alice, "g", &["bob", "carol"])
        .await
        .unwrap()
        .conversation;
    let mut alice_ws = server.connect(&alice).await;
    let (message_id, _, seq) = sent(alice_ws.send_to(id, "m", "hello all", None).await.unwrap());
    let mut bob_ws = server.connect(&bob).await;
    drain(&mut bob_ws, 2).await;
    let receipt = queued(&mut alice_ws, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { conversation, by, seq: s, .. }
            if by == "bob" && *conversation == id && *s == seq),
        "{receipt:?}"
    );
    let info = server.api.receipts(&alice, id, &message_id).await.unwrap();
    let delivered: Vec<_> = info.delivered.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(delivered, ["bob"]);
    assert!(info.read.is_empty());

    let mut carol_ws = server.connect(&carol).await;
    drain(&mut carol_ws, 2).await;
    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation: id,
        seq,
    };
    carol_ws.request(&read, "r").await.unwrap();
    let receipts = queued(&mut alice_ws, 2).await;
    assert!(
        matches!(&receipts[0], ServerFrame::Delivered { by, seq: s, .. } if by == "carol" && *s == seq),
        "{receipts:?}"
    );
    assert!(
        matches!(&receipts[1], ServerFrame::Read { by, seq: s, conversation, .. }
            if by == "carol" && *s == seq && *conversation == id),
        "{receipts:?}"
    );
    assert_nothing_queued(&mut bob_ws).await;
    // Bob sees carol's receipts in message info and in his list.
    let info = server.api.receipts(&bob, id, &message_id).await.unwrap();
    let mut delivered: Vec<_> = info.delivered.iter().map(|r| r.user.clone()).collect();
    delivered.sort();
    assert_eq!(delivered, ["bob", "carol"]);
    let read: Vec<_> = info.read.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(read, ["carol"]);
    let cursors = |list: &missive_proto::rest::ConversationList| -> Vec<(String, i64, i64)> {
        list.conversations
            .iter()
            .find(|c| c.conversation == id)
            .expect("the group is listed")
            .receipts
            .iter()
            .map(|r| (r.user.clone(), r.delivered_seq, r.read_seq))
            .collect()
    };
    let list = server.api.conversations(&alice).await.unwrap();
    assert_eq!(
        cursors(&list),
        [("bob".to_string(), seq, 0), ("carol".to_string(), seq, seq)]
    );
    let list = server.api.conversations(&bob).await.unwrap();
    assert_eq!(
        cursors(&list),
        [("alice".to_string(), 0, 0), ("carol".to_string(), seq, seq)],
        "the other members only; alice never acked her own events"
    );
    assert_eq!(
        refused_code(server.api.receipts(&bob, id, "no-such-id").await),
        "unknown_message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_are_for_the_author_within_the_window() {
    // Goal: only the author edits (within 15 min) and deletes; an edit
    // reaches the others and history shows the new text; a delete leaves a
    // tombstone with the text purged (also from the edit event), after
    // which the message can be neither edited nor reacted to.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    let (first, id, _) = sent(alice_ws.send_text("bob", "m1", "helo").await.unwrap());
    let (second, _, _) = sent(alice_ws.send_text("bob", "m2", "second").await.unwrap());
    assert_eq!(
        refused_code(bob_ws.edit(id, "e0", &first, "mine now").await),
        "not_author"
    );
    assert_eq!(
        refused_code(bob_ws.delete(id, "d0", &first).await),
        "not_author"
    );
    assert_eq!(
        refused_code(alice_ws.edit(id, "e1", "no-such-id", "x").await),
        "unknown_message"
    );
    sent(alice_ws.edit(id, "e2", &first, "hello").await.unwrap());
    let frames = drain(&mut bob_ws, 3).await;
    assert!(
        matches!(&frames[2], ServerFrame::Message { kind: MessageKind::Edit, target: Some(t), text, .. } if *t == first && text == "hello"),
        "{frames:?}"
    );
    let history = server.api.history(&bob, id, "").await.unwrap();
    let edited = history
        .messages
        .iter()
        .find(|m| m.message_id == first)
        .unwrap();
    assert_eq!(edited.text, "hello");
    assert!(edited.edited_ms.is_some());

    server.clock.advance_ms(15 * 60 * 1000 + 1);
    assert_eq!(
        refused_code(alice_ws.edit(id, "e3", &second, "late").await),
        "edit_window_closed"
    );

    sent(alice_ws.delete(id, "d1", &first).await.unwrap());
    let history = server.api.history(&bob, id, "").await.unwrap();
    let tombstone = history
        .messages
        .iter()
        .find(|m| m.message_id == first)
        .unwrap();
    assert!(tombstone.deleted);
    assert_eq!(tombstone.text, "");
    let edit_event = history
        .messages
        .iter()
        .find(|m| m.kind == MessageKind::Edit)
        .unwrap();
    assert_eq!(
        edit_event.text, "",
        "the edit event must not keep the deleted text"
    );
    assert_eq!(
        refused_code(alice_ws.delete(id, "d2", &first).await),
        "message_deleted"
    );
    assert_eq!(
        refused_code(alice_ws.edit(id, "e4", &first, "x").await),
        "message_deleted"
    );
    assert_eq!(
        refused_code(bob_ws.react(id, "r1", &first, Some("👍")).await),
        "message_deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_replace_and_remove_and_replies_point_at_their_target() {
    // Goal: one reaction per user per message, replaceable and removable;
    // a reply must reference a message of the same conversation.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut bob_ws = server.connect(&bob).await;
    let (message, id, _) = sent(
        alice_ws
            .send_text("bob", "m1", "react to me")
            .await
            .unwrap(),
    );
    let (elsewhere, _, _) = sent(
        alice_ws
            .send_text("carol", "m2", "other chat")
            .await
            .unwrap(),
    );
    let reactions = |history: &missive_proto::rest::History| -> Vec<(String, String)> {
        history
            .messages
            .iter()
            .find(|m| m.message_id == message)
            .unwrap()
            .reactions
            .iter()
            .map(|r| (r.user.clone(), r.emoji.clone()))
            .collect()
    };
    sent(bob_ws.react(id, "r1", &message, Some("👍")).await.unwrap());
    sent(bob_ws.react(id, "r2", &message, Some("❤️")).await.unwrap());
    sent(
        alice_ws
            .react(id, "r3", &message, Some("😂"))
            .await
            .unwrap(),
    );
    let history = server.api.history(&alice, id, "").await.unwrap();
    assert_eq!(
        reactions(&history),
        [
            ("alice".to_string(), "😂".to_string()),
            ("bob".to_string(), "❤️".to_string())
        ]
    );
    sent(bob_ws.react(id, "r4", &message, None).await.unwrap());
    let history = server.api.history(&alice, id, "").await.unwrap();
    assert_eq!(
        reactions(&history),
        [("alice".to_string(), "😂".to_string())]
    );
    assert_eq!(
        refused_code(
            bob_ws
                .react(id, "r5", &message, Some("too long emoji!!!"))
                .await
        ),
        "invalid_field"
    );
    assert_eq!(
        refused_code(bob_ws.react(id, "r6", &elsewhere, Some("👍")).await),
        "unknown_message"
    );

    let reply = bob_ws
        .send_to(id, "re1", "replying", Some(&message))
        .await
        .unwrap();
    let (reply_id, _, _) = sent(reply);
    assert_eq!(
        refused_code(bob_ws.send_to(id, "re2", "bad", Some(&elsewhere)).await),
        "unknown_message"
    );
    let frames = drain(&mut alice_ws, 4).await;
    let last = frames.last().unwrap();
    assert!(
        matches!(last, ServerFrame::Message { message_id, kind: MessageKind::Text, target: Some(t), .. } if *message_id == reply_id && *t == message),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_both_ways_and_the_conversation_list_counts_unread() {
    // Goal: history pages newest-first with next_before and oldest-first
    // from a seq; the conversation list has last message, unread counts and
    // members, most recent first.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut id = 0;
    for i in 1..=25 {
        id = sent(
            alice_ws
                .send_text("bob", &format!("m{i}"), &format!("text {i}"))
                .await
                .unwrap(),
        )
        .1;
    }
    let page = server.api.history(&bob, id, "limit=10").await.unwrap();
    let page_seqs: Vec<_> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(page_seqs, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(page.next_before, Some(16));
    let page = server
        .api
        .history(&bob, id, "limit=10&before=16")
        .await
        .unwrap();
    assert_eq!(page.messages.first().map(|m| m.seq), Some(15));
    let page = server
        .api
        .history(&bob, id, "limit=10&before=6")
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 5);
    assert_eq!(page.next_before, None);
    let page = server.api.history(&bob, id, "after=20").await.unwrap();
    let page_seqs: Vec<_> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(page_seqs, [21, 22, 23, 24, 25]);
    assert_eq!(
        refused_code(server.api.history(&bob, id, "after=1&before=5").await),
        "invalid_field"
    );
    assert_eq!(
        refused_code(server.api.history(&bob, id, "limit=abc").await),
        "invalid_field"
    );
    // A page of nothing is a mistake, not a request for one message.
    assert_eq!(
        refused_code(server.api.history(&bob, id, "limit=0").await),
        "invalid_field"
    );
    assert_eq!(
        refused_code(server.api.history(&bob, 999, "").await),
        "unknown_conversation"
    );
    let carol = server.device("carol").await;
    assert_eq!(
        refused_code(server.api.history(&carol, id, "").await),
        "unknown_conversation"
    );

    let group = server
        .api
        .create_group(&alice, "later", &["bob"])
        .await
        .unwrap();
    let mut bob_ws = server.connect(&bob).await;
    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation: id,
        seq: 20,
    };
    bob_ws.request(&read, "r").await.unwrap();
    // Bob's own text above his read pointer is not unread for him.
    bob_ws.send_to(id, "b1", "my own", None).await.unwrap();
    let list = server.api.conversations(&bob).await.unwrap();
    let summary: Vec<_> = list
        .conversations
        .iter()
        .map(|c| (c.conversation, c.unread, c.members.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                group.conversation,
                0,
                vec!["alice".to_string(), "bob".to_string()]
            ),
            (id, 5, vec!["alice".to_string(), "bob".to_string()]),
        ]
    );
    let direct = &list.conversations[1];
    assert_eq!(
        direct.last_message.as_ref().map(|m| m.text.as_str()),
        Some("my own")
    );
    assert_eq!(list.conversations[0].name.as_deref(), Some("later"));
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
    let id = server
        .api
        .create_group(&alice, "private", &["bob"])
        .await
        .unwrap()
        .conversation;
    let mut alice_ws = server.connect(&alice).await;
    let (message, _, seq) = sent(alice_ws.send_to(id, "m", "secret", None).await.unwrap());
    let mut eve_ws = server.connect(&eve).await;
    assert_eq!(
        refused_code(eve_ws.send_to(id, "x", "hi", None).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(eve_ws.react(id, "x2", &message, Some("👍")).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(eve_ws.edit(id, "x3", &message, "mine").await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(eve_ws.delete(id, "x4", &message).await),
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
    assert_eq!(
        refused_code(server.api.group(&eve, id).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.history(&eve, id, "").await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.receipts(&eve, id, &message).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.add_members(&eve, id, &["eve"]).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.leave_group(&eve, id).await),
        "unknown_conversation"
    );
    assert_eq!(
        refused_code(server.api.rename_group(&eve, id, "mine").await),
        "unknown_conversation"
    );
    // Nothing changed: the next message is seq 3 (created, secret, this).
    let (_, _, next) = sent(
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
    let id = server
        .api
        .create_group(&alice, "g", &["bob"])
        .await
        .unwrap()
        .conversation;
    let mut alice_ws = server.connect(&alice).await;
    let (old, _, _) = sent(alice_ws.send_to(id, "m1", "plan v1", None).await.unwrap());
    server.api.add_members(&alice, id, &["dave"]).await.unwrap();
    sent(
        alice_ws
            .edit(id, "e1", &old, "secret plan v2")
            .await
            .unwrap(),
    );
    let (fresh, _, _) = sent(
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
    sent(dave_ws.react(id, "r3", &fresh, Some("👋")).await.unwrap());
    let list = server.api.conversations(&dave).await.unwrap();
    // Of added, the hidden edit, welcome and the own reaction, only
    // alice's text counts.
    assert_eq!(list.conversations[0].unread, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_search_finds_texts_and_file_names_newest_first() {
    // Goal: `?q=` returns the member's visible texts containing the words
    // (any case, Unicode; or a file name they carry), newest first, with
    // `next_before` to go on; deleted texts, reactions and events before
    // the caller joined are not found; an empty q or one with `after` is
    // invalid_field; an outsider gets unknown_conversation.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let eve = server.user("eve").await;
    let id = server
        .api
        .create_group(&alice, "trip", &["bob"])
        .await
        .unwrap()
        .conversation;
    let mut alice_ws = server.connect(&alice).await;
    let (early, _, _) = sent(
        alice_ws
            .send_to(id, "s0", "Zürich before carol", None)
            .await
            .unwrap(),
    );
    server
        .api
        .add_members(&alice, id, &["carol"])
        .await
        .unwrap();
    let texts = [
        "Meet in ZÜRICH at 9",
        "no match here",
        "zürich again",
        "gone: zürich",
    ];
    let mut ids = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let (message, _, _) = sent(
            alice_ws
                .send_to(id, &format!("s{}", n + 1), text, None)
                .await
                .unwrap(),
        );
        ids.push(message);
    }
    sent(alice_ws.delete(id, "del", &ids[3]).await.unwrap());
    sent(alice_ws.react(id, "re", &ids[0], Some("👍")).await.unwrap());

    let found = server.api.search(&carol, id, "zürich", None).await.unwrap();
    let found_texts: Vec<&str> = found.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(found_texts, ["zürich again", "Meet in ZÜRICH at 9"]);
    assert_eq!(
        found.next_before, None,
        "the whole visible history was searched"
    );
    let bob_found = server.api.search(&bob, id, "ZÜRICH", None).await.unwrap();
    assert_eq!(
        bob_found.messages.len(),
        3,
        "bob was there for the first one"
    );
    assert_eq!(bob_found.messages[2].message_id, early);
    let older = server
        .api
        .search(&bob, id, "zürich", Some(bob_found.messages[0].seq))
        .await
        .unwrap();
    assert_eq!(older.messages.len(), 2, "strictly below before");

    let one = server
        .api
        .history(&bob, id, "q=z%C3%BCrich&limit=1")
        .await
        .unwrap();
    assert_eq!(one.messages.len(), 1);
    assert_eq!(
        one.next_before,
        Some(one.messages[0].seq),
        "go on from there"
    );

    for query in ["q=", "q=%20%20", "q=x&after=1"] {
        assert_eq!(
            refused_code(server.api.history(&bob, id, query).await),
            "invalid_field",
            "{query}"
        );
    }
    assert_eq!(
        refused_code(server.api.search(&eve, id, "zürich", None).await),
        "unknown_conversation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_list_comes_in_pages() {
    // Goal: `limit` pages the list, most recent activity first, each
    // conversation once across pages, with `next` until the last page; a
    // bad cursor or limit 0 is invalid_field.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut expected = Vec::new();
    for n in 0..5 {
        let peer = format!("peer{n}");
        server.user(&peer).await;
        let (_, conversation, _) = sent(
            alice_ws
                .send_text(&peer, &format!("c{n}"), "hi")
                .await
                .unwrap(),
        );
        expected.push(conversation);
    }
    expected.reverse();
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = server
            .api
            .conversations_page(&alice, before.as_deref(), Some(2))
            .await
            .unwrap();
        pages += 1;
        assert!(page.conversations.len() <= 2);
        seen.extend(page.conversations.iter().map(|c| c.conversation));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "newest first, each once");
    assert_eq!(
        server
            .api
            .conversations(&alice)
            .await
            .unwrap()
            .conversations
            .len(),
        5
    );
    for query in ["before=nonsense", "limit=0", "before=1.x"] {
        let answer = reqwest::Client::new()
            .get(format!("{}/v1/conversations?{query}", server.url()))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_field", "{query}");
    }
}
