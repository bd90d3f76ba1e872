//! Failures of a node, of NATS and of the store, and the recheck that
//! catches up what was missed.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_its_users_go_offline() {
    // Goal: kill -9 of a node mid-traffic loses no message that got `sent`
    // and duplicates none after dedup; its clients carry on at another
    // node; watchers elsewhere see its users offline within the lease.
    // Method: dave (node 0, the victim) and bob (node 1) each send 60
    // messages to alice (node 0); carol (node 2) watches alice. Dave has
    // 40 sends in flight when node 0 is killed after 20 replies; he sends
    // every unconfirmed one again with the same client_msg_id through
    // node 2; alice reconnects to node 1.
    if !services_available().await {
        return;
    }
    let db = Database::create().await;
    let mut cluster = Cluster::start(3, &db.url(), NATS, &[]);
    let alice_token = cluster.user(0, "alice").await;
    let bob_token = cluster.user(1, "bob").await;
    let carol_token = cluster.user(2, "carol").await;
    let dave_token = cluster.user(0, "dave").await;
    let alice = cluster.connect(0, &alice_token).await;
    let mut carol = cluster.connect(2, &carol_token).await;
    let frames = carol.subscribe_presence(&["alice"]).await.unwrap();
    assert!(matches!(
        frames[0],
        ServerFrame::Presence { online: true, .. }
    ));

    let bob_sends = bob_sends_n_through_node_1(&cluster, bob_token);
    let (mut dave_confirmed, killed_at) =
        dave_pipelines_until_node_0_dies(&mut cluster, &dave_token).await;

    // Carol (node 2) sees alice offline once node 0's lease lapses.
    let bound = Duration::from_millis(LEASE_MS * 2) + PROMPTLY;
    assert!(!presence_of(&mut carol, "alice", bound).await);
    eprintln!(
        "alice shown offline {} ms after the kill (lease {LEASE_MS} ms)",
        killed_at.elapsed().as_millis()
    );

    let _dave = dave_carries_on_through_node_2(&cluster, &dave_token, &mut dave_confirmed).await;
    let bob_confirmed = bob_sends.await.unwrap();
    drop(alice);
    let _alice =
        alice_gets_each_message_once(&cluster, &alice_token, &bob_confirmed, &dave_confirmed).await;
    drop(cluster);
    db.drop_now().await;
}

/// Messages each of bob and dave sends to alice around the kill.
const N: usize = 60;

/// bob (node 1) sends N messages to alice; the task returns the ids of
/// the confirmed ones.
fn bob_sends_n_through_node_1(
    cluster: &Cluster,
    bob_token: String,
) -> tokio::task::JoinHandle<Vec<String>> {
    let bob_url = cluster.api(1).ws_url();
    tokio::spawn(async move {
        let mut bob = Connection::connect(&bob_url, &bob_token).await.unwrap();
        let mut confirmed = Vec::new();
        for i in 0..N {
            let sent = bob
                .send_text("alice", &format!("b{i}"), &format!("bob {i}"))
                .await
                .unwrap();
            confirmed.push(sent_seq(&sent).0);
        }
        confirmed
    })
}

/// Dave pipelines 40 sends and node 0 dies once 20 are confirmed, so
/// some are stored but unconfirmed, or not stored at all. Returns the
/// confirmed ones (client_msg_id to message id) and when node 0 died.
async fn dave_pipelines_until_node_0_dies(
    cluster: &mut Cluster,
    dave_token: &str,
) -> (HashMap<String, String>, Instant) {
    let mut dave = cluster.connect(0, dave_token).await;
    let mut dave_confirmed: HashMap<String, String> = HashMap::new();
    for i in 0..40 {
        dave.send_frame(&ClientFrame::Send {
            id: Some(format!("d{i}")),
            to: Some("alice".into()),
            conversation: None,
            client_msg_id: format!("d{i}"),
            text: format!("dave {i}"),
            reply_to: None,
            media: Vec::new(),
            encrypted: false,
        })
        .await
        .unwrap();
    }
    while dave_confirmed.len() < 20 {
        if let ServerFrame::Sent {
            id: Some(id),
            message_id,
            ..
        } = dave.next_frame(PROMPTLY).await.expect("sent")
        {
            dave_confirmed.insert(id, message_id);
        }
    }
    let killed_at = Instant::now();
    cluster.kill_9(0);
    drop(dave);
    (dave_confirmed, killed_at)
}

