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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_at_the_device_limit_replaces_the_device_used_longest_ago() {
    // Goal: nobody is locked out by devices they can no longer reach: at
    // the limit a password login revokes the device used longest ago that
    // is not connected (its token dies, the response names it), and a
    // connected device used even longer ago is kept.
    let server = TestServer::start_with(|config| {
        config.limits.devices_per_account_max = 3;
    })
    .await;
    let phone = server.user("alice").await;
    let mut phone_conn = server.connect(&phone).await;
    server.clock.advance_ms(1_000);
    let laptop = server.api.login("alice", PASSWORD, "laptop").await.unwrap();
    server.clock.advance_ms(1_000);
    let tablet = server.device("alice").await;
    server.clock.advance_ms(1_000);
    // The tablet is used after the laptop was last seen.
    server.api.devices(&tablet).await.unwrap();
    let (laptop_id, laptop) = (laptop.device_id, laptop.token);
    let fresh = server.api.login("alice", PASSWORD, "new").await.unwrap();
    assert_eq!(fresh.replaced_device_id, Some(laptop_id));
    assert_eq!(
        refused_code(server.api.devices(&laptop).await),
        "token_invalid"
    );
    let left: Vec<i64> = server
        .api
        .devices(&fresh.token)
        .await
        .unwrap()
        .devices
        .iter()
        .map(|device| device.device_id)
        .collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&laptop_id), "{left:?}");
    assert!(
        left.contains(&phone_conn.device_id),
        "the connected phone stays"
    );
    phone_conn
        .send_text("alice", "m1", "still here")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_unused_past_the_expiry_are_revoked_and_used_ones_are_not() {
    // Goal: a device nobody has used for `device_idle_expiry_secs` is
    // revoked by the sweeper; use over HTTP or a live connection keeps a
    // device, however long the connection has been open.
    const DAY_MS: i64 = 24 * 3_600_000;
    let server = TestServer::start_with(|config| {
        config.limits.device_idle_expiry_secs = 30 * 24 * 3600;
    })
    .await;
    let connected = server.user("alice").await;
    let _connection = server.connect(&connected).await;
    let used = server.device("alice").await;
    let idle = server.device("alice").await;
    server.clock.advance_ms(20 * DAY_MS);
    server.api.devices(&used).await.unwrap();
    server.clock.advance_ms(15 * DAY_MS);
    server.app.sweep_now().await.unwrap();
    assert_eq!(
        refused_code(server.api.devices(&idle).await),
        "token_invalid"
    );
    server.api.devices(&used).await.unwrap();
    server.api.devices(&connected).await.unwrap();
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
    // Method: bob authenticates on a raw socket and does not read while
    // alice sends him ~20 MB, far beyond the loopback socket buffers; he
    // reads again as soon as the server counted him as a slow consumer
    // (watched from the start: on a loaded machine that can come before
    // alice is done), and finds the close frame (4008) after what was
    // already in flight.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start_with(|config| {
        config.limits.write_timeout_ms = 1_500;
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

    // The server gives up on bob's stuck socket and counts it; reading
    // from then on (within the server's grace for the close frame), bob
    // gets what was in flight and then the close frame saying why, not a
    // dropped connection.
    let url = server.url();
    let bob_reads_once_counted = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while metric(&url, "missive_slow_consumer_closes_total").await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bob was never counted as a slow consumer"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut n_seen = 0;
        let mut close = None;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(PROMPTLY, slow.next()).await {
            match message {
                Message::Text(_) => n_seen += 1,
                Message::Close(frame) => close = frame,
                _ => {}
            }
        }
        (n_seen, close)
    });

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

    let (n_seen, close) = bob_reads_once_counted.await.unwrap();
    assert!(
        n_seen < N_BIG,
        "bob should have been cut off, yet read {n_seen}"
    );
    let close = close.expect("the stream ends with a close frame");
    assert_eq!(u16::from(close.code), 4008, "{close:?}");
    assert_eq!(close.reason.as_str(), "slow_consumer");

    // Carol is told bob went offline.
    let is_bob_offline = |frame: &ServerFrame| matches!(frame, ServerFrame::Presence { user, online: false, .. } if user == "bob");
    let now = carol.subscribe_presence(&["bob"]).await.unwrap();
    if !is_bob_offline(&now[0]) {
        loop {
            let frame = carol
                .next_frame(PROMPTLY)
                .await
                .expect("bob's presence never went offline");
            if is_bob_offline(&frame) {
                break;
            }
        }
    }

    // Nothing was lost: all N_BIG wait for bob's next connection, in order.
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, N_BIG).await;
    assert_eq!(seqs(&frames), (1..=N_BIG as i64).collect::<Vec<_>>());
}

