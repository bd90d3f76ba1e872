//! Acks, receipt cursors and the order of answers to sends in flight.

use super::*;
use missive_client::Connection;

/// The conversation of a `sent` reply.
fn sent_conversation(frame: &ServerFrame) -> i64 {
    match frame {
        ServerFrame::Sent { conversation, .. } => *conversation,
        other => panic!("expected sent, got {other:?}"),
    }
}

/// Sends `frame` and returns its reply, which must be an `error` and come
/// first: (code, correlation id).
async fn refusal(connection: &mut Connection, frame: &ClientFrame) -> (String, Option<String>) {
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
    let with_alice = send_numbered(&mut alice, "bob", "a", 5).await;
    let with_carol = send_numbered(&mut carol, "bob", "c", 3).await;
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
    let conversation = send_numbered(&mut alice, "bob", "m", 3).await;
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
    let conversation = send_numbered(&mut alice, "bob", "m", 3).await;
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
    let conversation = send_numbered(&mut alice, "bob", "m", 3).await;
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

    let _alice =
        alice_back_finds_the_cursors_listed(&server, &alice_token, conversation, &last_id).await;
}

/// Back, alice gets no receipt frame and finds bob's cursors in her list
/// and in message info. Returns her connection.
async fn alice_back_finds_the_cursors_listed(
    server: &TestServer,
    alice_token: &str,
    conversation: i64,
    last_id: &str,
) -> Connection {
    let mut alice = server.connect(alice_token).await;
    assert_nothing_queued(&mut alice).await;
    let list = server.api.conversations(alice_token).await.unwrap();
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
        .receipts(alice_token, conversation, last_id)
        .await
        .unwrap();
    let users = |entries: &[missive_proto::rest::ReceiptEntry]| -> Vec<String> {
        entries.iter().map(|entry| entry.user.clone()).collect()
    };
    assert_eq!(
        (users(&info.delivered), users(&info.read)),
        (vec!["bob".to_string()], vec!["bob".to_string()])
    );
    alice
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
    let frames = sixty_frames(conversation);
    let answers = write_all_then_read_the_answers(&mut alice, &frames).await;
    let stored_texts = answers_in_frame_order(&answers);
    let mut bob = server.connect(&bob_token).await;
    let received = queued(&mut bob, stored_texts.len()).await;
    assert_eq!(texts(&received), stored_texts);
    assert_eq!(
        seqs(&received),
        (1..=stored_texts.len() as i64).collect::<Vec<_>>()
    );
}

/// 60 frames (more than a connection may have awaiting answers): texts,
/// a refusal the dispatcher catches (empty text), one the store catches
/// (a conversation alice is not in), a retry of an earlier frame, a ping.
fn sixty_frames(conversation: i64) -> Vec<ClientFrame> {
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
    frames
}

/// Writes every frame without waiting, then reads an answer for each.
async fn write_all_then_read_the_answers(
    alice: &mut Connection,
    frames: &[ClientFrame],
) -> Vec<ServerFrame> {
    for frame in frames {
        alice.send_frame(frame).await.unwrap();
    }
    let mut answers = Vec::new();
    while answers.len() < frames.len() {
        let frame = alice.next_frame(PROMPTLY).await.expect("an answer");
        match frame {
            ServerFrame::Sent { .. } | ServerFrame::Error { .. } | ServerFrame::Pong { .. } => {
                answers.push(frame);
            }
            _ => {}
        }
    }
    answers
}

/// Checks each answer against its frame: refusals, the retry and the pong
/// as such, the sends at consecutive seqs. Returns the texts stored, in
/// order (with the first send's).
fn answers_in_frame_order(answers: &[ServerFrame]) -> Vec<String> {
    let mut expected_seq = 2;
    let mut stored_texts = vec!["t0".to_string()];
    for (n, answer) in (1..=60).zip(answers) {
        let id = format!("f{n}");
        match (n, answer) {
            (10, ServerFrame::Error { id: got, code, .. }) => {
                assert_eq!(
                    (got.as_deref(), code.as_str()),
                    (Some(id.as_str()), "empty_text")
                );
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
    stored_texts
}
