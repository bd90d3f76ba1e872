//! Sends, many to a transaction (`sender.rs`, `batcher.rs` gather them): one commit and
//! five round trips carry a whole batch, and each send still gets its own
//! answer. A refused send writes nothing and takes no seq; the others of its
//! batch commit. A send writes its event row, its effect on a target, and
//! the conversation's `last_seq`: nothing per recipient, and no lock on any
//! device row.
//!
//! A batch runs in three pipelined rounds:
//! 1. **Locks and retries**, in the order every transaction takes them
//!    (module doc of `postgres`): the conversation rows (ascending, reading
//!    `last_seq`), then the message rows that reactions, edits and deletes
//!    change (a delete also purges the target's edit events). All are held
//!    before any check, so two batches wait for each other but cannot
//!    deadlock over them, whatever sends they mix. Then the earlier sends with the
//!    batch's dedup keys: read after the conversation locks, so a retry
//!    into the same conversation that committed while this batch waited is
//!    seen.
//! 2. **Checks** of each other send against the locked state: membership,
//!    blocks, the target, the media.
//! 3. **Writes**: the sends that passed are numbered from `last_seq` in
//!    batch order; then each one's row and effect, the new `last_seq` of
//!    each conversation, and who each event is for (read, not written).
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

use super::conversations::{has_departed, refusal};
use super::fault::{Fault, Outcome};
use super::media::{attach_media, check_own_media};
use super::sql::{Step, column, execute, in_order, pipeline, row, rows};
use crate::StoreError;
use crate::model::*;
use crate::rules::{self, EVENT_EDIT, EVENT_TEXT, Plan, Target};

/// One send's answer.
pub(super) type Answer = Result<Appended, StoreError>;

const LOCK_CONVERSATIONS: &str =
    "SELECT id, last_seq FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";
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
            m.fingerprint
     FROM unnest($1::bigint[], $2::text[]) AS k(sender_device, client_msg_id)
     CROSS JOIN LATERAL (
         SELECT * FROM messages m
         WHERE m.sender_device = k.sender_device AND m.client_msg_id = k.client_msg_id
           AND m.client_msg_id <> ''
         OFFSET 0) m";
const IS_MEMBER: &str = "SELECT 1 FROM members WHERE conversation_id = $1 AND account_id = $2";
const IS_BLOCKED: &str = "SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id
     JOIN blocks b ON (b.blocker_id = m.account_id AND b.blocked_id = $2)
                   OR (b.blocker_id = $2 AND b.blocked_id = m.account_id)
     WHERE c.id = $1 AND c.kind = 0 AND m.account_id <> $2 LIMIT 1";
const TEXT_TARGET: &str = "SELECT m.sender_account, m.created_ms, m.deleted, m.seq FROM messages m
     JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = $4
     WHERE m.id = $1 AND m.conversation_id = $2 AND m.kind = $3 AND m.seq > mb.joined_seq
       AND m.body IS NOT NULL";
const SET_LAST_SEQ: &str = "UPDATE conversations SET last_seq = $2 WHERE id = $1";
/// Waits on the dedup key while another transaction holds it; stores
/// nothing (and returns no row) if that one committed it.
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind, target_id, fingerprint)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (sender_device, client_msg_id) WHERE client_msg_id <> '' DO NOTHING
     RETURNING seq";
/// The devices of the members who joined before `$2`: everyone for a new
/// message, those who saw the target for an event about one.
///
/// Each member's devices by their index (`OFFSET 0` keeps the lookup a
/// nested loop): planned on a young, unanalyzed `devices` table, the join
/// became a scan of every device per send, 0.25 ms against 0.016 ms
/// (BENCHMARKS.md "Issue 15, fourth pass").
const RECIPIENTS: &str = "SELECT d.id FROM members m
     CROSS JOIN LATERAL (SELECT id FROM devices WHERE account_id = m.account_id OFFSET 0) d
     WHERE m.conversation_id = $1 AND m.joined_seq < $2 ORDER BY d.id";
