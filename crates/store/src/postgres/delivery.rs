//! What waits for a device and how it moves on: reading the events above
//! its positions, cumulative acks (which move the account's delivered
//! cursor and, in store-and-forward, purge what everyone has), read
//! pointers, and the waiting counts. Nothing here writes a row per
//! recipient: an ack writes one position row per conversation and one
//! member row per moved cursor.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq};
use tokio_postgres::Row;

use super::codes::{EVENT_DELETE, EVENT_EDIT, EVENT_REACTION, EVENT_TEXT, event_kind};
use super::conversations::check_member;
use super::fault::{Fault, Outcome};
use super::media::media_of;
use super::sql::{Step, column, execute, in_order, limit, pipeline, row, rows, scalar, unsigned};
use crate::model::*;

/// Events read per statement while scanning one conversation.
const SCAN_CHUNK: usize = 256;
/// Conversations whose first chunks are read in one pipeline. Their rows
/// share one chunk's worth, so a device behind in many conversations does
/// not pay a round trip for each, nor fetch far more than a page.
const PREFETCH_STREAMS: usize = 8;

/// The conversations with something above the device's position (or above
/// `after`, where the connection already is): its memberships and, up to
/// the seq of its leaving, its departures. Effective position: the higher
/// of the stored one (none = 0) and the account's joined seq.
const STREAMS: &str = "SELECT s.conversation_id, s.joined_seq, s.end_seq,
            GREATEST(s.joined_seq, COALESCE(p.seq, 0), COALESCE(a.seq, 0))
     FROM (SELECT m.conversation_id, m.joined_seq, c.last_seq AS end_seq
           FROM members m JOIN conversations c ON c.id = m.conversation_id
           WHERE m.account_id = $1
           UNION ALL
           SELECT conversation_id, joined_seq, left_seq FROM departures WHERE account_id = $1) s
     LEFT JOIN positions p ON p.device_id = $2 AND p.conversation_id = s.conversation_id
     LEFT JOIN unnest($3::bigint[], $4::bigint[]) AS a(conversation_id, seq)
       ON a.conversation_id = s.conversation_id
     WHERE s.end_seq > GREATEST(s.joined_seq, COALESCE(p.seq, 0), COALESCE(a.seq, 0))
     ORDER BY s.conversation_id";

/// Events `($2, $3]` of conversation `$1`, at most `$4`, with what decides
/// their fate: for an event about an earlier message ($5-$7: reaction,
/// edit, delete), that message's seq (NULL if its row is gone); for a text
/// ($8), whether it carries media. Both look in the event's own
/// conversation (its distribution key, docs/CLUSTER.md).
const SCAN: &str = "SELECT m.id, m.seq, a.username, m.sender_device, m.client_msg_id, m.kind,
            m.body, m.target_id, m.edited_ms, m.deleted, m.created_ms,
            CASE WHEN m.kind IN ($5, $6, $7)
                 THEN (SELECT t.seq FROM messages t
                       WHERE t.id = m.target_id AND t.conversation_id = m.conversation_id) END,
            m.kind IN ($8::smallint, 5) AND EXISTS (SELECT 1 FROM message_media mm
                                    WHERE mm.message_id = m.id
                                      AND mm.conversation_id = m.conversation_id),
            m.expires_ms
     FROM messages m JOIN accounts a ON a.id = m.sender_account
     WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq <= $3
     ORDER BY m.seq LIMIT $4";

/// A conversation to read for the device.
struct Stream {
    conversation: ConversationId,
    joined_seq: Seq,
    /// Its last seq, or for a conversation the account left, the seq of
    /// its leaving.
    end: Seq,
    /// Where reading starts (exclusive).
    from: Seq,
}

/// One scanned event and what decides whether it is delivered.
struct Scanned {
    event: StoredEvent,
    purged: bool,
    /// For an event about an earlier message: that message's seq, `None`
    /// if its row is gone.
    about_seq: Option<Option<Seq>>,
    has_media: bool,
}

