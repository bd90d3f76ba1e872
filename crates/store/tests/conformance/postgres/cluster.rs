//! PostgreSQL-only checks: several nodes (pools) on one database racing
//! each other, and a server that is unreachable, silent or cut mid-run.

use missive_store::AccountStore;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq};
use missive_store::{
    Appended, NewAccount, PendingItem, PendingRequest, PostgresConfig, PostgresStore, Store,
    StoreError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::FreshSchema;
use crate::support::*;

/// Messages each sending device sends.
const PER_DEVICE: usize = 120;

/// Follows what waits for `device` on `follow` like a live session:
/// read a page above `after`, move `after` to the page's `scanned`,
/// repeat; acking up to `after` on `acker` when given; until a page
/// read after `done` was set is empty. Checks that every item lies
/// above `after` and that nothing expires. Returns the seqs seen per
/// conversation, in arrival order.
async fn follow(
    follow: Arc<dyn Store>,
    acker: Option<Arc<dyn Store>>,
    account: AccountId,
    device: DeviceId,
    done: Arc<AtomicBool>,
) -> HashMap<ConversationId, Vec<Seq>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut after: HashMap<ConversationId, Seq> = HashMap::new();
    let mut seen: HashMap<ConversationId, Vec<Seq>> = HashMap::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "device {device} is still reading"
        );
        let finished = done.load(Ordering::Acquire);
        let page = follow
            .pending(PendingRequest {
                device,
                account,
                after: after.iter().map(|(c, s)| (*c, *s)).collect(),
                limit: 64,
                expired_before_ms: NO_EXPIRY,
            })
            .await
            .expect("pending");
        for item in &page.items {
            let PendingItem::Event(event) = item else {
                panic!("device {device}: nothing expires here: {item:?}");
            };
            let above = after.get(&event.conversation).copied().unwrap_or(0);
            assert!(
                event.seq > above,
                "device {device}: seq {} in {} came again (after {above})",
                event.seq,
                event.conversation
            );
            seen.entry(event.conversation).or_default().push(event.seq);
        }
        for (conversation, seq) in &page.scanned {
            let before = after.insert(*conversation, *seq).unwrap_or(0);
            assert!(before <= *seq, "scanned moved back in {conversation}");
        }
        if page.items.is_empty() {
            if finished {
                return seen;
            }
            // Polling, as a live session waits for a wake-up.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        if let Some(acker) = &acker {
            let points = after.iter().map(|(c, s)| (*c, *s)).collect();
            ack(&**acker, device, account, points, false).await;
        }
    }
}

