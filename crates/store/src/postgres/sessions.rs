//! The session directory: node leases and which node holds each live device.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::{AccountId, DeviceId, UnixMillis};

use super::PostgresStore;
use super::fault::{Fault, Outcome};
use super::sql::{column, execute, pipeline, row, scalar};
use super::{autocommit, transaction};
use crate::{SessionStore, StoreError};

pub(super) async fn renew_node<C: GenericClient>(
    db: &C,
    node: &str,
    lease_until_ms: UnixMillis,
) -> Outcome<bool> {
    // A reaper deleting this row at the same moment makes the update wait,
    // then find nothing: the node learns it was reaped.
    let renewed = execute(
        db,
        "UPDATE nodes SET lease_until_ms = greatest(lease_until_ms, $2) WHERE id = $1",
        &[&node, &lease_until_ms],
    )
    .await?;
    if renewed > 0 {
        return Ok(true);
    }
    execute(
        db,
        "INSERT INTO nodes (id, lease_until_ms) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET lease_until_ms = greatest(nodes.lease_until_ms, excluded.lease_until_ms)",
        &[&node, &lease_until_ms],
    )
    .await?;
    Ok(false)
}

/// The database server's wall clock, in Unix milliseconds.
pub(super) async fn clock_ms<C: GenericClient>(db: &C) -> Outcome<UnixMillis> {
    scalar(
        db,
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        &[],
    )
    .await
}

pub(super) async fn claim_session<C: GenericClient>(
    db: &C,
    device: DeviceId,
    account: AccountId,
    node: &str,
    now_ms: UnixMillis,
) -> Outcome<Option<String>> {
    let (inserted, _) = pipeline!(
        row(
            db,
            "INSERT INTO sessions (device_id, account_id, node_id, since_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_id) DO NOTHING RETURNING 1",
            &[&device.0, &account.0, &node, &now_ms],
        ),
        execute(
            db,
            "UPDATE devices SET last_seen_ms = $2 WHERE id = $1",
            &[&device.0, &now_ms],
        ),
    )?;
    if inserted.is_some() {
        return Ok(None);
    }
    // Someone holds it: read the holder under the row lock, so a claim on
    // another node at the same moment is named as replaced, not lost.
    let (previous, _) = pipeline!(
        row(
            db,
            "SELECT node_id FROM sessions WHERE device_id = $1 FOR UPDATE",
            &[&device.0],
        ),
        execute(
            db,
            "UPDATE sessions SET account_id = $2, node_id = $3, since_ms = $4 WHERE device_id = $1",
            &[&device.0, &account.0, &node, &now_ms],
        ),
    )?;
    // Released between the two statements: claim afresh.
    let previous: String = previous.ok_or(Fault::Raced)?.try_get(0)?;
    Ok((previous != node).then_some(previous))
}

pub(super) async fn release_session<C: GenericClient>(
    db: &C,
    device: DeviceId,
    node: &str,
) -> Outcome<()> {
    execute(
        db,
        "DELETE FROM sessions WHERE device_id = $1 AND node_id = $2",
        &[&device.0, &node],
    )
    .await?;
    Ok(())
}

pub(super) async fn account_online<C: GenericClient>(
    db: &C,
    account: AccountId,
    now_ms: UnixMillis,
) -> Outcome<bool> {
    scalar(
        db,
        "SELECT EXISTS (SELECT 1 FROM sessions s JOIN nodes n ON n.id = s.node_id
                        WHERE s.account_id = $1 AND n.lease_until_ms > $2)",
        &[&account.0, &now_ms],
    )
    .await
}

/// Every node may reap at once. A lapsed node row is deleted by one reaper
/// (the others wait for it, then find it gone), and so are its sessions. An
/// account is reported by the reaper that removed its last session: the
/// account rows are locked (ascending id) before that check, so of two
/// reapers removing an account's last two sessions on two nodes, the second
/// sees the first's deletes and reports it, while the first still sees the
/// second's sessions and leaves it.
pub(super) async fn reap_nodes<C: GenericClient>(
    db: &C,
    now_ms: UnixMillis,
) -> Outcome<Vec<AccountId>> {
    let reaped: Vec<String> = column(
        db,
        "DELETE FROM nodes WHERE lease_until_ms <= $1 RETURNING id",
        &[&now_ms],
    )
    .await?;
    if reaped.is_empty() {
        return Ok(Vec::new());
    }
    let mut touched: Vec<i64> = column(
        db,
        "DELETE FROM sessions WHERE node_id = ANY($1) RETURNING account_id",
        &[&reaped],
    )
    .await?;
    touched.sort_unstable();
    touched.dedup();
    if touched.is_empty() {
        return Ok(Vec::new());
    }
    let (_, mut offline) = pipeline!(
        execute(
            db,
            "SELECT 1 FROM (SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) locked",
            &[&touched],
        ),
        column::<_, i64>(
            db,
            "UPDATE accounts a SET last_seen_ms = greatest(a.last_seen_ms, $2)
             WHERE a.id = ANY($1) AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.account_id = a.id)
             RETURNING a.id",
            &[&touched, &now_ms],
        ),
    )?;
    offline.sort_unstable();
    Ok(offline.into_iter().map(AccountId).collect())
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn renew_node(&self, node: &str, lease_until_ms: UnixMillis) -> Result<bool, StoreError> {
        transaction!(self, |tx| renew_node(tx, node, lease_until_ms))
    }

    async fn claim_session(
        &self,
        device: DeviceId,
        account: AccountId,
        node: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<String>, StoreError> {
        transaction!(self, |tx| claim_session(tx, device, account, node, now_ms))
    }

    async fn release_session(&self, device: DeviceId, node: &str) -> Result<(), StoreError> {
        autocommit!(self, |db| release_session(db, device, node))
    }

    async fn account_online(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| account_online(db, account, now_ms))
    }

    async fn clock_ms(&self) -> Result<Option<UnixMillis>, StoreError> {
        autocommit!(self, |db| clock_ms(db)).map(Some)
    }

    async fn reap_nodes(&self, now_ms: UnixMillis) -> Result<Vec<AccountId>, StoreError> {
        transaction!(self, |tx| reap_nodes(tx, now_ms))
    }
}
