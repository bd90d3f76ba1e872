//! The live-connection registry of this node: device → its one live
//! connection, and who watches whose presence. It receives Bus events and
//! turns them into wake-ups, ephemeral frames or close orders in the
//! connection's [`Mailbox`]; cluster-wide news (presence changes, cache
//! invalidations) goes on to the node's [`NodeEvent`] channel.
//!
//! **Invariant:** a device has at most one live connection per node; a new
//! one replaces the old (which is closed with `replaced`), and a takeover by
//! another node closes it the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use missive_bus::{BusSink, DeviceEvent, Invalidation, Spent};
use missive_core::{AccountId, ConversationId, DeviceId, Seq};
use missive_proto::CloseCode;

use crate::cache::Caches;
use crate::mailbox::Mailbox;
use tokio::sync::{Notify, mpsc};

/// A committed event on its way to a live connection, already encoded:
/// one encoding for every recipient. `(conversation, seq)` lets the
/// connection place it: the next one it expects is written, one it had is
/// dropped, and one beyond a gap sends it to the store.
pub struct LiveEvent {
    pub conversation: ConversationId,
    pub seq: Seq,
    pub frame: Arc<str>,
}
/// Cluster news waiting for the node's handler; more are dropped
/// (presence is best effort).
const NODE_EVENTS_MAX: usize = 4096;

/// News from other nodes that needs async work on this one.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Tell local watchers of the account its presence now.
    PresenceChanged(AccountId),
    /// Another node spent from the cluster-wide limits.
    Spent(Vec<Spent>),
}

struct Live {
    connection_id: u64,
    account: AccountId,
    mailbox: Arc<Mailbox>,
}

#[derive(Default)]
struct State {
    live: HashMap<DeviceId, Live>,
    /// target account → watching device → the watcher's account.
    watchers: HashMap<AccountId, HashMap<DeviceId, AccountId>>,
    /// watching device → the accounts it watches.
    watching: HashMap<DeviceId, Vec<AccountId>>,
    /// (watching device, target) → the presence frame it was last shown.
    shown: HashMap<(DeviceId, AccountId), Arc<str>>,
    /// Devices whose session-directory entry could not be written (the
    /// store failed a claim or a release); the heartbeat settles them.
    unsettled: HashMap<DeviceId, AccountId>,
}

pub struct Router {
    /// This node's id; takeovers naming it are our own.
    node: Arc<str>,
    state: Mutex<State>,
    next_connection_id: AtomicU64,
    node_events: mpsc::Sender<NodeEvent>,
    /// Signalled when the bus may have lost events: live devices revoked
    /// meanwhile must be closed. Coalesces, and is never dropped the way a
    /// full `node_events` channel drops presence news.
    resync_needed: Notify,
    caches: Arc<Caches>,
}

/// A connection's membership in the router; unregisters on drop.
pub struct Registration {
    router: Arc<Router>,
    device: DeviceId,
    connection_id: u64,
    /// Committed events straight from the send path, wake-ups, ephemeral
    /// frames (typing, presence) and the order to close.
    pub mailbox: Arc<Mailbox>,
}

impl Router {
    /// A router for node `node`, and the channel of cluster news for the
    /// node to act on.
    pub fn new(node: Arc<str>, caches: Arc<Caches>) -> (Self, mpsc::Receiver<NodeEvent>) {
        let (node_events, events) = mpsc::channel(NODE_EVENTS_MAX);
        let router = Self {
            node,
            state: Mutex::default(),
            next_connection_id: AtomicU64::new(0),
            node_events,
            resync_needed: Notify::new(),
            caches,
        };
        (router, events)
    }

    /// Resolves once a resync was asked for since the last call returned.
    pub async fn resync_needed(&self) {
        self.resync_needed.notified().await;
    }

    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// (device, account) of every live connection on this node.
    pub fn live_devices(&self) -> Vec<(DeviceId, AccountId)> {
        self.lock()
            .live
            .iter()
            .map(|(device, live)| (*device, live.account))
            .collect()
    }

