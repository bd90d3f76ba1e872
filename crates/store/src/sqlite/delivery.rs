//! What waits for a device and how it moves on: reading the events above
//! its positions, cumulative acks (which move the account's delivered
//! cursor), read pointers, and the sweep. Nothing here writes a row per
//! recipient.

use std::collections::HashMap;

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq};
use rusqlite::{Connection, OptionalExtension, params};

use super::conversations::{check_member, text_authors_devices};
use super::media::media_of;
use super::send::{EVENT_DELETE, EVENT_EDIT, EVENT_REACTION, EVENT_TEXT, event_kind};
use super::writer::backend;
use crate::StoreError;
use crate::model::*;

/// Events read per statement while scanning one conversation.
const SCAN_CHUNK: i64 = 256;

/// One chunk of a conversation's events. The LIMIT is `SCAN_CHUNK` written
/// into the statement, not bound: SQLite plans with a bound LIMIT's value,
/// so it prepared the statement again on every run (a quarter of a
/// catch-up read's CPU).
const SCAN_SQL: &str =
    "SELECT m.id, m.seq, a.username, m.sender_device, m.client_msg_id, m.kind, m.body,
        m.target_id, m.edited_ms, m.deleted, m.created_ms,
        CASE WHEN m.kind IN (?4, ?5, ?6)
             THEN (SELECT t.seq FROM messages t WHERE t.id = m.target_id) END,
        m.kind IN (?7, 5) AND EXISTS (SELECT 1 FROM message_media mm WHERE mm.message_id = m.id),
        m.expires_ms
     FROM messages m JOIN accounts a ON a.id = m.sender_account
     WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.seq <= ?3
     ORDER BY m.seq LIMIT 256";

/// A conversation with something above the device's position: (id,
/// joined_seq, end, stored position). `end` is the last seq, or for a
/// conversation the account left, the seq of its leaving.
type Stream = (i64, i64, i64, i64);

fn streams(conn: &Connection, request: &PendingRequest) -> Result<Vec<Stream>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.conversation_id, m.joined_seq, c.last_seq, COALESCE(p.seq, 0)
             FROM members m JOIN conversations c ON c.id = m.conversation_id
             LEFT JOIN positions p ON p.device_id = ?2 AND p.conversation_id = m.conversation_id
             WHERE m.account_id = ?1
             UNION ALL
             SELECT d.conversation_id, d.joined_seq, d.left_seq, COALESCE(p.seq, 0)
             FROM departures d
             LEFT JOIN positions p ON p.device_id = ?2 AND p.conversation_id = d.conversation_id
             WHERE d.account_id = ?1 AND d.left_seq > MAX(d.joined_seq, COALESCE(p.seq, 0))
             ORDER BY 1",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![request.account.0, request.device.0], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// One scanned event: the event as delivered, plus what decides whether it
/// is: its sender device, whether its body is gone, and for an event about
/// an earlier message, that message's seq (`None` if it is gone).
struct Scanned {
    event: StoredEvent,
    purged: bool,
    about_seq: Option<Option<i64>>,
    has_media: bool,
}

