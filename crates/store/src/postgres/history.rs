//! Reading conversations back: history pages, the conversation list (with
//! the other members' receipt cursors) and per-message receipts. Each is a
//! fixed number of statements whatever the page or list size (reactions,
//! media and last events are fetched for all rows at once). Events whose
//! bodies were purged are not shown: their rows only keep dedup keys.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId};
use tokio_postgres::Row;

use super::PostgresStore;
use super::autocommit;
use super::codes::{CONVERSATION_GROUP, EVENT_TEXT, event_kind};
use super::conversations::check_member;
use super::fault::{Fault, Outcome};
use super::media::media_of;
use super::sql::{limit, pipeline, row, rows, scalar};
use crate::HistoryStore;
use crate::model::*;
use crate::{StoreError, rules};

/// Columns every event query selects, in `event_from_row` order.
macro_rules! event_columns {
    () => {
        "m.id, m.conversation_id, m.seq, a.username, m.sender_device, m.client_msg_id,
         m.kind, m.body, m.target_id, m.edited_ms, m.deleted, m.created_ms, m.expires_ms"
    };
}

/// An event about an earlier message (reaction, edit, delete) is visible
/// only to members who saw that message: `$joined` names the parameter
/// holding the reader's joined seq.
macro_rules! about_visible {
    ($joined:literal) => {
        concat!(
            "(m.kind IN (0, 1) OR m.target_id IS NULL
              OR (SELECT t.seq FROM messages t WHERE t.id = m.target_id) > ",
            $joined,
            ")"
        )
    };
}

fn event_from_row(row: &Row) -> Outcome<StoredEvent> {
    Ok(StoredEvent {
        message_id: MessageId::from_stored(row.try_get(0)?),
        conversation: ConversationId(row.try_get(1)?),
        seq: row.try_get(2)?,
        from: row.try_get(3)?,
        from_device: DeviceId(row.try_get(4)?),
        client_msg_id: row.try_get(5)?,
        kind: event_kind(row.try_get(6)?),
        body: row.try_get(7)?,
        media: Vec::new(),
        target: row
            .try_get::<_, Option<String>>(8)?
            .map(MessageId::from_stored),
        edited_ms: row.try_get(9)?,
        deleted: row.try_get(10)?,
        ts_ms: row.try_get(11)?,
        expires_ms: row.try_get(12)?,
        reactions: Vec::new(),
    })
}

/// Fills in the media and reactions of the texts among `events`.
async fn attach_reactions<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    events: &mut [StoredEvent],
) -> Outcome<()> {
    let ids: Vec<&str> = events
        .iter()
        .filter(|event| event.kind.is_message())
        .map(|event| event.message_id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let (mut media, found) = pipeline!(
        media_of(db, &ids),
        rows(
            db,
            "SELECT r.message_id, a.username, r.emoji FROM reactions r
             JOIN accounts a ON a.id = r.account_id
             WHERE r.conversation_id = $2 AND r.message_id = ANY($1)
             ORDER BY r.message_id, a.username",
            &[&ids, &conversation.0],
        ),
    )?;
    let mut reactions: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for row in &found {
        reactions
            .entry(row.try_get(0)?)
            .or_default()
            .push((row.try_get(1)?, row.try_get(2)?));
    }
    for event in events.iter_mut().filter(|event| event.kind.is_message()) {
        event.media = media.remove(event.message_id.as_str()).unwrap_or_default();
        event.reactions = reactions
            .remove(event.message_id.as_str())
            .unwrap_or_default();
    }
    Ok(())
}

async fn joined_seq<C: GenericClient>(
    db: &C,
    conversation: ConversationId,
    account: AccountId,
) -> Outcome<i64> {
    check_member(db, conversation, account).await?;
    scalar(
        db,
        "SELECT joined_seq FROM members WHERE conversation_id = $1 AND account_id = $2",
        &[&conversation.0, &account.0],
    )
    .await
}

pub(super) async fn history<C: GenericClient>(
    db: &C,
    request: &HistoryRequest,
) -> Outcome<Vec<StoredEvent>> {
    let joined = joined_seq(db, request.conversation, request.account).await?;
    let n = limit(request.limit);
    let found = match request.after {
        Some(after) => {
            rows(
                db,
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM messages m JOIN accounts a ON a.id = m.sender_account
                     WHERE m.conversation_id = $1 AND m.seq > $2 AND m.body IS NOT NULL AND ",
                    about_visible!("$4"),
                    " ORDER BY m.seq LIMIT $3"
                ),
                &[&request.conversation.0, &after.max(joined), &n, &joined],
            )
            .await?
        }
        None => {
            let before = request.before.unwrap_or(i64::MAX);
            rows(
                db,
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM messages m JOIN accounts a ON a.id = m.sender_account
                     WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3
                       AND m.body IS NOT NULL AND ",
                    about_visible!("$2"),
                    " ORDER BY m.seq DESC LIMIT $4"
                ),
                &[&request.conversation.0, &joined, &before, &n],
            )
            .await?
        }
    };
    let mut events = found
        .iter()
        .map(event_from_row)
        .collect::<Outcome<Vec<_>>>()?;
    attach_reactions(db, request.conversation, &mut events).await?;
    Ok(events)
}

