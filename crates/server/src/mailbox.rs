//! What waits for one live connection, in one small shared struct:
//! committed events handed over by the send path, ephemeral frames, the
//! session's replies, the order to close, and whether the store may hold
//! more than was handed over. The router and the session fill it; the
//! connection's delivery (the one part that writes to the socket) takes
//! from it.
//!
//! It replaces a channel per kind: a bounded channel allocates its first
//! block of slots when it is made and keeps it for the connection's life,
//! and almost every connection is idle almost all the time. Here the
//! queues start empty and unallocated, and whoever takes from them takes
//! their buffers too (`std::mem::take`), so an idle connection holds none.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use missive_proto::{CloseCode, ServerFrame};
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
    /// The delivering side waits here: anything to write, or a reason to
    /// read the store.
    deliveries: Notify,
    /// The session waits here: an order to close, or room for its replies.
    session: Notify,
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
    /// The session's replies, in order (bounded by the session).
    replies: VecDeque<Box<ServerFrame>>,
    /// The session found no room for a reply and waits for some.
    session_waits: bool,
    /// The session is over: write what it queued, then this close frame
    /// (if any), and stop.
    finished: Option<Option<CloseCode>>,
    /// The delivering side stopped (the socket failed, or a slow consumer).
    delivery_ended: bool,
}

/// Everything waiting for a WebSocket connection's delivery, taken at once.
pub struct News {
    pub ephemeral: VecDeque<Arc<str>>,
    pub replies: VecDeque<Box<ServerFrame>>,
    pub events: VecDeque<Arc<LiveEvent>>,
    pub read_store: bool,
    pub finished: Option<Option<CloseCode>>,
}

impl News {
    pub fn is_empty(&self) -> bool {
        self.ephemeral.is_empty()
            && self.replies.is_empty()
            && self.events.is_empty()
            && !self.read_store
            && self.finished.is_none()
    }
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
        self.deliveries.notify_one();
    }

    /// The store may hold more for this connection than was handed over.
    pub fn wake(&self) {
        self.lock().read_store = true;
        self.deliveries.notify_one();
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
        self.deliveries.notify_one();
        kept
    }

    /// Queues the session's replies while fewer than `max` wait; the first
    /// that finds no room comes back (wait for [`Self::session_news`] and
    /// offer it again).
    pub fn push_replies(
        &self,
        replies: impl Iterator<Item = Box<ServerFrame>>,
        max: usize,
    ) -> Result<(), Box<ServerFrame>> {
        let mut inbox = self.lock();
        let mut outcome = Ok(());
        for reply in replies {
            if inbox.replies.len() >= max {
                inbox.session_waits = true;
                outcome = Err(reply);
                break;
            }
            inbox.replies.push_back(reply);
        }
        let any = !inbox.replies.is_empty();
        drop(inbox);
        if any {
            self.deliveries.notify_one();
        }
        outcome
    }

    /// The session is over: the delivery writes what was queued, then the
    /// close frame (if any), and stops.
    pub fn finish(&self, close: Option<CloseCode>) {
        self.lock().finished.get_or_insert(close);
        self.deliveries.notify_one();
    }

    /// Called by the delivery as it stops; wakes a session waiting for room.
    pub fn delivery_ended(&self) {
        self.lock().delivery_ended = true;
        self.session.notify_one();
    }

    pub fn has_delivery_ended(&self) -> bool {
        self.lock().delivery_ended
    }

    /// Wakes the session again (a wake-up it took while waiting for room
    /// may have carried an order to close, which its main loop must see).
    pub fn renotify_session(&self) {
        self.session.notify_one();
    }

    /// Takes everything waiting for a WebSocket connection's delivery, and
    /// tells a session waiting for room that there is some.
    pub fn take_news(&self) -> News {
        let mut inbox = self.lock();
        let news = News {
            ephemeral: std::mem::take(&mut inbox.ephemeral),
            replies: std::mem::take(&mut inbox.replies),
            events: std::mem::take(&mut inbox.events),
            read_store: std::mem::take(&mut inbox.read_store),
            finished: inbox.finished,
        };
        let room = !news.replies.is_empty() && std::mem::take(&mut inbox.session_waits);
        drop(inbox);
        if room {
            self.session.notify_one();
        }
        news
    }

    /// Orders the connection closed with `code`, unless it already was.
    pub fn order_close(&self, code: CloseCode) {
        self.lock().close.get_or_insert(code);
        self.session.notify_one();
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

    /// Resolves once something may be waiting for the delivery (check with
    /// [`Self::take_news`] or [`Self::take_deliveries`]; a wake-up sent
    /// while nobody waited is kept for the next wait).
    pub async fn deliveries_waiting(&self) {
        self.deliveries.notified().await;
    }

    /// Resolves once an order to close, room for replies, or the end of
    /// the delivery may be waiting.
    pub async fn session_news(&self) {
        self.session.notified().await;
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
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            mailbox.deliveries_waiting(),
        )
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

    #[tokio::test]
    async fn replies_are_bounded_and_taking_them_makes_room_for_a_waiting_session() {
        // Goal: the session's backpressure: past the bound a reply comes
        // back, and the delivery taking the queue wakes the session.
        let mailbox = Mailbox::new();
        let pong = |n: usize| {
            Box::new(ServerFrame::Pong {
                id: Some(n.to_string()),
            })
        };
        let refused = mailbox.push_replies((0..3).map(pong), 2);
        let Err(refused) = refused else {
            panic!("the third reply finds no room")
        };
        assert!(matches!(*refused, ServerFrame::Pong { id: Some(ref id) } if id == "2"));
        let news = mailbox.take_news();
        assert_eq!(news.replies.len(), 2);
        assert!(news.finished.is_none());
        tokio::time::timeout(std::time::Duration::from_secs(5), mailbox.session_news())
            .await
            .expect("taking the replies wakes the waiting session");
        assert!(mailbox.push_replies(std::iter::once(pong(2)), 2).is_ok());
        mailbox.finish(Some(CloseCode::GoingAway));
        let news = mailbox.take_news();
        assert_eq!(news.replies.len(), 1);
        assert_eq!(news.finished, Some(Some(CloseCode::GoingAway)));
    }
}
