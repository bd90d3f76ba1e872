//! Sends, many to a transaction (`sender.rs` gathers them): one commit and
//! five round trips carry a whole batch, and each send still gets its own
//! answer. A refused send writes nothing and takes no seq; the others of its
//! batch commit.
//!
//! A batch runs in three pipelined rounds:
//! 1. **Locks**, in the order every transaction takes them (module doc of
//!    `postgres`): the dedup keys (inserted, ascending), the conversation
//!    rows (ascending, reading `last_seq`), the message rows that edits and
//!    deletes change (a delete also purges the target's edit events), then
//!    the `devices` rows of every member of the conversations a sender
//!    belongs to. All are held before any check, so two batches wait for
//!    each other but cannot deadlock, whatever sends they mix.
//! 2. **Checks** of each send against the locked state: membership, blocks,
//!    the target, the media; for a retry, the first send's answer.
//! 3. **Writes**: the sends that passed are numbered from `last_seq` in
//!    batch order; then each one's rows and fan-out, in that order (so
//!    queue positions follow seq), the new `last_seq` of each conversation,
//!    and the release of the refused sends' dedup keys.
//!
//! Two sends that could see each other inside one transaction never share a
//! batch (`sender.rs` keeps them apart): the same dedup key, or a reaction,
//! edit or delete of the same message (a reply only reads its target). A
//! send cannot refer to another of its batch otherwise: a message id
//! reaches clients only after its commit.

use std::collections::{BTreeSet, HashMap, HashSet};

use deadpool_postgres::GenericClient;
use missive_core::{ConversationId, DeviceId, MessageId, UnixMillis};
use tokio_postgres::Row;

use super::codes::{EVENT_DELETE, EVENT_EDIT, EVENT_REACTION, EVENT_TEXT, QUEUE_MESSAGE};
use super::conversations::refusal;
use super::fault::{Fault, Outcome};
use super::media::{attach_media, check_own_media};
use super::queue::{Audience, Entry, fan_out};
use super::sql::{Step, execute, in_order, pipeline, row, rows};
use crate::StoreError;
use crate::model::*;

/// One send's answer.
pub(super) type Answer = Result<Appended, StoreError>;

const CLAIM_DEDUP: &str =
    "INSERT INTO dedup (device_id, client_msg_id, message_id, conversation_id, seq, created_ms)
     SELECT device_id, client_msg_id, message_id, conversation_id, 0, created_ms
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
          AS claim(device_id, client_msg_id, message_id, conversation_id, created_ms)
     ON CONFLICT DO NOTHING RETURNING device_id, client_msg_id";
const LOCK_CONVERSATIONS: &str =
    "SELECT id, last_seq FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";
/// The rows edits and deletes change: each target (in the send's own
/// conversation) and, for a delete, the edit events it purges.
const LOCK_CHANGED_MESSAGES: &str = "SELECT 1 FROM (
         SELECT m.id FROM unnest($1::text[], $2::bigint[], $3::bool[]) AS t(target, conversation_id, purge)
         JOIN messages m ON m.conversation_id = t.conversation_id
          AND (m.id = t.target OR (t.purge AND m.kind = $4 AND m.target_id = t.target))
         ORDER BY m.id FOR UPDATE OF m
     ) locked";
/// The devices of every member of the conversations a sender of the batch
/// belongs to (a refused non-member's send locks none).
const LOCK_RECIPIENTS: &str = "SELECT 1 FROM (
         SELECT d.id FROM unnest($1::bigint[], $2::bigint[]) AS s(conversation_id, sender)
         JOIN members sm ON sm.conversation_id = s.conversation_id AND sm.account_id = s.sender
         JOIN members m ON m.conversation_id = s.conversation_id
         JOIN devices d ON d.account_id = m.account_id
         ORDER BY d.id FOR NO KEY UPDATE OF d
     ) locked";
const IS_MEMBER: &str = "SELECT 1 FROM members WHERE conversation_id = $1 AND account_id = $2";
const IS_BLOCKED: &str = "SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id
     JOIN blocks b ON (b.blocker_id = m.account_id AND b.blocked_id = $2)
                   OR (b.blocker_id = $2 AND b.blocked_id = m.account_id)
     WHERE c.id = $1 AND c.kind = 0 AND m.account_id <> $2 LIMIT 1";
const TEXT_TARGET: &str = "SELECT m.sender_account, m.created_ms, m.deleted, m.seq FROM messages m
     JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = $4
     WHERE m.id = $1 AND m.conversation_id = $2 AND m.kind = $3 AND m.seq > mb.joined_seq";
