//! The session directory: which node holds which device's live connection.

use async_trait::async_trait;
use missive_core::{AccountId, DeviceId, UnixMillis};

use crate::StoreError;

/// The session directory: which node holds which device's live connection.
/// Every node renews a lease; a node that stops renewing (crashed) is reaped
/// by any other, so its users show offline within the lease.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Extends `node`'s lease to `lease_until_ms`, creating the node row if
    /// needed. `false` if the node held no lease (new, or reaped after it
    /// lapsed): the caller must claim its live sessions again.
    async fn renew_node(&self, node: &str, lease_until_ms: UnixMillis) -> Result<bool, StoreError>;

    /// Records that `node` now holds `device`'s live connection, and that
    /// the device was seen at `now_ms` (its `last_seen_ms`). Returns the
    /// node that held it before, if that was another node (it must close its
    /// connection: "replaced").
    async fn claim_session(
        &self,
        device: DeviceId,
        account: AccountId,
        node: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<String>, StoreError>;

    /// Ends `device`'s session on `node`; does nothing if another node has
    /// claimed the device since.
    async fn release_session(&self, device: DeviceId, node: &str) -> Result<(), StoreError>;

    /// Whether some device of the account has a session on a node whose
    /// lease holds at `now_ms`.
    async fn account_online(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// The store's own wall clock, where it has one apart from this
    /// process's (a database server): the time base leases are kept in, so
    /// nodes whose clocks disagree still agree on who lapsed. `None` for an
    /// embedded store, whose clock is this process's.
    async fn clock_ms(&self) -> Result<Option<UnixMillis>, StoreError>;

    /// Deletes the nodes whose lease ended at or before `now_ms`, with their
    /// sessions, and returns the accounts left with no live session (their
    /// last seen becomes `now_ms`). Safe to run on every node at once: each
    /// reaped account is returned by one caller only.
    async fn reap_nodes(&self, now_ms: UnixMillis) -> Result<Vec<AccountId>, StoreError>;
}
