//! What waits for one live connection, in one small shared struct:
//! committed events handed over by the send path, ephemeral frames, the
//! order to close, and whether the store may hold more than was handed
//! over. The router fills it; the connection (the one task that writes to
//! its socket) takes from it.
//!
//! It replaces a channel per kind: a bounded channel allocates its first
//! block of slots when it is made and keeps it for the connection's life,
//! and almost every connection is idle almost all the time. Here the
//! queues start empty and unallocated, and whoever takes from them takes
//! their buffers too (`std::mem::take`), so an idle connection holds none.
//! One wake-up covers everything: the connection looks at all of it each
//! time it wakes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use missive_proto::CloseCode;
use tokio::sync::Notify;

use crate::router::LiveEvent;

/// Ephemeral frames waiting for one connection; more are dropped.
pub const EPHEMERAL_FRAMES_MAX: usize = 64;
/// Committed events handed to one connection and not yet taken; beyond
/// this the connection is told to read the store instead. Small: a
/// connection that stopped reading holds this many frames on top of its
/// outbound buffer (256 measured +29 MiB of peak RSS under the
/// slow-consumer flood against +15 MiB at 32), and overflowing costs only
/// a store read.
pub const LIVE_EVENTS_MAX: usize = 32;

#[derive(Default)]
pub struct Mailbox {
    inbox: Mutex<Inbox>,
    /// The connection waits here: anything to write, a reason to read the
    /// store, or an order to close.
    news: Notify,
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<Arc<LiveEvent>>,
    ephemeral: VecDeque<Arc<str>>,
    /// The store may hold events that were not handed over (a full inbox,
    /// a wake-up from another node, a bus that was away).
    read_store: bool,
    /// The first order to close wins.
    close: Option<CloseCode>,
}

/// Committed events taken at once, and whether the store must be read too.
#[derive(Default)]
pub struct Deliveries {
    pub events: VecDeque<Arc<LiveEvent>>,
    pub read_store: bool,
}

impl Deliveries {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.read_store
    }
}

impl Mailbox {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Hands over a committed event; a full inbox drops it and asks for a
    /// store read instead (the event is stored, so nothing is lost).
    pub fn offer_event(&self, event: Arc<LiveEvent>) {
        let mut inbox = self.lock();
        if inbox.events.len() < LIVE_EVENTS_MAX {
            inbox.events.push_back(event);
        } else {
            inbox.read_store = true;
        }
        drop(inbox);
        self.news.notify_one();
    }

    /// The store may hold more for this connection than was handed over.
    pub fn wake(&self) {
        self.lock().read_store = true;
        self.news.notify_one();
    }

    /// Queues an ephemeral frame; a full inbox drops it (ephemeral frames
    /// may be lost). Returns whether it was kept.
    pub fn offer_ephemeral(&self, frame: Arc<str>) -> bool {
        let mut inbox = self.lock();
        let kept = inbox.ephemeral.len() < EPHEMERAL_FRAMES_MAX;
        if kept {
            inbox.ephemeral.push_back(frame);
        }
        drop(inbox);
        self.news.notify_one();
        kept
    }

    /// Orders the connection closed with `code`, unless it already was.
    pub fn order_close(&self, code: CloseCode) {
        self.lock().close.get_or_insert(code);
        self.news.notify_one();
    }

    pub fn close_ordered(&self) -> Option<CloseCode> {
        self.lock().close
    }

    /// Takes the events waiting and the request to read the store.
    pub fn take_deliveries(&self) -> Deliveries {
        let mut inbox = self.lock();
        Deliveries {
            events: std::mem::take(&mut inbox.events),
            read_store: std::mem::take(&mut inbox.read_store),
        }
    }

    pub fn take_ephemeral(&self) -> VecDeque<Arc<str>> {
        std::mem::take(&mut self.lock().ephemeral)
    }

    /// Takes the ephemeral frames and, if `deliveries`, the events and the
    /// request to read the store too, under one lock.
    pub fn take(&self, deliveries: bool) -> (VecDeque<Arc<str>>, Deliveries) {
        let mut inbox = self.lock();
        let ephemeral = std::mem::take(&mut inbox.ephemeral);
        if !deliveries {
            return (ephemeral, Deliveries::default());
        }
        let taken = Deliveries {
            events: std::mem::take(&mut inbox.events),
            read_store: std::mem::take(&mut inbox.read_store),
        };
        (ephemeral, taken)
    }

    /// Resolves once something may be waiting (look with the methods
    /// above; a wake-up sent while nobody waited is kept for the next
    /// wait).
    pub async fn news(&self) {
        self.news.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding it; a poisoned lock still holds
        // consistent queues.
        self.inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::ConversationId;

    fn event(seq: i64) -> Arc<LiveEvent> {
        Arc::new(LiveEvent {
            conversation: ConversationId(3),
            seq,
            frame: Arc::from("{}"),
        })
    }

    #[tokio::test]
    async fn a_full_inbox_asks_for_the_store_and_a_wake_up_sent_before_the_wait_is_kept() {
        // Goal: nothing handed over is silently lost (overflow becomes a
        // store read), and a notification that raced ahead of the wait
        // still ends it.
        let mailbox = Mailbox::new();
        for seq in 1..=LIVE_EVENTS_MAX as i64 + 1 {
            mailbox.offer_event(event(seq));
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), mailbox.news())
            .await
            .expect("the wake-up sent before waiting is kept");
        let taken = mailbox.take_deliveries();
        assert_eq!(taken.events.len(), LIVE_EVENTS_MAX);
        assert_eq!(
            taken.events.back().map(|e| e.seq),
            Some(LIVE_EVENTS_MAX as i64)
        );
        assert!(
            taken.read_store,
            "the overflowing event is read from the store"
        );
        assert!(mailbox.take_deliveries().is_empty(), "taking empties it");
    }

    #[test]
    fn ephemeral_frames_are_bounded_and_the_first_close_wins() {
        let mailbox = Mailbox::new();
        for i in 0..EPHEMERAL_FRAMES_MAX {
            assert!(mailbox.offer_ephemeral(Arc::from(i.to_string())));
        }
        assert!(!mailbox.offer_ephemeral(Arc::from("one too many")));
        assert_eq!(mailbox.take_ephemeral().len(), EPHEMERAL_FRAMES_MAX);
        assert_eq!(mailbox.close_ordered(), None);
        mailbox.order_close(CloseCode::Replaced);
        mailbox.order_close(CloseCode::Revoked);
        assert_eq!(mailbox.close_ordered(), Some(CloseCode::Replaced));
    }
}
