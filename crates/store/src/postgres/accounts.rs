//! Accounts and devices.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::UnixMillis;
use missive_core::{AccountId, DeviceId, TokenHash, Username};

use super::PostgresStore;
use super::fault::{Fault, Outcome};
use super::sql::{column, execute, pipeline, row, rows, scalar};
use super::{autocommit, transaction};
use crate::model::*;
use crate::{AccountStore, StoreError};

pub(super) async fn create_account<C: GenericClient>(
    db: &C,
    account: &NewAccount,
) -> Outcome<AccountId> {
    // ON CONFLICT instead of catching the unique violation: a refused name
    // leaves nothing to roll back and waits out a concurrent registration
    // of the same name on another node.
    let id: Option<i64> = row(
        db,
        "INSERT INTO accounts (username, password_hash, phone, created_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (username) DO NOTHING RETURNING id",
        &[
            &account.username.as_str(),
            &account.password_hash,
            &account.phone,
            &account.now_ms,
        ],
    )
    .await?
    .map(|row| row.try_get(0))
    .transpose()?;
    let id = id
        .map(AccountId)
        .ok_or(Fault::Refused(StoreError::UsernameTaken))?;
    // In the same transaction: a refused invite leaves no account.
    if let Some(invite) = &account.invite {
        let used = execute(
            db,
            "UPDATE invites SET used_by = $2
             WHERE code_hash = $1 AND used_by IS NULL AND expires_ms > $3",
            &[&&invite.0[..], &id.0, &account.now_ms],
        )
        .await?;
        if used == 0 {
            return Err(StoreError::InviteInvalid.into());
        }
    }
    Ok(id)
}

pub(super) async fn account_by_username<C: GenericClient>(
    db: &C,
    username: &Username,
) -> Outcome<Option<AccountRecord>> {
    let Some(found) = row(
        db,
        "SELECT id, password_hash, suspended FROM accounts WHERE username = $1",
        &[&username.as_str()],
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(AccountRecord {
        id: AccountId(found.try_get(0)?),
        username: username.clone(),
        password_hash: found.try_get(1)?,
        suspended: found.try_get(2)?,
    }))
}

pub(super) async fn create_device<C: GenericClient>(
    db: &C,
    device: &NewDevice,
) -> Outcome<CreatedDevice> {
    // The account row lock makes count-then-insert atomic across nodes: two
    // logins racing for the last slot cannot both get it, and a suspension
    // (an update of that row) either comes first and is seen here, or
    // comes after and revokes this device too.
    let (suspended, n_devices) = pipeline!(
        scalar::<_, bool>(
            db,
            "SELECT suspended FROM accounts WHERE id = $1 FOR NO KEY UPDATE",
            &[&device.account.0]
        ),
        scalar::<_, i64>(
            db,
            "SELECT count(*) FROM devices WHERE account_id = $1",
            &[&device.account.0]
        ),
    )?;
    if suspended {
        return Err(StoreError::AccountSuspended.into());
    }
    let mut replaced = None;
    if usize::try_from(n_devices).unwrap_or(usize::MAX) >= device.devices_max {
        if !device.replace_least_recent {
            return Err(StoreError::TooManyDevices.into());
        }
        let least_recent: i64 = scalar(
            db,
            "SELECT d.id FROM devices d WHERE d.account_id = $1
             ORDER BY EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id),
                      d.last_seen_ms, d.id
             LIMIT 1",
            &[&device.account.0],
        )
        .await?;
        replaced = revoke_device(db, device.account, DeviceId(least_recent)).await?;
    }
    let id: i64 = scalar(
        db,
        "INSERT INTO devices (account_id, name, token_hash, created_ms, last_seen_ms)
         VALUES ($1, $2, $3, $4, $4) RETURNING id",
        &[
            &device.account.0,
            &device.name,
            &&device.token_hash.0[..],
            &device.now_ms,
        ],
    )
    .await?;
    // A new device starts where its account's conversations are now: it
    // gets what is sent from here on (history pages the past), and nothing
    // of a group the account left. The conversation rows are read, not
    // locked (that would stall on every send in flight): what commits
    // meanwhile is delivered to it too, a few events more than "from now
    // on", never fewer.
    execute(
        db,
        "INSERT INTO positions (device_id, conversation_id, seq)
         SELECT $1::bigint, m.conversation_id, c.last_seq FROM members m
         JOIN conversations c ON c.id = m.conversation_id WHERE m.account_id = $2
         UNION ALL
         SELECT $1::bigint, conversation_id, left_seq FROM departures WHERE account_id = $2",
        &[&id, &device.account.0],
    )
    .await?;
    Ok(CreatedDevice {
        id: DeviceId(id),
        replaced,
    })
}

