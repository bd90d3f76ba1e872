//! Group conversations: creation, membership changes recorded as system
//! events, and group info. A change locks the conversation row before it
//! reads anything, which serializes it with every send into the group: a
//! send's checks and recipients see the membership either before or after
//! the change, never half of it. A removal or leave records a departure,
//! so the one who left still gets events up to its own and nothing later.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId, UnixMillis};

use super::PostgresStore;
use super::codes::{CONVERSATION_GROUP, EVENT_SYSTEM, ROLE_ADMIN, ROLE_MEMBER, role};
use super::conversations::{has_departed, refusal};
use super::fault::{Fault, Outcome};
use super::sql::{column, execute, pipeline, row, rows, scalar};
use super::{autocommit, transaction};
use crate::model::*;
use crate::rules;
use crate::{GroupStore, StoreError};

/// What a member check learns about the group and the caller.
struct Standing {
    role: i16,
    last_seq: i64,
}

/// The caller's role in the group; refuses outsiders and non-groups.
/// `lock` takes the conversation row lock (writes).
async fn standing<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    account: AccountId,
    lock: bool,
) -> Outcome<Standing> {
    let sql = if lock {
        "SELECT c.kind, c.last_seq, m.role FROM conversations c
         LEFT JOIN members m ON m.conversation_id = c.id AND m.account_id = $2
         WHERE c.id = $1 FOR NO KEY UPDATE OF c"
    } else {
        "SELECT c.kind, c.last_seq, m.role FROM conversations c
         LEFT JOIN members m ON m.conversation_id = c.id AND m.account_id = $2
         WHERE c.id = $1"
    };
    let found = row(db, sql, &[&conversation.0, &account.0]).await?;
    let role: Option<i16> = found
        .as_ref()
        .map(|row| row.try_get(2))
        .transpose()?
        .flatten();
    let departed =
        found.is_some() && role.is_none() && has_departed(db, conversation, account).await?;
    if let Some(refused) = refusal(departed, role.is_some()) {
        return Err(refused.into());
    }
    let (Some(found), Some(role)) = (found, role) else {
        return Err(Fault::Raced);
    };
    if found.try_get::<_, i16>(0)? != CONVERSATION_GROUP {
        return Err(StoreError::NotAGroup.into());
    }
    Ok(Standing {
        role,
        last_seq: found.try_get(1)?,
    })
}

async fn locked_admin<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    account: AccountId,
) -> Outcome<Standing> {
    let standing = standing(db, conversation, account, true).await?;
    if standing.role == ROLE_ADMIN {
        Ok(standing)
    } else {
        Err(StoreError::NotAdmin.into())
    }
}

/// Usernames of `accounts`, in the same order.
async fn usernames<C: GenericClient>(db: &C, accounts: &[AccountId]) -> Outcome<Vec<String>> {
    let ids: Vec<i64> = accounts.iter().map(|a| a.0).collect();
    let found: HashMap<i64, String> = rows(
        db,
        "SELECT id, username FROM accounts WHERE id = ANY($1)",
        &[&ids],
    )
    .await?
    .iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
    .collect::<Outcome<_>>()?;
    ids.iter()
        .map(|id| {
            found
                .get(id)
                .cloned()
                .ok_or_else(|| Fault::Corrupt(format!("account {id} has no username")))
        })
        .collect()
}

async fn username<C: GenericClient>(db: &C, account: AccountId) -> Outcome<String> {
    Ok(usernames(db, &[account]).await?.remove(0))
}

/// Adds members; `AlreadyMember` if any of them is one. Someone added
/// again is no longer a departure: what waits for its devices follows
/// from the new membership alone.
async fn add_members<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    accounts: &[AccountId],
    role: i16,
    joined_seq: i64,
    now_ms: UnixMillis,
) -> Outcome<()> {
    let ids: Vec<i64> = accounts.iter().map(|a| a.0).collect();
    let (added, _) = pipeline!(
        execute(
            db,
            "INSERT INTO members (conversation_id, account_id, role, joined_seq, joined_ms, read_seq, delivered_seq)
             SELECT $1, account_id, $3, $4, $5, $4, $4 FROM unnest($2::bigint[]) AS account_id
             ON CONFLICT DO NOTHING",
            &[&conversation.0, &ids, &role, &joined_seq, &now_ms],
        ),
        execute(
            db,
            "DELETE FROM departures WHERE conversation_id = $1 AND account_id = ANY($2)",
            &[&conversation.0, &ids],
        ),
    )?;
    if added as usize == ids.len() {
        Ok(())
    } else {
        Err(StoreError::AlreadyMember.into())
    }
}

