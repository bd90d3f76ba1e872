//! Accounts and devices (logins).

use async_trait::async_trait;
use missive_core::UnixMillis;
use missive_core::{AccountId, DeviceId, TokenHash, Username};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::writer::backend;
use crate::model::*;
use crate::{AccountStore, StoreError};

pub(super) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

pub(super) fn create_account(
    conn: &Connection,
    account: &NewAccount,
) -> Result<AccountId, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO accounts (username, password_hash, phone, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            account.username.as_str(),
            account.password_hash,
            account.phone,
            account.now_ms
        ],
    );
    let id = match inserted {
        Ok(_) => AccountId(conn.last_insert_rowid()),
        Err(err) if is_unique_violation(&err) => return Err(StoreError::UsernameTaken),
        Err(err) => return Err(backend(err)),
    };
    // The job's savepoint undoes the account if the invite is refused.
    if let Some(invite) = &account.invite {
        let used = conn
            .execute(
                "UPDATE invites SET used_by = ?2
                 WHERE code_hash = ?1 AND used_by IS NULL AND expires_ms > ?3",
                params![&invite.0[..], id.0, account.now_ms],
            )
            .map_err(backend)?;
        if used == 0 {
            return Err(StoreError::InviteInvalid);
        }
    }
    Ok(id)
}

pub(super) fn account_by_username(
    conn: &Connection,
    username: &Username,
) -> Result<Option<AccountRecord>, StoreError> {
    conn.prepare_cached("SELECT id, password_hash, suspended FROM accounts WHERE username = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([username.as_str()], |row| {
                Ok(AccountRecord {
                    id: AccountId(row.get(0)?),
                    username: username.clone(),
                    password_hash: row.get(1)?,
                    suspended: row.get(2)?,
                })
            })
            .optional()
        })
        .map_err(backend)
}

pub(super) fn create_device(
    conn: &Connection,
    device: &NewDevice,
) -> Result<CreatedDevice, StoreError> {
    // Checked in the writer's transaction, so a suspension that committed
    // first is seen, and one that commits after revokes this device too.
    let (n_devices, suspended): (i64, bool) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM devices WHERE account_id = ?1), suspended
             FROM accounts WHERE id = ?1",
            [device.account.0],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(backend)?;
    if suspended {
        return Err(StoreError::AccountSuspended);
    }
    let mut replaced = None;
    if n_devices as usize >= device.devices_max {
        if !device.replace_least_recent {
            return Err(StoreError::TooManyDevices);
        }
        let least_recent: DeviceId = conn
            .query_row(
                "SELECT d.id FROM devices d WHERE d.account_id = ?1
                 ORDER BY EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id),
                          d.last_seen_ms, d.id
                 LIMIT 1",
                [device.account.0],
                |row| Ok(DeviceId(row.get(0)?)),
            )
            .map_err(backend)?;
        replaced = revoke_device(conn, device.account, least_recent)?;
    }
    conn.execute(
        "INSERT INTO devices (account_id, name, token_hash, created_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![
            device.account.0,
            device.name,
            &device.token_hash.0[..],
            device.now_ms
        ],
    )
    .map_err(backend)?;
    let id = conn.last_insert_rowid();
    // A new device starts where its account's conversations are now: it
    // gets what is sent from here on (history pages the past), and nothing
    // of a group the account left.
    conn.prepare_cached(
        "INSERT INTO positions (device_id, conversation_id, seq)
         SELECT ?1, m.conversation_id, c.last_seq FROM members m
         JOIN conversations c ON c.id = m.conversation_id WHERE m.account_id = ?2
         UNION ALL
         SELECT ?1, conversation_id, left_seq FROM departures WHERE account_id = ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![id, device.account.0]))
    .map_err(backend)?;
    Ok(CreatedDevice {
        id: DeviceId(id),
        replaced,
    })
}

pub(super) fn touch_device(
    conn: &Connection,
    device: DeviceId,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE devices SET last_seen_ms = ?2 WHERE id = ?1 AND last_seen_ms < ?2",
        params![device.0, now_ms],
    )
    .map(drop)
    .map_err(backend)
}

