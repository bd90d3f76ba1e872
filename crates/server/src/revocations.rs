//! Applying the store's numbered revocations on this node, whoever made
//! them: this node (already applied; again is harmless), another node, or
//! an operator's `missive admin` that talked to no server. Each one drops
//! the device's cached token and closes its connection here (4003).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use missive_bus::{BusSink, DeviceEvent, Invalidation};
use missive_core::DeviceId;
use missive_store::AccountStore;

use crate::cache::Caches;
use crate::router::Router;

/// How often a node reads the store's numbered revocations.
const INTERVAL: Duration = Duration::from_secs(1);
/// Revocations read per poll.
const BATCH: usize = 1000;
/// Numbers below the highest seen that are read again. PostgreSQL hands a
/// number out when its transaction writes the row, not when it commits, so
/// a revocation may become visible after higher numbers did; it is caught
/// as long as fewer than this many were numbered after it meanwhile.
const LATE_WINDOW: i64 = 100;

/// Which numbers this node has applied, near the highest it has seen.
struct Window {
    /// Numbers at or below this were made before this node started (or
    /// fell out of the window): never applied here.
    floor: i64,
    applied: BTreeSet<i64>,
}

impl Window {
    fn starting_after(last: i64) -> Self {
        Self {
            floor: last,
            applied: BTreeSet::new(),
        }
    }

    /// Where the next read starts (exclusive).
    fn read_after(&self) -> i64 {
        let highest = self.applied.last().copied().unwrap_or(self.floor);
        highest.saturating_sub(LATE_WINDOW).max(self.floor)
    }

    /// Of a batch read after `read_after()`, the devices not applied yet.
    fn take(&mut self, batch: Vec<(i64, DeviceId)>) -> Vec<DeviceId> {
        let fresh = batch
            .into_iter()
            .filter(|(number, _)| *number > self.floor && self.applied.insert(*number))
            .map(|(_, device)| device)
            .collect();
        let highest = self.applied.last().copied().unwrap_or(self.floor);
        self.floor = self.floor.max(highest.saturating_sub(LATE_WINDOW));
        self.applied = self.applied.split_off(&(self.floor + 1));
        fresh
    }
}

/// Polls the store's revocations every [`INTERVAL`] and applies each new
/// one here: its cached token is dropped and its live connection closed.
pub(crate) async fn watch(store: Arc<dyn AccountStore>, caches: Arc<Caches>, router: Arc<Router>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window = None;
    loop {
        ticks.tick().await;
        let Some(window) = &mut window else {
            match store.last_revocation().await {
                Ok(last) => window = Some(Window::starting_after(last)),
                Err(err) => tracing::warn!(%err, "cannot read revocations yet"),
            }
            continue;
        };
        match store.revocations_after(window.read_after(), BATCH).await {
            Ok(batch) => {
                for device in window.take(batch) {
                    caches.invalidate(Invalidation::Device(device));
                    router.deliver(device, DeviceEvent::Revoked);
                }
            }
            Err(err) => tracing::debug!(%err, "cannot read revocations"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_numbered_before_others_but_seen_after_them_is_applied_once() {
        // Goal: numbers before the start are never applied; each later one
        // is applied exactly once, also when it becomes visible after
        // higher ones (PostgreSQL numbers before commit) and is read again
        // in a later batch.
        let device = DeviceId;
        let mut window = Window::starting_after(10);
        assert_eq!(window.read_after(), 10);
        assert_eq!(window.take(vec![(12, device(2))]), [device(2)]);
        // 11 committed late: the next read starts below 12 and finds it.
        assert!(window.read_after() < 11);
        assert_eq!(
            window.take(vec![(11, device(1)), (12, device(2)), (13, device(3))]),
            [device(1), device(3)]
        );
        assert_eq!(window.take(vec![(12, device(2)), (13, device(3))]), []);
        // Far ahead: the window moves up and forgets what fell out of it.
        assert_eq!(window.take(vec![(500, device(5))]), [device(5)]);
        assert_eq!(window.read_after(), 400);
        assert_eq!(window.take(vec![(13, device(3))]), []);
    }
}