/// A system event to store with the next seq (one row; its recipients read
/// it above their positions). The caller holds the conversation row lock
/// (or created the row).
struct SystemEvent {
    conversation: ConversationId,
    actor: AccountId,
    actor_device: DeviceId,
    description: serde_json::Value,
    now_ms: UnixMillis,
}

async fn store_system_event<C: GenericClient>(db: &C, event: &SystemEvent) -> Outcome<i64> {
    // Never stamped earlier than the conversation's event before it, nor
    // far ahead of the database's clock (`send::AHEAD_MAX_MS`).
    let taken = row(
        db,
        "UPDATE conversations SET last_seq = last_seq + 1,
             last_ts_ms = greatest(last_ts_ms, least($2,
                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3))
         WHERE id = $1 RETURNING last_seq, last_ts_ms",
        &[
            &event.conversation.0,
            &event.now_ms,
            &super::send::AHEAD_MAX_MS,
        ],
    )
    .await?
    .ok_or(Fault::Raced)?;
    let seq: i64 = taken.try_get(0)?;
    let ts_ms: i64 = taken.try_get(1)?;
    let message_id = MessageId::generate();
    execute(
        db,
        "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind)
         VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8)",
        &[
            &message_id.as_str(),
            &event.conversation.0,
            &seq,
            &event.actor.0,
            &event.actor_device.0,
            &event.description.to_string(),
            &ts_ms,
            &EVENT_SYSTEM,
        ],
    )
    .await?;
    Ok(seq)
}

/// Records that `leavers` (account, joined seq) left at `left_seq`.
async fn record_departures<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    leavers: &[(AccountId, i64)],
    left_seq: i64,
    now_ms: UnixMillis,
) -> Outcome<()> {
    if leavers.is_empty() {
        return Ok(());
    }
    let accounts: Vec<i64> = leavers.iter().map(|(account, _)| account.0).collect();
    let joined: Vec<i64> = leavers.iter().map(|(_, joined)| *joined).collect();
    execute(
        db,
        "INSERT INTO departures (conversation_id, account_id, joined_seq, left_seq, left_ms)
         SELECT $1, account_id, joined_seq, $4, $5
         FROM unnest($2::bigint[], $3::bigint[]) AS l(account_id, joined_seq)
         ON CONFLICT (conversation_id, account_id) DO UPDATE
         SET joined_seq = excluded.joined_seq, left_seq = excluded.left_seq,
             left_ms = excluded.left_ms",
        &[&conversation.0, &accounts, &joined, &left_seq, &now_ms],
    )
    .await?;
    Ok(())
}

/// Devices of the group's members and of `leavers`, ascending, but
/// `except_device`.
async fn recipients<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    leavers: &[AccountId],
    except_device: DeviceId,
) -> Outcome<Vec<DeviceId>> {
    let leavers: Vec<i64> = leavers.iter().map(|a| a.0).collect();
    let ids: Vec<i64> = column(
        db,
        "SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = $1 AND d.id <> $3
         UNION
         SELECT d.id FROM devices d WHERE d.account_id = ANY($2) AND d.id <> $3
         ORDER BY 1",
        &[&conversation.0, &leavers, &except_device.0],
    )
    .await?;
    Ok(ids.into_iter().map(DeviceId).collect())
}

