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

use missive_bus::{BusSink, DeviceEvent, Spent};
use missive_core::{AccountId, Clock, DeviceId, SystemClock, UnixMillis};
use rand::Rng;
use tokio::sync::mpsc;

use crate::AppState;
use crate::router::NodeEvent;

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
    pub async fn sync(&self, store: &dyn missive_store::Store, lease_ms: u64) {
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

/// Claims `device` (of `account`) for this node in the session directory
/// and tells the node that held it, if another, to let go: the claim that
/// commits last wins. A store failure leaves the entry for the heartbeat.
pub async fn claim(state: &AppState, device: DeviceId, account: AccountId) {
    let node = state.router.node();
    match state
        .store
        .claim_session(device, account, node, state.clock.now_ms())
        .await
    {
        Ok(Some(previous)) => {
            tracing::debug!(%previous, %device, "device taken over from another node");
            let node = Arc::clone(node);
            state
                .bus
                .publish(device, DeviceEvent::TakenOver { node })
                .await;
        }
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(%err, %device, "could not claim the session; retrying at the next beat");
            state.router.settle_later(device, account);
        }
    }
}

/// Makes `device`'s directory entry match this node: claimed while it is
/// live here, released otherwise (unless another node holds it).
pub async fn settle(state: &AppState, device: DeviceId, account: AccountId) {
    if state.router.is_live(device) {
        return claim(state, device, account).await;
    }
    if let Err(err) = state
        .store
        .release_session(device, state.router.node())
        .await
    {
        tracing::warn!(%err, %device, "could not release the session; retrying at the next beat");
        state.router.settle_later(device, account);
        return;
    }
    // A newer connection of the device here may have claimed just before
    // the release removed the row: claim again for it.
    if state.router.is_live(device) {
        claim(state, device, account).await;
    }
}

/// Measures the clock offset from the store, then renews this node's lease
/// (in the store's time base); when it had lapsed (the store was away longer
/// than the lease and another node reaped us), claims every live device
/// again. Then settles the entries earlier claims or releases failed to
/// write. Errors are logged: the next beat retries.
pub async fn renew(state: &Arc<AppState>) {
    state
        .lease_clock
        .sync(state.store.as_ref(), state.config.cluster.lease_ms)
        .await;
    let lease_ms = i64::try_from(state.config.cluster.lease_ms).unwrap_or(i64::MAX);
    let node = state.router.node();
    let until = state.lease_clock.now_ms().saturating_add(lease_ms);
    match state.store.renew_node(node, until).await {
        Ok(true) => {}
        Ok(false) => {
            let live = state.router.live_devices();
            for (device, account) in &live {
                claim(state, *device, *account).await;
            }
            // Others may have announced them offline when they reaped us.
            let mut accounts: Vec<AccountId> = live.into_iter().map(|(_, a)| a).collect();
            accounts.sort();
            accounts.dedup();
            announce_later(state, accounts);
        }
        Err(err) => {
            tracing::warn!(%err, "could not renew this node's lease");
            return;
        }
    }
    let unsettled = state.router.take_unsettled();
    if !unsettled.is_empty() {
        let mut accounts = Vec::new();
        for (device, account) in unsettled {
            settle(state, device, account).await;
            accounts.push(account);
        }
        accounts.sort();
        accounts.dedup();
        announce_later(state, accounts);
    }
}

/// Every quarter lease: renew ours, reap lapsed nodes and announce their
/// users offline (each reaped account is reported to one node only).
pub async fn run_heartbeat(state: Arc<AppState>) {
    let period = Duration::from_millis((state.config.cluster.lease_ms / 4).max(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        renew(&state).await;
        match state.store.reap_nodes(state.lease_clock.now_ms()).await {
            Ok(offline) => {
                if !offline.is_empty() {
                    tracing::info!(accounts = offline.len(), "reaped lapsed nodes");
                }
                announce_later(&state, offline);
            }
            Err(err) => tracing::warn!(%err, "could not reap lapsed nodes"),
        }
    }
}

/// Announces on a task of its own, so many announcements never delay the
/// next lease renewal.
fn announce_later(state: &Arc<AppState>, accounts: Vec<AccountId>) {
    if accounts.is_empty() {
        return;
    }
    let state = Arc::clone(state);
    tokio::spawn(async move {
        for account in accounts {
            state.social.announce(account).await;
        }
    });
}

/// Acts on news from other nodes, in order.
pub async fn run_node_events(state: Arc<AppState>, mut events: mpsc::Receiver<NodeEvent>) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(NodeEvent::PresenceChanged(account)) => {
                    state.social.announce_here(account).await;
                }
                Some(NodeEvent::Spent(spent)) => debit(&state, &spent),
                None => return,
            },
            () = state.router.resync_needed() => close_revoked(&state).await,
        }
    }
}

/// Live devices asked about in one statement by [`run_recheck`].
const RECHECK_CHUNK: usize = 1_000;

/// The safety net for wake-ups the bus lost where no node could see it
/// (between the servers of a NATS cluster, say): every `recheck` (the bus's
/// `recheck_interval`), asks the store which of this node's live devices
/// have something from another device waiting (one statement per thousand
/// devices) and wakes those, which then read the store as after any
/// wake-up. A device whose session already has what waits (delivered, not
/// yet acked) reads nothing new. Per idle node this is a few index lookups
/// per live device each period, and no read at all.
pub async fn run_recheck(state: Arc<AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing is live yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let live: Vec<DeviceId> = state
            .router
            .live_devices()
            .into_iter()
            .map(|(device, _)| device)
            .collect();
        let mut behind = Vec::new();
        for chunk in live.chunks(RECHECK_CHUNK) {
            match state.store.behind(chunk.to_vec()).await {
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
                state.router.deliver(*device, DeviceEvent::QueueChanged);
            }
        }
    }
}

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

/// Every [`SPENT_REPORT_PERIOD`], tells the other nodes what this node
/// spent of the limits they share; nothing when nothing was spent, so an
/// idle cluster sends nothing.
pub async fn run_spending_reports(state: Arc<AppState>) {
    let mut ticks = tokio::time::interval(SPENT_REPORT_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut report = Vec::new();
        for (limit, shared) in state.shared_limits() {
            report.extend(shared.take_spent().into_iter().map(|(key, units)| Spent {
                limit: limit.to_owned(),
                key,
                units,
            }));
        }
        if !report.is_empty() {
            state.bus.publish_spent(report).await;
        }
    }
}

/// Takes what another node reported spending from the same budgets here.
fn debit(state: &AppState, spent: &[Spent]) {
    let limits = state.shared_limits();
    for entry in spent {
        if let Some((limit, shared)) = limits.iter().find(|(limit, _)| *limit == entry.limit) {
            shared.spent_elsewhere(&entry.key, entry.units);
            metrics::counter!("missive_limit_spent_elsewhere_total", "limit" => *limit)
                .increment(u64::try_from(entry.units).unwrap_or(0));
        }
    }
}

/// Closes live devices that no longer exist: their revocation may have
/// been published while this node could not hear it.
async fn close_revoked(state: &AppState) {
    for (device, _) in state.router.live_devices() {
        match state.store.device_owner(device).await {
            Ok(None) => {
                tracing::info!(%device, "closing a device revoked while the bus was away");
                state.router.deliver(device, DeviceEvent::Revoked);
            }
            Ok(Some(_)) => {}
            Err(err) => {
                tracing::warn!(%err, "could not re-check live devices");
                return;
            }
        }
    }
}

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
