//! The delivery model over real WebSockets against an in-process server.

mod common;

use common::*;
use missive_proto::{ClientFrame, ServerFrame};

fn sent_seq(frame: &ServerFrame) -> (String, i64, bool) {
    match frame {
        ServerFrame::Sent {
            message_id,
            seq,
            duplicate,
            ..
        } => (message_id.clone(), *seq, *duplicate),
        other => panic!("expected sent, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_with_delivered_and_read_receipts() {
    // Goal: a text reaches the recipient; the recipient's ack yields one
    // `delivered` to the sender, its `read` yields a `read` receipt.
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
        pos,
        message_id: got_id,
        from,
        text,
        conversation,
        ..
    } = &frames[0]
    else {
        panic!("expected a message, got {frames:?}");
    };
    assert_eq!(
        (got_id, from.as_str(), text.as_str()),
        (&message_id, "alice", "hi bob")
    );
    assert_eq!(bob.ack_up_to(*pos).await.unwrap(), 1);

    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { message_id: id, by, seq: 1, .. } if *id == message_id && by == "bob"),
        "{receipt:?}"
    );
    let ack_pos = receipt[0].queue_pos().unwrap();
    alice.ack_up_to(ack_pos).await.unwrap();

    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation: *conversation,
        seq: 1,
    };
    let reply = bob.request(&read, "r").await.unwrap();
    assert!(
        matches!(reply, ServerFrame::ReadOk { seq: 1, .. }),
        "{reply:?}"
    );
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Read { seq: 1, by, .. } if by == "bob"),
        "{receipt:?}"
    );

    // Bob replies on the same conversation id.
    let reply = ClientFrame::Send {
        id: Some("s".into()),
        to: None,
        conversation: Some(*conversation),
        client_msg_id: "b1".into(),
        text: "hi alice".into(),
        reply_to: None,
        media: Vec::new(),
    };
    let sent = bob.request(&reply, "s").await.unwrap();
    assert_eq!(sent_seq(&sent).1, 2);
    assert_eq!(texts(&queued(&mut alice, 1).await), ["hi alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_everything_in_order_then_live() {
    // Goal: messages sent while bob is offline arrive on connect in seq order,
    // followed by live ones with no gap.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    for i in 1..=30 {
        alice
            .send_text("bob", &format!("m{i}"), &format!("text {i}"))
            .await
            .unwrap();
    }
    let mut bob = server.connect(&bob_token).await;
    let drained = queued(&mut bob, 30).await;
    assert_eq!(seqs(&drained), (1..=30).collect::<Vec<_>>());
    alice.send_text("bob", "m31", "live").await.unwrap();
    let live = queued(&mut bob, 1).await;
    assert_eq!(seqs(&live), [31]);
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
    // Ack the first four only, then drop the connection.
    bob.ack_up_to(first[3].queue_pos().unwrap()).await.unwrap();
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
    bob.ack_up_to(again.last().unwrap().queue_pos().unwrap())
        .await
        .unwrap();
    bob.close().await;
    let mut bob = server.connect(&bob_token).await;
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_messages_expire_after_the_ttl() {
    // Goal: with the clock moved past the offline TTL, a queued message is
    // not delivered and the sweeper deletes it.
    let server = TestServer::start_with(|config| config.delivery.offline_ttl_secs = 3600).await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    alice.send_text("bob", "m1", "will expire").await.unwrap();
    server.clock.advance_ms(3_600_001);
    alice.send_text("bob", "m2", "fresh").await.unwrap();
    let swept = server.app.sweep_now().await.unwrap();
    assert_eq!(swept.expired_entries, 1);
    let mut bob = server.connect(&bob_token).await;
    assert_eq!(texts(&queued(&mut bob, 1).await), ["fresh"]);
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_closes_its_socket_and_kills_its_token() {
    // Goal: revoke closes the live connection at once with 4003 and the
    // token no longer authenticates (REST or WebSocket).
    let server = TestServer::start().await;
    let phone = server.user("alice").await;
    let laptop = server.device("alice").await;
    let mut laptop_conn = server.connect(&laptop).await;
    let laptop_id = laptop_conn.device_id;
    server.api.revoke(&phone, laptop_id).await.unwrap();
    let closed = loop {
        match laptop_conn.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&closed, missive_client::ClientError::Closed { code: 4003, reason } if reason == "revoked"),
        "{closed:?}"
    );
    assert_eq!(
        refused_code(server.api.devices(&laptop).await),
        "token_invalid"
    );
    let again = missive_client::Connection::connect(&server.api.ws_url(), &laptop).await;
    assert_eq!(refused_code(again.map(|_| ())), "token_invalid");
    // Revoking it twice, or someone else's device, is unknown_device.
    assert_eq!(
        refused_code(server.api.revoke(&phone, laptop_id).await),
        "unknown_device"
    );
    let bob = server.user("bob").await;
    let alice_devices = server.api.devices(&phone).await.unwrap();
    let phone_id = alice_devices.devices[0].device_id;
    assert_eq!(
        refused_code(server.api.revoke(&bob, phone_id).await),
        "unknown_device"
    );
    assert_eq!(server.api.devices(&phone).await.unwrap().devices.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_a_device_replaces_the_first() {
    // Goal: the older connection of the same device is closed with 4004.
    let server = TestServer::start().await;
    let token = server.user("alice").await;
    let mut first = server.connect(&token).await;
    let _second = server.connect(&token).await;
    let closed = first.next_frame(PROMPTLY).await.unwrap_err();
    assert!(
        matches!(
            &closed,
            missive_client::ClientError::Closed { code: 4004, .. }
        ),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_going_away() {
    // Goal: graceful shutdown sends 1001 to connected clients and finishes.
    let mut server = TestServer::start().await;
    let token = server.user("alice").await;
    let mut alice = server.connect(&token).await;
    server.shutdown.cancel();
    let closed = alice.next_frame(PROMPTLY).await.unwrap_err();
    assert!(
        matches!(
            &closed,
            missive_client::ClientError::Closed { code: 1001, .. }
        ),
        "{closed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_while_a_fast_one_keeps_going() {
    // Goal: a client that stops reading is closed once a write stalls past
    // the write timeout; a fast client meanwhile gets all its messages; the
    // slow client's messages all stay queued and arrive on reconnect.
    // Method: bob authenticates on a raw socket and never reads while alice
    // sends him ~20 MB, far beyond the loopback socket buffers.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start_with(|config| {
        config.limits.write_timeout_ms = 1_500;
        config.limits.outbound_frames_max = 8;
        config.limits.text_bytes_max = 200 * 1024;
        // A flood from one device is the point here, not its rate limit.
        config.limits.sends_per_sec_per_device = 0;
        config.limits.sends_per_sec_per_account = 0;
        config.store.fsync = missive_server::config::FsyncMode::Off;
    })
    .await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let carol_token = server.user("carol").await;
    let (mut slow, _) = tokio_tungstenite::connect_async(server.api.ws_url())
        .await
        .unwrap();
    slow.send(Message::text(format!(
        r#"{{"type":"auth","token":"{bob_token}"}}"#
    )))
    .await
    .unwrap();
    let ready = slow.next().await.unwrap().unwrap();
    let ready: ServerFrame = serde_json::from_str(ready.to_text().unwrap()).unwrap();
    assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");
    let mut carol = server.connect(&carol_token).await;
    let mut alice = server.connect(&alice_token).await;

    let big = "x".repeat(100 * 1024);
    const N_BIG: usize = 200;
    for i in 0..N_BIG {
        alice
            .send_text("bob", &format!("big{i}"), &big)
            .await
            .unwrap();
        if i % 10 == 0 {
            alice
                .send_text("carol", &format!("small{i}"), "hello carol")
                .await
                .unwrap();
        }
    }
    // Carol, reading normally, got all of hers.
    let carols = queued(&mut carol, N_BIG / 10).await;
    assert_eq!(seqs(&carols), (1..=(N_BIG / 10) as i64).collect::<Vec<_>>());

    // Wait for the server to drop bob, observed as a client would: carol
    // watches bob's presence and is told when his last connection goes.
    let is_bob_offline = |frame: &ServerFrame| matches!(frame, ServerFrame::Presence { user, online: false, .. } if user == "bob");
    let now = carol.subscribe_presence(&["bob"]).await.unwrap();
    if !is_bob_offline(&now[0]) {
        loop {
            let frame = carol
                .next_frame(PROMPTLY)
                .await
                .expect("slow reader was never disconnected");
            if is_bob_offline(&frame) {
                break;
            }
        }
    }
    // Reading now, bob finds the stream ends before all messages arrived.
    let mut n_seen = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(PROMPTLY, slow.next()).await {
        if message.is_text() {
            n_seen += 1;
        }
    }
    assert!(
        n_seen < N_BIG,
        "bob should have been cut off, yet read {n_seen}"
    );

    // Nothing was lost: all N_BIG wait for bob's next connection, in order.
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, N_BIG).await;
    assert_eq!(seqs(&frames), (1..=N_BIG as i64).collect::<Vec<_>>());
}
