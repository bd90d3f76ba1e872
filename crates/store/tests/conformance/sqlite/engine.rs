//! SQLite-only checks that look inside the database file (through a
//! separate read-only connection): what a send, an ack, a sweep, a
//! revocation and a membership change write, and what survives a reopen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, Seq};
use missive_store::{GroupChange, NewGroup, SqliteConfig, SqliteStore, Store};
use rusqlite::{Connection, OpenFlags, params};

use super::open_at;
use crate::Opened;
use crate::support::*;

/// A separate read-only connection on the store's file.
fn inspect(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open read-only")
}

fn rows(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .expect("count")
}

/// Whether the `messages` row of `id` exists, and if so whether it
/// still has its body.
fn message_row(conn: &Connection, id: &str) -> Option<bool> {
    let mut stmt = conn
        .prepare("SELECT body IS NOT NULL FROM messages WHERE id = ?1")
        .expect("prepare");
    let mut found = stmt
        .query_map([id], |row| row.get::<_, bool>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    assert!(found.len() <= 1, "two rows for message {id}");
    found.pop()
}

/// Rows of `messages` whose body was purged.
fn purged_rows(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM messages WHERE body IS NULL",
        [],
        |row| row.get(0),
    )
    .expect("count")
}

/// The device's `positions` rows: (conversation, seq).
fn positions_of(conn: &Connection, device: DeviceId) -> Vec<(i64, Seq)> {
    let mut stmt = conn
        .prepare(
            "SELECT conversation_id, seq FROM positions WHERE device_id = ?1 \
             ORDER BY conversation_id",
        )
        .expect("prepare");
    stmt.query_map([device.0], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// The member's delivered cursor: (delivered_seq, delivered_ms).
fn delivered_cursor(
    conn: &Connection,
    conversation: ConversationId,
    account: AccountId,
) -> (Seq, i64) {
    conn.query_row(
        "SELECT delivered_seq, delivered_ms FROM members \
         WHERE conversation_id = ?1 AND account_id = ?2",
        params![conversation.0, account.0],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .expect("member row")
}

/// Every `departures` row: (conversation, account, joined_seq,
/// left_seq, left_ms).
fn departures(conn: &Connection) -> Vec<(i64, i64, Seq, Seq, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT conversation_id, account_id, joined_seq, left_seq, left_ms \
             FROM departures ORDER BY conversation_id, account_id",
        )
        .expect("prepare");
    stmt.query_map([], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// Every row of every table (values rendered), by table name.
fn everything(conn: &Connection) -> BTreeMap<String, Vec<Vec<String>>> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("tables");
    tables
        .into_iter()
        .map(|table| {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{table}\""))
                .expect("prepare");
            let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let mut rows: Vec<Vec<String>> = stmt
                .query_map([], |row| {
                    (0..columns.len())
                        .map(|i| {
                            row.get_ref(i)
                                .map(|value| format!("{}={value:?}", columns[i]))
                        })
                        .collect()
                })
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows.sort();
            (table, rows)
        })
        .collect()
}

/// A fresh store (see `open_at`) holding the cast alice (a1) and bob
/// (b1, b2), and its file.
async fn open_with_cast() -> (Opened, PathBuf, Cast<3>) {
    let (opened, path) = open_at();
    let cast = cast(&*opened.store, ["a1", "b1", "b2"]).await;
    (opened, path, cast)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_send_writes_one_row() {
    // Goal: nothing is written per recipient: a text to a group of
    // 50 members (with 51 devices) adds exactly one `messages` row
    // and changes nothing else anywhere but the conversation's
    // last_seq.
    // Method: compare every row of every table before and after
    // the send, through a separate read-only connection.
    let (opened, path) = open_at();
    let store = &*opened.store;
    let (creator, creator_device) = account_with_device(store, "member0", "d0").await;
    new_device(store, creator, "d0-second").await;
    let mut others = Vec::new();
    for i in 1..50 {
        others.push(
            account_with_device(store, &format!("member{i}"), &format!("d{i}"))
                .await
                .0,
        );
    }
    let group = store
        .create_group(NewGroup {
            members_max: 64,
            ..new_group(creator, creator_device, "crowd", &others, NOW)
        })
        .await
        .expect("create the group")
        .conversation;
    let db = inspect(&path);
    let before = everything(&db);

    let sent = send(store, group, creator, creator_device, "hello").await;
    assert_eq!(sent.seq, 2);
    assert_eq!(
        sent.recipients.len(),
        50,
        "49 members and the creator's other device"
    );
    let mut after = everything(&db);

    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "tables appeared or went"
    );
    let added: Vec<&Vec<String>> = after["messages"]
        .iter()
        .filter(|row| !before["messages"].contains(row))
        .collect();
    assert_eq!(added.len(), 1, "new messages rows: {added:?}");
    assert_eq!(after["messages"].len(), before["messages"].len() + 1);
    // The conversation row: only last_seq moved, from 1 to 2.
    let conversations = after.get_mut("conversations").expect("conversations");
    for row in conversations.iter_mut() {
        for value in row.iter_mut() {
            if value == "last_seq=Integer(2)" {
                *value = "last_seq=Integer(1)".to_owned();
            }
        }
    }
    assert_eq!(
        after["conversations"], before["conversations"],
        "conversations"
    );
    for (table, rows) in &before {
        if table != "messages" && table != "conversations" {
            assert_eq!(&after[table], rows, "table {table} changed on a send");
        }
    }
    opened.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ack_purge_empties_the_body_and_keeps_the_row() {
    // Goal: with purge_delivered_bodies the body of a `messages`
    // row becomes NULL with the ack after which every member
    // device has it, not before, and the row stays (its dedup key
    // with it); without the flag the body stays; acks write the
    // device's `positions` row and the member's delivered cursor.
    // Method: M1 and M2 from a1 to b1 and b2; ack device by device
    // and read the rows through a separate read-only connection.
    let (opened, path, Cast(alice, bob, conv, [a1, b1, b2])) = open_with_cast().await;
    let store = &*opened.store;
    let m1 = send(store, conv, alice, a1, "m1").await;
    let m2 = send(store, conv, alice, a1, "m2").await;
    let (m1_id, m2_id) = (m1.message_id.as_str(), m2.message_id.as_str());
    let db = inspect(&path);
    assert_eq!(message_row(&db, m1_id), Some(true));

    ack(store, b1, bob, vec![(conv, 1)], true).await;
    assert_eq!(
        message_row(&db, m1_id),
        Some(true),
        "purged while b2 still waited for it"
    );
    assert_eq!(positions_of(&db, b1), vec![(conv.0, 1)]);
    assert_eq!(delivered_cursor(&db, conv, bob), (1, ACK_NOW));
    ack(store, b2, bob, vec![(conv, 1)], true).await;
    assert_eq!(
        message_row(&db, m1_id),
        Some(false),
        "the body outlived the last ack, or the row went with it"
    );

    for device in [b1, b2] {
        ack(store, device, bob, vec![(conv, 2)], false).await;
    }
    assert_eq!(message_row(&db, m2_id), Some(true));
    assert_eq!((rows(&db, "messages"), purged_rows(&db)), (2, 1));
    assert_eq!(positions_of(&db, b2), vec![(conv.0, 2)]);
    assert_eq!(delivered_cursor(&db, conv, bob), (2, ACK_NOW));
    assert_eq!(delivered_cursor(&db, conv, alice), (0, 0));
    assert_eq!(positions_of(&db, a1), vec![], "a1 never acked");
    opened.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_and_revoke_delete_rows() {
    // Goal: the counts sweep reports are the rows actually changed
    // (bodies set NULL, rows deleted), and revoke deletes the
    // device's `positions` rows.
    // Method: m1 at NOW and m2 at NOW + 20; b1 and b2 ack; sweep
    // bodies, then rows; revoke b2; count rows each time.
    let (opened, path, Cast(alice, bob, conv, [a1, b1, b2])) = open_with_cast().await;
    let store = &*opened.store;
    send_at(store, conv, alice, a1, "m1", NOW).await;
    send_at(store, conv, alice, a1, "m2", NOW + 20).await;
    ack(store, b1, bob, vec![(conv, 1)], false).await;
    ack(store, b2, bob, vec![(conv, 2)], false).await;
    let db = inspect(&path);
    assert_eq!((rows(&db, "messages"), purged_rows(&db)), (2, 0));
    assert_eq!(rows(&db, "positions"), 2);

    let outcome = sweep(store, NOW + 30, NOW + 10, NOW + 10, LONG_AGO, 100).await;
    assert_eq!(outcome, swept(1, 0));
    assert_eq!((rows(&db, "messages"), purged_rows(&db)), (2, 1));
    let outcome = sweep(store, NOW + 30, LONG_AGO, LONG_AGO, NOW + 10, 100).await;
    assert_eq!(outcome, swept(0, 1));
    assert_eq!((rows(&db, "messages"), purged_rows(&db)), (1, 0));

    assert!(
        store
            .revoke_device(bob, b2)
            .await
            .expect("revoke")
            .is_some()
    );
    assert_eq!(rows(&db, "devices"), 2);
    assert_eq!(positions_of(&db, b2), vec![]);
    assert_eq!(positions_of(&db, b1), vec![(conv.0, 1)]);
    opened.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn departures_and_new_devices_write_their_rows() {
    // Goal: a removal writes a `departures` row (joined_seq, the
    // removal's seq and time), an add deletes it, and the sweep
    // deletes it once its TTL passed; a device created later gets a
    // `positions` row at each of its account's conversations' last
    // seq.
    // Method: the group cast alice (a1), bob (b1), carol (c1);
    // alice removes carol, adds her back, removes her again; sweeps;
    // then a second device of bob's.
    let (opened, path) = open_at();
    let store = &*opened.store;
    let GroupCast([alice, bob, carol, _], group, [a1, _b1, _c1]) =
        group_cast(store, ["a1", "b1", "c1"]).await;
    let db = inspect(&path);
    let remove = |now_ms| change(store, alice, a1, group, GroupChange::Remove(carol), now_ms);
    remove(NOW + 2).await.expect("remove carol");
    assert_eq!(departures(&db), vec![(group.0, carol.0, 0, 2, NOW + 2)]);
    change(
        store,
        alice,
        a1,
        group,
        GroupChange::Add(vec![carol]),
        NOW + 3,
    )
    .await
    .expect("add carol");
    assert_eq!(departures(&db), vec![]);
    remove(NOW + 4).await.expect("remove carol again");
    assert_eq!(departures(&db), vec![(group.0, carol.0, 2, 4, NOW + 4)]);
    sweep(store, NOW + 10, LONG_AGO, NOW + 4, LONG_AGO, 100).await;
    assert_eq!(departures(&db).len(), 1, "swept within its TTL");
    sweep(store, NOW + 10, LONG_AGO, NOW + 5, LONG_AGO, 100).await;
    assert_eq!(departures(&db), vec![]);

    let ab = direct(store, alice, bob, NOW).await;
    send(store, ab, alice, a1, "m1").await;
    let b2 = new_device(store, bob, "b2").await;
    assert_eq!(positions_of(&db, b2), sorted(vec![(group.0, 4), (ab.0, 1)]));
    opened.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_keeps_everything() {
    // Goal: what was acknowledged before shutdown survives a reopen
    // of the same file: accounts, tokens, positions, cursors, seqs,
    // dedup.
    // Method: write and ack, shut down, open the same path again,
    // read back and continue the conversation.
    let (opened, path, Cast(alice, bob, conv, [a1, b1, _b2])) = open_with_cast().await;
    let store = &*opened.store;
    let m1 = send(store, conv, alice, a1, "m1").await;
    let m2 = send(store, conv, alice, a1, "m2").await;
    ack(store, b1, bob, vec![(conv, 1)], false).await;
    read_up_to(store, bob, conv, 1, NOW + 1).await;
    let before = pending_all(store, b1).await;
    assert_eq!(event_ids(&before), vec![m2.message_id.clone()]);
    opened.store.shutdown().await;

    let reopened: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&SqliteConfig::new(&path)).expect("reopen"));
    let store = &*reopened;
    assert_eq!(auth(store, "b1").await.map(|a| a.device), Some(b1));
    assert_eq!(pending_all(store, b1).await, before);
    assert_eq!(cursors(store, alice, conv).await, vec![cursor("bob", 1, 1)]);
    let retry = send(store, conv, alice, a1, "m1").await;
    assert!(retry.duplicate);
    assert_eq!(retry.message_id, m1.message_id);
    assert_eq!(send(store, conv, alice, a1, "m3").await.seq, 3);
    assert_eq!(direct(store, bob, alice, NOW).await, conv);
    reopened.shutdown().await;
    drop(opened);
}
