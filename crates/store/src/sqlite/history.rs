//! Reading conversations back: history pages, the conversation list and
//! per-message receipts.

use async_trait::async_trait;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::conversations::check_member;
use super::send::{EVENT_TEXT, event_kind};
use super::writer::backend;
use crate::HistoryStore;
use crate::model::*;
use crate::{StoreError, rules};

/// Columns every event query selects, in `event_from_row` order.
const EVENT_COLUMNS: &str =
    "m.id, m.conversation_id, m.seq, a.username, m.sender_device, m.client_msg_id,
     m.kind, m.body, m.target_id, m.edited_ms, m.deleted, m.created_ms, m.expires_ms";

/// An event about an earlier message (reaction, edit, delete) is visible
/// only to members who saw that message: `joined` names the parameter
/// holding the reader's joined seq.
fn about_visible(joined: &str) -> String {
    format!(
        "(m.kind IN (0, 1) OR m.target_id IS NULL
         OR (SELECT t.seq FROM messages t WHERE t.id = m.target_id) > {joined})"
    )
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        message_id: MessageId::from_stored(row.get(0)?),
        conversation: ConversationId(row.get(1)?),
        seq: row.get(2)?,
        from: row.get(3)?,
        from_device: DeviceId(row.get(4)?),
        client_msg_id: row.get(5)?,
        kind: event_kind(row.get(6)?),
        body: row.get(7)?,
        media: Vec::new(),
        target: row.get::<_, Option<String>>(8)?.map(MessageId::from_stored),
        edited_ms: row.get(9)?,
        deleted: row.get::<_, i64>(10)? != 0,
        ts_ms: row.get(11)?,
        expires_ms: row.get(12)?,
        reactions: Vec::new(),
    })
}

fn attach_reactions(conn: &Connection, events: &mut [StoredEvent]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT a.username, r.emoji FROM reactions r JOIN accounts a ON a.id = r.account_id
             WHERE r.message_id = ?1 ORDER BY a.username",
        )
        .map_err(backend)?;
    for event in events.iter_mut().filter(|event| event.kind.is_message()) {
        event.media = super::media::media_of(conn, event.message_id.as_str())?;
        event.reactions = stmt
            .query_map([event.message_id.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
    }
    Ok(())
}

fn joined_seq(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<i64, StoreError> {
    check_member(conn, conversation, account)?;
    conn.query_row(
        "SELECT joined_seq FROM members WHERE conversation_id = ?1 AND account_id = ?2",
        params![conversation.0, account.0],
        |row| row.get(0),
    )
    .map_err(backend)
}

pub(super) fn history(
    conn: &Connection,
    request: &HistoryRequest,
) -> Result<Vec<StoredEvent>, StoreError> {
    let joined = joined_seq(conn, request.conversation, request.account)?;
    let limit = request.limit as i64;
    let mut events: Vec<StoredEvent> = match request.after {
        Some(after) => {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM messages m JOIN accounts a ON a.id = m.sender_account
                     WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.body IS NOT NULL AND {}
                     ORDER BY m.seq LIMIT ?3",
                    about_visible("?4")
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![request.conversation.0, after.max(joined), limit, joined],
                    event_from_row,
                )
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)?
        }
        None => {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM messages m JOIN accounts a ON a.id = m.sender_account
                     WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.seq < ?3 AND m.body IS NOT NULL
                     AND {} ORDER BY m.seq DESC LIMIT ?4",
                    about_visible("?2")
                ))
                .map_err(backend)?;
            let before = request.before.unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(
                    params![request.conversation.0, joined, before, limit],
                    event_from_row,
                )
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)?
        }
    };
    attach_reactions(conn, &mut events)?;
    Ok(events)
}

/// (conversation, kind, name, last_seq, read_seq, joined_seq, created_ms,
/// encrypted, disappear_secs)
type MembershipRow = (i64, i64, Option<String>, i64, i64, i64, i64, bool, u32);

pub(super) fn conversations(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<ConversationRecord>, StoreError> {
    let rows = memberships(conn, account)?;
    let mut statements = ListStatements::prepare(conn)?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        records.push(statements.record(conn, account, row)?);
    }
    rules::sort_by_activity(&mut records);
    Ok(records)
}

/// The account's conversations, one row each.
fn memberships(conn: &Connection, account: AccountId) -> Result<Vec<MembershipRow>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.id, c.kind, c.name, c.last_seq, m.read_seq, m.joined_seq, c.created_ms,
                    c.encrypted, c.disappear_secs
             FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.account_id = ?1",
        )
        .map_err(backend)?;
    stmt.query_map([account.0], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        ))
    })
    .map_err(backend)?
    .collect::<Result<_, _>>()
    .map_err(backend)
}

/// What a conversation list reads per conversation.
struct ListStatements<'c> {
    members: rusqlite::CachedStatement<'c>,
    last: rusqlite::CachedStatement<'c>,
    unread: rusqlite::CachedStatement<'c>,
}

