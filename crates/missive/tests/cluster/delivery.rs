//! Delivery across nodes: one conversation space, one order for concurrent
//! sends, one stored copy of a retried send, live fan-out without a store
//! read, and end-to-end keys.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_one_conversation_space() {
    // Goal: with users spread over three nodes, 1:1 and group chat,
    // receipts, typing, presence and media all work across nodes; a device
    // connecting to a second node takes over from the first; a revocation
    // on one node is honoured at once by the others (caches included).
    // Method: alice on node 0, bob on node 1, carol on node 2, every
    // interaction crossing nodes; media on S3 when moto is available.
    if !services_available().await {
        return;
    }
    let s3_env = s3_bucket_env().await;
    let with_s3 = s3_env.is_some();
    let extra: Vec<(&str, &str)> = s3_env
        .iter()
        .flatten()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    let db = Database::create().await;
    let cluster = Cluster::start(3, &db.url(), NATS, &extra);
    let alice_token = cluster.user(0, "alice").await;
    let bob_token = cluster.user(1, "bob").await;
    let carol_token = cluster.user(2, "carol").await;
    let mut alice = cluster.connect(0, &alice_token).await;
    let mut bob = cluster.connect(1, &bob_token).await;
    let mut carol = cluster.connect(2, &carol_token).await;

    presence_and_a_one_to_one_cross_nodes(&mut alice, &mut bob).await;
    let group = a_group_text_and_typing_cross_nodes(
        &cluster,
        &carol_token,
        [&mut alice, &mut bob, &mut carol],
    )
    .await;
    if with_s3 {
        media_crosses_nodes(&cluster, &alice_token, &bob_token, &mut alice, &mut bob).await;
    }
    bob_leaves_and_alice_sees_him_offline(&mut alice, bob).await;
    let _carol_again =
        a_device_moving_node_replaces_itself(&cluster, &carol_token, &mut alice, &mut carol, group)
            .await;
    a_revocation_crosses_nodes(&cluster, &alice_token, &mut alice).await;
    drop(cluster);
    db.drop_now().await;
}

/// Creates a bucket on the S3 test server and returns the environment that
/// keeps media in it; `None` when the S3 test server is not there.
async fn s3_bucket_env() -> Option<Vec<(&'static str, String)>> {
    let s3 = std::env::var("S3_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let with_s3 = service_available("the S3 test server", s3.trim_start_matches("http://")).await;
    let bucket = unique("missive-cluster").replace('_', "-");
    if !with_s3 {
        eprintln!("media across nodes not checked");
        return None;
    }
    let created = reqwest::Client::new()
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success());
    Some(vec![
        ("MISSIVE_BLOBS__BACKEND", "s3".to_owned()),
        ("MISSIVE_BLOBS__S3_BUCKET", bucket),
        ("MISSIVE_BLOBS__S3_ENDPOINT", s3),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ])
}

/// alice (node 0) sees bob and carol online, and her text to bob (node 1)
/// comes back as delivered.
async fn presence_and_a_one_to_one_cross_nodes(alice: &mut Connection, bob: &mut Connection) {
    // Presence: alice (node 0) sees bob and carol online on other nodes.
    let frames = alice.subscribe_presence(&["bob", "carol"]).await.unwrap();
    assert!(
        frames
            .iter()
            .all(|frame| matches!(frame, ServerFrame::Presence { online: true, .. })),
        "{frames:?}"
    );

    // 1:1 across nodes, with the delivered cursor coming back: bob's ack
    // on node 1 moves his cursor past alice's text, and alice, its author,
    // is told on node 0.
    let sent = alice.send_text("bob", "a1", "hi bob").await.unwrap();
    let (_, seq, _) = sent_seq(&sent);
    let ServerFrame::Message {
        conversation: direct,
        seq: got,
        ..
    } = message_with_text(bob, "hi bob").await
    else {
        unreachable!()
    };
    assert_eq!(got, seq);
    assert_eq!(bob.ack(direct, got).await.unwrap(), got);
    loop {
        match alice.next_frame(PROMPTLY).await.unwrap() {
            ServerFrame::Delivered {
                conversation,
                by,
                seq: up_to,
                ..
            } if conversation == direct && up_to >= seq => {
                assert_eq!(by, "bob");
                break;
            }
            _ => {}
        }
    }
}