fn scan_chunk(
    conn: &Connection,
    conversation: i64,
    after: i64,
    end: i64,
) -> Result<Vec<Scanned>, StoreError> {
    let mut stmt = conn.prepare_cached(SCAN_SQL).map_err(backend)?;
    let rows = stmt
        .query_map(
            params![
                conversation,
                after,
                end,
                EVENT_REACTION,
                EVENT_EDIT,
                EVENT_DELETE,
                EVENT_TEXT,
            ],
            |row| {
                let kind: i64 = row.get(5)?;
                let body: Option<String> = row.get(6)?;
                let about = matches!(kind, EVENT_REACTION | EVENT_EDIT | EVENT_DELETE);
                Ok(Scanned {
                    purged: body.is_none(),
                    about_seq: about.then(|| row.get(11)).transpose()?,
                    has_media: row.get(12)?,
                    event: StoredEvent {
                        message_id: MessageId::from_stored(row.get(0)?),
                        conversation: ConversationId(conversation),
                        seq: row.get(1)?,
                        from: row.get(2)?,
                        from_device: DeviceId(row.get(3)?),
                        client_msg_id: row.get(4)?,
                        kind: event_kind(kind),
                        body: body.unwrap_or_default(),
                        media: Vec::new(),
                        target: row.get::<_, Option<String>>(7)?.map(MessageId::from_stored),
                        edited_ms: row.get(8)?,
                        deleted: row.get::<_, i64>(9)? != 0,
                        ts_ms: row.get(10)?,
                        expires_ms: row.get(13)?,
                        reactions: Vec::new(),
                    },
                })
            },
        )
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// Collects consecutive expired seqs into one range.
struct ExpiredRange {
    conversation: ConversationId,
    range: Option<(Seq, Seq)>,
}

impl ExpiredRange {
    fn extend(&mut self, from: Seq, to: Seq) {
        self.range = Some(match self.range {
            Some((start, _)) => (start, to),
            None => (from, to),
        });
    }

    /// Emits the range unless the page is full; then `Err` of the seq just
    /// below it, where the next page must start.
    fn flush(&mut self, items: &mut Vec<PendingItem>, limit: usize) -> Result<(), Seq> {
        let Some((from_seq, to_seq)) = self.range else {
            return Ok(());
        };
        if items.len() >= limit {
            return Err(from_seq - 1);
        }
        self.range = None;
        items.push(PendingItem::Expired {
            conversation: self.conversation,
            from_seq,
            to_seq,
        });
        Ok(())
    }
}

pub(super) fn pending(conn: &Connection, request: &PendingRequest) -> Result<Pending, StoreError> {
    let after: HashMap<ConversationId, Seq> = request.after.iter().copied().collect();
    let mut page = Pending::default();
    'streams: for (conversation, joined_seq, end, stored) in streams(conn, request)? {
        let id = ConversationId(conversation);
        let mut cursor = stored
            .max(joined_seq)
            .max(after.get(&id).copied().unwrap_or(0));
        if cursor >= end {
            // Nothing above: the caller still learns where it stands, so
            // a live event for this conversation can be placed.
            page.scanned.push((id, cursor));
            continue;
        }
        let mut expired = ExpiredRange {
            conversation: id,
            range: None,
        };
        loop {
            let chunk = scan_chunk(conn, conversation, cursor, end)?;
            let full = chunk.len() as i64 == SCAN_CHUNK;
            for scanned in chunk {
                let seq = scanned.event.seq;
                if seq > cursor + 1 {
                    // Rows deleted by the sweep: their bodies are long gone.
                    expired.extend(cursor + 1, seq - 1);
                }
                if scanned.purged || scanned.event.ts_ms < request.expired_before_ms {
                    expired.extend(seq, seq);
                    cursor = seq;
                    continue;
                }
                let own = scanned.event.from_device == request.device;
                let unseen_target = scanned
                    .about_seq
                    .is_some_and(|target| target.is_none_or(|target| target <= joined_seq));
                if own || unseen_target {
                    cursor = seq;
                    continue;
                }
                // A full page stops just below the first item that did not
                // fit, so the next page starts with it.
                if let Err(below) = expired.flush(&mut page.items, request.limit) {
                    page.scanned.push((id, below));
                    page.more = true;
                    break 'streams;
                }
                if page.items.len() >= request.limit {
                    page.scanned.push((id, seq - 1));
                    page.more = true;
                    break 'streams;
                }
                let mut event = scanned.event;
                if scanned.has_media {
                    event.media = media_of(conn, event.message_id.as_str())?;
                }
                page.items.push(PendingItem::Event(event));
                cursor = seq;
            }
            if !full {
                break;
            }
        }
        if cursor < end {
            expired.extend(cursor + 1, end);
        }
        if let Err(below) = expired.flush(&mut page.items, request.limit) {
            page.scanned.push((id, below));
            page.more = true;
            break;
        }
        page.scanned.push((id, end.max(cursor)));
    }
    Ok(page)
}

