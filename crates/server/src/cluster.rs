//! This node's place in the cluster: its id, the lease it renews in the
//! session directory, the reaping of nodes that stopped renewing (they
//! crashed), and the handling of news from other nodes. An embedded server
//! is a cluster of one and runs the same code.
//!
//! Leases are kept in the store's time base, not the injectable [`Clock`]
//! (which tests move by days) nor each node's own wall clock: every beat a
//! node measures its clock's offset from the store's ([`LeaseClock`]), so a
//! node whose clock is minutes off still renews and reaps in the same time
//! as the others, and never reaps a healthy peer.
//!
//! [`Clock`]: missive_core::Clock

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use missive_bus::{BusSink, DeviceEvent};
use missive_core::{AccountId, Clock, DeviceId, SystemClock, UnixMillis};
use rand::Rng;

use missive_bus::Bus;
use missive_store::Store;

use crate::router::Router;
use crate::service::Social;

/// Wall-clock time in the store's time base, for leases: this process's
/// clock plus its last measured offset from the store's clock.
#[derive(Debug, Default)]
pub struct LeaseClock {
    offset_ms: AtomicI64,
}

impl LeaseClock {
    pub fn now_ms(&self) -> UnixMillis {
        SystemClock.now_ms().saturating_add(self.offset_ms())
    }

    /// The store's clock minus this process's, as last measured.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the offset from the store's clock, halfway through the
    /// round trip; an embedded store's clock is ours (offset 0). A failure
    /// keeps the last offset: clocks drift slowly.
    pub async fn sync(&self, store: &dyn Store, lease_ms: u64) {
        let before = SystemClock.now_ms();
        let store_now = match store.clock_ms().await {
            Ok(Some(store_now)) => store_now,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, "could not read the store's clock; keeping the last offset");
                return;
            }
        };
        let after = SystemClock.now_ms();
        let offset =
            store_now.saturating_sub(before.saturating_add(after.saturating_sub(before) / 2));
        let previous = self.offset_ms.swap(offset, Ordering::Relaxed);
        let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX);
        if offset.abs() > lease_ms / 4 && (previous - offset).abs() > lease_ms / 4 {
            tracing::warn!(
                offset_ms = offset,
                "this node's clock is off the store's; leases use the store's, but check NTP"
            );
        }
    }
}

/// How far this node's clock may be off the store's before the services
/// stamp the store's time instead (a clock kept by NTP is milliseconds off).
pub const TRUSTED_SKEW_MS: i64 = 1_000;

/// The services' clock (message times, the edit window, expiry): the
/// injected clock, moved by this node's measured offset from the store's
/// clock when that is past [`TRUSTED_SKEW_MS`], so a node whose clock is
/// minutes off still stamps about the time its peers do. The store keeps
/// each conversation's times from going backwards whatever is stamped.
pub struct StoreTime {
    local: Arc<dyn Clock>,
    lease: Arc<LeaseClock>,
}

impl StoreTime {
    pub fn new(local: Arc<dyn Clock>, lease: Arc<LeaseClock>) -> Self {
        Self { local, lease }
    }
}

impl Clock for StoreTime {
    fn now_ms(&self) -> UnixMillis {
        let offset = self.lease.offset_ms();
        let local = self.local.now_ms();
        if offset.abs() > TRUSTED_SKEW_MS {
            local.saturating_add(offset)
        } else {
            local
        }
    }
}

/// This process's id in the session directory: the configured name (or
/// `node`) and a random suffix. The suffix makes every start a new node, so
/// a node restarted under the same name never inherits the sessions of its
/// crashed predecessor; those lapse with the old lease and are reaped.
pub fn node_id(configured: &str) -> Arc<str> {
    let name = if configured.is_empty() {
        "node"
    } else {
        configured
    };
    let mut bytes = [0u8; 4];
    rand::rng().fill_bytes(&mut bytes);
    Arc::from(format!("{name}-{}", hex::encode(bytes)).as_str())
}

/// This node's part in the session directory and its lease: what the
/// gateway calls when a device comes and goes, and the beats the app runs.
/// It holds only what that needs, passed down when the app is built.
pub struct ClusterNode {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    router: Arc<Router>,
    clock: Arc<dyn Clock>,
    lease_clock: Arc<LeaseClock>,
    social: Arc<Social>,
    lease_ms: u64,
}

