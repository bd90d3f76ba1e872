//! What members do to messages: receipts, edits, deletes, reactions and
//! replies.

use super::*;

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
    let id = server.group(&alice, "g", &["bob", "carol"]).await;
    let mut alice_ws = server.connect(&alice).await;
    let (message_id, _, seq) =
        sent_message(alice_ws.send_to(id, "m", "hello all", None).await.unwrap());
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
    the_lists_show_the_cursors_of_the_others(&server, &alice, &bob, id, seq).await;
    assert_eq!(
        refused_code(server.api.receipts(&bob, id, "no-such-id").await),
        "unknown_message"
    );
}

/// Each member's list shows the other members' delivered and read
/// cursors.
async fn the_lists_show_the_cursors_of_the_others(
    server: &TestServer,
    alice: &str,
    bob: &str,
    id: i64,
    seq: i64,
) {
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
    let list = server.api.conversations(alice).await.unwrap();
    assert_eq!(
        cursors(&list),
        [("bob".to_string(), seq, 0), ("carol".to_string(), seq, seq)]
    );
    let list = server.api.conversations(bob).await.unwrap();
    assert_eq!(
        cursors(&list),
        [("alice".to_string(), 0, 0), ("carol".to_string(), seq, seq)],
        "the other members only; alice never acked her own events"
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
    let (first, id, _) = sent_message(alice_ws.send_text("bob", "m1", "helo").await.unwrap());
    let (second, _, _) = sent_message(alice_ws.send_text("bob", "m2", "second").await.unwrap());
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
    sent_message(alice_ws.edit(id, "e2", &first, "hello").await.unwrap());
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

    sent_message(alice_ws.delete(id, "d1", &first).await.unwrap());
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
    let (message, id, _) = sent_message(
        alice_ws
            .send_text("bob", "m1", "react to me")
            .await
            .unwrap(),
    );
    let (elsewhere, _, _) = sent_message(
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
    sent_message(bob_ws.react(id, "r1", &message, Some("👍")).await.unwrap());
    sent_message(bob_ws.react(id, "r2", &message, Some("❤️")).await.unwrap());
    sent_message(
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
    sent_message(bob_ws.react(id, "r4", &message, None).await.unwrap());
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
    a_reply_points_at_its_target(&mut alice_ws, &mut bob_ws, id, &message, &elsewhere).await;
}

/// A reply must reference a message of the same conversation; the one
/// that does reaches alice with its target.
async fn a_reply_points_at_its_target(
    alice_ws: &mut Connection,
    bob_ws: &mut Connection,
    id: i64,
    message: &str,
    elsewhere: &str,
) {
    let reply = bob_ws
        .send_to(id, "re1", "replying", Some(message))
        .await
        .unwrap();
    let (reply_id, _, _) = sent_message(reply);
    assert_eq!(
        refused_code(bob_ws.send_to(id, "re2", "bad", Some(elsewhere)).await),
        "unknown_message"
    );
    let frames = drain(alice_ws, 4).await;
    let last = frames.last().unwrap();
    assert!(
        matches!(last, ServerFrame::Message { message_id, kind: MessageKind::Text, target: Some(t), .. } if *message_id == reply_id && *t == message),
        "{frames:?}"
    );
}
