//! Sends, many to a transaction (`sender.rs`, `batcher.rs` gather them):
//! one commit and two round trips carry a whole batch, in statements whose
//! number does not grow with the batch (each takes arrays, one element per
//! send); only reactions, edits, deletes, replies and media add statements
//! of their own. Each send still gets its own answer: a refused send
//! writes nothing and takes no seq; the others of its batch commit. A send
//! writes its event row, its effect on a target, and the conversation's
//! `last_seq`: nothing per recipient, and no lock on any device row.
//!
//! A batch runs in two pipelined rounds:
//! 1. **Locks, then what the checks need.** The locks, in the order every
//!    transaction takes them (module doc of `postgres`): the conversation
//!    rows (ascending, reading `last_seq`), then the message rows that
//!    reactions, edits and deletes change (a delete also purges the
//!    target's edit events). All are held before any check, so two batches
//!    wait for each other but cannot deadlock over them, whatever sends
//!    they mix. Then, each statement seeing what committed before it
//!    started: the earlier sends with the batch's dedup keys (so a retry
//!    into the same conversation that committed while this batch waited is
//!    seen), where each sender stands (member, departed, blocked), the
//!    targets and the media. The sends that pass are numbered from
//!    `last_seq` in batch order.
//! 2. **Writes**: the effects on targets, the event rows in seq order, the
//!    media links, the new `last_seq` of each conversation, and who each
//!    event is for (read, not written).
//!
//! A retry racing its original into *another* conversation is not
//! serialized by a conversation lock: its insert waits on the dedup key
//! (the unique index) until the original commits, then finds it taken, and
//! the whole batch runs again (its numbering assumed that send stored); the
//! second run answers it as a duplicate.
//!
//! Two sends that could see each other inside one transaction never share a
//! batch (`sender.rs` keeps them apart): the same dedup key, or a reaction,
//! edit or delete of the same message (a reply only reads its target). A
//! send cannot refer to another of its batch otherwise: a message id
//! reaches clients only after its commit.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, DeviceId, MessageId};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::conversations::refusal;
use super::fault::{Fault, Outcome};
use super::media::{attach_media, check_own_media};
use super::sql::{Step, execute, in_order, only_if, pipeline, row, rows};
use crate::StoreError;
use crate::model::*;
use crate::rules::{self, EVENT_EDIT, EVENT_TEXT, Plan, Target};

/// One send's answer.
pub(super) type Answer = Result<Appended, StoreError>;

const LOCK_CONVERSATIONS: &str = "SELECT id, last_seq, last_ts_ms,
            (extract(epoch FROM clock_timestamp()) * 1000)::bigint, encrypted, disappear_secs
     FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// How far ahead of the database's clock a node may stamp an event. An
/// event's time also floors every later one in its conversation, so a node
/// whose clock jumped ahead (between two measurements of its offset) must
/// not pin a conversation's times in the future: past this, the database's
/// clock (plus this) is stamped instead.
pub(super) const AHEAD_MAX_MS: i64 = 1_000;
/// The rows reactions, edits and deletes change: each target (in the
/// send's own conversation) and, for a delete, the edit events it purges.
/// Holding them keeps a purge (ack or sweep) from emptying a target between
/// its check and the send's commit.
const LOCK_CHANGED_MESSAGES: &str = "SELECT 1 FROM (
         SELECT m.id FROM unnest($1::text[], $2::bigint[], $3::bool[]) AS t(target, conversation_id, purge)
         JOIN messages m ON m.conversation_id = t.conversation_id
          AND (m.id = t.target OR (t.purge AND m.kind = $4 AND m.target_id = t.target))
         ORDER BY m.id FOR UPDATE OF m
     ) locked";
/// The stored sends with the batch's dedup keys (system events have none).
/// One index probe per key, whatever the statistics say: `OFFSET 0` keeps
/// the planner from turning the lateral lookup into a join that a plan
/// made on a young, unanalyzed table runs as a scan of every message.
const EARLIER_SENDS: &str =
    "SELECT m.sender_device, m.client_msg_id, m.id, m.conversation_id, m.seq, m.created_ms,
            m.fingerprint, m.expires_ms
     FROM unnest($1::bigint[], $2::text[]) AS k(sender_device, client_msg_id)
     CROSS JOIN LATERAL (
         SELECT * FROM messages m
         WHERE m.sender_device = k.sender_device AND m.client_msg_id = k.client_msg_id
           AND m.client_msg_id <> ''
         OFFSET 0) m";
