//! The model-based property test: random appends, acks and reads checked
//! against a trivial model of positions and cursors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq, UnixMillis};
use missive_store::{AckOutcome, ReadOutcome, Store, StoreError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

use crate::Opened;
use crate::support::*;

/// One step of the model-based test. Devices: 0 = alice's a1, 1 and 2
/// = bob's b1 and b2.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// A text from device `from`; `cmid` repeats make retries.
    Send { from: usize, cmid: u8 },
    /// `device` acks up to a seq picked among 0..=last + 1 (the last
    /// one out of range).
    Ack { device: usize, seq: Index },
    /// alice or bob marks read up to a seq picked among 0..=last + 1.
    Read { bob: bool, seq: Index },
}

pub(crate) fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0usize..3, 0u8..6).prop_map(|(from, cmid)| Op::Send { from, cmid }),
        2 => (0usize..3, any::<Index>()).prop_map(|(device, seq)| Op::Ack { device, seq }),
        1 => (any::<bool>(), any::<Index>()).prop_map(|(bob, seq)| Op::Read { bob, seq }),
    ];
    proptest::collection::vec(op, 1..48)
}

/// Runs [`model_based`] as a property test of 32 cases, each against a
/// fresh store from `open` (a case whose `open` gives `None` passes without
/// running: the backend skipped it). Failing cases are remembered in
/// `model.proptest-regressions` beside this file, for every backend.
pub(crate) fn check<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<Opened>>,
{
    let config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(32)
    };
    proptest!(config, |(ops in ops())| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let Some(opened) = open().await else {
                return;
            };
            model_based(Arc::clone(&opened.store), ops).await;
            opened.store.shutdown().await;
        });
    });
}

/// 9. Model-based test.
pub(crate) async fn model_based(store: Arc<dyn Store>, ops: Vec<Op>) {
    // Goal: under any interleaving of appends (with retries) from three
    // devices of two accounts, cumulative acks (some out of range) and
    // read marks, the store agrees with a trivial model: positions per
    // device, delivered and read cursors per account, and who is told
    // of a cursor move (the other account's devices, if it authored a
    // text in the newly covered range).
    // Method: alice (a1) and bob (b1, b2) in one conversation. Apply
    // `ops`; after every op compare every answer, every device's
    // pending events and `waiting`, and both accounts' cursors.
    let store = &*store;
    let Cast(alice, bob, conv, [a1, b1, b2]) = cast(store, ["a1", "b1", "b2"]).await;
    let mut model = Model {
        conv,
        devices: [a1, b1, b2],
        accounts: [alice, bob],
        texts: Vec::new(),
        originals: HashMap::new(),
        position: [0; 3],
        delivered: [0; 2],
        read: [0; 2],
    };
    for (step, op) in ops.into_iter().enumerate() {
        let now = NOW + step as i64;
        match op {
            Op::Send { from, cmid } => model.send(store, step, now, from, cmid).await,
            Op::Ack { device, seq } => model.ack(store, step, now, device, seq).await,
            Op::Read { bob: by_bob, seq } => model.read(store, step, now, by_bob, seq).await,
        }
        // Invariants after every step.
        model.check(store, step).await;
    }
}

/// The usernames of the model's accounts: 0 = alice, 1 = bob.
const NAMES: [&str; 2] = ["alice", "bob"];

/// The account (0 = alice, 1 = bob) owning device `device`.
fn owner(device: usize) -> usize {
    usize::from(device > 0)
}

/// What the store must agree with after every step.
struct Model {
    conv: ConversationId,
    devices: [DeviceId; 3],
    accounts: [AccountId; 2],
    /// texts[seq - 1] = (sending device, message id).
    texts: Vec<(usize, MessageId)>,
    originals: HashMap<(usize, u8), (MessageId, Seq, UnixMillis)>,
    position: [Seq; 3],
    delivered: [Seq; 2],
    read: [Seq; 2],
}

impl Model {
    fn last(&self) -> Seq {
        self.texts.len() as Seq
    }

    fn devices_of(&self, account: usize) -> Vec<DeviceId> {
        if account == 0 {
            vec![self.devices[0]]
        } else {
            vec![self.devices[1], self.devices[2]]
        }
    }

    /// Who is told when `account`'s cursor moves over (from, to].
    fn told(&self, account: usize, from: Seq, to: Seq) -> Vec<DeviceId> {
        let other = 1 - account;
        let authored = self.texts[from as usize..to as usize]
            .iter()
            .any(|(device, _)| owner(*device) == other);
        if authored {
            self.devices_of(other)
        } else {
            vec![]
        }
    }