impl<'c> ListStatements<'c> {
    fn prepare(conn: &'c Connection) -> Result<Self, StoreError> {
        let members = conn
            .prepare_cached(
                "SELECT a.username, m.account_id, m.delivered_seq, m.read_seq FROM members m
                 JOIN accounts a ON a.id = m.account_id
                 WHERE m.conversation_id = ?1 ORDER BY a.username",
            )
            .map_err(backend)?;
        let last = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM messages m JOIN accounts a ON a.id = m.sender_account
                 WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.body IS NOT NULL
                 ORDER BY m.seq DESC LIMIT 1"
            ))
            .map_err(backend)?;
        let unread = conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM messages
                 WHERE conversation_id = ?1 AND seq > ?2 AND kind IN (?3, 5) AND deleted = 0
                   AND sender_account != ?4 LIMIT ?5)",
            )
            .map_err(backend)?;
        Ok(Self {
            members,
            last,
            unread,
        })
    }

    /// One conversation of the list, as `account` sees it.
    fn record(
        &mut self,
        conn: &Connection,
        account: AccountId,
        (id, kind, name, last_seq, read_seq, joined, created_ms, encrypted, disappear_secs): MembershipRow,
    ) -> Result<ConversationRecord, StoreError> {
        let unread: i64 = self
            .unread
            .query_row(
                params![
                    id,
                    read_seq.max(joined),
                    EVENT_TEXT,
                    account.0,
                    UNREAD_COUNTED_MAX
                ],
                |row| row.get(0),
            )
            .map_err(backend)?;
        let rows: Vec<(String, i64, i64, i64)> = self
            .members
            .query_map([id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let receipts = rows
            .iter()
            .filter(|(_, member, _, _)| *member != account.0)
            .map(|(username, _, delivered_seq, read_seq)| MemberReceipts {
                username: username.clone(),
                delivered_seq: *delivered_seq,
                read_seq: *read_seq,
            })
            .collect();
        let members = rows.into_iter().map(|(username, ..)| username).collect();
        let mut last_event = self
            .last
            .query_row(params![id, joined], event_from_row)
            .optional()
            .map_err(backend)?;
        // A last text's attachments, so a list can say "Photo" for it.
        if let Some(event) = last_event.as_mut().filter(|event| event.kind.is_message()) {
            event.media = super::media::media_of(conn, event.message_id.as_str())?;
        }
        let activity_ms = last_event.as_ref().map_or(created_ms, |event| event.ts_ms);
        Ok(ConversationRecord {
            activity_ms,
            conversation: ConversationId(id),
            kind: if kind == 1 {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            },
            name,
            encrypted,
            disappear_secs,
            members,
            last_seq,
            read_seq,
            unread,
            last_event,
            receipts,
        })
    }
}

pub(super) fn receipts(
    conn: &Connection,
    account: AccountId,
    conversation: ConversationId,
    message_id: &MessageId,
) -> Result<ReceiptsRecord, StoreError> {
    check_member(conn, conversation, account)?;
    let (seq, sender): (i64, i64) = conn
        .query_row(
            "SELECT m.seq, m.sender_account FROM messages m
             JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = ?4
             WHERE m.id = ?1 AND m.conversation_id = ?2 AND m.kind IN (?3, 5) AND m.seq > mb.joined_seq
             AND m.body IS NOT NULL",
            params![message_id.as_str(), conversation.0, EVENT_TEXT, account.0],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::UnknownMessage)?;
    let mut delivered_stmt = conn
        .prepare_cached(
            "SELECT a.username, m.delivered_ms FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id = ?1 AND m.delivered_seq >= ?2 AND m.account_id != ?3
               AND m.joined_seq < ?2
             ORDER BY m.delivered_ms, a.username",
        )
        .map_err(backend)?;
    let delivered = delivered_stmt
        .query_map(params![conversation.0, seq, sender], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let mut read_stmt = conn
        .prepare_cached(
            "SELECT a.username, m.read_ms FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id = ?1 AND m.read_seq >= ?2 AND m.account_id != ?3
               AND m.joined_seq < ?2
             ORDER BY m.read_ms, a.username",
        )
        .map_err(backend)?;
    let read = read_stmt
        .query_map(params![conversation.0, seq, sender], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    Ok(ReceiptsRecord {
        message_id: message_id.clone(),
        seq,
        delivered,
        read,
    })
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn history(&self, request: HistoryRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |conn| history(conn, &request)).await
    }

    async fn conversations(
        &self,
        account: AccountId,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        self.read(move |conn| conversations(conn, account)).await
    }

    async fn receipts(
        &self,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> Result<ReceiptsRecord, StoreError> {
        let message_id = message_id.clone();
        self.read(move |conn| receipts(conn, account, conversation, &message_id))
            .await
    }
}
