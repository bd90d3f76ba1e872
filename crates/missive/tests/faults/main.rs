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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_on_one_node_loses_nothing() {
    // Goal: DESIGN.md's promise through repeated crashes: every text that
    // got `sent` is delivered to every other device of its conversation,
    // none stored twice, in seq order, over WebSocket and long-poll alike.
    // Method: 5 users (10 devices, half on each transport) in 1:1 and group
    // conversations send continuously; the node is SIGKILLed and restarted
    // on the same data directory once every 60 new acknowledgements.
    let _serial = ONE_AT_A_TIME.lock().await;
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
    let report = check("kill -9 loop, one node", workload, &devices, &nodes).await;
    assert!(report.reconnects > 0, "the kills were felt");
    drop(server);
    assert_eq!(undelivered(data_dir.path()), 0, "every device drained");
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

/// [`UNDELIVERED`] in a PostgreSQL store.
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

async fn postgres_undelivered(url: &str) -> i64 {
    cluster::query(url, UNDELIVERED, &[]).await[0].get(0)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_on_three_nodes_loses_nothing() {
    // Goal: the same promise in a cluster: a node killed mid-traffic loses
    // nothing, its clients carry on through the other nodes, and when it
    // comes back (as a new node) everything still flows.
    // Method: 3 nodes on PostgreSQL and NATS, devices spread over them;
    // each cycle SIGKILLs a random node after 60 new acknowledgements and
    // restarts it after 30 more.
    let _serial = ONE_AT_A_TIME.lock().await;
    if !cluster::services_available().await {
        return;
    }
    let db = cluster::Database::create().await;
    let (mut cluster, devices, nodes) = cluster_with_population(&db.url(), cluster::NATS).await;
    let workload = Workload::start(&devices, &nodes, PACE);
    let mut dice = Dice::from_clock();
    for _ in 0..cycles(3) {
        workload.progress(60, STALL).await;
        let victim = dice.below(3);
        nodes.set(victim, None);
        cluster.kill_9(victim);
        workload.progress(30, STALL).await;
        nodes.set(victim, Some(cluster.restart(victim)));
    }
    workload.progress(60, STALL).await;
    let report = check("kill -9 loop, three nodes", workload, &devices, &nodes).await;
    assert!(report.reconnects > 0, "the kills were felt");
    every_device_drained(cluster, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_and_postgres_crash_lose_nothing() {
    // Goal: the backends failing under a running cluster: NATS restarted
    // (the nodes lose every subscription) and PostgreSQL crashed and
    // restarted (every connection of every pool breaks; sends meanwhile
    // are refused as `unavailable` and retried by the clients with the
    // same client_msg_id) lose nothing and store nothing twice.
    // Method: 3 nodes on a private nats-server and a private PostgreSQL;
    // the workload runs through a NATS restart, then through a PostgreSQL
    // crash (`pg_ctl stop -m immediate`) and restart.
    let _serial = ONE_AT_A_TIME.lock().await;
    if !cluster::services_available().await {
        return;
    }
    let Some(mut postgres) = cluster::PrivatePostgres::start() else {
        return;
    };
    let mut nats = cluster::PrivateNats::start();
    let store_url = postgres.url("postgres");
    let (cluster, devices, nodes) = cluster_with_population(&store_url, &nats.url()).await;
    let workload = Workload::start(&devices, &nodes, PACE);
    for _ in 0..cycles(2) {
        workload.progress(60, STALL).await;
        nats.kill();
        workload.progress(30, STALL).await;
        nats.restart();
        workload.progress(60, STALL).await;
        postgres.crash();
        postgres.restart();
    }
    workload.progress(60, STALL).await;
    check("NATS restart, PostgreSQL crash", workload, &devices, &nodes).await;
    assert_eq!(
        postgres_undelivered(&store_url).await,
        0,
        "every device drained"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_losing_a_server_and_a_node_loses_nothing() {
    // Goal: on a real NATS cluster (three nats-servers joined by routes,
    // each missive node on a different one), a NATS server dying moves the
    // node on it to another server of the cluster; that node then dying
    // and starting again while its first NATS server is still down starts
    // on the next one in its `bus.url`; its clients move to the other
    // nodes and back; nothing acknowledged is lost, stored twice or
    // delivered out of order.
    // Method: node i lists the three servers, server i first. Each cycle,
    // after 60 new acknowledgements: kill NATS server i, wait until node i
    // shows on a surviving server, SIGKILL node i and start it again (its
    // first server still down); after 30 more, restart NATS server i.
    let _serial = ONE_AT_A_TIME.lock().await;
    if !cluster::services_available().await {
        return;
    }
    let mut nats = cluster::PrivateNats::cluster(3);
    let bus_urls: Vec<String> = (0..3)
        .map(|node| {
            (0..3)
                .map(|k| nats[(node + k) % 3].url())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let db = cluster::Database::create().await;
    let mut cluster = cluster::Cluster::start_on_buses(&db.url(), &bus_urls, WORKLOAD_ENV);
    let name = |node: usize| format!("missive node-{node}");
    for (node, server) in nats.iter().enumerate() {
        server.wait_for_client(&name(node));
    }
    let devices = population(&cluster.api(0), 5, 3).await;
    let nodes = Nodes::new(cluster.urls.clone());
    let workload = Workload::start(&devices, &nodes, PACE);
    for cycle in 0..cycles(2) {
        workload.progress(60, STALL).await;
        let node = cycle % 3;
        nats[node].kill();
        let survivors = [(node + 1) % 3, (node + 2) % 3];
        cluster::wait_for_client_on(&nats, &survivors, &name(node));
        nodes.set(node, None);
        cluster.kill_9(node);
        // Starts only if it moves down its list: its first server is down.
        nodes.set(node, Some(cluster.restart(node)));
        cluster::wait_for_client_on(&nats, &survivors, &name(node));
        workload.progress(30, STALL).await;
        nats[node].restart();
        for server in &nats {
            server.wait_for_routes(2);
        }
    }
    workload.progress(60, STALL).await;
    let report = check(
        "NATS cluster: a server and a node killed",
        workload,
        &devices,
        &nodes,
    )
    .await;
    assert!(report.reconnects > 0, "the node kills were felt");
    every_device_drained(cluster, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_loses_nothing() {
    // Goal: a node that loses NATS but keeps its clients and the store
    // (a partition between it and the bus) still delivers everything: its
    // own clients' sends are stored, and what the other nodes store for
    // its clients reaches them by the periodic re-check, then by resync.
    // Method: node 0 reaches NATS through a proxy; the proxy cuts it off
    // for 60 acknowledgements of traffic, then lets it back.
    let _serial = ONE_AT_A_TIME.lock().await;
    if !cluster::services_available().await {
        return;
    }
    let proxy = cluster::CuttableProxy::start("127.0.0.1:4222").await;
    let db = cluster::Database::create().await;
    // Node 0 through the proxy; nodes 1 and 2 direct.
    let mut cluster = cluster::Cluster::start(
        1,
        &db.url(),
        &format!("nats://{}", proxy.address),
        WORKLOAD_ENV,
    );
    cluster.env.retain(|(key, _)| key != "MISSIVE_BUS__URL");
    cluster
        .env
        .push(("MISSIVE_BUS__URL".into(), cluster::NATS.into()));
    cluster.add_node();
    cluster.add_node();
    let devices = population(&cluster.api(0), 5, 3).await;
    let nodes = Nodes::new(cluster.urls.clone());
    let workload = Workload::start(&devices, &nodes, PACE);
    for _ in 0..cycles(2) {
        workload.progress(60, STALL).await;
        proxy.cut();
        workload.progress(60, STALL).await;
        proxy.restore();
    }
    workload.progress(60, STALL).await;
    check("node cut from NATS", workload, &devices, &nodes).await;
    every_device_drained(cluster, db).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_and_loses_nothing() {
    // Goal: when the embedded store's disk fills up, sends fail with a
    // typed, retryable error, nothing already `sent` is lost, and service
    // resumes on its own once space returns.
    // Method: the data directory on a 16 MiB tmpfs; the workload runs; a
    // filler file takes every free byte; a probe send must be refused
    // with `unavailable`; the filler is removed; the workload must make
    // progress again, and afterwards everything checks out.
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(disk) = SmallDisk::mount("16m") else {
        return;
    };
    let data_dir = disk.path().join("data");
    let mut server = ServerProcess::start_with_env(&data_dir, WORKLOAD_ENV);
    let api = Api::new(&server.url);
    let devices = population(&api, 5, 1).await;
    // The probe writes to a user outside the workload, which the checker
    // would otherwise count as unexpected.
    api.register("sink", PASSWORD).await.expect("register");
    let probe_token = {
        api.register("probe", PASSWORD).await.expect("register");
        api.login("probe", PASSWORD, "p")
            .await
            .expect("login")
            .token
    };
    let nodes = Nodes::new(vec![server.url.clone()]);
    let workload = Workload::start(&devices, &nodes, PACE);
    workload.progress(60, STALL).await;
    disk.fill();
    let mut probe = Connection::connect(&api.ws_url(), &probe_token)
        .await
        .expect("connect");
    // Each refused send must change nothing; the WAL may still hold room
    // for a few, so send until refused.
    let mut refused = None;
    for i in 0..200 {
        match probe.send_text("sink", &format!("p{i}"), "probe").await {
            Ok(_) => continue,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses sends");
    assert_eq!(
        refused.code(),
        Some(missive_proto::ErrorCode::Unavailable),
        "{refused:?}"
    );
    // The workload's own sends and acks meet the full disk too.
    workload.refusals(20, STALL).await;
    disk.free();
    workload.progress(60, STALL).await;
    let report = check("disk full", workload, &devices, &nodes).await;
    assert!(report.refused >= 20);
    drop(probe);
    server.kill_9();
    assert_eq!(undelivered(&data_dir), 0, "every device drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_moved_to_a_cluster_mid_workload_loses_nothing() {
    // Goal (issue 21): the step from one binary to a cluster, in the
    // middle of traffic: every text that got `sent` from the embedded
    // server is delivered exactly once (redeliveries of what was not
    // acked aside) by the cluster node that takes over, in order, with no
    // seq skipped, and what the devices send afterwards too; a migration
    // killed halfway resumes from where it stopped.
    // Method: the workload runs on an embedded server, which is killed
    // (-9); `missive migrate` copies one row per transaction and is killed
    // once some of the messages have committed; a second run finishes;
    // a cluster node (PostgreSQL + NATS) starts on the result and the
    // devices reconnect to it; the workload goes on, then the checker.
    let _serial = ONE_AT_A_TIME.lock().await;
    if !cluster::services_available().await {
        return;
    }
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start_with_env(data_dir.path(), WORKLOAD_ENV);
    let devices = population(&Api::new(&server.url), 5, 1).await;
    let nodes = Nodes::new(vec![server.url.clone()]);
    let workload = Workload::start(&devices, &nodes, PACE);
    workload.progress(300, STALL).await;
    nodes.set(0, None);
    server.kill_9();

    let db = cluster::Database::create().await;
    let (from, to) = (data_dir.path().to_owned(), db.url());
    let migrate = move |extra: &[&str]| {
        let mut command = server_command();
        command
            .arg("migrate")
            .arg("--from")
            .arg(&from)
            .arg("--to")
            .arg(&to)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    };
    let mut first = migrate(&["--batch-rows", "1"])
        .spawn()
        .expect("spawn missive migrate");
    let deadline = std::time::Instant::now() + STALL;
    loop {
        if messages_migrated(&db.url()).await > 50 {
            break;
        }
        assert!(
            first.try_wait().expect("migrate status").is_none(),
            "the first run ended before it could be interrupted"
        );
        // Each look opens a connection of its own, which paces the loop.
        assert!(
            std::time::Instant::now() < deadline,
            "the migration stalled"
        );
    }
    first.kill().expect("kill migrate");
    first.wait().expect("reap migrate");
    // A node does not serve the half-filled database.
    let node_dir = tempfile::tempdir().expect("tempdir");
    let early = server_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(node_dir.path())
        .env("MISSIVE_STORE__URL", db.url())
        .env("MISSIVE_BUS__URL", cluster::NATS)
        .output()
        .expect("run missive serve");
    assert!(!early.status.success());
    let refusal = String::from_utf8_lossy(&early.stderr);
    assert!(refusal.contains("has not finished"), "{refusal}");
    let second = tokio::task::spawn_blocking(move || migrate(&[]).output())
        .await
        .expect("migrate thread")
        .expect("run missive migrate");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&second.stdout).expect("migrate summary");
    println!("moved to a cluster: {summary}");
    assert_eq!(summary["resumed"], true);
    for (table, counts) in summary["tables"].as_object().expect("tables") {
        assert_eq!(counts["source"], counts["target"], "{table}");
    }

    let cluster = cluster::Cluster::start(1, &db.url(), cluster::NATS, WORKLOAD_ENV);
    nodes.set(0, Some(cluster.urls[0].clone()));
    workload.progress(200, STALL).await;
    check("moved to a cluster", workload, &devices, &nodes).await;
    every_device_drained(cluster, db).await;
}

/// Messages a migration into `url` has committed so far (0 before its
/// progress table exists).
async fn messages_migrated(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    let driver = tokio::spawn(connection);
    let copied = client
        .query_one(
            "SELECT copied FROM missive_migration WHERE step = 'messages'",
            &[],
        )
        .await
        .map_or(0, |row| row.get(0));
    drop(client);
    let _ = driver.await;
    copied
}

/// How many members the big group has: 500 in CI, more by hand
/// (`FAULT_GROUP_MEMBERS`); every member device is online.
fn group_members() -> usize {
    std::env::var("FAULT_GROUP_MEMBERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(500)
}

/// `n` users (`member0`…) with one device each, every `long_poll_every`th
/// on long-poll, all in one group; members 0 and 1 send to it.
async fn group_population(api: &Api, n: usize, long_poll_every: usize) -> Vec<Device> {
    use futures_util::StreamExt;
    let logins: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let username = format!("member{i}");
            api.register(&username, PASSWORD).await.expect("register");
            let login = api.login(&username, PASSWORD, "d").await.expect("login");
            (i, username, login)
        })
        .buffered(4)
        .collect()
        .await;
    let members: Vec<&str> = logins[1..]
        .iter()
        .map(|(_, name, _)| name.as_str())
        .collect();
    let group = api
        .create_group(&logins[0].2.token, "everyone", &members)
        .await
        .expect("create the group")
        .conversation;
    let labels: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    logins
        .into_iter()
        .map(|(i, username, login)| Device {
            label: labels[i].clone(),
            username,
            token: login.token,
            device_id: login.device_id,
            transport: if i % long_poll_every == long_poll_every - 1 {
                Transport::LongPoll
            } else {
                Transport::WebSocket
            },
            home: 0,
            sends: (i < 2).then(|| {
                let others = labels.iter().filter(|l| **l != labels[i]).cloned();
                (Target::Conversation(group), others.collect())
            }),
            offline: false,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_fanout_to_a_500_member_group_and_the_reconnect_storm_lose_nothing() {
    // Goal: a crash while a text is being pushed to hundreds of members
    // leaves every member device with every text exactly once after dedup
    // (a committed text is one row every member reads above its position;
    // nothing is written per recipient that a crash could cut short); and
    // when all of them reconnect at once, the server takes the storm and
    // loses nothing.
    // Method: 500 members, all online (every fifth over long-poll); two of
    // them send to the group; the node is SIGKILLed after 10 texts while
    // pushes are under way and restarted; the time until every device is
    // connected again gives the reconnect rate.
    let _serial = ONE_AT_A_TIME.lock().await;
    let n = group_members();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut env = WORKLOAD_ENV.to_vec();
    let group_max = (n + 1).to_string();
    env.push(("MISSIVE_LIMITS__GROUP_MEMBERS_MAX", &group_max));
    let mut server = ServerProcess::start_with_env(data_dir.path(), &env);
    let started = std::time::Instant::now();
    let devices = group_population(&Api::new(&server.url), n, 5).await;
    println!(
        "{n} members registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let nodes = Nodes::new(vec![server.url.clone()]);
    let workload = Workload::start(&devices, &nodes, Duration::from_millis(50));
    workload.connects(n, STALL).await;
    for _ in 0..cycles(2) {
        workload.progress(10, STALL).await;
        nodes.set(0, None);
        server.kill_9();
        server = ServerProcess::start_with_env(data_dir.path(), &env);
        nodes.set(0, Some(server.url.clone()));
        let took = workload.connects(n, STALL).await;
        println!(
            "reconnect storm: {n} devices back in {:.2} s ({:.0} connections/s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    }
    workload.progress(10, STALL).await;
    let report = check("kill -9 mid-fanout, big group", workload, &devices, &nodes).await;
    assert!(report.reconnects >= n, "every device lost its connection");
    drop(server);
    assert_eq!(undelivered(data_dir.path()), 0, "every device drained");
}

/// libfaketime's preload library, if installed (Debian package faketime).
fn libfaketime() -> Option<&'static str> {
    const PATHS: &[&str] = &[
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ];
    let found = PATHS
        .iter()
        .copied()
        .find(|path| std::path::Path::new(path).exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs libfaketime (.ci/run installs the faketime package)"
        );
        eprintln!("skipping: libfaketime is not installed (apt-get install faketime)");
    }
    found
}

/// Each node's lease end as the store records it.
async fn leases(url: &str) -> std::collections::BTreeMap<String, i64> {
    cluster::query(url, "SELECT id, lease_until_ms FROM nodes", &[])
        .await
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_clocks_are_minutes_off_reap_no_one_and_lose_nothing() {
    // Goal: order comes from seq alone, and leases from the store's clock:
    // a node five minutes ahead must not take its peers for dead (it would
    // reap their sessions and announce their users offline), nor must one
    // five minutes behind be taken for dead by them; traffic through all of
    // them checks out; and message times never fall within a conversation
    // and stay near the true time (each node stamps the store's time).
    // Method: three nodes, node 1 under libfaketime five minutes behind,
    // node 2 five minutes ahead (wall clock only; timers keep real time).
    // A watcher on node 0 follows the presence of every workload user,
    // each of whom keeps a WebSocket open throughout. The workload runs
    // until every node has renewed its lease for three lease periods
    // (read from the store); no user may have been shown offline.
    let _serial = ONE_AT_A_TIME.lock().await;
    if !cluster::services_available().await {
        return;
    }
    let Some(faketime) = libfaketime() else {
        return;
    };
    let db = cluster::Database::create().await;
    let mut cluster = cluster::Cluster::start(1, &db.url(), cluster::NATS, WORKLOAD_ENV);
    let base = cluster.env.clone();
    for skew in ["-5m", "+5m"] {
        cluster.env = base.clone();
        cluster.env.extend([
            ("LD_PRELOAD".to_owned(), faketime.to_owned()),
            ("FAKETIME".to_owned(), skew.to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ]);
        cluster.add_node();
    }
    cluster.env = base;
    let api = cluster.api(0);
    let devices = population(&api, 5, 3).await;
    api.register("watcher", PASSWORD).await.expect("register");
    let watcher_token = api
        .login("watcher", PASSWORD, "w")
        .await
        .expect("login")
        .token;
    let nodes = Nodes::new(cluster.urls.clone());
    let began_ms = missive_core::Clock::now_ms(&missive_core::SystemClock);
    let workload = Workload::start(&devices, &nodes, PACE);
    workload.progress(30, STALL).await;

    let users: Vec<String> = (0..5).map(|user| format!("user{user}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut watcher = Connection::connect(&api.ws_url(), &watcher_token)
        .await
        .expect("connect");
    for frame in watcher.subscribe_presence(&users).await.expect("subscribe") {
        assert!(
            matches!(
                frame,
                missive_proto::ServerFrame::Presence { online: true, .. }
            ),
            "{frame:?}"
        );
    }
    let lease_ms = cluster::LEASE_MS as i64;
    let first = leases(&db.url()).await;
    assert_eq!(first.len(), 3, "three nodes hold leases: {first:?}");
    let deadline = std::time::Instant::now() + STALL;
    loop {
        // Presence frames that arrived meanwhile: none may say offline.
        // A closed watcher (its node reaped, say) must fail, not pass.
        loop {
            match watcher.next_frame(Duration::from_millis(200)).await {
                Ok(missive_proto::ServerFrame::Presence { user, online, .. }) => {
                    assert!(online, "{user} was shown offline while connected");
                }
                Ok(_) => {}
                Err(missive_client::ClientError::Timeout) => break,
                Err(err) => panic!("the watcher lost its connection: {err:?}"),
            }
        }
        let now = leases(&db.url()).await;
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            first.keys().collect::<Vec<_>>(),
            "no node was reaped"
        );
        if first
            .iter()
            .all(|(node, until)| now[node] >= until + 3 * lease_ms)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leases did not advance: {first:?} → {now:?}"
        );
    }
    // The checker saw no event stamped before the one ahead of it; and
    // every node stamped about the true time (its offset from the store's
    // clock applied), not minutes off it.
    let report = check("clock skew ±5 min", workload, &devices, &nodes).await;
    let ended_ms = missive_core::Clock::now_ms(&missive_core::SystemClock);
    let (earliest, latest) = report.stamped.expect("events were stamped");
    assert!(
        earliest >= began_ms - 2_000 && latest <= ended_ms + 2_000,
        "stamped {earliest}..={latest}, the run took {began_ms}..={ended_ms}"
    );
    drop(cluster);
    db.drop_now().await;
}

/// The process's peak resident set so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_with_memory_bounded_and_loses_nothing() {
    // Goal: DESIGN.md's backpressure rule: a client that stops reading is
    // disconnected, server memory does not grow with its backlog, and
    // every message waits for it above its position.
    // Method: a group of four; one member authenticates a raw WebSocket
    // and never reads, while two others flood the group with 1,000 texts
    // of 60 KB (60 MB for the silent reader, far beyond loopback socket
    // buffers) and a fourth reads normally, half of the devices over
    // long-poll. A stuck write is cut only after 20 s, so the silent
    // reader stays connected through the whole flood. The server's peak RSS may grow by at most 48 MiB over
    // its level before the flood (with unbounded outbound buffers it grew
    // by 50 MiB, and this test failed); the slow-consumer counter must
    // rise; then the silent member is drained and checked with everyone.
    let _serial = ONE_AT_A_TIME.lock().await;
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut env = WORKLOAD_ENV.to_vec();
    env.extend([("MISSIVE_LIMITS__WRITE_TIMEOUT_MS", "20000")]);
    let server = ServerProcess::start_with_env(data_dir.path(), &env);
    let api = Api::new(&server.url);
    // Every second device on long-poll; the fourth is the silent reader,
    // driven here rather than by the workload.
    let mut devices = group_population(&api, 4, 2).await;
    devices[3].offline = true;

    // The silent reader: authenticated, then never reads again.
    let (mut silent, _) = tokio_tungstenite::connect_async(api.ws_url())
        .await
        .expect("connect");
    {
        use futures_util::SinkExt;
        silent
            .send(tokio_tungstenite::tungstenite::Message::text(format!(
                r#"{{"type":"auth","token":"{}"}}"#,
                devices[3].token
            )))
            .await
            .expect("auth");
    }
    // The cut is observed as a client would: a watcher sees the silent
    // member (who has no other connection) go offline. The server counts
    // the slow consumer before it announces that. The watcher is in no
    // conversation, so the flood does not reach it.
    api.register("watcher", PASSWORD).await.expect("register");
    let watcher_token = api
        .login("watcher", PASSWORD, "w")
        .await
        .expect("login")
        .token;
    let mut watcher = Connection::connect(&api.ws_url(), &watcher_token)
        .await
        .expect("connect");
    let is_online = |frame: &missive_proto::ServerFrame| matches!(frame, missive_proto::ServerFrame::Presence { user, online, .. } if user == "member3" && *online);
    let mut online = watcher
        .subscribe_presence(&["member3"])
        .await
        .expect("subscribe")
        .iter()
        .any(is_online);
    while !online {
        let frame = watcher
            .next_frame(PROMPTLY)
            .await
            .expect("member3 comes online");
        online = is_online(&frame);
    }
    let pid = server.child.id();
    let before = peak_rss(pid);
    let nodes = Nodes::new(vec![server.url.clone()]);
    let workload = Workload::start_padded(&devices, &nodes, Duration::from_millis(1), 60 * 1024);
    workload.progress(1_000, Duration::from_secs(120)).await;
    loop {
        let frame = watcher
            .next_frame(STALL)
            .await
            .expect("the silent reader is cut off");
        if matches!(&frame, missive_proto::ServerFrame::Presence { user, online: false, .. } if user == "member3")
        {
            break;
        }
    }
    assert!(metric(&server.url, "missive_slow_consumer_closes_total").await >= 1.0);
    let grown = peak_rss(pid).saturating_sub(before);
    println!(
        "slow consumer: server peak RSS {:.1} MiB before the flood, +{:.1} MiB during it",
        before as f64 / 1048576.0,
        grown as f64 / 1048576.0
    );
    assert!(
        grown < 48 * 1024 * 1024,
        "server memory grew by {grown} bytes with one reader's backlog"
    );
    drop(silent);
    check("slow consumer", workload, &devices, &nodes).await;
}