pub(super) async fn pending<C: GenericClient>(
    db: &C,
    request: &PendingRequest,
) -> Outcome<Pending> {
    let mut after: BTreeMap<i64, Seq> = BTreeMap::new();
    for (conversation, seq) in &request.after {
        let at = after.entry(conversation.0).or_insert(*seq);
        *at = (*at).max(*seq);
    }
    let after_ids: Vec<i64> = after.keys().copied().collect();
    let after_seqs: Vec<Seq> = after.values().copied().collect();
    let streams: Vec<Stream> = rows(
        db,
        STREAMS,
        &[
            &request.account.0,
            &request.device.0,
            &after_ids,
            &after_seqs,
        ],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Stream {
            conversation: ConversationId(row.try_get(0)?),
            joined_seq: row.try_get(1)?,
            end: row.try_get(2)?,
            from: row.try_get(3)?,
        })
    })
    .collect::<Outcome<_>>()?;

    let mut page = Page {
        limit: request.limit,
        expired_before_ms: request.expired_before_ms,
        device: request.device,
        pending: Pending::default(),
        with_media: Vec::new(),
    };
    'windows: for window in streams.chunks(PREFETCH_STREAMS) {
        let first_len = (SCAN_CHUNK / window.len()).max(1);
        let steps: Vec<Step<'_, Vec<Scanned>>> = window
            .iter()
            .map(|stream| -> Step<'_, Vec<Scanned>> {
                Box::pin(scan(db, stream, stream.from, first_len))
            })
            .collect();
        let firsts = in_order(steps).await?;
        for (stream, first) in window.iter().zip(firsts) {
            if page.walk(db, stream, first, first_len).await? == Walked::Full {
                page.pending.more = true;
                break 'windows;
            }
        }
    }
    page.attach_media(db).await?;
    Ok(page.pending)
}

async fn scan<C: GenericClient>(
    db: &C,
    stream: &Stream,
    after: Seq,
    n: usize,
) -> Outcome<Vec<Scanned>> {
    rows(
        db,
        SCAN,
        &[
            &stream.conversation.0,
            &after,
            &stream.end,
            &limit(n),
            &EVENT_REACTION,
            &EVENT_EDIT,
            &EVENT_DELETE,
            &EVENT_TEXT,
        ],
    )
    .await?
    .iter()
    .map(|row| scanned(row, stream.conversation))
    .collect()
}