/// Dave carries on through node 2; returns his connection there.
async fn dave_carries_on_through_node_2(
    cluster: &Cluster,
    dave_token: &str,
    dave_confirmed: &mut HashMap<String, String>,
) -> Connection {
    // Dave carries on through node 2 and sends all N, with the same
    // client_msg_ids: a confirmed one must come back as the same message
    // (duplicate), an unconfirmed one is stored at most once.
    let mut dave = cluster.connect(2, dave_token).await;
    for i in 0..N {
        let cmid = format!("d{i}");
        let sent = dave
            .send_text("alice", &cmid, &format!("dave {i}"))
            .await
            .unwrap();
        let (message_id, _, duplicate) = sent_seq(&sent);
        if let Some(earlier) = dave_confirmed.get(&cmid) {
            assert!(
                duplicate && *earlier == message_id,
                "{cmid}: a retry of a confirmed send is the same message"
            );
        }
        dave_confirmed.insert(cmid, message_id);
    }
    dave
}

/// alice, back through node 1, gets every confirmed message once, in seq
/// order per conversation; returns her connection.
async fn alice_gets_each_message_once(
    cluster: &Cluster,
    alice_token: &str,
    bob_confirmed: &[String],
    dave_confirmed: &HashMap<String, String>,
) -> Connection {
    // Alice comes back through node 1 and gets each message once, in seq
    // order per conversation.
    let mut alice = cluster.connect(1, alice_token).await;
    let expected: HashSet<String> = bob_confirmed
        .iter()
        .chain(dave_confirmed.values())
        .cloned()
        .collect();
    assert_eq!(expected.len(), 2 * N);
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_seq: HashMap<i64, i64> = HashMap::new();
    while !expected.is_subset(&seen) {
        let frame = alice.next_frame(PROMPTLY).await.expect("message");
        if let ServerFrame::Message {
            message_id,
            conversation,
            seq,
            ..
        } = frame
        {
            // One session on a fresh node: each message exactly once.
            assert!(seen.insert(message_id.clone()), "{message_id} twice");
            let last = last_seq.entry(conversation).or_insert(0);
            assert_eq!(seq, *last + 1, "seq gap-free and in order");
            *last = seq;
            alice.ack(conversation, seq).await.unwrap();
        }
    }
    assert_nothing_queued(&mut alice).await;
    assert_eq!(seen, expected, "nothing unconfirmed appears either");
    alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_nats_restarts() {
    // Goal: a NATS restart mid-traffic loses nothing: while the bus is
    // down, `/readyz` says so and sends are still stored; deliveries to
    // another node's device resume (re-check and resync) without loss.
    // Method: a private nats-server; bob (node 1) sends 30 texts to alice
    // (node 0), NATS is killed, 30 more are sent, NATS restarts, and once
    // both nodes are ready again 30 more. The periodic re-check is set far
    // beyond the test, so only the resync after the reconnect can deliver
    // the texts sent during the outage, and only working subscriptions the
    // ones after it.
    if !services_available().await {
        return;
    }
    if std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "CI needs nats-server");
        eprintln!("skipping: no nats-server binary");
        return;
    }
    let mut nats = PrivateNats::start();
    let db = Database::create().await;
    let cluster = Cluster::start(
        2,
        &db.url(),
        &nats.url(),
        &[("MISSIVE_BUS__RECHECK_MS", "600000")],
    );
    let alice_token = cluster.user(0, "alice").await;
    let bob_token = cluster.user(1, "bob").await;
    let mut alice = cluster.connect(0, &alice_token).await;
    let mut bob = cluster.connect(1, &bob_token).await;
    let mut sent_ids = Vec::new();
    let send_batch = async |bob: &mut Connection, from: usize| {
        let mut ids = Vec::new();
        for i in from..from + 30 {
            let sent = bob
                .send_text("alice", &format!("m{i}"), &format!("text {i}"))
                .await
                .expect("sends are stored while the bus is down");
            ids.push(sent_seq(&sent).0);
        }
        ids
    };
    sent_ids.extend(send_batch(&mut bob, 0).await);
    nats.kill();
    let http = reqwest::Client::new();
    readyz_notices_the_bus_is_down(&http, &cluster).await;
    sent_ids.extend(send_batch(&mut bob, 30).await);
    nats.restart();
    every_node_is_ready_again(&http, &cluster).await;
    // Everything so far arrives through the resync alone, before any new
    // send could wake alice's session.
    let mut seen = HashSet::new();
    let receive = async |alice: &mut Connection, seen: &mut HashSet<String>, n: usize| {
        while seen.len() < n {
            if let ServerFrame::Message {
                message_id,
                conversation,
                seq,
                ..
            } = alice.next_frame(PROMPTLY).await.expect("delivery resumes")
            {
                seen.insert(message_id);
                alice.ack(conversation, seq).await.unwrap();
            }
        }
    };
    receive(&mut alice, &mut seen, sent_ids.len()).await;
    sent_ids.extend(send_batch(&mut bob, 60).await);
    receive(&mut alice, &mut seen, sent_ids.len()).await;
    assert_eq!(seen, sent_ids.into_iter().collect::<HashSet<_>>());
    drop(cluster);
    db.drop_now().await;
}

