//! The Bus boundary: tells the node that holds a device's live connection
//! that something happened for that device, and carries the cluster's
//! ephemeral chatter (presence changes, cache invalidations, what each node
//! spent of the cluster-wide limits). The Store stays
//! the truth, so a lost bus event only delays a delivery until the device's
//! next re-check; it never loses one.
//!
//! Adapters: [`InProcessBus`] for one node, [`NatsBus`] (core NATS) for a
//! cluster.

mod nats;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use missive_core::{AccountId, ConversationId, DeviceId};

pub use nats::{NatsBus, NatsConfig, NatsError};

/// What the bus carries about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The device's queue grew: re-read it from the Store.
    QueueChanged,
    /// An event committed for the device, already encoded as the frame
    /// its connections write: the node that holds it writes the frame if it
    /// is the next one of its conversation there, and otherwise reads the
    /// Store (which has it), as for a wake-up. So a live device on another
    /// node costs no Store read per message.
    Committed {
        conversation: ConversationId,
        seq: i64,
        frame: Arc<str>,
    },
    /// The device was revoked: close its live connections at once.
    Revoked,
    /// An ephemeral frame (typing, presence), already encoded; delivered only
    /// if the device is live, never stored, dropped under pressure.
    Ephemeral(Arc<str>),
    /// Node `node` now holds the device's live connection: any other node
    /// closes its own ("replaced").
    TakenOver { node: Arc<str> },
}

/// Cached state that another node changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The device was revoked: forget its token.
    Device(DeviceId),
    /// The conversation's members changed.
    Conversation(ConversationId),
    /// Typing relay targets may have changed (a block).
    Relays,
    /// Anything may have changed.
    Everything,
}

/// Units of a cluster-wide limit that a node spent since it last said:
/// which limit (`send`, `login`, ...), whose budget in it (`a:<account>`,
/// `ip:<address>`, ...), and how many; negative when it gave back more
/// than it took (refunded login attempts). Names and keys hold no
/// whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spent {
    pub limit: String,
    pub key: String,
    pub units: i64,
}

/// Receives what the bus carries; the node's router implements it.
pub trait BusSink: Send + Sync + 'static {
    fn deliver(&self, device: DeviceId, event: DeviceEvent);

    /// `account`'s presence may have changed on another node.
    fn presence_changed(&self, account: AccountId);

    /// Another node changed state this node may cache.
    fn invalidate(&self, what: Invalidation);

    /// Events may have been lost (the bus reconnected): re-check every live
    /// device's queue, drop every cache, and close live devices that were
    /// revoked meanwhile.
    fn resync(&self);

    /// Another node spent these units of the cluster-wide limits.
    fn spent_elsewhere(&self, _spent: Vec<Spent>) {}
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends `event` to whichever node(s) follow `device`; best effort.
    async fn publish(&self, device: DeviceId, event: DeviceEvent);

    /// Tells the other nodes that `account`'s presence may have changed.
    async fn publish_presence(&self, account: AccountId);

    /// Tells the other nodes to drop cached state.
    async fn publish_invalidation(&self, what: Invalidation);

    /// Tells the other nodes what this node spent of the cluster-wide
    /// limits; best effort (a lost report only loosens a limit for a
    /// moment).
    async fn publish_spent(&self, spent: Vec<Spent>);

    /// Whether other nodes may be listening: when not, there is nothing to
    /// tell them and the limits need not count for them.
    fn has_peers(&self) -> bool;

    /// This node holds a live connection of `device`: route the device's
    /// events here. Once it returns, events published anywhere reach this
    /// node. Counted: each call is paired with one [`Bus::unfollow`].
    async fn follow(&self, device: DeviceId);

    /// Undoes one [`Bus::follow`].
    fn unfollow(&self, device: DeviceId);

    /// Registers where this node wants its events delivered. Replaces any
    /// earlier sink.
    fn attach(&self, sink: Arc<dyn BusSink>);

    /// Whether the bus can carry events now (for `/readyz`).
    fn is_connected(&self) -> bool;

    /// How often a node must ask the store which of its live devices have
    /// something waiting, even without a wake-up, because this bus may lose
    /// events; `None` when it cannot.
    fn recheck_interval(&self) -> Option<Duration>;

    /// A one-line description for the startup log.
    fn describe(&self) -> String;
}

/// The single-node bus: publishing calls this node's sink directly. It never
/// loses an event, and there are no other nodes to tell anything.
#[derive(Default)]
pub struct InProcessBus {
    sink: RwLock<Option<Arc<dyn BusSink>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, device: DeviceId, event: DeviceEvent) {
        let sink = self.sink.read().ok().and_then(|sink| sink.clone());
        if let Some(sink) = sink {
            sink.deliver(device, event);
        }
    }

    async fn publish_presence(&self, _account: AccountId) {}

    async fn publish_invalidation(&self, _what: Invalidation) {}

    async fn publish_spent(&self, _spent: Vec<Spent>) {}

    fn has_peers(&self) -> bool {
        false
    }

    async fn follow(&self, _device: DeviceId) {}

    fn unfollow(&self, _device: DeviceId) {}

    fn attach(&self, sink: Arc<dyn BusSink>) {
        if let Ok(mut slot) = self.sink.write() {
            *slot = Some(sink);
        }
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn recheck_interval(&self) -> Option<Duration> {
        None
    }

    fn describe(&self) -> String {
        "in-process".to_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records everything a sink receives, in order.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub events: Mutex<Vec<(DeviceId, DeviceEvent)>>,
        pub presence: Mutex<Vec<AccountId>>,
        pub invalidations: Mutex<Vec<Invalidation>>,
        pub resyncs: Mutex<usize>,
    }

    impl BusSink for Recorder {
        fn deliver(&self, device: DeviceId, event: DeviceEvent) {
            self.events.lock().unwrap().push((device, event));
        }
        fn presence_changed(&self, account: AccountId) {
            self.presence.lock().unwrap().push(account);
        }
        fn invalidate(&self, what: Invalidation) {
            self.invalidations.lock().unwrap().push(what);
        }
        fn resync(&self) {
            *self.resyncs.lock().unwrap() += 1;
        }
    }

    #[tokio::test]
    async fn publishes_reach_the_attached_sink_in_order() {
        // Goal: events before attach are dropped (best effort); after, all arrive in order.
        let bus = InProcessBus::new();
        bus.publish(DeviceId(1), DeviceEvent::QueueChanged).await;
        let recorder = Arc::new(Recorder::default());
        bus.attach(recorder.clone());
        bus.publish(DeviceId(2), DeviceEvent::QueueChanged).await;
        bus.publish(DeviceId(3), DeviceEvent::Revoked).await;
        assert_eq!(
            *recorder.events.lock().unwrap(),
            vec![
                (DeviceId(2), DeviceEvent::QueueChanged),
                (DeviceId(3), DeviceEvent::Revoked)
            ]
        );
    }
}