const EARLIER_SEND: &str = "SELECT message_id, conversation_id, seq, created_ms FROM dedup
     WHERE device_id = $1 AND client_msg_id = $2";
const RELEASE_DEDUP: &str = "DELETE FROM dedup WHERE device_id = $1 AND client_msg_id = $2";
const SET_LAST_SEQ: &str = "UPDATE conversations SET last_seq = $2 WHERE id = $1";
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind, target_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const SET_DEDUP_SEQ: &str = "UPDATE dedup SET seq = $3 WHERE device_id = $1 AND client_msg_id = $2";
const SET_REACTION: &str =
    "INSERT INTO reactions (message_id, account_id, emoji, updated_ms) VALUES ($1, $2, $3, $4)
     ON CONFLICT (message_id, account_id)
     DO UPDATE SET emoji = excluded.emoji, updated_ms = excluded.updated_ms";
const CLEAR_REACTION: &str = "DELETE FROM reactions WHERE message_id = $1 AND account_id = $2";
const EDIT_TEXT: &str = "UPDATE messages SET body = $2, edited_ms = $3 WHERE id = $1";
const TOMBSTONE: &str = "UPDATE messages SET body = '', deleted = true WHERE id = $1";
const PURGE_EDITS: &str = "UPDATE messages SET body = '' WHERE target_id = $1 AND kind = $2";
const PURGE_REACTIONS: &str = "DELETE FROM reactions WHERE message_id = $1";
const PURGE_MEDIA_LINKS: &str = "DELETE FROM message_media WHERE message_id = $1";

/// Stores `sends` in the transaction `db`, answering each in order. An
/// error concerns the whole batch (the transaction is then rolled back).
pub(super) async fn append_batch<C: GenericClient>(
    db: &C,
    sends: &[&NewMessage],
) -> Outcome<Vec<Answer>> {
    let claimed = lock_everything(db, sends).await?;
    let checked = check_all(db, sends, &claimed.keys).await?;

    // Judge each send in batch order; number the ones that pass.
    let mut last_seq = claimed.last_seq;
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(sends.len());
    let mut accepted: Vec<(usize, i64, Plan)> = Vec::new();
    let mut released: Vec<&NewMessage> = Vec::new();
    for (i, (message, found)) in sends.iter().zip(checked).enumerate() {
        let checks = match found {
            Found::Earlier(earlier) => {
                answers.push(Some(Ok(earlier_send(earlier)?)));
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
            (Err(refused), _) => {
                released.push(message);
                answers.push(Some(Err(refused)));
            }
        }
    }

    // Write: released keys, then the sends in seq order, then last_seq.
    let mut steps: Vec<Step<'_, Vec<DeviceId>>> = Vec::new();
    for message in &released {
        steps.push(Box::pin(async move {
            execute(
                db,
                RELEASE_DEDUP,
                &[&message.sender_device.0, &message.client_msg_id.as_str()],
            )
            .await
            .map(|_| Vec::new())
        }));
    }
    let writes_from = steps.len();
    for (i, seq, plan) in &accepted {
        steps.push(Box::pin(write_send(db, sends[*i], *seq, plan)));
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
                .map(|_| Vec::new())
        }));
    }
    let mut written = in_order(steps).await?.into_iter().skip(writes_from);
    for (i, seq, _) in accepted {
        let message = sends[i];
        answers[i] = Some(Ok(Appended {
            message_id: message.message_id.clone(),
            conversation: message.conversation,
            seq,
            ts_ms: message.now_ms,
            duplicate: false,
            queued_for: written.next().unwrap_or_default(),
        }));
    }
    answers
        .into_iter()
        .map(|answer| answer.ok_or(Fault::Raced))
        .collect()
}

/// What round 1 learned: the dedup keys this batch won, and the `last_seq`
/// of each conversation that exists.
struct Locked {
    keys: HashSet<(i64, String)>,
    last_seq: HashMap<i64, i64>,
}

