//! The fault suite: real `missive serve` processes on loopback, a workload
//! of WebSocket and long-poll devices sending numbered texts in 1:1 and
//! group conversations, faults injected while it runs, then every device
//! drained and the history classified by the checker (see checker.rs):
//! nothing acknowledged as `sent` may be lost, nothing stored twice, nothing
//! delivered out of order, no seq skipped.
//!
//! Each test is bounded (cycles, counts, and a deadline on every wait) and
//! stops by itself. `FAULT_CYCLES=20 cargo test -p missive --test faults`
//! runs the long version (docs/RELIABILITY.md).

#[path = "../common/mod.rs"]
mod common;

mod checker;
mod workload;

use std::time::Duration;

use common::*;
use missive_client::Api;
use workload::{Device, Nodes, Target, Transport, Workload};

/// How many fault cycles the loops run: a few in CI, more by hand.
fn cycles(ci_default: usize) -> usize {
    std::env::var("FAULT_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(ci_default)
}

/// Server settings for a workload: no send rate limits (the workload sends
/// faster than a person), room for many registrations from one address.
const WORKLOAD_ENV: &[(&str, &str)] = &[
    ("MISSIVE_LIMITS__SENDS_PER_SEC_PER_DEVICE", "0"),
    ("MISSIVE_LIMITS__SENDS_PER_SEC_PER_ACCOUNT", "0"),
    ("MISSIVE_LIMITS__REGISTRATIONS_PER_IP_MAX", "100000"),
];

/// One text per device per this interval while the workload runs.
const PACE: Duration = Duration::from_millis(10);
/// A workload that makes no progress for this long has stalled.
const STALL: Duration = Duration::from_secs(30);

/// `users` users with two devices each (one sends, one only reads), on
/// alternating transports and home nodes; one group of everyone. User 0
/// and 1 write to each other; the others alternate between the group and
/// 1:1 with the user before them.
async fn population(api: &Api, users: usize, nodes: usize) -> Vec<Device> {
    let mut devices = Vec::new();
    for user in 0..users {
        let username = format!("user{user}");
        api.register(&username, PASSWORD).await.expect("register");
        for slot in 0..2 {
            let login = api
                .login(&username, PASSWORD, &format!("d{slot}"))
                .await
                .expect("login");
            let transport = if (user + slot) % 2 == 0 {
                Transport::WebSocket
            } else {
                Transport::LongPoll
            };
            devices.push(Device {
                label: format!("u{user}.d{slot}"),
                username: username.clone(),
                token: login.token,
                device_id: login.device_id,
                transport,
                home: (user + slot) % nodes,
                sends: None,
            });
        }
    }
    let members: Vec<String> = (1..users).map(|user| format!("user{user}")).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let group = api
        .create_group(&devices[0].token, "everyone", &members)
        .await
        .expect("create group")
        .conversation;
    let labels_of = |users: &[&str], except: &str| -> Vec<String> {
        devices
            .iter()
            .filter(|d| users.contains(&d.username.as_str()) && d.label != except)
            .map(|d| d.label.clone())
            .collect()
    };
    let everyone: Vec<String> = (0..users).map(|user| format!("user{user}")).collect();
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    let mut plans = Vec::new();
    for user in 0..users {
        let sender = format!("u{user}.d0");
        let me = format!("user{user}");
        let plan = match user {
            0 => (
                Target::User("user1".into()),
                labels_of(&["user0", "user1"], &sender),
            ),
            1 => (
                Target::User("user0".into()),
                labels_of(&["user0", "user1"], &sender),
            ),
            _ if user % 2 == 0 => (Target::Conversation(group), labels_of(&everyone, &sender)),
            _ => {
                let peer = format!("user{}", user - 1);
                (
                    Target::User(peer.clone()),
                    labels_of(&[me.as_str(), peer.as_str()], &sender),
                )
            }
        };
        plans.push((sender, plan));
    }
    for (sender, plan) in plans {
        if let Some(device) = devices.iter_mut().find(|d| d.label == sender) {
            device.sends = Some(plan);
        }
    }
    devices
}

/// Drains every device, classifies the history, prints the figures and
/// fails on anything the delivery model forbids.
async fn check(name: &str, workload: Workload, devices: &[Device], nodes: &Nodes) {
    let history = workload.stop().await;
    workload::drain(devices, nodes, &history, Duration::from_secs(60)).await;
    let report = history.check();
    println!("{name}: {}", report.summary());
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_on_one_node_loses_nothing() {
    // Goal: DESIGN.md's promise through repeated crashes: every text that
    // got `sent` is delivered to every other device of its conversation,
    // none stored twice, in seq order, over WebSocket and long-poll alike.
    // Method: 5 users (10 devices, half on each transport) in 1:1 and group
    // conversations send continuously; the node is SIGKILLed and restarted
    // on the same data directory once every 60 new acknowledgements.
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start_with_env(data_dir.path(), WORKLOAD_ENV);
    let devices = population(&Api::new(&server.url), 5, 1).await;
    let nodes = Nodes::new(vec![server.url.clone()]);
    let workload = Workload::start(&devices, &nodes, PACE);
    for _ in 0..cycles(5) {
        workload.progress(60, STALL).await;
        nodes.set(0, None);
        server.kill_9();
        server = ServerProcess::start_with_env(data_dir.path(), WORKLOAD_ENV);
        nodes.set(0, Some(server.url.clone()));
    }
    workload.progress(60, STALL).await;
    check("kill -9 loop, one node", workload, &devices, &nodes).await;
    drop(server);
    assert_eq!(queue_rows(data_dir.path()), 0, "every queue drained");
}

/// Queue entries left in an embedded store (read after the server stops).
fn queue_rows(data_dir: &std::path::Path) -> i64 {
    let db = rusqlite::Connection::open(data_dir.join("missive.sqlite")).expect("open the store");
    db.query_row("SELECT count(*) FROM queue", [], |row| row.get(0))
        .expect("count queue rows")
}
