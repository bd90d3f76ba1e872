//! Sends: one transaction per message (dedup key, seq under the
//! conversation lock, checks, the body's effect on its target, the row, the
//! fan-out), in four round trips besides BEGIN and COMMIT whatever the
//! number of recipients.

use deadpool_postgres::GenericClient;
use missive_core::{ConversationId, MessageId, UnixMillis};
use tokio_postgres::Row;

use super::codes::{EVENT_DELETE, EVENT_EDIT, EVENT_REACTION, EVENT_TEXT, QUEUE_MESSAGE};
use super::conversations::refusal;
use super::fault::{Fault, Outcome};
use super::media::{attach_media, check_own_media};
use super::queue::{Audience, Entry, fan_out};
use super::sql::{execute, pipeline, row};
use crate::StoreError;
use crate::model::*;

pub(super) async fn append_message<C: GenericClient>(
    db: &C,
    message: &NewMessage,
) -> Outcome<Appended> {
    // 1. Dedup first: win the (device, client_msg_id) key or learn that an
    //    earlier send holds it. A concurrent retry on another node waits
    //    here until that send commits (duplicate) or rolls back (ours).
    //    The seq is filled in below, once taken.
    let claimed = row(
        db,
        "INSERT INTO dedup (device_id, client_msg_id, message_id, conversation_id, seq, created_ms)
         VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING RETURNING 1",
        &[
            &message.sender_device.0,
            &message.client_msg_id.as_str(),
            &message.message_id.as_str(),
            &message.conversation.0,
            &message.now_ms,
        ],
    )
    .await?;
    if claimed.is_none() {
        return earlier_send(db, message).await;
    }

    // 2. The seq, under the conversation row lock held to commit; then,
    //    pipelined behind it so they see the latest committed state, every
    //    check the send must pass.
    let target = body_target(&message.body);
    let media: &[String] = match &message.body {
        Body::Text { media, .. } => media,
        _ => &[],
    };
    let (seq_row, member, blocked, target_row, own_media) = pipeline!(
        row(
            db,
            "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
            &[&message.conversation.0],
        ),
        row(
            db,
            "SELECT 1 FROM members WHERE conversation_id = $1 AND account_id = $2",
            &[&message.conversation.0, &message.sender_account.0],
        ),
        row(
            db,
            "SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id
             JOIN blocks b ON (b.blocker_id = m.account_id AND b.blocked_id = $2)
                           OR (b.blocker_id = $2 AND b.blocked_id = m.account_id)
             WHERE c.id = $1 AND c.kind = 0 AND m.account_id <> $2 LIMIT 1",
            &[&message.conversation.0, &message.sender_account.0],
        ),
        async {
            match target {
                Some(target) => text_target(db, message, target).await,
                None => Ok(None),
            }
        },
        // Judged after the reply target below (SQLite's order of refusals),
        // but run now: one round trip for all checks.
        async { Ok(check_own_media(db, media, message.sender_account).await) },
    )?;
    if let Some(refused) = refusal(seq_row.is_some(), member.is_some()) {
        return Err(refused.into());
    }
    let seq: i64 = seq_row.ok_or(Fault::Raced)?.try_get(0)?;
    if blocked.is_some() {
        return Err(StoreError::Blocked.into());
    }
    let target = match (target, target_row) {
        (Some(_), None) => return Err(StoreError::UnknownMessage.into()),
        (Some(_), Some(found)) => Some(Target::from_row(&found)?),
        (None, _) => None,
    };
    let plan = plan(message, target.as_ref())?;
    own_media?;

    // 3. Everything the send writes, pipelined.
    let message_id = message.message_id.as_str();
    let ((), (), (), (), queued_for) = pipeline!(
        apply_effect(db, message, &plan),
        async {
            execute(
                db,
                "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind, target_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            )
            .await
            .map(drop)
        },
        async {
            execute(
                db,
                "UPDATE dedup SET seq = $3 WHERE device_id = $1 AND client_msg_id = $2",
                &[
                    &message.sender_device.0,
                    &message.client_msg_id.as_str(),
                    &seq,
                ],
            )
            .await
            .map(drop)
        },
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
    Ok(Appended {
        message_id: message.message_id.clone(),
        conversation: message.conversation,
        seq,
        ts_ms: message.now_ms,
        duplicate: false,
        queued_for,
    })
}

/// The answer to a retry: the first send's id, seq and time. Its dedup row
/// is committed (the insert that found it waited for that).
async fn earlier_send<C: GenericClient>(db: &C, message: &NewMessage) -> Outcome<Appended> {
    let found = row(
        db,
        "SELECT message_id, conversation_id, seq, created_ms FROM dedup
         WHERE device_id = $1 AND client_msg_id = $2",
        &[&message.sender_device.0, &message.client_msg_id.as_str()],
    )
    .await?
    // Swept between the two statements: the retry is now a new message.
    .ok_or(Fault::Raced)?;
    Ok(Appended {
        message_id: MessageId::from_stored(found.try_get(0)?),
        conversation: ConversationId(found.try_get(1)?),
        seq: found.try_get(2)?,
        ts_ms: found.try_get(3)?,
        duplicate: true,
        queued_for: Vec::new(),
    })
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
        "SELECT m.sender_account, m.created_ms, m.deleted, m.seq FROM messages m
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = $4
         WHERE m.id = $1 AND m.conversation_id = $2 AND m.kind = $3 AND m.seq > mb.joined_seq",
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
                "INSERT INTO reactions (message_id, account_id, emoji, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (message_id, account_id)
                 DO UPDATE SET emoji = excluded.emoji, updated_ms = excluded.updated_ms",
                &[&target.as_str(), &sender, emoji, &message.now_ms],
            )
            .await?;
        }
        Body::Reaction {
            target,
            emoji: None,
        } => {
            execute(
                db,
                "DELETE FROM reactions WHERE message_id = $1 AND account_id = $2",
                &[&target.as_str(), &sender],
            )
            .await?;
        }
        Body::Edit { target, .. } => {
            execute(
                db,
                "UPDATE messages SET body = $2, edited_ms = $3 WHERE id = $1",
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
                execute(
                    db,
                    "UPDATE messages SET body = '', deleted = true WHERE id = $1",
                    &[&target]
                ),
                execute(
                    db,
                    "UPDATE messages SET body = '' WHERE target_id = $1 AND kind = $2",
                    &[&target, &EVENT_EDIT],
                ),
                execute(
                    db,
                    "DELETE FROM reactions WHERE message_id = $1",
                    &[&target]
                ),
                execute(
                    db,
                    "DELETE FROM message_media WHERE message_id = $1",
                    &[&target]
                ),
            )?;
        }
    }
    Ok(())
}