pub(super) async fn touch_device<C: GenericClient>(
    db: &C,
    device: DeviceId,
    now_ms: i64,
) -> Outcome<()> {
    execute(
        db,
        "UPDATE devices SET last_seen_ms = $2 WHERE id = $1 AND last_seen_ms < $2",
        &[&device.0, &now_ms],
    )
    .await
    .map(drop)
}

pub(super) async fn expire_devices<C: GenericClient>(
    db: &C,
    idle_before_ms: i64,
    limit: usize,
) -> Outcome<Vec<RevokedDevice>> {
    // SKIP LOCKED: another node's sweeper takes the rest; a device logging
    // in or connecting meanwhile holds its row and is left alone.
    let idle = rows(
        db,
        "SELECT d.account_id, d.id FROM devices d
         WHERE d.last_seen_ms < $1
           AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id)
         ORDER BY d.last_seen_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&idle_before_ms, &i64::try_from(limit).unwrap_or(i64::MAX)],
    )
    .await?;
    let mut expired = Vec::with_capacity(idle.len());
    for found in idle {
        let account = AccountId(found.try_get(0)?);
        let device = DeviceId(found.try_get(1)?);
        expired.extend(revoke_device(db, account, device).await?);
    }
    Ok(expired)
}

pub(super) async fn authenticate<C: GenericClient>(
    db: &C,
    token: &TokenHash,
) -> Outcome<Option<DeviceAuth>> {
    let Some(found) = row(
        db,
        "SELECT d.id, d.account_id, a.username FROM devices d
         JOIN accounts a ON a.id = d.account_id WHERE d.token_hash = $1",
        &[&&token.0[..]],
    )
    .await?
    else {
        return Ok(None);
    };
    let stored: String = found.try_get(2)?;
    let username = Username::parse(&stored)
        .map_err(|_| Fault::Corrupt(format!("stored username {stored:?} is invalid")))?;
    Ok(Some(DeviceAuth {
        account: AccountId(found.try_get(1)?),
        username,
        device: DeviceId(found.try_get(0)?),
    }))
}

pub(super) async fn list_devices<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Vec<DeviceRecord>> {
    rows(
        db,
        "SELECT id, name, created_ms, last_seen_ms FROM devices WHERE account_id = $1 ORDER BY id",
        &[&account.0],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(DeviceRecord {
            id: DeviceId(row.try_get(0)?),
            name: row.try_get(1)?,
            created_ms: row.try_get(2)?,
            last_seen_ms: row.try_get(3)?,
        })
    })
    .collect()
}

pub(super) async fn rename_device<C: GenericClient>(
    db: &C,
    account: AccountId,
    device: DeviceId,
    name: &str,
) -> Outcome<bool> {
    execute(
        db,
        "UPDATE devices SET name = $3 WHERE id = $1 AND account_id = $2",
        &[&device.0, &account.0, &name],
    )
    .await
    .map(|changed| changed > 0)
}