const SET_REACTION: &str =
    "INSERT INTO reactions (message_id, account_id, emoji, updated_ms) VALUES ($1, $2, $3, $4)
     ON CONFLICT (message_id, account_id)
     DO UPDATE SET emoji = excluded.emoji, updated_ms = excluded.updated_ms";
const CLEAR_REACTION: &str = "DELETE FROM reactions WHERE message_id = $1 AND account_id = $2";
const EDIT_TEXT: &str = "UPDATE messages SET body = $2, edited_ms = $3 WHERE id = $1";
const TOMBSTONE: &str = "UPDATE messages SET body = '', deleted = true WHERE id = $1";
/// A purged edit event stays purged (NULL): it is not brought back as an
/// empty one.
const PURGE_EDITS: &str =
    "UPDATE messages SET body = '' WHERE target_id = $1 AND kind = $2 AND body IS NOT NULL";
const PURGE_REACTIONS: &str = "DELETE FROM reactions WHERE message_id = $1";
const PURGE_MEDIA_LINKS: &str = "DELETE FROM message_media WHERE message_id = $1";

/// Stores `sends` in the transaction `db`, answering each in order. An
/// error concerns the whole batch (the transaction is then rolled back).
pub(super) async fn append_batch<C: GenericClient>(
    db: &C,
    sends: &[&NewMessage],
) -> Outcome<Vec<Answer>> {
    let locked = lock_everything(db, sends).await?;
    let checked = check_all(db, sends, &locked.earlier).await?;

    // Judge each send in batch order; number the ones that pass.
    let mut last_seq = locked.last_seq;
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(sends.len());
    let mut accepted: Vec<(usize, i64, Plan)> = Vec::new();
    for (i, (message, found)) in sends.iter().zip(checked).enumerate() {
        let checks = match found {
            Found::Earlier(earlier) => {
                answers.push(Some(earlier));
                continue;
            }
            Found::Checks(checks) => checks,
        };
        let next_seq = last_seq.get_mut(&message.conversation.0);
        match (judge(message, next_seq.is_some(), checks)?, next_seq) {
            (Ok(plan), Some(seq)) => {
                *seq += 1;
                accepted.push((i, *seq, plan));
                answers.push(None);
            }
            // `judge` refuses a send to a conversation that does not exist.
            (Ok(_), None) => return Err(Fault::Raced),
            (Err(refused), _) => answers.push(Some(Err(refused))),
        }
    }
    if accepted.is_empty() {
        return answers
            .into_iter()
            .map(|answer| answer.ok_or(Fault::Raced))
            .collect();
    }

    // Write: the sends in seq order, then last_seq, then who each is for.
    let mut steps: Vec<Step<'_, Written>> = Vec::new();
    for (i, seq, plan) in &accepted {
        steps.push(Box::pin(async move {
            write_send(db, sends[*i], *seq, plan)
                .await
                .map(|()| Written::Nothing)
        }));
    }
    let used: BTreeSet<i64> = accepted
        .iter()
        .map(|(i, _, _)| sends[*i].conversation.0)
        .collect();
    for conversation in used {
        let seq = last_seq.get(&conversation).copied().ok_or(Fault::Raced)?;
        steps.push(Box::pin(async move {
            execute(db, SET_LAST_SEQ, &[&conversation, &seq])
                .await
                .map(|_| Written::Nothing)
        }));
    }
    // One read per audience: sends into one conversation share it.
    let audiences: BTreeSet<(i64, i64)> = accepted
        .iter()
        .map(|(i, _, plan)| audience(sends[*i], plan))
        .collect();
    for (conversation, joined_before) in audiences.iter().copied() {
        steps.push(Box::pin(async move {
            let devices: Vec<i64> =
                column(db, RECIPIENTS, &[&conversation, &joined_before]).await?;
            Ok(Written::Recipients(
                (conversation, joined_before),
                devices.into_iter().map(DeviceId).collect(),
            ))
        }));
    }
    let mut recipients: HashMap<(i64, i64), Vec<DeviceId>> = HashMap::new();
    for written in in_order(steps).await? {
        if let Written::Recipients(key, devices) = written {
            recipients.insert(key, devices);
        }
    }
    for (i, seq, plan) in accepted {
        let message = sends[i];
        let mut devices = recipients
            .get(&audience(message, &plan))
            .cloned()
            .unwrap_or_default();
        devices.retain(|device| *device != message.sender_device);
        answers[i] = Some(Ok(Appended {
            message_id: message.message_id.clone(),
            conversation: message.conversation,
            seq,
            ts_ms: message.now_ms,
            duplicate: false,
            recipients: devices,
        }));
    }
    answers
        .into_iter()
        .map(|answer| answer.ok_or(Fault::Raced))
        .collect()
}

