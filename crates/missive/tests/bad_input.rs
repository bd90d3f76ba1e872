//! Bad input over REST and WebSocket: a typed error with a stable code, the
//! client's correlation id, no state change, and the connection survives
//! where that is safe.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use missive_client::{Api, Connection};
use missive_proto::ServerFrame;
use tokio_tungstenite::tungstenite::Message;

/// Sends a raw frame and returns the error reply's (code, id).
async fn error_for(connection: &mut Connection, raw: &str) -> (String, Option<String>) {
    connection.send_raw(raw).await.unwrap();
    loop {
        match connection.next_frame(PROMPTLY).await.unwrap() {
            ServerFrame::Error { code, id, .. } => return (code.as_str().to_owned(), id),
            frame if is_delivery(&frame) => continue,
            other => panic!("expected an error for {raw}, got {other:?}"),
        }
    }
}

/// Raw frames with the code and correlation id each is refused with.
const BAD_FRAMES: &[(&str, &str, Option<&str>)] = &[
    ("{not json", "bad_frame", None),
    ("[1]", "bad_frame", None),
    (r#"{"id":"1"}"#, "bad_frame", Some("1")),
    (r#"{"type":"teleport","id":"2"}"#, "unknown_type", Some("2")),
    (
        r#"{"type":"send","id":"3","to":"bob","text":"x"}"#,
        "invalid_field",
        Some("3"),
    ),
    (
        r#"{"type":"send","id":"4","to":"bob","client_msg_id":5,"text":"x"}"#,
        "invalid_field",
        Some("4"),
    ),
    (
        r#"{"type":"send","id":"5","client_msg_id":"a","text":"x"}"#,
        "invalid_field",
        Some("5"),
    ),
    (
        r#"{"type":"send","id":"6","to":"bob","conversation":1,"client_msg_id":"a","text":"x"}"#,
        "invalid_field",
        Some("6"),
    ),
    (
        r#"{"type":"send","id":"7","to":"nobody","client_msg_id":"a","text":"x"}"#,
        "unknown_user",
        Some("7"),
    ),
    (
        r#"{"type":"send","id":"8","to":"NOT VALID","client_msg_id":"a","text":"x"}"#,
        "unknown_user",
        Some("8"),
    ),
    (
        r#"{"type":"send","id":"9","to":"bob","client_msg_id":"a","text":"   "}"#,
        "empty_text",
        Some("9"),
    ),
    (
        r#"{"type":"send","id":"10","to":"bob","client_msg_id":"a b","text":"x"}"#,
        "invalid_client_msg_id",
        Some("10"),
    ),
    (
        r#"{"type":"send","id":"12","conversation":999,"client_msg_id":"a","text":"x"}"#,
        "unknown_conversation",
        Some("12"),
    ),
    (
        r#"{"type":"read","id":"13","conversation":999,"seq":1}"#,
        "unknown_conversation",
        Some("13"),
    ),
    (
        r#"{"type":"auth","id":"14","token":"x"}"#,
        "already_authenticated",
        Some("14"),
    ),
    (
        r#"{"type":"ack","id":"15","conversation":1,"seq":"all"}"#,
        "invalid_field",
        Some("15"),
    ),
    (
        r#"{"type":"ack","id":"15b","seq":1}"#,
        "invalid_field",
        Some("15b"),
    ),
    (
        r#"{"type":"ack","id":"15c","conversation":999,"seq":1}"#,
        "unknown_conversation",
        Some("15c"),
    ),
    (
        r#"{"type":"ping","id":"16","extra":true}"#,
        "invalid_field",
        Some("16"),
    ),
    // NUL cannot be stored by PostgreSQL: refused alike by both stores.
    (
        r#"{"type":"send","id":"17","to":"bob","client_msg_id":"a","text":"a\u0000b"}"#,
        "invalid_field",
        Some("17"),
    ),
    // A target or reply that is not a message id names no message.
    (
        r#"{"type":"send","id":"18","to":"bob","client_msg_id":"a","text":"x","reply_to":"x\u0000"}"#,
        "unknown_message",
        Some("18"),
    ),
    (
        r#"{"type":"send","id":"19","to":"bob","client_msg_id":"a","text":"x","media":["../etc"]}"#,
        "unknown_media",
        Some("19"),
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_frame_gets_its_code_and_the_connection_survives() {
    // Goal: each malformed or refused frame maps to its documented code with
    // the correlation id, and nothing is stored.
    let server = TestServer::start_with(|config| config.limits.text_bytes_max = 100).await;
    let alice_token = server.user("alice").await;
    let bob_token = server.user("bob").await;
    server.user("carol").await;
    let mut alice = server.connect(&alice_token).await;
    for (raw, code, id) in BAD_FRAMES {
        let got = error_for(&mut alice, raw).await;
        assert_eq!((got.0.as_str(), got.1.as_deref()), (*code, *id), "{raw}");
    }
    let long = format!(
        r#"{{"type":"send","id":"11","to":"bob","client_msg_id":"a","text":"{}"}}"#,
        "x".repeat(101)
    );
    assert_eq!(
        error_for(&mut alice, &long).await,
        ("text_too_long".into(), Some("11".into()))
    );

    let mut bob = server.connect(&bob_token).await;
    a_conversation_of_others_is_unknown(&mut alice, &mut bob).await;
    a_reused_client_msg_id_is_refused_and_a_retry_is_one(&mut alice, &mut bob).await;
}

/// A conversation alice is not in: bob and carol's. To her it is as
/// unknown as an id that names nothing. Then nothing was stored by any
/// refused frame.
async fn a_conversation_of_others_is_unknown(alice: &mut Connection, bob: &mut Connection) {
    // A conversation alice is not in: bob and carol's. To her it is as
    // unknown as an id that names nothing.
    let sent = bob.send_text("carol", "b1", "private").await.unwrap();
    let ServerFrame::Sent {
        conversation,
        seq: 1,
        ..
    } = sent
    else {
        panic!("{sent:?}")
    };
    let raw = format!(
        r#"{{"type":"send","id":"n","conversation":{conversation},"client_msg_id":"a","text":"x"}}"#
    );
    assert_eq!(error_for(alice, &raw).await.0, "unknown_conversation");
    let raw = format!(r#"{{"type":"read","id":"r","conversation":{conversation},"seq":1}}"#);
    assert_eq!(error_for(alice, &raw).await.0, "unknown_conversation");
    let raw = format!(r#"{{"type":"ack","id":"a","conversation":{conversation},"seq":1}}"#);
    assert_eq!(
        error_for(alice, &raw).await,
        ("unknown_conversation".into(), Some("a".into()))
    );

    // Nothing was stored by any refused frame: the next message is seq 1 for
    // alice→bob, and seq 2 in bob→carol.
    let ok = alice.send_text("bob", "good", "finally").await.unwrap();
    assert!(matches!(ok, ServerFrame::Sent { seq: 1, .. }), "{ok:?}");
    let ok = bob.send_text("carol", "b2", "still private").await.unwrap();
    assert!(matches!(ok, ServerFrame::Sent { seq: 2, .. }), "{ok:?}");
}

async fn a_reused_client_msg_id_is_refused_and_a_retry_is_one(
    alice: &mut Connection,
    bob: &mut Connection,
) {
    // A client_msg_id reused for another text is refused, not answered as a
    // retry of the first (which would silently drop the second message); a
    // true retry still is one.
    let raw = r#"{"type":"send","id":"reuse","to":"bob","client_msg_id":"good","text":"another"}"#;
    assert_eq!(
        error_for(alice, raw).await,
        ("client_msg_id_reused".into(), Some("reuse".into()))
    );
    let retry = alice.send_text("bob", "good", "finally").await.unwrap();
    assert!(
        matches!(
            retry,
            ServerFrame::Sent {
                seq: 1,
                duplicate: true,
                ..
            }
        ),
        "{retry:?}"
    );
    let frames = queued(bob, 1).await;
    assert_eq!(texts(&frames), ["finally"]);
}

async fn raw_socket(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(server.api.ws_url())
        .await
        .unwrap()
        .0
}

/// A raw WebSocket that has sent `auth` with `token`, and the first frame
/// the server answered.
async fn raw_authenticated(
    server: &TestServer,
    token: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
) {
    let mut socket = raw_socket(server).await;
    let auth = format!(r#"{{"type":"auth","token":"{token}"}}"#);
    socket.send(Message::text(auth)).await.unwrap();
    let ready = socket.next().await.unwrap().unwrap();
    (socket, ready)
}

/// Reads until the close frame and returns its code and reason.
async fn close_of(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (u16, String) {
    loop {
        match tokio::time::timeout(PROMPTLY, socket.next())
            .await
            .expect("closed promptly")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_frame_must_authenticate_in_time() {
    // Goal: silence → 4001; a non-auth frame or bad token → error + 4002.
    let server = TestServer::start_with(|config| config.limits.auth_timeout_ms = 1_500).await;
    let mut silent = raw_socket(&server).await;
    assert_eq!(close_of(&mut silent).await, (4001, "auth_timeout".into()));

    let mut eager = raw_socket(&server).await;
    eager
        .send(Message::text(r#"{"type":"ping","id":"p"}"#))
        .await
        .unwrap();
    assert_eq!(close_of(&mut eager).await, (4002, "auth_failed".into()));

    let bad = Connection::connect(&server.api.ws_url(), "0000").await;
    assert_eq!(refused_code(bad.map(|_| ())), "token_invalid");

    // Pinging as fast as it can, never authenticating, does not keep a
    // connection past the deadline (the server reads frames before it
    // looks at the deadline).
    let (mut pings, mut replies) = raw_socket(&server).await.split();
    // Pings go out many to a write, so the server nearly always has one
    // waiting when it looks at the socket.
    let pinger = tokio::spawn(async move {
        loop {
            for _ in 0..64 {
                if pings.feed(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            if pings.flush().await.is_err() {
                return;
            }
        }
    });
    // Pongs keep arriving while it stays open: bound the whole wait. The
    // server closing on pings it has not read may reset the connection
    // before its close frame is read; a close frame that does arrive must
    // say why.
    let closed = tokio::time::timeout(PROMPTLY, async {
        loop {
            match replies.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    break Some((u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => break None,
            }
        }
    })
    .await
    .expect("pings do not keep an unauthenticated connection open");
    if let Some(closed) = closed {
        assert_eq!(closed, (4001, "auth_timeout".into()));
    }
    pinger.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_1009() {
    // Goal: binary frames get bad_frame and the socket survives; a frame
    // beyond limits.frame_bytes_max closes the socket with 1009.
    let server = TestServer::start_with(|config| config.limits.frame_bytes_max = 4096).await;
    let token = server.user("alice").await;
    let (mut socket, ready) = raw_authenticated(&server, &token).await;
    assert!(ready.to_text().unwrap().contains("\"ready\""));
    // A binary frame is refused but the connection stays usable.
    socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let refused = socket.next().await.unwrap().unwrap();
    assert!(
        refused.to_text().unwrap().contains("\"bad_frame\""),
        "{refused:?}"
    );
    socket
        .send(Message::text(r#"{"type":"ping","id":"alive"}"#))
        .await
        .unwrap();
    let pong = socket.next().await.unwrap().unwrap();
    assert!(pong.to_text().unwrap().contains("\"pong\""), "{pong:?}");
    let huge = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(10_000));
    socket.send(Message::text(huge)).await.unwrap();
    assert_eq!(close_of(&mut socket).await.0, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    // Goal: invalid UTF-8 in a text frame ends the connection with the
    // standard close 1007 and a reason, not a dropped socket (1006).
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::start().await;
    let token = server.user("alice").await;
    let (mut socket, ready) = raw_authenticated(&server, &token).await;
    assert!(ready.to_text().unwrap().contains("\"ready\""));
    let invalid = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    socket.send(Message::Frame(invalid)).await.unwrap();
    assert_eq!(close_of(&mut socket).await, (1007, "invalid_utf8".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refusals_have_codes_and_change_nothing() {
    // Goal: each REST refusal returns its status and code; state is unchanged.
    let server = TestServer::start_with(|config| {
        config.limits.devices_per_account_max = 2;
        config.limits.login_replaces_least_recent_device = false;
        config.limits.login_failures_max = 3;
    })
    .await;
    let token = registration_and_login_refusals(&server.api).await;
    malformed_requests_are_refused(&server.url(), &token).await;
    users_are_looked_up_only_by_someone_logged_in(&server.url(), &token).await;
    a_bad_privacy_value_changes_nothing(&server, &token).await;
}

/// Refused registrations and logins change nothing; returns the token of
/// alice's first device.
async fn registration_and_login_refusals(api: &Api) -> String {
    assert_eq!(
        refused_code(api.register("ab", PASSWORD).await),
        "invalid_username"
    );
    assert_eq!(
        refused_code(api.register("Alice", PASSWORD).await),
        "invalid_username"
    );
    assert_eq!(
        refused_code(api.register("alice", "short").await),
        "invalid_password"
    );
    api.register("alice", PASSWORD).await.unwrap();
    assert_eq!(
        refused_code(api.register("alice", "another password").await),
        "username_taken"
    );
    // The original password still works: the refused register changed nothing.
    let first = api.login("alice", PASSWORD, "one").await.unwrap();
    api.login("alice", PASSWORD, "two").await.unwrap();
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "three").await),
        "too_many_devices"
    );
    assert_eq!(api.devices(&first.token).await.unwrap().devices.len(), 2);

    assert_eq!(
        refused_code(api.login("alice", "wrong password", "x").await),
        "wrong_credentials"
    );
    assert_eq!(
        refused_code(api.login("ghost", "wrong password", "x").await),
        "wrong_credentials"
    );
    api.login("alice", "wrong password", "x").await.unwrap_err();
    // Three failures from this IP: even the right password is now refused.
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "x").await),
        "rate_limited"
    );
    first.token
}

/// Missing or bad tokens, bodies that are not the request, and a device id
/// that is not one.
async fn malformed_requests_are_refused(url: &str, token: &str) {
    let http = reqwest::Client::new();
    let response = http.get(format!("{url}/v1/devices")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_authenticated");
    let response = http
        .get(format!("{url}/v1/devices"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = post_accounts(&http, url, "{\"username\": 5}").await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field");
    let response = post_accounts(&http, url, "{oops").await;
    assert_eq!(response.status(), 400);
    let response = http
        .delete(format!("{url}/v1/devices/abc"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// A POST of `body`, raw JSON, to /v1/accounts.
async fn post_accounts(http: &reqwest::Client, url: &str, body: &'static str) -> reqwest::Response {
    http.post(format!("{url}/v1/accounts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn users_are_looked_up_only_by_someone_logged_in(url: &str, token: &str) {
    let http = reqwest::Client::new();
    // Whether someone exists, asked before a chat is opened with them.
    for (query, status, expected) in [
        (
            "username=alice",
            200,
            serde_json::json!({"users": [{"username": "alice"}]}),
        ),
        ("username=nosuchuser", 200, serde_json::json!({"users": []})),
        (
            "username=Not%20A%20Name",
            400,
            serde_json::json!("invalid_username"),
        ),
        ("", 400, serde_json::json!("invalid_field")),
    ] {
        let response = http
            .get(format!("{url}/v1/users?{query}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        if status == 200 {
            assert_eq!(body, expected, "{query}");
        } else {
            assert_eq!(body["error"]["code"], expected, "{query}");
        }
    }
    let response = http
        .get(format!("{url}/v1/users?username=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "only for someone logged in");
}

async fn a_bad_privacy_value_changes_nothing(server: &TestServer, token: &str) {
    let api = &server.api;
    let http = reqwest::Client::new();
    let url = server.url();
    // A value of the wrong type is a field error here as everywhere, and
    // the setting stays as it was.
    let before = api.privacy(token).await.unwrap();
    for bad in [
        r#"{"presence": null}"#,
        r#"{"presence": 5}"#,
        r#"{"presence": "x"}"#,
    ] {
        let response = http
            .put(format!("{url}/v1/privacy"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_field", "{bad}");
    }
    assert_eq!(api.privacy(token).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints_answer() {
    // Goal: /healthz and /readyz are 200 while serving; /metrics is Prometheus text.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let mut alice = server.connect(&alice).await;
    alice.send_text("bob", "m", "count me").await.unwrap();
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    server.app.sweep_now().await.unwrap();
    let metrics = get_text(&http, format!("{}/metrics", server.url())).await;
    // Counted by the sweep: the seqs above each device's position. Bob is
    // offline with one event above his; alice's sending device has not
    // acked either, and the model counts her own event above her position
    // too (it is never sent to her): 2.
    assert!(metrics.contains("missive_events_waiting 2"), "{metrics}");
    // Every metric the code records is there from the start with its HELP
    // line, counters at 0 before anything happened (no slow consumer here).
    // The names are read from the sources, so a new metric is checked too.
    let recorded = recorded_metrics();
    assert!(recorded.len() >= 15, "{recorded:?}");
    for (kind, name) in &recorded {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line in /metrics:\n{metrics}"
        );
        if kind == "counter" {
            // Labelled counters too, with every label value they take.
            assert!(
                metrics
                    .lines()
                    .any(|line| line.starts_with(&format!("{name} "))
                        || line.starts_with(&format!("{name}{{"))),
                "{name} is not there before it first counts:\n{metrics}"
            );
        }
    }
    assert!(
        metrics.contains("missive_slow_consumer_closes_total 0"),
        "{metrics}"
    );
    // Operations per commit are counted in count buckets, not seconds.
    assert!(
        metrics.contains(r#"missive_store_batch_jobs_bucket{le="512"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_outrun_the_login_limit() {
    // Goal: attempts are counted before the password check, so 30 wrong
    // logins fired at once get at most `login_failures_max` verdicts; the
    // rest are rate_limited with a Retry-After.
    let server = TestServer::start_with(|config| config.limits.login_failures_max = 5).await;
    server.api.register("alice", PASSWORD).await.unwrap();
    let guesses = (0..30).map(|i| {
        let api = server.api.clone();
        tokio::spawn(async move { api.login("alice", &format!("guess {i:04}"), "x").await })
    });
    let mut n_wrong = 0;
    let mut n_limited = 0;
    for guess in guesses {
        match refused_code(guess.await.unwrap()).as_str() {
            "wrong_credentials" => n_wrong += 1,
            "rate_limited" => n_limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((n_wrong, n_limited), (5, 25));
    let response = reqwest::Client::new()
        .post(format!("{}/v1/sessions", server.url()))
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_per_address_are_limited() {
    // Goal: one client address can create at most registrations_per_ip_max
    // accounts per window; the refused one is not created.
    let server = TestServer::start_with(|config| config.limits.registrations_per_ip_max = 3).await;
    for name in ["u1", "u2", "u3"].map(|n| format!("user_{n}")) {
        server.api.register(&name, PASSWORD).await.unwrap();
    }
    assert_eq!(
        refused_code(server.api.register("user_u4", PASSWORD).await),
        "rate_limited"
    );
    assert_eq!(
        refused_code(server.api.login("user_u4", PASSWORD, "x").await),
        "wrong_credentials"
    );
}

/// `(kind, name)` of every `counter!`, `gauge!` and `histogram!` call
/// naming a `missive_` metric in the workspace's sources.
fn recorded_metrics() -> std::collections::BTreeSet<(String, String)> {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = std::collections::BTreeSet::new();
    let mut dirs = vec![crates];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for kind in ["counter", "gauge", "histogram"] {
                    let call = format!("metrics::{kind}!(\"");
                    for (at, _) in source.match_indices(&call) {
                        let rest = &source[at + call.len()..];
                        let name = &rest[..rest.find('"').unwrap()];
                        if name.starts_with("missive_") {
                            found.insert((kind.to_string(), name.to_string()));
                        }
                    }
                }
            }
        }
    }
    found
}
