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
mod cluster_faults;
mod load;
mod one_node;
mod workload;

use std::time::Duration;

use common::cluster;
use common::*;
use missive_client::{Api, Connection};
use workload::{Device, Nodes, Target, Transport, Workload};

/// The scenarios run one at a time: each loads both cores, and a loaded
/// machine turns timing margins into flakes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    ("MISSIVE_LIMITS__CONNECTIONS_PER_IP_MAX", "100000"),
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
                offline: false,
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
async fn check(
    name: &str,
    workload: Workload,
    devices: &[Device],
    nodes: &Nodes,
) -> checker::Report {
    let history = workload.stop().await;
    let started = std::time::Instant::now();
    workload::drain(devices, nodes, &history, Duration::from_secs(60)).await;
    println!(
        "{name}: drained in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let report = history.check();
    println!("{name}: {}", report.summary());
    report.assert_clean();
    report
}

/// Stored events above some device's position (effective: its acked seq,
/// or its account's joined seq) that it did not send itself: what a device
/// still waits for. Zero once every device is drained, as the old queues
/// were empty; portable SQL for both stores.
const UNDELIVERED: &str = "SELECT count(*) FROM devices d
     JOIN members m ON m.account_id = d.account_id
     JOIN messages g ON g.conversation_id = m.conversation_id
     LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = m.conversation_id
     WHERE g.seq > m.joined_seq AND g.seq > COALESCE(p.seq, 0) AND g.sender_device <> d.id";

/// [`UNDELIVERED`] in an embedded store (read after the server stops).
fn undelivered(data_dir: &std::path::Path) -> i64 {
    let db = rusqlite::Connection::open(data_dir.join("missive.sqlite")).expect("open the store");
    db.query_row(UNDELIVERED, [], |row| row.get(0))
        .expect("count undelivered events")
}

/// A small deterministic generator for choosing victims; the seed is
/// printed so a failing run can be repeated.
struct Dice(u64);

impl Dice {
    fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64 | 1);
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(seed);
        println!("FAULT_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: usize) -> usize {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The end of a cluster scenario: nothing waits for any device; the
/// nodes stop and their database is dropped.
async fn every_device_drained(cluster: cluster::Cluster, db: cluster::Database) {
    assert_eq!(
        postgres_undelivered(&db.url()).await,
        0,
        "every device drained"
    );
    drop(cluster);
    db.drop_now().await;
}

/// [`UNDELIVERED`] in a PostgreSQL store.
async fn postgres_undelivered(url: &str) -> i64 {
    cluster::query(url, UNDELIVERED, &[]).await[0].get(0)
}

/// Registers `watcher`, an account in no conversation, and logs in its
/// one device; returns its token.
async fn watcher_token(api: &Api) -> String {
    api.register("watcher", PASSWORD).await.expect("register");
    api.login("watcher", PASSWORD, "w")
        .await
        .expect("login")
        .token
}

/// Three nodes on `store_url` and `bus_url` with the workload's settings,
/// the workload's population registered through node 0.
async fn cluster_with_population(
    store_url: &str,
    bus_url: &str,
) -> (cluster::Cluster, Vec<Device>, Nodes) {
    let cluster = cluster::Cluster::start(3, store_url, bus_url, WORKLOAD_ENV);
    let devices = population(&cluster.api(0), 5, 3).await;
    let nodes = Nodes::new(cluster.urls.clone());
    (cluster, devices, nodes)
}

/// A size-limited tmpfs mounted for the test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason printed) where the test may not mount;
    /// under CI, which runs as root with that right, it fails instead.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a tmpfs for the disk-full test"
            );
            eprintln!("skipping: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a filler file until the file system refuses: ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut filler =
            std::fs::File::create(self.path().join("filler")).expect("create the filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(err) = filler.write_all(&block) {
                assert_eq!(err.raw_os_error(), Some(28), "ENOSPC, got {err}");
                break;
            }
        }
        // The last bytes that fit, a block at a time, then byte by byte.
        while filler.write_all(&block[..512]).is_ok() {}
        while filler.write_all(&block[..1]).is_ok() {}
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}