/// Per (conversation, account) a send comes from: a member, one who left
/// or was removed, and, in a 1:1, a block either way between the two.
const CHECKS: &str = "SELECT k.conversation_id, k.account_id,
            EXISTS (SELECT 1 FROM members m
                    WHERE m.conversation_id = k.conversation_id AND m.account_id = k.account_id),
            EXISTS (SELECT 1 FROM departures x
                    WHERE x.conversation_id = k.conversation_id AND x.account_id = k.account_id),
            EXISTS (SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id
                    JOIN blocks b ON (b.blocker_id = m.account_id AND b.blocked_id = k.account_id)
                                  OR (b.blocker_id = k.account_id AND b.blocked_id = m.account_id)
                    WHERE c.id = k.conversation_id AND c.kind = 0 AND m.account_id <> k.account_id)
     FROM unnest($1::bigint[], $2::bigint[]) AS k(conversation_id, account_id)";
const TEXT_TARGET: &str = "SELECT m.sender_account, m.created_ms, m.deleted, m.seq FROM messages m
     JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = $4
     WHERE m.id = $1 AND m.conversation_id = $2 AND m.kind IN ($3::smallint, 5) AND m.seq > mb.joined_seq
       AND m.body IS NOT NULL";
const SET_LAST_SEQS: &str =
    "UPDATE conversations c SET last_seq = u.last_seq, last_ts_ms = u.last_ts
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, last_seq, last_ts)
     WHERE c.id = u.id";
/// The batch's event rows, in seq order. Waits on a dedup key while
/// another transaction holds it; stores nothing for it (and returns no row)
/// if that one committed it.
const INSERT_MESSAGES: &str = "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind, target_id, fingerprint, expires_ms)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                          $6::text[], $7::text[], $8::bigint[], $9::smallint[], $10::text[],
                          $11::bigint[], $12::bigint[])
     ON CONFLICT (sender_device, client_msg_id) WHERE client_msg_id <> '' DO NOTHING
     RETURNING seq";
/// Per audience (conversation, joined before): the devices of the members
/// who joined before it: everyone for a new message, those who saw the
/// target for an event about one.
///
/// Each lookup by its index (`OFFSET 0` keeps it a nested loop): planned
/// on a young, unanalyzed `devices` table, a join became a scan of every
/// device per send, 0.25 ms against 0.016 ms (BENCHMARKS.md "Issue 15,
/// fourth pass").
const RECIPIENTS: &str = "SELECT a.conversation_id, a.joined_before, d.id
     FROM unnest($1::bigint[], $2::bigint[]) AS a(conversation_id, joined_before)
     CROSS JOIN LATERAL (SELECT account_id FROM members
                         WHERE conversation_id = a.conversation_id
                           AND joined_seq < a.joined_before OFFSET 0) m
     CROSS JOIN LATERAL (SELECT id FROM devices WHERE account_id = m.account_id OFFSET 0) d
     ORDER BY 1, 2, 3";
const SET_REACTION: &str =
    "INSERT INTO reactions (message_id, account_id, emoji, updated_ms, conversation_id)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (conversation_id, message_id, account_id)
     DO UPDATE SET emoji = excluded.emoji, updated_ms = excluded.updated_ms";
const CLEAR_REACTION: &str =
    "DELETE FROM reactions WHERE message_id = $1 AND account_id = $2 AND conversation_id = $3";
// The statements on a target name its conversation (the send's: `plan`
// refused a target elsewhere) as well as its id, so that with `messages`
// sharded by conversation each goes to one shard (docs/CLUSTER.md).
const EDIT_TEXT: &str =
    "UPDATE messages SET body = $2, edited_ms = $3 WHERE id = $1 AND conversation_id = $4";