/// The conversation of a `sent` reply.
fn sent_conversation(frame: &ServerFrame) -> i64 {
    match frame {
        ServerFrame::Sent { conversation, .. } => *conversation,
        other => panic!("expected sent, got {other:?}"),
    }
}

/// Sends `frame` and returns its reply, which must be an `error` and come
/// first: (code, correlation id).
async fn refusal(
    connection: &mut missive_client::Connection,
    frame: &ClientFrame,
) -> (String, Option<String>) {
    connection.send_frame(frame).await.unwrap();
    match connection.next_frame(PROMPTLY).await.unwrap() {
        ServerFrame::Error { code, id, .. } => (code.as_str().to_owned(), id),
        other => panic!("expected an error for {frame:?}, got {other:?}"),
    }
}

/// The (conversation, seq) of each event, sorted: conversations interleave
/// in no promised order, seqs within one are in order.
fn points_sorted(frames: &[ServerFrame]) -> Vec<(i64, i64)> {
    let mut points: Vec<_> = frames.iter().filter_map(ServerFrame::ack_point).collect();
    points.sort();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cumulative_ack_moves_one_conversation_of_one_device() {
    // Goal: `ack {conversation, seq}` with an id is answered `acked` with
    // the device's position there; it covers every event of that
    // conversation up to seq, so a reconnect brings only what lies above
    // it; the device's other conversations and the account's other device
    // are untouched; an ack below the position leaves it where it is.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let carol_token = server.user("carol").await;
    let bob_token = server.user("bob").await;
    let laptop_token = server.device("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut carol = server.connect(&carol_token).await;
    let mut with_alice = 0;
    for i in 1..=5 {
        let text = format!("a{i}");
        with_alice = sent_conversation(&alice.send_text("bob", &text, &text).await.unwrap());
    }
    let mut with_carol = 0;
    for i in 1..=3 {
        let text = format!("c{i}");
        with_carol = sent_conversation(&carol.send_text("bob", &text, &text).await.unwrap());
    }
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, 8).await;
    assert_eq!(ack_points(&frames), [(with_alice, 5), (with_carol, 3)]);

    // A position in the other conversation first, so that there is one to
    // leave alone.
    assert_eq!(bob.ack(with_carol, 1).await.unwrap(), 1);
    let acked = bob
        .call(|id| ClientFrame::Ack {
            id,
            conversation: with_alice,
            seq: 3,
        })
        .await
        .unwrap();
    assert!(
        matches!(&acked, ServerFrame::Acked { id: Some(_), conversation, seq: 3 } if *conversation == with_alice),
        "{acked:?}"
    );
    // Below the position: harmless, positions never move back.
    assert_eq!(bob.ack(with_alice, 1).await.unwrap(), 3);
    bob.close().await;

    let mut bob = server.connect(&bob_token).await;
    let again = queued(&mut bob, 4).await;
    assert_eq!(
        points_sorted(&again),
        [
            (with_alice, 4),
            (with_alice, 5),
            (with_carol, 2),
            (with_carol, 3)
        ]
    );
    assert_nothing_queued(&mut bob).await;

    // Positions are per device: the laptop still gets all eight.
    let mut laptop = server.connect(&laptop_token).await;
    let all = queued(&mut laptop, 8).await;
    assert_eq!(
        points_sorted(&all),
        [1, 2, 3, 4, 5]
            .map(|seq| (with_alice, seq))
            .into_iter()
            .chain([1, 2, 3].map(|seq| (with_carol, seq)))
            .collect::<Vec<_>>()
    );
    assert_nothing_queued(&mut laptop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_without_an_id_is_applied_but_not_answered() {
    // Goal: an ack without an id gets no reply: a ping sent right after it
    // is answered with nothing before its pong. It still took effect: the
    // author is told the delivered cursor, and a reconnect brings only
    // what lies above it.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut conversation = 0;
    for i in 1..=3 {
        let text = format!("m{i}");
        conversation = sent_conversation(&alice.send_text("bob", &text, &text).await.unwrap());
    }
    let mut bob = server.connect(&bob_token).await;
    assert_eq!(seqs(&queued(&mut bob, 3).await), [1, 2, 3]);
    bob.ack_quietly(conversation, 2).await.unwrap();
    let ping = ClientFrame::Ping {
        id: Some("after".into()),
    };
    bob.send_frame(&ping).await.unwrap();
    let next = bob.next_frame(PROMPTLY).await.unwrap();
    assert!(
        matches!(&next, ServerFrame::Pong { id } if id.as_deref() == Some("after")),
        "the quiet ack was answered: {next:?}"
    );
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { conversation: c, by, seq: 2, .. }
            if *c == conversation && by == "bob"),
        "{receipt:?}"
    );
    bob.close().await;
    let mut bob = server.connect(&bob_token).await;
    assert_eq!(seqs(&queued(&mut bob, 1).await), [3]);
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_acks_carry_their_id_and_change_nothing() {
    // Goal: an ack above the conversation's last seq or negative is
    // invalid_field, one for a conversation the device was never in is
    // unknown_conversation, as is one for no conversation; each
    // error carries the frame's id (an ack without id is refused too, with
    // none); the connection survives, no receipt moves, and the device
    // still gets every event it had not acked.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let carol_token = server.user("carol").await;
    server.user("dave").await;
    let mut alice = server.connect(&alice_token).await;
    let mut conversation = 0;
    for i in 1..=3 {
        let text = format!("m{i}");
        conversation = sent_conversation(&alice.send_text("bob", &text, &text).await.unwrap());
    }
    let mut carol = server.connect(&carol_token).await;
    let elsewhere = sent_conversation(&carol.send_text("dave", "c1", "private").await.unwrap());
    let mut bob = server.connect(&bob_token).await;
    assert_eq!(seqs(&queued(&mut bob, 3).await), [1, 2, 3]);

    let ack = |id: Option<&str>, conversation: i64, seq: i64| ClientFrame::Ack {
        id: id.map(str::to_owned),
        conversation,
        seq,
    };
    let cases = [
        (ack(Some("above"), conversation, 4), "invalid_field"),
        (ack(Some("far"), conversation, i64::MAX), "invalid_field"),
        (ack(Some("negative"), conversation, -1), "invalid_field"),
        (ack(Some("theirs"), elsewhere, 1), "unknown_conversation"),
        (ack(Some("nowhere"), 999_999, 1), "unknown_conversation"),
    ];
    for (frame, code) in &cases {
        let ClientFrame::Ack { id, .. } = frame else {
            unreachable!()
        };
        assert_eq!(
            refusal(&mut bob, frame).await,
            (code.to_string(), id.clone()),
            "{frame:?}"
        );
    }
    assert_eq!(
        refusal(&mut bob, &ack(None, conversation, 4)).await,
        ("invalid_field".to_string(), None)
    );

    // No receipt moved: alice is told nothing, her list shows bob at 0.
    assert_nothing_queued(&mut alice).await;
    let list = server.api.conversations(&alice_token).await.unwrap();
    let receipts: Vec<_> = list.conversations[0]
        .receipts
        .iter()
        .map(|r| (r.user.as_str(), r.delivered_seq, r.read_seq))
        .collect();
    assert_eq!(receipts, [("bob", 0, 0)]);
    // Bob's position did not move: all three come again.
    bob.close().await;
    let mut bob = server.connect(&bob_token).await;
    assert_eq!(seqs(&queued(&mut bob, 3).await), [1, 2, 3]);
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_cursors_are_live_for_the_author_and_listed_for_one_who_was_away() {
    // Goal: one ack for a burst moves bob's delivered cursor once: the
    // connected author gets one `delivered` frame at the highest seq (not
    // one per message), and a read gives one `read` frame; the acking or
    // reading account is never told of its own cursors, also where the
    // range covers its own texts. Receipts are never stored as frames:
    // when alice was away while the cursors moved, she gets no frame on
    // reconnect and finds them in GET /v1/conversations and message info.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut conversation = 0;
    for i in 1..=3 {
        let text = format!("m{i}");
        conversation = sent_conversation(&alice.send_text("bob", &text, &text).await.unwrap());
    }
    let mut bob = server.connect(&bob_token).await;
    let frames = queued(&mut bob, 3).await;
    ack_received(&mut bob, &frames).await;
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { conversation: c, by, seq: 3, .. }
            if *c == conversation && by == "bob"),
        "{receipt:?}"
    );
    assert_nothing_queued(&mut alice).await;
    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation,
        seq: 2,
    };
    bob.request(&read, "r").await.unwrap();
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Read { conversation: c, by, seq: 2, .. }
            if *c == conversation && by == "bob"),
        "{receipt:?}"
    );

    // Bob writes too (seq 4); alice's ack of it is told to him.
    bob.send_to(conversation, "b4", "b4", None).await.unwrap();
    let frames = queued(&mut alice, 1).await;
    assert_eq!(texts(&frames), ["b4"]);
    ack_received(&mut alice, &frames).await;
    let receipt = queued(&mut bob, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { conversation: c, by, seq: 4, .. }
            if *c == conversation && by == "alice"),
        "{receipt:?}"
    );

    // Alice sends two more and goes away; bob receives and reads them.
    let mut last_id = String::new();
    for i in 5..=6 {
        let text = format!("m{i}");
        last_id = sent_seq(&alice.send_text("bob", &text, &text).await.unwrap()).0;
    }
    alice.close().await;
    let frames = queued(&mut bob, 2).await;
    assert_eq!(seqs(&frames), [5, 6]);
    ack_received(&mut bob, &frames).await;
    let read = ClientFrame::Read {
        id: Some("r2".into()),
        conversation,
        seq: 6,
    };
    bob.request(&read, "r2").await.unwrap();
    // Bob is told nothing of his own cursors, though they passed his b4.
    assert_nothing_queued(&mut bob).await;

    let mut alice = server.connect(&alice_token).await;
    assert_nothing_queued(&mut alice).await;
    let list = server.api.conversations(&alice_token).await.unwrap();
    let summary = &list.conversations[0];
    assert_eq!(summary.conversation, conversation);
    let receipts: Vec<_> = summary
        .receipts
        .iter()
        .map(|r| (r.user.as_str(), r.delivered_seq, r.read_seq))
        .collect();
    assert_eq!(receipts, [("bob", 6, 6)]);
    let info = server
        .api
        .receipts(&alice_token, conversation, &last_id)
        .await
        .unwrap();
    let users = |entries: &[missive_proto::rest::ReceiptEntry]| -> Vec<String> {
        entries.iter().map(|entry| entry.user.clone()).collect()
    };
    assert_eq!(
        (users(&info.delivered), users(&info.read)),
        (vec!["bob".to_string()], vec!["bob".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_in_flight_take_seqs_and_answers_in_frame_order() {
    // Goal: a client that writes many frames without waiting (sends share
    // commits) gets every answer in frame order, refusals and pongs
    // included, its sends take consecutive seqs in the order written, and
    // the recipient receives them in that order.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    // The first send creates the 1:1 conversation.
    let conversation = match alice.send_text("bob", "c-0", "t0").await.unwrap() {
        ServerFrame::Sent { conversation, .. } => conversation,
        other => panic!("expected sent, got {other:?}"),
    };
    let send_as =
        |n: usize, client_msg_id: String, to_conversation: i64, text: &str| ClientFrame::Send {
            id: Some(format!("f{n}")),
            to: None,
            conversation: Some(to_conversation),
            client_msg_id,
            text: text.into(),
            reply_to: None,
            media: Vec::new(),
            encrypted: false,
        };
    let send = |n: usize, to_conversation: i64, text: &str| {
        send_as(n, format!("c-{n}"), to_conversation, text)
    };
    // 60 frames (more than a connection may have awaiting answers): texts,
    // a refusal the dispatcher catches (empty text), one the store catches
    // (a conversation alice is not in), a retry of an earlier frame, a ping.
    let mut frames = Vec::new();
    for n in 1..=60 {
        let frame = match n {
            10 => send(n, conversation, ""),
            20 => send(n, 999_999, "nowhere"),
            30 => send_as(n, "c-5".into(), conversation, "t5"),
            40 => ClientFrame::Ping {
                id: Some(format!("f{n}")),
            },
            _ => send(n, conversation, &format!("t{n}")),
        };
        frames.push(frame);
    }
    for frame in &frames {
        alice.send_frame(frame).await.unwrap();
    }
    let mut answers = Vec::new();
    while answers.len() < frames.len() {
        let frame = alice.next_frame(PROMPTLY).await.expect("an answer");
        match frame {
            ServerFrame::Sent { .. } | ServerFrame::Error { .. } | ServerFrame::Pong { .. } => {
                answers.push(frame)
            }
            _ => {}
        }
    }
    let mut expected_seq = 2;
    let mut stored_texts = vec!["t0".to_string()];
    for (n, answer) in (1..=60).zip(&answers) {
        let id = format!("f{n}");
        match (n, answer) {
            (10, ServerFrame::Error { id: got, code, .. }) => {
                assert_eq!(
                    (got.as_deref(), code.as_str()),
                    (Some(id.as_str()), "empty_text")
                )
            }
            (20, ServerFrame::Error { id: got, code, .. }) => {
                assert_eq!(got.as_deref(), Some(id.as_str()));
                assert_eq!(code.as_str(), "unknown_conversation");
            }
            (
                30,
                ServerFrame::Sent {
                    id: got,
                    seq,
                    duplicate,
                    ..
                },
            ) => {
                assert_eq!(got.as_deref(), Some(id.as_str()));
                assert!(*duplicate, "the retry of c-5 must answer duplicate");
                assert_eq!(*seq, 6, "the retry answers the first send's seq");
            }
            (40, ServerFrame::Pong { id: got }) => assert_eq!(got.as_deref(), Some(id.as_str())),
            (
                _,
                ServerFrame::Sent {
                    id: got,
                    seq,
                    duplicate,
                    ..
                },
            ) => {
                assert_eq!(
                    got.as_deref(),
                    Some(id.as_str()),
                    "answers out of frame order"
                );
                assert!(!duplicate);
                assert_eq!(*seq, expected_seq, "frame {n} took seq {seq}");
                expected_seq += 1;
                stored_texts.push(format!("t{n}"));
            }
            (_, other) => panic!("frame {n} answered {other:?}"),
        }
    }
    let mut bob = server.connect(&bob_token).await;
    let received = queued(&mut bob, stored_texts.len()).await;
    assert_eq!(texts(&received), stored_texts);
    assert_eq!(
        seqs(&received),
        (1..=stored_texts.len() as i64).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_can_be_renamed_by_its_owner_only() {
    // Goal: PATCH /v1/devices/{id} renames one of my devices (the listing
    // shows it), refuses a bad name (invalid_field) and someone else's
    // device or an unknown one (unknown_device), changing nothing.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let laptop = server.device("alice").await;
    let bob = server.user("bob").await;
    let listed = server.api.devices(&alice).await.unwrap().devices;
    let laptop_id = listed.iter().find(|d| !d.current).unwrap().device_id;
    let renamed = server
        .api
        .rename_device(&alice, laptop_id, "Firefox on Windows (work)")
        .await
        .unwrap();
    assert_eq!(renamed.name, "Firefox on Windows (work)");
    assert!(!renamed.current);
    let seen_from_laptop = server.api.devices(&laptop).await.unwrap().devices;
    let me = seen_from_laptop.iter().find(|d| d.current).unwrap();
    assert_eq!(
        (me.device_id, me.name.as_str()),
        (laptop_id, "Firefox on Windows (work)")
    );
    for bad in ["", "nul\0here", &"x".repeat(65)] {
        assert_eq!(
            refused_code(server.api.rename_device(&alice, laptop_id, bad).await),
            "invalid_field"
        );
    }
    assert_eq!(
        refused_code(server.api.rename_device(&bob, laptop_id, "mine now").await),
        "unknown_device"
    );
    assert_eq!(
        refused_code(server.api.rename_device(&alice, 999_999, "ghost").await),
        "unknown_device"
    );
    let after = server.api.devices(&alice).await.unwrap().devices;
    let names: Vec<&str> = after.iter().map(|d| d.name.as_str()).collect();
    assert!(names.contains(&"Firefox on Windows (work)"), "{names:?}");
    assert!(!names.contains(&"mine now"), "{names:?}");
}