    pub fn register(self: &Arc<Self>, device: DeviceId, account: AccountId) -> Registration {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Mailbox::new();
        let live = Live {
            connection_id,
            account,
            mailbox: Arc::clone(&mailbox),
        };
        let mut state = self.lock();
        if let Some(previous) = state.live.insert(device, live) {
            previous.mailbox.order_close(CloseCode::Replaced);
            // Subscriptions belong to a connection, not to the device.
            unwatch(&mut state, device);
        }
        drop(state);
        metrics::gauge!("missive_connections").increment(1.0);
        Registration {
            router: Arc::clone(self),
            device,
            connection_id,
            mailbox,
        }
    }

    /// Hands a committed event to the connections of `devices` live on
    /// this node, under one lock; returns the devices that are not (the
    /// caller wakes them through the Bus). A connection whose inbox is
    /// full is told to read the store instead: the event is committed, so
    /// nothing is lost, only taken the slow way.
    pub fn offer(&self, devices: &[DeviceId], event: &Arc<LiveEvent>) -> Vec<DeviceId> {
        let state = self.lock();
        let mut elsewhere = Vec::new();
        for device in devices {
            match state.live.get(device) {
                Some(conn) => conn.mailbox.offer_event(Arc::clone(event)),
                None => elsewhere.push(*device),
            }
        }
        elsewhere
    }

    /// Leaves `device`'s directory entry for the heartbeat to settle.
    pub fn settle_later(&self, device: DeviceId, account: AccountId) {
        self.lock().unsettled.insert(device, account);
    }

    /// Takes the devices left to settle.
    pub fn take_unsettled(&self) -> Vec<(DeviceId, AccountId)> {
        self.lock().unsettled.drain().collect()
    }

    pub fn is_live(&self, device: DeviceId) -> bool {
        self.lock().live.contains_key(&device)
    }

    /// Makes `device` (of `viewer`) watch exactly `targets`' presence.
    pub fn watch(&self, device: DeviceId, viewer: AccountId, targets: Vec<AccountId>) {
        let mut state = self.lock();
        unwatch(&mut state, device);
        for target in &targets {
            state
                .watchers
                .entry(*target)
                .or_default()
                .insert(device, viewer);
        }
        state.watching.insert(device, targets);
    }

    /// Records that `device` is shown `frame`, the presence of `target`.
    /// False when the device does not watch `target` (any more), or was
    /// last shown the same frame: sending it again would tell nothing but
    /// *when* something changed, and for a viewer who may not see the
    /// target (blocked, privacy) that timing alone would betray its
    /// comings and goings.
    pub fn show_presence(&self, device: DeviceId, target: AccountId, frame: &Arc<str>) -> bool {
        let mut state = self.lock();
        let watches = state
            .watchers
            .get(&target)
            .is_some_and(|watchers| watchers.contains_key(&device));
        if !watches {
            return false;
        }
        match state.shown.insert((device, target), Arc::clone(frame)) {
            Some(previous) => previous != *frame,
            None => true,
        }
    }

    /// (device, watched accounts) of every live device of `viewer` that
    /// watches someone.
    pub fn watched_by(&self, viewer: AccountId) -> Vec<(DeviceId, Vec<AccountId>)> {
        let state = self.lock();
        state
            .watching
            .iter()
            .filter(|(device, _)| {
                state
                    .live
                    .get(device)
                    .is_some_and(|live| live.account == viewer)
            })
            .map(|(device, targets)| (*device, targets.clone()))
            .collect()
    }