async fn lock_everything<C: GenericClient>(db: &C, sends: &[&NewMessage]) -> Outcome<Locked> {
    let mut claims: Vec<&NewMessage> = sends.to_vec();
    claims.sort_by(|a, b| {
        (a.sender_device, a.client_msg_id.as_str())
            .cmp(&(b.sender_device, b.client_msg_id.as_str()))
    });
    let devices: Vec<i64> = claims.iter().map(|m| m.sender_device.0).collect();
    let client_ids: Vec<&str> = claims.iter().map(|m| m.client_msg_id.as_str()).collect();
    let message_ids: Vec<&str> = claims.iter().map(|m| m.message_id.as_str()).collect();
    let claim_conversations: Vec<i64> = claims.iter().map(|m| m.conversation.0).collect();
    let created: Vec<UnixMillis> = claims.iter().map(|m| m.now_ms).collect();
    let conversations: Vec<i64> = sends
        .iter()
        .map(|m| m.conversation.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut changes: Vec<(&str, i64, bool)> = sends
        .iter()
        .filter_map(|m| match &m.body {
            Body::Edit { target, .. } => Some((target.as_str(), m.conversation.0, false)),
            Body::Delete { target } => Some((target.as_str(), m.conversation.0, true)),
            _ => None,
        })
        .collect();
    changes.sort_unstable();
    let changed: Vec<&str> = changes.iter().map(|c| c.0).collect();
    let changed_in: Vec<i64> = changes.iter().map(|c| c.1).collect();
    let purged: Vec<bool> = changes.iter().map(|c| c.2).collect();
    let senders: BTreeSet<(i64, i64)> = sends
        .iter()
        .map(|m| (m.conversation.0, m.sender_account.0))
        .collect();
    let (sender_conversations, sender_accounts): (Vec<i64>, Vec<i64>) = senders.into_iter().unzip();
    let (won, locked, _, _) = pipeline!(
        rows(
            db,
            CLAIM_DEDUP,
            &[
                &devices,
                &client_ids,
                &message_ids,
                &claim_conversations,
                &created
            ],
        ),
        rows(db, LOCK_CONVERSATIONS, &[&conversations]),
        execute(
            db,
            LOCK_CHANGED_MESSAGES,
            &[&changed, &changed_in, &purged, &EVENT_EDIT],
        ),
        execute(
            db,
            LOCK_RECIPIENTS,
            &[&sender_conversations, &sender_accounts],
        ),
    )?;
    let keys = won
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Outcome<_>>()?;
    let last_seq = locked
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Outcome<_>>()?;
    Ok(Locked { keys, last_seq })
}

/// What round 2 found for one send.
enum Found {
    /// The key was another send's: its dedup row, if it still exists.
    Earlier(Option<Row>),
    Checks(Checks),
}

struct Checks {
    member: bool,
    blocked: bool,
    target: Option<Row>,
    /// `Refused(UnknownMedia)` unless the sender uploaded every attachment.
    own_media: Outcome<()>,
}

async fn check_all<C: GenericClient>(
    db: &C,
    sends: &[&NewMessage],
    won: &HashSet<(i64, String)>,
) -> Outcome<Vec<Found>> {
    let steps: Vec<Step<'_, Found>> = sends
        .iter()
        .map(|message| -> Step<'_, Found> {
            let key = (
                message.sender_device.0,
                message.client_msg_id.as_str().to_owned(),
            );
            if won.contains(&key) {
                Box::pin(async move { Ok(Found::Checks(check(db, message).await?)) })
            } else {
                Box::pin(async move {
                    let earlier = row(
                        db,
                        EARLIER_SEND,
                        &[&message.sender_device.0, &message.client_msg_id.as_str()],
                    )
                    .await?;
                    Ok(Found::Earlier(earlier))
                })
            }
        })
        .collect();
    in_order(steps).await
}

async fn check<C: GenericClient>(db: &C, message: &NewMessage) -> Outcome<Checks> {
    let target = body_target(&message.body);
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
    Ok(Checks {
        member: member.is_some(),
        blocked: blocked.is_some(),
        target,
        own_media,
    })
}

/// The send's plan, or why it is refused (in the embedded store's order of
/// refusals); an error is a fault of the whole batch.
fn judge(message: &NewMessage, exists: bool, checks: Checks) -> Outcome<Result<Plan, StoreError>> {
    if let Some(refused) = refusal(exists, checks.member) {
        return Ok(Err(refused));
    }
    if checks.blocked {
        return Ok(Err(StoreError::Blocked));
    }
    let target = match (body_target(&message.body), checks.target) {
        (Some(_), None) => return Ok(Err(StoreError::UnknownMessage)),
        (Some(_), Some(found)) => Some(Target::from_row(&found)?),
        (None, _) => None,
    };
    let plan = match plan(message, target.as_ref()) {
        Ok(plan) => plan,
        Err(Fault::Refused(refused)) => return Ok(Err(refused)),
        Err(fault) => return Err(fault),
    };
    match checks.own_media {
        Ok(()) => Ok(Ok(plan)),
        Err(Fault::Refused(refused)) => Ok(Err(refused)),
        Err(fault) => Err(fault),
    }
}

