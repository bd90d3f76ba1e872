//! Per-device queues: appending entries (fan-out), reading them back, acks
//! and read pointers.
//!
//! Every statement that appends entries locks the recipients' `devices`
//! rows first, in ascending id order, and draws positions only after that
//! (see the module doc of `postgres`). The lock and the inserts are one
//! statement: a CTE ordered by id `FOR NO KEY UPDATE`, feeding the INSERT.

use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId, QueuePos, UnixMillis};
use tokio_postgres::Row;

use super::codes::{QUEUE_DELIVERED, QUEUE_MESSAGE, QUEUE_READ, event_kind};
use super::conversations::check_member;
use super::fault::{Fault, Outcome};
use super::media::media_of;
use super::sql::{column, execute, limit, pipeline, row, rows, scalar, unsigned};
use crate::model::*;

/// What a fan-out appends to each recipient's queue.
pub(super) struct Entry<'a> {
    pub(super) kind: i16,
    pub(super) message_id: Option<&'a str>,
    pub(super) conversation: ConversationId,
    pub(super) seq: i64,
    pub(super) by_account: AccountId,
    pub(super) now_ms: UnixMillis,
    pub(super) expires_ms: UnixMillis,
}

/// Who of a conversation's members gets an entry.
pub(super) struct Audience {
    /// Only members who joined before this seq (saw that event).
    pub(super) joined_before: i64,
    pub(super) except_account: Option<AccountId>,
    pub(super) except_device: Option<DeviceId>,
}

impl Audience {
    pub(super) fn everyone() -> Self {
        Self {
            joined_before: i64::MAX,
            except_account: None,
            except_device: None,
        }
    }
}

/// The statement of [`fan_out`].
const FAN_OUT: &str = "WITH recipients AS (
             SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
             WHERE m.conversation_id = $1 AND m.joined_seq < $2
               AND m.account_id <> $3 AND d.id <> $4
             ORDER BY d.id FOR NO KEY UPDATE OF d
         )
         INSERT INTO queue (device_id, kind, message_id, conversation_id, seq, by_account, created_ms, expires_ms)
         SELECT id, $5::smallint, $6::text, $1, $7::bigint, $8::bigint, $9::bigint, $10::bigint
         FROM recipients ORDER BY id
         RETURNING device_id";

/// Appends `entry` to the queue of every device of the conversation's
/// members in `audience`; returns those devices, ascending.
pub(super) async fn fan_out<C: GenericClient>(
    db: &C,
    audience: &Audience,
    entry: &Entry<'_>,
) -> Outcome<Vec<DeviceId>> {
    let queued: Vec<i64> = column(
        db,
        FAN_OUT,
        &[
            &entry.conversation.0,
            &audience.joined_before,
            &audience.except_account.map_or(-1, |a| a.0),
            &audience.except_device.map_or(-1, |d| d.0),
            &entry.kind,
            &entry.message_id,
            &entry.seq,
            &entry.by_account.0,
            &entry.now_ms,
            &entry.expires_ms,
        ],
    )
    .await?;
    Ok(sorted_devices(queued))
}

/// Appends `entry` to the queue of each listed device that still exists;
/// returns those devices, ascending.
pub(super) async fn enqueue<C: GenericClient>(
    db: &C,
    devices: &[DeviceId],
    entry: &Entry<'_>,
) -> Outcome<Vec<DeviceId>> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = devices.iter().map(|d| d.0).collect();
    let queued: Vec<i64> = column(
        db,
        "WITH recipients AS (
             SELECT id FROM devices WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
         )
         INSERT INTO queue (device_id, kind, message_id, conversation_id, seq, by_account, created_ms, expires_ms)
         SELECT id, $2::smallint, $3::text, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::bigint
         FROM recipients ORDER BY id
         RETURNING device_id",
        &[
            &ids,
            &entry.kind,
            &entry.message_id,
            &entry.conversation.0,
            &entry.seq,
            &entry.by_account.0,
            &entry.now_ms,
            &entry.expires_ms,
        ],
    )
    .await?;
    Ok(sorted_devices(queued))
}

