//! HTTP long-polling: the delivery scenarios written once and run over both
//! transports, plus what is particular to polling (timeouts, wake-ups,
//! switching transports, one live session per device).

mod common;

use std::collections::VecDeque;

use common::*;
use missive_client::{Api, ClientError, Connection};
use missive_proto::{ClientFrame, ServerFrame};

#[derive(Clone, Copy, Debug)]
enum Transport {
    WebSocket,
    LongPoll,
}

/// One device talking over either transport.
enum Link {
    Ws(Box<Connection>),
    Poll {
        api: Api,
        token: String,
        cursor: i64,
        backlog: VecDeque<ServerFrame>,
    },
}

impl Link {
    async fn open(server: &TestServer, token: &str, transport: Transport) -> Self {
        match transport {
            Transport::WebSocket => Link::Ws(Box::new(server.connect(token).await)),
            Transport::LongPoll => Link::Poll {
                api: server.api.clone(),
                token: token.to_owned(),
                cursor: 0,
                backlog: VecDeque::new(),
            },
        }
    }

    async fn send_text(&mut self, to: &str, client_msg_id: &str, text: &str) -> ServerFrame {
        match self {
            Link::Ws(connection) => connection.send_text(to, client_msg_id, text).await.unwrap(),
            Link::Poll { api, token, .. } => {
                let frame = ClientFrame::Send {
                    id: Some("s".into()),
                    to: Some(to.into()),
                    conversation: None,
                    client_msg_id: client_msg_id.into(),
                    text: text.into(),
                    reply_to: None,
                    media: Vec::new(),
                };
                let mut replies = api.frame(token, &frame).await.unwrap();
                assert_eq!(replies.len(), 1);
                replies.remove(0)
            }
        }
    }

    /// The next `n` queued frames (messages and receipts).
    async fn queued(&mut self, n: usize) -> Vec<ServerFrame> {
        match self {
            Link::Ws(connection) => queued(connection, n).await,
            Link::Poll {
                api,
                token,
                cursor,
                backlog,
            } => {
                while backlog.len() < n {
                    let response =
                        tokio::time::timeout(PROMPTLY, api.poll(token, *cursor, None, 5_000))
                            .await
                            .expect("poll answered")
                            .unwrap();
                    *cursor = response.cursor;
                    backlog.extend(
                        response
                            .frames
                            .into_iter()
                            .filter(|f| f.queue_pos().is_some()),
                    );
                }
                backlog.drain(..n).collect()
            }
        }
    }

    async fn ack_up_to(&mut self, pos: i64) {
        match self {
            Link::Ws(connection) => {
                connection.ack_up_to(pos).await.unwrap();
            }
            Link::Poll { api, token, .. } => {
                let ack = ClientFrame::Ack {
                    id: None,
                    up_to: Some(pos),
                    positions: Vec::new(),
                };
                api.frame(token, &ack).await.unwrap();
            }
        }
    }
}

async fn delivery_in_order_offline_then_live(transport: Transport) {
    // Goal: a device on `transport` gets what was queued while it was away
    // in seq order, then live messages, then receipts flow back; the same
    // scenario runs over both transports.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = Link::open(&server, &alice_token, transport).await;
    for i in 1..=12 {
        alice
            .send_text("bob", &format!("m{i}"), &format!("t{i}"))
            .await;
    }
    let mut bob = Link::open(&server, &bob_token, transport).await;
    let drained = bob.queued(12).await;
    assert_eq!(seqs(&drained), (1..=12).collect::<Vec<_>>());
    let retried = alice.send_text("bob", "m12", "t12").await;
    assert!(
        matches!(
            retried,
            ServerFrame::Sent {
                seq: 12,
                duplicate: true,
                ..
            }
        ),
        "{retried:?}"
    );
    alice.send_text("bob", "m13", "live").await;
    let live = bob.queued(1).await;
    assert_eq!(
        (seqs(&live), texts(&live)),
        (vec![13], vec!["live".to_string()])
    );
    bob.ack_up_to(live[0].queue_pos().unwrap()).await;
    let receipts = alice.queued(13).await;
    assert!(
        receipts
            .iter()
            .all(|f| matches!(f, ServerFrame::Delivered { by, .. } if by == "bob"))
    );
}

