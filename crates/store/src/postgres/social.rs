//! Contacts, blocks, presence settings and ephemeral relay targets.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};

use super::PostgresStore;
use super::autocommit;
use super::codes::{visibility, visibility_code};
use super::conversations::check_member;
use super::fault::Outcome;
use super::sql::{column, execute, row, rows, scalar};
use crate::model::*;
use crate::{SocialStore, StoreError};

/// A relation's statements: insert `($1 → $2)` at `$3`, delete it, and
/// list `$1`'s others by username.
fn statements(relation: Relation) -> [&'static str; 3] {
    match relation {
        Relation::Contact => [
            "INSERT INTO contacts (owner_id, contact_id, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            "DELETE FROM contacts WHERE owner_id = $1 AND contact_id = $2",
            "SELECT a.username FROM contacts c JOIN accounts a ON a.id = c.contact_id
             WHERE c.owner_id = $1 ORDER BY a.username",
        ],
        Relation::Block => [
            "INSERT INTO blocks (blocker_id, blocked_id, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
            "SELECT a.username FROM blocks b JOIN accounts a ON a.id = b.blocked_id
             WHERE b.blocker_id = $1 ORDER BY a.username",
        ],
    }
}

/// Adds (`present`) or removes `owner → other`; whether anything changed.
pub(super) async fn set_relation<C: GenericClient>(
    db: &C,
    relation: Relation,
    owner: AccountId,
    other: AccountId,
    present: bool,
    now_ms: UnixMillis,
) -> Outcome<bool> {
    let [insert, delete, _] = statements(relation);
    let changed = if present {
        execute(db, insert, &[&owner.0, &other.0, &now_ms]).await?
    } else {
        execute(db, delete, &[&owner.0, &other.0]).await?
    };
    Ok(changed > 0)
}

pub(super) async fn related<C: GenericClient>(
    db: &C,
    relation: Relation,
    owner: AccountId,
) -> Outcome<Vec<String>> {
    let [_, _, list] = statements(relation);
    column(db, list, &[&owner.0]).await
}

pub(super) async fn blocked_with_any<C: GenericClient>(
    db: &C,
    a: AccountId,
    others: &[AccountId],
) -> Outcome<bool> {
    let others: Vec<i64> = others.iter().map(|account| account.0).collect();
    scalar(
        db,
        "SELECT EXISTS (SELECT 1 FROM blocks
             WHERE (blocker_id = $1 AND blocked_id = ANY($2))
                OR (blocked_id = $1 AND blocker_id = ANY($2)))",
        &[&a.0, &others],
    )
    .await
}

pub(super) async fn blocked_either_way<C: GenericClient>(
    db: &C,
    a: AccountId,
    b: AccountId,
) -> Outcome<bool> {
    scalar(
        db,
        "SELECT EXISTS (SELECT 1 FROM blocks
             WHERE (blocker_id = $1 AND blocked_id = $2) OR (blocker_id = $2 AND blocked_id = $1))",
        &[&a.0, &b.0],
    )
    .await
}

pub(super) async fn is_contact<C: GenericClient>(
    db: &C,
    owner: AccountId,
    contact: AccountId,
) -> Outcome<bool> {
    scalar(
        db,
        "SELECT EXISTS (SELECT 1 FROM contacts WHERE owner_id = $1 AND contact_id = $2)",
        &[&owner.0, &contact.0],
    )
    .await
}

pub(super) async fn set_presence_visibility<C: GenericClient>(
    db: &C,
    account: AccountId,
    chosen: PresenceVisibility,
) -> Outcome<()> {
    execute(
        db,
        "UPDATE accounts SET presence_visibility = $2 WHERE id = $1",
        &[&account.0, &visibility_code(chosen)],
    )
    .await?;
    Ok(())
}

pub(super) async fn presence_profile<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Option<PresenceProfile>> {
    let Some(found) = row(
        db,
        "SELECT username, presence_visibility, last_seen_ms FROM accounts WHERE id = $1",
        &[&account.0],
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(PresenceProfile {
        account,
        username: found.try_get(0)?,
        visibility: visibility(found.try_get(1)?),
        last_seen_ms: found.try_get(2)?,
    }))
}

pub(super) async fn set_last_seen<C: GenericClient>(
    db: &C,
    account: AccountId,
    now_ms: UnixMillis,
) -> Outcome<()> {
    execute(
        db,
        "UPDATE accounts SET last_seen_ms = greatest(last_seen_ms, $2) WHERE id = $1",
        &[&account.0, &now_ms],
    )
    .await?;
    Ok(())
}

pub(super) async fn relay_targets<C: GenericClient>(
    db: &C,
    account: AccountId,
    conversation: ConversationId,
) -> Outcome<Vec<(AccountId, DeviceId)>> {
    check_member(db, conversation, account).await?;
    rows(
        db,
        "SELECT d.account_id, d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = $1 AND m.account_id <> $2
           AND NOT EXISTS (SELECT 1 FROM blocks b
               WHERE (b.blocker_id = m.account_id AND b.blocked_id = $2)
                  OR (b.blocker_id = $2 AND b.blocked_id = m.account_id))
         ORDER BY d.id",
        &[&conversation.0, &account.0],
    )
    .await?
    .iter()
    .map(|row| Ok((AccountId(row.try_get(0)?), DeviceId(row.try_get(1)?))))
    .collect()
}

#[async_trait]
impl SocialStore for PostgresStore {
    async fn set_relation(
        &self,
        relation: Relation,
        owner: AccountId,
        other: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| set_relation(
            db, relation, owner, other, present, now_ms
        ))
    }

    async fn related(
        &self,
        relation: Relation,
        owner: AccountId,
    ) -> Result<Vec<String>, StoreError> {
        autocommit!(self, |db| related(db, relation, owner))
    }

    async fn blocked_either_way(&self, a: AccountId, b: AccountId) -> Result<bool, StoreError> {
        autocommit!(self, |db| blocked_either_way(db, a, b))
    }

    async fn blocked_with_any(
        &self,
        a: AccountId,
        others: Vec<AccountId>,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| blocked_with_any(db, a, &others))
    }

    async fn is_contact(&self, owner: AccountId, contact: AccountId) -> Result<bool, StoreError> {
        autocommit!(self, |db| is_contact(db, owner, contact))
    }

    async fn set_presence_visibility(
        &self,
        account: AccountId,
        visibility: PresenceVisibility,
    ) -> Result<(), StoreError> {
        autocommit!(self, |db| set_presence_visibility(db, account, visibility))
    }

    async fn presence_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<PresenceProfile>, StoreError> {
        autocommit!(self, |db| presence_profile(db, account))
    }

    async fn set_last_seen(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<(), StoreError> {
        autocommit!(self, |db| set_last_seen(db, account, now_ms))
    }

    async fn relay_targets(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<Vec<(AccountId, DeviceId)>, StoreError> {
        autocommit!(self, |db| relay_targets(db, account, conversation))
    }
}
