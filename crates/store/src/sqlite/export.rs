//! The embedded store as the source of `missive migrate` (see
//! [`crate::transfer`]): opened alone, sealed, and read a batch at a time.
//!
//! The source is opened in SQLite's exclusive locking mode and its
//! exclusive lock taken at once: that fails while any other connection
//! has the database open (a server, or `missive admin`), and keeps every
//! other connection out until the migration ends. The seal (a row in
//! `relocation`) outlives the process: a server refuses to open a sealed
//! store ([`refuse_if_sealed`]), so nothing is written where the cluster
//! will never read it, and a migration that was interrupted resumes from
//! a source that has not changed since.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params_from_iter};

use super::schema;
use super::writer::backend;
use crate::StoreError;
use crate::transfer::{Batch, Cell, Table};

/// Why the source cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no database at {0}")]
    Missing(String),
    /// Another connection has the database open: a server runs on it.
    #[error("the database is in use (stop the server on it first)")]
    InUse,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a source stands with respect to a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seal {
    /// Never migrated (or reopened since).
    Open,
    /// A migration began and has not finished.
    Moving {
        migration_id: String,
        target: String,
    },
    /// Migrated: its data lives in `target` now.
    Moved {
        migration_id: String,
        target: String,
        finished_ms: i64,
    },
}

/// An embedded database opened alone for a migration.
pub struct Source {
    conn: Connection,
}

impl Source {
    /// Opens the database at `path` with every other connection kept out,
    /// brought to this build's schema.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        if !path.is_file() {
            return Err(SourceError::Missing(path.display().to_string()));
        }
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(backend)?;
        // A server keeps its connections open, so waiting long for them
        // is pointless; a second is for an operator's one-off command.
        conn.busy_timeout(std::time::Duration::from_secs(1))
            .map_err(backend)?;
        // Before the first access: in exclusive mode the locks taken are
        // kept until the connection closes.
        conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL;")
            .map_err(busy_is_in_use)?;
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(busy_is_in_use)?;
        schema::migrate(&mut conn).map_err(StoreError::Backend)?;
        Ok(Self { conn })
    }

    pub fn seal(&self) -> Result<Seal, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT migration_id, target, finished_ms FROM relocation",
                [],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(backend)?;
        Ok(match row {
            None => Seal::Open,
            Some((migration_id, target, None)) => Seal::Moving {
                migration_id,
                target,
            },
            Some((migration_id, target, Some(finished_ms))) => Seal::Moved {
                migration_id,
                target,
                finished_ms,
            },
        })
    }

    /// Seals the store for the migration `migration_id` to `target` (a URL
    /// without its password).
    pub fn seal_for(
        &self,
        migration_id: &str,
        target: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO relocation (only_row, migration_id, target, started_ms)
                 VALUES (1, ?1, ?2, ?3)",
                (migration_id, target, now_ms),
            )
            .map_err(backend)?;
        Ok(())
    }

    /// Records that the migration finished: everything is in the target.
    pub fn mark_moved(&self, now_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE relocation SET finished_ms = ?1", [now_ms])
            .map_err(backend)?;
        Ok(())
    }

    /// Lifts the seal, so a server serves this store again; whether there
    /// was one.
    pub fn reopen(&self) -> Result<bool, StoreError> {
        let removed = self
            .conn
            .execute("DELETE FROM relocation", [])
            .map_err(backend)?;
        Ok(removed > 0)
    }

    /// Rows of `table` that move.
    pub fn count(&self, table: &Table) -> Result<u64, StoreError> {
        let rows: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {}", table.from), [], |row| {
                row.get(0)
            })
            .map_err(backend)?;
        Ok(u64::try_from(rows).unwrap_or(0))
    }

    /// Up to `limit` rows of `table` after the key `after` (from the
    /// start when `None`), in key order.
    pub fn read(
        &self,
        table: &Table,
        after: Option<&[Cell]>,
        limit: usize,
    ) -> Result<Batch, StoreError> {
        let keys = table.key.join(", ");
        let columns = table
            .columns
            .iter()
            .map(|column| column.source)
            .collect::<Vec<_>>()
            .join(", ");
        let condition = match after {
            Some(_) => format!(
                "WHERE ({keys}) > ({})",
                vec!["?"; table.key.len()].join(", ")
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {keys}, {columns} FROM {} {condition} ORDER BY {keys} LIMIT {limit}",
            table.from
        );
        let mut statement = self.conn.prepare_cached(&sql).map_err(backend)?;
        let bound = after.unwrap_or_default().iter().map(to_sql_value);
        let mut rows = statement.query(params_from_iter(bound)).map_err(backend)?;
        let key_len = table.key.len();
        let mut batch = Batch::default();
        while let Some(row) = rows.next().map_err(backend)? {
            let mut cells = (0..key_len + table.columns.len())
                .map(|index| row.get_ref(index).map_err(backend).and_then(cell))
                .collect::<Result<Vec<_>, _>>()?;
            let values = cells.split_off(key_len);
            batch.last_key = Some(cells);
            batch.rows.push(values);
        }
        Ok(batch)
    }

    /// The highest id `table`'s identity column ever held, deleted rows'
    /// included (SQLite's AUTOINCREMENT remembers it); 0 when none.
    pub fn highest_id(&self, table: &Table) -> Result<i64, StoreError> {
        let Some(column) = table.identity else {
            return Ok(0);
        };
        let sql = format!(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?1), 0),
                        coalesce((SELECT max({column}) FROM {}), 0))",
            table.from
        );
        self.conn
            .query_row(&sql, [table.name], |row| row.get(0))
            .map_err(backend)
    }

    /// Media ids after `after`, up to `limit`, with whether each has a
    /// thumbnail: the blobs that move.
    pub fn media(&self, after: &str, limit: usize) -> Result<Vec<(String, bool)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT id, thumbnail FROM media WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(backend)?;
        statement
            .query_map((after, i64::try_from(limit).unwrap_or(i64::MAX)), |row| {
                Ok((row.get(0)?, row.get::<_, i64>(1)? != 0))
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)
    }
}