fn scanned(row: &Row, conversation: ConversationId) -> Outcome<Scanned> {
    let kind: i16 = row.try_get(5)?;
    let body: Option<String> = row.try_get(6)?;
    let about = matches!(kind, EVENT_REACTION | EVENT_EDIT | EVENT_DELETE);
    Ok(Scanned {
        purged: body.is_none(),
        about_seq: if about { Some(row.try_get(11)?) } else { None },
        has_media: row.try_get::<_, Option<bool>>(12)?.unwrap_or(false),
        event: StoredEvent {
            message_id: MessageId::from_stored(row.try_get(0)?),
            conversation,
            seq: row.try_get(1)?,
            from: row.try_get(2)?,
            from_device: DeviceId(row.try_get(3)?),
            client_msg_id: row.try_get(4)?,
            kind: event_kind(kind),
            body: body.unwrap_or_default(),
            media: Vec::new(),
            target: row
                .try_get::<_, Option<String>>(7)?
                .map(MessageId::from_stored),
            edited_ms: row.try_get(8)?,
            deleted: row.try_get(9)?,
            ts_ms: row.try_get(10)?,
            expires_ms: row.try_get(13)?,
            reactions: Vec::new(),
        },
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Walked {
    /// The conversation was read to its end.
    Done,
    /// The page is full and something more waits.
    Full,
}

/// A page being filled.
struct Page {
    limit: usize,
    expired_before_ms: i64,
    device: DeviceId,
    pending: Pending,
    /// Indices of items that are texts carrying media.
    with_media: Vec<usize>,
}

impl Page {
    /// Reads `stream` from `first` (its first chunk, of at most
    /// `chunk_len` rows) on, adding its items. Events it cannot deliver
    /// (gone, purged, past the TTL) become one `Expired` range in their
    /// place; its own and those about messages it never saw are skipped.
    /// Full, it stops before the item that does not fit, and `scanned`
    /// says where the next page resumes.
    async fn walk<C: GenericClient>(
        &mut self,
        db: &C,
        stream: &Stream,
        first: Vec<Scanned>,
        first_len: usize,
    ) -> Outcome<Walked> {
        let conversation = stream.conversation;
        let mut cursor = stream.from;
        let mut expired: Option<(Seq, Seq)> = None;
        let mut chunk = first;
        let mut chunk_len = first_len;
        loop {
            let complete = chunk.len() < chunk_len;
            for scanned in chunk {
                let seq = scanned.event.seq;
                if seq > cursor + 1 {
                    // Rows deleted by the sweep: their bodies went before.
                    extend(&mut expired, cursor + 1, seq - 1);
                }
                if scanned.purged || scanned.event.ts_ms < self.expired_before_ms {
                    extend(&mut expired, seq, seq);
                    cursor = seq;
                    continue;
                }
                let own = scanned.event.from_device == self.device;
                let unseen_target = scanned
                    .about_seq
                    .is_some_and(|target| target.is_none_or(|target| target <= stream.joined_seq));
                if own || unseen_target {
                    cursor = seq;
                    continue;
                }
                if let Some(range) = expired.take() {
                    if !self.push_expired(conversation, range) {
                        return Ok(Walked::Full);
                    }
                }
                if self.pending.items.len() >= self.limit {
                    self.pending.scanned.push((conversation, cursor));
                    return Ok(Walked::Full);
                }
                if scanned.has_media {
                    self.with_media.push(self.pending.items.len());
                }
                self.pending.items.push(PendingItem::Event(scanned.event));
                cursor = seq;
            }
            if complete || cursor >= stream.end {
                break;
            }
            chunk_len = SCAN_CHUNK;
            chunk = scan(db, stream, cursor, chunk_len).await?;
        }
        if cursor < stream.end {
            extend(&mut expired, cursor + 1, stream.end);
            cursor = stream.end;
        }
        if let Some(range) = expired {
            if !self.push_expired(conversation, range) {
                return Ok(Walked::Full);
            }
        }
        self.pending.scanned.push((conversation, cursor));
        Ok(Walked::Done)
    }

    /// Adds an `Expired` item, or, on a full page, records that the next
    /// page resumes just below it and returns `false`.
    fn push_expired(
        &mut self,
        conversation: ConversationId,
        (from_seq, to_seq): (Seq, Seq),
    ) -> bool {
        if self.pending.items.len() >= self.limit {
            self.pending.scanned.push((conversation, from_seq - 1));
            return false;
        }
        self.pending.items.push(PendingItem::Expired {
            conversation,
            from_seq,
            to_seq,
        });
        true
    }

    /// Fills in the media of the texts that carry some: one read for all.
    async fn attach_media<C: GenericClient>(&mut self, db: &C) -> Outcome<()> {
        if self.with_media.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = self
            .with_media
            .iter()
            .filter_map(|idx| match self.pending.items.get(*idx) {
                Some(PendingItem::Event(event)) => Some(event.message_id.as_str().to_owned()),
                _ => None,
            })
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut attached = media_of(db, &refs).await?;
        for idx in &self.with_media {
            if let Some(PendingItem::Event(event)) = self.pending.items.get_mut(*idx) {
                event.media = attached
                    .remove(event.message_id.as_str())
                    .unwrap_or_default();
            }
        }
        Ok(())
    }
}

/// Adds `from..=to` to the expired range being collected (which it follows,
/// skipped events aside).
fn extend(range: &mut Option<(Seq, Seq)>, from: Seq, to: Seq) {
    *range = Some(match *range {
        Some((start, _)) => (start, to),
        None => (from, to),
    });
}

/// Store-and-forward: purges the bodies in `($2, $3]` of conversation `$1`
/// that every device of every member (and of anyone who left, up to their
/// leaving) has; a device counts as having its own events. Only this range
/// can have become everyone's by the ack that moved a position from `$2`
/// to `$3`. With `lowest` the device furthest behind and `runner_up` the
/// position of the next one, an event is everyone's when it is at or below
/// `lowest`, or is that device's own and at or below `runner_up`.
pub(super) const PURGE_DELIVERED: &str = "WITH holders AS (
         SELECT d.id AS device, GREATEST(COALESCE(p.seq, 0), m.joined_seq) AS pos
         FROM members m JOIN devices d ON d.account_id = m.account_id
         LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = m.conversation_id
         WHERE m.conversation_id = $1
         UNION ALL
         SELECT d.id, CASE WHEN GREATEST(COALESCE(p.seq, 0), x.joined_seq) >= x.left_seq
                           THEN 9223372036854775807
                           ELSE GREATEST(COALESCE(p.seq, 0), x.joined_seq) END
         FROM departures x JOIN devices d ON d.account_id = x.account_id
         LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = x.conversation_id
         WHERE x.conversation_id = $1
     ),
     lowest AS (SELECT device, pos FROM holders ORDER BY pos, device LIMIT 1),
     runner_up AS (
         SELECT COALESCE(min(h.pos), 9223372036854775807) AS pos
         FROM holders h, lowest l WHERE h.device <> l.device
     ),
     purged AS (
         UPDATE messages m SET body = NULL FROM lowest l, runner_up r
         WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq <= $3 AND m.body IS NOT NULL
           AND (m.seq <= l.pos OR (m.sender_device = l.device AND m.seq <= r.pos))
         RETURNING m.id
     ),
     reactions_gone AS (DELETE FROM reactions
                        WHERE conversation_id = $1 AND message_id IN (SELECT id FROM purged))
     DELETE FROM message_media
     WHERE conversation_id = $1 AND message_id IN (SELECT id FROM purged)";

/// The account's username; `None` for no such account (its acks and reads
/// are refused for membership before this is needed).
async fn username<C: GenericClient>(db: &C, account: AccountId) -> Outcome<Option<String>> {
    row(
        db,
        "SELECT username FROM accounts WHERE id = $1",
        &[&account.0],
    )
    .await?
    .map(|found| found.try_get(0).map_err(Fault::from))
    .transpose()
}

/// The name a moved cursor is reported under.
fn reporter(username: &Option<String>, account: AccountId) -> Outcome<String> {
    username
        .clone()
        .ok_or_else(|| Fault::Corrupt(format!("member account {} has no username", account.0)))
}

/// The devices of the members other than `$2` who wrote a text in
/// `($3, $4]` of conversation `$1`: those whose ticks change when `$2`'s
/// read pointer moves over that range.
const READ_NOTIFY: &str =
    "SELECT d.id FROM members mb JOIN devices d ON d.account_id = mb.account_id
     WHERE mb.conversation_id = $1 AND mb.account_id <> $2 AND mb.account_id IN (
         SELECT g.sender_account FROM messages g
         WHERE g.conversation_id = $1 AND g.seq > $3 AND g.seq <= $4 AND g.kind IN ($5::smallint, 5))
     ORDER BY d.id";

pub(super) async fn mark_read<C: GenericClient>(
    db: &C,
    read: &ReadRequest,
) -> Outcome<ReadOutcome> {
    // The member row is locked so another device of the account, moving
    // the pointer at the same moment on another node, is seen, and the
    // range told about is exactly the one this call covers.
    let (_, pointers, by) = pipeline!(
        check_member(db, read.conversation, read.account),
        row(
            db,
            "SELECT m.read_seq, c.last_seq FROM members m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = $1 AND m.account_id = $2 FOR NO KEY UPDATE OF m",
            &[&read.conversation.0, &read.account.0],
        ),
        username(db, read.account),
    )?;
    let pointers = pointers.ok_or(Fault::Raced)?;
    let (current, last_seq): (Seq, Seq) = (pointers.try_get(0)?, pointers.try_get(1)?);
    let target = read.seq.min(last_seq);
    if target <= current {
        return Ok(ReadOutcome {
            seq: current,
            moved: None,
        });
    }
    let (_, notify) = pipeline!(
        execute(
            db,
            "UPDATE members SET read_seq = $3, read_ms = $4
             WHERE conversation_id = $1 AND account_id = $2",
            &[&read.conversation.0, &read.account.0, &target, &read.now_ms],
        ),
        rows(
            db,
            READ_NOTIFY,
            &[
                &read.conversation.0,
                &read.account.0,
                &current,
                &target,
                &EVENT_TEXT,
            ],
        ),
    )?;
    let notify = notify
        .iter()
        .map(|row| Ok(DeviceId(row.try_get(0)?)))
        .collect::<Outcome<_>>()?;
    Ok(ReadOutcome {
        seq: target,
        moved: Some(ReceiptMoved {
            conversation: read.conversation,
            by: reporter(&by, read.account)?,
            seq: target,
            ts_ms: read.now_ms,
            notify,
        }),
    })
}

/// Events above the devices' positions in their accounts' conversations,
/// summed (their own and expired ones included).
const WAITING: &str = "SELECT COALESCE(sum(GREATEST(0,
            c.last_seq - GREATEST(m.joined_seq, COALESCE(p.seq, 0)))), 0)::bigint
     FROM devices d JOIN members m ON m.account_id = d.account_id
     JOIN conversations c ON c.id = m.conversation_id
     LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = m.conversation_id";

