//! The SQL of each Store operation, as plain functions over a connection.
//! Write functions run inside the writer's batch transaction.

use missive_core::{
    AccountId, ConversationId, DeviceId, MessageId, QueuePos, TokenHash, UnixMillis, Username,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::groups::{EVENT_DELETE, EVENT_EDIT, EVENT_REACTION, EVENT_TEXT};
use super::writer::backend;
use crate::StoreError;
use crate::model::*;

pub(super) const KIND_MESSAGE: i64 = 0;
pub(super) const KIND_DELIVERED: i64 = 1;
pub(super) const KIND_READ: i64 = 2;

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

pub(super) fn create_account(
    conn: &Connection,
    account: &NewAccount,
) -> Result<AccountId, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO accounts (username, password_hash, phone, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            account.username.as_str(),
            account.password_hash,
            account.phone,
            account.now_ms
        ],
    );
    match inserted {
        Ok(_) => Ok(AccountId(conn.last_insert_rowid())),
        Err(err) if is_unique_violation(&err) => Err(StoreError::UsernameTaken),
        Err(err) => Err(backend(err)),
    }
}

pub(super) fn account_by_username(
    conn: &Connection,
    username: &Username,
) -> Result<Option<AccountRecord>, StoreError> {
    conn.prepare_cached("SELECT id, password_hash FROM accounts WHERE username = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([username.as_str()], |row| {
                Ok(AccountRecord {
                    id: AccountId(row.get(0)?),
                    username: username.clone(),
                    password_hash: row.get(1)?,
                })
            })
            .optional()
        })
        .map_err(backend)
}

pub(super) fn create_device(conn: &Connection, device: &NewDevice) -> Result<DeviceId, StoreError> {
    let n_devices: i64 = conn
        .query_row(
            "SELECT count(*) FROM devices WHERE account_id = ?1",
            [device.account.0],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if n_devices as usize >= device.devices_max {
        return Err(StoreError::TooManyDevices);
    }
    conn.execute(
        "INSERT INTO devices (account_id, name, token_hash, created_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![
            device.account.0,
            device.name,
            &device.token_hash.0[..],
            device.now_ms
        ],
    )
    .map_err(backend)?;
    Ok(DeviceId(conn.last_insert_rowid()))
}

pub(super) fn authenticate(
    conn: &Connection,
    token: &TokenHash,
) -> Result<Option<DeviceAuth>, StoreError> {
    conn.prepare_cached(
        "SELECT d.id, d.account_id, a.username FROM devices d
         JOIN accounts a ON a.id = d.account_id WHERE d.token_hash = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([&token.0[..]], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()
    })
    .map_err(backend)?
    .map(|(device, account, username)| {
        let username = Username::parse(&username)
            .map_err(|_| StoreError::Backend(format!("stored username {username:?} is invalid")))?;
        Ok(DeviceAuth {
            account: AccountId(account),
            username,
            device: DeviceId(device),
        })
    })
    .transpose()
}

