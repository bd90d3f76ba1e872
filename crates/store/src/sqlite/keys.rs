//! End-to-end encryption keys: each device's identity keys and the
//! one-time keys others claim. The writer thread runs every claim, so a
//! key read and deleted in one job is never handed out twice.

use async_trait::async_trait;
use missive_core::{AccountId, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::writer::backend;
use crate::model::*;
use crate::{KeyStore, StoreError};

fn identity_of(conn: &Connection, device: DeviceId) -> Result<Option<IdentityKeys>, StoreError> {
    conn.prepare_cached("SELECT curve25519, ed25519 FROM device_keys WHERE device_id = ?1")
        .map_err(backend)?
        .query_row([device.0], |row| {
            Ok(IdentityKeys {
                curve25519: row.get(0)?,
                ed25519: row.get(1)?,
            })
        })
        .optional()
        .map_err(backend)
}

pub(super) fn count(conn: &Connection, device: DeviceId) -> Result<u64, StoreError> {
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM one_time_keys WHERE device_id = ?1")
        .map_err(backend)?
        .query_row([device.0], |row| row.get(0))
        .map_err(backend)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Every check before the first write, so a refusal changes nothing.
pub(super) fn put(conn: &Connection, upload: &KeyUpload) -> Result<KeysStored, StoreError> {
    let stored = identity_of(conn, upload.device)?;
    match (&stored, &upload.identity) {
        (Some(stored), Some(given)) if stored != given => {
            return Err(StoreError::IdentityKeyMismatch);
        }
        (None, None) => return Err(StoreError::IdentityKeyMissing),
        _ => {}
    }
    let held = count(conn, upload.device)?;
    let mut exists = conn
        .prepare_cached("SELECT 1 FROM one_time_keys WHERE device_id = ?1 AND key_id = ?2")
        .map_err(backend)?;
    let mut new = 0;
    for key in &upload.one_time_keys {
        if !exists
            .exists(params![upload.device.0, key.key_id])
            .map_err(backend)?
        {
            new += 1;
        }
    }
    if held + new > upload.one_time_keys_max {
        return Err(StoreError::TooManyKeys);
    }
    let new_identity = match (&stored, &upload.identity) {
        (None, Some(identity)) => Some(identity),
        _ => None,
    };
    if let Some(identity) = new_identity {
        conn.execute(
            "INSERT INTO device_keys (device_id, account_id, curve25519, ed25519, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                upload.device.0,
                upload.account.0,
                identity.curve25519,
                identity.ed25519,
                upload.now_ms
            ],
        )
        .map_err(backend)?;
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO one_time_keys (device_id, key_id, key, signature)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    for key in &upload.one_time_keys {
        insert
            .execute(params![upload.device.0, key.key_id, key.key, key.signature])
            .map_err(backend)?;
    }
    Ok(KeysStored {
        one_time_keys: held + new,
        identity_added: new_identity.is_some(),
    })
}

pub(super) fn of_account(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<DeviceKeys>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT device_id, curve25519, ed25519 FROM device_keys
             WHERE account_id = ?1 ORDER BY device_id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([account.0], |row| {
            Ok(DeviceKeys {
                device: DeviceId(row.get(0)?),
                identity: IdentityKeys {
                    curve25519: row.get(1)?,
                    ed25519: row.get(2)?,
                },
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn claim(conn: &Connection, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError> {
    let devices = of_account(conn, account)?;
    let mut first = conn
        .prepare_cached(
            "SELECT key_id, key, signature FROM one_time_keys
             WHERE device_id = ?1 ORDER BY key_id LIMIT 1",
        )
        .map_err(backend)?;
    let mut delete = conn
        .prepare_cached("DELETE FROM one_time_keys WHERE device_id = ?1 AND key_id = ?2")
        .map_err(backend)?;
    let mut claimed = Vec::with_capacity(devices.len());
    for keys in devices {
        let one_time_key = first
            .query_row([keys.device.0], |row| {
                Ok(OneTimeKey {
                    key_id: row.get(0)?,
                    key: row.get(1)?,
                    signature: row.get(2)?,
                })
            })
            .optional()
            .map_err(backend)?;
        if let Some(key) = &one_time_key {
            delete
                .execute(params![keys.device.0, key.key_id])
                .map_err(backend)?;
        }
        claimed.push(ClaimedKey {
            device: keys.device,
            identity: keys.identity,
            one_time_key,
            remaining: count(conn, keys.device)?,
        });
    }
    Ok(claimed)
}

/// A device's keys go with it. Whether it had published identity keys.
pub(super) fn forget_device(conn: &Connection, device: DeviceId) -> Result<bool, StoreError> {
    let identities = conn
        .execute("DELETE FROM device_keys WHERE device_id = ?1", [device.0])
        .map_err(backend)?;
    conn.execute("DELETE FROM one_time_keys WHERE device_id = ?1", [device.0])
        .map_err(backend)?;
    Ok(identities > 0)
}

/// See `KeyStore::online_devices_sharing_with`.
pub(super) fn online_devices_sharing_with(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<DeviceId>, StoreError> {
    // The accounts first (members_by_account, then each conversation's
    // members by primary key), then their sessions by sessions_by_account:
    // no scan of the session directory.
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.device_id FROM sessions s
             WHERE s.account_id IN (
                 SELECT ?1
                 UNION
                 SELECT theirs.account_id FROM members mine
                 JOIN members theirs ON theirs.conversation_id = mine.conversation_id
                 WHERE mine.account_id = ?1)
             ORDER BY s.device_id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([account.0], |row| Ok(DeviceId(row.get(0)?)))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn put_device_keys(&self, upload: KeyUpload) -> Result<KeysStored, StoreError> {
        self.write(move |conn| put(conn, &upload)).await
    }

    async fn device_keys(&self, account: AccountId) -> Result<Vec<DeviceKeys>, StoreError> {
        self.read(move |conn| of_account(conn, account)).await
    }

    async fn online_devices_sharing_with(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceId>, StoreError> {
        self.read(move |conn| online_devices_sharing_with(conn, account))
            .await
    }

    async fn claim_one_time_keys(&self, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError> {
        self.write(move |conn| claim(conn, account)).await
    }

    async fn one_time_key_count(&self, device: DeviceId) -> Result<u64, StoreError> {
        self.read(move |conn| count(conn, device)).await
    }

    async fn send_to_devices(&self, batch: ToDeviceBatch) -> Result<(), StoreError> {
        self.write(move |conn| super::to_device::send(conn, &batch))
            .await
    }

    async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, StoreError> {
        self.read(move |conn| super::to_device::waiting(conn, device, after, limit))
            .await
    }

    async fn ack_to_device(&self, device: DeviceId, up_to: i64) -> Result<u64, StoreError> {
        self.write(move |conn| super::to_device::ack(conn, device, up_to))
            .await
    }
}
