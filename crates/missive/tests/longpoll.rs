//! HTTP long-polling: the delivery scenarios written once and run over both
//! transports, plus what is particular to polling (timeouts, wake-ups,
//! switching transports, one live session per device).

mod common;

use std::collections::{HashSet, VecDeque};

use common::*;
use missive_client::{Api, ClientError, Connection};
use missive_proto::rest::PollResponse;
use missive_proto::{ClientFrame, ServerFrame};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug)]
enum Transport {
    WebSocket,
    LongPoll,
}

/// One device talking over either transport.
enum Link {
    Ws(Box<Connection>),
    Poll(Box<Poller>),
}

/// A long-poll client: it acks by sending (conversation, seq) with a poll,
/// and drops the events a poll returns again (by message id), as a real
/// client dedupes.
struct Poller {
    api: Api,
    token: String,
    device: i64,
    router: std::sync::Arc<missive_server::router::Router>,
    /// Message ids already handed out by this client.
    seen: HashSet<String>,
    backlog: VecDeque<ServerFrame>,
    /// A poll left waiting by [`Link::park`].
    parked: Option<JoinHandle<PollResponse>>,
}

impl Poller {
    /// Keeps the delivery frames of a poll's answer this client has not
    /// handed out yet.
    fn take(&mut self, response: PollResponse) {
        assert_eq!(response.closed, None);
        for frame in response.frames {
            if !is_delivery(&frame) {
                continue;
            }
            if let ServerFrame::Message { message_id, .. } = &frame {
                if !self.seen.insert(message_id.clone()) {
                    continue;
                }
            }
            self.backlog.push_back(frame);
        }
    }

    async fn poll(&mut self, acks: &[(i64, i64)], timeout_ms: u64) {
        let response = tokio::time::timeout(PROMPTLY, self.api.poll(&self.token, acks, timeout_ms))
            .await
            .expect("poll answered")
            .unwrap();
        self.take(response);
    }
}

impl Link {
    async fn open(server: &TestServer, token: &str, transport: Transport) -> Self {
        match transport {
            Transport::WebSocket => Link::Ws(Box::new(server.connect(token).await)),
            Transport::LongPoll => {
                let devices = server.devices(token).await;
                let device = devices
                    .iter()
                    .find(|device| device.current)
                    .expect("the current device")
                    .device_id;
                Link::Poll(Box::new(Poller {
                    api: server.api.clone(),
                    token: token.to_owned(),
                    device,
                    router: server.app.state().router.clone(),
                    seen: HashSet::new(),
                    backlog: VecDeque::new(),
                    parked: None,
                }))
            }
        }
    }

    async fn send_text(&mut self, to: &str, client_msg_id: &str, text: &str) -> ServerFrame {
        match self {
            Link::Ws(connection) => connection.send_text(to, client_msg_id, text).await.unwrap(),
            Link::Poll(poller) => {
                let frame = ClientFrame::Send {
                    id: Some("s".into()),
                    to: Some(to.into()),
                    conversation: None,
                    client_msg_id: client_msg_id.into(),
                    text: text.into(),
                    reply_to: None,
                    media: Vec::new(),
                    encrypted: false,
                };
                let mut replies = poller.api.frame(&poller.token, &frame).await.unwrap();
                assert_eq!(replies.len(), 1);
                replies.remove(0)
            }
        }
    }

    /// The next `n` delivery frames (events and receipt cursors).
    async fn queued(&mut self, n: usize) -> Vec<ServerFrame> {
        match self {
            Link::Ws(connection) => queued(connection, n).await,
            Link::Poll(poller) => {
                if let Some(parked) = poller.parked.take() {
                    let response = tokio::time::timeout(PROMPTLY, parked)
                        .await
                        .expect("the parked poll returned")
                        .unwrap();
                    poller.take(response);
                }
                while poller.backlog.len() < n {
                    poller.poll(&[], 5_000).await;
                }
                poller.backlog.drain(..n).collect()
            }
        }
    }

    /// Acks cumulatively: an `ack` frame with an id on the WebSocket, the
    /// `acks` of a (short) poll otherwise.
    async fn ack(&mut self, conversation: i64, seq: i64) {
        match self {
            Link::Ws(connection) => {
                assert_eq!(connection.ack(conversation, seq).await.unwrap(), seq);
            }
            Link::Poll(poller) => poller.poll(&[(conversation, seq)], 0).await,
        }
    }

    /// Makes the device live, so that live frames (receipt cursors) reach
    /// it: a WebSocket is; a poll client is while a poll waits, so this
    /// leaves one waiting (its answer is read by the next `queued`).
    async fn park(&mut self) {
        let Link::Poll(poller) = self else {
            return;
        };
        assert!(poller.parked.is_none());
        let (api, token) = (poller.api.clone(), poller.token.clone());
        poller.parked = Some(tokio::spawn(async move {
            api.poll(&token, &[], 30_000).await.unwrap()
        }));
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while !poller.router.is_live(missive_core::DeviceId(poller.device)) {
            assert!(tokio::time::Instant::now() < deadline, "poll never parked");
            tokio::task::yield_now().await;
        }
    }
}