pub(super) fn list_devices(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, name, created_ms, last_seen_ms FROM devices WHERE account_id = ?1 ORDER BY id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([account.0], |row| {
            Ok(DeviceRecord {
                id: DeviceId(row.get(0)?),
                name: row.get(1)?,
                created_ms: row.get(2)?,
                last_seen_ms: row.get(3)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn revoke_device(
    conn: &Connection,
    account: AccountId,
    device: DeviceId,
) -> Result<bool, StoreError> {
    let deleted = conn
        .execute(
            "DELETE FROM devices WHERE id = ?1 AND account_id = ?2",
            params![device.0, account.0],
        )
        .map_err(backend)?;
    if deleted == 0 {
        return Ok(false);
    }
    conn.execute("DELETE FROM queue WHERE device_id = ?1", [device.0])
        .map_err(backend)?;
    conn.execute("DELETE FROM dedup WHERE device_id = ?1", [device.0])
        .map_err(backend)?;
    Ok(true)
}

fn direct_key(a: AccountId, b: AccountId) -> (AccountId, AccountId, String) {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    (low, high, format!("{}:{}", low.0, high.0))
}

/// The 1:1 conversation of two accounts, if it exists (a read).
pub(super) fn find_direct_conversation(
    conn: &Connection,
    a: AccountId,
    b: AccountId,
) -> Result<Option<ConversationId>, StoreError> {
    let (_, _, key) = direct_key(a, b);
    conn.prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")
        .and_then(|mut stmt| stmt.query_row([&key], |row| row.get(0)).optional())
        .map(|id| id.map(ConversationId))
        .map_err(backend)
}

pub(super) fn direct_conversation(
    conn: &Connection,
    a: AccountId,
    b: AccountId,
    now_ms: UnixMillis,
) -> Result<ConversationId, StoreError> {
    if let Some(id) = find_direct_conversation(conn, a, b)? {
        return Ok(id);
    }
    let (low, high, key) = direct_key(a, b);
    conn.execute(
        "INSERT INTO conversations (direct_key, created_ms) VALUES (?1, ?2)",
        params![key, now_ms],
    )
    .map_err(backend)?;
    let id = conn.last_insert_rowid();
    for member in [low, high] {
        conn.execute(
            "INSERT OR IGNORE INTO members (conversation_id, account_id) VALUES (?1, ?2)",
            params![id, member.0],
        )
        .map_err(backend)?;
    }
    Ok(ConversationId(id))
}

pub(super) fn is_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM members WHERE conversation_id = ?1 AND account_id = ?2")
        .and_then(|mut stmt| stmt.exists(params![conversation.0, account.0]))
        .map_err(backend)
}

pub(super) fn conversation_exists(
    conn: &Connection,
    conversation: ConversationId,
) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM conversations WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists([conversation.0]))
        .map_err(backend)
}

pub(super) fn check_member(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> Result<(), StoreError> {
    if is_member(conn, conversation, account)? {
        Ok(())
    } else if conversation_exists(conn, conversation)? {
        Err(StoreError::NotMember)
    } else {
        Err(StoreError::UnknownConversation)
    }
}

pub(super) struct QueueEntry<'a> {
    pub(super) kind: i64,
    pub(super) message_id: Option<&'a str>,
    pub(super) conversation: ConversationId,
    pub(super) seq: i64,
    pub(super) by_account: AccountId,
    pub(super) now_ms: UnixMillis,
    pub(super) expires_ms: UnixMillis,
}

fn device_ids(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<DeviceId>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(args, |row| Ok(DeviceId(row.get(0)?)))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// Devices of every member of the conversation other than `except_account`.
pub(super) fn member_devices(
    conn: &Connection,
    conversation: ConversationId,
    except_account: Option<AccountId>,
) -> Result<Vec<DeviceId>, StoreError> {
    device_ids(
        conn,
        "SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = ?1 AND m.account_id != ?2 ORDER BY d.id",
        params![conversation.0, except_account.map_or(-1, |a| a.0)],
    )
}

/// Devices of members who joined before `seq` (so received that event).
fn members_devices_who_saw(
    conn: &Connection,
    conversation: ConversationId,
    seq: i64,
) -> Result<Vec<DeviceId>, StoreError> {
    device_ids(
        conn,
        "SELECT d.id FROM members m JOIN devices d ON d.account_id = m.account_id
         WHERE m.conversation_id = ?1 AND m.joined_seq < ?2 ORDER BY d.id",
        params![conversation.0, seq],
    )
}

pub(super) fn account_devices(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<DeviceId>, StoreError> {
    device_ids(
        conn,
        "SELECT id FROM devices WHERE account_id = ?1 ORDER BY id",
        [account.0],
    )
}

/// Appends one entry to each listed device's queue.
pub(super) fn enqueue(
    conn: &Connection,
    devices: &[DeviceId],
    entry: &QueueEntry<'_>,
) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO queue (device_id, kind, message_id, conversation_id, seq, by_account, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(backend)?;
    for device in devices {
        insert
            .execute(params![
                device.0,
                entry.kind,
                entry.message_id,
                entry.conversation.0,
                entry.seq,
                entry.by_account.0,
                entry.now_ms,
                entry.expires_ms
            ])
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn append_message(
    conn: &Connection,
    message: &NewMessage,
) -> Result<Appended, StoreError> {
    let earlier = conn
        .prepare_cached(
            "SELECT message_id, conversation_id, seq, created_ms FROM dedup
             WHERE device_id = ?1 AND client_msg_id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![message.sender_device.0, message.client_msg_id.as_str()],
                |row| {
                    Ok(Appended {
                        message_id: MessageId::from_stored(row.get(0)?),
                        conversation: ConversationId(row.get(1)?),
                        seq: row.get(2)?,
                        ts_ms: row.get(3)?,
                        duplicate: true,
                        queued_for: Vec::new(),
                    })
                },
            )
            .optional()
        })
        .map_err(backend)?;
    if let Some(earlier) = earlier {
        return Ok(earlier);
    }
    check_member(conn, message.conversation, message.sender_account)?;
    check_not_blocked(conn, message.conversation, message.sender_account)?;
    let (kind, body, target, about_seq) = apply_body(conn, message)?;
    let seq = super::groups::next_seq(conn, message.conversation)?;
    let message_id = message.message_id.as_str();
    if let Body::Text { media, .. } = &message.body {
        attach_media(conn, message_id, message.conversation, seq, media)?;
    }
    conn.prepare_cached(
        "INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device, client_msg_id, body, created_ms, kind, target_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
            message.now_ms,
            kind,
            target
        ])
    })
    .map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO dedup (device_id, client_msg_id, message_id, conversation_id, seq, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            message.sender_device.0,
            message.client_msg_id.as_str(),
            message_id,
            message.conversation.0,
            seq,
            message.now_ms
        ])
    })
    .map_err(backend)?;
    let mut queued_for = match about_seq {
        Some(about_seq) => members_devices_who_saw(conn, message.conversation, about_seq)?,
        None => member_devices(conn, message.conversation, None)?,
    };
    queued_for.retain(|device| *device != message.sender_device);
    enqueue(
        conn,
        &queued_for,
        &QueueEntry {
            kind: KIND_MESSAGE,
            message_id: Some(message_id),
            conversation: message.conversation,
            seq,
            by_account: message.sender_account,
            now_ms: message.now_ms,
            expires_ms: message.queue_expires_ms,
        },
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

/// In a 1:1 conversation, refuses when either member blocked the other.
fn check_not_blocked(
    conn: &Connection,
    conversation: ConversationId,
    sender: AccountId,
) -> Result<(), StoreError> {
    let blocked = conn
        .prepare_cached(
            "SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id
             JOIN blocks b ON (b.blocker_id = m.account_id AND b.blocked_id = ?2)
                           OR (b.blocker_id = ?2 AND b.blocked_id = m.account_id)
             WHERE c.id = ?1 AND c.kind = 0 AND m.account_id != ?2",
        )
        .and_then(|mut stmt| stmt.exists(params![conversation.0, sender.0]))
        .map_err(backend)?;
    if blocked {
        Err(StoreError::Blocked)
    } else {
        Ok(())
    }
}

/// `UnknownMedia` unless `uploader` uploaded `media_id`.
fn check_own_media(
    conn: &Connection,
    media_id: &str,
    uploader: AccountId,
) -> Result<(), StoreError> {
    let owned = conn
        .prepare_cached("SELECT 1 FROM media WHERE id = ?1 AND uploader_id = ?2")
        .and_then(|mut stmt| stmt.exists(params![media_id, uploader.0]))
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

/// Media ids attached to a message.
pub(super) fn media_of(conn: &Connection, message_id: &str) -> Result<Vec<MediaRef>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.id, m.content_type, m.size_bytes, m.width, m.height, m.thumbnail
             FROM message_media mm JOIN media m ON m.id = mm.media_id
             WHERE mm.message_id = ?1 ORDER BY m.id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([message_id], |row| {
            Ok(MediaRef {
                id: row.get(0)?,
                content_type: row.get(1)?,
                size_bytes: row.get::<_, i64>(2)? as u64,
                width: row.get(3)?,
                height: row.get(4)?,
                thumbnail: row.get(5)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// The text message `target` in `conversation` as `viewer` may see it (sent
/// after the viewer joined): (author, created, deleted, seq).
fn text_target(
    conn: &Connection,
    conversation: ConversationId,
    target: &MessageId,
    viewer: AccountId,
) -> Result<(i64, i64, bool, i64), StoreError> {
    conn.prepare_cached(
        "SELECT m.sender_account, m.created_ms, m.deleted, m.seq FROM messages m
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.account_id = ?4
         WHERE m.id = ?1 AND m.conversation_id = ?2 AND m.kind = ?3 AND m.seq > mb.joined_seq",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            params![target.as_str(), conversation.0, EVENT_TEXT, viewer.0],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get::<_, i64>(2)? != 0,
                    row.get(3)?,
                ))
            },
        )
        .optional()
    })
    .map_err(backend)?
    .ok_or(StoreError::UnknownMessage)
}

/// Validates the body against its target and applies its effect on the
/// target (reaction row, edited text, tombstone). Returns what the event
/// row stores (kind, body, target) and, for an event about an earlier
/// message, that message's seq: members who joined after it must not learn
/// of it.
/// (kind, body, target, seq of the message the event is about).
type AppliedBody = (i64, String, Option<String>, Option<i64>);

fn apply_body(conn: &Connection, message: &NewMessage) -> Result<AppliedBody, StoreError> {
    let conversation = message.conversation;
    let sender = message.sender_account.0;
    let viewer = message.sender_account;
    match &message.body {
        Body::Text {
            text,
            reply_to,
            media,
        } => {
            if let Some(reply_to) = reply_to {
                text_target(conn, conversation, reply_to, viewer)?;
            }
            for media_id in media {
                check_own_media(conn, media_id, viewer)?;
            }
            Ok((
                EVENT_TEXT,
                text.as_str().to_owned(),
                reply_to.as_ref().map(|id| id.to_string()),
                None,
            ))
        }
        Body::Reaction { target, emoji } => {
            let (_, _, deleted, target_seq) = text_target(conn, conversation, target, viewer)?;
            if deleted {
                return Err(StoreError::MessageDeleted);
            }
            match emoji {
                Some(emoji) => conn.execute(
                    "INSERT INTO reactions (message_id, account_id, emoji, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (message_id, account_id) DO UPDATE SET emoji = excluded.emoji, updated_ms = excluded.updated_ms",
                    params![target.as_str(), sender, emoji, message.now_ms],
                ),
                None => conn.execute(
                    "DELETE FROM reactions WHERE message_id = ?1 AND account_id = ?2",
                    params![target.as_str(), sender],
                ),
            }
            .map_err(backend)?;
            Ok((
                EVENT_REACTION,
                emoji.clone().unwrap_or_default(),
                Some(target.to_string()),
                Some(target_seq),
            ))
        }
        Body::Edit {
            target,
            text,
            window_ms,
        } => {
            let (author, created_ms, deleted, target_seq) =
                text_target(conn, conversation, target, viewer)?;
            if author != sender {
                return Err(StoreError::NotAuthor);
            }
            if deleted {
                return Err(StoreError::MessageDeleted);
            }
            if message.now_ms.saturating_sub(created_ms) > *window_ms {
                return Err(StoreError::EditWindowClosed);
            }
            conn.execute(
                "UPDATE messages SET body = ?2, edited_ms = ?3 WHERE id = ?1",
                params![target.as_str(), text.as_str(), message.now_ms],
            )
            .map_err(backend)?;
            Ok((
                EVENT_EDIT,
                text.as_str().to_owned(),
                Some(target.to_string()),
                Some(target_seq),
            ))
        }
        Body::Delete { target } => {
            let (author, _, deleted, target_seq) = text_target(conn, conversation, target, viewer)?;
            if author != sender {
                return Err(StoreError::NotAuthor);
            }
            if deleted {
                return Err(StoreError::MessageDeleted);
            }
            // Purge the text everywhere it is stored: the message and the
            // edit events that carried later versions of it.
            conn.execute(
                "UPDATE messages SET body = '', deleted = 1 WHERE id = ?1",
                [target.as_str()],
            )
            .map_err(backend)?;
            conn.execute(
                "UPDATE messages SET body = '' WHERE target_id = ?1 AND kind = ?2",
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
            Ok((
                EVENT_DELETE,
                String::new(),
                Some(target.to_string()),
                Some(target_seq),
            ))
        }
    }
}

pub(super) fn pending(
    conn: &Connection,
    device: DeviceId,
    after: QueuePos,
    limit: usize,
    now_ms: UnixMillis,
) -> Result<Vec<QueueItem>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT q.pos, q.kind, q.message_id, q.conversation_id, q.seq, q.created_ms, a.username,
                    m.sender_device, m.client_msg_id, m.body, m.created_ms,
                    m.kind, m.target_id, m.edited_ms, m.deleted,
                    EXISTS (SELECT 1 FROM message_media mm WHERE mm.message_id = q.message_id)
             FROM queue q
             JOIN accounts a ON a.id = q.by_account
             LEFT JOIN messages m ON m.id = q.message_id AND q.kind = 0
             WHERE q.device_id = ?1 AND q.pos > ?2 AND q.expires_ms > ?3
             ORDER BY q.pos LIMIT ?4",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![device.0, after, now_ms, limit as i64], |row| {
            let pos: i64 = row.get(0)?;
            let kind: i64 = row.get(1)?;
            let message_id: Option<String> = row.get(2)?;
            let conversation = ConversationId(row.get(3)?);
            let seq: i64 = row.get(4)?;
            let queued_ms: i64 = row.get(5)?;
            let by: String = row.get(6)?;
            let item = match (kind, message_id) {
                (KIND_MESSAGE, Some(message_id)) => {
                    let body: Option<String> = row.get(9)?;
                    // A body purged under a live entry cannot happen (purges
                    // check the queue); skip rather than fail the whole page.
                    body.map(|text| -> rusqlite::Result<QueueItem> {
                        Ok(QueueItem::Message {
                            pos,
                            message_id: MessageId::from_stored(message_id),
                            conversation,
                            seq,
                            from: by,
                            from_device: DeviceId(row.get(7)?),
                            client_msg_id: row.get(8)?,
                            text,
                            media: Vec::new(),
                            kind: super::groups::event_kind(row.get(11)?),
                            target: row
                                .get::<_, Option<String>>(12)?
                                .map(MessageId::from_stored),
                            edited_ms: row.get(13)?,
                            deleted: row.get::<_, i64>(14)? != 0,
                            ts_ms: row.get(10)?,
                        })
                    })
                    .transpose()?
                }
                (KIND_DELIVERED, Some(message_id)) => Some(QueueItem::Delivered {
                    pos,
                    conversation,
                    message_id: MessageId::from_stored(message_id),
                    seq,
                    by,
                    ts_ms: queued_ms,
                }),
                (KIND_READ, _) => Some(QueueItem::Read {
                    pos,
                    conversation,
                    seq,
                    by,
                    ts_ms: queued_ms,
                }),
                _ => None,
            };
            Ok((item, row.get::<_, bool>(15)?))
        })
        .map_err(backend)?;
    let mut items = Vec::new();
    for row in rows {
        let (item, has_media) = row.map_err(backend)?;
        let Some(mut item) = item else { continue };
        // Only texts with attachments cost a second query (the hot path is
        // plain text).
        if let (
            true,
            QueueItem::Message {
                message_id, media, ..
            },
        ) = (has_media, &mut item)
        {
            *media = media_of(conn, message_id.as_str())?;
        }
        items.push(item);
    }
    Ok(items)
}