pub(super) async fn revoke_device<C: GenericClient>(
    db: &C,
    account: AccountId,
    device: DeviceId,
) -> Outcome<Option<RevokedDevice>> {
    let deleted: Vec<i64> = column(
        db,
        "DELETE FROM devices WHERE id = $1 AND account_id = $2 RETURNING id",
        &[&device.0, &account.0],
    )
    .await?;
    if deleted.is_empty() {
        return Ok(None);
    }
    // Its messages stay (with their dedup keys: device ids are never
    // reused, so they can match nothing new).
    let (_, _, had_keys, _) = pipeline!(
        execute(
            db,
            "DELETE FROM positions WHERE device_id = $1",
            &[&device.0],
        ),
        execute(
            db,
            "INSERT INTO revocations (device_id) VALUES ($1)",
            &[&device.0],
        ),
        super::keys::forget_device(db, device),
        super::to_device::forget_device(db, device),
    )?;
    Ok(Some(RevokedDevice {
        device,
        account,
        had_keys,
    }))
}

pub(super) async fn set_suspended<C: GenericClient>(
    db: &C,
    account: AccountId,
    suspended: bool,
) -> Outcome<Option<Vec<RevokedDevice>>> {
    let changed = execute(
        db,
        "UPDATE accounts SET suspended = $2 WHERE id = $1",
        &[&account.0, &suspended],
    )
    .await?;
    if changed == 0 {
        return Ok(None);
    }
    if !suspended {
        return Ok(Some(Vec::new()));
    }
    let devices: Vec<i64> = column(
        db,
        "SELECT id FROM devices WHERE account_id = $1 ORDER BY id",
        &[&account.0],
    )
    .await?;
    let mut revoked = Vec::with_capacity(devices.len());
    for device in devices {
        revoked.extend(revoke_device(db, account, DeviceId(device)).await?);
    }
    Ok(Some(revoked))
}

pub(super) async fn delete_account<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Option<Vec<RevokedDevice>>> {
    let changed = execute(
        db,
        "UPDATE accounts SET username = $2::text || id::text, password_hash = '', phone = NULL,
                             suspended = true
         WHERE id = $1",
        &[&account.0, &DELETED_PREFIX],
    )
    .await?;
    if changed == 0 {
        return Ok(None);
    }
    pipeline!(
        execute(
            db,
            "DELETE FROM contacts WHERE owner_id = $1 OR contact_id = $1",
            &[&account.0],
        ),
        execute(
            db,
            "DELETE FROM blocks WHERE blocker_id = $1 OR blocked_id = $1",
            &[&account.0],
        ),
    )?;
    // Suspended above, so this revokes every device, as a suspension does.
    set_suspended(db, account, true).await
}

pub(super) async fn create_invites<C: GenericClient>(db: &C, invites: &NewInvites) -> Outcome<()> {
    let hashes: Vec<&[u8]> = invites.code_hashes.iter().map(|hash| &hash.0[..]).collect();
    execute(
        db,
        "INSERT INTO invites (code_hash, created_ms, expires_ms)
         SELECT code_hash, $2, $3 FROM unnest($1::bytea[]) AS i(code_hash)",
        &[&hashes, &invites.now_ms, &invites.expires_ms],
    )
    .await
    .map(drop)
}

pub(super) async fn list_accounts<C: GenericClient>(
    db: &C,
    after: Option<&str>,
    limit: usize,
) -> Outcome<Vec<AccountSummary>> {
    rows(
        db,
        "SELECT a.id, a.username, a.created_ms,
                (SELECT count(*) FROM devices d WHERE d.account_id = a.id), a.suspended
         FROM accounts a WHERE a.username > $1 ORDER BY a.username LIMIT $2",
        &[
            &after.unwrap_or(""),
            &i64::try_from(limit).unwrap_or(i64::MAX),
        ],
    )
    .await?
    .iter()
    .map(|found| {
        Ok(AccountSummary {
            id: AccountId(found.try_get(0)?),
            username: found.try_get(1)?,
            created_ms: found.try_get(2)?,
            devices: found.try_get(3)?,
            suspended: found.try_get(4)?,
        })
    })
    .collect()
}

