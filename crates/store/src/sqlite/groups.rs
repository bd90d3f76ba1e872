//! Group conversations: creation, membership changes recorded as system
//! events, and group info. Runs inside the writer's batch transaction.

use async_trait::async_trait;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::conversations::{account_devices, check_member, member_devices};
use super::send::{EVENT_SYSTEM, next_seq};
use super::writer::backend;
use crate::model::*;
use crate::rules;
use crate::{GroupStore, StoreError};

const ROLE_MEMBER: i64 = 0;
const ROLE_ADMIN: i64 = 1;
const KIND_GROUP: i64 = 1;

fn username(conn: &Connection, account: AccountId) -> Result<String, StoreError> {
    conn.prepare_cached("SELECT username FROM accounts WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([account.0], |row| row.get(0)))
        .map_err(backend)
}

fn usernames(conn: &Connection, accounts: &[AccountId]) -> Result<Vec<String>, StoreError> {
    accounts
        .iter()
        .map(|account| username(conn, *account))
        .collect()
}

/// A system event to store (one row; its recipients read it above their
/// positions).
struct SystemEvent {
    conversation: ConversationId,
    actor: AccountId,
    actor_device: DeviceId,
    description: serde_json::Value,
    now_ms: UnixMillis,
}

fn store_system_event(conn: &Connection, event: &SystemEvent) -> Result<i64, StoreError> {
    let (seq, ts_ms) = next_seq(conn, event.conversation, event.now_ms)?;
    let message_id = MessageId::generate();
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            message_id.as_str(),
            event.conversation.0,
            seq,
            event.actor.0,
            event.actor_device.0,
            event.description.to_string(),
            ts_ms,
            EVENT_SYSTEM
        ])
    })
    .map_err(backend)?;
    Ok(seq)
}

fn add_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
    role: i64,
    joined_seq: i64,
    now_ms: UnixMillis,
) -> Result<(), StoreError> {
    // Back in the group: what waits for its devices is decided by the new
    // membership alone.
    conn.prepare_cached("DELETE FROM departures WHERE conversation_id = ?1 AND account_id = ?2")
        .and_then(|mut stmt| stmt.execute(params![conversation.0, account.0]))
        .map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO members (conversation_id, account_id, role, joined_seq, joined_ms, read_seq, delivered_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![conversation.0, account.0, role, joined_seq, now_ms]))
    .map_err(|err| match err {
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::AlreadyMember
        }
        other => backend(other),
    })?;
    Ok(())
}

fn member_count(conn: &Connection, conversation: ConversationId) -> Result<usize, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM members WHERE conversation_id = ?1",
        [conversation.0],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n as usize)
    .map_err(backend)
}

fn role_of(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT role FROM members WHERE conversation_id = ?1 AND account_id = ?2",
        params![conversation.0, account.0],
        |row| row.get(0),
    )
    .optional()
    .map_err(backend)
}

/// Membership check plus "this is a group".
fn check_group_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<i64, StoreError> {
    check_member(conn, conversation, account)?;
    let kind: i64 = conn
        .query_row(
            "SELECT kind FROM conversations WHERE id = ?1",
            [conversation.0],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if kind != KIND_GROUP {
        return Err(StoreError::NotAGroup);
    }
    role_of(conn, conversation, account)?.ok_or(StoreError::NotMember)
}

fn check_admin(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<(), StoreError> {
    if check_group_member(conn, conversation, account)? == ROLE_ADMIN {
        Ok(())
    } else {
        Err(StoreError::NotAdmin)
    }
}

pub(super) fn create_group(
    conn: &Connection,
    group: &NewGroup,
) -> Result<GroupChanged, StoreError> {
    let Some(members) = group.others() else {
        return Err(StoreError::GroupFull);
    };
    conn.execute(
        "INSERT INTO conversations (kind, name, created_ms, encrypted) VALUES (?1, ?2, ?3, ?4)",
        params![
            KIND_GROUP,
            group.name.as_str(),
            group.now_ms,
            group.encrypted
        ],
    )
    .map_err(backend)?;
    let conversation = ConversationId(conn.last_insert_rowid());
    add_member(
        conn,
        conversation,
        group.creator,
        ROLE_ADMIN,
        0,
        group.now_ms,
    )?;
    for member in &members {
        add_member(conn, conversation, *member, ROLE_MEMBER, 0, group.now_ms)?;
    }
    let mut recipients = member_devices(conn, conversation, None)?;
    recipients.retain(|device| *device != group.creator_device);
    let description = serde_json::json!({
        "v": 1,
        "action": "created",
        "actor": username(conn, group.creator)?,
        "name": group.name.as_str(),
        "users": usernames(conn, &members)?,
        "encrypted": group.encrypted,
    });
    let seq = store_system_event(
        conn,
        &SystemEvent {
            conversation,
            actor: group.creator,
            actor_device: group.creator_device,
            description,
            now_ms: group.now_ms,
        },
    )?;
    Ok(GroupChanged {
        conversation,
        seq,
        recipients,
    })
}

pub(super) fn change_group(
    conn: &Connection,
    request: &GroupChangeRequest,
) -> Result<GroupChanged, StoreError> {
    let conversation = request.conversation;
    let actor = request.actor;
    let actor_name = username(conn, actor)?;
    // Who must hear about the change but is no longer a member: (account,
    // the seq it had joined at).
    let mut leavers: Vec<(AccountId, i64)> = Vec::new();
    let description = apply_change(conn, request, &actor_name, &mut leavers)?;
    let mut recipients = member_devices(conn, conversation, None)?;
    for (leaver, _) in &leavers {
        recipients.extend(account_devices(conn, *leaver)?);
    }
    recipients.retain(|device| *device != request.actor_device);
    recipients.sort();
    recipients.dedup();
    let seq = store_system_event(
        conn,
        &SystemEvent {
            conversation,
            actor,
            actor_device: request.actor_device,
            description,
            now_ms: request.now_ms,
        },
    )?;
    // The leaver's devices get events up to this one, and nothing later.
    for (leaver, joined_seq) in leavers {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO departures (conversation_id, account_id, joined_seq, left_seq, left_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![conversation.0, leaver.0, joined_seq, seq, request.now_ms])
        })
        .map_err(backend)?;
    }
    Ok(GroupChanged {
        conversation,
        seq,
        recipients,
    })
}