/// Where the account stands in a conversation an ack names: (end of what
/// it may ack, joined seq, whether it is still a member).
fn ack_scope(
    conn: &Connection,
    account: AccountId,
    conversation: ConversationId,
) -> Result<(Seq, Seq, bool), StoreError> {
    // (last seq, joined as a member, left seq and joined as a leaver)
    type Scope = (Seq, Option<Seq>, Option<Seq>, Option<Seq>);
    let row: Option<Scope> = conn
        .prepare_cached(
            "SELECT c.last_seq, m.joined_seq, d.left_seq, d.joined_seq FROM conversations c
             LEFT JOIN members m ON m.conversation_id = c.id AND m.account_id = ?2
             LEFT JOIN departures d ON d.conversation_id = c.id AND d.account_id = ?2
             WHERE c.id = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![conversation.0, account.0], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()
        })
        .map_err(backend)?;
    match row {
        None => Err(StoreError::UnknownConversation),
        Some((last_seq, Some(joined), _, _)) => Ok((last_seq, joined, true)),
        Some((_, None, Some(left_seq), Some(joined))) => Ok((left_seq, joined, false)),
        // Never a member: as if it did not exist.
        Some(_) => Err(StoreError::UnknownConversation),
    }
}

fn username(conn: &Connection, account: AccountId) -> Result<String, StoreError> {
    conn.prepare_cached("SELECT username FROM accounts WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([account.0], |row| row.get(0)))
        .map_err(backend)
}

pub(super) fn ack(conn: &Connection, ack: &AckRequest) -> Result<AckOutcome, StoreError> {
    // Every point is checked before any moves: a refused ack changes nothing.
    let mut scopes = Vec::with_capacity(ack.points.len());
    for &(conversation, seq) in &ack.points {
        let (end, joined, member) = ack_scope(conn, ack.account, conversation)?;
        if seq < 0 || seq > end {
            return Err(StoreError::SeqOutOfRange);
        }
        scopes.push((conversation, seq, joined, member));
    }
    let mut outcome = AckOutcome::default();
    let mut by = None;
    for (conversation, seq, joined, member) in scopes {
        let before: Seq = conn
            .prepare_cached(
                "SELECT seq FROM positions WHERE device_id = ?1 AND conversation_id = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![ack.device.0, conversation.0], |row| row.get(0))
                    .optional()
            })
            .map_err(backend)?
            .unwrap_or(0)
            .max(joined);
        let position = before.max(seq);
        if position > before {
            conn.prepare_cached(
                "INSERT INTO positions (device_id, conversation_id, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device_id, conversation_id) DO UPDATE SET seq = excluded.seq",
            )
            .and_then(|mut stmt| stmt.execute(params![ack.device.0, conversation.0, position]))
            .map_err(backend)?;
        }
        outcome.positions.push((conversation, position));
        if member {
            let delivered: Seq = conn
                .prepare_cached(
                    "SELECT delivered_seq FROM members WHERE conversation_id = ?1 AND account_id = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![conversation.0, ack.account.0], |row| row.get(0))
                })
                .map_err(backend)?;
            let moved_from = (delivered < seq).then_some(delivered);
            if moved_from.is_some() {
                conn.prepare_cached(
                    "UPDATE members SET delivered_seq = ?3, delivered_ms = ?4
                     WHERE conversation_id = ?1 AND account_id = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![conversation.0, ack.account.0, seq, ack.now_ms])
                })
                .map_err(backend)?;
            }
            if let Some(from) = moved_from {
                let by = match &by {
                    Some(by) => String::clone(by),
                    None => by.insert(username(conn, ack.account)?).clone(),
                };
                outcome.receipts.push(ReceiptMoved {
                    conversation,
                    by,
                    seq,
                    ts_ms: ack.now_ms,
                    notify: text_authors_devices(conn, conversation, ack.account, from, seq)?,
                });
            }
        }
        if ack.purge_delivered_bodies && position > before {
            purge_delivered(conn, conversation, before, position)?;
        }
    }
    Ok(outcome)
}

