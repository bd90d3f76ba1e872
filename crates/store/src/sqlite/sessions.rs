//! The session directory: node leases and which node holds each live device.

use async_trait::async_trait;
use missive_core::{AccountId, DeviceId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::writer::backend;
use crate::{SessionStore, StoreError};

pub(super) fn renew_node(
    conn: &Connection,
    node: &str,
    lease_until_ms: UnixMillis,
) -> Result<bool, StoreError> {
    let renewed = conn
        .execute(
            "UPDATE nodes SET lease_until_ms = max(lease_until_ms, ?2) WHERE id = ?1",
            params![node, lease_until_ms],
        )
        .map_err(backend)?;
    if renewed > 0 {
        return Ok(true);
    }
    conn.execute(
        "INSERT INTO nodes (id, lease_until_ms) VALUES (?1, ?2)",
        params![node, lease_until_ms],
    )
    .map_err(backend)?;
    Ok(false)
}

pub(super) fn claim_session(
    conn: &Connection,
    device: DeviceId,
    account: AccountId,
    node: &str,
    now_ms: UnixMillis,
) -> Result<Option<String>, StoreError> {
    // Every connect claims: statements parsed once per connection.
    let previous: Option<String> = conn
        .prepare_cached("SELECT node_id FROM sessions WHERE device_id = ?1")
        .and_then(|mut stmt| stmt.query_row([device.0], |row| row.get(0)).optional())
        .map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO sessions (device_id, account_id, node_id, since_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (device_id) DO UPDATE SET node_id = excluded.node_id,
             account_id = excluded.account_id, since_ms = excluded.since_ms",
    )
    .and_then(|mut stmt| stmt.execute(params![device.0, account.0, node, now_ms]))
    .map_err(backend)?;
    conn.prepare_cached("UPDATE devices SET last_seen_ms = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![device.0, now_ms]))
        .map_err(backend)?;
    Ok(previous.filter(|previous| previous != node))
}

pub(super) fn release_session(
    conn: &Connection,
    device: DeviceId,
    node: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM sessions WHERE device_id = ?1 AND node_id = ?2")
        .and_then(|mut stmt| stmt.execute(params![device.0, node]))
        .map_err(backend)?;
    Ok(())
}

pub(super) fn account_online(
    conn: &Connection,
    account: AccountId,
    now_ms: UnixMillis,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM sessions s JOIN nodes n ON n.id = s.node_id
                        WHERE s.account_id = ?1 AND n.lease_until_ms > ?2)",
    )
    .and_then(|mut stmt| stmt.query_row(params![account.0, now_ms], |row| row.get(0)))
    .map_err(backend)
}

pub(super) fn reap_nodes(
    conn: &Connection,
    now_ms: UnixMillis,
) -> Result<Vec<AccountId>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT s.account_id FROM sessions s JOIN nodes n ON n.id = s.node_id
             WHERE n.lease_until_ms <= ?1",
        )
        .map_err(backend)?;
    let touched: Vec<i64> = stmt
        .query_map([now_ms], |row| row.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    conn.execute(
        "DELETE FROM sessions WHERE node_id IN (SELECT id FROM nodes WHERE lease_until_ms <= ?1)",
        [now_ms],
    )
    .map_err(backend)?;
    conn.execute("DELETE FROM nodes WHERE lease_until_ms <= ?1", [now_ms])
        .map_err(backend)?;
    let mut offline = Vec::new();
    for account in touched {
        let still_online = account_online(conn, AccountId(account), now_ms)?;
        if !still_online {
            conn.execute(
                "UPDATE accounts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
                params![account, now_ms],
            )
            .map_err(backend)?;
            offline.push(AccountId(account));
        }
    }
    Ok(offline)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn renew_node(&self, node: &str, lease_until_ms: UnixMillis) -> Result<bool, StoreError> {
        let node = node.to_owned();
        self.write(move |conn| renew_node(conn, &node, lease_until_ms))
            .await
    }

    async fn claim_session(
        &self,
        device: DeviceId,
        account: AccountId,
        node: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<String>, StoreError> {
        let node = node.to_owned();
        self.write(move |conn| claim_session(conn, device, account, &node, now_ms))
            .await
    }

    async fn release_session(&self, device: DeviceId, node: &str) -> Result<(), StoreError> {
        let node = node.to_owned();
        self.write(move |conn| release_session(conn, device, &node))
            .await
    }

    async fn account_online(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.read(move |conn| account_online(conn, account, now_ms))
            .await
    }

    async fn reap_nodes(&self, now_ms: UnixMillis) -> Result<Vec<AccountId>, StoreError> {
        self.write(move |conn| reap_nodes(conn, now_ms)).await
    }

    async fn clock_ms(&self) -> Result<Option<UnixMillis>, StoreError> {
        Ok(None)
    }
}