/// Checks and applies the change itself; returns its system event's
/// description. A member removed or leaving goes into `leavers`.
fn apply_change(
    conn: &Connection,
    request: &GroupChangeRequest,
    actor_name: &str,
    leavers: &mut Vec<(AccountId, i64)>,
) -> Result<serde_json::Value, StoreError> {
    let conversation = request.conversation;
    let actor = request.actor;
    Ok(match &request.change {
        GroupChange::Add(accounts) => add_members(conn, request, accounts, actor_name)?,
        GroupChange::Remove(target) => {
            check_admin(conn, conversation, actor)?;
            if role_of(conn, conversation, *target)?.is_none() {
                return Err(StoreError::UnknownMember);
            }
            leavers.push((*target, remove_member(conn, conversation, *target)?));
            let promoted = promote_if_no_admin(conn, conversation, None)?;
            serde_json::json!({"v": 1, "action": "removed", "actor": actor_name, "users": [username(conn, *target)?], "promoted": promoted})
        }
        GroupChange::Leave => {
            check_group_member(conn, conversation, actor)?;
            leavers.push((actor, remove_member(conn, conversation, actor)?));
            let promoted = promote_if_no_admin(conn, conversation, None)?;
            serde_json::json!({"v": 1, "action": "left", "actor": actor_name, "promoted": promoted})
        }
        GroupChange::Promote(target) | GroupChange::Demote(target) => {
            check_admin(conn, conversation, actor)?;
            if role_of(conn, conversation, *target)?.is_none() {
                return Err(StoreError::UnknownMember);
            }
            let (role, action) = match request.change {
                GroupChange::Promote(_) => (ROLE_ADMIN, "promoted"),
                _ => (ROLE_MEMBER, "demoted"),
            };
            conn.execute(
                "UPDATE members SET role = ?3 WHERE conversation_id = ?1 AND account_id = ?2",
                params![conversation.0, target.0, role],
            )
            .map_err(backend)?;
            let promoted = promote_if_no_admin(conn, conversation, Some(*target))?;
            serde_json::json!({"v": 1, "action": action, "actor": actor_name, "users": [username(conn, *target)?], "promoted": promoted})
        }
        GroupChange::Rename(name) => {
            check_admin(conn, conversation, actor)?;
            conn.execute(
                "UPDATE conversations SET name = ?2 WHERE id = ?1",
                params![conversation.0, name.as_str()],
            )
            .map_err(backend)?;
            serde_json::json!({"v": 1, "action": "renamed", "actor": actor_name, "name": name.as_str()})
        }
    })
}

/// Adds `accounts` (an admin's change) as members who see this event and
/// what follows.
fn add_members(
    conn: &Connection,
    request: &GroupChangeRequest,
    accounts: &[AccountId],
    actor_name: &str,
) -> Result<serde_json::Value, StoreError> {
    let conversation = request.conversation;
    let actor = request.actor;
    check_admin(conn, conversation, actor)?;
    let mut accounts = accounts.to_vec();
    accounts.sort();
    accounts.dedup();
    if member_count(conn, conversation)? + accounts.len() > request.members_max {
        return Err(StoreError::GroupFull);
    }
    // Added members see this event and what follows.
    let last_seq: i64 = conn
        .query_row(
            "SELECT last_seq FROM conversations WHERE id = ?1",
            [conversation.0],
            |row| row.get(0),
        )
        .map_err(backend)?;
    for account in &accounts {
        add_member(
            conn,
            conversation,
            *account,
            ROLE_MEMBER,
            last_seq,
            request.now_ms,
        )?;
    }
    Ok(
        serde_json::json!({"v": 1, "action": "added", "actor": actor_name, "users": usernames(conn, &accounts)?}),
    )
}