const TOMBSTONE: &str =
    "UPDATE messages SET body = '', deleted = true WHERE id = $1 AND conversation_id = $2";
/// A purged edit event stays purged (NULL): it is not brought back as an
/// empty one.
const PURGE_EDITS: &str = "UPDATE messages SET body = ''
     WHERE target_id = $1 AND conversation_id = $3 AND kind = $2 AND body IS NOT NULL";
const PURGE_REACTIONS: &str =
    "DELETE FROM reactions WHERE message_id = $1 AND conversation_id = $2";
const PURGE_MEDIA_LINKS: &str =
    "DELETE FROM message_media WHERE message_id = $1 AND conversation_id = $2";

/// Stores `sends` in the transaction `db`, answering each in order. An
/// error concerns the whole batch (the transaction is then rolled back).
pub(super) async fn append_batch<C: GenericClient>(
    db: &C,
    sends: &[&NewMessage],
) -> Outcome<Vec<Answer>> {
    let found = find(db, sends).await?;
    let Numbered {
        mut answers,
        accepted,
        last_seq,
    } = number(sends, found)?;
    if accepted.is_empty() {
        return settle(answers);
    }

    let recipients = write(db, sends, &accepted, &last_seq).await?;
    for Accepted { send, last, plan } in accepted {
        let message = sends[send];
        let mut devices = recipients
            .get(&audience(message, &plan))
            .cloned()
            .unwrap_or_default();
        devices.retain(|device| *device != message.sender_device);
        answers[send] = Some(Ok(Appended {
            message_id: message.message_id.clone(),
            conversation: message.conversation,
            seq: last.seq,
            ts_ms: last.ts_ms,
            expires_ms: rules::expiry(last.ts_ms, last.disappear_secs),
            duplicate: false,
            recipients: devices,
        }));
    }
    settle(answers)
}

/// Every send answered, in batch order.
fn settle(answers: Vec<Option<Answer>>) -> Outcome<Vec<Answer>> {
    answers
        .into_iter()
        .map(|answer| answer.ok_or(Fault::Raced))
        .collect()
}

/// The batch judged: an answer for each send already settled (a duplicate
/// or a refusal; `None` for the accepted), the accepted sends, and each
/// conversation's last event once they are numbered.
struct Numbered {
    answers: Vec<Option<Answer>>,
    accepted: Vec<Accepted>,
    last_seq: HashMap<i64, Last>,
}

/// Judges each send in batch order and numbers the ones that pass.
fn number(sends: &[&NewMessage], found: Found) -> Outcome<Numbered> {
    let mut last_seq = found.last_seq;
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(sends.len());
    let mut accepted: Vec<Accepted> = Vec::new();
    for (i, (message, target)) in sends.iter().zip(found.targets).enumerate() {
        let key = (
            message.sender_device.0,
            message.client_msg_id.as_str().to_owned(),
        );
        if let Some((earlier, stored)) = found.earlier.get(&key) {
            answers.push(Some(match stored {
                Some(stored) if *stored != rules::fingerprint(message) => {
                    Err(StoreError::ClientMsgIdReused)
                }
                _ => Ok(earlier.clone()),
            }));
            continue;
        }
        let standing = found
            .standing
            .get(&(message.conversation.0, message.sender_account.0))
            .copied()
            .ok_or(Fault::Raced)?;
        let checks = Checks {
            standing,
            target,
            own_media: found.media_refused[i].clone(),
        };
        let last = last_seq.get_mut(&message.conversation.0);
        let encrypted = last.as_ref().map(|last| last.encrypted);
        match (judge(message, encrypted, checks)?, last) {
            (Ok(plan), Some(last)) => {
                // Never earlier than the conversation's event before it,
                // nor far ahead of the database's clock.
                let now_ms = message
                    .now_ms
                    .min(found.clock_ms.saturating_add(AHEAD_MAX_MS));
                *last = Last {
                    seq: last.seq + 1,
                    ts_ms: now_ms.max(last.ts_ms),
                    encrypted: last.encrypted,
                    disappear_secs: last.disappear_secs,
                };
                accepted.push(Accepted {
                    send: i,
                    last: *last,
                    plan,
                });
                answers.push(None);
            }
            // `judge` refuses a send to a conversation that does not exist.
            (Ok(_), None) => return Err(Fault::Raced),
            (Err(refused), _) => answers.push(Some(Err(refused))),
        }
    }
    Ok(Numbered {
        answers,
        accepted,
        last_seq,
    })
}