    /// (device, its account) of everyone watching `target`.
    pub fn watchers(&self, target: AccountId) -> Vec<(DeviceId, AccountId)> {
        self.lock()
            .watchers
            .get(&target)
            .map(|watchers| watchers.iter().map(|(d, a)| (*d, *a)).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::poison::lock(&self.state)
    }
}

fn unwatch(state: &mut State, device: DeviceId) {
    for target in state.watching.remove(&device).unwrap_or_default() {
        state.shown.remove(&(device, target));
        if let Some(watchers) = state.watchers.get_mut(&target) {
            watchers.remove(&device);
            if watchers.is_empty() {
                state.watchers.remove(&target);
            }
        }
    }
}

impl BusSink for Router {
    fn deliver(&self, device: DeviceId, event: DeviceEvent) {
        let state = self.lock();
        let Some(conn) = state.live.get(&device) else {
            return;
        };
        match event {
            DeviceEvent::QueueChanged => conn.mailbox.wake(),
            DeviceEvent::Committed {
                conversation,
                seq,
                frame,
            } => {
                let event = Arc::new(LiveEvent {
                    conversation,
                    seq,
                    frame,
                });
                conn.mailbox.offer_event(event);
            }
            DeviceEvent::Revoked => {
                conn.mailbox.order_close(CloseCode::Revoked);
            }
            DeviceEvent::Ephemeral(frame) => {
                // Ephemeral frames may be lost; a full buffer drops them.
                conn.mailbox.offer_ephemeral(frame);
            }
            DeviceEvent::TakenOver { node } => {
                if node != self.node {
                    conn.mailbox.order_close(CloseCode::Replaced);
                }
            }
        }
    }

    fn presence_changed(&self, account: AccountId) {
        let _ = self
            .node_events
            .try_send(NodeEvent::PresenceChanged(account));
    }

    fn spent_elsewhere(&self, spent: Vec<Spent>) {
        // A full channel drops the report: the limit is looser for a moment.
        let _ = self.node_events.try_send(NodeEvent::Spent(spent));
    }

    fn invalidate(&self, what: Invalidation) {
        // At once, never queued behind slower news.
        self.caches.invalidate(what);
    }