fn sorted_devices(ids: Vec<i64>) -> Vec<DeviceId> {
    let mut devices: Vec<DeviceId> = ids.into_iter().map(DeviceId).collect();
    devices.sort();
    devices.dedup();
    devices
}

pub(super) async fn pending<C: GenericClient>(
    db: &C,
    device: DeviceId,
    after: QueuePos,
    n: usize,
    now_ms: UnixMillis,
) -> Outcome<Vec<QueueItem>> {
    let found = rows(
        db,
        "SELECT q.pos, q.kind, q.message_id, q.conversation_id, q.seq, q.created_ms, a.username,
                m.sender_device, m.client_msg_id, m.body, m.created_ms,
                m.kind, m.target_id, m.edited_ms, m.deleted,
                EXISTS (SELECT 1 FROM message_media mm WHERE mm.message_id = q.message_id)
         FROM queue q
         JOIN accounts a ON a.id = q.by_account
         LEFT JOIN messages m ON m.id = q.message_id AND q.kind = 0
         WHERE q.device_id = $1 AND q.pos > $2 AND q.expires_ms > $3
         ORDER BY q.pos LIMIT $4",
        &[&device.0, &after, &now_ms, &limit(n)],
    )
    .await?;
    let mut items = Vec::with_capacity(found.len());
    let mut with_media = Vec::new();
    for row in &found {
        if let Some(item) = queue_item(row)? {
            if row.try_get::<_, bool>(15)? {
                with_media.push(items.len());
            }
            items.push(item);
        }
    }
    // Only texts with attachments cost one more query, for all of them.
    if !with_media.is_empty() {
        let ids: Vec<&str> = with_media
            .iter()
            .filter_map(|idx| match &items[*idx] {
                QueueItem::Message { message_id, .. } => Some(message_id.as_str()),
                _ => None,
            })
            .collect();
        let mut attached = media_of(db, &ids).await?;
        for item in &mut items {
            if let QueueItem::Message {
                message_id, media, ..
            } = item
            {
                if let Some(found) = attached.remove(message_id.as_str()) {
                    *media = found;
                }
            }
        }
    }
    Ok(items)
}

fn queue_item(row: &Row) -> Outcome<Option<QueueItem>> {
    let pos: i64 = row.try_get(0)?;
    let kind: i16 = row.try_get(1)?;
    let message_id: Option<String> = row.try_get(2)?;
    let conversation = ConversationId(row.try_get(3)?);
    let seq: i64 = row.try_get(4)?;
    let queued_ms: i64 = row.try_get(5)?;
    let by: String = row.try_get(6)?;
    Ok(match (kind, message_id) {
        (QUEUE_MESSAGE, Some(message_id)) => {
            // A body purged under a live entry cannot happen (purges check
            // the queue); skip rather than fail the whole page.
            let Some(text) = row.try_get::<_, Option<String>>(9)? else {
                return Ok(None);
            };
            Some(QueueItem::Message {
                pos,
                message_id: MessageId::from_stored(message_id),
                conversation,
                seq,
                from: by,
                from_device: DeviceId(row.try_get(7)?),
                client_msg_id: row.try_get(8)?,
                text,
                media: Vec::new(),
                kind: event_kind(row.try_get(11)?),
                target: row
                    .try_get::<_, Option<String>>(12)?
                    .map(MessageId::from_stored),
                edited_ms: row.try_get(13)?,
                deleted: row.try_get(14)?,
                ts_ms: row.try_get(10)?,
            })
        }
        (QUEUE_DELIVERED, Some(message_id)) => Some(QueueItem::Delivered {
            pos,
            conversation,
            message_id: MessageId::from_stored(message_id),
            seq,
            by,
            ts_ms: queued_ms,
        }),
        (QUEUE_READ, _) => Some(QueueItem::Read {
            pos,
            conversation,
            seq,
            by,
            ts_ms: queued_ms,
        }),
        _ => None,
    })
}