/// What a step of round 3 returns.
enum Written {
    Nothing,
    /// The devices of one audience (see [`audience`]), ascending.
    Recipients((i64, i64), Vec<DeviceId>),
}

/// (conversation, joined before): whose devices an accepted send is for.
fn audience(message: &NewMessage, plan: &Plan) -> (i64, i64) {
    (message.conversation.0, plan.about_seq.unwrap_or(i64::MAX))
}

/// What round 1 learned: the `last_seq` of each conversation that exists,
/// and the stored sends with the batch's dedup keys.
struct Locked {
    last_seq: HashMap<i64, i64>,
    /// With the fingerprint each was stored with (none before it existed).
    earlier: HashMap<(i64, String), (Appended, Option<i64>)>,
}

async fn lock_everything<C: GenericClient>(db: &C, sends: &[&NewMessage]) -> Outcome<Locked> {
    let conversations: Vec<i64> = sends
        .iter()
        .map(|m| m.conversation.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut changes: Vec<(&str, i64, bool)> = sends
        .iter()
        .filter_map(|m| match &m.body {
            Body::Text { .. } => None,
            Body::Reaction { target, .. } | Body::Edit { target, .. } => {
                Some((target.as_str(), m.conversation.0, false))
            }
            Body::Delete { target } => Some((target.as_str(), m.conversation.0, true)),
        })
        .collect();
    changes.sort_unstable();
    let changed: Vec<&str> = changes.iter().map(|c| c.0).collect();
    let changed_in: Vec<i64> = changes.iter().map(|c| c.1).collect();
    let purged: Vec<bool> = changes.iter().map(|c| c.2).collect();
    let devices: Vec<i64> = sends.iter().map(|m| m.sender_device.0).collect();
    let client_ids: Vec<&str> = sends.iter().map(|m| m.client_msg_id.as_str()).collect();
    let (locked, _, earlier) = pipeline!(
        rows(db, LOCK_CONVERSATIONS, &[&conversations]),
        execute(
            db,
            LOCK_CHANGED_MESSAGES,
            &[&changed, &changed_in, &purged, &EVENT_EDIT],
        ),
        rows(db, EARLIER_SENDS, &[&devices, &client_ids]),
    )?;
    let last_seq = locked
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
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
    Ok(Locked { last_seq, earlier })
}

/// What round 2 found for one send.
enum Found {
    /// A retry: the first send's answer; or its key reused for another
    /// message: refused.
    Earlier(Answer),
    Checks(Checks),
}

struct Checks {
    member: bool,
    /// Left or was removed (`NotMember` rather than `UnknownConversation`).
    departed: bool,
    blocked: bool,
    target: Option<Row>,
    /// `Refused(UnknownMedia)` unless the sender uploaded every attachment.
    own_media: Outcome<()>,
}

async fn check_all<C: GenericClient>(
    db: &C,
    sends: &[&NewMessage],
    earlier: &HashMap<(i64, String), (Appended, Option<i64>)>,
) -> Outcome<Vec<Found>> {
    let steps: Vec<Step<'_, Found>> = sends
        .iter()
        .map(|message| -> Step<'_, Found> {
            let key = (
                message.sender_device.0,
                message.client_msg_id.as_str().to_owned(),
            );
            match earlier.get(&key) {
                Some((earlier, stored)) => {
                    let answer = match stored {
                        Some(stored) if *stored != rules::fingerprint(message) => {
                            Err(StoreError::ClientMsgIdReused)
                        }
                        _ => Ok(earlier.clone()),
                    };
                    Box::pin(async move { Ok(Found::Earlier(answer)) })
                }
                None => Box::pin(async move { Ok(Found::Checks(check(db, message).await?)) }),
            }
        })
        .collect();
    in_order(steps).await
}