pub(super) async fn set_password_hash<C: GenericClient>(
    db: &C,
    account: AccountId,
    hash: &str,
) -> Outcome<bool> {
    execute(
        db,
        "UPDATE accounts SET password_hash = $2 WHERE id = $1",
        &[&account.0, &hash],
    )
    .await
    .map(|changed| changed > 0)
}

pub(super) async fn revocations_after<C: GenericClient>(
    db: &C,
    after: i64,
    limit: usize,
) -> Outcome<Vec<(i64, DeviceId)>> {
    rows(
        db,
        "SELECT id, device_id FROM revocations WHERE id > $1 ORDER BY id LIMIT $2",
        &[&after, &i64::try_from(limit).unwrap_or(i64::MAX)],
    )
    .await?
    .iter()
    .map(|found| Ok((found.try_get(0)?, DeviceId(found.try_get(1)?))))
    .collect()
}

pub(super) async fn last_revocation<C: GenericClient>(db: &C) -> Outcome<i64> {
    scalar(db, "SELECT coalesce(max(id), 0) FROM revocations", &[]).await
}

/// Keeps the last `REVOCATIONS_KEPT` revocations.
pub(super) async fn prune_revocations<C: GenericClient>(db: &C) -> Outcome<()> {
    execute(
        db,
        "DELETE FROM revocations WHERE id <= (SELECT max(id) FROM revocations) - $1",
        &[&REVOCATIONS_KEPT],
    )
    .await
    .map(drop)
}

pub(super) async fn device_owner<C: GenericClient>(
    db: &C,
    device: DeviceId,
) -> Outcome<Option<String>> {
    row(
        db,
        "SELECT a.username FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.id = $1",
        &[&device.0],
    )
    .await?
    .map(|row| row.try_get(0).map_err(Fault::from))
    .transpose()
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError> {
        transaction!(self, |tx| create_account(tx, &account))
    }

    async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<AccountRecord>, StoreError> {
        autocommit!(self, |db| account_by_username(db, username))
    }

    async fn create_device(&self, device: NewDevice) -> Result<CreatedDevice, StoreError> {
        transaction!(self, |tx| create_device(tx, &device))
    }

    async fn list_accounts(
        &self,
        after: Option<Username>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        autocommit!(self, |db| list_accounts(
            db,
            after.as_ref().map(Username::as_str),
            limit
        ))
    }

    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        transaction!(self, |tx| set_suspended(tx, account, suspended))
    }

    async fn delete_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        transaction!(self, |tx| delete_account(tx, account))
    }

    async fn create_invites(&self, invites: NewInvites) -> Result<(), StoreError> {
        autocommit!(self, |db| create_invites(db, &invites))
    }

    async fn set_password_hash(
        &self,
        account: AccountId,
        hash: String,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| set_password_hash(db, account, &hash))
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, DeviceId)>, StoreError> {
        autocommit!(self, |db| revocations_after(db, after, limit))
    }

    async fn last_revocation(&self) -> Result<i64, StoreError> {
        autocommit!(self, |db| last_revocation(db))
    }

    async fn touch_device(&self, device: DeviceId, now_ms: UnixMillis) -> Result<(), StoreError> {
        autocommit!(self, |db| touch_device(db, device, now_ms))
    }

    async fn expire_devices(
        &self,
        idle_before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<RevokedDevice>, StoreError> {
        transaction!(self, |tx| expire_devices(tx, idle_before_ms, limit))
    }

    async fn authenticate(&self, token: &TokenHash) -> Result<Option<DeviceAuth>, StoreError> {
        autocommit!(self, |db| authenticate(db, token))
    }

    async fn list_devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError> {
        autocommit!(self, |db| list_devices(db, account))
    }

    async fn rename_device(
        &self,
        account: AccountId,
        device: DeviceId,
        name: String,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| rename_device(db, account, device, &name))
    }

    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<RevokedDevice>, StoreError> {
        transaction!(self, |tx| revoke_device(tx, account, device))
    }

    async fn device_owner(&self, device: DeviceId) -> Result<Option<String>, StoreError> {
        autocommit!(self, |db| device_owner(db, device))
    }
}
