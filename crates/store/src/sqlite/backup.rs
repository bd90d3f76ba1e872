//! A consistent copy of an embedded database, taken while a server writes
//! to it. `VACUUM INTO` reads the whole database inside one read
//! transaction, which in WAL mode is one snapshot: the copy holds exactly
//! what had committed when it began, every table as of the same instant,
//! and the server's writer is never held back (only checkpoints wait past
//! the snapshot until the copy is done). The copy is a compact database of
//! its own, with no WAL beside it.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::writer::backend;
use crate::{StoreError, TableCounts};

/// Writes a snapshot of the database at `database` to `into`, which must
/// not exist yet, and syncs it to disk; returns the copy's row count per
/// table.
pub fn snapshot(database: &Path, into: &Path) -> Result<TableCounts, StoreError> {
    if !database.is_file() {
        return Err(StoreError::Backend(format!(
            "no database at {}",
            database.display()
        )));
    }
    if into.exists() {
        return Err(StoreError::Backend(format!(
            "{} exists already",
            into.display()
        )));
    }
    let source = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(backend)?;
    // The writer and the checkpointer hold their locks for one commit at
    // a time; wait those out rather than fail.
    source
        .busy_timeout(Duration::from_secs(30))
        .map_err(backend)?;
    let target = into
        .to_str()
        .ok_or_else(|| StoreError::Backend(format!("{} is not UTF-8", into.display())))?;
    source
        .execute("VACUUM INTO ?1", [target])
        .map_err(backend)?;
    drop(source);
    // VACUUM INTO does not sync what it wrote.
    std::fs::File::open(into)
        .and_then(|copy| copy.sync_all())
        .map_err(|err| StoreError::Backend(format!("syncing {}: {err}", into.display())))?;
    check(into)
}

/// Checks a copy made by [`snapshot`] page by page and counts its rows per
/// table; an error if SQLite finds it damaged.
pub fn check(copy: &Path) -> Result<TableCounts, StoreError> {
    let conn =
        Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(backend)?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check(1)", [], |row| row.get(0))
        .map_err(backend)?;
    if verdict != "ok" {
        return Err(StoreError::Backend(format!(
            "{} is damaged: {verdict}",
            copy.display()
        )));
    }
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name",
        )
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(backend)?;
    let mut counts = TableCounts::new();
    for table in tables {
        // The name comes from the schema, not from a user; quoted all the
        // same.
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {quoted}"), [], |row| {
                row.get(0)
            })
            .map_err(backend)?;
        counts.insert(table, u64::try_from(rows).unwrap_or(0));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_holds_what_had_committed_and_nothing_later() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("live.sqlite");
        let live = Connection::open(&database).unwrap();
        live.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO notes (body) VALUES ('one'), ('two');",
        )
        .unwrap();
        // Left open in a transaction: not committed, so not in the copy.
        live.execute_batch("BEGIN; INSERT INTO notes (body) VALUES ('three');")
            .unwrap();

        let copy = dir.path().join("copy.sqlite");
        let counts = snapshot(&database, &copy).unwrap();
        assert_eq!(counts, TableCounts::from([("notes".into(), 2)]));
        live.execute_batch("COMMIT").unwrap();
        assert_eq!(check(&copy).unwrap()["notes"], 2, "the copy is fixed");

        let again = snapshot(&database, &copy).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
        let missing = snapshot(&dir.path().join("none.sqlite"), &dir.path().join("x"));
        assert!(missing.unwrap_err().to_string().contains("no database"));
    }

    #[test]
    fn a_damaged_copy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.sqlite");
        std::fs::write(&copy, b"not a database at all, just some bytes").unwrap();
        assert!(check(&copy).is_err());
    }
}
