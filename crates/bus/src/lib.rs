//! The Bus boundary: tells the node that holds a device's live connection
//! that something happened for that device. The Store stays the truth, so a
//! lost bus event only delays a delivery until the device's next re-check;
//! it never loses one.
//!
//! The embedded adapter is [`InProcessBus`]; a NATS adapter implements the
//! same trait for clusters.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use missive_core::DeviceId;

/// What the bus carries about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The device's queue grew: re-read it from the Store.
    QueueChanged,
    /// The device was revoked: close its live connections at once.
    Revoked,
    /// An ephemeral frame (typing, presence), already encoded; delivered only
    /// if the device is live, never stored, dropped under pressure.
    Ephemeral(Arc<str>),
}

/// Receives events for devices; the node's router implements it.
pub trait BusSink: Send + Sync + 'static {
    fn deliver(&self, device: DeviceId, event: DeviceEvent);
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends `event` to whichever node(s) hold `device`; best effort.
    async fn publish(&self, device: DeviceId, event: DeviceEvent);

    /// Registers where this node wants its events delivered. Replaces any
    /// earlier sink.
    fn attach(&self, sink: Arc<dyn BusSink>);
}

/// The single-node bus: publishing calls this node's sink directly.
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

    fn attach(&self, sink: Arc<dyn BusSink>) {
        if let Ok(mut slot) = self.sink.write() {
            *slot = Some(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(DeviceId, DeviceEvent)>>);

    impl BusSink for Recorder {
        fn deliver(&self, device: DeviceId, event: DeviceEvent) {
            self.0.lock().unwrap().push((device, event));
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
            *recorder.0.lock().unwrap(),
            vec![
                (DeviceId(2), DeviceEvent::QueueChanged),
                (DeviceId(3), DeviceEvent::Revoked)
            ]
        );
    }
}
