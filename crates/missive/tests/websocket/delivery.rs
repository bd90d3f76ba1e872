//! Delivery and storage: receipts, offline catch-up, retries, redelivery,
//! expiry of what was never delivered, and history kept forever.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_with_delivered_and_read_receipts() {
    // Goal: a text reaches the recipient; the recipient's ack moves its
    // delivered cursor, told live to the connected sender as one
    // `delivered` frame; its `read` yields a live `read` frame. The
    // recipient is told nothing of its own receipts.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut bob = server.connect(&bob_token).await;

    let sent = alice.send_text("bob", "m1", "hi bob").await.unwrap();
    let (message_id, seq, duplicate) = sent_seq(&sent);
    assert_eq!((seq, duplicate), (1, false));

    let frames = queued(&mut bob, 1).await;
    let ServerFrame::Message {
        message_id: got_id,
        from,
        text,
        conversation,
        seq: got_seq,
        ..
    } = &frames[0]
    else {
        panic!("expected a message, got {frames:?}");
    };
    let conversation = *conversation;
    assert_eq!(
        (got_id, from.as_str(), text.as_str(), *got_seq),
        (&message_id, "alice", "hi bob", 1)
    );
    assert_eq!(bob.ack(conversation, 1).await.unwrap(), 1);

    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { conversation: c, by, seq: 1, .. }
            if *c == conversation && by == "bob"),
        "{receipt:?}"
    );

    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation,
        seq: 1,
    };
    let reply = bob.request(&read, "r").await.unwrap();
    assert!(
        matches!(reply, ServerFrame::ReadOk { seq: 1, .. }),
        "{reply:?}"
    );
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Read { conversation: c, seq: 1, by, .. }
            if *c == conversation && by == "bob"),
        "{receipt:?}"
    );
    assert_nothing_queued(&mut bob).await;

    // Bob replies on the same conversation id.
    let reply = ClientFrame::Send {
        id: Some("s".into()),
        to: None,
        conversation: Some(conversation),
        client_msg_id: "b1".into(),
        text: "hi alice".into(),
        reply_to: None,
        media: Vec::new(),
        encrypted: false,
    };
    let sent = bob.request(&reply, "s").await.unwrap();
    assert_eq!(sent_seq(&sent).1, 2);
    assert_eq!(texts(&queued(&mut alice, 1).await), ["hi alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_everything_in_order_then_live() {
    // Goal: messages sent while bob is offline arrive on connect in seq order,
    // followed by live ones with no gap. 40 of them: more than a
    // connection's first store read takes (32), so the catch-up crosses
    // from the short first page to the next one.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    for i in 1..=40 {
        alice
            .send_text("bob", &format!("m{i}"), &format!("text {i}"))
            .await
            .unwrap();
    }
    let reads_before = metric(&server.url(), "missive_catch_up_reads_total").await;
    let mut bob = server.connect(&bob_token).await;
    let drained = queued(&mut bob, 40).await;
    assert_eq!(seqs(&drained), (1..=40).collect::<Vec<_>>());
    // One whole page would hold all 40: the short first read makes two.
    let reads = metric(&server.url(), "missive_catch_up_reads_total").await - reads_before;
    assert!(
        reads >= 2.0,
        "40 waiting were read in {reads} store read(s)"
    );
    alice.send_text("bob", "m41", "live").await.unwrap();
    let live = queued(&mut bob, 1).await;
    assert_eq!(seqs(&live), [41]);
    assert_eq!(texts(&live), ["live"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_second_device_sees_own_sends() {
    // Goal: the sender's other device gets its own messages; the sending device does not.
    let server = TestServer::start().await;
    let phone = server.user("alice").await;
    let laptop = server.device("alice").await;
    server.user("bob").await;
    let mut phone = server.connect(&phone).await;
    let mut laptop = server.connect(&laptop).await;
    phone.send_text("bob", "m1", "from phone").await.unwrap();
    let frames = queued(&mut laptop, 1).await;
    assert!(
        matches!(&frames[0], ServerFrame::Message { from, text, .. } if from == "alice" && text == "from phone")
    );
    assert_nothing_queued(&mut phone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_is_stored_once() {
    // Goal: the same client_msg_id twice gives the same id and seq, marked
    // duplicate, and bob receives one message; a new id continues the seq.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let first = sent_seq(&alice.send_text("bob", "same", "once").await.unwrap());
    let again = sent_seq(&alice.send_text("bob", "same", "once").await.unwrap());
    assert_eq!((&first.0, first.1, first.2), (&again.0, again.1, false));
    assert!(again.2, "the retry must be flagged duplicate");
    // A reconnect does not forget it either.
    alice.close().await;
    let mut alice = server.connect(&alice_token).await;
    let third = sent_seq(&alice.send_text("bob", "same", "once").await.unwrap());
    assert_eq!((third.0, third.1, third.2), (first.0.clone(), 1, true));
    assert_eq!(
        sent_seq(&alice.send_text("bob", "next", "two").await.unwrap()).1,
        2
    );
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, 2).await;
    assert_eq!(texts(&frames), ["once", "two"]);
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_mid_stream_redelivers_unacked_with_same_ids() {
    // Goal: after a drop, unacked messages come again with the same ids,
    // acked ones never come back, and new ones follow in order.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    for i in 1..=10 {
        alice
            .send_text("bob", &format!("m{i}"), &format!("t{i}"))
            .await
            .unwrap();
    }
    let mut bob = server.connect(&bob_token).await;
    let first = queued(&mut bob, 10).await;
    // Ack the first four only (cumulatively: seq 4), then drop the
    // connection.
    let (conversation, fourth) = first[3].ack_point().unwrap();
    assert_eq!(fourth, 4);
    assert_eq!(bob.ack(conversation, fourth).await.unwrap(), 4);
    bob.close().await;
    for i in 11..=12 {
        alice
            .send_text("bob", &format!("m{i}"), &format!("t{i}"))
            .await
            .unwrap();
    }
    let mut bob = server.connect(&bob_token).await;
    let again = queued(&mut bob, 8).await;
    assert_eq!(seqs(&again), (5..=12).collect::<Vec<_>>());
    let ids = |frames: &[ServerFrame]| -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Message { message_id, .. } => Some(message_id.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ids(&again)[..6], ids(&first)[4..]);
    // Everything acked: nothing ever comes back.
    ack_received(&mut bob, &again).await;
    bob.close().await;
    let mut bob = server.connect(&bob_token).await;
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_expire_after_the_ttl() {
    // Goal: an event not received within the offline TTL is not delivered:
    // an `expired` frame takes its place, in order, before what is still
    // fresh; its body stays for history until retention passes, then the
    // sweeper purges it (and the `expired` frame still stands for it);
    // acking past the range ends it.
    let server = TestServer::start_with(|config| {
        config.delivery.offline_ttl_secs = 3600;
        config.delivery.history_retention = missive_server::config::Retention::Secs(5400);
    })
    .await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let (_, conversation) = {
        let sent = alice.send_text("bob", "m1", "will expire").await.unwrap();
        let ServerFrame::Sent {
            message_id,
            conversation,
            ..
        } = sent
        else {
            panic!("{sent:?}")
        };
        (message_id, conversation)
    };
    server.clock.advance_ms(3_600_001);
    alice.send_text("bob", "m2", "fresh").await.unwrap();
    let swept = server.app.sweep_now().await.unwrap();
    assert_eq!(swept.purged_bodies, 0, "retention has not passed");
    let expected = |frames: &[ServerFrame]| {
        assert!(
            matches!(&frames[0], ServerFrame::Expired { conversation: c, from_seq: 1, to_seq: 1 }
                if *c == conversation),
            "{frames:?}"
        );
        assert_eq!(texts(frames), ["fresh"]);
        assert_eq!(seqs(frames), [2]);
    };
    let mut bob = server.connect(&bob_token).await;
    expected(&queued(&mut bob, 2).await);
    assert_nothing_queued(&mut bob).await;
    // Still in history: the TTL limits delivery, not retention.
    let history = server
        .api
        .history(&alice_token, conversation, "")
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 2);
    bob.close().await;

    // Past retention (m1 only; m2 is still within the TTL) the body goes;
    // bob, who never acked, is told the same.
    server.clock.advance_ms(1_800_000);
    let swept = server.app.sweep_now().await.unwrap();
    assert_eq!(swept.purged_bodies, 1);
    let history = server
        .api
        .history(&alice_token, conversation, "")
        .await
        .unwrap();
    assert_eq!(texts_of(&history), ["fresh"]);
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, 2).await;
    expected(&frames);
    assert_eq!(ack_points(&frames), [(conversation, 2)]);
    ack_received(&mut bob, &frames).await;
    bob.close().await;
    let mut bob = server.connect(&bob_token).await;
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_kept_forever_by_default() {
    // Goal: nobody has to choose to keep their chats: with the default
    // retention a delivered, acked message is still in history after
    // years of sweeps, while the offline TTL still ends its delivery.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let sent = alice.send_text("bob", "m1", "keep me").await.unwrap();
    let ServerFrame::Sent { conversation, .. } = sent else {
        panic!("{sent:?}")
    };
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, 1).await;
    assert_eq!(texts(&frames), ["keep me"]);
    ack_received(&mut bob, &frames).await;
    bob.close().await;
    server.clock.advance_ms(3 * 365 * 24 * 3_600_000);
    let swept = server.app.sweep_now().await.unwrap();
    assert_eq!(swept.purged_bodies, 0);
    let history = server
        .api
        .history(&alice_token, conversation, "")
        .await
        .unwrap();
    assert_eq!(texts_of(&history), ["keep me"]);
}

fn texts_of(history: &missive_proto::rest::History) -> Vec<&str> {
    history.messages.iter().map(|m| m.text.as_str()).collect()
}