/// Node 0's `/readyz` says 503, naming the bus, promptly.
async fn readyz_notices_the_bus_is_down(http: &reqwest::Client, cluster: &Cluster) {
    let readyz = format!("{}/readyz", cluster.urls[0]);
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let response = http.get(&readyz).send().await.unwrap();
        if response.status() == 503 {
            assert!(response.text().await.unwrap().contains("bus"));
            break;
        }
        assert!(Instant::now() < deadline, "readyz never noticed the bus");
        tokio::task::yield_now().await;
    }
}

/// Every node's `/readyz` is 200 again, promptly.
async fn every_node_is_ready_again(http: &reqwest::Client, cluster: &Cluster) {
    for url in &cluster.urls {
        let deadline = Instant::now() + PROMPTLY;
        while http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            != 200
        {
            assert!(Instant::now() < deadline, "{url} did not reconnect to NATS");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_refuses_sends_as_unavailable_and_loses_nothing() {
    // Goal: while PostgreSQL cannot be reached, sends fail with the typed
    // `unavailable` error and `/readyz` names the store; afterwards service
    // resumes on its own and every message that got `sent` is delivered.
    // A session that ends during the outage leaves the session directory
    // once the store is back (the release is retried), so its user does
    // not show online forever.
    // Method: the node reaches PostgreSQL through a proxy that cuts every
    // connection; bob sends before, during and after the cut; carol's
    // connection closes during it.
    if !services_available().await {
        return;
    }
    let proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let db = Database::create().await;
    let cluster = Cluster::start(1, &db.url_via(&proxy.address), NATS, &[]);
    let alice_token = cluster.user(0, "alice").await;
    let bob_token = cluster.user(0, "bob").await;
    let carol_token = cluster.user(0, "carol").await;
    let carol = cluster.connect(0, &carol_token).await;
    let mut bob = cluster.connect(0, &bob_token).await;
    assert_eq!(db.sessions_of("carol").await, 1);
    let mut confirmed = Vec::new();
    for i in 0..10 {
        let sent = bob
            .send_text("alice", &format!("m{i}"), "before")
            .await
            .unwrap();
        confirmed.push(sent_seq(&sent).0);
    }

    proxy.cut();
    let refused = bob.send_text("alice", "m-cut", "during").await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Refused {
                code: ErrorCode::Unavailable,
                ..
            })
        ),
        "{refused:?}"
    );
    drop(carol);
    let ready = reqwest::get(format!("{}/readyz", cluster.urls[0]))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("store"));

    proxy.restore();
    // The same client_msg_id again: stored once now that the store is back.
    let deadline = Instant::now() + PROMPTLY;
    let sent = loop {
        match bob.send_text("alice", "m-cut", "during").await {
            Ok(sent) => break sent,
            Err(ClientError::Refused {
                code: ErrorCode::Unavailable,
                ..
            }) if Instant::now() < deadline => tokio::task::yield_now().await,
            Err(err) => panic!("service did not resume: {err:?}"),
        }
    };
    assert!(!sent_seq(&sent).2, "`unavailable` stored nothing");
    confirmed.push(sent_seq(&sent).0);
    for i in 10..20 {
        let sent = bob
            .send_text("alice", &format!("m{i}"), "after")
            .await
            .unwrap();
        confirmed.push(sent_seq(&sent).0);
    }

    let _alice = alice_gets_every_confirmed_message(&cluster, &alice_token, &confirmed).await;
    carols_ended_session_leaves_the_directory(&db).await;
    drop(cluster);
    db.drop_now().await;
}

/// Every message that got `sent`, once, in order; returns alice's
/// connection.
async fn alice_gets_every_confirmed_message(
    cluster: &Cluster,
    alice_token: &str,
    confirmed: &[String],
) -> Connection {
    let mut alice = cluster.connect(0, alice_token).await;
    let frames = queued(&mut alice, confirmed.len()).await;
    let got: Vec<String> = frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { message_id, .. } => Some(message_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got, confirmed, "every sent message, once, in order");
    assert_nothing_queued(&mut alice).await;
    alice
}