/// A group made on node 2, a text into it and typing, each reaching the
/// other nodes. Returns the group.
async fn a_group_text_and_typing_cross_nodes(
    cluster: &Cluster,
    carol_token: &str,
    [alice, bob, carol]: [&mut Connection; 3],
) -> i64 {
    // A group made on node 2; a text from node 1 reaches nodes 0 and 2.
    let group = cluster
        .api(2)
        .create_group(carol_token, "trio", &["alice", "bob"])
        .await
        .unwrap()
        .conversation;
    bob.send_to(group, "b1", "hello trio", None).await.unwrap();
    message_with_text(alice, "hello trio").await;
    message_with_text(carol, "hello trio").await;

    // Typing from node 2 reaches the members on nodes 0 and 1.
    carol.typing(group, TypingState::Start).await.unwrap();
    for connection in [alice, bob] {
        let frame = next_ephemeral(connection).await;
        assert!(
            matches!(&frame, ServerFrame::Typing { from, conversation, .. } if from == "carol" && *conversation == group),
            "{frame:?}"
        );
    }
    group
}

/// Media uploaded through node 0 is served by node 1.
async fn media_crosses_nodes(
    cluster: &Cluster,
    alice_token: &str,
    bob_token: &str,
    alice: &mut Connection,
    bob: &mut Connection,
) {
    let bytes = b"%PDF-1.7\ncluster media".to_vec();
    let info = cluster
        .api(0)
        .upload_named_media(alice_token, bytes.clone(), Some("cluster notes.pdf"))
        .await
        .unwrap();
    alice
        .call(|id| ClientFrame::Send {
            id,
            to: Some("bob".into()),
            conversation: None,
            client_msg_id: "a-media".into(),
            text: "a file".into(),
            reply_to: None,
            media: vec![info.media_id.clone()],
            encrypted: false,
        })
        .await
        .unwrap();
    message_with_text(bob, "a file").await;
    let downloaded = cluster
        .api(1)
        .download_named_media(bob_token, &info.media_id)
        .await
        .unwrap();
    assert_eq!(downloaded.bytes, bytes);
    assert_eq!(
        downloaded.filename.as_deref(),
        Some("cluster notes.pdf"),
        "the name is stored in PostgreSQL"
    );
}

/// Bob leaves node 1: alice on node 0 sees him offline.
async fn bob_leaves_and_alice_sees_him_offline(alice: &mut Connection, bob: Connection) {
    bob.close().await;
    assert!(!presence_of(alice, "bob", PROMPTLY).await);
}

/// Carol's device moves node; the connection it left closes as replaced
/// and the new one gets alice's next group text. Returns the new one.
async fn a_device_moving_node_replaces_itself(
    cluster: &Cluster,
    carol_token: &str,
    alice: &mut Connection,
    carol: &mut Connection,
    group: i64,
) -> Connection {
    // Carol's device connects to node 0 while live on node 2: node 2
    // closes its connection as replaced; the new one works.
    let mut carol_again = cluster.connect(0, carol_token).await;
    let closed = loop {
        match carol.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&closed, ClientError::Closed { reason, .. } if reason == "replaced"),
        "{closed:?}"
    );
    alice
        .send_to(group, "a2", "still here?", None)
        .await
        .unwrap();
    message_with_text(&mut carol_again, "still here?").await;
    carol_again
}