pub(super) fn expire_devices(
    conn: &Connection,
    idle_before_ms: i64,
    limit: usize,
) -> Result<Vec<RevokedDevice>, StoreError> {
    let idle: Vec<(AccountId, DeviceId)> = {
        let mut stmt = conn
            .prepare(
                "SELECT d.account_id, d.id FROM devices d
                 WHERE d.last_seen_ms < ?1
                   AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.device_id = d.id)
                 ORDER BY d.last_seen_ms LIMIT ?2",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![idle_before_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
                |row| Ok((AccountId(row.get(0)?), DeviceId(row.get(1)?))),
            )
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)?
    };
    let mut expired = Vec::with_capacity(idle.len());
    for (account, device) in idle {
        expired.extend(revoke_device(conn, account, device)?);
    }
    Ok(expired)
}

pub(super) fn authenticate(
    conn: &Connection,
    token: &TokenHash,
) -> Result<Option<DeviceAuth>, StoreError> {
    conn.prepare_cached(
        "SELECT d.id, d.account_id, a.username FROM devices d
         JOIN accounts a ON a.id = d.account_id WHERE d.token_hash = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([&token.0[..]], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()
    })
    .map_err(backend)?
    .map(|(device, account, username)| {
        let username = Username::parse(&username)
            .map_err(|_| StoreError::Backend(format!("stored username {username:?} is invalid")))?;
        Ok(DeviceAuth {
            account: AccountId(account),
            username,
            device: DeviceId(device),
        })
    })
    .transpose()
}

pub(super) fn list_devices(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, name, created_ms, last_seen_ms FROM devices WHERE account_id = ?1 ORDER BY id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([account.0], |row| {
            Ok(DeviceRecord {
                id: DeviceId(row.get(0)?),
                name: row.get(1)?,
                created_ms: row.get(2)?,
                last_seen_ms: row.get(3)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn rename_device(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
    name: &str,
) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE devices SET name = ?3 WHERE id = ?1 AND account_id = ?2",
        params![device.0, account.0, name],
    )
    .map(|changed| changed > 0)
    .map_err(backend)
}

pub(super) fn revoke_device(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<Option<RevokedDevice>, StoreError> {
    let deleted = conn
        .execute(
            "DELETE FROM devices WHERE id = ?1 AND account_id = ?2",
            params![device.0, account.0],
        )
        .map_err(backend)?;
    if deleted == 0 {
        return Ok(None);
    }
    conn.execute("DELETE FROM positions WHERE device_id = ?1", [device.0])
        .map_err(backend)?;
    let had_keys = super::keys::forget_device(conn, device)?;
    super::to_device::forget_device(conn, device)?;
    conn.execute(
        "INSERT INTO revocations (device_id) VALUES (?1)",
        [device.0],
    )
    .map_err(backend)?;
    Ok(Some(RevokedDevice {
        device,
        account,
        had_keys,
    }))
}

pub(super) fn set_suspended(
    conn: &Connection,
    account: AccountId,
    suspended: bool,
) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
    let changed = conn
        .execute(
            "UPDATE accounts SET suspended = ?2 WHERE id = ?1",
            params![account.0, suspended],
        )
        .map_err(backend)?;
    if changed == 0 {
        return Ok(None);
    }
    if !suspended {
        return Ok(Some(Vec::new()));
    }
    let devices: Vec<DeviceId> = conn
        .prepare("SELECT id FROM devices WHERE account_id = ?1 ORDER BY id")
        .and_then(|mut stmt| {
            stmt.query_map([account.0], |row| Ok(DeviceId(row.get(0)?)))?
                .collect()
        })
        .map_err(backend)?;
    let mut revoked = Vec::with_capacity(devices.len());
    for device in devices {
        revoked.extend(revoke_device(conn, account, device)?);
    }
    Ok(Some(revoked))
}

pub(super) fn delete_account(
    conn: &Connection,
    account: AccountId,
) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
    let changed = conn
        .execute(
            "UPDATE accounts SET username = ?2 || id, password_hash = '', phone = NULL,
                                 suspended = 1
             WHERE id = ?1",
            params![account.0, DELETED_PREFIX],
        )
        .map_err(backend)?;
    if changed == 0 {
        return Ok(None);
    }
    conn.execute(
        "DELETE FROM contacts WHERE owner_id = ?1 OR contact_id = ?1",
        [account.0],
    )
    .map_err(backend)?;
    conn.execute(
        "DELETE FROM blocks WHERE blocker_id = ?1 OR blocked_id = ?1",
        [account.0],
    )
    .map_err(backend)?;
    // Suspended above, so this revokes every device, as a suspension does.
    set_suspended(conn, account, true)
}

pub(super) fn create_invites(conn: &Connection, invites: &NewInvites) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("INSERT INTO invites (code_hash, created_ms, expires_ms) VALUES (?1, ?2, ?3)")
        .map_err(backend)?;
    for hash in &invites.code_hashes {
        stmt.execute(params![&hash.0[..], invites.now_ms, invites.expires_ms])
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn list_accounts(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<AccountSummary>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT a.id, a.username, a.created_ms,
                    (SELECT count(*) FROM devices d WHERE d.account_id = a.id), a.suspended
             FROM accounts a WHERE a.username > ?1 ORDER BY a.username LIMIT ?2",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(
            params![
                after.unwrap_or(""),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok(AccountSummary {
                    id: AccountId(row.get(0)?),
                    username: row.get(1)?,
                    created_ms: row.get(2)?,
                    devices: row.get(3)?,
                    suspended: row.get(4)?,
                })
            },
        )
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn set_password_hash(
    conn: &Connection,
    account: AccountId,
    hash: &str,
) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE accounts SET password_hash = ?2 WHERE id = ?1",
        params![account.0, hash],
    )
    .map(|changed| changed > 0)
    .map_err(backend)
}

pub(super) fn revocations_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, DeviceId)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, device_id FROM revocations WHERE id > ?1 ORDER BY id LIMIT ?2")
        .map_err(backend)?;
    let rows = stmt
        .query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| Ok((row.get(0)?, DeviceId(row.get(1)?))),
        )
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn last_revocation(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM revocations", [], |row| {
        row.get(0)
    })
    .map_err(backend)
}

