//! Limits, black-box: a device or an account that sends, uploads or
//! creates groups faster than allowed is refused with `rate_limited` and a
//! retry-after; every size and count bound refuses with a typed error; a
//! refused request changes nothing.

mod common;

use common::*;
use std::time::Duration;

use missive_client::{Api, Connection};
use missive_proto::{ClientFrame, ServerFrame};

fn send(id: &str, to: &str, text: &str) -> ClientFrame {
    ClientFrame::Send {
        id: Some(id.into()),
        to: Some(to.into()),
        conversation: None,
        client_msg_id: id.into(),
        text: text.into(),
        reply_to: None,
        media: Vec::new(),
        encrypted: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_sending_too_fast_is_told_to_wait() {
    // Goal: past its burst, a device's sends are refused with rate_limited
    // and retry_after_ms (the wait for one token at 1/s: at most 1 s);
    // the refused ones are neither stored nor delivered; another device of
    // the same account has its own budget.
    let server = TestServer::start_with(|config| {
        config.limits.sends_per_sec_per_device = 1;
        config.limits.send_burst_per_device = 3;
        config.store.fsync = missive_server::config::FsyncMode::Off;
    })
    .await;
    let alice_token = server.user("alice").await;
    let alice_laptop_token = server.device("alice").await;
    let bob_token = server.user("bob").await;
    let mut alice = server.connect(&alice_token).await;
    for i in 0..5 {
        alice
            .send_frame(&send(&format!("m{i}"), "bob", &format!("text {i}")))
            .await
            .unwrap();
    }
    let mut sent = Vec::new();
    let mut refused = Vec::new();
    while sent.len() + refused.len() < 5 {
        match alice.next_frame(PROMPTLY).await.unwrap() {
            ServerFrame::Sent { id: Some(id), .. } => sent.push(id),
            ServerFrame::Error {
                id: Some(id),
                code,
                retry_after_ms,
                ..
            } => {
                assert_eq!(code.as_str(), "rate_limited", "{id}");
                let wait = retry_after_ms.expect("a retry-after");
                assert!((1..=1000).contains(&wait), "{wait} ms");
                refused.push(id);
            }
            _ => {}
        }
    }
    // Pipelined sends are answered in order: the first three pass.
    assert_eq!(sent, ["m0", "m1", "m2"]);
    assert_eq!(refused, ["m3", "m4"]);

    let mut laptop = server.connect(&alice_laptop_token).await;
    laptop
        .send_text("bob", "l0", "from the laptop")
        .await
        .unwrap();

    let mut bob = server.connect(&bob_token).await;
    assert_eq!(
        texts(&queued(&mut bob, 4).await),
        ["text 0", "text 1", "text 2", "from the laptop"]
    );
    assert_nothing_queued(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_devices_share_one_budget_over_http() {
    // Goal: the account limit counts all its devices; over /v1/frames a
    // refusal is HTTP 429 with a Retry-After header (whole seconds, rounded
    // up) and the error frame's retry_after_ms; nothing is stored.
    let server = TestServer::start_with(|config| {
        config.limits.sends_per_sec_per_device = 0;
        config.limits.sends_per_sec_per_account = 1;
        config.limits.send_burst_per_account = 2;
        config.store.fsync = missive_server::config::FsyncMode::Off;
    })
    .await;
    let phone = server.user("alice").await;
    let laptop = server.device("alice").await;
    let bob_token = server.user("bob").await;
    let http = reqwest::Client::new();
    let post = |token: &str, id: &str| {
        http.post(format!("{}/v1/frames", server.url()))
            .bearer_auth(token)
            .body(serde_json::to_string(&send(id, "bob", id)).unwrap())
            .send()
    };
    assert_eq!(post(&phone, "p0").await.unwrap().status(), 200);
    assert_eq!(post(&laptop, "l0").await.unwrap().status(), 200);
    let refused = post(&laptop, "l1").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    let frame = &body["frames"][0];
    assert_eq!(frame["code"], "rate_limited", "{body}");
    assert!(frame["retry_after_ms"].as_u64().unwrap() >= 1, "{body}");

    let mut bob = server.connect(&bob_token).await;
    assert_eq!(texts(&queued(&mut bob, 2).await), ["p0", "l0"]);
    assert_nothing_queued(&mut bob).await;
}

// Bounds on sizes and counts (issue 8): each refusal is typed and changes
// nothing, and connection counts come back when connections end.

/// The `online` flag of a `presence` frame about `user`.
fn online(frame: &ServerFrame, user: &str) -> bool {
    match frame {
        ServerFrame::Presence {
            user: about,
            online,
            ..
        } if about == user => *online,
        other => panic!("expected presence of {user}, got {other:?}"),
    }
}

/// Waits until `watcher` is told that `user` is offline: every connection
/// of theirs has ended, and (the session gives its slots back before
/// presence is recorded) every connection slot of theirs is free.
async fn until_offline(watcher: &mut Connection, user: &str) {
    while online(&next_ephemeral(watcher).await, user) {}
}

/// `last_seen_ms` of each of the account's devices, by device id.
async fn last_seen(server: &TestServer, token: &str) -> Vec<(i64, i64)> {
    let mut devices: Vec<(i64, i64)> = server
        .devices(token)
        .await
        .iter()
        .map(|device| (device.device_id, device.last_seen_ms))
        .collect();
    devices.sort();
    devices
}

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket, as a proxy would pass on a client at `forwarded_for`,
/// and authenticates it; returns the socket and the server's first frame.
async fn raw_connect(
    server: &TestServer,
    forwarded_for: &str,
    token: &str,
) -> (RawSocket, ServerFrame) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.api.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let auth = ClientFrame::Auth {
        id: Some("a".into()),
        token: token.into(),
    };
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            serde_json::to_string(&auth).unwrap(),
        ))
        .await
        .unwrap();
    let first = raw_next(&mut socket).await.expect("a first frame");
    (socket, first)
}

/// The next text frame, or `Err(close code)`.
async fn raw_next(socket: &mut RawSocket) -> Result<ServerFrame, u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(PROMPTLY, socket.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|frame| u16::from(frame.code)).unwrap_or(1005));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(1006),
        }
    }
}

