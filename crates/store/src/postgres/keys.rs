//! End-to-end encryption keys: each device's identity keys and the
//! one-time keys others claim. A claim deletes the key it hands out,
//! skipping keys another claim holds locked (`SKIP LOCKED`), so concurrent
//! claims on any nodes get different keys and none waits for another.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::{AccountId, DeviceId};
use tokio_postgres::Row;

use super::PostgresStore;
use super::fault::Outcome;
use super::sql::{column, execute, row, rows, scalar, unsigned};
use super::{autocommit, transaction};
use crate::model::*;
use crate::{KeyStore, StoreError};

fn identity(row: &Row, from: usize) -> Outcome<IdentityKeys> {
    Ok(IdentityKeys {
        curve25519: row.try_get(from)?,
        ed25519: row.try_get(from + 1)?,
    })
}

pub(super) async fn count<C: GenericClient>(db: &C, device: DeviceId) -> Outcome<u64> {
    let count: i64 = scalar(
        db,
        "SELECT count(*) FROM one_time_keys WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    unsigned(count, "key count")
}

/// In a transaction. The device's row is locked first, so one device's
/// uploads (and its revocation) take turns; every check comes before the
/// first write.
pub(super) async fn put<C: GenericClient>(db: &C, upload: &KeyUpload) -> Outcome<KeysStored> {
    let device = upload.device.0;
    let live: Vec<i64> = column(
        db,
        "SELECT id FROM devices WHERE id = $1 FOR UPDATE",
        &[&device],
    )
    .await?;
    if live.is_empty() {
        // Revoked meanwhile: its keys are not kept.
        return Ok(KeysStored {
            one_time_keys: 0,
            identity_added: false,
        });
    }
    let stored = checked_identity(db, upload).await?;
    let held = count(db, upload.device).await?;
    let ids: Vec<&str> = upload
        .one_time_keys
        .iter()
        .map(|key| key.key_id.as_str())
        .collect();
    let present: i64 = scalar(
        db,
        "SELECT count(*) FROM one_time_keys WHERE device_id = $1 AND key_id = ANY($2)",
        &[&device, &ids],
    )
    .await?;
    // The service refuses an upload naming one id twice.
    let new = (ids.len() as u64).saturating_sub(unsigned(present, "key count")?);
    if held + new > upload.one_time_keys_max {
        return Err(StoreError::TooManyKeys.into());
    }
    let new_identity = match (&stored, &upload.identity) {
        (None, Some(identity)) => Some(identity),
        _ => None,
    };
    if let Some(identity) = new_identity {
        execute(
            db,
            "INSERT INTO device_keys (device_id, account_id, curve25519, ed25519, created_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &device,
                &upload.account.0,
                &identity.curve25519,
                &identity.ed25519,
                &upload.now_ms,
            ],
        )
        .await?;
    }
    insert_one_time_keys(db, upload, &ids).await?;
    Ok(KeysStored {
        one_time_keys: held + new,
        identity_added: new_identity.is_some(),
    })
}

/// The device's stored identity keys, if any, once the upload agrees with
/// them: it may not change them, and must bring them the first time.
async fn checked_identity<C: GenericClient>(
    db: &C,
    upload: &KeyUpload,
) -> Outcome<Option<IdentityKeys>> {
    let device = upload.device.0;
    let stored = match row(
        db,
        "SELECT curve25519, ed25519 FROM device_keys WHERE device_id = $1",
        &[&device],
    )
    .await?
    {
        Some(row) => Some(identity(&row, 0)?),
        None => None,
    };
    match (&stored, &upload.identity) {
        (Some(stored), Some(given)) if stored != given => {
            return Err(StoreError::IdentityKeyMismatch.into());
        }
        (None, None) => return Err(StoreError::IdentityKeyMissing.into()),
        _ => {}
    }
    Ok(stored)
}