/// What is wrong with `seqs` as the sequence 1..=n: the seqs
/// missing, and the positions where one is not its predecessor + 1.
fn flaws(seqs: &[Seq], n: Seq) -> (Vec<Seq>, Vec<usize>) {
    let missing = (1..=n).filter(|seq| !seqs.contains(seq)).collect();
    let misplaced = seqs
        .iter()
        .enumerate()
        .filter(|(idx, seq)| **seq != *idx as Seq + 1)
        .map(|(idx, _)| idx)
        .take(10)
        .collect();
    (missing, misplaced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_readers_never_skip_across_three_nodes() {
    // Goal: with three nodes (three pools on one database) sending at
    // once into three 1:1 conversations and one group, a device that
    // follows live by position (each page read above the `scanned`
    // of the last) sees every conversation's seqs exactly 1..=N in
    // order: no seq ever becomes visible after a higher one was read,
    // nothing twice.
    // Method: alice, bob and dave each send from two devices, each
    // device a task on "their" node alternating between their 1:1
    // with carol and the group; carol's two devices follow on two
    // nodes, one acking (which moves carol's delivered cursors: more
    // concurrent writes) through the third.
    let Some(schema) = FreshSchema::create().await else {
        return;
    };
    let (n0, n1, n2) = tokio::join!(schema.node(), schema.node(), schema.node());
    let nodes: [Arc<dyn Store>; 3] = [Arc::new(n0), Arc::new(n1), Arc::new(n2)];
    let (carol, [c1, c2], senders, group) = carol_and_her_senders(&*nodes[0]).await;
    let (expected, sends) = start_sending(&nodes, &senders, group);
    let done = Arc::new(AtomicBool::new(false));
    let readers = [
        tokio::spawn(follow(
            Arc::clone(&nodes[0]),
            Some(Arc::clone(&nodes[2])),
            carol,
            c1,
            Arc::clone(&done),
        )),
        tokio::spawn(follow(
            Arc::clone(&nodes[1]),
            None,
            carol,
            c2,
            Arc::clone(&done),
        )),
    ];

    // What the senders were told: every seq once, no gaps.
    let mut told: HashMap<ConversationId, Vec<Seq>> = HashMap::new();
    told.entry(group).or_default().push(1);
    for task in sends {
        for (conv, seq) in task.await.expect("sender panicked") {
            told.entry(conv).or_default().push(seq);
        }
    }
    done.store(true, Ordering::Release);
    for (conv, seqs) in &mut told {
        seqs.sort_unstable();
        let n = expected[conv] as Seq;
        assert_eq!(
            *seqs,
            (1..=n).collect::<Vec<_>>(),
            "seqs told to senders in {conv}"
        );
    }
    readers_saw_every_seq_in_order(readers, [c1, c2], &expected).await;
    for node in &nodes {
        node.shutdown().await;
    }
}

/// One sender of [`live_readers_never_skip_across_three_nodes`]: an
/// account, its two devices, its 1:1 conversation with carol.
type Sender = (AccountId, [DeviceId; 2], ConversationId);

/// A sending device's task: (conversation, seq) of every text it sent.
type SendTask = JoinHandle<Vec<(ConversationId, Seq)>>;

/// [`live_readers_never_skip_across_three_nodes`]: carol (c1, c2); alice,
/// bob and dave (two devices each, a 1:1 with carol each); and the group
/// of the four that alice creates.
async fn carol_and_her_senders(
    setup: &dyn Store,
) -> (AccountId, [DeviceId; 2], Vec<Sender>, ConversationId) {
    let carol = new_account(setup, "carol").await;
    let c1 = new_device(setup, carol, "c1").await;
    let c2 = new_device(setup, carol, "c2").await;
    let mut senders = Vec::new();
    for name in ["alice", "bob", "dave"] {
        let account = new_account(setup, name).await;
        let devices = [
            new_device(setup, account, &format!("{name}-1")).await,
            new_device(setup, account, &format!("{name}-2")).await,
        ];
        let conv = direct(setup, account, carol, NOW).await;
        senders.push((account, devices, conv));
    }
    let accounts: Vec<AccountId> = senders.iter().map(|s| s.0).collect();
    let group = create_group(
        setup,
        new_group(
            accounts[0],
            senders[0].1[0],
            "team",
            &[accounts[1], carol, accounts[2]],
            NOW,
        ),
    )
    .await
    .conversation;
    (carol, [c1, c2], senders, group)
}

/// [`live_readers_never_skip_across_three_nodes`]: starts every sender
/// device's task on its account's node; returns how many events each
/// conversation will have, and the tasks (answering the seqs they got).
fn start_sending(
    nodes: &[Arc<dyn Store>; 3],
    senders: &[Sender],
    group: ConversationId,
) -> (HashMap<ConversationId, usize>, Vec<SendTask>) {
    let mut expected: HashMap<ConversationId, usize> = HashMap::new();
    expected.insert(group, 1);
    for (_, _, conv) in senders {
        expected.insert(*conv, 0);
    }
    let mut sends: Vec<SendTask> = Vec::new();
    for (i, (account, devices, conv)) in senders.iter().enumerate() {
        for (j, device) in devices.iter().enumerate() {
            let node = Arc::clone(&nodes[i]);
            let (account, device, conv) = (*account, *device, *conv);
            let plan: Vec<ConversationId> = (0..PER_DEVICE)
                .map(|k| if (k + j) % 2 == 0 { conv } else { group })
                .collect();
            for target in &plan {
                *expected.entry(*target).or_default() += 1;
            }
            sends.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for (k, target) in plan.into_iter().enumerate() {
                    let cmid = format!("d{device}-{k}");
                    let appended = send(&*node, target, account, device, &cmid).await;
                    assert!(!appended.duplicate);
                    got.push((target, appended.seq));
                }
                got
            }));
        }
    }
    (expected, sends)
}

