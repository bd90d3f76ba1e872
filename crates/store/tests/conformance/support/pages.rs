//! Helpers for `pending` pages: reading them, walking them page by page,
//! and projecting their items.

use std::collections::BTreeMap;

use missive_core::{ConversationId, DeviceId, MessageId, Seq, UnixMillis};
use missive_store::{Pending, PendingItem, PendingRequest, RevokedDevice, Store, StoredEvent};

use super::{ALL, NO_EXPIRY, account_of};

/// One page of what waits for the device (its account looked up).
pub(crate) async fn pending_page(
    store: &dyn Store,
    device: DeviceId,
    after: &[(ConversationId, Seq)],
    limit: usize,
    expired_before_ms: UnixMillis,
) -> Pending {
    let account = account_of(store, device).await;
    let read = store.pending(PendingRequest {
        device,
        account,
        after: after.to_vec(),
        limit,
        expired_before_ms,
    });
    // A scan that never ends (a cursor that stops moving) fails here
    // instead of hanging the suite.
    tokio::time::timeout(PENDING_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("pending for device {device} did not answer in time"))
        .expect("pending")
}

/// How long one `pending` call may take before the suite gives up on it.
const PENDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything waiting for the device, nothing expired by age.
pub(crate) async fn pending_all(store: &dyn Store, device: DeviceId) -> Vec<PendingItem> {
    let page = pending_page(store, device, &[], ALL, NO_EXPIRY).await;
    assert!(
        !page.more,
        "device {device}: a page of {} items said more waits",
        page.items.len()
    );
    page.items
}

/// The events of `items`, in page order; panics on an `Expired` item.
pub(crate) fn events(items: &[PendingItem]) -> Vec<StoredEvent> {
    items
        .iter()
        .map(|item| match item {
            PendingItem::Event(event) => event.clone(),
            expired => panic!("unexpected {expired:?}"),
        })
        .collect()
}

/// message ids of the events of `items`; panics on an `Expired` item.
pub(crate) fn event_ids(items: &[PendingItem]) -> Vec<MessageId> {
    events(items).into_iter().map(|e| e.message_id).collect()
}

/// message ids of everything waiting for the device.
pub(crate) async fn pending_ids(store: &dyn Store, device: DeviceId) -> Vec<MessageId> {
    event_ids(&pending_all(store, device).await)
}

/// (conversation, seq) each item stands for, in page order.
pub(crate) fn points(items: &[PendingItem]) -> Vec<(ConversationId, Seq)> {
    items.iter().map(PendingItem::point).collect()
}

/// The shape of a pending item: an event at (conversation, seq), or an
/// expired range (conversation, from_seq, to_seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Ev(ConversationId, Seq),
    Ex(ConversationId, Seq, Seq),
}

pub(crate) fn shapes(items: &[PendingItem]) -> Vec<Shape> {
    items
        .iter()
        .map(|item| match item {
            PendingItem::Event(event) => Shape::Ev(event.conversation, event.seq),
            PendingItem::Expired {
                conversation,
                from_seq,
                to_seq,
            } => Shape::Ex(*conversation, *from_seq, *to_seq),
        })
        .collect()
}

/// Per-conversation expectations joined in conversation id order (the
/// order `pending` reads conversations in).
pub(crate) fn in_conversation_order(mut blocks: Vec<(ConversationId, Vec<Shape>)>) -> Vec<Shape> {
    blocks.sort_by_key(|(conversation, _)| *conversation);
    blocks.into_iter().flat_map(|(_, shapes)| shapes).collect()
}

/// `items` with adjacent `Expired` ranges of one conversation joined
/// (a range split across two pages is still one range).
pub(crate) fn merge_expired(items: Vec<PendingItem>) -> Vec<PendingItem> {
    let mut merged: Vec<PendingItem> = Vec::with_capacity(items.len());
    for item in items {
        if let PendingItem::Expired {
            conversation,
            from_seq,
            to_seq,
        } = &item
        {
            if let Some(PendingItem::Expired {
                conversation: last_conv,
                to_seq: last_to,
                ..
            }) = merged.last_mut()
            {
                if *last_conv == *conversation && *last_to + 1 == *from_seq {
                    *last_to = *to_seq;
                    continue;
                }
            }
        }
        merged.push(item);
    }
    merged
}

/// Reads everything waiting for the device in pages of `limit` the way a
/// connection does (each call passes, per conversation, the highest
/// `scanned` so far as `after`), checking every page: at most `limit`
/// items, `more` whenever the page stopped short of the end, items
/// above the `after` they were asked with and covered by `scanned`,
/// `scanned` never moving back. Returns the pages' items joined (with
/// split expired ranges merged).
pub(crate) async fn walk(
    store: &dyn Store,
    device: DeviceId,
    limit: usize,
    expired_before_ms: UnixMillis,
) -> Vec<PendingItem> {
    let mut after: BTreeMap<ConversationId, Seq> = BTreeMap::new();
    let mut items = Vec::new();
    for call in 0.. {
        assert!(call < 10_000, "device {device}: pages never end");
        let asked: Vec<(ConversationId, Seq)> = after.iter().map(|(c, s)| (*c, *s)).collect();
        let page = pending_page(store, device, &asked, limit, expired_before_ms).await;
        let what = format!("device {device}, limit {limit}, call {call} after {asked:?}");
        assert!(page.items.len() <= limit, "{what}: {page:?}");
        if page.items.len() < limit {
            assert!(!page.more, "{what}: a short page said more waits: {page:?}");
        }
        for item in &page.items {
            let (conversation, last) = item.point();
            let first = match item {
                PendingItem::Event(event) => event.seq,
                PendingItem::Expired { from_seq, .. } => *from_seq,
            };
            let above = after.get(&conversation).copied().unwrap_or(0);
            assert!(first > above, "{what}: {item:?} is not above {above}");
            let scanned = page
                .scanned
                .iter()
                .find(|(c, _)| *c == conversation)
                .map(|(_, s)| *s);
            assert!(
                scanned.is_some_and(|s| s >= last),
                "{what}: {item:?} lies beyond scanned {:?}",
                page.scanned
            );
        }
        for (conversation, seq) in &page.scanned {
            let before = after.insert(*conversation, *seq);
            assert!(
                before.is_none_or(|b| b <= *seq),
                "{what}: scanned moved back in {conversation}: {before:?} -> {seq}"
            );
        }
        items.extend(page.items);
        if !page.more {
            break;
        }
    }
    merge_expired(items)
}

/// The device's waiting event `message_id`.
pub(crate) async fn pending_event(
    store: &dyn Store,
    device: DeviceId,
    message_id: &MessageId,
) -> StoredEvent {
    pending_all(store, device)
        .await
        .into_iter()
        .find_map(|item| match item {
            PendingItem::Event(event) if event.message_id == *message_id => Some(event),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{message_id} is not waiting for device {device}"))
}

pub(crate) fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// The devices a revocation removed, without what it said of each.
pub(crate) fn device_ids(revoked: Vec<RevokedDevice>) -> Vec<DeviceId> {
    revoked.into_iter().map(|r| r.device).collect()
}