/// (conversation, joined before): whose devices an accepted send is for.
fn audience(message: &NewMessage, plan: &Plan) -> (i64, i64) {
    (message.conversation.0, plan.about_seq.unwrap_or(i64::MAX))
}

/// Where a sender stands in a conversation.
#[derive(Clone, Copy)]
struct Standing {
    member: bool,
    /// Left or was removed (`NotMember` rather than `UnknownConversation`).
    departed: bool,
    blocked: bool,
}

/// A conversation's last event: its seq and time; whether its messages
/// must be ciphertext, and its disappearing timer.
#[derive(Clone, Copy)]
struct Last {
    seq: i64,
    ts_ms: i64,
    encrypted: bool,
    disappear_secs: i64,
}

/// A send that passed its checks: its index in the batch, its event's seq
/// and time, and what it writes.
struct Accepted {
    send: usize,
    last: Last,
    plan: Plan,
}

/// What round 1 found.
struct Found {
    /// The last event of each conversation that exists.
    last_seq: HashMap<i64, Last>,
    /// The database's clock when the conversations were locked (0 when
    /// none exists: then nothing is stamped).
    clock_ms: i64,
    /// The stored sends with the batch's dedup keys, with the fingerprint
    /// each was stored with (none before it existed).
    earlier: HashMap<(i64, String), (Appended, Option<i64>)>,
    /// By (conversation, sender account).
    standing: HashMap<(i64, i64), Standing>,
    /// Per send: the text it refers to, as its sender may see it.
    targets: Vec<Option<Row>>,
    /// Per send: `Refused(UnknownMedia)` unless the sender uploaded every
    /// attachment.
    media_refused: Vec<Result<(), StoreError>>,
}

/// The messages the batch's reactions, edits and deletes change, as
/// (target, conversation, purged by a delete), in lock order.
fn changed_messages<'a>(sends: &[&'a NewMessage]) -> Vec<(&'a str, i64, bool)> {
    let mut changes: Vec<(&str, i64, bool)> = sends
        .iter()
        .filter_map(|m| match &m.body {
            Body::Text { .. } | Body::Encrypted { .. } => None,
            Body::Reaction { target, .. } | Body::Edit { target, .. } => {
                Some((target.as_str(), m.conversation.0, false))
            }
            Body::Delete { target } => Some((target.as_str(), m.conversation.0, true)),
        })
        .collect();
    changes.sort_unstable();
    changes
}

