//! The push webhook against a real local HTTP receiver: signature,
//! no content, coalescing, retries, and no push for live devices.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

const SECRET: &str = "a test secret of enough bytes";

/// One received webhook call.
#[derive(Clone, Debug)]
struct Call {
    body: serde_json::Value,
    signature_ok: bool,
    status: u16,
}

#[derive(Clone)]
struct Receiver {
    /// Answer 503 to this many calls first.
    failures_left: Arc<Mutex<u32>>,
    calls: mpsc::UnboundedSender<Call>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let signature_ok = headers
        .get("x-missive-signature")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let status = {
        let mut failures_left = receiver.failures_left.lock().unwrap();
        if *failures_left > 0 {
            *failures_left -= 1;
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        }
    };
    let _ = receiver.calls.send(Call {
        body: serde_json::from_slice(&body).unwrap_or_default(),
        signature_ok,
        status: status.as_u16(),
    });
    status
}

/// A receiver on a random port; calls arrive on the returned channel.
async fn start_receiver(failures: u32) -> (SocketAddr, mpsc::UnboundedReceiver<Call>) {
    let (calls, received) = mpsc::unbounded_channel();
    let receiver = Receiver {
        failures_left: Arc::new(Mutex::new(failures)),
        calls,
    };
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

async fn server_with_hook(addr: SocketAddr) -> TestServer {
    TestServer::start_with(|config| {
        config.push.webhook_url = Some(format!("http://{addr}/hook"));
        config.push.secret = SECRET.into();
        config.push.coalesce_secs = 3600;
        config.push.retry_backoff_ms = 10;
        config.push.retries_max = 3;
        // One call at a time, so call order follows send order and an
        // announcement for another device works as a barrier.
        config.push.calls_concurrent_max = 1;
    })
    .await
}

async fn next_call(received: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(PROMPTLY, received.recv())
        .await
        .expect("a webhook call")
        .expect("receiver alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_is_announced_once_signed_and_without_content() {
    // Goal: a message for an offline device triggers one signed call saying
    // how many events wait, with no message content; further messages
    // within the coalescing interval trigger none (checked with a barrier:
    // carol's later announcement arrives and bob has had no second call).
    let (addr, mut received) = start_receiver(0).await;
    let server = server_with_hook(addr).await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    server.user("carol").await;
    let mut alice_ws = server.connect(&alice).await;
    alice_ws
        .send_text("bob", "m1", "secret words")
        .await
        .unwrap();
    let call = next_call(&mut received).await;
    assert!(call.signature_ok, "{call:?}");
    assert_eq!(call.body["username"], "bob");
    assert_eq!(call.body["waiting"], 1);
    assert!(
        !call.body.to_string().contains("secret words"),
        "content leaked: {}",
        call.body
    );
    for i in 2..=5 {
        alice_ws
            .send_text("bob", &format!("m{i}"), "more")
            .await
            .unwrap();
    }
    alice_ws.send_text("carol", "c1", "barrier").await.unwrap();
    let call = next_call(&mut received).await;
    assert_eq!(
        call.body["username"], "carol",
        "bob was announced twice: {call:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_with_the_same_signed_body() {
    // Goal: 503s are retried (bounded, with backoff) until one succeeds; each
    // attempt carries the same body and a valid signature.
    let (addr, mut received) = start_receiver(2).await;
    let server = server_with_hook(addr).await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let mut alice_ws = server.connect(&alice).await;
    alice_ws.send_text("bob", "m1", "hi").await.unwrap();
    let attempts = [
        next_call(&mut received).await,
        next_call(&mut received).await,
        next_call(&mut received).await,
    ];
    let statuses: Vec<u16> = attempts.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [503, 503, 204]);
    assert!(
        attempts
            .iter()
            .all(|c| c.signature_ok && c.body == attempts[0].body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_device_is_not_announced() {
    // Goal: no webhook for a device with a live session (barrier: an
    // offline device's call arrives first and only).
    let (addr, mut received) = start_receiver(0).await;
    let server = server_with_hook(addr).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    let mut bob_ws = server.connect(&bob).await;
    let mut alice_ws = server.connect(&alice).await;
    alice_ws
        .send_text("bob", "m1", "you are online")
        .await
        .unwrap();
    assert_eq!(texts(&queued(&mut bob_ws, 1).await), ["you are online"]);
    alice_ws.send_text("carol", "c1", "barrier").await.unwrap();
    let call = next_call(&mut received).await;
    assert_eq!(call.body["username"], "carol", "{call:?}");
}
