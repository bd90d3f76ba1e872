//! Faults of a cluster: killed nodes, NATS and PostgreSQL restarts, a NATS
//! cluster losing a server, a node cut off from NATS, and clocks minutes
//! off.

use super::*;

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
    let cluster = skewed_cluster(&db, faketime);
    let api = cluster.api(0);
    let devices = population(&api, 5, 3).await;
    let watcher_token = watcher_token(&api).await;
    let nodes = Nodes::new(cluster.urls.clone());
    let began_ms = missive_core::Clock::now_ms(&missive_core::SystemClock);
    let workload = Workload::start(&devices, &nodes, PACE);
    workload.progress(30, STALL).await;
    let mut watcher = a_watcher_sees_everyone_online(&api, &watcher_token).await;
    no_node_is_reaped_and_no_one_shown_offline(&db, &mut watcher).await;
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

/// Node 0 on true time, node 1 five minutes behind, node 2 five minutes
/// ahead (wall clock only; timers keep real time).
fn skewed_cluster(db: &cluster::Database, faketime: &str) -> cluster::Cluster {
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
    cluster
}

/// A watcher on node 0 follows the presence of every workload user, all
/// online. Returns its connection.
async fn a_watcher_sees_everyone_online(api: &Api, watcher_token: &str) -> Connection {
    let users: Vec<String> = (0..5).map(|user| format!("user{user}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut watcher = Connection::connect(&api.ws_url(), watcher_token)
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
    watcher
}

/// Until every node has renewed its lease for three lease periods: no
/// node leaves the store's table and the watcher hears no one go offline.
async fn no_node_is_reaped_and_no_one_shown_offline(
    db: &cluster::Database,
    watcher: &mut Connection,
) {
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
}
