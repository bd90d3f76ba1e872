//! Send rate limits, black-box: a device or an account that sends faster
//! than allowed is refused with `rate_limited` and a retry-after, and a
//! refused send changes nothing.

mod common;

use common::*;
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