    async fn send(
        &mut self,
        store: &dyn Store,
        step: usize,
        now: UnixMillis,
        from: usize,
        cmid: u8,
    ) {
        let last = self.last();
        let account = self.accounts[owner(from)];
        let message = new_message(
            self.conv,
            account,
            self.devices[from],
            &format!("c{cmid}"),
            now,
        );
        let appended = append_ok(store, message).await;
        if let Some((id, seq, ts)) = self.originals.get(&(from, cmid)) {
            assert!(appended.duplicate, "step {step}: retry not recognised");
            assert_eq!(
                (&appended.message_id, appended.seq, appended.ts_ms),
                (id, *seq, *ts),
                "step {step}: retry answered differently"
            );
            assert!(appended.recipients.is_empty());
        } else {
            assert!(
                !appended.duplicate,
                "step {step}: first send taken for a retry"
            );
            assert_eq!(appended.seq, last + 1, "step {step}: seq gap or repeat");
            assert_eq!(appended.ts_ms, now);
            let others: Vec<DeviceId> = (0..3)
                .filter(|d| *d != from)
                .map(|d| self.devices[d])
                .collect();
            assert_eq!(sorted(appended.recipients.clone()), sorted(others));
            self.originals.insert(
                (from, cmid),
                (appended.message_id.clone(), appended.seq, now),
            );
            self.texts.push((from, appended.message_id));
        }
    }

    async fn ack(
        &mut self,
        store: &dyn Store,
        step: usize,
        now: UnixMillis,
        device: usize,
        seq: Index,
    ) {
        let last = self.last();
        let seq = seq.index(last as usize + 2) as Seq;
        let account = owner(device);
        let (acker, acking) = (self.devices[device], self.accounts[account]);
        let answer = ack_at_checked(store, acker, acking, self.conv, seq, now).await;
        if seq > last {
            assert_eq!(answer, Err(StoreError::SeqOutOfRange), "step {step}");
        } else {
            self.position[device] = self.position[device].max(seq);
            let mut receipts = Vec::new();
            if seq > self.delivered[account] {
                let notify = self.told(account, self.delivered[account], seq);
                receipts.push(moved(self.conv, NAMES[account], seq, now, notify));
                self.delivered[account] = seq;
            }
            assert_eq!(
                answer,
                Ok(acked(vec![(self.conv, self.position[device])], receipts)),
                "step {step}: device {device} acks {seq}"
            );
        }
    }

    async fn read(
        &mut self,
        store: &dyn Store,
        step: usize,
        now: UnixMillis,
        by_bob: bool,
        seq: Index,
    ) {
        let last = self.last();
        let seq = seq.index(last as usize + 2) as Seq;
        let account = usize::from(by_bob);
        let outcome = read_up_to(store, self.accounts[account], self.conv, seq, now).await;
        let to = seq.min(last);
        let moved_now = (to > self.read[account]).then(|| {
            let notify = self.told(account, self.read[account], to);
            moved(self.conv, NAMES[account], to, now, notify)
        });
        self.read[account] = self.read[account].max(to);
        assert_eq!(
            outcome,
            ReadOutcome {
                seq: self.read[account],
                moved: moved_now
            },
            "step {step}: {} reads {seq}",
            NAMES[account]
        );
    }

    /// Every device's pending events and `waiting`, both accounts'
    /// cursors, and gap-free seqs.
    async fn check(&self, store: &dyn Store, step: usize) {
        let last = self.last();
        for (d, device) in self.devices.iter().enumerate() {
            let expected: Vec<MessageId> = self
                .texts
                .iter()
                .enumerate()
                .filter(|(i, (from, _))| *i as Seq + 1 > self.position[d] && *from != d)
                .map(|(_, (_, id))| id.clone())
                .collect();
            assert_eq!(
                pending_ids(store, *device).await,
                expected,
                "step {step}: what waits for device {d}"
            );
            assert_eq!(
                waiting(store, *device).await,
                (last - self.position[d]) as u64,
                "step {step}: waiting of device {d}"
            );
        }
        let [alice, bob] = self.accounts;
        assert_eq!(
            cursors(store, alice, self.conv).await,
            vec![cursor("bob", self.delivered[1], self.read[1])],
            "step {step}: bob's cursors"
        );
        assert_eq!(
            cursors(store, bob, self.conv).await,
            vec![cursor("alice", self.delivered[0], self.read[0])],
            "step {step}: alice's cursors"
        );
        let mut seqs: Vec<Seq> = self.originals.values().map(|(_, seq, _)| *seq).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "step {step}: seqs have gaps"
        );
    }
}

/// One point acked at `now_ms`, the answer normalised.
async fn ack_at_checked(
    store: &dyn Store,
    device: DeviceId,
    account: AccountId,
    conv: ConversationId,
    seq: Seq,
    now_ms: UnixMillis,
) -> Result<AckOutcome, StoreError> {
    let request = missive_store::AckRequest {
        now_ms,
        ..ack_request(device, account, vec![(conv, seq)], false)
    };
    store.ack(request).await.map(normalised)
}