pub(super) async fn conversations<C: GenericClient>(
    db: &C,
    account: AccountId,
) -> Outcome<Vec<ConversationRecord>> {
    let (memberships, member_names, last_events, cursors) = pipeline!(
        rows(
            db,
            "SELECT c.id, c.kind, c.name, c.last_seq, m.read_seq, c.created_ms,
                    (SELECT count(*) FROM (SELECT 1 FROM messages x
                      WHERE x.conversation_id = c.id AND x.seq > greatest(m.read_seq, m.joined_seq)
                        AND x.kind IN ($2::smallint, 5) AND NOT x.deleted AND x.sender_account <> $1
                      LIMIT $3) u),
                    c.encrypted, c.disappear_secs
             FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.account_id = $1",
            &[&account.0, &EVENT_TEXT, &UNREAD_COUNTED_MAX],
        ),
        rows(
            db,
            "SELECT m.conversation_id, a.username FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id IN (SELECT conversation_id FROM members WHERE account_id = $1)
             ORDER BY m.conversation_id, a.username",
            &[&account.0],
        ),
        // The newest event each member may see, one index probe each.
        rows(
            db,
            concat!(
                "SELECT ", event_columns!(),
                " FROM members mb CROSS JOIN LATERAL (
                     SELECT * FROM messages m WHERE m.conversation_id = mb.conversation_id
                     AND m.seq > mb.joined_seq AND m.body IS NOT NULL
                     ORDER BY m.seq DESC LIMIT 1) m
                 JOIN accounts a ON a.id = m.sender_account
                 WHERE mb.account_id = $1"
            ),
            &[&account.0],
        ),
        rows(
            db,
            "SELECT m.conversation_id, a.username, m.delivered_seq, m.read_seq
             FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id IN (SELECT conversation_id FROM members WHERE account_id = $1)
               AND m.account_id <> $1
             ORDER BY m.conversation_id, a.username",
            &[&account.0],
        ),
    )?;
    let mut receipts = receipts_by_conversation(&cursors)?;
    let mut names = names_by_conversation(&member_names)?;
    let mut last = last_events_with_media(db, &last_events).await?;
    let mut records = Vec::with_capacity(memberships.len());
    for row in &memberships {
        let id: i64 = row.try_get(0)?;
        let created_ms: i64 = row.try_get(5)?;
        let last_event = last.remove(&ConversationId(id));
        let activity_ms = last_event.as_ref().map_or(created_ms, |event| event.ts_ms);
        records.push(ConversationRecord {
            activity_ms,
            conversation: ConversationId(id),
            kind: if row.try_get::<_, i16>(1)? == CONVERSATION_GROUP {
                ConversationKind::Group
            } else {
                ConversationKind::Direct
            },
            name: row.try_get(2)?,
            encrypted: row.try_get(7)?,
            disappear_secs: u32::try_from(row.try_get::<_, i64>(8)?).unwrap_or(0),
            members: names.remove(&id).unwrap_or_default(),
            last_seq: row.try_get(3)?,
            read_seq: row.try_get(4)?,
            unread: row.try_get(6)?,
            last_event,
            receipts: receipts.remove(&id).unwrap_or_default(),
        });
    }
    rules::sort_by_activity(&mut records);
    Ok(records)
}