/// [`live_readers_never_skip_across_three_nodes`]: what each live reader
/// (following for `devices`) saw: exactly 1..=N per conversation, in order.
async fn readers_saw_every_seq_in_order(
    readers: [JoinHandle<HashMap<ConversationId, Vec<Seq>>>; 2],
    devices: [DeviceId; 2],
    expected: &HashMap<ConversationId, usize>,
) {
    for (reader, device) in readers.into_iter().zip(devices) {
        let seen = reader.await.expect("reader panicked");
        assert_eq!(seen.len(), expected.len(), "device {device}: conversations");
        for (conv, seqs) in seen {
            let n = expected[&conv] as Seq;
            let (missing, misplaced) = flaws(&seqs, n);
            assert!(
                missing.is_empty() && misplaced.is_empty() && seqs.len() == n as usize,
                "device {device} in {conv}: {} of {n} seen; skipped for good: {missing:?}; \
                 out of order or repeated at indices {misplaced:?}",
                seqs.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_retry_on_two_nodes_at_once_is_stored_once() {
    // Goal: the same (device, client_msg_id) appended on two nodes at
    // the same moment stores one message; both calls answer with its
    // id, seq and time, exactly one with `duplicate`.
    // Method: 30 rounds of two tasks released together by a barrier,
    // each appending through its own node with its own message id.
    let Some(schema) = FreshSchema::create().await else {
        return;
    };
    let (n0, n1) = tokio::join!(schema.node(), schema.node());
    let nodes: [Arc<dyn Store>; 2] = [Arc::new(n0), Arc::new(n1)];
    let Cast(alice, _bob, conv, [a1, b1]) = cast(&*nodes[0], ["a1", "b1"]).await;
    const ROUNDS: Seq = 30;
    for round in 1..=ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let attempts: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let message = new_message(conv, alice, a1, &format!("race-{round}"), NOW);
                    barrier.wait().await;
                    node.append_message(message).await.expect("append")
                })
            })
            .collect();
        let mut answers = Vec::new();
        for attempt in attempts {
            answers.push(attempt.await.expect("append task"));
        }
        answers.sort_by_key(|answer| answer.duplicate);
        let [original, retry] = &answers[..] else {
            unreachable!("two attempts")
        };
        assert!(
            !original.duplicate && retry.duplicate,
            "round {round}: exactly one call must be the original: {answers:?}"
        );
        assert_eq!(
            (&retry.message_id, retry.seq, retry.ts_ms),
            (&original.message_id, original.seq, original.ts_ms),
            "round {round}"
        );
        assert_eq!(
            original.seq, round,
            "round {round}: a seq was lost or taken twice"
        );
        assert!(retry.recipients.is_empty());
    }
    assert_eq!(pending_ids(&*nodes[1], b1).await.len(), ROUNDS as usize);
    assert_eq!(
        seqs(&history_all(&*nodes[1], alice, conv).await),
        (1..=ROUNDS).collect::<Vec<_>>()
    );
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_sends_in_a_crowd_take_no_seq() {
    // Goal: sends that arrive together share transactions, yet each
    // is judged alone: refused ones take no seq and keep nothing
    // (their client_msg_id is free again), the accepted ones get
    // 1..=n with no gap, a retry racing its original is stored once.
    // Method: 240 appends released at once by a barrier on one node
    // (so the batch writers take many per transaction): texts,
    // texts from a non-member, reactions to an unknown message, and
    // pairs of identical retries; then every answer, the history
    // and what waits for the recipient are checked.
    let Some(schema) = FreshSchema::create().await else {
        return;
    };
    let node: Arc<dyn Store> = Arc::new(schema.node().await);
    let people = cast(&*node, ["a1", "b1"]).await;
    let Cast(alice, _, conv, [a1, _]) = people;
    let carol = account_with_device(&*node, "carol", "c1").await;
    let tasks = appends_released_at_once(&node, &people, carol);
    let mut stored: Vec<Seq> = Vec::new();
    let mut retries: HashMap<String, Vec<Appended>> = HashMap::new();
    for task in tasks {
        let (i, answer) = task.await.expect("append task");
        match (i % 6, i < SENDS) {
            (0..=2, true) => stored.push(answer.expect("a member's text").seq),
            (3, true) => {
                assert_eq!(answer, Err(StoreError::UnknownConversation), "send {i}");
            }
            (4, true) => assert_eq!(answer, Err(StoreError::UnknownMessage), "send {i}"),
            _ => {
                let round = if i < SENDS { i / 6 } else { i - SENDS };
                retries
                    .entry(format!("dup-{round}"))
                    .or_default()
                    .push(answer.expect("a retried text"));
            }
        }
    }
    for (cmid, answers) in &retries {
        let [first, second] = &answers[..] else {
            panic!("{cmid}: two answers expected, got {answers:?}")
        };
        assert!(
            first.duplicate != second.duplicate,
            "{cmid}: exactly one original: {answers:?}"
        );
        assert_eq!(
            (&first.message_id, first.seq),
            (&second.message_id, second.seq)
        );
        stored.push(first.seq);
    }
    stored.sort_unstable();
    let n = stored.len() as Seq;
    assert_eq!(stored, (1..=n).collect::<Vec<_>>(), "seqs must be gap-free");
    assert_eq!(seqs(&history_all(&*node, alice, conv).await), stored);
    assert_eq!(
        pending_ids(&*node, a1).await.len(),
        retries.len(),
        "alice's device gets bob's texts only"
    );

    // A refused send's client_msg_id was released with it.
    let again = send(&*node, conv, alice, a1, "bad-4").await;
    assert_new(&again, n + 1);
    node.shutdown().await;
}