/// One acked queue entry: (pos, kind, message_id, conversation, seq, by_account).
type Acked = (i64, i16, Option<String>, i64, i64, i64);

pub(super) async fn ack<C: GenericClient>(db: &C, ack: &AckRequest) -> Outcome<AckOutcome> {
    // Positions start at 1, so `up_to` 0 acks nothing by range.
    let mut acked: Vec<Acked> = rows(
        db,
        "DELETE FROM queue WHERE device_id = $1 AND (pos <= $2 OR pos = ANY($3))
         RETURNING pos, kind, message_id, conversation_id, seq, by_account",
        &[&ack.device.0, &ack.up_to.unwrap_or(0), &ack.positions],
    )
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
        ))
    })
    .collect::<Outcome<_>>()?;
    // Receipts are queued in the order of the acked entries, i.e. seq order
    // within a conversation, however the ack listed them.
    acked.sort_unstable_by_key(|entry| entry.0);
    let removed = acked.len() as u64;
    let messages: Vec<&Acked> = acked
        .iter()
        .filter(|(_, kind, message_id, ..)| *kind == QUEUE_MESSAGE && message_id.is_some())
        .collect();
    let ids: Vec<&str> = messages
        .iter()
        .filter_map(|(_, _, id, ..)| id.as_deref())
        .collect();
    let purge = ack.purge_acked_bodies && !ids.is_empty();
    // Message rows are locked before the receipts lock device rows: the
    // same order as a send that edits a message, so the two cannot deadlock.
    let (_, queued_for, _) = pipeline!(
        async {
            if purge {
                lock_messages(db, &ids).await
            } else {
                Ok(0)
            }
        },
        delivered_receipts(db, ack, &messages),
        async {
            if purge {
                delete_unqueued(db, &ids).await
            } else {
                Ok(0)
            }
        },
    )?;
    Ok(AckOutcome {
        removed,
        queued_for,
    })
}

/// Records the first receipt of each acked text from someone else and, while
/// its sender is still a member, queues `delivered` for the sender's
/// devices; one statement for the whole ack. Returns the woken devices.
async fn delivered_receipts<C: GenericClient>(
    db: &C,
    ack: &AckRequest,
    messages: &[&Acked],
) -> Outcome<Vec<DeviceId>> {
    let from_others: Vec<&&Acked> = messages
        .iter()
        .filter(|(.., sender)| *sender != ack.account.0)
        .collect();
    if from_others.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = from_others
        .iter()
        .filter_map(|(_, _, id, ..)| id.as_deref())
        .collect();
    let conversations: Vec<i64> = from_others.iter().map(|entry| entry.3).collect();
    let seqs: Vec<i64> = from_others.iter().map(|entry| entry.4).collect();
    let senders: Vec<i64> = from_others.iter().map(|entry| entry.5).collect();
    let queued: Vec<i64> = column(
        db,
        "WITH acked AS (
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                 WITH ORDINALITY AS a(message_id, conversation_id, seq, sender, ord)
         ),
         firsts AS (
             INSERT INTO receipts (message_id, account_id, delivered_ms)
             SELECT a.message_id, $5, $6 FROM acked a
             JOIN messages m ON m.id = a.message_id AND m.kind = 0
             ORDER BY a.ord
             ON CONFLICT DO NOTHING
             RETURNING message_id
         ),
         targets AS (
             SELECT d.id AS device_id, a.message_id, a.conversation_id, a.seq, a.ord
             FROM acked a
             JOIN firsts f ON f.message_id = a.message_id
             JOIN members mb ON mb.conversation_id = a.conversation_id AND mb.account_id = a.sender
             JOIN devices d ON d.account_id = a.sender
         ),
         locked AS (
             SELECT id FROM devices WHERE id IN (SELECT device_id FROM targets)
             ORDER BY id FOR NO KEY UPDATE
         )
         INSERT INTO queue (device_id, kind, message_id, conversation_id, seq, by_account, created_ms, expires_ms)
         SELECT t.device_id, $8::smallint, t.message_id, t.conversation_id, t.seq, $5, $6, $7
         FROM targets t JOIN locked l ON l.id = t.device_id
         ORDER BY t.ord, t.device_id
         RETURNING device_id",
        &[
            &ids,
            &conversations,
            &seqs,
            &senders,
            &ack.account.0,
            &ack.now_ms,
            &ack.queue_expires_ms,
            &QUEUE_DELIVERED,
        ],
    )
    .await?;
    Ok(sorted_devices(queued))
}