/// Round 1: the locks, in the order every transaction takes them, then
/// what the checks need, read after the locks are held (READ COMMITTED: a
/// statement sees what committed before it started, so a statement that
/// waited for a lock is followed by ones that see the winner's writes).
async fn find<C: GenericClient>(db: &C, sends: &[&NewMessage]) -> Outcome<Found> {
    let conversations: Vec<i64> = sends
        .iter()
        .map(|m| m.conversation.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let changes = changed_messages(sends);
    let changed: Vec<&str> = changes.iter().map(|c| c.0).collect();
    let changed_in: Vec<i64> = changes.iter().map(|c| c.1).collect();
    let purged: Vec<bool> = changes.iter().map(|c| c.2).collect();
    let devices: Vec<i64> = sends.iter().map(|m| m.sender_device.0).collect();
    let client_ids: Vec<&str> = sends.iter().map(|m| m.client_msg_id.as_str()).collect();
    let senders: BTreeSet<(i64, i64)> = sends
        .iter()
        .map(|m| (m.conversation.0, m.sender_account.0))
        .collect();
    let sender_conversations: Vec<i64> = senders.iter().map(|k| k.0).collect();
    let sender_accounts: Vec<i64> = senders.iter().map(|k| k.1).collect();
    let targets: Vec<Step<'_, Option<Row>>> = sends
        .iter()
        .map(|message| -> Step<'_, Option<Row>> {
            Box::pin(async move {
                match rules::target_of(&message.body) {
                    Some(target) => text_target(db, message, target).await,
                    None => Ok(None),
                }
            })
        })
        .collect();
    let media: Vec<Step<'_, Result<(), StoreError>>> = sends
        .iter()
        .map(|message| -> Step<'_, Result<(), StoreError>> {
            Box::pin(async move {
                let encrypted = matches!(message.body, Body::Encrypted { .. });
                let media = message.body.media();
                match check_own_media(db, media, message.sender_account, encrypted).await {
                    Err(Fault::Refused(refused)) => Ok(Err(refused)),
                    other => other.map(Ok),
                }
            })
        })
        .collect();
    let (locked, _, earlier, standing, targets, media_refused) = pipeline!(
        rows(db, LOCK_CONVERSATIONS, &[&conversations]),
        only_if(
            !changes.is_empty(),
            execute(
                db,
                LOCK_CHANGED_MESSAGES,
                &[&changed, &changed_in, &purged, &EVENT_EDIT],
            ),
        ),
        rows(db, EARLIER_SENDS, &[&devices, &client_ids]),
        rows(db, CHECKS, &[&sender_conversations, &sender_accounts]),
        in_order(targets),
        in_order(media),
    )?;
    Found::from_rows(&locked, &earlier, &standing, targets, media_refused)
}

impl Found {
    /// Round 1's rows read into what the checks use.
    fn from_rows(
        locked: &[Row],
        earlier: &[Row],
        standing: &[Row],
        targets: Vec<Option<Row>>,
        media_refused: Vec<Result<(), StoreError>>,
    ) -> Outcome<Self> {
        let clock_ms = match locked.first() {
            Some(row) => row.try_get(3)?,
            None => 0,
        };
        let last_seq = locked
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    Last {
                        seq: row.try_get(1)?,
                        ts_ms: row.try_get(2)?,
                        encrypted: row.try_get(4)?,
                        disappear_secs: row.try_get(5)?,
                    },
                ))
            })
            .collect::<Outcome<_>>()?;
        let earlier = earlier
            .iter()
            .map(|row| {
                Ok((
                    (row.try_get(0)?, row.try_get(1)?),
                    (earlier_send(row)?, row.try_get(6)?),
                ))
            })
            .collect::<Outcome<_>>()?;
        let standing = standing
            .iter()
            .map(|row| {
                Ok((
                    (row.try_get(0)?, row.try_get(1)?),
                    Standing {
                        member: row.try_get(2)?,
                        departed: row.try_get(3)?,
                        blocked: row.try_get(4)?,
                    },
                ))
            })
            .collect::<Outcome<_>>()?;
        Ok(Found {
            last_seq,
            clock_ms,
            earlier,
            standing,
            targets,
            media_refused,
        })
    }
}

struct Checks {
    standing: Standing,
    target: Option<Row>,
    own_media: Result<(), StoreError>,
}

/// The send's plan, or why it is refused (in the embedded store's order of
/// refusals); an error is a fault of the whole batch. `encrypted` is the
/// conversation's mode, `None` when it does not exist.
fn judge(
    message: &NewMessage,
    encrypted: Option<bool>,
    checks: Checks,
) -> Outcome<Result<Plan, StoreError>> {
    let Some(encrypted) = encrypted else {
        return Ok(Err(StoreError::UnknownConversation));
    };
    if let Some(refused) = refusal(checks.standing.departed, checks.standing.member) {
        return Ok(Err(refused));
    }
    if checks.standing.blocked {
        return Ok(Err(StoreError::Blocked));
    }
    if let Err(refused) = rules::check_encryption(encrypted, &message.body) {
        return Ok(Err(refused));
    }
    let target = match (rules::target_of(&message.body), checks.target) {
        (Some(_), None) => return Ok(Err(StoreError::UnknownMessage)),
        (Some(_), Some(found)) => Some(target_from_row(&found)?),
        (None, _) => None,
    };
    let plan = match rules::plan(message, target.as_ref()) {
        Ok(plan) => plan,
        Err(refused) => return Ok(Err(refused)),
    };
    match checks.own_media {
        Ok(()) => Ok(Ok(plan)),
        Err(refused) => Ok(Err(refused)),
    }
}

