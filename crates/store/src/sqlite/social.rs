//! Contacts, blocks, presence settings and ephemeral relay targets.

use async_trait::async_trait;
use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::conversations::check_member;
use super::writer::backend;
use crate::model::*;
use crate::{SocialStore, StoreError};

fn names(conn: &Connection, sql: &str, account: AccountId) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map([account.0], |row| row.get(0))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// A relation's statements: insert `(?1 → ?2)` at `?3`, delete it, and
/// list `?1`'s others by username.
fn statements(relation: Relation) -> [&'static str; 3] {
    match relation {
        Relation::Contact => [
            "INSERT OR IGNORE INTO contacts (owner_id, contact_id, created_ms) VALUES (?1, ?2, ?3)",
            "DELETE FROM contacts WHERE owner_id = ?1 AND contact_id = ?2",
            "SELECT a.username FROM contacts c JOIN accounts a ON a.id = c.contact_id
             WHERE c.owner_id = ?1 ORDER BY a.username",
        ],
        Relation::Block => [
            "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, created_ms) VALUES (?1, ?2, ?3)",
            "DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2",
            "SELECT a.username FROM blocks b JOIN accounts a ON a.id = b.blocked_id
             WHERE b.blocker_id = ?1 ORDER BY a.username",
        ],
    }
}

pub(super) fn set_relation(
    conn: &Connection,
    relation: Relation,
    owner: AccountId,
    other: AccountId,
    present: bool,
    now_ms: UnixMillis,
) -> Result<bool, StoreError> {
    let [insert, delete, _] = statements(relation);
    let changed = if present {
        conn.execute(insert, params![owner.0, other.0, now_ms])
    } else {
        conn.execute(delete, params![owner.0, other.0])
    };
    changed.map(|n| n > 0).map_err(backend)
}

pub(super) fn related(
    conn: &Connection,
    relation: Relation,
    owner: AccountId,
) -> Result<Vec<String>, StoreError> {
    let [_, _, list] = statements(relation);
    names(conn, list, owner)
}

pub(super) fn blocked_either_way(
    conn: &Connection,
    a: AccountId,
    b: AccountId,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2) OR (blocker_id = ?2 AND blocked_id = ?1)",
    )
    .and_then(|mut stmt| stmt.exists(params![a.0, b.0]))
    .map_err(backend)
}

pub(super) fn is_contact(
    conn: &Connection,
    owner: AccountId,
    contact: AccountId,
) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM contacts WHERE owner_id = ?1 AND contact_id = ?2")
        .and_then(|mut stmt| stmt.exists(params![owner.0, contact.0]))
        .map_err(backend)
}

fn visibility_code(visibility: PresenceVisibility) -> i64 {
    match visibility {
        PresenceVisibility::Everyone => 0,
        PresenceVisibility::Contacts => 1,
        PresenceVisibility::Nobody => 2,
    }
}

pub(super) fn set_presence_visibility(
    conn: &Connection,
    account: AccountId,
    visibility: PresenceVisibility,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE accounts SET presence_visibility = ?2 WHERE id = ?1",
        params![account.0, visibility_code(visibility)],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn presence_profile(
    conn: &Connection,
    account: AccountId,
) -> Result<Option<PresenceProfile>, StoreError> {
    conn.prepare_cached(
        "SELECT username, presence_visibility, last_seen_ms FROM accounts WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([account.0], |row| {
            Ok(PresenceProfile {
                account,
                username: row.get(0)?,
                visibility: match row.get::<_, i64>(1)? {
                    1 => PresenceVisibility::Contacts,
                    2 => PresenceVisibility::Nobody,
                    _ => PresenceVisibility::Everyone,
                },
                last_seen_ms: row.get(2)?,
            })
        })
        .optional()
    })
    .map_err(backend)
}

pub(super) fn set_last_seen(
    conn: &Connection,
    account: AccountId,
    now_ms: UnixMillis,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE accounts SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
        params![account.0, now_ms],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn relay_targets(
    conn: &Connection,
    account: AccountId,
    conversation: ConversationId,
) -> Result<Vec<(AccountId, DeviceId)>, StoreError> {
    check_member(conn, conversation, account)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.account_id, d.id FROM members m JOIN devices d ON d.account_id = m.account_id
             WHERE m.conversation_id = ?1 AND m.account_id != ?2
               AND NOT EXISTS (SELECT 1 FROM blocks b
                   WHERE (b.blocker_id = m.account_id AND b.blocked_id = ?2)
                      OR (b.blocker_id = ?2 AND b.blocked_id = m.account_id))
             ORDER BY d.id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![conversation.0, account.0], |row| {
            Ok((AccountId(row.get(0)?), DeviceId(row.get(1)?)))
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

#[async_trait]
impl SocialStore for SqliteStore {
    async fn set_relation(
        &self,
        relation: Relation,
        owner: AccountId,
        other: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| set_relation(conn, relation, owner, other, present, now_ms))
            .await
    }

    async fn related(
        &self,
        relation: Relation,
        owner: AccountId,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| related(conn, relation, owner)).await
    }

    async fn blocked_either_way(&self, a: AccountId, b: AccountId) -> Result<bool, StoreError> {
        self.read(move |conn| blocked_either_way(conn, a, b)).await
    }

    async fn blocked_with_any(
        &self,
        a: AccountId,
        others: Vec<AccountId>,
    ) -> Result<bool, StoreError> {
        // One reader task; each lookup is an index probe in process.
        self.read(move |conn| {
            for b in others {
                if blocked_either_way(conn, a, b)? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }

    async fn is_contact(&self, owner: AccountId, contact: AccountId) -> Result<bool, StoreError> {
        self.read(move |conn| is_contact(conn, owner, contact))
            .await
    }

    async fn set_presence_visibility(
        &self,
        account: AccountId,
        visibility: PresenceVisibility,
    ) -> Result<(), StoreError> {
        self.write(move |conn| set_presence_visibility(conn, account, visibility))
            .await
    }

    async fn presence_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<PresenceProfile>, StoreError> {
        self.read(move |conn| presence_profile(conn, account)).await
    }

    async fn set_last_seen(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(move |conn| set_last_seen(conn, account, now_ms))
            .await
    }

    async fn relay_targets(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<Vec<(AccountId, DeviceId)>, StoreError> {
        self.read(move |conn| relay_targets(conn, account, conversation))
            .await
    }
}