/// The other members' receipt cursors, by conversation.
fn receipts_by_conversation(cursors: &[Row]) -> Outcome<HashMap<i64, Vec<MemberReceipts>>> {
    let mut receipts: HashMap<i64, Vec<MemberReceipts>> = HashMap::new();
    for row in cursors {
        receipts
            .entry(row.try_get(0)?)
            .or_default()
            .push(MemberReceipts {
                username: row.try_get(1)?,
                delivered_seq: row.try_get(2)?,
                read_seq: row.try_get(3)?,
            });
    }
    Ok(receipts)
}

/// The members' usernames, by conversation.
fn names_by_conversation(member_names: &[Row]) -> Outcome<HashMap<i64, Vec<String>>> {
    let mut names: HashMap<i64, Vec<String>> = HashMap::new();
    for row in member_names {
        names
            .entry(row.try_get(0)?)
            .or_default()
            .push(row.try_get(1)?);
    }
    Ok(names)
}

/// The newest event of each conversation, a text with its attachments (so
/// a list can say "Photo" for it).
async fn last_events_with_media<C: GenericClient>(
    db: &C,
    last_events: &[Row],
) -> Outcome<HashMap<ConversationId, StoredEvent>> {
    let mut last_events = last_events
        .iter()
        .map(event_from_row)
        .collect::<Outcome<Vec<StoredEvent>>>()?;
    let texts: Vec<&str> = last_events
        .iter()
        .filter(|event| event.kind.is_message())
        .map(|event| event.message_id.as_str())
        .collect();
    let mut media = if texts.is_empty() {
        HashMap::new()
    } else {
        media_of(db, &texts).await?
    };
    let mut last: HashMap<ConversationId, StoredEvent> = HashMap::new();
    for mut event in last_events.drain(..) {
        if let Some(attached) = media.remove(event.message_id.as_str()) {
            event.media = attached;
        }
        last.insert(event.conversation, event);
    }
    Ok(last)
}

pub(super) async fn receipts<C: GenericClient>(
    db: &C,
    account: AccountId,
    conversation: ConversationId,
    message_id: &MessageId,
) -> Outcome<ReceiptsRecord> {
    check_member(db, conversation, account).await?;
    let found = row(
        db,
        "SELECT m.seq, m.sender_account FROM messages m
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = $4
         WHERE m.id = $1 AND m.conversation_id = $2 AND m.kind IN ($3::smallint, 5) AND m.seq > mb.joined_seq
           AND m.body IS NOT NULL",
        &[
            &message_id.as_str(),
            &conversation.0,
            &EVENT_TEXT,
            &account.0,
        ],
    )
    .await?
    .ok_or(Fault::Refused(StoreError::UnknownMessage))?;
    let (seq, sender): (i64, i64) = (found.try_get(0)?, found.try_get(1)?);
    let (delivered, read) = pipeline!(
        rows(
            db,
            "SELECT a.username, m.delivered_ms FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id = $1 AND m.delivered_seq >= $2 AND m.account_id <> $3
               AND m.joined_seq < $2
             ORDER BY m.delivered_ms, a.username",
            &[&conversation.0, &seq, &sender],
        ),
        rows(
            db,
            "SELECT a.username, m.read_ms FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.conversation_id = $1 AND m.read_seq >= $2 AND m.account_id <> $3
               AND m.joined_seq < $2
             ORDER BY m.read_ms, a.username",
            &[&conversation.0, &seq, &sender],
        ),
    )?;
    let pairs = |found: &[Row]| -> Outcome<Vec<(String, i64)>> {
        found
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    };
    Ok(ReceiptsRecord {
        message_id: message_id.clone(),
        seq,
        delivered: pairs(&delivered)?,
        read: pairs(&read)?,
    })
}

#[async_trait]
impl HistoryStore for PostgresStore {
    async fn history(&self, request: HistoryRequest) -> Result<Vec<StoredEvent>, StoreError> {
        autocommit!(self, |db| history(db, &request))
    }

    async fn conversations(
        &self,
        account: AccountId,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        autocommit!(self, |db| conversations(db, account))
    }

    async fn receipts(
        &self,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> Result<ReceiptsRecord, StoreError> {
        autocommit!(self, |db| receipts(db, account, conversation, message_id))
    }
}