/// Store-and-forward: deletes the bodies in `(from, to]` that every device
/// of every member (and of anyone who left, up to their leaving) has. Only
/// this range can have become deliverable-to-all by the ack that moved a
/// position from `from` to `to`. A device counts as having its own events.
fn purge_delivered(
    conn: &Connection,
    conversation: ConversationId,
    from: Seq,
    to: Seq,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.id, MAX(COALESCE(p.seq, 0), m.joined_seq) FROM members m
             JOIN devices d ON d.account_id = m.account_id
             LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = m.conversation_id
             WHERE m.conversation_id = ?1
             UNION ALL
             SELECT d.id, CASE WHEN MAX(COALESCE(p.seq, 0), x.joined_seq) >= x.left_seq
                               THEN 9223372036854775807
                               ELSE MAX(COALESCE(p.seq, 0), x.joined_seq) END
             FROM departures x JOIN devices d ON d.account_id = x.account_id
             LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = x.conversation_id
             WHERE x.conversation_id = ?1",
        )
        .map_err(backend)?;
    let positions: Vec<(i64, Seq)> = stmt
        .query_map([conversation.0], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    // The lowest position, its device, and the lowest of all others: an
    // event at or below the first is everyone's, and one of that device's
    // own at or below the second is too.
    let Some(&(lowest_device, lowest)) = positions.iter().min_by_key(|(_, seq)| *seq) else {
        return Ok(());
    };
    let second = positions
        .iter()
        .filter(|(device, _)| *device != lowest_device)
        .map(|(_, seq)| *seq)
        .min()
        .unwrap_or(Seq::MAX);
    let mut purge = conn
        .prepare_cached(
            "UPDATE messages SET body = NULL
             WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3 AND body IS NOT NULL
             AND (seq <= ?4 OR (sender_device = ?5 AND seq <= ?6))
             RETURNING id",
        )
        .map_err(backend)?;
    let ids: Vec<String> = purge
        .query_map(
            params![conversation.0, from, to, lowest, lowest_device, second],
            |row| row.get(0),
        )
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    forget_bodies(conn, &ids)
}

/// What hangs off purged bodies goes with them: reactions, and the media
/// links (unlinked media are collected after their grace).
fn forget_bodies(conn: &Connection, ids: &[String]) -> Result<(), StoreError> {
    for id in ids {
        for sql in [
            "DELETE FROM reactions WHERE message_id = ?1",
            "DELETE FROM message_media WHERE message_id = ?1",
        ] {
            conn.prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute([id]))
                .map_err(backend)?;
        }
    }
    Ok(())
}