/// A ping round trip on a raw socket: the connection still works.
async fn raw_ping(socket: &mut RawSocket) {
    use futures_util::SinkExt;
    let ping = ClientFrame::Ping {
        id: Some("alive".into()),
    };
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            serde_json::to_string(&ping).unwrap(),
        ))
        .await
        .unwrap();
    loop {
        if let Ok(ServerFrame::Pong { id }) = raw_next(socket).await {
            assert_eq!(id.as_deref(), Some("alive"));
            return;
        }
    }
}

/// A WebSocket upgrade request from a client at `forwarded_for` that the
/// server must refuse: (HTTP status, error code).
async fn refused_upgrade(server: &TestServer, forwarded_for: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{}", server.url(), missive_proto::WS_PATH))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// A long-poll (returning at once when nothing waits), optionally as a
/// proxy would pass on a client at `forwarded_for`: (status, body).
async fn poll(
    server: &TestServer,
    token: &str,
    ack: Option<(i64, i64)>,
    forwarded_for: Option<&str>,
) -> (u16, serde_json::Value) {
    let acks: Vec<_> = ack
        .map(|(conversation, seq)| serde_json::json!({"conversation": conversation, "seq": seq}))
        .into_iter()
        .collect();
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/poll", server.url()))
        .bearer_auth(token)
        .json(&serde_json::json!({"acks": acks, "timeout_ms": 0}));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_names_are_bounded() {
    // Goal: a group name over 64 bytes is refused with invalid_field, on
    // create and on rename, and changes nothing: no group is created, the
    // name stays; 64 bytes (multi-byte characters counted in bytes) pass.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let too_long = "é".repeat(33); // 66 bytes, 33 characters
    let refused = server.api.create_group(&alice, &too_long, &["bob"]).await;
    assert_eq!(refused_code(refused), "invalid_field");
    let conversations = server.api.conversations(&alice).await.unwrap();
    assert!(conversations.conversations.is_empty(), "{conversations:?}");

    let longest = "é".repeat(32); // 64 bytes
    let group = server
        .api
        .create_group(&alice, &longest, &["bob"])
        .await
        .unwrap();
    assert_eq!(group.name, longest);
    let refused = server
        .api
        .rename_group(&alice, group.conversation, &too_long)
        .await;
    assert_eq!(refused_code(refused), "invalid_field");
    let info = server.api.group(&alice, group.conversation).await.unwrap();
    assert_eq!((info.name, info.last_seq), (longest, group.last_seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_stop_at_the_limit() {
    // Goal: past limits.contacts_per_account_max a new contact is refused
    // with limit_exceeded (409) and the list is unchanged; re-adding a
    // listed contact is still fine (idempotent); removing one makes room;
    // another account has its own count.
    let server = TestServer::start_with(|config| config.limits.contacts_per_account_max = 2).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    for user in ["carol", "dave", "erin"] {
        server.user(user).await;
    }
    server.api.add_contact(&alice, "carol").await.unwrap();
    server.api.add_contact(&alice, "bob").await.unwrap();
    let refused = server.api.add_contact(&alice, "dave").await;
    assert_eq!(refused_code(refused), "limit_exceeded");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/contacts", server.url()))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"username": "erin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        server.api.contacts(&alice).await.unwrap().users,
        ["bob", "carol"]
    );
    server.api.add_contact(&alice, "bob").await.unwrap();
    server.api.add_contact(&bob, "dave").await.unwrap();

    server.api.remove_contact(&alice, "carol").await.unwrap();
    server.api.add_contact(&alice, "dave").await.unwrap();
    assert_eq!(
        server.api.contacts(&alice).await.unwrap().users,
        ["bob", "dave"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_stop_at_the_limit() {
    // Goal: past limits.blocks_per_account_max a block is refused with
    // limit_exceeded and has no effect (the user is not blocked: messages
    // still pass); blocking a blocked user again is fine; unblocking makes
    // room.
    let server = TestServer::start_with(|config| config.limits.blocks_per_account_max = 1).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("mallory").await;
    server.api.block(&alice, "mallory").await.unwrap();
    let refused = server.api.block(&alice, "bob").await;
    assert_eq!(refused_code(refused), "limit_exceeded");
    assert_eq!(server.api.blocks(&alice).await.unwrap().users, ["mallory"]);
    server.api.block(&alice, "mallory").await.unwrap();
    let mut bob_ws = server.connect(&bob).await;
    bob_ws
        .send_text("alice", "b1", "not blocked")
        .await
        .expect("bob is not blocked");

    server.api.unblock(&alice, "mallory").await.unwrap();
    server.api.block(&alice, "bob").await.unwrap();
    assert_eq!(server.api.blocks(&alice).await.unwrap().users, ["bob"]);
    let refused = bob_ws.send_text("alice", "b2", "blocked now").await;
    assert_eq!(refused_code(refused), "blocked");
}

/// A server allowing two connections per account; the tokens of alice's
/// phone, laptop and tablet; bob connected and watching alice's presence,
/// with the presence frames his subscription answered.
async fn two_slots_three_devices() -> (TestServer, [String; 3], Connection, Vec<ServerFrame>) {
    let server =
        TestServer::start_with(|config| config.limits.connections_per_account_max = 2).await;
    let phone = server.user("alice").await;
    let laptop = server.device("alice").await;
    let tablet = server.device("alice").await;
    let bob_token = server.user("bob").await;
    let mut bob = server.connect(&bob_token).await;
    let initial = bob.subscribe_presence(&["alice"]).await.unwrap();
    (server, [phone, laptop, tablet], bob, initial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_websockets_are_limited_after_auth() {
    // Goal: past limits.connections_per_account_max a WebSocket of the
    // account is refused right after `auth` (the account is only known
    // then): a rate_limited error frame with the auth id, then close 1013.
    // The refusal changes nothing: the device is not marked seen, the
    // account's other connections keep working, no presence flaps. Once
    // connections close, their slots are free again.
    let (server, [phone, laptop, tablet], mut bob, initial) = two_slots_three_devices().await;
    assert!(!online(&initial[0], "alice"));

    let phone_ws = server.connect(&phone).await;
    assert!(online(&next_ephemeral(&mut bob).await, "alice"));
    let mut laptop_ws = server.connect(&laptop).await;
    server.clock.advance_ms(1_000);
    let seen_before = last_seen(&server, &phone).await;

    let (mut refused, first) = raw_connect(&server, "203.0.113.1", &tablet).await;
    match first {
        ServerFrame::Error { id, code, .. } => {
            assert_eq!(code.as_str(), "rate_limited");
            assert_eq!(id.as_deref(), Some("a"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(raw_next(&mut refused).await.unwrap_err(), 1013);
    assert_eq!(last_seen(&server, &phone).await, seen_before);
    laptop_ws
        .send_text("bob", "l1", "still connected")
        .await
        .unwrap();
    assert_eq!(texts(&queued(&mut bob, 1).await), ["still connected"]);
    assert_no_ephemeral(&mut bob).await;

    phone_ws.close().await;
    laptop_ws.close().await;
    until_offline(&mut bob, "alice").await;
    let _tablet_ws = server.connect(&tablet).await;
    let _phone_ws = server.connect(&phone).await;
    let refused = Connection::connect(&server.api.ws_url(), &laptop).await;
    assert_eq!(refused_code(refused.map(|_| ())), "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_count_against_the_account_with_websockets() {
    // Goal: a long-poll is a connection of its account: beyond
    // limits.connections_per_account_max it is refused with 429
    // rate_limited before it acks or registers (the event it tried to ack
    // is still sent to it; the device is not marked seen). A poll that ended
    // has given its slot back.
    let (server, [phone, laptop, tablet], mut bob, _) = two_slots_three_devices().await;

    let phone_ws = server.connect(&phone).await;
    assert!(online(&next_ephemeral(&mut bob).await, "alice"));
    let laptop_ws = server.connect(&laptop).await;
    let sent = bob.send_text("alice", "b1", "hello").await.unwrap();
    let ServerFrame::Sent {
        conversation, seq, ..
    } = sent
    else {
        panic!("{sent:?}")
    };
    // The tablet's token is used once before the clock moves: its use is
    // then recorded (at most hourly), so only a session the refused poll
    // registered could move its last_seen_ms below.
    last_seen(&server, &tablet).await;
    server.clock.advance_ms(1_000);
    let seen_before = last_seen(&server, &phone).await;

    let (status, body) = poll(&server, &tablet, Some((conversation, seq)), None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(last_seen(&server, &phone).await, seen_before);

    phone_ws.close().await;
    laptop_ws.close().await;
    until_offline(&mut bob, "alice").await;
    let (status, body) = poll(&server, &tablet, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["frames"][0]["text"], "hello", "{body}");

    // One WebSocket plus a poll that has ended: both slots are free again.
    let _phone_ws = server.connect(&phone).await;
    let (status, _) = poll(&server, &tablet, None, None).await;
    assert_eq!(status, 200);
    let _laptop_ws = server.connect(&laptop).await;
    let (status, body) = poll(&server, &tablet, None, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &"rate_limited".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_limited_before_the_upgrade() {
    // Goal: past limits.connections_per_ip_max from one client address —
    // the X-Forwarded-For hop of a trusted proxy, as for login limits — an
    // upgrade is refused with HTTP 429 rate_limited before it is accepted,
    // and so is a poll; other addresses are unaffected and the address's
    // open connections keep working. A closed connection frees its slot.
    let server = TestServer::start_with(|config| {
        config.limits.connections_per_ip_max = 2;
        config.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let alice = server.user("alice").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let bob_token = server.user("bob").await;
    // Bob comes straight from 127.0.0.1: another address.
    let mut bob = server.connect(&bob_token).await;
    bob.subscribe_presence(&["alice"]).await.unwrap();

    let (mut alice_ws, ready) = raw_connect(&server, "203.0.113.7", &alice).await;
    assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");
    assert!(online(&next_ephemeral(&mut bob).await, "alice"));
    let (mut carol_ws, ready) = raw_connect(&server, "198.51.100.1, 203.0.113.7", &carol).await;
    assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");

    assert_eq!(
        refused_upgrade(&server, "203.0.113.7").await,
        (429, "rate_limited".into())
    );
    server.clock.advance_ms(1_000);
    let seen_before = last_seen(&server, &dave).await;
    let (status, body) = poll(&server, &dave, None, Some("203.0.113.7")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &"rate_limited".into())
    );
    assert_eq!(last_seen(&server, &dave).await, seen_before);
    // Another address, and the open connections, are unaffected.
    let (mut dave_ws, ready) = raw_connect(&server, "203.0.113.8", &dave).await;
    assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");
    raw_ping(&mut dave_ws).await;
    raw_ping(&mut alice_ws).await;
    raw_ping(&mut carol_ws).await;

    alice_ws.close(None).await.unwrap();
    until_offline(&mut bob, "alice").await;
    let (_alice_again, ready) = raw_connect(&server, "203.0.113.7", &alice).await;
    assert!(matches!(ready, ServerFrame::Ready { .. }), "{ready:?}");
    assert_eq!(
        refused_upgrade(&server, "203.0.113.7").await,
        (429, "rate_limited".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_bounded_by_the_frame_limit() {
    // Goal: no REST body may exceed limits.frame_bytes_max: a larger one is
    // refused with 413 frame_too_large (typed, not a bare text answer) and
    // changes nothing. Media uploads stream under their own limit.
    let server = TestServer::start_with(|config| config.limits.frame_bytes_max = 4096).await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let padding = "x".repeat(8192);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/groups", server.url()))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "trip", "members": ["bob", padding]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "frame_too_large", "{body}");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/frames", server.url()))
        .bearer_auth(&alice)
        .body(format!(r#"{{"type":"ping","id":"{padding}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "frame_too_large", "{body}");
    let conversations = server.api.conversations(&alice).await.unwrap();
    assert!(conversations.conversations.is_empty());

    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.resize(64 * 1024, b' ');
    let media = server.api.upload_media(&alice, pdf).await.unwrap();
    assert_eq!(media.size_bytes, 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_group_creations_are_rate_limited_per_account() {
    // Goal: past its burst, an account's uploads and group creations are
    // refused with rate_limited and a retry-after, whichever of its
    // devices asks and over which transport; a refused upload stores no
    // byte and a refused creation makes no group.
    // Method: bursts of 2 at 1 per second; the third of each comes at once
    // (well within the second a token takes to return).
    let server = TestServer::start_with(|config| {
        config.limits.uploads_per_sec_per_account = 1;
        config.limits.upload_burst_per_account = 2;
        config.limits.group_creates_per_sec_per_account = 1;
        config.limits.group_create_burst_per_account = 2;
    })
    .await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let second = server.device("alice").await;
    let pdf = b"%PDF-1.7 a tiny document".to_vec();
    for _ in 0..2 {
        server
            .api
            .upload_media(&alice, pdf.clone())
            .await
            .expect("an upload within the burst");
    }
    let media_dir = server.data_dir.path().join("media");
    let stored = files_under(&media_dir);
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/media", server.url()))
        .bearer_auth(&second)
        .body(pdf.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert_eq!(retry_after, 1, "one token at 1/s comes within a second");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(files_under(&media_dir), stored, "nothing of it stored");

    for name in ["one", "two"] {
        server
            .api
            .create_group(&alice, name, &["bob"])
            .await
            .expect("a group within the burst");
    }
    let mut socket = server.connect(&second).await;
    let refused = socket
        .call(|id| ClientFrame::GroupCreate {
            id,
            name: "three".into(),
            members: vec!["bob".into()],
            encrypted: None,
        })
        .await;
    assert_eq!(refused_code(refused), "rate_limited");
    let refused = server.api.create_group(&alice, "four", &["bob"]).await;
    assert_eq!(refused_code(refused), "rate_limited");
    let conversations = server
        .api
        .conversations(&alice)
        .await
        .expect("conversations");
    assert_eq!(conversations.conversations.len(), 2, "{conversations:?}");
}

/// Opens a TCP connection to `server` from `source` (a loopback address).
async fn socket_from(source: &str, server: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source address"))?;
    let address = server
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    socket.connect(address).await
}

/// Waits (at most `within`) for the server to close `stream`; true if it did.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_sockets_cannot_keep_a_real_user_out() {
    // Goal: the denial of service of issue 17. With 400 open files, a
    // client opening 600 sockets that send nothing, or half a request,
    // cannot stop the server: the surplus is closed at once (no EMFILE),
    // the rest by the request head deadline, /healthz answers and a real
    // user from another address registers, connects, sends and receives
    // meanwhile.
    use tokio::io::AsyncWriteExt;
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_open_files(
        data_dir.path(),
        &[("MISSIVE_LIMITS__REQUEST_HEAD_TIMEOUT_MS", "1500")],
        400,
    );
    let mut idle = Vec::new();
    for n in 0..600 {
        let mut stream = socket_from("127.0.0.2", &server.url)
            .await
            .expect("connect");
        if n % 3 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("half a request");
        }
        idle.push(stream);
    }

    // A real user, from another address, while all of that is open.
    let api = Api::new(&server.url);
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    api.register("alice", PASSWORD).await.unwrap();
    api.register("bob", PASSWORD).await.unwrap();
    let alice = api.login("alice", PASSWORD, "a").await.unwrap().token;
    let bob = api.login("bob", PASSWORD, "b").await.unwrap().token;
    let mut alice_ws = Connection::connect(&api.ws_url(), &alice).await.unwrap();
    let mut bob_ws = Connection::connect(&api.ws_url(), &bob).await.unwrap();
    alice_ws.send_text("bob", "c1", "still here").await.unwrap();
    let got = bob_ws.next_frame(Duration::from_secs(10)).await.unwrap();
    assert!(
        matches!(&got, ServerFrame::Message { text, .. } if text == "still here"),
        "{got:?}"
    );

    // Every idle or half-open socket is closed by the server: the surplus
    // at once, the others by the deadline.
    for (n, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream, Duration::from_secs(20)).await,
            "socket {n} still open"
        );
    }
    drop(server);
}