    fn resync(&self) {
        self.caches.invalidate(Invalidation::Everything);
        // Wake-ups may have been lost while the bus was away.
        for live in self.lock().live.values() {
            live.mailbox.wake();
        }
        self.resync_needed.notify_one();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.router.lock();
        let current = state.live.get(&self.device).map(|l| l.connection_id);
        if current == Some(self.connection_id) {
            state.live.remove(&self.device);
            unwatch(&mut state, self.device);
        }
        metrics::gauge!("missive_connections").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::LIVE_EVENTS_MAX;

    #[test]
    fn a_second_connection_replaces_the_first() {
        // Goal: registering the same device twice closes the older one, and
        // dropping the older one does not unregister the newer; a takeover
        // by another node closes the connection, our own does not.
        let router = Arc::new(Router::new(Arc::from("node-a"), Arc::default()).0);
        let account = AccountId(1);
        let first = router.register(DeviceId(7), account);
        let second = router.register(DeviceId(7), account);
        assert_eq!(first.mailbox.close_ordered(), Some(CloseCode::Replaced));
        assert_eq!(second.mailbox.close_ordered(), None);
        drop(first);
        assert!(router.is_live(DeviceId(7)));
        assert_eq!(router.live_devices(), vec![(DeviceId(7), account)]);
        router.deliver(
            DeviceId(7),
            DeviceEvent::TakenOver {
                node: Arc::from("node-a"),
            },
        );
        assert_eq!(second.mailbox.close_ordered(), None, "our own takeover");
        router.deliver(DeviceId(7), DeviceEvent::Revoked);
        assert_eq!(second.mailbox.close_ordered(), Some(CloseCode::Revoked));
        let third = router.register(DeviceId(8), account);
        router.deliver(
            DeviceId(8),
            DeviceEvent::TakenOver {
                node: Arc::from("node-b"),
            },
        );
        assert_eq!(third.mailbox.close_ordered(), Some(CloseCode::Replaced));
        drop(third);
        drop(second);
        assert!(!router.is_live(DeviceId(7)));
        assert!(router.live_devices().is_empty());
    }

    #[tokio::test]
    async fn offered_events_reach_live_connections_and_a_full_inbox_asks_for_the_store() {
        // Goal: devices not live here are handed back (for the Bus), a live
        // one gets the frame, and one whose inbox is full is told to read
        // the store rather than losing the event.
        let router = Arc::new(Router::new(Arc::from("node-a"), Arc::default()).0);
        let live = router.register(DeviceId(1), AccountId(1));
        let event = |seq| {
            Arc::new(LiveEvent {
                conversation: ConversationId(3),
                seq,
                frame: Arc::from("{}"),
            })
        };
        let elsewhere = router.offer(&[DeviceId(1), DeviceId(2)], &event(1));
        assert_eq!(elsewhere, vec![DeviceId(2)]);
        let first = live.mailbox.take_deliveries();
        assert_eq!(
            first.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(!first.read_store);
        for seq in 2..2 + LIVE_EVENTS_MAX as i64 {
            assert!(router.offer(&[DeviceId(1)], &event(seq)).is_empty());
        }
        assert!(router.offer(&[DeviceId(1)], &event(99)).is_empty());
        tokio::time::timeout(std::time::Duration::from_secs(5), live.mailbox.news())
            .await
            .expect("the offers woke the connection");
        let taken = live.mailbox.take_deliveries();
        assert!(
            taken.events.iter().all(|e| e.seq != 99),
            "the overflowing event is not buffered"
        );
        assert_eq!(taken.events.len(), LIVE_EVENTS_MAX);
        assert!(taken.read_store, "a full inbox asks for a store read");
    }

    #[test]
    fn watchers_follow_subscriptions_and_disconnects() {
        // Goal: watch replaces a device's subscription; a dropped connection
        // stops watching.
        let router = Arc::new(Router::new(Arc::from("node-a"), Arc::default()).0);
        let (alice, bob, carol) = (AccountId(1), AccountId(2), AccountId(3));
        let phone = router.register(DeviceId(10), alice);
        let laptop = router.register(DeviceId(11), alice);
        router.watch(DeviceId(10), alice, vec![bob, carol]);
        router.watch(DeviceId(11), alice, vec![bob]);
        assert_eq!(router.watchers(carol), vec![(DeviceId(10), alice)]);
        router.watch(DeviceId(10), alice, vec![bob]);
        assert!(router.watchers(carol).is_empty());
        let mut bobs = router.watchers(bob);
        bobs.sort();
        assert_eq!(bobs, vec![(DeviceId(10), alice), (DeviceId(11), alice)]);
        drop(phone);
        assert!(router.is_live(DeviceId(11)));
        assert_eq!(router.watchers(bob), vec![(DeviceId(11), alice)]);
        drop(laptop);
        assert!(router.live_devices().is_empty());
        assert!(router.watchers(bob).is_empty());
    }

    #[test]
    fn a_watcher_is_shown_each_presence_frame_once() {
        // Goal: the same presence frame is not shown twice in a row to one
        // watcher (its timing would leak what the watcher may not see), a
        // different one is, and a new subscription starts afresh.
        let router = Arc::new(Router::new(Arc::from("node-a"), Arc::default()).0);
        let (alice, bob) = (AccountId(1), AccountId(2));
        let _phone = router.register(DeviceId(10), alice);
        let hidden: Arc<str> = Arc::from(r#"{"user":"bob","online":false}"#);
        let online: Arc<str> = Arc::from(r#"{"user":"bob","online":true}"#);
        assert!(
            !router.show_presence(DeviceId(10), bob, &hidden),
            "not watching"
        );
        router.watch(DeviceId(10), alice, vec![bob]);
        assert!(router.show_presence(DeviceId(10), bob, &hidden));
        assert!(!router.show_presence(DeviceId(10), bob, &hidden));
        assert!(router.show_presence(DeviceId(10), bob, &online));
        assert!(router.show_presence(DeviceId(10), bob, &hidden));
        router.watch(DeviceId(10), alice, vec![bob]);
        assert!(router.show_presence(DeviceId(10), bob, &hidden));
    }
}
