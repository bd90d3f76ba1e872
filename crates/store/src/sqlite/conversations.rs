//! Conversations and who is in them: 1:1 lookup and creation, membership
//! checks, and the devices of members.

use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::facts;
use super::writer::backend;
use crate::StoreError;

fn direct_key(a: AccountId, b: AccountId) -> (AccountId, AccountId, String) {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    (low, high, format!("{}:{}", low.0, high.0))
}

/// The 1:1 conversation of two accounts, if it exists (a read).
pub(super) fn find_direct_conversation(
    conn: &Connection,
    a: AccountId,
    b: AccountId,
) -> Result<Option<ConversationId>, StoreError> {
    let (_, _, key) = direct_key(a, b);
    conn.prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")
        .and_then(|mut stmt| stmt.query_row([&key], |row| row.get(0)).optional())
        .map(|id| id.map(ConversationId))
        .map_err(backend)
}

pub(super) fn direct_conversation(
    conn: &Connection,
    a: AccountId,
    b: AccountId,
    now_ms: UnixMillis,
    encrypted: bool,
) -> Result<ConversationId, StoreError> {
    if let Some(id) = find_direct_conversation(conn, a, b)? {
        return Ok(id);
    }
    let (low, high, key) = direct_key(a, b);
    conn.execute(
        "INSERT INTO conversations (direct_key, created_ms, encrypted) VALUES (?1, ?2, ?3)",
        params![key, now_ms, encrypted],
    )
    .map_err(backend)?;
    let id = conn.last_insert_rowid();
    for member in [low, high] {
        conn.execute(
            "INSERT OR IGNORE INTO members (conversation_id, account_id) VALUES (?1, ?2)",
            params![id, member.0],
        )
        .map_err(backend)?;
    }
    Ok(ConversationId(id))
}

pub(super) fn is_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM members WHERE conversation_id = ?1 AND account_id = ?2")
        .and_then(|mut stmt| stmt.exists(params![conversation.0, account.0]))
        .map_err(backend)
}

/// Whether `account` left, or was removed from, the conversation.
pub(super) fn has_departed(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM departures WHERE conversation_id = ?1 AND account_id = ?2")
        .and_then(|mut stmt| stmt.exists(params![conversation.0, account.0]))
        .map_err(backend)
}

pub(super) fn check_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<(), StoreError> {
    // Only someone who was a member learns that the conversation exists:
    // to anyone else it is unknown, like an id that names nothing.
    if is_member(conn, conversation, account)? {
        Ok(())
    } else if has_departed(conn, conversation, account)? {
        Err(StoreError::NotMember)
    } else {
        Err(StoreError::UnknownConversation)
    }
}

fn device_ids(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<DeviceId>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(args, |row| Ok(DeviceId(row.get(0)?)))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// Devices of every member of the conversation other than `except_account`.
pub(super) fn member_devices(
    conn: &Connection,
    conversation: ConversationId,
    except_account: Option<AccountId>,
) -> Result<Vec<DeviceId>, StoreError> {
    device_ids(
        conn,
        "SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = ?1 AND m.account_id != ?2 ORDER BY d.id",
        params![conversation.0, except_account.map_or(-1, |a| a.0)],
    )
}

/// In a conversation of at most this many members, each other member is
/// asked whether they wrote a text in an acked range, which stops at their
/// first; a larger one reads the author of every event in the range once.
const AUTHORS_ONE_BY_ONE_MAX: usize = 8;

/// Devices of the members other than `reader` who wrote a text in
/// `(after, upto]`: those whose ticks change when `reader`'s receipt cursor
/// moves over that range.
pub(super) fn text_authors_devices(
    conn: &Connection,
    conversation: ConversationId,
    reader: AccountId,
    after: i64,
    upto: i64,
) -> Result<Vec<DeviceId>, StoreError> {
    if let Some(facts) = facts::conversation(conn, conversation)?
        && facts.members().len() <= AUTHORS_ONE_BY_ONE_MAX
    {
        let mut wrote = conn
            .prepare_cached(
                "SELECT 1 FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3
                 AND kind IN (0, 5) AND sender_account = ?4",
            )
            .map_err(backend)?;
        let mut devices = Vec::new();
        for &member in facts.members() {
            if member != reader
                && wrote
                    .exists(params![conversation.0, after, upto, member.0])
                    .map_err(backend)?
            {
                devices.extend(facts.devices_of(member));
            }
        }
        devices.sort_unstable();
        return Ok(devices);
    }
    device_ids(
        conn,
        "SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = ?1 AND m.account_id != ?2 AND m.account_id IN (
             SELECT DISTINCT sender_account FROM messages
             WHERE conversation_id = ?1 AND seq > ?3 AND seq <= ?4 AND kind IN (0, 5))
         ORDER BY d.id",
        params![conversation.0, reader.0, after, upto],
    )
}

/// Devices of members who joined before `seq` (so received that event).
pub(super) fn members_devices_who_saw(
    conn: &Connection,
    conversation: ConversationId,
    seq: i64,
) -> Result<Vec<DeviceId>, StoreError> {
    device_ids(
        conn,
        "SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = ?1 AND m.joined_seq < ?2 ORDER BY d.id",
        params![conversation.0, seq],
    )
}

pub(super) fn account_devices(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<DeviceId>, StoreError> {
    device_ids(
        conn,
        "SELECT id FROM devices WHERE account_id = ?1 ORDER BY id",
        [account.0],
    )
}