pub(super) fn mark_read(conn: &Connection, read: &ReadRequest) -> Result<ReadOutcome, StoreError> {
    check_member(conn, read.conversation, read.account)?;
    let (current, last_seq): (i64, i64) = conn
        .query_row(
            "SELECT m.read_seq, c.last_seq FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = ?1 AND m.account_id = ?2",
            params![read.conversation.0, read.account.0],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(backend)?;
    let target = read.seq.min(last_seq);
    if target <= current {
        return Ok(ReadOutcome {
            seq: current,
            moved: None,
        });
    }
    conn.execute(
        "UPDATE members SET read_seq = ?3, read_ms = ?4 WHERE conversation_id = ?1 AND account_id = ?2",
        params![read.conversation.0, read.account.0, target, read.now_ms],
    )
    .map_err(backend)?;
    Ok(ReadOutcome {
        seq: target,
        moved: Some(ReceiptMoved {
            conversation: read.conversation,
            by: username(conn, read.account)?,
            seq: target,
            ts_ms: read.now_ms,
            notify: text_authors_devices(conn, read.conversation, read.account, current, target)?,
        }),
    })
}

/// Events above the devices' positions, summed (own and expired included).
const WAITING: &str =
    "SELECT COALESCE(SUM(MAX(0, c.last_seq - MAX(m.joined_seq, COALESCE(p.seq, 0)))), 0)
     FROM devices d JOIN members m ON m.account_id = d.account_id
     JOIN conversations c ON c.id = m.conversation_id
     LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = m.conversation_id";

pub(super) fn waiting(conn: &Connection, device: DeviceId) -> Result<u64, StoreError> {
    conn.prepare_cached(&format!("{WAITING} WHERE d.id = ?1"))
        .and_then(|mut stmt| stmt.query_row([device.0], |row| row.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(backend)
}

/// Whether something another device sent waits above the device's
/// positions, in its memberships and, up to its leaving, its departures
/// (see `MessageStore::behind`).
const BEHIND: &str = "SELECT EXISTS (
     SELECT 1 FROM devices d
     JOIN (SELECT m.account_id, m.conversation_id, m.joined_seq, c.last_seq AS end_seq
           FROM members m JOIN conversations c ON c.id = m.conversation_id
           UNION ALL
           SELECT account_id, conversation_id, joined_seq, left_seq FROM departures) s
       ON s.account_id = d.account_id
     LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = s.conversation_id
     WHERE d.id = ?1 AND s.end_seq > MAX(s.joined_seq, COALESCE(p.seq, 0))
       AND EXISTS (SELECT 1 FROM messages e
                   WHERE e.conversation_id = s.conversation_id
                     AND e.seq > MAX(s.joined_seq, COALESCE(p.seq, 0))
                     AND e.seq <= s.end_seq
                     AND e.sender_device != d.id))";

/// One lookup per device: the embedded store is local, and only a cluster
/// asks this at all.
pub(super) fn behind(conn: &Connection, devices: &[DeviceId]) -> Result<Vec<DeviceId>, StoreError> {
    let mut stmt = conn.prepare_cached(BEHIND).map_err(backend)?;
    let mut found = Vec::new();
    for device in devices {
        if stmt
            .query_row([device.0], |row| row.get::<_, bool>(0))
            .map_err(backend)?
        {
            found.push(*device);
        }
    }
    Ok(found)
}

pub(super) fn waiting_total(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row(WAITING, [], |row| row.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(backend)
}

/// Walks each conversation from where the previous sweep stopped (its
/// `purged_seq` / `dropped_seq`): events are stored in time order within a
/// conversation, so the walk ends at the first one too young. No age index
/// is kept for it.
pub(super) fn sweep(conn: &Connection, sweep: &SweepRequest) -> Result<SweepOutcome, StoreError> {
    let limit = sweep.limit as i64;
    let purge_before = sweep.bodies_before_ms.min(sweep.undelivered_before_ms);
    let mut outcome = SweepOutcome::default();
    let candidates: Vec<(i64, Seq, Seq)> = conn
        .prepare_cached(
            "SELECT id, purged_seq, dropped_seq FROM conversations
             WHERE last_seq > purged_seq OR last_seq > dropped_seq",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .map_err(backend)?;
    for (conversation, purged_seq, dropped_seq) in candidates {
        let room = limit - outcome.purged_bodies as i64;
        if room > 0 {
            outcome.purged_bodies +=
                purge_bodies(conn, conversation, purged_seq, purge_before, room)?;
        }
        let room = limit - outcome.purged_dedup as i64;
        if room > 0 {
            outcome.purged_dedup +=
                drop_purged(conn, conversation, dropped_seq, sweep.dedup_before_ms, room)?;
        }
        if outcome.purged_bodies as i64 >= limit && outcome.purged_dedup as i64 >= limit {
            break;
        }
    }
    // Disappearing messages go at their expiry, whatever the cursors:
    // found by their own index, not by the walk above.
    let expired: Vec<String> = conn
        .prepare_cached(
            "UPDATE messages SET body = NULL WHERE rid IN (
                 SELECT rid FROM messages WHERE expires_ms <= ?1 AND body IS NOT NULL LIMIT ?2)
             RETURNING id",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![sweep.now_ms, limit], |row| row.get(0))?
                .collect()
        })
        .map_err(backend)?;
    forget_bodies(conn, &expired)?;
    outcome.purged_bodies += expired.len() as u64;
    conn.execute(
        "DELETE FROM departures WHERE (conversation_id, account_id) IN (
            SELECT conversation_id, account_id FROM departures WHERE left_ms < ?1 LIMIT ?2)",
        params![sweep.undelivered_before_ms, limit],
    )
    .map_err(backend)?;
    Ok(outcome)
}

/// Purges the bodies of `conversation`'s events older than `before_ms`,
/// at most `room`, from `purged_seq` on; how many.
fn purge_bodies(
    conn: &Connection,
    conversation: i64,
    purged_seq: Seq,
    before_ms: i64,
    room: i64,
) -> Result<u64, StoreError> {
    let upto = oldest_run(
        conn,
        conversation,
        purged_seq,
        before_ms,
        room,
        Walk::Events,
    )?;
    if upto <= purged_seq {
        return Ok(0);
    }
    let ids: Vec<String> = conn
        .prepare_cached(
            "UPDATE messages SET body = NULL
             WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3 AND body IS NOT NULL
             RETURNING id",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![conversation, purged_seq, upto], |row| row.get(0))?
                .collect()
        })
        .map_err(backend)?;
    forget_bodies(conn, &ids)?;
    conn.execute(
        "UPDATE conversations SET purged_seq = ?2 WHERE id = ?1",
        params![conversation, upto],
    )
    .map_err(backend)?;
    Ok(ids.len() as u64)
}

