//! The SQLite schema and its migrations, versioned by `PRAGMA user_version`.
//! Append a migration to add a change; never edit a published one.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, 1:1 conversations, messages, queues, receipts.
    "
    -- AUTOINCREMENT on ids: a deleted account, device or conversation never
    -- lends its id to a new one (dedup keys and receipts refer to them).
    CREATE TABLE accounts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        phone         TEXT,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE devices (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id   INTEGER NOT NULL REFERENCES accounts(id),
        name         TEXT NOT NULL,
        token_hash   BLOB NOT NULL UNIQUE,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE INDEX devices_by_account ON devices(account_id);
    CREATE TABLE conversations (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        direct_key TEXT UNIQUE,
        last_seq   INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE members (
        conversation_id INTEGER NOT NULL REFERENCES conversations(id),
        account_id      INTEGER NOT NULL REFERENCES accounts(id),
        read_seq        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation_id, account_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_account ON members(account_id);
    CREATE TABLE messages (
        id              TEXT PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id),
        seq             INTEGER NOT NULL,
        sender_account  INTEGER NOT NULL,
        sender_device   INTEGER NOT NULL,
        client_msg_id   TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_ms      INTEGER NOT NULL,
        UNIQUE (conversation_id, seq)
    );
    CREATE INDEX messages_by_age ON messages(created_ms);
    CREATE TABLE dedup (
        device_id       INTEGER NOT NULL,
        client_msg_id   TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        conversation_id INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        PRIMARY KEY (device_id, client_msg_id)
    ) WITHOUT ROWID;
    CREATE INDEX dedup_by_age ON dedup(created_ms);
    -- kind: 0 message, 1 delivered receipt, 2 read receipt.
    -- AUTOINCREMENT: a position is never reused, so client cursors only move forward.
    CREATE TABLE queue (
        pos             INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id       INTEGER NOT NULL,
        kind            INTEGER NOT NULL,
        message_id      TEXT,
        conversation_id INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        by_account      INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        expires_ms      INTEGER NOT NULL
    );
    CREATE INDEX queue_by_device ON queue(device_id, pos);
    CREATE INDEX queue_by_message ON queue(message_id) WHERE kind = 0;
    CREATE INDEX queue_by_expiry ON queue(expires_ms);
    CREATE TABLE receipts (
        message_id   TEXT NOT NULL,
        account_id   INTEGER NOT NULL,
        delivered_ms INTEGER NOT NULL,
        PRIMARY KEY (message_id, account_id)
    ) WITHOUT ROWID;
    ",
    // 2: groups, message kinds, reactions, contacts, blocks, presence.
    "
    -- kind: 0 direct, 1 group.
    ALTER TABLE conversations ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN name TEXT;
    -- role: 0 member, 1 admin. A member sees events with seq > joined_seq.
    ALTER TABLE members ADD COLUMN role INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE members ADD COLUMN joined_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE members ADD COLUMN read_ms INTEGER NOT NULL DEFAULT 0;
    -- kind: 0 text, 1 system, 2 reaction, 3 edit, 4 delete. target_id: the
    -- message replied to or acted on.
    ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN target_id TEXT;
    ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_by_target ON messages(target_id) WHERE target_id IS NOT NULL;
    CREATE TABLE reactions (
        message_id  TEXT NOT NULL,
        account_id  INTEGER NOT NULL,
        emoji       TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL,
        PRIMARY KEY (message_id, account_id)
    ) WITHOUT ROWID;
    CREATE TABLE contacts (
        owner_id    INTEGER NOT NULL,
        contact_id  INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (owner_id, contact_id)
    ) WITHOUT ROWID;
    CREATE TABLE blocks (
        blocker_id  INTEGER NOT NULL,
        blocked_id  INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (blocker_id, blocked_id)
    ) WITHOUT ROWID;
    CREATE INDEX blocks_by_blocked ON blocks(blocked_id);
    -- presence_visibility: 0 everyone, 1 contacts, 2 nobody.
    ALTER TABLE accounts ADD COLUMN presence_visibility INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN last_seen_ms INTEGER NOT NULL DEFAULT 0;
    ",
    // 3: media records (the bytes live in Blobs).
    "
    CREATE TABLE media (
        id            TEXT PRIMARY KEY,
        uploader_id   INTEGER NOT NULL,
        content_type  TEXT NOT NULL,
        size_bytes    INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        -- For images: pixel size and whether a thumbnail blob exists.
        width         INTEGER,
        height        INTEGER,
        thumbnail     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX media_by_age ON media(created_ms);
    -- Which texts carry which media; members who saw the text may read it.
    CREATE TABLE message_media (
        message_id      TEXT NOT NULL,
        media_id        TEXT NOT NULL,
        conversation_id INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        PRIMARY KEY (message_id, media_id)
    ) WITHOUT ROWID;
    CREATE INDEX message_media_by_media ON message_media(media_id);
    ",
    // 4: the session directory (which node holds which live device).
    "
    CREATE TABLE nodes (
        id             TEXT PRIMARY KEY,
        lease_until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        device_id  INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        node_id    TEXT NOT NULL,
        since_ms   INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_account ON sessions(account_id);
    CREATE INDEX sessions_by_node ON sessions(node_id);
    ",
    // 5: positions instead of queues (issue 15). A message is one row keyed
    // by (conversation, seq) that also carries its dedup key; what waits for
    // a device is every event above its position; receipts are cursors on
    // members. The queue, receipts and dedup tables go.
    "
    CREATE TABLE events (
        conversation_id INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        id              TEXT NOT NULL,
        sender_account  INTEGER NOT NULL,
        sender_device   INTEGER NOT NULL,
        client_msg_id   TEXT NOT NULL,
        kind            INTEGER NOT NULL,
        -- NULL once purged (retention, store-and-forward): the row stays
        -- while its client_msg_id must still deduplicate retries.
        body            TEXT,
        target_id       TEXT,
        edited_ms       INTEGER,
        deleted         INTEGER NOT NULL DEFAULT 0,
        created_ms      INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    -- Before this version one device could store a client_msg_id twice
    -- once its dedup record had aged out; the first one is kept.
    CREATE UNIQUE INDEX events_by_client_id ON events(sender_device, client_msg_id)
        WHERE client_msg_id != '';
    INSERT OR IGNORE INTO events (conversation_id, seq, id, sender_account, sender_device,
                                  client_msg_id, kind, body, target_id, edited_ms, deleted, created_ms)
        SELECT conversation_id, seq, id, sender_account, sender_device, client_msg_id,
               kind, body, target_id, edited_ms, deleted, created_ms
        FROM messages ORDER BY id;
    DROP TABLE messages;
    ALTER TABLE events RENAME TO messages;
    DROP INDEX events_by_client_id;
    CREATE UNIQUE INDEX messages_by_id ON messages(id);
    -- System events carry no client_msg_id ('') and are never retried.
    CREATE UNIQUE INDEX messages_by_client_id ON messages(sender_device, client_msg_id)
        WHERE client_msg_id != '';
    CREATE INDEX messages_by_target ON messages(target_id) WHERE target_id IS NOT NULL;

    CREATE TABLE positions (
        device_id       INTEGER NOT NULL,
        conversation_id INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        PRIMARY KEY (device_id, conversation_id)
    ) WITHOUT ROWID;
    -- Where the old queues stood: below the first queued message, or at the
    -- conversation's end when nothing was queued.
    INSERT INTO positions (device_id, conversation_id, seq)
        SELECT d.id, m.conversation_id,
               COALESCE((SELECT MIN(q.seq) - 1 FROM queue q
                         WHERE q.device_id = d.id AND q.conversation_id = m.conversation_id
                         AND q.kind = 0), c.last_seq)
        FROM devices d
        JOIN members m ON m.account_id = d.account_id
        JOIN conversations c ON c.id = m.conversation_id;

    ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE members ADD COLUMN delivered_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE members SET (delivered_seq, delivered_ms) = (
        SELECT COALESCE(MAX(g.seq), 0), COALESCE(MAX(r.delivered_ms), 0)
        FROM receipts r JOIN messages g ON g.id = r.message_id
        WHERE r.account_id = members.account_id AND g.conversation_id = members.conversation_id);

    -- Who left or was removed: their devices still get events up to the
    -- one recording it (left_seq), and nothing later.
    CREATE TABLE departures (
        conversation_id INTEGER NOT NULL,
        account_id      INTEGER NOT NULL,
        joined_seq      INTEGER NOT NULL,
        left_seq        INTEGER NOT NULL,
        left_ms         INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, account_id)
    ) WITHOUT ROWID;
    CREATE INDEX departures_by_account ON departures(account_id);

    -- The sweep walks each conversation from where it stopped instead of
    -- keeping an age index: bodies up to purged_seq were considered (gone
    -- when past retention), rows up to dropped_seq are deleted.
    ALTER TABLE conversations ADD COLUMN purged_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN dropped_seq INTEGER NOT NULL DEFAULT 0;

    DROP TABLE queue;
    DROP TABLE receipts;
    DROP TABLE dedup;
    ",
    // 6: fewer pages written per send (issue 15). A commit writes every page
    // it dirtied to the WAL, and a send to a conversation nobody else in the
    // batch touched dirtied a page of its own in the table clustered by
    // (conversation, seq) and another in the dedup index clustered by device.
    // Rows now append in arrival order (rowid), with (conversation, seq) as a
    // narrow index, and the dedup index leads with the client's id, which
    // our clients make time-ordered, so concurrent sends share its last page.
    "
    CREATE TABLE events (
        rid             INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL,
        seq             INTEGER NOT NULL,
        id              TEXT NOT NULL,
        sender_account  INTEGER NOT NULL,
        sender_device   INTEGER NOT NULL,
        client_msg_id   TEXT NOT NULL,
        kind            INTEGER NOT NULL,
        body            TEXT,
        target_id       TEXT,
        edited_ms       INTEGER,
        deleted         INTEGER NOT NULL DEFAULT 0,
        created_ms      INTEGER NOT NULL
    );
    INSERT INTO events (conversation_id, seq, id, sender_account, sender_device,
                        client_msg_id, kind, body, target_id, edited_ms, deleted, created_ms)
        SELECT conversation_id, seq, id, sender_account, sender_device, client_msg_id,
               kind, body, target_id, edited_ms, deleted, created_ms
        FROM messages ORDER BY id;
    DROP TABLE messages;
    ALTER TABLE events RENAME TO messages;
    CREATE UNIQUE INDEX messages_by_seq ON messages(conversation_id, seq);
    CREATE UNIQUE INDEX messages_by_id ON messages(id);
    CREATE UNIQUE INDEX messages_by_client_id ON messages(client_msg_id, sender_device)
        WHERE client_msg_id != '';
    CREATE INDEX messages_by_target ON messages(target_id) WHERE target_id IS NOT NULL;
    ",
    // 7: devices unused for a while expire (issue 16): the sweeper finds
    // them by when they were last seen.
    "
    CREATE INDEX devices_by_last_seen ON devices(last_seen_ms);
    ",
    // 8: a send remembers what it asked for (`rules::fingerprint`), so a
    // client_msg_id reused for another message is refused rather than
    // answered as a retry (issue 16). Earlier rows have none and match any.
    "
    ALTER TABLE messages ADD COLUMN fingerprint INTEGER;
    ",
    // 9: revocations are numbered, so every node and the server an
    // operator's `missive admin` did not talk to hear of them (issue 16).
    "
    CREATE TABLE revocations (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id INTEGER NOT NULL
    );
    ",
    // 10: operators suspend accounts and invite registrations (issue 16).
    // An invite is kept once used, naming who used it.
    "
    ALTER TABLE accounts ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE invites (
        code_hash  BLOB PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_by    INTEGER REFERENCES accounts(id)
    ) WITHOUT ROWID;
    ",
    // 11: media keeps the name its uploader gave the file (issue 16).
    "
    ALTER TABLE media ADD COLUMN filename TEXT;
    ",
    // 12: a conversation remembers its last event's time, so no event is
    // stamped earlier than the one before it when node clocks differ
    // (issue 18). Each conversation starts from its latest stored time.
    "
    ALTER TABLE conversations ADD COLUMN last_ts_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE conversations SET last_ts_ms = coalesce(
        (SELECT max(created_ms) FROM messages WHERE conversation_id = conversations.id), 0);
    ",
    // 13: `missive migrate` seals a store it moves to PostgreSQL (issue 21):
    // a server refuses to open it, so nothing is written where the cluster
    // will never read it, and an interrupted migration resumes from a
    // source that has not changed. One row at most.
    "
    CREATE TABLE relocation (
        only_row     INTEGER PRIMARY KEY CHECK (only_row = 1),
        migration_id TEXT NOT NULL,
        -- The PostgreSQL URL without its password.
        target       TEXT NOT NULL,
        started_ms   INTEGER NOT NULL,
        finished_ms  INTEGER
    );
    ",
    // 14: end-to-end encryption keys (issue 22): each device's identity
    // keys, and the one-time keys others claim, each once.
    "
    CREATE TABLE device_keys (
        device_id  INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        curve25519 TEXT NOT NULL,
        ed25519    TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX device_keys_by_account ON device_keys(account_id);
    CREATE TABLE one_time_keys (
        device_id INTEGER NOT NULL,
        key_id    TEXT NOT NULL,
        key       TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (device_id, key_id)
    ) WITHOUT ROWID;
    ",
    // 15: to-device messages (issue 22): Olm-encrypted key shares for one
    // device each, waiting until it acks them. The one place a row per
    // recipient device is right: each is encrypted for its device alone.
    // AUTOINCREMENT: a seq is never reused, so a device's cursor only
    // moves forward.
    "
    CREATE TABLE to_device (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id      INTEGER NOT NULL,
        sender_account INTEGER NOT NULL,
        sender_device  INTEGER NOT NULL,
        body           TEXT NOT NULL,
        created_ms     INTEGER NOT NULL
    );
    CREATE INDEX to_device_by_device ON to_device(device_id, seq);
    ",
    // 16: end-to-end encrypted conversations (issue 22): once on, every
    // message of the conversation is ciphertext (kind 5).
    "
    ALTER TABLE conversations ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
    ",
    // 17: disappearing messages (issue 22): a conversation's timer, and
    // each event's expiry as it was sent; the sweep finds expired bodies
    // by the partial index, which holds only events with an expiry.
    "
    ALTER TABLE conversations ADD COLUMN disappear_secs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN expires_ms INTEGER;
    CREATE INDEX messages_by_expiry ON messages(expires_ms) WHERE expires_ms IS NOT NULL;
    ",
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database to the latest version, one transaction per step.
/// Refuses a database written by a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|err| err.to_string())?;
    if current > latest_version() {
        return Err(format!(
            "database schema version {current} is newer than this build supports ({})",
            latest_version()
        ));
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = idx as i64 + 1;
        let tx = conn.transaction().map_err(|err| err.to_string())?;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .map_err(|err| format!("migration to version {version} failed: {err}"))?;
        tx.commit().map_err(|err| err.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_version(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn
    }

    #[test]
    fn version_6_keeps_every_event_and_its_dedup_key() {
        let mut conn = at_version(5);
        conn.execute_batch(
            "INSERT INTO conversations (id, last_seq, created_ms) VALUES (7, 2, 0);
             INSERT INTO messages (conversation_id, seq, id, sender_account, sender_device,
                                   client_msg_id, kind, body, created_ms)
             VALUES (7, 2, '0002', 1, 1, 'c-2', 0, 'second', 20),
                    (7, 1, '0001', 1, 1, 'c-1', 0, NULL, 10);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, latest_version());
        let rows: Vec<(i64, i64, String, Option<String>)> = conn
            .prepare("SELECT rid, seq, id, body FROM messages ORDER BY rid")
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Arrival order follows the time-ordered id; a purged body stays purged.
        assert_eq!(
            rows,
            vec![
                (1, 1, "0001".to_string(), None),
                (2, 2, "0002".to_string(), Some("second".to_string())),
            ]
        );
        // The dedup key and the (conversation, seq) key still refuse a second copy.
        let again = conn.execute(
            "INSERT INTO messages (conversation_id, seq, id, sender_account, sender_device,
                                   client_msg_id, kind, created_ms)
             VALUES (7, 3, '0003', 1, 1, 'c-1', 0, 30)",
            [],
        );
        assert!(again.is_err(), "a reused client_msg_id was stored twice");
        let same_seq = conn.execute(
            "INSERT INTO messages (conversation_id, seq, id, sender_account, sender_device,
                                   client_msg_id, kind, created_ms)
             VALUES (7, 2, '0004', 1, 1, 'c-4', 0, 40)",
            [],
        );
        assert!(same_seq.is_err(), "two events took one seq");
    }

    #[test]
    fn version_12_starts_each_conversation_clock_at_its_latest_event() {
        let mut conn = at_version(11);
        conn.execute_batch(
            "INSERT INTO conversations (id, last_seq, created_ms) VALUES (7, 2, 0), (8, 0, 5);
             INSERT INTO messages (conversation_id, seq, id, sender_account, sender_device,
                                   client_msg_id, kind, body, created_ms)
             VALUES (7, 1, '0001', 1, 1, 'c-1', 0, 'first', 90),
                    (7, 2, '0002', 1, 1, 'c-2', 0, 'second', 60);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let clocks: Vec<(i64, i64)> = conn
            .prepare("SELECT id, last_ts_ms FROM conversations ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The latest time, not the last seq's (an earlier build could stamp
        // a later seq earlier); a conversation without events starts at 0.
        assert_eq!(clocks, vec![(7, 90), (8, 0)]);
    }
}