pub(super) async fn create_group<C: GenericClient>(
    db: &C,
    group: &NewGroup,
) -> Outcome<GroupChanged> {
    let Some(members) = group.others() else {
        return Err(StoreError::GroupFull.into());
    };
    let id: i64 = scalar(
        db,
        "INSERT INTO conversations (kind, name, created_ms, encrypted) VALUES ($1, $2, $3, $4)
         RETURNING id",
        &[
            &CONVERSATION_GROUP,
            &group.name.as_str(),
            &group.now_ms,
            &group.encrypted,
        ],
    )
    .await?;
    let conversation = ConversationId(id);
    let (_, _, names) = pipeline!(
        add_members(
            db,
            conversation,
            &[group.creator],
            ROLE_ADMIN,
            0,
            group.now_ms
        ),
        add_members(db, conversation, &members, ROLE_MEMBER, 0, group.now_ms),
        usernames(db, &[&[group.creator][..], &members[..]].concat()),
    )?;
    let recipients = recipients(db, conversation, &[], group.creator_device).await?;
    let description = serde_json::json!({
        "v": 1,
        "action": "created",
        "actor": names[0],
        "name": group.name.as_str(),
        "users": names[1..],
        "encrypted": group.encrypted,
    });
    let seq = store_system_event(
        db,
        &SystemEvent {
            conversation,
            actor: group.creator,
            actor_device: group.creator_device,
            description,
            now_ms: group.now_ms,
        },
    )
    .await?;
    Ok(GroupChanged {
        conversation,
        seq,
        recipients,
    })
}

pub(super) async fn change_group<C: GenericClient>(
    db: &C,
    request: &GroupChangeRequest,
) -> Outcome<GroupChanged> {
    let conversation = request.conversation;
    let actor = request.actor;
    // Members who must hear of the change but are no longer members, with
    // the seq they had joined at.
    let mut leavers: Vec<(AccountId, i64)> = Vec::new();
    let description = apply_change(db, request, &mut leavers).await?;
    let leaving: Vec<AccountId> = leavers.iter().map(|(account, _)| *account).collect();
    let recipients = recipients(db, conversation, &leaving, request.actor_device).await?;
    let seq = store_system_event(
        db,
        &SystemEvent {
            conversation,
            actor,
            actor_device: request.actor_device,
            description,
            now_ms: request.now_ms,
        },
    )
    .await?;
    record_departures(db, conversation, &leavers, seq, request.now_ms).await?;
    Ok(GroupChanged {
        conversation,
        seq,
        recipients,
    })
}

/// Checks and applies the change itself, under the locks it needs;
/// returns its system event's description. A member removed or leaving
/// goes into `leavers`.
async fn apply_change<C: GenericClient>(
    db: &C,
    request: &GroupChangeRequest,
    leavers: &mut Vec<(AccountId, i64)>,
) -> Outcome<serde_json::Value> {
    let conversation = request.conversation;
    let actor = request.actor;
    Ok(match &request.change {
        GroupChange::Add(accounts) => add_to_group(db, request, accounts).await?,
        GroupChange::Remove(target) => {
            locked_admin(db, conversation, actor).await?;
            lock_members(db, conversation).await?;
            let joined = match remove_member(db, conversation, *target).await {
                Err(Fault::Refused(StoreError::NotMember)) => {
                    return Err(StoreError::UnknownMember.into());
                }
                joined => joined?,
            };
            leavers.push((*target, joined));
            let promoted = promote_if_no_admin(db, conversation, None).await?;
            serde_json::json!({"v": 1, "action": "removed", "actor": username(db, actor).await?,
                "users": [username(db, *target).await?], "promoted": promoted})
        }
        GroupChange::Leave => {
            standing(db, conversation, actor, true).await?;
            lock_members(db, conversation).await?;
            let joined = remove_member(db, conversation, actor).await?;
            leavers.push((actor, joined));
            let promoted = promote_if_no_admin(db, conversation, None).await?;
            serde_json::json!({"v": 1, "action": "left", "actor": username(db, actor).await?,
                "promoted": promoted})
        }
        GroupChange::Promote(target) | GroupChange::Demote(target) => {
            locked_admin(db, conversation, actor).await?;
            lock_members(db, conversation).await?;
            let (role, action) = match request.change {
                GroupChange::Promote(_) => (ROLE_ADMIN, "promoted"),
                _ => (ROLE_MEMBER, "demoted"),
            };
            let changed = execute(
                db,
                "UPDATE members SET role = $3 WHERE conversation_id = $1 AND account_id = $2",
                &[&conversation.0, &target.0, &role],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::UnknownMember.into());
            }
            let promoted = promote_if_no_admin(db, conversation, Some(*target)).await?;
            serde_json::json!({"v": 1, "action": action, "actor": username(db, actor).await?,
                "users": [username(db, *target).await?], "promoted": promoted})
        }
        GroupChange::Rename(name) => {
            locked_admin(db, conversation, actor).await?;
            execute(
                db,
                "UPDATE conversations SET name = $2 WHERE id = $1",
                &[&conversation.0, &name.as_str()],
            )
            .await?;
            serde_json::json!({"v": 1, "action": "renamed", "actor": username(db, actor).await?,
                "name": name.as_str()})
        }
    })
}

