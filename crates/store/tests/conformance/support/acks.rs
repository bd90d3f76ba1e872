//! Helpers for acks and receipt cursors, sweeps, and the contact and block
//! relations.

use missive_core::{AccountId, ConversationId, DeviceId, Seq, UnixMillis};
use missive_store::{
    AckOutcome, AckRequest, ReadOutcome, ReadRequest, ReceiptMoved, Relation, Store, SweepOutcome,
    SweepRequest,
};

use super::{ACK_NOW, NOW};

pub(crate) fn ack_request(
    device: DeviceId,
    account: AccountId,
    points: Vec<(ConversationId, Seq)>,
    purge_delivered_bodies: bool,
) -> AckRequest {
    AckRequest {
        device,
        account,
        points,
        purge_delivered_bodies,
        now_ms: ACK_NOW,
    }
}

/// Acks `points` at `ACK_NOW`; panics on refusal. The outcome comes
/// back normalised (see [`normalised`]).
pub(crate) async fn ack(
    store: &dyn Store,
    device: DeviceId,
    account: AccountId,
    points: Vec<(ConversationId, Seq)>,
    purge: bool,
) -> AckOutcome {
    let outcome = store
        .ack(ack_request(device, account, points, purge))
        .await
        .expect("ack");
    normalised(outcome)
}

/// Acks `points` at `now_ms` (no purge); normalised outcome.
pub(crate) async fn ack_at(
    store: &dyn Store,
    device: DeviceId,
    account: AccountId,
    points: Vec<(ConversationId, Seq)>,
    now_ms: UnixMillis,
) -> AckOutcome {
    let request = AckRequest {
        now_ms,
        ..ack_request(device, account, points, false)
    };
    normalised(store.ack(request).await.expect("ack"))
}

/// An ack outcome with its positions sorted, its receipts sorted by
/// conversation and each receipt's `notify` sorted: the order of those
/// lists is not part of the contract.
pub(crate) fn normalised(mut outcome: AckOutcome) -> AckOutcome {
    outcome.positions.sort();
    outcome.receipts = outcome.receipts.into_iter().map(normal_receipt).collect();
    outcome
        .receipts
        .sort_by(|a, b| (a.conversation, &a.by).cmp(&(b.conversation, &b.by)));
    outcome
}

fn normal_receipt(mut moved: ReceiptMoved) -> ReceiptMoved {
    moved.notify.sort();
    moved
}

/// The outcome of an ack that moved positions to `positions` and
/// cursors by `receipts`.
pub(crate) fn acked(
    positions: Vec<(ConversationId, Seq)>,
    receipts: Vec<ReceiptMoved>,
) -> AckOutcome {
    normalised(AckOutcome {
        positions,
        receipts,
    })
}

/// A cursor move of `by` to `seq` at `ts_ms`, told to `notify`.
pub(crate) fn moved(
    conversation: ConversationId,
    by: &str,
    seq: Seq,
    ts_ms: UnixMillis,
    notify: Vec<DeviceId>,
) -> ReceiptMoved {
    normal_receipt(ReceiptMoved {
        conversation,
        by: by.to_owned(),
        seq,
        ts_ms,
        notify,
    })
}

/// Moves `account`'s read pointer in `conversation` at `now_ms`; the
/// outcome's `notify` sorted.
pub(crate) async fn read_up_to(
    store: &dyn Store,
    account: AccountId,
    conversation: ConversationId,
    seq: Seq,
    now_ms: UnixMillis,
) -> ReadOutcome {
    let mut outcome = store
        .mark_read(ReadRequest {
            account,
            conversation,
            seq,
            now_ms,
        })
        .await
        .expect("mark_read");
    outcome.moved = outcome.moved.map(normal_receipt);
    outcome
}

/// A sweep that must succeed.
pub(crate) async fn sweep(
    store: &dyn Store,
    now_ms: UnixMillis,
    bodies_before_ms: UnixMillis,
    undelivered_before_ms: UnixMillis,
    dedup_before_ms: UnixMillis,
    limit: usize,
) -> SweepOutcome {
    store
        .sweep(SweepRequest {
            now_ms,
            bodies_before_ms,
            undelivered_before_ms,
            dedup_before_ms,
            limit,
        })
        .await
        .expect("sweep")
}

pub(crate) fn swept(purged_bodies: u64, purged_dedup: u64) -> SweepOutcome {
    SweepOutcome {
        purged_bodies,
        purged_dedup,
    }
}

pub(crate) async fn set_relation(
    store: &dyn Store,
    relation: Relation,
    from: AccountId,
    to: AccountId,
    present: bool,
) -> bool {
    store
        .set_relation(relation, from, to, present, NOW)
        .await
        .expect("set relation")
}

/// `owner`'s list of `relation`.
pub(crate) async fn relation_list(
    store: &dyn Store,
    relation: Relation,
    owner: AccountId,
) -> Vec<String> {
    store.related(relation, owner).await.expect("relation list")
}