impl ClusterNode {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        router: Arc<Router>,
        clocks: (Arc<dyn Clock>, Arc<LeaseClock>),
        social: Arc<Social>,
        lease_ms: u64,
    ) -> Self {
        let (clock, lease_clock) = clocks;
        Self {
            store,
            bus,
            router,
            clock,
            lease_clock,
            social,
            lease_ms,
        }
    }

    /// Claims `device` (of `account`) for this node in the session directory
    /// and tells the node that held it, if another, to let go: the claim that
    /// commits last wins. A store failure leaves the entry for the heartbeat.
    pub async fn claim(&self, device: DeviceId, account: AccountId) {
        let node = self.router.node();
        match self
            .store
            .claim_session(device, account, node, self.clock.now_ms())
            .await
        {
            Ok(Some(previous)) => {
                tracing::debug!(%previous, %device, "device taken over from another node");
                let node = Arc::clone(node);
                self.bus
                    .publish(device, DeviceEvent::TakenOver { node })
                    .await;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%err, %device, "could not claim the session; retrying at the next beat");
                self.router.settle_later(device, account);
            }
        }
    }

    /// Makes `device`'s directory entry match this node: claimed while it is
    /// live here, released otherwise (unless another node holds it).
    pub async fn settle(&self, device: DeviceId, account: AccountId) {
        if self.router.is_live(device) {
            return self.claim(device, account).await;
        }
        if let Err(err) = self.store.release_session(device, self.router.node()).await {
            tracing::warn!(%err, %device, "could not release the session; retrying at the next beat");
            self.router.settle_later(device, account);
            return;
        }
        // A newer connection of the device here may have claimed just before
        // the release removed the row: claim again for it.
        if self.router.is_live(device) {
            self.claim(device, account).await;
        }
    }

    /// Measures the clock offset from the store, then renews this node's lease
    /// (in the store's time base); when it had lapsed (the store was away longer
    /// than the lease and another node reaped us), claims every live device
    /// again. Then settles the entries earlier claims or releases failed to
    /// write. Errors are logged: the next beat retries.
    pub async fn renew(self: &Arc<Self>) {
        self.lease_clock
            .sync(self.store.as_ref(), self.lease_ms)
            .await;
        let lease_ms = i64::try_from(self.lease_ms).unwrap_or(i64::MAX);
        let node = self.router.node();
        let until = self.lease_clock.now_ms().saturating_add(lease_ms);
        match self.store.renew_node(node, until).await {
            Ok(true) => {}
            Ok(false) => {
                let live = self.router.live_devices();
                for (device, account) in &live {
                    self.claim(*device, *account).await;
                }
                // Others may have announced them offline when they reaped us.
                let mut accounts: Vec<AccountId> = live.into_iter().map(|(_, a)| a).collect();
                accounts.sort();
                accounts.dedup();
                self.announce_later(accounts);
            }
            Err(err) => {
                tracing::warn!(%err, "could not renew this node's lease");
                return;
            }
        }
        let unsettled = self.router.take_unsettled();
        if !unsettled.is_empty() {
            let mut accounts = Vec::new();
            for (device, account) in unsettled {
                self.settle(device, account).await;
                accounts.push(account);
            }
            accounts.sort();
            accounts.dedup();
            self.announce_later(accounts);
        }
    }

    /// Every quarter lease: renew ours, reap lapsed nodes and announce their
    /// users offline (each reaped account is reported to one node only).
    pub async fn run_heartbeat(self: Arc<Self>) {
        let period = Duration::from_millis((self.lease_ms / 4).max(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.renew().await;
            match self.store.reap_nodes(self.lease_clock.now_ms()).await {
                Ok(offline) => {
                    if !offline.is_empty() {
                        tracing::info!(accounts = offline.len(), "reaped lapsed nodes");
                    }
                    self.announce_later(offline);
                }
                Err(err) => tracing::warn!(%err, "could not reap lapsed nodes"),
            }
        }
    }

    /// Announces on a task of its own, so many announcements never delay the
    /// next lease renewal.
    fn announce_later(self: &Arc<Self>, accounts: Vec<AccountId>) {
        if accounts.is_empty() {
            return;
        }
        let node = Arc::clone(self);
        tokio::spawn(async move {
            for account in accounts {
                node.social.announce(account).await;
            }
        });
    }

    /// The safety net for wake-ups the bus lost where no node could see it
    /// (between the servers of a NATS cluster, say): every `recheck` (the bus's
    /// `recheck_interval`), asks the store which of this node's live devices
    /// have something from another device waiting (one statement per thousand
    /// devices) and wakes those, which then read the store as after any
    /// wake-up. A device whose session already has what waits (delivered, not
    /// yet acked) reads nothing new. Per idle node this is a few index lookups
    /// per live device each period, and no read at all.
    pub async fn run_recheck(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: nothing is live yet.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let live: Vec<DeviceId> = self
                .router
                .live_devices()
                .into_iter()
                .map(|(device, _)| device)
                .collect();
            let mut behind = Vec::new();
            for chunk in live.chunks(RECHECK_CHUNK) {
                match self.store.behind(chunk.to_vec()).await {
                    Ok(found) => behind.extend(found),
                    Err(err) => {
                        tracing::warn!(%err, "could not re-check live devices; trying next period");
                        break;
                    }
                }
            }
            metrics::counter!("missive_rechecks_total").increment(1);
            metrics::counter!("missive_recheck_wakes_total").increment(behind.len() as u64);
            let gap = wake_gap(every, behind.len());
            for (i, group) in behind.chunks(RECHECK_WAKE_GROUP).enumerate() {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                for device in group {
                    self.router.deliver(*device, DeviceEvent::QueueChanged);
                }
            }
        }
    }

    /// Closes live devices that no longer exist: their revocation may have
    /// been published while this node could not hear it.
    pub async fn close_revoked(&self) {
        for (device, _) in self.router.live_devices() {
            match self.store.device_owner(device).await {
                Ok(None) => {
                    tracing::info!(%device, "closing a device revoked while the bus was away");
                    self.router.deliver(device, DeviceEvent::Revoked);
                }
                Ok(Some(_)) => {}
                Err(err) => {
                    tracing::warn!(%err, "could not re-check live devices");
                    return;
                }
            }
        }
    }
}