/// Adds `accounts` (an admin's change) as members who see this event and
/// what follows.
async fn add_to_group<C: GenericClient>(
    db: &C,
    request: &GroupChangeRequest,
    accounts: &[AccountId],
) -> Outcome<serde_json::Value> {
    let conversation = request.conversation;
    let actor = request.actor;
    let standing = locked_admin(db, conversation, actor).await?;
    let mut accounts = accounts.to_vec();
    accounts.sort();
    accounts.dedup();
    let n_members: i64 = scalar(
        db,
        "SELECT count(*) FROM members WHERE conversation_id = $1",
        &[&conversation.0],
    )
    .await?;
    if usize::try_from(n_members).unwrap_or(usize::MAX) + accounts.len() > request.members_max {
        return Err(StoreError::GroupFull.into());
    }
    // Added members see this event and what follows.
    add_members(
        db,
        conversation,
        &accounts,
        ROLE_MEMBER,
        standing.last_seq,
        request.now_ms,
    )
    .await?;
    Ok(
        serde_json::json!({"v": 1, "action": "added", "actor": username(db, actor).await?,
        "users": usernames(db, &accounts).await?}),
    )
}

/// Deletes the membership and returns the seq it had joined at;
/// `NotMember` if `account` is not one.
/// Locks the group's member rows, ascending by account, before a change
/// that writes more than one of them (a removal or role change, then the
/// promotion of a new admin): the order a batch of acks locks them in
/// (`ack.rs`), so the two wait for each other instead of deadlocking.
async fn lock_members<C: GenericClient>(db: &C, conversation: ConversationId) -> Outcome<()> {
    execute(
        db,
        "SELECT 1 FROM members WHERE conversation_id = $1 ORDER BY account_id FOR UPDATE",
        &[&conversation.0],
    )
    .await?;
    Ok(())
}

async fn remove_member<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    account: AccountId,
) -> Outcome<i64> {
    let removed = row(
        db,
        "DELETE FROM members WHERE conversation_id = $1 AND account_id = $2 RETURNING joined_seq",
        &[&conversation.0, &account.0],
    )
    .await?;
    match removed {
        Some(removed) => Ok(removed.try_get(0)?),
        None => Err(StoreError::NotMember.into()),
    }
}

/// A group with members but no admin promotes its longest-standing member
/// other than `passed_over` (who just gave the role up) when there is one;
/// returns that member's username.
async fn promote_if_no_admin<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    passed_over: Option<AccountId>,
) -> Outcome<Option<String>> {
    let promoted = row(
        db,
        "UPDATE members SET role = $3 WHERE conversation_id = $1 AND account_id = (
             SELECT account_id FROM members WHERE conversation_id = $1
             AND NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND role = $3)
             ORDER BY account_id = $2, joined_seq, joined_ms, account_id LIMIT 1)
         RETURNING account_id",
        &[
            &conversation.0,
            &passed_over.map_or(-1, |account| account.0),
            &ROLE_ADMIN,
        ],
    )
    .await?;
    match promoted {
        Some(promoted) => Ok(Some(username(db, AccountId(promoted.try_get(0)?)).await?)),
        None => Ok(None),
    }
}