/// Keeps the last `REVOCATIONS_KEPT` revocations.
pub(super) fn prune_revocations(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM revocations WHERE id <= (SELECT max(id) FROM revocations) - ?1",
        [REVOCATIONS_KEPT],
    )
    .map(drop)
    .map_err(backend)
}

pub(super) fn device_owner(
    conn: &Connection,
    device: DeviceId,
) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT a.username FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.id = ?1",
        [device.0],
        |row| row.get(0),
    )
    .optional()
    .map_err(backend)
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError> {
        self.write(move |conn| create_account(conn, &account)).await
    }

    async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let username = username.clone();
        self.read(move |conn| account_by_username(conn, &username))
            .await
    }

    async fn create_device(&self, device: NewDevice) -> Result<CreatedDevice, StoreError> {
        self.write(move |conn| create_device(conn, &device)).await
    }

    async fn list_accounts(
        &self,
        after: Option<Username>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        self.read(move |conn| list_accounts(conn, after.as_ref().map(Username::as_str), limit))
            .await
    }

    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        self.write(move |conn| set_suspended(conn, account, suspended))
            .await
    }

    async fn delete_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        self.write(move |conn| delete_account(conn, account)).await
    }

    async fn create_invites(&self, invites: NewInvites) -> Result<(), StoreError> {
        self.write(move |conn| create_invites(conn, &invites)).await
    }

    async fn set_password_hash(
        &self,
        account: AccountId,
        hash: String,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| set_password_hash(conn, account, &hash))
            .await
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, DeviceId)>, StoreError> {
        self.read(move |conn| revocations_after(conn, after, limit))
            .await
    }

    async fn last_revocation(&self) -> Result<i64, StoreError> {
        self.read(last_revocation).await
    }

    async fn touch_device(&self, device: DeviceId, now_ms: UnixMillis) -> Result<(), StoreError> {
        self.write(move |conn| touch_device(conn, device, now_ms))
            .await
    }

    async fn expire_devices(
        &self,
        idle_before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<RevokedDevice>, StoreError> {
        self.write(move |conn| expire_devices(conn, idle_before_ms, limit))
            .await
    }

    async fn authenticate(&self, token: &TokenHash) -> Result<Option<DeviceAuth>, StoreError> {
        let token = token.clone();
        self.read(move |conn| authenticate(conn, &token)).await
    }

    async fn list_devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |conn| list_devices(conn, account)).await
    }

    async fn rename_device(
        &self,
        account: AccountId,
        device: DeviceId,
        name: String,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| rename_device(conn, account, device, &name))
            .await
    }

    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<RevokedDevice>, StoreError> {
        self.write(move |conn| revoke_device(conn, account, device))
            .await
    }

    async fn device_owner(&self, device: DeviceId) -> Result<Option<String>, StoreError> {
        self.read(move |conn| device_owner(conn, device)).await
    }
}