pub(super) fn ack(conn: &Connection, ack: &AckRequest) -> Result<AckOutcome, StoreError> {
    type Acked = (i64, i64, Option<String>, i64, i64, i64);
    let read_acked = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Acked> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
        ))
    };
    let mut acked: Vec<Acked> = Vec::new();
    // Two statement shapes, each able to use an index: a range over
    // (device_id, pos) and a primary-key lookup per listed position. (One
    // `pos <= ? OR pos = ?` statement would scan the device's whole queue.)
    if let Some(up_to) = ack.up_to {
        let mut range = conn
            .prepare_cached(
                "DELETE FROM queue WHERE device_id = ?1 AND pos <= ?2
                 RETURNING pos, kind, message_id, conversation_id, seq, by_account",
            )
            .map_err(backend)?;
        let rows = range
            .query_map(params![ack.device.0, up_to], read_acked)
            .map_err(backend)?;
        for row in rows {
            acked.push(row.map_err(backend)?);
        }
    }
    let mut single = conn
        .prepare_cached(
            "DELETE FROM queue WHERE pos = ?2 AND device_id = ?1
             RETURNING pos, kind, message_id, conversation_id, seq, by_account",
        )
        .map_err(backend)?;
    for pos in &ack.positions {
        let rows = single
            .query_map(params![ack.device.0, pos], read_acked)
            .map_err(backend)?;
        for row in rows {
            acked.push(row.map_err(backend)?);
        }
    }
    // Receipts are queued in the order of the acked entries, i.e. seq order
    // within a conversation, however the ack listed them.
    acked.sort_unstable_by_key(|entry| entry.0);
    acked.dedup_by_key(|entry| entry.0);
    let mut outcome = AckOutcome {
        removed: acked.len() as u64,
        queued_for: Vec::new(),
    };
    for (_pos, kind, message_id, conversation, seq, sender) in acked {
        let Some(message_id) = message_id.filter(|_| kind == KIND_MESSAGE) else {
            continue;
        };
        // Receipts are for texts only: not for group events, reactions,
        // edits or deletes.
        if sender != ack.account.0 {
            // One statement records the first receipt, for texts only.
            let first = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO receipts (message_id, account_id, delivered_ms)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND kind = 0)",
                )
                .and_then(|mut stmt| stmt.execute(params![message_id, ack.account.0, ack.now_ms]))
                .map_err(backend)?
                == 1;
            // The receipt is recorded either way, but a sender who has left
            // the conversation hears nothing more of it.
            if first && is_member(conn, ConversationId(conversation), AccountId(sender))? {
                let woken = account_devices(conn, AccountId(sender))?;
                enqueue(
                    conn,
                    &woken,
                    &QueueEntry {
                        kind: KIND_DELIVERED,
                        message_id: Some(&message_id),
                        conversation: ConversationId(conversation),
                        seq,
                        by_account: ack.account,
                        now_ms: ack.now_ms,
                        expires_ms: ack.queue_expires_ms,
                    },
                )?;
                outcome.queued_for.extend(woken);
            }
        }
        if ack.purge_acked_bodies {
            purge_if_unqueued(conn, &message_id)?;
        }
    }
    outcome.queued_for.sort();
    outcome.queued_for.dedup();
    Ok(outcome)
}

