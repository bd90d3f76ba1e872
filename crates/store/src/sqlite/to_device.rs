//! To-device messages: opaque bodies for one device each, waiting until it
//! acks them. The writer thread stores them, so a device's seqs increase
//! in commit order.

use std::collections::BTreeMap;

use missive_core::DeviceId;
use rusqlite::{Connection, params};

use super::writer::backend;
use crate::StoreError;
use crate::model::*;

/// Every check before the first write, so a refusal changes nothing.
pub(super) fn send(conn: &Connection, batch: &ToDeviceBatch) -> Result<(), StoreError> {
    let mut owned = conn
        .prepare_cached("SELECT 1 FROM devices WHERE id = ?1 AND account_id = ?2")
        .map_err(backend)?;
    let mut adding: BTreeMap<i64, u64> = BTreeMap::new();
    for message in &batch.messages {
        if !owned
            .exists(params![message.recipient.0, message.recipient_account.0])
            .map_err(backend)?
        {
            return Err(StoreError::UnknownDevice);
        }
        *adding.entry(message.recipient.0).or_default() += 1;
    }
    let mut waiting = conn
        .prepare_cached(
            "SELECT count(*), count(*) FILTER (WHERE sender_account = ?2)
             FROM to_device WHERE device_id = ?1",
        )
        .map_err(backend)?;
    for (device, new) in &adding {
        let (held, from_sender): (i64, i64) = waiting
            .query_row(params![device, batch.sender_account.0], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(backend)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0) + new;
        if count(held) > batch.waiting_max || count(from_sender) > batch.waiting_per_sender_max {
            return Err(StoreError::InboxFull);
        }
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO to_device (device_id, sender_account, sender_device, body, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(backend)?;
    for message in &batch.messages {
        insert
            .execute(params![
                message.recipient.0,
                batch.sender_account.0,
                batch.sender_device.0,
                message.body,
                batch.now_ms
            ])
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn waiting(
    conn: &Connection,
    device: DeviceId,
    after: i64,
    limit: usize,
) -> Result<Vec<ToDeviceMessage>, StoreError> {
    // The LIMIT as a literal: a bound one makes SQLite plan it again at
    // every run (readers.rs).
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT t.seq, a.username, t.sender_device, t.body, t.created_ms
             FROM to_device t JOIN accounts a ON a.id = t.sender_account
             WHERE t.device_id = ?1 AND t.seq > ?2 ORDER BY t.seq LIMIT {limit}"
        ))
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![device.0, after], |row| {
            Ok(ToDeviceMessage {
                seq: row.get(0)?,
                from: row.get(1)?,
                from_device: DeviceId(row.get(2)?),
                body: row.get(3)?,
                created_ms: row.get(4)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn ack(conn: &Connection, device: DeviceId, up_to: i64) -> Result<u64, StoreError> {
    let removed = conn
        .execute(
            "DELETE FROM to_device WHERE device_id = ?1 AND seq <= ?2",
            params![device.0, up_to],
        )
        .map_err(backend)?;
    Ok(removed as u64)
}

/// A device's messages go with it.
pub(super) fn forget_device(conn: &Connection, device: DeviceId) -> Result<(), StoreError> {
    conn.execute("DELETE FROM to_device WHERE device_id = ?1", [device.0])
        .map_err(backend)?;
    Ok(())
}