/// Store-and-forward, step one: locks the acked messages' rows (ascending
/// id), so the check that follows sees every ack that committed while this
/// one waited: two devices acking the last two copies at once on two nodes
/// cannot both leave the body behind.
async fn lock_messages<C: GenericClient>(db: &C, ids: &[&str]) -> Outcome<u64> {
    execute(
        db,
        "SELECT 1 FROM (SELECT id FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE) locked",
        &[&ids],
    )
    .await
}

/// Store-and-forward, step two: deletes the bodies no queue still holds.
async fn delete_unqueued<C: GenericClient>(db: &C, ids: &[&str]) -> Outcome<u64> {
    execute(
        db,
        "DELETE FROM messages m WHERE m.id = ANY($1)
         AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id AND q.kind = 0)",
        &[&ids],
    )
    .await
}

pub(super) async fn mark_read<C: GenericClient>(
    db: &C,
    read: &ReadRequest,
) -> Outcome<ReadOutcome> {
    let (_, pointers) = pipeline!(
        check_member(db, read.conversation, read.account),
        row(
            db,
            "SELECT m.read_seq, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = $1 AND m.account_id = $2",
            &[&read.conversation.0, &read.account.0],
        ),
    )?;
    let pointers = pointers.ok_or(Fault::Raced)?;
    let (current, last_seq): (i64, i64) = (pointers.try_get(0)?, pointers.try_get(1)?);
    let target = read.seq.min(last_seq);
    if target <= current {
        return Ok(ReadOutcome {
            seq: current,
            queued_for: Vec::new(),
        });
    }
    // Only forward, also against another device of the account moving it
    // at the same moment on another node.
    let moved = execute(
        db,
        "UPDATE members SET read_seq = $3, read_ms = $4
         WHERE conversation_id = $1 AND account_id = $2 AND read_seq < $3",
        &[&read.conversation.0, &read.account.0, &target, &read.now_ms],
    )
    .await?;
    if moved == 0 {
        let now: i64 = scalar(
            db,
            "SELECT read_seq FROM members WHERE conversation_id = $1 AND account_id = $2",
            &[&read.conversation.0, &read.account.0],
        )
        .await?;
        return Ok(ReadOutcome {
            seq: now,
            queued_for: Vec::new(),
        });
    }
    let queued_for = fan_out(
        db,
        &Audience {
            except_account: Some(read.account),
            ..Audience::everyone()
        },
        &Entry {
            kind: QUEUE_READ,
            message_id: None,
            conversation: read.conversation,
            seq: target,
            by_account: read.account,
            now_ms: read.now_ms,
            expires_ms: read.queue_expires_ms,
        },
    )
    .await?;
    Ok(ReadOutcome {
        seq: target,
        queued_for,
    })
}

pub(super) async fn queue_depth<C: GenericClient>(db: &C, device: DeviceId) -> Outcome<u64> {
    let n: i64 = scalar(
        db,
        "SELECT count(*) FROM queue WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    unsigned(n, "queue depth")
}

pub(super) async fn queue_depth_total<C: GenericClient>(db: &C) -> Outcome<u64> {
    let n: i64 = scalar(db, "SELECT count(*) FROM queue", &[]).await?;
    unsigned(n, "queue depth")
}