/// [`refused_sends_in_a_crowd_take_no_seq`]: appends, and retries of every
/// sixth.
const SENDS: usize = 240;
const RETRIES: usize = SENDS / 6;

/// [`refused_sends_in_a_crowd_take_no_seq`]: spawns the `SENDS` appends
/// (texts, texts from carol, who is not a member, reactions to an unknown
/// message, originals of bob's) and the `RETRIES` retries of bob's, all
/// waiting for one barrier. Each task answers (its index, the answer).
fn appends_released_at_once(
    node: &Arc<dyn Store>,
    &Cast(alice, bob, conv, [a1, b1]): &Cast<2>,
    (carol, c1): (AccountId, DeviceId),
) -> Vec<JoinHandle<(usize, Result<Appended, StoreError>)>> {
    let barrier = Arc::new(Barrier::new(SENDS + RETRIES));
    (0..SENDS)
        .map(|i| {
            let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
            let message = match i % 6 {
                0..=2 => new_message(conv, alice, a1, &format!("ok-{i}"), NOW),
                3 => new_message(conv, carol, c1, &format!("outsider-{i}"), NOW),
                4 => message_with(
                    conv,
                    alice,
                    a1,
                    &format!("bad-{i}"),
                    react(&MessageId::generate(), Some("👍")),
                    NOW,
                ),
                // An original; its retry is task SENDS + i / 6.
                _ => new_message(conv, bob, b1, &format!("dup-{}", i / 6), NOW),
            };
            tokio::spawn(async move {
                barrier.wait().await;
                (i, node.append_message(message).await)
            })
        })
        .chain((0..RETRIES).map(|round| {
            let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
            let message = new_message(conv, bob, b1, &format!("dup-{round}"), NOW);
            tokio::spawn(async move {
                barrier.wait().await;
                (SENDS + round, node.append_message(message).await)
            })
        }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_reaping_at_once_report_each_account_once() {
    // Goal: when every node reaps the same lapsed nodes at the same
    // moment, each newly offline account is reported by exactly one
    // of them (so it is announced once).
    // Method: 20 rounds; in each, a node "dead-r" holds sessions of
    // five accounts and lapses, then three stores reap together,
    // released by a barrier.
    let Some(schema) = FreshSchema::create().await else {
        return;
    };
    let (n0, n1, n2) = tokio::join!(schema.node(), schema.node(), schema.node());
    let nodes: [Arc<dyn Store>; 3] = [Arc::new(n0), Arc::new(n1), Arc::new(n2)];
    for round in 0..20i64 {
        let dead = format!("dead-{round}");
        let lapse = NOW + 1000 * round;
        nodes[0]
            .renew_node(&dead, lapse + 100)
            .await
            .expect("renew");
        let mut accounts = Vec::new();
        for i in 0..5 {
            let (account, device) = account_with_device(
                &*nodes[0],
                &format!("r{round}u{i}"),
                &format!("r{round}d{i}"),
            )
            .await;
            nodes[0]
                .claim_session(device, account, &dead, lapse)
                .await
                .expect("claim");
            accounts.push(account);
        }
        let barrier = Arc::new(Barrier::new(nodes.len()));
        let reapers: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    node.reap_nodes(lapse + 200).await.expect("reap")
                })
            })
            .collect();
        let mut reported = Vec::new();
        for reaper in reapers {
            reported.extend(reaper.await.expect("reaper task"));
        }
        reported.sort();
        accounts.sort();
        assert_eq!(reported, accounts, "round {round}: each account once");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_silent_server_fails_fast() {
    // Goal: connecting to a server that is not there, or that
    // accepts and never answers, is `Unavailable` within the
    // connect timeout, not a hang.
    if FreshSchema::create().await.is_none() {
        return;
    }
    let started = Instant::now();
    let refused = PostgresStore::connect(&PostgresConfig {
        connect_timeout: Duration::from_secs(1),
        ..PostgresConfig::new("postgres://postgres@127.0.0.1:1/postgres")
    })
    .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable)),
        "{:?}",
        refused.err()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A server that accepts and then says nothing: only the connect
    // timeout ends the wait, neither much sooner nor much later.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("address");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let refused = PostgresStore::connect(&PostgresConfig {
        connect_timeout: Duration::from_secs(1),
        ..PostgresConfig::new(format!("postgres://postgres@{silent_addr}/postgres"))
    })
    .await;
    let waited = started.elapsed();
    assert!(
        matches!(refused, Err(StoreError::Unavailable)),
        "{:?}",
        refused.err()
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "waited {waited:?} for a silent server with a 1 s timeout"
    );
    holder.abort();
}