fn purge_if_unqueued(conn: &Connection, message_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM messages WHERE id = ?1
         AND NOT EXISTS (SELECT 1 FROM queue WHERE message_id = ?1 AND kind = 0)",
    )
    .and_then(|mut stmt| stmt.execute([message_id]))
    .map_err(backend)?;
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
            queued_for: Vec::new(),
        });
    }
    conn.execute(
        "UPDATE members SET read_seq = ?3, read_ms = ?4 WHERE conversation_id = ?1 AND account_id = ?2",
        params![read.conversation.0, read.account.0, target, read.now_ms],
    )
    .map_err(backend)?;
    let queued_for = member_devices(conn, read.conversation, Some(read.account))?;
    enqueue(
        conn,
        &queued_for,
        &QueueEntry {
            kind: KIND_READ,
            message_id: None,
            conversation: read.conversation,
            seq: target,
            by_account: read.account,
            now_ms: read.now_ms,
            expires_ms: read.queue_expires_ms,
        },
    )?;
    Ok(ReadOutcome {
        seq: target,
        queued_for,
    })
}

pub(super) fn sweep(conn: &Connection, sweep: &SweepRequest) -> Result<SweepOutcome, StoreError> {
    let limit = sweep.limit as i64;
    let expired_entries = conn
        .execute(
            "DELETE FROM queue WHERE pos IN (SELECT pos FROM queue WHERE expires_ms <= ?1 LIMIT ?2)",
            params![sweep.now_ms, limit],
        )
        .map_err(backend)? as u64;
    let purged_bodies = conn
        .execute(
            "DELETE FROM messages WHERE id IN (
                SELECT id FROM messages WHERE created_ms < ?1
                AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = messages.id AND q.kind = 0)
                LIMIT ?2)",
            params![sweep.bodies_before_ms, limit],
        )
        .map_err(backend)? as u64;
    // Receipts, reactions and media links whose message body is gone go
    // with it (unlinked media are then collected after their grace).
    for (table, other_key) in [
        ("message_media", "media_id"),
        ("receipts", "account_id"),
        ("reactions", "account_id"),
    ] {
        conn.execute(
            &format!(
                "DELETE FROM {table} WHERE (message_id, {other_key}) IN (
                    SELECT t.message_id, t.{other_key} FROM {table} t
                    WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id) LIMIT ?1)"
            ),
            [limit],
        )
        .map_err(backend)?;
    }
    let purged_dedup = conn
        .execute(
            "DELETE FROM dedup WHERE (device_id, client_msg_id) IN
                (SELECT device_id, client_msg_id FROM dedup WHERE created_ms < ?1 LIMIT ?2)",
            params![sweep.dedup_before_ms, limit],
        )
        .map_err(backend)? as u64;
    Ok(SweepOutcome {
        expired_entries,
        purged_bodies,
        purged_dedup,
    })
}