/// Deletes `conversation`'s purged events older than `before_ms` (their
/// dedup keys go with them), at most `room`, from `dropped_seq` on; how
/// many.
fn drop_purged(
    conn: &Connection,
    conversation: i64,
    dropped_seq: Seq,
    before_ms: i64,
    room: i64,
) -> Result<u64, StoreError> {
    let upto = oldest_run(
        conn,
        conversation,
        dropped_seq,
        before_ms,
        room,
        Walk::Purged,
    )?;
    if upto <= dropped_seq {
        return Ok(0);
    }
    let dropped = conn
        .execute(
            "DELETE FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq <= ?3",
            params![conversation, dropped_seq, upto],
        )
        .map_err(backend)? as u64;
    conn.execute(
        "UPDATE conversations SET dropped_seq = ?2 WHERE id = ?1",
        params![conversation, upto],
    )
    .map_err(backend)?;
    Ok(dropped)
}

/// Which rows a sweep walk may take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Any event: bodies past retention.
    Events,
    /// Only rows whose body is gone: dedup keys past their window. A
    /// purged row behind one with a body waits for a later sweep.
    Purged,
}

/// The last seq of the run of rows above `after` stored before
/// `before_ms` (and, for `Walk::Purged`, without a body), at most `max` of
/// them; `after` when the first does not qualify.
fn oldest_run(
    conn: &Connection,
    conversation: i64,
    after: Seq,
    before_ms: i64,
    max: i64,
    walk: Walk,
) -> Result<Seq, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, created_ms, body IS NULL FROM messages
             WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(backend)?;
    let mut rows = stmt
        .query(params![conversation, after, max])
        .map_err(backend)?;
    let mut upto = after;
    while let Some(row) = rows.next().map_err(backend)? {
        let created_ms: i64 = row.get(1).map_err(backend)?;
        let purged: bool = row.get(2).map_err(backend)?;
        if created_ms >= before_ms || (walk == Walk::Purged && !purged) {
            break;
        }
        upto = row.get(0).map_err(backend)?;
    }
    Ok(upto)
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn a_catch_up_scan_is_prepared_once() {
        // Goal: scanning chunks with new bounds runs the cached statement
        // as prepared; a LIMIT bound as a parameter made SQLite prepare it
        // again on every run.
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        for (conversation, after) in [(1, 0), (2, 5), (3, 9)] {
            scan_chunk(&conn, conversation, after, after + 100).unwrap();
        }
        let stmt = conn.prepare_cached(SCAN_SQL).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
        assert!(SCAN_SQL.ends_with(&format!("LIMIT {SCAN_CHUNK}")));
    }
}