/// Stores the upload's one-time keys; those already held stay as they are.
async fn insert_one_time_keys<C: GenericClient>(
    db: &C,
    upload: &KeyUpload,
    ids: &[&str],
) -> Outcome<()> {
    let device = upload.device.0;
    let keys: Vec<&str> = upload
        .one_time_keys
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    let signatures: Vec<&str> = upload
        .one_time_keys
        .iter()
        .map(|k| k.signature.as_str())
        .collect();
    execute(
        db,
        "INSERT INTO one_time_keys (device_id, key_id, key, signature)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])
         ON CONFLICT DO NOTHING",
        &[&device, &ids, &keys, &signatures],
    )
    .await?;
    Ok(())
}

pub(super) async fn of_account<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Vec<DeviceKeys>> {
    rows(
        db,
        "SELECT device_id, curve25519, ed25519 FROM device_keys
         WHERE account_id = $1 ORDER BY device_id",
        &[&account.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(DeviceKeys {
            device: DeviceId(row.try_get(0)?),
            identity: identity(row, 1)?,
        })
    })
    .collect()
}

/// In a transaction: one key per device, deleted as it is read.
pub(super) async fn claim<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Vec<ClaimedKey>> {
    let devices = of_account(db, account).await?;
    let mut claimed = Vec::with_capacity(devices.len());
    for keys in devices {
        let taken = row(
            db,
            "DELETE FROM one_time_keys
             WHERE (device_id, key_id) = (
                 SELECT device_id, key_id FROM one_time_keys WHERE device_id = $1
                 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING key_id, key, signature",
            &[&keys.device.0],
        )
        .await?;
        let one_time_key = match taken {
            Some(row) => Some(OneTimeKey {
                key_id: row.try_get(0)?,
                key: row.try_get(1)?,
                signature: row.try_get(2)?,
            }),
            None => None,
        };
        claimed.push(ClaimedKey {
            device: keys.device,
            identity: keys.identity,
            one_time_key,
            remaining: count(db, keys.device).await?,
        });
    }
    Ok(claimed)
}

/// A device's keys go with it. Whether it had published identity keys.
pub(super) async fn forget_device<C: GenericClient>(db: &C, device: DeviceId) -> Outcome<bool> {
    let identities = execute(
        db,
        "DELETE FROM device_keys WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    execute(
        db,
        "DELETE FROM one_time_keys WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    Ok(identities > 0)
}

/// See `KeyStore::online_devices_sharing_with`.
pub(super) async fn online_devices_sharing_with<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Vec<DeviceId>> {
    // The accounts first (members_by_account, then each conversation's
    // members by primary key), then their sessions by sessions_by_account.
    let devices: Vec<i64> = column(
        db,
        "SELECT s.device_id FROM sessions s
         WHERE s.account_id IN (
             SELECT $1::bigint
             UNION
             SELECT theirs.account_id FROM members mine
             JOIN members theirs ON theirs.conversation_id = mine.conversation_id
             WHERE mine.account_id = $1)
         ORDER BY s.device_id",
        &[&account.0],
    )
    .await?;
    Ok(devices.into_iter().map(DeviceId).collect())
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn put_device_keys(&self, upload: KeyUpload) -> Result<KeysStored, StoreError> {
        transaction!(self, |tx| put(tx, &upload))
    }

    async fn device_keys(&self, account: AccountId) -> Result<Vec<DeviceKeys>, StoreError> {
        autocommit!(self, |db| of_account(db, account))
    }

    async fn online_devices_sharing_with(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceId>, StoreError> {
        autocommit!(self, |db| online_devices_sharing_with(db, account))
    }

    async fn claim_one_time_keys(&self, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError> {
        transaction!(self, |tx| claim(tx, account))
    }

    async fn one_time_key_count(&self, device: DeviceId) -> Result<u64, StoreError> {
        autocommit!(self, |db| count(db, device))
    }

    async fn send_to_devices(&self, batch: ToDeviceBatch) -> Result<(), StoreError> {
        transaction!(self, |tx| super::to_device::send(tx, &batch))
    }

    async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, StoreError> {
        autocommit!(self, |db| super::to_device::waiting(
            db, device, after, limit
        ))
    }

    async fn ack_to_device(&self, device: DeviceId, up_to: i64) -> Result<u64, StoreError> {
        autocommit!(self, |db| super::to_device::ack(db, device, up_to))
    }
}