pub(super) async fn group_info<C: GenericClient>(
    db: &C,
    account: AccountId,
    conversation: ConversationId,
) -> Outcome<GroupRecord> {
    let standing = standing(db, conversation, account, false).await?;
    let (found, members) = pipeline!(
        row(
            db,
            "SELECT name, encrypted, disappear_secs FROM conversations WHERE id = $1",
            &[&conversation.0],
        ),
        rows(
            db,
            "SELECT m.account_id, a.username, m.role, m.joined_ms FROM members m
             JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id = $1 ORDER BY m.joined_seq, m.joined_ms, a.username",
            &[&conversation.0],
        ),
    )?;
    let members = members
        .iter()
        .map(|row| {
            Ok(MemberRecord {
                account: AccountId(row.try_get(0)?),
                username: row.try_get(1)?,
                role: role(row.try_get(2)?),
                joined_ms: row.try_get(3)?,
            })
        })
        .collect::<Outcome<_>>()?;
    let found = found.ok_or(Fault::Raced)?;
    let name: Option<String> = found.try_get(0)?;
    Ok(GroupRecord {
        conversation,
        name: name.unwrap_or_default(),
        encrypted: found.try_get(1)?,
        disappear_secs: u32::try_from(found.try_get::<_, i64>(2)?).unwrap_or(0),
        members,
        last_seq: standing.last_seq,
    })
}

/// Changes a setting; the conversation row stays locked to commit, so
/// every send into it is judged (and stamped with its expiry) either
/// before or after.
pub(super) async fn change_setting<C: GenericClient>(
    db: &C,
    request: &SettingRequest,
) -> Outcome<GroupChanged> {
    let conversation = request.conversation;
    let found = row(
        db,
        "SELECT c.kind, c.encrypted, c.last_seq, m.role, c.disappear_secs FROM conversations c
         LEFT JOIN members m ON m.conversation_id = c.id AND m.account_id = $2
         WHERE c.id = $1 FOR NO KEY UPDATE OF c",
        &[&conversation.0, &request.actor.0],
    )
    .await?;
    let role: Option<i16> = found
        .as_ref()
        .map(|row| row.try_get(3))
        .transpose()?
        .flatten();
    let departed =
        found.is_some() && role.is_none() && has_departed(db, conversation, request.actor).await?;
    if let Some(refused) = refusal(departed, role.is_some()) {
        return Err(refused.into());
    }
    let (Some(found), Some(role)) = (found, role) else {
        return Err(Fault::Raced);
    };
    if found.try_get::<_, i16>(0)? == CONVERSATION_GROUP && role != ROLE_ADMIN {
        return Err(StoreError::NotAdmin.into());
    }
    let unchanged = match request.setting {
        Setting::Encrypt => found.try_get::<_, bool>(1)?,
        Setting::DisappearAfter(secs) => found.try_get::<_, i64>(4)? == i64::from(secs),
    };
    if unchanged {
        return Ok(GroupChanged {
            conversation,
            seq: found.try_get(2)?,
            recipients: Vec::new(),
        });
    }
    let update = match request.setting {
        Setting::Encrypt => {
            execute(
                db,
                "UPDATE conversations SET encrypted = true WHERE id = $1",
                &[&conversation.0],
            )
            .await
        }
        Setting::DisappearAfter(secs) => {
            execute(
                db,
                "UPDATE conversations SET disappear_secs = $2 WHERE id = $1",
                &[&conversation.0, &i64::from(secs)],
            )
            .await
        }
    };
    update?;
    let actor = username(db, request.actor).await?;
    let description = rules::setting_event(request.setting, &actor);
    let seq = store_system_event(
        db,
        &SystemEvent {
            conversation,
            actor: request.actor,
            actor_device: request.actor_device,
            description,
            now_ms: request.now_ms,
        },
    )
    .await?;
    let recipients = recipients(db, conversation, &[], request.actor_device).await?;
    Ok(GroupChanged {
        conversation,
        seq,
        recipients,
    })
}

#[async_trait]
impl GroupStore for PostgresStore {
    async fn create_group(&self, group: NewGroup) -> Result<GroupChanged, StoreError> {
        transaction!(self, |tx| create_group(tx, &group))
    }

    async fn change_setting(&self, request: SettingRequest) -> Result<GroupChanged, StoreError> {
        transaction!(self, |tx| change_setting(tx, &request))
    }

    async fn change_group(&self, change: GroupChangeRequest) -> Result<GroupChanged, StoreError> {
        transaction!(self, |tx| change_group(tx, &change))
    }

    async fn group_info(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<GroupRecord, StoreError> {
        autocommit!(self, |db| group_info(db, account, conversation))
    }
}