/// A TCP relay to the test server that a test can cut and restore:
/// an outage without stopping the shared server.
struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        Self {
            addr,
            upstream,
            task: Some(tokio::spawn(Self::serve(listener, upstream))),
        }
    }

    async fn serve(listener: TcpListener, upstream: SocketAddr) {
        // The set owns every relayed connection: dropping it (when
        // this task is aborted) cuts them all.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }

    /// Closes the port and every connection through it.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind relay");
        self.task = Some(tokio::spawn(Self::serve(listener, self.upstream)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_unavailable_then_heals() {
    // Goal: when the database goes away under a running store, calls
    // fail fast with `Unavailable` (the client may retry) and
    // `is_ready` is false; when it is back, the same store works
    // again without a restart.
    // Method: the store reaches the server through a relay; cut it,
    // call, restore it, call.
    let Some(schema) = FreshSchema::create().await else {
        return;
    };
    let base: tokio_postgres::Config = schema.base_url.parse().expect("test URL");
    let (Some(tokio_postgres::config::Host::Tcp(host)), Some(port), Some(user)) = (
        base.get_hosts().first(),
        base.get_ports().first(),
        base.get_user(),
    ) else {
        eprintln!("skipping: the test URL names no TCP host, port and user");
        return;
    };
    let upstream: SocketAddr = tokio::net::lookup_host((host.as_str(), *port))
        .await
        .expect("resolve the test server")
        .next()
        .expect("an address");
    let mut relay = Relay::start(upstream).await;
    let password = base
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let config = PostgresConfig {
        connect_timeout: Duration::from_secs(1),
        wait_timeout: Duration::from_secs(1),
        ..PostgresConfig::new(format!(
            "postgres://{user}{password}@{}/{}?options=-csearch_path%3D{}",
            relay.addr,
            base.get_dbname().unwrap_or("postgres"),
            schema.name
        ))
    };
    let store = PostgresStore::connect(&config)
        .await
        .expect("connect via relay");
    let alice = new_account(&store, "alice").await;
    assert!(store.is_ready().await);

    relay.cut().await;
    let started = Instant::now();
    let refused = store
        .create_account(NewAccount {
            username: username("bob"),
            password_hash: "h".into(),
            phone: None,
            now_ms: NOW,
            invite: None,
        })
        .await;
    assert_eq!(refused, Err(StoreError::Unavailable));
    assert_eq!(
        store.list_devices(alice).await,
        Err(StoreError::Unavailable)
    );
    assert!(!store.is_ready().await);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the outage took {:?} to report",
        started.elapsed()
    );

    relay.restore().await;
    let healed = Instant::now() + Duration::from_secs(10);
    while !store.is_ready().await {
        assert!(Instant::now() < healed, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bob = new_account(&store, "bob").await;
    assert_ne!(bob, alice);
    store.shutdown().await;
    relay.cut().await;
}