async fn check<C: GenericClient>(db: &C, message: &NewMessage) -> Outcome<Checks> {
    let target = rules::target_of(&message.body);
    let media: &[String] = match &message.body {
        Body::Text { media, .. } => media,
        _ => &[],
    };
    let (member, blocked, target, own_media) = pipeline!(
        row(
            db,
            IS_MEMBER,
            &[&message.conversation.0, &message.sender_account.0],
        ),
        row(
            db,
            IS_BLOCKED,
            &[&message.conversation.0, &message.sender_account.0],
        ),
        async {
            match target {
                Some(target) => text_target(db, message, target).await,
                None => Ok(None),
            }
        },
        async {
            match check_own_media(db, media, message.sender_account).await {
                Err(Fault::Refused(refused)) => Ok(Err(Fault::Refused(refused))),
                other => other.map(Ok),
            }
        },
    )?;
    // Only a refused send asks more: whether the sender was a member once.
    let departed =
        member.is_none() && has_departed(db, message.conversation, message.sender_account).await?;
    Ok(Checks {
        member: member.is_some(),
        departed,
        blocked: blocked.is_some(),
        target,
        own_media,
    })
}

/// The send's plan, or why it is refused (in the embedded store's order of
/// refusals); an error is a fault of the whole batch.
fn judge(message: &NewMessage, exists: bool, checks: Checks) -> Outcome<Result<Plan, StoreError>> {
    if !exists {
        return Ok(Err(StoreError::UnknownConversation));
    }
    if let Some(refused) = refusal(checks.departed, checks.member) {
        return Ok(Err(refused));
    }
    if checks.blocked {
        return Ok(Err(StoreError::Blocked));
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
        Err(Fault::Refused(refused)) => Ok(Err(refused)),
        Err(fault) => Err(fault),
    }
}

/// Everything one accepted send writes. A dedup key another transaction
/// stored meanwhile (a retry into another conversation, on another node)
/// is a lost race: this batch's numbering assumed the send is stored.
async fn write_send<'a, C: GenericClient>(
    db: &'a C,
    message: &'a NewMessage,
    seq: i64,
    plan: &'a Plan,
) -> Outcome<()> {
    let message_id = message.message_id.as_str();
    let media: &[String] = match &message.body {
        Body::Text { media, .. } => media,
        _ => &[],
    };
    let ((), inserted, ()) = pipeline!(
        apply_effect(db, message, plan),
        row(
            db,
            INSERT_MESSAGE,
            &[
                &message_id,
                &message.conversation.0,
                &seq,
                &message.sender_account.0,
                &message.sender_device.0,
                &message.client_msg_id.as_str(),
                &plan.body,
                &message.now_ms,
                &plan.kind,
                &plan.target,
                &rules::fingerprint(message),
            ],
        ),
        attach_media(db, message_id, message.conversation, seq, media),
    )?;
    match inserted {
        Some(_) => Ok(()),
        None => Err(Fault::Raced),
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
        duplicate: true,
        recipients: Vec::new(),
    })
}