/// A server's check at open: a store `missive migrate` sealed is not
/// served (see the module docs).
pub(crate) fn refuse_if_sealed(conn: &Connection) -> Result<(), StoreError> {
    let target: Option<(String, Option<i64>)> = conn
        .query_row("SELECT target, finished_ms FROM relocation", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
        .map_err(backend)?;
    match target {
        None => Ok(()),
        Some((target, finished)) => Err(StoreError::Backend(format!(
            "this embedded store {} to {target} by `missive migrate`; run the cluster on that \
             database, or `missive migrate --from <data dir> --reopen` to serve this one again \
             (what the cluster received since would not be here)",
            if finished.is_some() {
                "was moved"
            } else {
                "is being moved"
            }
        ))),
    }
}

fn busy_is_in_use(err: rusqlite::Error) -> SourceError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SourceError::InUse,
        _ => SourceError::Store(backend(err)),
    }
}

fn cell(value: ValueRef<'_>) -> Result<Cell, StoreError> {
    Ok(match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(value) => Cell::Int(value),
        ValueRef::Text(bytes) => Cell::Text(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| StoreError::Backend("a text value is not UTF-8".into()))?,
        ),
        ValueRef::Blob(bytes) => Cell::Bytes(bytes.to_vec()),
        ValueRef::Real(_) => {
            return Err(StoreError::Backend(
                "a floating-point value where missive stores none".into(),
            ));
        }
    })
}