async fn unacked_frames_come_again_with_the_same_ids(transport: Transport) {
    // Goal: after a session ends, unacked frames are delivered again with
    // the same message ids and acked ones never return.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = Link::open(&server, &alice_token, transport).await;
    for i in 1..=6 {
        alice
            .send_text("bob", &format!("m{i}"), &format!("t{i}"))
            .await;
    }
    let mut bob = Link::open(&server, &bob_token, transport).await;
    let first = bob.queued(6).await;
    bob.ack_up_to(first[2].queue_pos().unwrap()).await;
    drop(bob);
    let mut bob = Link::open(&server, &bob_token, transport).await;
    let again = bob.queued(3).await;
    assert_eq!(again, first[3..].to_vec());
}

macro_rules! over_both_transports {
    ($($scenario:ident),* $(,)?) => {
        mod websocket {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Transport::WebSocket).await;
                }
            )*
        }
        mod long_poll {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Transport::LongPoll).await;
                }
            )*
        }
    };
}

over_both_transports!(
    delivery_in_order_offline_then_live,
    unacked_frames_come_again_with_the_same_ids,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_transports_mid_stream_loses_and_reorders_nothing() {
    // Goal: a device moves WebSocket → long-poll → WebSocket while messages
    // keep coming; after dedup by message id it sees every message once, in
    // seq order, and the poll replaces the WebSocket (closed `replaced`).
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut seen: Vec<(String, i64)> = Vec::new();
    let mut record = |frames: &[ServerFrame]| {
        for frame in frames {
            if let ServerFrame::Message {
                message_id, seq, ..
            } = frame
            {
                if !seen.iter().any(|(id, _)| id == message_id) {
                    seen.push((message_id.clone(), *seq));
                }
            }
        }
    };
    for i in 1..=5 {
        alice.send_text("bob", &format!("a{i}"), "x").await.unwrap();
    }
    let mut bob_ws = server.connect(&bob_token).await;
    let frames = queued(&mut bob_ws, 5).await;
    record(&frames);
    bob_ws
        .ack_up_to(frames[1].queue_pos().unwrap())
        .await
        .unwrap();
    for i in 6..=8 {
        alice.send_text("bob", &format!("a{i}"), "x").await.unwrap();
    }
    // Switch to polling without acking the rest: they come again.
    let response = server.api.poll(&bob_token, 0, None, 5_000).await.unwrap();
    record(&response.frames);
    let closed = loop {
        match bob_ws.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&closed, ClientError::Closed { code: 4004, .. }),
        "{closed:?}"
    );
    alice.send_text("bob", "a9", "x").await.unwrap();
    let next = server
        .api
        .poll(&bob_token, response.cursor, Some(response.cursor), 5_000)
        .await
        .unwrap();
    record(&next.frames);
    // Ack what the last poll returned (a short poll carries the ack).
    server
        .api
        .poll(&bob_token, next.cursor, Some(next.cursor), 10)
        .await
        .unwrap();
    // Back to the WebSocket: everything was acked, a new message arrives live.
    let mut bob_ws = server.connect(&bob_token).await;
    alice.send_text("bob", "a10", "x").await.unwrap();
    record(&queued(&mut bob_ws, 1).await);
    let seqs: Vec<i64> = seen.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_times_out_empty_and_a_waiting_poll_wakes_on_send() {
    // Goal: with nothing queued a poll returns empty at its timeout with the
    // cursor unchanged; a poll waiting 30 s returns as soon as a message is
    // stored (bounded here by PROMPTLY, far below its timeout).
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let empty = server.api.poll(&bob_token, 7, None, 50).await.unwrap();
    assert!(empty.frames.is_empty());
    assert_eq!((empty.cursor, empty.closed), (7, None));

    let api = server.api.clone();
    let token = bob_token.clone();
    let waiting = tokio::spawn(async move { api.poll(&token, 0, None, 30_000).await });
    // Make sure the poll is parked before sending: wait until bob is live.
    let router = server.app.state().router.clone();
    let bob = server.api.devices(&bob_token).await.unwrap().devices[0].device_id;
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while !router.is_live(missive_core::DeviceId(bob)) {
        assert!(tokio::time::Instant::now() < deadline, "poll never parked");
        tokio::task::yield_now().await;
    }
    let mut alice = server.connect(&alice_token).await;
    alice.send_text("bob", "m1", "wake up").await.unwrap();
    let woken = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("the waiting poll returned promptly")
        .unwrap()
        .unwrap();
    assert_eq!(texts(&woken.frames), ["wake up"]);
    assert_eq!(woken.cursor, woken.frames[0].queue_pos().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_poll_ends_the_older_one() {
    // Goal: one device has one live session: a second poll ends the first
    // at once with closed = "replaced"; a revoke ends a poll with "revoked".
    let server = TestServer::start().await;
    let bob_token = server.user("bob").await;
    let other_token = server.device("bob").await;
    let router = server.app.state().router.clone();
    let bob = server.api.devices(&bob_token).await.unwrap().devices[0].device_id;
    let wait_live = || async {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while !router.is_live(missive_core::DeviceId(bob)) {
            assert!(tokio::time::Instant::now() < deadline, "poll never parked");
            tokio::task::yield_now().await;
        }
    };
    let (api, token) = (server.api.clone(), bob_token.clone());
    let first = tokio::spawn(async move { api.poll(&token, 0, None, 30_000).await });
    wait_live().await;
    let (api, token) = (server.api.clone(), bob_token.clone());
    let second = tokio::spawn(async move { api.poll(&token, 0, None, 30_000).await });
    let first = tokio::time::timeout(PROMPTLY, first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.closed.as_deref(), Some("replaced"));
    wait_live().await;
    server.api.revoke(&other_token, bob).await.unwrap();
    let second = tokio::time::timeout(PROMPTLY, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.closed.as_deref(), Some("revoked"));
    assert_eq!(
        refused_code(server.api.poll(&bob_token, 0, None, 10).await),
        "token_invalid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_plain_http_get_the_same_typed_errors() {
    // Goal: POST /v1/frames refuses bad input with the WebSocket's codes and
    // the matching HTTP status, and changes nothing.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let http = reqwest::Client::new();
    let post = |body: &'static str| {
        http.post(format!("{}/v1/frames", server.url()))
            .bearer_auth(&alice_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        (r#"{"type":"fly","id":"1"}"#, 400, "unknown_type"),
        (
            r#"{"type":"send","id":"2","to":"nobody","client_msg_id":"a","text":"x"}"#,
            404,
            "unknown_user",
        ),
        (
            r#"{"type":"auth","id":"3","token":"t"}"#,
            409,
            "already_authenticated",
        ),
        (r#"{"type":"ping","id":"4"}"#, 200, ""),
    ];
    for (body, status, code) in cases {
        let response = post(body).await.unwrap();
        let got_status = response.status().as_u16();
        let replies: serde_json::Value = response.json().await.unwrap();
        let got_code = replies["frames"][0]["code"].as_str().unwrap_or("");
        assert_eq!((got_code, got_status), (code, status), "{body}");
    }
    let response = post("[not json").await.unwrap();
    assert_eq!(response.status(), 400);
    let huge = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(300 * 1024));
    let response = http
        .post(format!("{}/v1/frames", server.url()))
        .bearer_auth(&alice_token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_over_plain_http_is_a_snapshot() {
    // Goal: without a live session, subscribe_presence over /v1/frames
    // answers ok plus each user's current presence (bob online on his
    // WebSocket), and unknown users are a typed error.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let _bob_ws = server.connect(&bob_token).await;
    let frame = ClientFrame::SubscribePresence {
        id: Some("p".into()),
        users: vec!["bob".into()],
    };
    let replies = server.api.frame(&alice_token, &frame).await.unwrap();
    assert!(matches!(&replies[0], ServerFrame::Ok { id } if id.as_deref() == Some("p")));
    assert!(
        matches!(&replies[1], ServerFrame::Presence { user, online: true, .. } if user == "bob"),
        "{replies:?}"
    );
    let unknown = ClientFrame::SubscribePresence {
        id: None,
        users: vec!["nobody".into()],
    };
    assert_eq!(
        refused_code(server.api.frame(&alice_token, &unknown).await),
        "unknown_user"
    );
}
