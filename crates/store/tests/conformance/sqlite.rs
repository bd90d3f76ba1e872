//! The SQLite backend: every scenario against a fresh `SqliteStore` in a
//! temporary directory, plus the checks that only SQLite has (its clock, a
//! second process on the same file); those that look inside the database
//! file are in [`engine`].

use missive_store::AccountStore;

use std::path::PathBuf;
use std::sync::Arc;

use missive_store::{SqliteConfig, SqliteStore, Store};
use tempfile::TempDir;

use crate::Opened;

mod engine;

struct Dir {
    _dir: TempDir,
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("db.sqlite")
}

/// A fresh SqliteStore in its own temporary directory, plus that path.
/// Must be called inside a Tokio runtime.
fn open_at() -> (Opened, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let path = db_path(&dir);
    let store = SqliteStore::open(&SqliteConfig::new(&path)).expect("open sqlite store");
    let store: Arc<dyn Store> = Arc::new(store);
    (
        Opened {
            store,
            _guard: Box::new(Dir { _dir: dir }),
        },
        path,
    )
}

async fn open() -> Option<Opened> {
    Some(open_at().0)
}

for_each_scenario!(conformance_tests!(sqlite, open));

// ── SQLite-only checks: they look inside the database file. ──

#[tokio::test(flavor = "multi_thread")]
async fn has_no_clock_of_its_own() {
    // Goal: an embedded store's clock is the process's: it reports
    // none, so leases use the node's own time.
    let Some(opened) = open().await else {
        return;
    };
    assert_eq!(opened.store.clock_ms().await, Ok(None));
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_made_by_another_process_are_seen_by_the_next_send() {
    // Goal: what the writer remembers about a conversation between
    // sends is forgotten when another connection (an operator's
    // `missive admin` process) changed the database: a member removed
    // there can no longer send here, and a device revoked there is no
    // recipient here.
    // Method: a second store on the same file, as another process has.
    use crate::support::*;
    use missive_store::GroupChange;
    let (opened, path) = open_at();
    let store = &*opened.store;
    let (alice, a1) = account_with_device(store, "alice", "a1").await;
    let (bob, b1) = account_with_device(store, "bob", "b1").await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    let c2 = new_device(store, carol, "c2").await;
    let group = create_group(store, new_group(alice, a1, "team", &[bob, carol], NOW))
        .await
        .conversation;
    let first = send_at(store, group, bob, b1, "g1", NOW + 1).await;
    assert_eq!(sorted(first.recipients), sorted(vec![a1, c1, c2]));

    let other = SqliteStore::open(&SqliteConfig::new(&path)).expect("second store");
    assert!(
        other
            .revoke_device(carol, c2)
            .await
            .expect("revoke")
            .is_some()
    );
    other.shutdown().await;
    let second = send_at(store, group, bob, b1, "g2", NOW + 2).await;
    assert_eq!(sorted(second.recipients), sorted(vec![a1, c1]));

    let other = SqliteStore::open(&SqliteConfig::new(&path)).expect("second store");
    change(&other, alice, a1, group, GroupChange::Remove(bob), NOW + 3)
        .await
        .expect("remove bob");
    other.shutdown().await;
    let message = new_message(group, bob, b1, "g3", NOW + 4);
    assert_eq!(
        store.append_message(message).await,
        Err(missive_store::StoreError::NotMember)
    );
    opened.store.shutdown().await;
}