/// Round 2, everything the accepted sends write: the effects on their
/// targets, their rows (in seq order), their media links, each
/// conversation's new `last_seq`; and who each event is for (read, not
/// written), by audience.
async fn write<C: GenericClient>(
    db: &C,
    sends: &[&NewMessage],
    accepted: &[Accepted],
    last_seq: &HashMap<i64, Last>,
) -> Outcome<HashMap<(i64, i64), Vec<DeviceId>>> {
    let mut rows_of = InsertColumns::default();
    for accepted in accepted {
        rows_of.push(sends[accepted.send], accepted.last, &accepted.plan);
    }
    let used: BTreeSet<i64> = accepted
        .iter()
        .map(|accepted| sends[accepted.send].conversation.0)
        .collect();
    let used_last: Vec<Last> = used
        .iter()
        .map(|conversation| last_seq.get(conversation).copied().ok_or(Fault::Raced))
        .collect::<Outcome<_>>()?;
    let used_seqs: Vec<i64> = used_last.iter().map(|last| last.seq).collect();
    let used_ts: Vec<i64> = used_last.iter().map(|last| last.ts_ms).collect();
    let used: Vec<i64> = used.into_iter().collect();
    let audiences: BTreeSet<(i64, i64)> = accepted
        .iter()
        .map(|accepted| audience(sends[accepted.send], &accepted.plan))
        .collect();
    let audience_conversations: Vec<i64> = audiences.iter().map(|a| a.0).collect();
    let audience_joined: Vec<i64> = audiences.iter().map(|a| a.1).collect();
    let effects: Vec<Step<'_, ()>> = accepted
        .iter()
        .map(|accepted| -> Step<'_, ()> {
            Box::pin(apply_effect(db, sends[accepted.send], &accepted.plan))
        })
        .collect();
    let attachments: Vec<Step<'_, ()>> = accepted
        .iter()
        .map(|accepted| -> Step<'_, ()> {
            let message = sends[accepted.send];
            Box::pin(attach_media(
                db,
                message.message_id.as_str(),
                message.conversation,
                accepted.last.seq,
                message.body.media(),
            ))
        })
        .collect();
    let (_, inserted, _, _, found) = pipeline!(
        in_order(effects),
        rows(db, INSERT_MESSAGES, &rows_of.params()),
        in_order(attachments),
        execute(db, SET_LAST_SEQS, &[&used, &used_seqs, &used_ts]),
        rows(db, RECIPIENTS, &[&audience_conversations, &audience_joined]),
    )?;
    // A dedup key another transaction stored meanwhile (a retry into
    // another conversation, on another node) is a lost race: the batch's
    // numbering assumed the send is stored.
    if inserted.len() != accepted.len() {
        return Err(Fault::Raced);
    }
    let mut recipients: HashMap<(i64, i64), Vec<DeviceId>> = HashMap::new();
    for row in &found {
        recipients
            .entry((row.try_get(0)?, row.try_get(1)?))
            .or_default()
            .push(DeviceId(row.try_get(2)?));
    }
    Ok(recipients)
}

/// The columns of `INSERT_MESSAGES`, one entry per accepted send.
#[derive(Default)]
struct InsertColumns<'a> {
    ids: Vec<&'a str>,
    conversations: Vec<i64>,
    seqs: Vec<i64>,
    accounts: Vec<i64>,
    devices: Vec<i64>,
    client_ids: Vec<&'a str>,
    bodies: Vec<&'a str>,
    created: Vec<i64>,
    kinds: Vec<i16>,
    targets: Vec<Option<&'a str>>,
    fingerprints: Vec<i64>,
    expiries: Vec<Option<i64>>,
}

