//! Concurrency and lifecycle: concurrent appends and retries, cancelled
//! reads, and shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq};
use missive_store::{NewAccount, PendingRequest, Store, StoreError};

use crate::support::*;

/// 10. Concurrent appends.
pub(crate) async fn concurrent_appends(store: Arc<dyn Store>) {
    // Goal: concurrent appends into one conversation still get gap-free,
    // unique seqs, every device's pending is in seq order, and
    // concurrent retries are all recognised.
    // Method: 8 tasks over 4 devices (2 per member) each append 50
    // distinct client_msg_ids at once; then check seqs 1..=400, the
    // (device, client_msg_id) ↔ seq mapping seen in pending, and its
    // order. Then 8 tasks retry a spread of those sends at once.
    let total = (TASKS * PER_TASK) as i64;
    let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(&*store, ["a1", "a2", "b1", "b2"]).await;
    let senders = [(alice, a1), (alice, a2), (bob, b1), (bob, b2)];

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let (account, device) = senders[task % senders.len()];
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for k in 0..PER_TASK {
                let cmid = format!("t{task}-{k}");
                let appended = send(&*store, conv, account, device, &cmid).await;
                assert!(!appended.duplicate);
                sent.push((device, cmid, appended.seq, appended.message_id));
            }
            sent
        }));
    }
    let mut sent: Vec<Sent> = Vec::new();
    for task in tasks {
        sent.extend(task.await.expect("task panicked"));
    }
    let mut seqs: Vec<Seq> = sent.iter().map(|s| s.2).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "seqs are not exactly 1..=400"
    );
    let distinct_ids: HashSet<&MessageId> = sent.iter().map(|s| &s.3).collect();
    assert_eq!(distinct_ids.len(), sent.len());
    // Each task's own sends got increasing seqs (it awaited each one).
    for task in 0..TASKS {
        let own: Vec<Seq> = sent
            .iter()
            .filter(|s| s.1.starts_with(&format!("t{task}-")))
            .map(|s| s.2)
            .collect();
        assert!(own.windows(2).all(|w| w[0] < w[1]), "task {task}: {own:?}");
    }

    pending_matches_the_sends(&*store, conv, senders, &sent).await;
    retried_at_once(&store, conv, senders, &sent).await;
    assert_eq!(send(&*store, conv, alice, a1, "last").await.seq, total + 1);
}

/// [`concurrent_appends`]: tasks, and texts each task sends.
const TASKS: usize = 8;
const PER_TASK: usize = 50;

/// One text of [`concurrent_appends`]: (sending device, client_msg_id,
/// seq, message id).
type Sent = (DeviceId, String, Seq, MessageId);

/// [`concurrent_appends`]: what waits for each sending device is every
/// other device's text, in seq order, as it was sent.
async fn pending_matches_the_sends(
    store: &dyn Store,
    conv: ConversationId,
    senders: [(AccountId, DeviceId); 4],
    sent: &[Sent],
) {
    let total = (TASKS * PER_TASK) as i64;
    // What pending says, per seq: (from_device, client_msg_id, message_id).
    let by_seq: HashMap<Seq, (DeviceId, String, MessageId)> = sent
        .iter()
        .map(|(device, cmid, seq, id)| (*seq, (*device, cmid.clone(), id.clone())))
        .collect();
    let mut seen_pairs: HashSet<(DeviceId, String)> = HashSet::new();
    for (_, device) in senders {
        let mut pending_seqs = Vec::new();
        for event in events(&pending_all(store, device).await) {
            assert_eq!(event.conversation, conv);
            assert_ne!(event.from_device, device, "a device got its own message");
            assert_eq!(
                by_seq.get(&event.seq),
                Some(&(
                    event.from_device,
                    event.client_msg_id.clone(),
                    event.message_id.clone()
                )),
                "seq {} waiting for device {device}",
                event.seq
            );
            seen_pairs.insert((event.from_device, event.client_msg_id.clone()));
            pending_seqs.push(event.seq);
        }
        let expected = sent.iter().filter(|s| s.0 != device).count();
        assert_eq!(
            pending_seqs.len(),
            expected,
            "device {device}: how many wait"
        );
        assert!(
            pending_seqs.windows(2).all(|w| w[0] < w[1]),
            "device {device}: pending order differs from seq order"
        );
        assert_eq!(waiting(store, device).await, total as u64);
    }
    assert_eq!(
        seen_pairs.len(),
        sent.len(),
        "(device, client_msg_id) pairs are not unique"
    );
}

/// [`concurrent_appends`]: every task retries each fifth of its sends, all
/// tasks at once.
async fn retried_at_once(
    store: &Arc<dyn Store>,
    conv: ConversationId,
    senders: [(AccountId, DeviceId); 4],
    sent: &[Sent],
) {
    // Concurrent retries: all duplicates with their original seq; nothing stored.
    let mut retries = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(store);
        let (account, device) = senders[task % senders.len()];
        let originals: Vec<(String, Seq, MessageId)> = sent
            .iter()
            .filter(|s| s.1.starts_with(&format!("t{task}-")))
            .step_by(5)
            .map(|s| (s.1.clone(), s.2, s.3.clone()))
            .collect();
        retries.push(tokio::spawn(async move {
            for (cmid, seq, id) in originals {
                let again = send(&*store, conv, account, device, &cmid).await;
                assert!(again.duplicate, "retry of {cmid}");
                assert_eq!((again.seq, again.message_id), (seq, id));
            }
        }));
    }
    for retry in retries {
        retry.await.expect("retry task panicked");
    }
}

/// Goal: a read whose caller gives up half-way (a session ending while
/// its backlog is being read) never makes later reads fail. Method: 20
/// rounds of starting 32 reads and aborting them at once, each followed
/// by 32 reads that must all succeed.
pub(crate) async fn cancelled_reads_leave_the_store_usable(store: Arc<dyn Store>) {
    let Cast(alice, bob, conv, [a1, b1]) = cast(&*store, ["a1", "b1"]).await;
    let sent = send(&*store, conv, alice, a1, "m1").await;
    let spawn_reads = |n: usize| -> Vec<tokio::task::JoinHandle<_>> {
        (0..n)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .pending(PendingRequest {
                            device: b1,
                            account: bob,
                            after: vec![],
                            limit: ALL,
                            expired_before_ms: NO_EXPIRY,
                        })
                        .await
                })
            })
            .collect()
    };
    for _ in 0..20 {
        let doomed = spawn_reads(32);
        tokio::task::yield_now().await;
        for read in &doomed {
            read.abort();
        }
        for read in spawn_reads(32) {
            let page = read
                .await
                .expect("join")
                .expect("a read after cancelled reads must succeed");
            assert_eq!(event_ids(&page.items), vec![sent.message_id.clone()]);
        }
    }
}

/// 11. Lifecycle (extra).
pub(crate) async fn shutdown_refuses_further_calls(store: Arc<dyn Store>) {
    // Goal: a store is ready while open; after shutdown every call is
    // refused with `Closed` (never silently dropped) and is_ready is false.
    // Method: write, shut down, then try a write and a read.
    assert!(store.is_ready().await);
    let alice = new_account(&*store, "alice").await;
    store.shutdown().await;
    assert!(!store.is_ready().await);
    let write = store
        .create_account(NewAccount {
            username: username("bob"),
            password_hash: "h".into(),
            phone: None,
            now_ms: NOW,
            invite: None,
        })
        .await;
    assert_eq!(write, Err(StoreError::Closed));
    assert_eq!(store.list_devices(alice).await, Err(StoreError::Closed));
}