fn conversation_of(frame: &ServerFrame) -> i64 {
    match frame {
        ServerFrame::Sent { conversation, .. } => *conversation,
        other => panic!("expected sent, got {other:?}"),
    }
}

async fn delivery_in_order_offline_then_live(transport: Transport) {
    // Goal: a device on `transport` gets what was stored while it was away
    // in seq order, then live messages; its cumulative ack reaches the
    // live sender as one `delivered` cursor; the same scenario runs over
    // both transports.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = Link::open(&server, &alice_token, transport).await;
    let mut conversation = 0;
    for i in 1..=12 {
        conversation = conversation_of(
            &alice
                .send_text("bob", &format!("m{i}"), &format!("t{i}"))
                .await,
        );
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
    alice.park().await;
    bob.ack(conversation, 13).await;
    let receipts = alice.queued(1).await;
    assert!(
        matches!(&receipts[0], ServerFrame::Delivered { conversation: c, by, seq: 13, .. }
            if *c == conversation && by == "bob"),
        "{receipts:?}"
    );
}

async fn unacked_frames_come_again_with_the_same_ids(transport: Transport) {
    // Goal: after a session ends, unacked frames are delivered again with
    // the same message ids and acked ones never return.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = Link::open(&server, &alice_token, transport).await;
    let mut conversation = 0;
    for i in 1..=6 {
        conversation = conversation_of(
            &alice
                .send_text("bob", &format!("m{i}"), &format!("t{i}"))
                .await,
        );
    }
    let mut bob = Link::open(&server, &bob_token, transport).await;
    let first = bob.queued(6).await;
    assert_eq!(first[2].ack_point(), Some((conversation, 3)));
    bob.ack(conversation, 3).await;
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
    let mut conversation = 0;
    for i in 1..=5 {
        conversation =
            conversation_of(&alice.send_text("bob", &format!("a{i}"), "x").await.unwrap());
    }
    let mut bob_ws = server.connect(&bob_token).await;
    let frames = queued(&mut bob_ws, 5).await;
    record(&frames);
    bob_ws.ack(conversation, 2).await.unwrap();
    for i in 6..=8 {
        alice.send_text("bob", &format!("a{i}"), "x").await.unwrap();
    }
    // Switch to polling without acking the rest: they come again.
    let response = server.api.poll(&bob_token, &[], 5_000).await.unwrap();
    assert_eq!(seqs(&response.frames), (3..=8).collect::<Vec<_>>());
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
    // The next poll acks what the last one returned: only a9 is above.
    let next = server
        .api
        .poll(&bob_token, &ack_points(&response.frames), 5_000)
        .await
        .unwrap();
    assert_eq!(seqs(&next.frames), [9]);
    record(&next.frames);
    // Ack what the last poll returned (a short poll carries the ack).
    let last = server
        .api
        .poll(&bob_token, &ack_points(&next.frames), 10)
        .await
        .unwrap();
    assert!(last.frames.is_empty(), "{:?}", last.frames);
    // Back to the WebSocket: everything was acked, a new message arrives live.
    let mut bob_ws = server.connect(&bob_token).await;
    alice.send_text("bob", "a10", "x").await.unwrap();
    record(&queued(&mut bob_ws, 1).await);
    let seqs: Vec<i64> = seen.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_returns_what_lies_above_its_acks() {
    // Goal: a poll returns every stored event above the device's positions:
    // one that acks nothing gets the same events (same ids) again; one that
    // acks (conversation, seq) gets only what lies above, in that
    // conversation only, and the ack is kept (a later poll without acks
    // does not bring them back); the acks move the delivered cursor as an
    // `ack` frame does; once everything is acked a poll waits and returns
    // empty at its timeout.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let carol_token = server.user("carol").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    let mut carol = server.connect(&carol_token).await;
    let with_alice = send_numbered(&mut alice, "bob", "a", 4).await;
    let with_carol = send_numbered(&mut carol, "bob", "c", 2).await;
    let points = |response: &PollResponse| -> Vec<(i64, i64)> {
        let mut points: Vec<_> = response
            .frames
            .iter()
            .filter_map(ServerFrame::ack_point)
            .collect();
        points.sort();
        points
    };
    let all: Vec<(i64, i64)> = (1..=4)
        .map(|seq| (with_alice, seq))
        .chain((1..=2).map(|seq| (with_carol, seq)))
        .collect();

    let first = server.api.poll(&bob_token, &[], 5_000).await.unwrap();
    assert_eq!(points(&first), all);
    let again = server.api.poll(&bob_token, &[], 5_000).await.unwrap();
    assert_eq!(again.frames, first.frames, "unacked: the same frames again");

    let above = server
        .api
        .poll(&bob_token, &[(with_alice, 2)], 5_000)
        .await
        .unwrap();
    assert_eq!(points(&above), all[2..]);
    let kept = server.api.poll(&bob_token, &[], 5_000).await.unwrap();
    assert_eq!(kept.frames, above.frames, "the ack is kept");
    // Alice, live, is told bob's delivered cursor.
    let receipt = queued(&mut alice, 1).await;
    assert!(
        matches!(&receipt[0], ServerFrame::Delivered { conversation, by, seq: 2, .. }
            if *conversation == with_alice && by == "bob"),
        "{receipt:?}"
    );

    let empty = server
        .api
        .poll(&bob_token, &[(with_alice, 4), (with_carol, 2)], 50)
        .await
        .unwrap();
    assert!(empty.frames.is_empty(), "{:?}", empty.frames);
    assert_eq!(empty.closed, None);
    // Something new comes alone.
    alice.send_text("bob", "a5", "a5").await.unwrap();
    let fresh = server.api.poll(&bob_token, &[], 5_000).await.unwrap();
    assert_eq!(points(&fresh), [(with_alice, 5)]);
    assert_eq!(texts(&fresh.frames), ["a5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_with_a_refused_ack_changes_nothing() {
    // Goal: a poll's acks are checked as `ack` frames are (above the last
    // seq or negative: invalid_field; never a member, or no such
    // conversation: unknown_conversation) and refused whole: the valid
    // ack beside a refused one is not applied either, so the next poll
    // returns every event again.
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let carol_token = server.user("carol").await;
    server.user("dave").await;
    let mut alice = server.connect(&alice_token).await;
    let conversation = send_numbered(&mut alice, "bob", "m", 3).await;
    let mut carol = server.connect(&carol_token).await;
    let elsewhere = conversation_of(&carol.send_text("dave", "c1", "private").await.unwrap());
    let cases = [
        (vec![(conversation, 2), (conversation, 4)], "invalid_field"),
        (vec![(conversation, 2), (conversation, -1)], "invalid_field"),
        (
            vec![(conversation, 2), (elsewhere, 1)],
            "unknown_conversation",
        ),
        (
            vec![(conversation, 2), (999_999, 1)],
            "unknown_conversation",
        ),
    ];
    for (acks, code) in cases {
        assert_eq!(
            refused_code(server.api.poll(&bob_token, &acks, 10).await),
            code,
            "{acks:?}"
        );
    }
    let list = server.api.conversations(&alice_token).await.unwrap();
    assert_eq!(list.conversations[0].receipts[0].delivered_seq, 0);
    let response = server.api.poll(&bob_token, &[], 5_000).await.unwrap();
    assert_eq!(seqs(&response.frames), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_times_out_empty_and_a_waiting_poll_wakes_on_send() {
    // Goal: with nothing waiting a poll returns empty at its timeout; a
    // poll waiting 30 s returns as soon as a message is stored (bounded
    // here by PROMPTLY, far below its timeout).
    let server = TestServer::start().await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    let empty = server.api.poll(&bob_token, &[], 50).await.unwrap();
    assert!(empty.frames.is_empty());
    assert_eq!(empty.closed, None);

    let api = server.api.clone();
    let token = bob_token.clone();
    let waiting = tokio::spawn(async move { api.poll(&token, &[], 30_000).await });
    // Make sure the poll is parked before sending: wait until bob is live.
    let router = server.app.state().router.clone();
    let bob = server.devices(&bob_token).await[0].device_id;
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
    assert_eq!(seqs(&woken.frames), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_poll_ends_the_older_one() {
    // Goal: one device has one live session: a second poll ends the first
    // at once with closed = "replaced"; a revoke ends a poll with "revoked".
    let server = TestServer::start().await;
    let bob_token = server.user("bob").await;
    let other_token = server.device("bob").await;
    let router = server.app.state().router.clone();
    let bob = server.devices(&bob_token).await[0].device_id;
    let wait_live = || async {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while !router.is_live(missive_core::DeviceId(bob)) {
            assert!(tokio::time::Instant::now() < deadline, "poll never parked");
            tokio::task::yield_now().await;
        }
    };
    let (api, token) = (server.api.clone(), bob_token.clone());
    let first = tokio::spawn(async move { api.poll(&token, &[], 30_000).await });
    wait_live().await;
    let (api, token) = (server.api.clone(), bob_token.clone());
    let second = tokio::spawn(async move { api.poll(&token, &[], 30_000).await });
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
        refused_code(server.api.poll(&bob_token, &[], 10).await),
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
