//! Faults of one embedded server: kill -9 loops, a full disk, and a move to
//! a cluster mid-workload.

use super::*;

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
    let first = migrate(&["--batch-rows", "1"])
        .spawn()
        .expect("spawn missive migrate");
    interrupt_once_some_messages_committed(first, &db).await;
    a_node_does_not_serve_a_half_filled_database(&db);
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

/// Kills the first migration run once more than 50 messages committed.
async fn interrupt_once_some_messages_committed(
    mut first: std::process::Child,
    db: &cluster::Database,
) {
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
}

/// A node does not serve the half-filled database.
fn a_node_does_not_serve_a_half_filled_database(db: &cluster::Database) {
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
