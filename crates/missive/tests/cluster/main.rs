//! Cluster mode end to end: several `missive serve` processes sharing one
//! PostgreSQL database and one NATS server (and, for media, one S3 bucket),
//! driven over real sockets.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and NATS on
//! 127.0.0.1:4222; under CI their absence fails the tests, elsewhere they
//! skip with a printed reason. Each test gets its own database and its own
//! NATS subject prefix, so tests never see each other's traffic. Tests that
//! break a backend do it to a private one: a nats-server of their own, or a
//! TCP proxy in front of PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod delivery;
mod failures;
mod operations;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use missive_client::{ClientError, Connection};
use missive_proto::{ClientFrame, ErrorCode, ServerFrame, TypingState};

/// Two nodes (with `env`) on a fresh database; alice registered through
/// node 0 and bob through node 1: (database, cluster, alice's token, bob's
/// token).
async fn alice_and_bob_on_two_nodes(env: &[(&str, &str)]) -> (Database, Cluster, String, String) {
    let db = Database::create().await;
    let cluster = Cluster::start(2, &db.url(), NATS, env);
    let alice_token = cluster.user(0, "alice").await;
    let bob_token = cluster.user(1, "bob").await;
    (db, cluster, alice_token, bob_token)
}

/// Reads until a message with this text arrives; returns it.
async fn message_with_text(connection: &mut Connection, text: &str) -> ServerFrame {
    loop {
        let frame = connection.next_frame(PROMPTLY).await.expect("frame");
        if matches!(&frame, ServerFrame::Message { text: t, .. } if t == text) {
            return frame;
        }
    }
}

/// The next presence frame about `user`.
async fn presence_of(connection: &mut Connection, user: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connection.next_frame(left).await.expect("presence in time") {
            ServerFrame::Presence {
                user: u, online, ..
            } if u == user => return online,
            _ => {}
        }
    }
}
