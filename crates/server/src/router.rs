//! The live-connection registry of this node: device → its one live
//! connection. It receives Bus events and turns them into wake-ups or close
//! orders for the connection task.
//!
//! **Invariant:** a device has at most one live connection per node; a new
//! one replaces the old (which is closed with `replaced`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use missive_bus::{BusSink, DeviceEvent};
use missive_core::DeviceId;
use missive_proto::CloseCode;
use tokio::sync::{Notify, watch};

struct Live {
    connection_id: u64,
    wake: Arc<Notify>,
    close: watch::Sender<Option<CloseCode>>,
}

#[derive(Default)]
pub struct Router {
    live: Mutex<HashMap<DeviceId, Live>>,
    next_connection_id: AtomicU64,
}

/// A connection's membership in the router; unregisters on drop.
pub struct Registration {
    router: Arc<Router>,
    device: DeviceId,
    connection_id: u64,
    /// Notified whenever the device's queue may have grown.
    pub wake: Arc<Notify>,
    /// Becomes `Some` when the connection must close.
    pub close: watch::Receiver<Option<CloseCode>>,
}

impl Router {
    pub fn register(self: &Arc<Self>, device: DeviceId) -> Registration {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let (close_tx, close_rx) = watch::channel(None);
        let live = Live {
            connection_id,
            wake: Arc::clone(&wake),
            close: close_tx,
        };
        let previous = self.lock().insert(device, live);
        if let Some(previous) = previous {
            let _ = previous.close.send(Some(CloseCode::Replaced));
        }
        metrics::gauge!("missive_connections").increment(1.0);
        Registration {
            router: Arc::clone(self),
            device,
            connection_id,
            wake,
            close: close_rx,
        }
    }

    pub fn is_live(&self, device: DeviceId) -> bool {
        self.lock().contains_key(&device)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Live>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove calls), so a poisoned lock is still usable.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl BusSink for Router {
    fn deliver(&self, device: DeviceId, event: DeviceEvent) {
        let live = self.lock();
        let Some(conn) = live.get(&device) else {
            return;
        };
        match event {
            DeviceEvent::QueueChanged => conn.wake.notify_one(),
            DeviceEvent::Revoked => {
                let _ = conn.close.send(Some(CloseCode::Revoked));
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.router.lock();
        if live.get(&self.device).map(|l| l.connection_id) == Some(self.connection_id) {
            live.remove(&self.device);
        }
        metrics::gauge!("missive_connections").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_replaces_the_first() {
        // Goal: registering the same device twice closes the older one, and
        // dropping the older one does not unregister the newer.
        let router = Arc::new(Router::default());
        let first = router.register(DeviceId(7));
        let second = router.register(DeviceId(7));
        assert_eq!(*first.close.borrow(), Some(CloseCode::Replaced));
        assert_eq!(*second.close.borrow(), None);
        drop(first);
        assert!(router.is_live(DeviceId(7)));
        router.deliver(DeviceId(7), DeviceEvent::Revoked);
        assert_eq!(*second.close.borrow(), Some(CloseCode::Revoked));
        drop(second);
        assert!(!router.is_live(DeviceId(7)));
    }
}