fn to_sql_value(cell: &Cell) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match cell {
        Cell::Null => Value::Null,
        Cell::Int(value) => Value::Integer(*value),
        Cell::Text(text) => Value::Text(text.clone()),
        Cell::Bytes(bytes) => Value::Blob(bytes.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::transfer::{NOT_COPIED, TABLES};

    fn fresh() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missive.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate(&mut conn).unwrap();
        (dir, path)
    }

    /// Columns of a source table that intentionally stay behind.
    const LEFT_BEHIND: &[(&str, &str)] = &[
        ("conversations", "purged_seq"),
        ("conversations", "dropped_seq"),
        ("messages", "rid"),
    ];

    #[test]
    fn every_table_and_column_of_the_schema_moves_or_is_listed_as_staying() {
        let (_dir, path) = fresh();
        let conn = Connection::open(&path).unwrap();
        let tables: BTreeSet<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in &tables {
            assert!(
                TABLES.iter().any(|t| t.name == table) || NOT_COPIED.contains(&table.as_str()),
                "table {table} is neither migrated nor listed in NOT_COPIED"
            );
        }
        for table in TABLES {
            assert!(tables.contains(table.name), "{} is not a table", table.name);
            let columns: Vec<String> = conn
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info('{}')",
                    table.name
                ))
                .unwrap()
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for column in columns {
                let read = table
                    .columns
                    .iter()
                    .any(|c| c.source == column || c.source.ends_with(&format!(".{column}")));
                assert!(
                    read || LEFT_BEHIND.contains(&(table.name, column.as_str())),
                    "{}.{column} is not migrated",
                    table.name
                );
            }
        }
    }

    #[test]
    fn batches_walk_a_table_in_key_order_and_resume_after_the_last_key() {
        let (_dir, path) = fresh();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO contacts (owner_id, contact_id, created_ms)
             VALUES (2, 1, 20), (1, 3, 13), (1, 2, 12), (3, 1, 31), (2, 2, 22);",
        )
        .unwrap();
        drop(conn);
        let source = Source::open(&path).unwrap();
        let contacts = TABLES.iter().find(|t| t.name == "contacts").unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let batch = source.read(contacts, after.as_deref(), 2).unwrap();
            if batch.rows.is_empty() {
                break;
            }
            assert!(batch.rows.len() <= 2);
            seen.extend(batch.rows.iter().map(|row| row[2].clone()));
            after = batch.last_key;
        }
        let times = [12, 13, 20, 22, 31].map(Cell::Int).to_vec();
        assert_eq!(seen, times);
        assert_eq!(source.count(contacts).unwrap(), 5);
    }

    #[test]
    fn a_store_in_use_is_refused_and_a_sealed_one_is_not_served() {
        let (_dir, path) = fresh();
        let server = Connection::open(&path).unwrap();
        server
            .execute_batch("PRAGMA journal_mode = WAL; SELECT count(*) FROM accounts;")
            .unwrap();
        assert!(matches!(Source::open(&path), Err(SourceError::InUse)));
        drop(server);

        let source = Source::open(&path).unwrap();
        assert_eq!(source.seal().unwrap(), Seal::Open);
        source.seal_for("m1", "postgres://db/x", 5).unwrap();
        assert!(matches!(source.seal().unwrap(), Seal::Moving { .. }));
        // While the migration has it, nobody else opens it.
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        assert!(
            other
                .query_row("SELECT 1 FROM accounts", [], |_| Ok(()))
                .is_err()
        );
        source.mark_moved(9).unwrap();
        assert_eq!(
            source.seal().unwrap(),
            Seal::Moved {
                migration_id: "m1".into(),
                target: "postgres://db/x".into(),
                finished_ms: 9
            }
        );
        drop(source);
        drop(other);

        let conn = Connection::open(&path).unwrap();
        let refused = refuse_if_sealed(&conn).unwrap_err().to_string();
        assert!(refused.contains("postgres://db/x"), "{refused}");
        drop(conn);
        let source = Source::open(&path).unwrap();
        assert!(source.reopen().unwrap());
        drop(source);
        refuse_if_sealed(&Connection::open(&path).unwrap()).unwrap();
    }
}