/// The message an event changes or annotates (a reaction, an edit, a
/// delete); two such events about one message must not share a batch.
pub(super) fn changed_target(body: &Body) -> Option<&MessageId> {
    match body {
        Body::Text { .. } => None,
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
        Body::Text { .. } => {}
        Body::Reaction {
            target,
            emoji: Some(emoji),
        } => {
            execute(
                db,
                SET_REACTION,
                &[&target.as_str(), &sender, emoji, &message.now_ms],
            )
            .await?;
        }
        Body::Reaction {
            target,
            emoji: None,
        } => {
            execute(db, CLEAR_REACTION, &[&target.as_str(), &sender]).await?;
        }
        Body::Edit { target, .. } => {
            execute(
                db,
                EDIT_TEXT,
                &[&target.as_str(), &plan.body, &message.now_ms],
            )
            .await?;
        }
        Body::Delete { target } => {
            // Purge the text everywhere it is stored: the message, the edit
            // events that carried later versions of it, its reactions, and
            // its media's link to the conversation.
            let target = target.as_str();
            pipeline!(
                execute(db, TOMBSTONE, &[&target]),
                execute(db, PURGE_EDITS, &[&target, &EVENT_EDIT],),
                execute(db, PURGE_REACTIONS, &[&target]),
                execute(db, PURGE_MEDIA_LINKS, &[&target]),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Barrier;

    use super::*;
    use crate::postgres::testing::{FreshSchema, account, text};
    use crate::{PostgresConfig, PostgresStore, Store};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_key_reused_into_another_conversation_on_another_node_is_stored_once() {
        // Goal: one (device, client_msg_id) sent at the same moment on two
        // nodes into two different conversations (no conversation lock
        // orders them) is stored once: one call is the original, the other
        // is refused as a reuse of the key for another message, and the
        // other conversation loses no seq.
        // Method: alice talks to bob and to carol; 20 rounds of the same
        // client_msg_id into each, on two nodes released by a barrier; then
        // one more text into each conversation.
        let Some(schema) = FreshSchema::create("retry").await else {
            return;
        };
        let config = PostgresConfig::new(schema.url.clone());
        let nodes = [
            Arc::new(PostgresStore::connect(&config).await.expect("node 0")),
            Arc::new(PostgresStore::connect(&config).await.expect("node 1")),
        ];
        let alice = account(&nodes[0], "alice").await;
        let (bob, _) = account(&nodes[0], "bob").await;
        let (carol, _) = account(&nodes[0], "carol").await;
        let with_bob = nodes[0]
            .direct_conversation(alice.0, bob, 1)
            .await
            .expect("ab");
        let with_carol = nodes[0]
            .direct_conversation(alice.0, carol, 1)
            .await
            .expect("ac");
        let mut stored = [0, 0];
        for round in 0..20 {
            let barrier = Arc::new(Barrier::new(2));
            let attempts: Vec<_> = [with_bob, with_carol]
                .into_iter()
                .zip(&nodes)
                .map(|(conversation, node)| {
                    let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
                    let message = text(conversation, alice, &format!("race-{round}"));
                    tokio::spawn(async move {
                        barrier.wait().await;
                        node.append_message(message).await
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for attempt in attempts {
                answers.push(attempt.await.expect("task"));
            }
            answers.sort_by_key(Result::is_err);
            let [Ok(original), Err(StoreError::ClientMsgIdReused)] = &answers[..] else {
                panic!("round {round}: {answers:?}")
            };
            assert!(!original.duplicate, "round {round}");
            let idx = usize::from(original.conversation == with_carol);
            stored[idx] += 1;
            assert_eq!(original.seq, stored[idx], "round {round}: a seq was lost");
        }
        for (idx, conversation) in [with_bob, with_carol].into_iter().enumerate() {
            let next = nodes[1]
                .append_message(text(conversation, alice, &format!("after-{idx}")))
                .await
                .expect("append");
            assert_eq!(next.seq, stored[idx] + 1, "conversation {conversation}");
        }
        for node in &nodes {
            node.shutdown().await;
        }
        schema.drop().await;
    }
}