/// Deletes the membership; returns the seq it had joined at.
fn remove_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<i64, StoreError> {
    conn.query_row(
        "DELETE FROM members WHERE conversation_id = ?1 AND account_id = ?2 RETURNING joined_seq",
        params![conversation.0, account.0],
        |row| row.get(0),
    )
    .map_err(backend)
}

/// A group with members but no admin promotes its longest-standing member
/// other than `passed_over` (who just gave the role up) when there is one;
/// returns that member's username.
fn promote_if_no_admin(
    conn: &Connection,
    conversation: ConversationId,
    passed_over: Option<AccountId>,
) -> Result<Option<String>, StoreError> {
    let has_admin: bool = conn
        .prepare_cached("SELECT 1 FROM members WHERE conversation_id = ?1 AND role = 1")
        .and_then(|mut stmt| stmt.exists([conversation.0]))
        .map_err(backend)?;
    if has_admin {
        return Ok(None);
    }
    let oldest: Option<i64> = conn
        .query_row(
            "SELECT account_id FROM members WHERE conversation_id = ?1
             ORDER BY account_id = ?2, joined_seq, joined_ms, account_id LIMIT 1",
            params![conversation.0, passed_over.map_or(-1, |account| account.0)],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend)?;
    let Some(oldest) = oldest else {
        return Ok(None);
    };
    conn.execute(
        "UPDATE members SET role = 1 WHERE conversation_id = ?1 AND account_id = ?2",
        params![conversation.0, oldest],
    )
    .map_err(backend)?;
    Ok(Some(username(conn, AccountId(oldest))?))
}

pub(super) fn group_info(
    conn: &Connection,
    account: AccountId,
    conversation: ConversationId,
) -> Result<GroupRecord, StoreError> {
    check_group_member(conn, conversation, account)?;
    let (name, last_seq, encrypted, disappear_secs): (Option<String>, i64, bool, u32) = conn
        .query_row(
            "SELECT name, last_seq, encrypted, disappear_secs FROM conversations WHERE id = ?1",
            [conversation.0],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .map_err(backend)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.account_id, a.username, m.role, m.joined_ms FROM members m
             JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id = ?1 ORDER BY m.joined_seq, m.joined_ms, a.username",
        )
        .map_err(backend)?;
    let members = stmt
        .query_map([conversation.0], |row| {
            Ok(MemberRecord {
                account: AccountId(row.get(0)?),
                username: row.get(1)?,
                role: if row.get::<_, i64>(2)? == ROLE_ADMIN {
                    Role::Admin
                } else {
                    Role::Member
                },
                joined_ms: row.get(3)?,
            })
        })
        .map_err(backend)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    Ok(GroupRecord {
        conversation,
        name: name.unwrap_or_default(),
        encrypted,
        disappear_secs,
        members,
        last_seq,
    })
}

pub(super) fn change_setting(
    conn: &Connection,
    request: &SettingRequest,
) -> Result<GroupChanged, StoreError> {
    let conversation = request.conversation;
    check_member(conn, conversation, request.actor)?;
    let (kind, encrypted, disappear_secs, last_seq): (i64, bool, u32, i64) = conn
        .query_row(
            "SELECT kind, encrypted, disappear_secs, last_seq FROM conversations WHERE id = ?1",
            [conversation.0],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .map_err(backend)?;
    if kind == KIND_GROUP {
        check_admin(conn, conversation, request.actor)?;
    }
    let unchanged = match request.setting {
        Setting::Encrypt => encrypted,
        Setting::DisappearAfter(secs) => secs == disappear_secs,
    };
    if unchanged {
        return Ok(GroupChanged {
            conversation,
            seq: last_seq,
            recipients: Vec::new(),
        });
    }
    let (sql, value) = match request.setting {
        Setting::Encrypt => ("UPDATE conversations SET encrypted = ?2 WHERE id = ?1", 1),
        Setting::DisappearAfter(secs) => (
            "UPDATE conversations SET disappear_secs = ?2 WHERE id = ?1",
            i64::from(secs),
        ),
    };
    conn.execute(sql, params![conversation.0, value])
        .map_err(backend)?;
    let description = rules::setting_event(request.setting, &username(conn, request.actor)?);
    let seq = store_system_event(
        conn,
        &SystemEvent {
            conversation,
            actor: request.actor,
            actor_device: request.actor_device,
            description,
            now_ms: request.now_ms,
        },
    )?;
    let mut recipients = member_devices(conn, conversation, None)?;
    recipients.retain(|device| *device != request.actor_device);
    Ok(GroupChanged {
        conversation,
        seq,
        recipients,
    })
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(&self, group: NewGroup) -> Result<GroupChanged, StoreError> {
        self.write(move |conn| create_group(conn, &group)).await
    }

    async fn change_setting(&self, request: SettingRequest) -> Result<GroupChanged, StoreError> {
        self.write(move |conn| change_setting(conn, &request)).await
    }

    async fn change_group(&self, change: GroupChangeRequest) -> Result<GroupChanged, StoreError> {
        self.write(move |conn| change_group(conn, &change)).await
    }

    async fn group_info(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<GroupRecord, StoreError> {
        self.read(move |conn| group_info(conn, account, conversation))
            .await
    }
}
