//! The PostgreSQL schema, migrated by refinery (history in
//! `refinery_schema_history`). Append a migration to add a change; never
//! edit a published one (refinery refuses a changed checksum).

use refinery::{Migration, Runner};
use tokio_postgres::Client;

use super::fault::{Fault, Outcome};

/// (refinery name `V<version>__<name>`, SQL), oldest first.
const MIGRATIONS: &[(&str, &str)] = &[
    ("V1__core", include_str!("migrations/V1__core.sql")),
    ("V2__sessions", include_str!("migrations/V2__sessions.sql")),
    (
        "V3__positions",
        include_str!("migrations/V3__positions.sql"),
    ),
    (
        "V4__device_expiry",
        include_str!("migrations/V4__device_expiry.sql"),
    ),
    (
        "V5__send_fingerprint",
        include_str!("migrations/V5__send_fingerprint.sql"),
    ),
    (
        "V6__revocations",
        include_str!("migrations/V6__revocations.sql"),
    ),
    (
        "V7__suspensions_invites",
        include_str!("migrations/V7__suspensions_invites.sql"),
    ),
    (
        "V8__media_filenames",
        include_str!("migrations/V8__media_filenames.sql"),
    ),
    (
        "V9__conversation_clock",
        include_str!("migrations/V9__conversation_clock.sql"),
    ),
    (
        "V10__reaction_conversation",
        include_str!("migrations/V10__reaction_conversation.sql"),
    ),
    (
        "V11__device_keys",
        include_str!("migrations/V11__device_keys.sql"),
    ),
    (
        "V12__to_device",
        include_str!("migrations/V12__to_device.sql"),
    ),
    (
        "V13__encrypted_conversations",
        include_str!("migrations/V13__encrypted_conversations.sql"),
    ),
    (
        "V14__disappearing_messages",
        include_str!("migrations/V14__disappearing_messages.sql"),
    ),
];