pub(super) async fn waiting<C: GenericClient>(db: &C, device: DeviceId) -> Outcome<u64> {
    let n: i64 = scalar(db, &format!("{WAITING} WHERE d.id = $1"), &[&device.0]).await?;
    unsigned(n, "waiting count")
}

/// The devices of `$1` for which another device's event waits above a
/// position (see `MessageStore::behind`), in their memberships and, up to the seq
/// of their leaving, their departures (as `STREAMS` reads them): index
/// lookups per membership, and for the few behind, a range of `messages`
/// up to the first event not the device's own.
const BEHIND: &str = "SELECT DISTINCT d.id FROM devices d
     JOIN (SELECT m.account_id, m.conversation_id, m.joined_seq, c.last_seq AS end_seq
           FROM members m JOIN conversations c ON c.id = m.conversation_id
           UNION ALL
           SELECT account_id, conversation_id, joined_seq, left_seq FROM departures) s
       ON s.account_id = d.account_id
     LEFT JOIN positions p ON p.device_id = d.id AND p.conversation_id = s.conversation_id
     WHERE d.id = ANY($1) AND s.end_seq > GREATEST(s.joined_seq, COALESCE(p.seq, 0))
       AND EXISTS (SELECT 1 FROM messages e
                   WHERE e.conversation_id = s.conversation_id
                     AND e.seq > GREATEST(s.joined_seq, COALESCE(p.seq, 0))
                     AND e.seq <= s.end_seq
                     AND e.sender_device <> d.id)";

pub(super) async fn behind<C: GenericClient>(
    db: &C,
    devices: &[DeviceId],
) -> Outcome<Vec<DeviceId>> {
    let ids: Vec<i64> = devices.iter().map(|device| device.0).collect();
    let found: Vec<i64> = column(db, BEHIND, &[&ids]).await?;
    Ok(found.into_iter().map(DeviceId).collect())
}

pub(super) async fn waiting_total<C: GenericClient>(db: &C) -> Outcome<u64> {
    let n: i64 = scalar(db, WAITING, &[]).await?;
    unsigned(n, "waiting count")
}