/// Live devices asked about in one statement by
/// [`ClusterNode::run_recheck`].
const RECHECK_CHUNK: usize = 1_000;

/// Devices the re-check wakes at once. Under traffic nearly every live
/// device is behind (what it was sent is not acked yet), and each one
/// woken reads the store: all at once, thousands of reads would queue for
/// the store's connections together.
const RECHECK_WAKE_GROUP: usize = 64;
/// The most the re-check waits between two groups.
const RECHECK_WAKE_GAP_MAX: Duration = Duration::from_millis(20);

/// The wait between groups when `behind` devices are woken: the most
/// [`RECHECK_WAKE_GAP_MAX`], less when that would stretch the wake-ups
/// past half the period (which would add to the bound on a lost
/// wake-up's delay more than half).
fn wake_gap(every: Duration, behind: usize) -> Duration {
    let groups = behind.div_ceil(RECHECK_WAKE_GROUP).max(1);
    let spread = every / 2;
    RECHECK_WAKE_GAP_MAX.min(spread / u32::try_from(groups).unwrap_or(u32::MAX))
}

/// How often a node tells the others what it spent of the cluster-wide
/// limits: the lag, and so the slack, of a budget shared across nodes.
pub const SPENT_REPORT_PERIOD: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recheck_spreads_its_wake_ups_within_half_a_period() {
        // Goal: groups of woken devices are at most RECHECK_WAKE_GAP_MAX
        // apart, and however many are behind, the last group is woken
        // within half the period.
        let minute = Duration::from_secs(60);
        assert_eq!(wake_gap(minute, 10), RECHECK_WAKE_GAP_MAX);
        assert_eq!(wake_gap(minute, 0), RECHECK_WAKE_GAP_MAX);
        for (every, behind) in [(minute, 100_000), (Duration::from_secs(1), 6_400)] {
            let gap = wake_gap(every, behind);
            let groups = behind.div_ceil(RECHECK_WAKE_GROUP) as u32;
            assert!(gap < RECHECK_WAKE_GAP_MAX, "{behind} behind: {gap:?}");
            assert!(gap * (groups - 1) <= every / 2, "{behind} behind: {gap:?}");
        }
    }
}
