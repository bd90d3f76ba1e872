//! Storing an event: the checks against its conversation and target, and
//! the one row it becomes. Runs inside the writer's batch transaction.

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::conversations::{check_member, member_devices, members_devices_who_saw};
use super::facts;
use super::writer::backend;
use crate::StoreError;
use crate::model::*;
use crate::rules::{self, ENCRYPTED_MEDIA_TYPE, Plan, Target};

pub(super) use crate::rules::event_kind;

pub(super) const EVENT_TEXT: i64 = rules::EVENT_TEXT as i64;
pub(super) const EVENT_SYSTEM: i64 = rules::EVENT_SYSTEM as i64;
pub(super) const EVENT_REACTION: i64 = rules::EVENT_REACTION as i64;
pub(super) const EVENT_EDIT: i64 = rules::EVENT_EDIT as i64;
pub(super) const EVENT_DELETE: i64 = rules::EVENT_DELETE as i64;

/// Takes the conversation's next seq and the event's time: `now_ms`, or
/// the conversation's last event time when that is later (an event is
/// never stamped earlier than the one before it, whichever node's clock
/// stamped that). Atomic under the writer transaction. A read and a plain
/// update: `UPDATE … RETURNING` materialises its result in a temporary
/// table and cost twice as much, on every send.
pub(super) fn next_seq(
    conn: &Connection,
    conversation: ConversationId,
    now_ms: UnixMillis,
) -> Result<(i64, UnixMillis), StoreError> {
    let (last, last_ts): (i64, UnixMillis) = conn
        .prepare_cached("SELECT last_seq, last_ts_ms FROM conversations WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([conversation.0], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(backend)?;
    let ts = now_ms.max(last_ts);
    conn.prepare_cached("UPDATE conversations SET last_seq = ?2, last_ts_ms = ?3 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![conversation.0, last + 1, ts]))
        .map_err(backend)?;
    Ok((last + 1, ts))
}

pub(super) fn append_message(
    conn: &Connection,
    message: &NewMessage,
) -> Result<Appended, StoreError> {
    let fingerprint = rules::fingerprint(message);
    let earlier = earlier_send(conn, message)?;
    if let Some((earlier, stored)) = earlier {
        return match stored {
            Some(stored) if stored != fingerprint => Err(StoreError::ClientMsgIdReused),
            _ => Ok(earlier),
        };
    }
    let facts = facts::conversation(conn, message.conversation)?;
    let disappear_secs = sender_may_send(conn, message, facts.as_deref())?;
    let Plan {
        kind,
        body,
        target,
        about_seq,
    } = apply_body(conn, message)?;
    let (seq, ts_ms) = next_seq(conn, message.conversation, message.now_ms)?;
    let expires_ms = rules::expiry(ts_ms, disappear_secs);
    let message_id = message.message_id.as_str();
    attach_media(
        conn,
        message_id,
        message.conversation,
        seq,
        message.body.media(),
    )?;
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind, target_id, fingerprint, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            message_id,
            message.conversation.0,
            seq,
            message.sender_account.0,
            message.sender_device.0,
            message.client_msg_id.as_str(),
            body,
            ts_ms,
            kind,
            target,
            fingerprint,
            expires_ms
        ])
    })
    .map_err(backend)?;
    let mut recipients = recipients(conn, message, about_seq, facts.as_deref())?;
    recipients.retain(|device| *device != message.sender_device);
    Ok(Appended {
        message_id: message.message_id.clone(),
        conversation: message.conversation,
        seq,
        ts_ms,
        expires_ms,
        duplicate: false,
        recipients,
    })
}

/// The send stored earlier with `message`'s dedup key, if any, with the
/// fingerprint it was stored with (none before fingerprints existed).
#[inline]
fn earlier_send(
    conn: &Connection,
    message: &NewMessage,
) -> Result<Option<(Appended, Option<i64>)>, StoreError> {
    conn.prepare_cached(
        "SELECT id, conversation_id, seq, created_ms, fingerprint, expires_ms FROM messages
             WHERE client_msg_id = ?2 AND sender_device = ?1 AND client_msg_id != ''",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            params![message.sender_device.0, message.client_msg_id.as_str()],
            |row| {
                let earlier = Appended {
                    message_id: MessageId::from_stored(row.get(0)?),
                    conversation: ConversationId(row.get(1)?),
                    seq: row.get(2)?,
                    ts_ms: row.get(3)?,
                    expires_ms: row.get(5)?,
                    duplicate: true,
                    recipients: Vec::new(),
                };
                Ok((earlier, row.get::<_, Option<i64>>(4)?))
            },
        )
        .optional()
    })
    .map_err(backend)
}

/// The conversation's disappearing timer once the sender may send there:
/// a member, not blocked, and the body encrypted as the conversation is.
#[inline]
fn sender_may_send(
    conn: &Connection,
    message: &NewMessage,
    facts: Option<&facts::Conversation>,
) -> Result<i64, StoreError> {
    match facts {
        Some(facts) if facts.has_member(message.sender_account) => {
            if facts.blocked {
                return Err(StoreError::Blocked);
            }
            rules::check_encryption(facts.encrypted, &message.body)?;
            Ok(facts.disappear_secs)
        }
        _ => {
            // Says why: unknown, or left.
            check_member(conn, message.conversation, message.sender_account)?;
            Err(StoreError::NotMember)
        }
    }
}