impl<'a> InsertColumns<'a> {
    fn push(&mut self, message: &'a NewMessage, last: Last, plan: &'a Plan) {
        self.ids.push(message.message_id.as_str());
        self.conversations.push(message.conversation.0);
        self.seqs.push(last.seq);
        self.accounts.push(message.sender_account.0);
        self.devices.push(message.sender_device.0);
        self.client_ids.push(message.client_msg_id.as_str());
        self.bodies.push(&plan.body);
        self.created.push(last.ts_ms);
        self.kinds.push(plan.kind);
        self.targets.push(plan.target.as_deref());
        self.fingerprints.push(rules::fingerprint(message));
        self.expiries
            .push(rules::expiry(last.ts_ms, last.disappear_secs));
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.ids,
            &self.conversations,
            &self.seqs,
            &self.accounts,
            &self.devices,
            &self.client_ids,
            &self.bodies,
            &self.created,
            &self.kinds,
            &self.targets,
            &self.fingerprints,
            &self.expiries,
        ]
    }
}

/// The answer to a retry: the first send's id, seq and time (its body may
/// be purged since; the row stays for this).
fn earlier_send(found: &Row) -> Outcome<Appended> {
    Ok(Appended {
        message_id: MessageId::from_stored(found.try_get(2)?),
        conversation: ConversationId(found.try_get(3)?),
        seq: found.try_get(4)?,
        ts_ms: found.try_get(5)?,
        expires_ms: found.try_get(7)?,
        duplicate: true,
        recipients: Vec::new(),
    })
}

/// The message an event changes or annotates (a reaction, an edit, a
/// delete); two such events about one message must not share a batch.
pub(super) fn changed_target(body: &Body) -> Option<&MessageId> {
    match body {
        Body::Text { .. } | Body::Encrypted { .. } => None,
        Body::Reaction { target, .. } | Body::Edit { target, .. } | Body::Delete { target } => {
            Some(target)
        }
    }
}

/// The text message an event refers to, as its sender may see it (sent
/// after the sender joined), from a `TEXT_TARGET` row.
fn target_from_row(row: &Row) -> Outcome<Target> {
    Ok(Target {
        author: AccountId(row.try_get(0)?),
        created_ms: row.try_get(1)?,
        deleted: row.try_get(2)?,
        seq: row.try_get(3)?,
    })
}

async fn text_target<C: GenericClient>(
    db: &C,
    message: &NewMessage,
    target: &MessageId,
) -> Outcome<Option<Row>> {
    row(
        db,
        TEXT_TARGET,
        &[
            &target.as_str(),
            &message.conversation.0,
            &EVENT_TEXT,
            &message.sender_account.0,
        ],
    )
    .await
}

/// The event's effect on its target: the reaction row, the edited text, or
/// the tombstone.
async fn apply_effect<C: GenericClient>(db: &C, message: &NewMessage, plan: &Plan) -> Outcome<()> {
    let sender = message.sender_account.0;
    match &message.body {
        Body::Text { .. } | Body::Encrypted { .. } => {}
        Body::Reaction {
            target,
            emoji: Some(emoji),
        } => {
            execute(
                db,
                SET_REACTION,
                &[
                    &target.as_str(),
                    &sender,
                    emoji,
                    &message.now_ms,
                    &message.conversation.0,
                ],
            )
            .await?;
        }
        Body::Reaction {
            target,
            emoji: None,
        } => {
            execute(
                db,
                CLEAR_REACTION,
                &[&target.as_str(), &sender, &message.conversation.0],
            )
            .await?;
        }
        Body::Edit { target, .. } => {
            execute(
                db,
                EDIT_TEXT,
                &[
                    &target.as_str(),
                    &plan.body,
                    &message.now_ms,
                    &message.conversation.0,
                ],
            )
            .await?;
        }
        Body::Delete { target } => {
            // Purge the text everywhere it is stored: the message, the edit
            // events that carried later versions of it, its reactions, and
            // its media's link to the conversation.
            let (target, conversation) = (target.as_str(), message.conversation.0);
            pipeline!(
                execute(db, TOMBSTONE, &[&target, &conversation]),
                execute(db, PURGE_EDITS, &[&target, &EVENT_EDIT, &conversation],),
                execute(db, PURGE_REACTIONS, &[&target, &conversation]),
                execute(db, PURGE_MEDIA_LINKS, &[&target, &conversation]),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