async fn carols_ended_session_leaves_the_directory(db: &Database) {
    let settled = Instant::now() + Duration::from_millis(4 * LEASE_MS);
    while db.sessions_of("carol").await != 0 {
        assert!(
            Instant::now() < settled,
            "carol's ended session is still in the directory"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_publishes_has_every_node_resync_when_it_is_back() {
    // Goal: a message whose bus event could not be published (its node was
    // cut off from NATS) reaches a recipient live on another node as soon
    // as the publisher is back, not after the periodic re-check: the node
    // asks every node to re-read its live queues.
    // Method: the periodic re-check is set to 10 minutes; bob on node 0,
    // alice on node 1, which reaches NATS through a proxy; the proxy cuts,
    // alice sends (stored; its wake-up goes nowhere), the proxy is
    // restored, and bob must get the message within 20 s.
    if !services_available().await {
        return;
    }
    let proxy = CuttableProxy::start(NATS.trim_start_matches("nats://")).await;
    let db = Database::create().await;
    let mut cluster = Cluster::start(1, &db.url(), NATS, &[("MISSIVE_BUS__RECHECK_MS", "600000")]);
    let proxied = format!("nats://{}", proxy.address);
    for (key, value) in &mut cluster.env {
        if key == "MISSIVE_BUS__URL" {
            *value = proxied.clone();
        }
    }
    cluster.add_node();
    let bob_token = cluster.user(0, "bob").await;
    let alice_token = cluster.user(1, "alice").await;
    let mut bob = cluster.connect(0, &bob_token).await;
    let mut alice = cluster.connect(1, &alice_token).await;
    alice.send_text("bob", "before", "before").await.unwrap();
    message_with_text(&mut bob, "before").await;

    proxy.cut();
    // Until node 1 sees its connection gone, a publish may still look sent;
    // wait for it to say so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("{}/readyz", cluster.urls[1]))
            .await
            .unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 never noticed the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.send_text("bob", "during", "during").await.unwrap();
    proxy.restore();
    let arrived = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frame = bob
                .next_frame(Duration::from_secs(20))
                .await
                .expect("frame");
            if matches!(&frame, ServerFrame::Message { text, .. } if text == "during") {
                return;
            }
        }
    })
    .await;
    assert!(
        arrived.is_ok(),
        "the message waited for the periodic re-check"
    );
    drop(cluster);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recheck_reads_nothing_for_idle_devices_and_finds_one_behind() {
    // Goal: issue 18's idle cost. The safety net for lost wake-ups is one
    // question per node and period, not a read per connection: idle
    // devices are never woken or read for; a device with something from
    // another device waiting above its position is found and woken, and
    // no longer once it acks.
    // Method: two nodes re-checking every second; alice on node 0 and bob
    // on node 1 connected and idle through three re-checks of node 1: no
    // wake and no catch-up read there. Then alice's text reaches bob live
    // (no read) and bob does not ack: the next re-check wakes him (he is
    // behind by it). He acks; three more re-checks wake no one.
    if !services_available().await {
        return;
    }
    let (db, cluster, alice_token, bob_token) =
        alice_and_bob_on_two_nodes(&[("MISSIVE_BUS__RECHECK_MS", "1000")]).await;
    let mut alice = cluster.connect(0, &alice_token).await;
    let mut bob = cluster.connect(1, &bob_token).await;
    let node1 = &cluster.urls[1];
    let rechecks = metric(node1, "missive_rechecks_total").await;
    let reads = metric(node1, "missive_catch_up_reads_total").await;
    wait_for_metric(node1, "missive_rechecks_total", rechecks + 3.0).await;
    assert_eq!(metric(node1, "missive_recheck_wakes_total").await, 0.0);
    assert_eq!(metric(node1, "missive_catch_up_reads_total").await, reads);

    alice.send_text("bob", "m1", "unacked").await.unwrap();
    let ServerFrame::Message {
        conversation, seq, ..
    } = message_with_text(&mut bob, "unacked").await
    else {
        unreachable!()
    };
    wait_for_metric(node1, "missive_recheck_wakes_total", 1.0).await;
    bob.ack(conversation, seq).await.unwrap();
    // A re-check that began before the ack may still count bob.
    let rechecks = metric(node1, "missive_rechecks_total").await;
    wait_for_metric(node1, "missive_rechecks_total", rechecks + 1.0).await;
    let wakes = metric(node1, "missive_recheck_wakes_total").await;
    wait_for_metric(node1, "missive_rechecks_total", rechecks + 4.0).await;
    assert_eq!(metric(node1, "missive_recheck_wakes_total").await, wakes);
    drop(cluster);
    db.drop_now().await;
}