pub(super) fn queue_depth(conn: &Connection, device: DeviceId) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM queue WHERE device_id = ?1",
        [device.0],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(backend)
}

pub(super) fn create_media(conn: &Connection, media: &MediaRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO media (id, uploader_id, content_type, size_bytes, sha256, created_ms, width, height, thumbnail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            media.id,
            media.uploader.0,
            media.content_type,
            media.size_bytes as i64,
            media.sha256,
            media.created_ms,
            media.width,
            media.height,
            media.thumbnail
        ],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn media_for(
    conn: &Connection,
    account: AccountId,
    id: &str,
) -> Result<Option<MediaRecord>, StoreError> {
    conn.query_row(
        "SELECT id, uploader_id, content_type, size_bytes, sha256, created_ms, width, height, thumbnail FROM media
         WHERE id = ?1 AND (uploader_id = ?2 OR EXISTS (
             SELECT 1 FROM message_media mm
             JOIN members mb ON mb.conversation_id = mm.conversation_id AND mb.account_id = ?2
             WHERE mm.media_id = media.id AND mm.seq > mb.joined_seq))",
        params![id, account.0],
        |row| {
            Ok(MediaRecord {
                id: row.get(0)?,
                uploader: AccountId(row.get(1)?),
                content_type: row.get(2)?,
                size_bytes: row.get::<_, i64>(3)? as u64,
                sha256: row.get(4)?,
                created_ms: row.get(5)?,
                width: row.get(6)?,
                height: row.get(7)?,
                thumbnail: row.get(8)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}

pub(super) fn take_unreferenced_media(
    conn: &Connection,
    before_ms: UnixMillis,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM media WHERE id IN (
                SELECT id FROM media WHERE created_ms < ?1
                AND NOT EXISTS (SELECT 1 FROM message_media mm WHERE mm.media_id = media.id)
                LIMIT ?2)
             RETURNING id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![before_ms, limit as i64], |row| row.get(0))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn device_owner(
    conn: &Connection,
    device: DeviceId,
) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT a.username FROM devices d JOIN accounts a ON a.id = d.account_id WHERE d.id = ?1",
        [device.0],
        |row| row.get(0),
    )
    .optional()
    .map_err(backend)
}

pub(super) fn queue_depth_total(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row("SELECT count(*) FROM queue", [], |row| row.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(backend)
}