/// Brings the schema to the latest version. Nodes starting together would
/// race to create the same tables, so the run is serialized by a
/// session-level advisory lock, keyed by the schema so that databases
/// shared by several schemas (tests) do not wait on each other. The lock
/// dies with the connection if this node does.
pub(super) async fn migrate(client: &mut Client) -> Outcome<()> {
    const LOCK_KEY: &str =
        "SELECT hashtextextended('missive migrations ' || coalesce(current_schema(), ''), 0)";
    let key: i64 = client.query_one(LOCK_KEY, &[]).await?.try_get(0)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await?;
    let migrated = run(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    migrated?;
    unlocked?;
    Ok(())
}

async fn run(client: &mut Client) -> Outcome<()> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Fault::Corrupt(format!("bad migration: {err}")))?;
    Runner::new(&migrations)
        .run_async(client)
        .await
        .map_err(|err| Fault::Corrupt(format!("migration failed: {err}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::MessageStore;
    use missive_core::{AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText};

    use super::*;
    use crate::model::{Body, NewMessage};
    use crate::postgres::testing::{FreshSchema, client, column_of};
    use crate::{PostgresConfig, PostgresStore, Store};

    /// What a version-2 database held: queues, receipts, dedup records,
    /// bodies the old sweep deleted, a client_msg_id used twice.
    /// alice(1) a1(1); bob(2) b1(2) b2(3); carol(4) c1(4), removed from
    /// the group; dave(5) d1(5) in nothing. Conversation 1: alice–bob,
    /// seqs 1-4, seq 3's row swept (its dedup record left). Conversation
    /// 2: the group, created (1), a text of bob's (2), carol removed (3).
    const VERSION_2_DATA: &str = "
        INSERT INTO accounts (id, username, password_hash, created_ms) OVERRIDING SYSTEM VALUE
        VALUES (1, 'alice', 'h', 0), (2, 'bob', 'h', 0), (4, 'carol', 'h', 0), (5, 'dave', 'h', 0);
        INSERT INTO devices (id, account_id, name, token_hash, created_ms, last_seen_ms)
        OVERRIDING SYSTEM VALUE
        VALUES (1, 1, 'a1', '\\x01', 0, 0), (2, 2, 'b1', '\\x02', 0, 0),
               (3, 2, 'b2', '\\x03', 0, 0), (4, 4, 'c1', '\\x04', 0, 0), (5, 5, 'd1', '\\x05', 0, 0);
        INSERT INTO conversations (id, kind, name, direct_key, last_seq, created_ms)
        OVERRIDING SYSTEM VALUE
        VALUES (1, 0, NULL, '1:2', 4, 0), (2, 1, 'team', NULL, 3, 0);
        INSERT INTO members (conversation_id, account_id, role, joined_seq, read_seq)
        VALUES (1, 1, 0, 0, 0), (1, 2, 0, 0, 1), (2, 1, 1, 0, 0), (2, 2, 0, 0, 0);
        INSERT INTO messages (id, conversation_id, seq, sender_account, sender_device,
                              client_msg_id, kind, body, created_ms)
        VALUES ('m1', 1, 1, 1, 1, 'c1', 0, 'one', 10),
               ('m2', 1, 2, 2, 2, 'x2', 0, 'two', 20),
               ('m4', 1, 4, 1, 1, 'c1', 0, 'four', 40),
               ('g1', 2, 1, 1, 1, '', 1, '{}', 10),
               ('g2', 2, 2, 2, 2, 'x3', 0, 'hi', 20),
               ('g3', 2, 3, 1, 1, '', 1, '{}', 30);
        INSERT INTO dedup (device_id, client_msg_id, message_id, conversation_id, seq, created_ms)
        VALUES (1, 'c3', 'm3', 1, 3, 30), (1, 'c1', 'm4', 1, 4, 40), (2, 'x2', 'm2', 1, 2, 20);
        INSERT INTO queue (device_id, kind, message_id, conversation_id, seq, by_account,
                           created_ms, expires_ms)
        VALUES (1, 0, 'm2', 1, 2, 2, 20, 99), (2, 0, 'm4', 1, 4, 1, 40, 99),
               (2, 1, 'm1', 1, 1, 1, 50, 99), (4, 0, 'g2', 2, 2, 2, 20, 99),
               (4, 0, 'g3', 2, 3, 1, 30, 99);
        INSERT INTO receipts (message_id, account_id, delivered_ms)
        VALUES ('m1', 2, 111), ('m3', 2, 333), ('m2', 1, 222);
        INSERT INTO reactions (message_id, account_id, emoji, updated_ms)
        VALUES ('m1', 2, 'a', 0), ('m3', 2, 'b', 0);
        INSERT INTO message_media (message_id, media_id, conversation_id, seq)
        VALUES ('m1', 'p1', 1, 1), ('m3', 'p3', 1, 3);
    ";

    #[tokio::test]
    async fn version_3_moves_queues_to_positions() {
        // Goal: migrating a version-2 database keeps every message's id and
        // seq, derives positions, departures and delivered cursors from the
        // queues and receipts, keeps swept messages' dedup keys, and drops
        // the old tables; the store then works on the result.
        // Method: versions 1-2 and their data in a schema of its own, then
        // a store connects (migrating) and the tables and a few calls are
        // inspected.
        let Some(schema) = FreshSchema::create("migration").await else {
            return;
        };
        let url = schema.url.clone();
        let old = version_2_database(&url).await;
        let store = PostgresStore::connect(&PostgresConfig::new(url.clone()))
            .await
            .expect("connect and migrate");
        let db = client(&url).await.expect("inspect");
        assert_tables_migrated(&db).await;
        assert_store_works_on_the_result(&store).await;
        store.shutdown().await;
        drop(old);
        schema.drop().await;
    }

    /// Versions 1-2 of the schema and their data; the client stays open
    /// for the test's length.
    async fn version_2_database(url: &str) -> Client {
        let mut old = client(url).await.expect("connect to the schema");
        let migrations = MIGRATIONS[..2]
            .iter()
            .map(|(name, sql)| Migration::unapplied(name, sql).expect("migration"))
            .collect::<Vec<_>>();
        Runner::new(&migrations)
            .run_async(&mut old)
            .await
            .expect("versions 1-2");
        old.batch_execute(VERSION_2_DATA)
            .await
            .expect("version 2 data");
        old
    }

    /// The migrated tables: messages, positions, departures and delivered
    /// cursors as version 3 derives them, and the old tables gone.
    async fn assert_tables_migrated(db: &Client) {
        assert_eq!(
            column_of(
                db,
                "SELECT id || ':' || conversation_id || '/' || seq || ':' || client_msg_id || ':'
                        || coalesce(body, '-') FROM messages ORDER BY conversation_id, seq"
            )
            .await,
            [
                "m1:1/1:c1 m1:one",
                "m2:1/2:x2:two",
                "m3:1/3:c3:-",
                "m4:1/4:c1:four",
                "g1:2/1::{}",
                "g2:2/2:x3:hi",
                "g3:2/3::{}",
            ],
            "ids and seqs kept, the swept one's key kept, the older reuse renamed"
        );
        assert_eq!(
            column_of(
                db,
                "SELECT device_id || ':' || conversation_id || '=' || seq FROM positions
                 ORDER BY device_id, conversation_id"
            )
            .await,
            [
                "1:1=1", "1:2=3", "2:1=3", "2:2=3", "3:1=4", "3:2=3", "4:2=1"
            ],
            "below the first queued message, else at the end"
        );
        assert_eq!(
            column_of(
                db,
                "SELECT conversation_id || ':' || account_id || ':' || joined_seq || ':'
                        || left_seq || ':' || left_ms FROM departures"
            )
            .await,
            ["2:4:0:3:30"],
            "carol still had her removal queued"
        );
        assert_eq!(
            column_of(
                db,
                "SELECT conversation_id || ':' || account_id || '=' || delivered_seq || '@'
                        || delivered_ms FROM members ORDER BY conversation_id, account_id"
            )
            .await,
            ["1:1=2@222", "1:2=3@333", "2:1=0@0", "2:2=0@0"]
        );
        assert_eq!(
            column_of(
                db,
                "SELECT conversation_id || ':' || message_id FROM reactions"
            )
            .await,
            ["1:m1"],
            "a reaction names its message's conversation (V10)"
        );
        assert_eq!(
            column_of(db, "SELECT message_id FROM message_media").await,
            ["m1"]
        );
        assert_eq!(
            column_of(
                db,
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema()
                   AND table_name IN ('queue', 'receipts', 'dedup')"
            )
            .await,
            Vec::<String>::new()
        );
    }

    /// The store on the result: retries of kept keys are duplicates, and
    /// what waits for carol's device ends at her removal.
    async fn assert_store_works_on_the_result(store: &PostgresStore) {
        let retry = |cmid: &str| NewMessage {
            message_id: MessageId::generate(),
            conversation: ConversationId(1),
            sender_account: AccountId(1),
            sender_device: DeviceId(1),
            client_msg_id: ClientMsgId::parse(cmid).expect("cmid"),
            body: Body::Text {
                text: MessageText::parse("again", 100).expect("text"),
                reply_to: None,
                media: Vec::new(),
            },
            now_ms: 50,
        };
        let swept = store.append_message(retry("c3")).await.expect("retry c3");
        assert!(swept.duplicate);
        assert_eq!((swept.message_id.as_str(), swept.seq), ("m3", 3));
        let reused = store.append_message(retry("c1")).await.expect("retry c1");
        assert!(reused.duplicate);
        assert_eq!((reused.message_id.as_str(), reused.seq), ("m4", 4));
        let page = store
            .pending(crate::model::PendingRequest {
                device: DeviceId(4),
                account: AccountId(4),
                after: Vec::new(),
                limit: 10,
                expired_before_ms: 0,
            })
            .await
            .expect("pending");
        let seqs: Vec<_> = page
            .items
            .iter()
            .map(missive_core::model::PendingItem::point)
            .collect();
        assert_eq!(seqs, [(ConversationId(2), 2), (ConversationId(2), 3)]);
    }
}