/// alice logs out through node 2: nodes 0 and 1 honour it at once.
async fn a_revocation_crosses_nodes(cluster: &Cluster, alice_token: &str, alice: &mut Connection) {
    // A revocation crosses nodes: alice's token, cached on node 1 by use,
    // is refused there right after she logs out through node 2, and her
    // WebSocket on node 0 closes as revoked.
    cluster.api(1).devices(alice_token).await.unwrap();
    cluster.api(2).logout(alice_token).await.unwrap();
    let refused = cluster.api(1).devices(alice_token).await;
    assert_eq!(refused_code(refused), "token_invalid");
    let closed = loop {
        match alice.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&closed, ClientError::Closed { reason, .. } if reason == "revoked"),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_group_sends_from_three_nodes_share_one_order() {
    // Goal: members on three nodes sending to one group at once get
    // unique, gap-free seqs, and every device sees the same order.
    // Method: each member sends 30 texts concurrently; each device's view
    // (its own `sent` replies plus what it received) must map every seq
    // 2..=91 (1 is the creation event) to one message id, identically on
    // all three.
    if !services_available().await {
        return;
    }
    const EACH: usize = 30;
    let db = Database::create().await;
    let cluster = Cluster::start(3, &db.url(), NATS, &[]);
    let names = ["ann", "ben", "cat"];
    let mut tokens = Vec::new();
    for (node, name) in names.iter().enumerate() {
        tokens.push(cluster.user(node, name).await);
    }
    let group = cluster
        .api(0)
        .create_group(&tokens[0], "busy", &["ben", "cat"])
        .await
        .unwrap()
        .conversation;
    let mut tasks = Vec::new();
    for (node, token) in tokens.iter().enumerate() {
        let url = cluster.api(node).ws_url();
        let token = token.clone();
        let name = names[node];
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::connect(&url, &token).await.unwrap();
            let mut view: BTreeMap<i64, String> = BTreeMap::new();
            for i in 0..EACH {
                let sent = connection
                    .send_to(group, &format!("{name}{i}"), &format!("{name} {i}"), None)
                    .await
                    .unwrap();
                let (id, seq, _) = sent_seq(&sent);
                assert!(view.insert(seq, id).is_none(), "a seq given twice");
            }
            // Everything the others sent. The creation event (seq 1) goes
            // to everyone but the creating device, so it is left out.
            view.remove(&1);
            while view.range(2..).count() < 3 * EACH {
                if let ServerFrame::Message {
                    seq, message_id, ..
                } = connection.next_frame(PROMPTLY).await.expect("group text")
                {
                    if seq == 1 {
                        continue;
                    }
                    if let Some(other) = view.insert(seq, message_id.clone()) {
                        assert_eq!(other, message_id, "seq {seq} names two messages");
                    }
                }
            }
            view
        }));
    }
    let mut views = Vec::new();
    for task in tasks {
        views.push(task.await.unwrap());
    }
    let seqs: Vec<i64> = views[0].keys().copied().collect();
    assert_eq!(seqs, (2..=(3 * EACH as i64 + 1)).collect::<Vec<_>>());
    assert_eq!(views[0], views[1]);
    assert_eq!(views[1], views[2]);
    drop(cluster);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_msg_id_sent_to_two_nodes_at_once_is_stored_once() {
    // Goal: the same (device, client_msg_id) arriving at two nodes at the
    // same moment stores one message; both replies carry its id and seq.
    // Method: 20 rounds of two concurrent `POST /v1/frames` sends, one per
    // node; then exactly 20 messages wait for bob.
    if !services_available().await {
        return;
    }
    let (db, cluster, alice_token, bob_token) = alice_and_bob_on_two_nodes(&[]).await;
    let (api0, api1) = (cluster.api(0), cluster.api(1));
    let mut stored = Vec::new();
    for round in 0..20 {
        let frame = ClientFrame::Send {
            id: Some(format!("r{round}")),
            to: Some("bob".into()),
            conversation: None,
            client_msg_id: format!("same-{round}"),
            text: format!("round {round}"),
            reply_to: None,
            media: Vec::new(),
            encrypted: false,
        };
        let (first, second) = tokio::join!(
            api0.frame(&alice_token, &frame),
            api1.frame(&alice_token, &frame)
        );
        let first = sent_seq(&first.unwrap()[0]);
        let second = sent_seq(&second.unwrap()[0]);
        assert_eq!((&first.0, first.1), (&second.0, second.1), "round {round}");
        assert!(
            first.2 != second.2,
            "exactly one of the two is the duplicate"
        );
        stored.push(first.0);
    }
    let mut bob = cluster.connect(1, &bob_token).await;
    let frames = queued(&mut bob, 20).await;
    let ids: Vec<String> = frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { message_id, .. } => Some(message_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, stored);
    assert_nothing_queued(&mut bob).await;
    drop(cluster);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_a_device_on_another_node_without_a_store_read() {
    // Goal: a committed message crosses the bus encoded, so the node that
    // holds the recipient writes it from memory instead of reading it back
    // from the store, as a node does for its own recipients.
    // Method: alice on node 0, bob on node 1; once bob's connection has
    // placed the conversation (the first message may need a read), 20 more
    // texts one after another; node 1's catch-up reads barely move (a
    // periodic re-check may add one), where a wake-up per message would add
    // 20. Then a text too large to cross whole, which must still arrive.
    if !services_available().await {
        return;
    }
    let (db, cluster, alice_token, bob_token) = alice_and_bob_on_two_nodes(&[]).await;
    let mut alice = cluster.connect(0, &alice_token).await;
    let mut bob = cluster.connect(1, &bob_token).await;
    alice.send_text("bob", "first", "first").await.unwrap();
    message_with_text(&mut bob, "first").await;

    let reads_before = metric(&cluster.urls[1], "missive_catch_up_reads_total").await;
    for i in 0..20 {
        let text = format!("live {i}");
        alice
            .send_text("bob", &format!("m{i}"), &text)
            .await
            .unwrap();
        let ServerFrame::Message { seq, .. } = message_with_text(&mut bob, &text).await else {
            unreachable!()
        };
        assert_eq!(seq, i + 2, "in order, nothing skipped");
    }
    let reads = metric(&cluster.urls[1], "missive_catch_up_reads_total").await - reads_before;
    assert!(reads <= 3.0, "{reads} store reads for 20 live messages");

    // A large text crosses as a wake-up, and is read from the store.
    let large = "x".repeat(3000);
    alice.send_text("bob", "large", &large).await.unwrap();
    let ServerFrame::Message { seq, .. } = message_with_text(&mut bob, &large).await else {
        unreachable!()
    };
    assert_eq!(seq, 22);
    let reads_large = metric(&cluster.urls[1], "missive_catch_up_reads_total").await;
    assert!(
        reads_large > reads_before + reads,
        "a large text was not read from the store"
    );
    drop(cluster);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_keys_and_to_device_messages_cross_nodes() {
    // Goal: the key directory and to-device messages work across nodes: a
    // key published through one node is claimed through another (once),
    // which tells the publishing device, connected to a third, that its
    // stock is low; a to-device message sent through one node reaches the
    // device live on another at once.
    // Method: bob publishes two keys through node 1 and stays connected
    // there; alice claims through node 0 twice, then sends bob's device a
    // to-device message through node 0.
    if !services_available().await {
        return;
    }
    let (db, cluster, alice_token, bob_token) = alice_and_bob_on_two_nodes(&[]).await;
    let bob_device = cluster.api(1).devices(&bob_token).await.unwrap().devices[0].device_id;
    let upload = key_upload("b", 2);
    cluster
        .api(1)
        .upload_keys(&bob_token, &upload)
        .await
        .unwrap();
    let mut bob = cluster.connect(1, &bob_token).await;
    let claims = [
        cluster
            .api(0)
            .claim_keys(&alice_token, "bob")
            .await
            .unwrap(),
        cluster
            .api(0)
            .claim_keys(&alice_token, "bob")
            .await
            .unwrap(),
        cluster
            .api(0)
            .claim_keys(&alice_token, "bob")
            .await
            .unwrap(),
    ];
    let ids: Vec<Option<String>> = claims
        .iter()
        .map(|claim| {
            claim.devices[0]
                .one_time_key
                .as_ref()
                .map(|key| key.key_id.clone())
        })
        .collect();
    assert_eq!(ids, [Some("b0000".into()), Some("b0001".into()), None]);
    let mut told = Vec::new();
    while told.len() < 2 {
        if let ServerFrame::KeysLow { one_time_keys } = bob.next_frame(PROMPTLY).await.unwrap() {
            told.push(one_time_keys);
        }
    }
    assert_eq!(told, [1, 0]);

    let mut alice = cluster.connect(0, &alice_token).await;
    alice
        .request(&to_device(vec![share("bob", bob_device, "room key")]), "td")
        .await
        .unwrap();
    loop {
        if let ServerFrame::ToDevice { from, body, .. } = bob.next_frame(PROMPTLY).await.unwrap() {
            assert_eq!((from.as_str(), body.as_str()), ("alice", "room key"));
            break;
        }
    }
    drop(cluster);
    db.drop_now().await;
}