/// Who the event is for (read, not written), so the caller can wake them.
#[inline]
fn recipients(
    conn: &Connection,
    message: &NewMessage,
    about_seq: Option<i64>,
    facts: Option<&facts::Conversation>,
) -> Result<Vec<DeviceId>, StoreError> {
    Ok(match (about_seq, facts) {
        (Some(about_seq), _) => members_devices_who_saw(conn, message.conversation, about_seq)?,
        (None, Some(facts)) => facts.devices().collect(),
        (None, None) => member_devices(conn, message.conversation, None)?,
    })
}

/// `UnknownMedia` unless `uploader` uploaded `media_id` (for an encrypted
/// message, uploaded encrypted: a plain upload would show the server what
/// the conversation hides).
fn check_own_media(
    conn: &Connection,
    media_id: &str,
    uploader: AccountId,
    encrypted: bool,
) -> Result<(), StoreError> {
    let owned = conn
        .prepare_cached(
            "SELECT 1 FROM media WHERE id = ?1 AND uploader_id = ?2
             AND (?3 = 0 OR content_type = ?4)",
        )
        .and_then(|mut stmt| {
            stmt.exists(params![
                media_id,
                uploader.0,
                encrypted,
                ENCRYPTED_MEDIA_TYPE
            ])
        })
        .map_err(backend)?;
    if owned {
        Ok(())
    } else {
        Err(StoreError::UnknownMedia)
    }
}

fn attach_media(
    conn: &Connection,
    message_id: &str,
    conversation: ConversationId,
    seq: i64,
    media: &[String],
) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO message_media (message_id, media_id, conversation_id, seq) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    for media_id in media {
        insert
            .execute(params![message_id, media_id, conversation.0, seq])
            .map_err(backend)?;
    }
    Ok(())
}

/// The text message `target` in `conversation` as `viewer` may see it (sent
/// after the viewer joined, body not purged).
fn text_target(
    conn: &Connection,
    conversation: ConversationId,
    target: &MessageId,
    viewer: AccountId,
) -> Result<Option<Target>, StoreError> {
    conn.prepare_cached(
        "SELECT m.sender_account, m.created_ms, m.deleted, m.seq FROM messages m
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = ?4
         WHERE m.id = ?1 AND m.conversation_id = ?2 AND m.kind IN (?3, 5) AND m.seq > mb.joined_seq
         AND m.body IS NOT NULL",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            params![target.as_str(), conversation.0, EVENT_TEXT, viewer.0],
            |row| {
                Ok(Target {
                    author: AccountId(row.get(0)?),
                    created_ms: row.get(1)?,
                    deleted: row.get::<_, i64>(2)? != 0,
                    seq: row.get(3)?,
                })
            },
        )
        .optional()
    })
    .map_err(backend)
}

/// Judges the body against its target (`rules::plan`) and applies its
/// effect on the target: the reaction row, the edited text, the tombstone.
fn apply_body(conn: &Connection, message: &NewMessage) -> Result<Plan, StoreError> {
    let sender = message.sender_account;
    let target = match rules::target_of(&message.body) {
        Some(id) => text_target(conn, message.conversation, id, sender)?,
        None => None,
    };
    let plan = rules::plan(message, target.as_ref())?;
    match &message.body {
        Body::Text { media, .. } => {
            for media_id in media {
                check_own_media(conn, media_id, sender, false)?;
            }
        }
        Body::Encrypted { media, .. } => {
            for media_id in media {
                check_own_media(conn, media_id, sender, true)?;
            }
        }
        Body::Reaction { target, emoji } => match emoji {
            Some(emoji) => conn.execute(
                "INSERT INTO reactions (message_id, account_id, emoji, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (message_id, account_id) DO UPDATE SET emoji = excluded.emoji, updated_ms = excluded.updated_ms",
                params![target.as_str(), sender.0, emoji, message.now_ms],
            ),
            None => conn.execute(
                "DELETE FROM reactions WHERE message_id = ?1 AND account_id = ?2",
                params![target.as_str(), sender.0],
            ),
        }
        .map(drop)
        .map_err(backend)?,
        Body::Edit { target, text, .. } => {
            conn.execute(
                "UPDATE messages SET body = ?2, edited_ms = ?3 WHERE id = ?1",
                params![target.as_str(), text.as_str(), message.now_ms],
            )
            .map_err(backend)?;
        }
        Body::Delete { target } => {
            // Purge the text everywhere it is stored: the message and the
            // edit events that carried later versions of it.
            conn.execute(
                "UPDATE messages SET body = '', deleted = 1 WHERE id = ?1",
                [target.as_str()],
            )
            .map_err(backend)?;
            conn.execute(
                "UPDATE messages SET body = '' WHERE target_id = ?1 AND kind = ?2 AND body IS NOT NULL",
                params![target.as_str(), EVENT_EDIT],
            )
            .map_err(backend)?;
            conn.execute(
                "DELETE FROM reactions WHERE message_id = ?1",
                [target.as_str()],
            )
            .map_err(backend)?;
            // Its media are no longer shared with the conversation.
            conn.execute(
                "DELETE FROM message_media WHERE message_id = ?1",
                [target.as_str()],
            )
            .map_err(backend)?;
        }
    }
    Ok(plan)
}