/// Everything one accepted send writes; returns the devices whose queue grew.
async fn write_send<'a, C: GenericClient>(
    db: &'a C,
    message: &'a NewMessage,
    seq: i64,
    plan: &'a Plan,
) -> Outcome<Vec<DeviceId>> {
    let message_id = message.message_id.as_str();
    let media: &[String] = match &message.body {
        Body::Text { media, .. } => media,
        _ => &[],
    };
    let ((), _, _, (), queued_for) = pipeline!(
        apply_effect(db, message, plan),
        execute(
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
            ],
        ),
        execute(
            db,
            SET_DEDUP_SEQ,
            &[
                &message.sender_device.0,
                &message.client_msg_id.as_str(),
                &seq,
            ],
        ),
        attach_media(db, message_id, message.conversation, seq, media),
        fan_out(
            db,
            &Audience {
                joined_before: plan.about_seq.unwrap_or(i64::MAX),
                except_account: None,
                except_device: Some(message.sender_device),
            },
            &Entry {
                kind: QUEUE_MESSAGE,
                message_id: Some(message_id),
                conversation: message.conversation,
                seq,
                by_account: message.sender_account,
                now_ms: message.now_ms,
                expires_ms: message.queue_expires_ms,
            },
        ),
    )?;
    Ok(queued_for)
}

/// The answer to a retry: the first send's id, seq and time. Its dedup row
/// is committed (the insert that found it waited for that); missing, it
/// was swept meanwhile, and the batch runs again to store the send anew.
fn earlier_send(found: Option<Row>) -> Outcome<Appended> {
    let found = found.ok_or(Fault::Raced)?;
    Ok(Appended {
        message_id: MessageId::from_stored(found.try_get(0)?),
        conversation: ConversationId(found.try_get(1)?),
        seq: found.try_get(2)?,
        ts_ms: found.try_get(3)?,
        duplicate: true,
        queued_for: Vec::new(),
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

fn body_target(body: &Body) -> Option<&MessageId> {
    match body {
        Body::Text { reply_to, .. } => reply_to.as_ref(),
        Body::Reaction { target, .. } | Body::Edit { target, .. } | Body::Delete { target } => {
            Some(target)
        }
    }
}

/// The text message an event refers to, as its sender may see it (sent
/// after the sender joined).
struct Target {
    author: i64,
    created_ms: UnixMillis,
    deleted: bool,
    seq: i64,
}

impl Target {
    fn from_row(row: &Row) -> Outcome<Self> {
        Ok(Self {
            author: row.try_get(0)?,
            created_ms: row.try_get(1)?,
            deleted: row.try_get(2)?,
            seq: row.try_get(3)?,
        })
    }
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

/// What the event row stores, and for an event about an earlier message,
/// that message's seq: members who joined after it must not learn of it.
struct Plan {
    kind: i16,
    body: String,
    target: Option<String>,
    about_seq: Option<i64>,
}

/// Validates the body against its target (refusing before anything is
/// written) and says what to store.
fn plan(message: &NewMessage, target: Option<&Target>) -> Outcome<Plan> {
    let sender = message.sender_account.0;
    let about = |kind: i16, body: String, id: &MessageId, target: &Target| Plan {
        kind,
        body,
        target: Some(id.to_string()),
        about_seq: Some(target.seq),
    };
    match (&message.body, target) {
        (Body::Text { text, reply_to, .. }, _) => Ok(Plan {
            kind: EVENT_TEXT,
            body: text.as_str().to_owned(),
            target: reply_to.as_ref().map(|id| id.to_string()),
            about_seq: None,
        }),
        (Body::Reaction { target: id, emoji }, Some(target)) => {
            if target.deleted {
                return Err(StoreError::MessageDeleted.into());
            }
            Ok(about(
                EVENT_REACTION,
                emoji.clone().unwrap_or_default(),
                id,
                target,
            ))
        }
        (
            Body::Edit {
                target: id,
                text,
                window_ms,
            },
            Some(target),
        ) => {
            if target.author != sender {
                return Err(StoreError::NotAuthor.into());
            }
            if target.deleted {
                return Err(StoreError::MessageDeleted.into());
            }
            if message.now_ms.saturating_sub(target.created_ms) > *window_ms {
                return Err(StoreError::EditWindowClosed.into());
            }
            Ok(about(EVENT_EDIT, text.as_str().to_owned(), id, target))
        }
        (Body::Delete { target: id }, Some(target)) => {
            if target.author != sender {
                return Err(StoreError::NotAuthor.into());
            }
            if target.deleted {
                return Err(StoreError::MessageDeleted.into());
            }
            Ok(about(EVENT_DELETE, String::new(), id, target))
        }
        (_, None) => Err(StoreError::UnknownMessage.into()),
    }
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
