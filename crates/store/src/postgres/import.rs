//! PostgreSQL as the target of `missive migrate` (see
//! [`crate::transfer`]).
//!
//! The migration's progress lives in the target, in `missive_migration`:
//! one row per step (a table, or `media`) with the key the step has
//! copied up to. Each batch's rows and its step's new key commit in one
//! transaction, so after any interruption the rows and the progress agree
//! and the next run goes on from there. The table names the migration
//! (the id the source's seal carries), so a run never resumes another
//! source's migration. It is dropped when the migration finishes.
//!
//! As `pg_restore` does, the rows go in before the indexes: when a
//! migration begins, every index but the primary keys, and every foreign
//! key, is dropped, its definition kept in `missive_migration_deferred`
//! (in the same transaction), and [`Target::build_deferred`] makes them
//! again once every table is copied. Building an index over the finished
//! table by sorting is far cheaper than updating it row by row (1,000,000
//! messages: 5.2 s of COPY and 2.3 s of index builds, against 12–14 s of
//! COPY into the indexed table). Nodes refuse a database a migration is
//! still filling, so no one serves it without its indexes.

use std::collections::BTreeMap;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::fault::{Fault, Outcome};
use super::schema;
use crate::transfer::{Batch, Cell, NOT_COPIED, TABLES, Table, Typed, key_from_json, key_to_json};
use crate::{StoreError, TableCounts};

/// The step that copies media bytes, after every table.
pub const MEDIA_STEP: &str = "media_bytes";

/// How far one step has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The last key copied; `None` before the first batch.
    pub after: Option<Vec<Cell>>,
    /// Rows (or media files) copied so far.
    pub copied: u64,
    /// Bytes copied so far (media only).
    pub bytes: u64,
    pub done: bool,
}

/// What the target database holds before a migration starts.
#[derive(Debug)]
pub enum TargetState {
    /// No rows in any missive table (perhaps no tables yet).
    Empty,
    /// Rows in these tables, and no migration in progress.
    Holds(TableCounts),
    /// An unfinished migration: its id and every step's progress.
    Migrating {
        migration_id: String,
        steps: BTreeMap<String, Step>,
    },
}

/// A connection to the target, its schema brought to this build's.
pub struct Target {
    client: Client,
}

impl Target {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (mut client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(failed)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(%err, "migration connection ended");
            }
        });
        schema::migrate(&mut client)
            .await
            .map_err(Fault::into_store)?;
        Ok(Self { client })
    }

    /// Nodes whose lease has not run out at `now_ms`: a cluster already
    /// running on the target.
    pub async fn live_nodes(&self, now_ms: i64) -> Result<u64, StoreError> {
        let live: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM nodes WHERE lease_until_ms > $1",
                &[&now_ms],
            )
            .await
            .map_err(failed)?
            .get(0);
        Ok(u64::try_from(live).unwrap_or(0))
    }

    pub async fn state(&self) -> Result<TargetState, StoreError> {
        if let Some((migration_id, steps)) = self.progress().await? {
            return Ok(TargetState::Migrating {
                migration_id,
                steps,
            });
        }
        let mut holds = TableCounts::new();
        for table in TABLES {
            let rows = self.count(table.name).await?;
            if rows > 0 {
                holds.insert(table.name.to_owned(), rows);
            }
        }
        Ok(if holds.is_empty() {
            TargetState::Empty
        } else {
            TargetState::Holds(holds)
        })
    }

    async fn progress(&self) -> Result<Option<(String, BTreeMap<String, Step>)>, StoreError> {
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass('missive_migration') IS NOT NULL", &[])
            .await
            .map_err(failed)?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let rows = self
            .client
            .query(
                "SELECT migration_id, step, after_key, copied, bytes, done FROM missive_migration",
                &[],
            )
            .await
            .map_err(failed)?;
        let mut migration_id = String::new();
        let mut steps = BTreeMap::new();
        for row in rows {
            migration_id = row.get(0);
            let after: Option<String> = row.get(2);
            let after = match after {
                None => None,
                Some(text) => Some(key_from_json(&text).ok_or_else(|| {
                    StoreError::Backend(format!("missive_migration holds a bad key: {text}"))
                })?),
            };
            steps.insert(
                row.get(1),
                Step {
                    after,
                    copied: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
                    bytes: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
                    done: row.get(5),
                },
            );
        }
        Ok(Some((migration_id, steps)))
    }

    /// Empties every missive table, identities restarted, and forgets any
    /// migration in progress: `--replace-target`.
    pub async fn empty_out(&mut self) -> Result<(), StoreError> {
        let mut names: Vec<&str> = TABLES.iter().map(|table| table.name).collect();
        names.extend(["nodes", "sessions"]);
        self.client
            .batch_execute(&format!(
                "TRUNCATE {} RESTART IDENTITY CASCADE",
                names.join(", ")
            ))
            .await
            .map_err(failed)?;
        // On empty tables, instant: an interrupted migration's indexes.
        self.build_deferred().await?;
        self.client
            .batch_execute("DROP TABLE IF EXISTS missive_migration")
            .await
            .map_err(failed)
    }

    /// Starts recording the migration `migration_id`: one step per table,
    /// then media.
    pub async fn begin(&mut self, migration_id: &str) -> Result<(), StoreError> {
        let transaction = self.client.transaction().await.map_err(failed)?;
        transaction
            .batch_execute(
                "CREATE TABLE missive_migration (
                     step         text PRIMARY KEY,
                     migration_id text NOT NULL,
                     after_key    text,
                     copied       bigint NOT NULL DEFAULT 0,
                     bytes        bigint NOT NULL DEFAULT 0,
                     done         boolean NOT NULL DEFAULT false
                 )",
            )
            .await
            .map_err(failed)?;
        let insert = transaction
            .prepare("INSERT INTO missive_migration (step, migration_id) VALUES ($1, $2)")
            .await
            .map_err(failed)?;
        let steps = TABLES.iter().map(|table| table.name).chain([MEDIA_STEP]);
        for step in steps {
            transaction
                .execute(&insert, &[&step, &migration_id])
                .await
                .map_err(failed)?;
        }
        defer_indexes(&transaction).await?;
        transaction.commit().await.map_err(failed)
    }

    /// Writes a batch of `table`'s rows and the step's new position in one
    /// transaction; an empty batch marks the step done.
    pub async fn copy(&mut self, table: &Table, batch: &Batch) -> Result<(), StoreError> {
        let transaction = self.client.transaction().await.map_err(failed)?;
        if !batch.rows.is_empty() {
            let columns = table
                .columns
                .iter()
                .map(|column| column.target)
                .collect::<Vec<_>>()
                .join(", ");
            let sink = transaction
                .copy_in(&format!(
                    "COPY {} ({columns}) FROM STDIN (FORMAT binary)",
                    table.name
                ))
                .await
                .map_err(failed)?;
            let types: Vec<_> = table
                .columns
                .iter()
                .map(|column| column.kind.pg_type())
                .collect();
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            for row in &batch.rows {
                let typed: Vec<Typed<'_>> = row
                    .iter()
                    .zip(table.columns)
                    .map(|(cell, column)| Typed(cell, column.kind))
                    .collect();
                let values: Vec<&(dyn ToSql + Sync)> = typed
                    .iter()
                    .map(|value| value as &(dyn ToSql + Sync))
                    .collect();
                writer.as_mut().write(&values).await.map_err(failed)?;
            }
            writer.finish().await.map_err(failed)?;
        }
        let after = batch.last_key.as_deref().map(key_to_json);
        let copied = i64::try_from(batch.rows.len()).unwrap_or(i64::MAX);
        let done = batch.rows.is_empty();
        transaction
            .execute(
                "UPDATE missive_migration
                 SET after_key = coalesce($2, after_key), copied = copied + $3, done = $4
                 WHERE step = $1",
                &[&table.name, &after, &copied, &done],
            )
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(failed)
    }

    /// Records media copied up to the id `after` (files and bytes added);
    /// `done` once the last is copied.
    pub async fn media_copied(
        &self,
        after: &str,
        files: u64,
        bytes: u64,
        done: bool,
    ) -> Result<(), StoreError> {
        let after = key_to_json(&[Cell::Text(after.to_owned())]);
        self.client
            .execute(
                "UPDATE missive_migration
                 SET after_key = $2, copied = copied + $3, bytes = bytes + $4, done = $5
                 WHERE step = $1",
                &[
                    &MEDIA_STEP,
                    &after,
                    &i64::try_from(files).unwrap_or(i64::MAX),
                    &i64::try_from(bytes).unwrap_or(i64::MAX),
                    &done,
                ],
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    pub async fn count(&self, table: &str) -> Result<u64, StoreError> {
        let rows: i64 = self
            .client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(failed)?
            .get(0);
        Ok(u64::try_from(rows).unwrap_or(0))
    }

    /// Makes `table`'s identity continue after `highest`, the highest id
    /// the source ever handed out.
    pub async fn continue_ids(&self, table: &Table, highest: i64) -> Result<(), StoreError> {
        let Some(column) = table.identity else {
            return Ok(());
        };
        // setval(.., 1, false): the next id is 1, for a table that never
        // had a row.
        self.client
            .execute(
                "SELECT setval(pg_get_serial_sequence($1, $2), greatest($3::bigint, 1), $3::bigint > 0)",
                &[&table.name, &column, &highest],
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Makes again the indexes and foreign keys [`Target::begin`] dropped,
    /// each in a transaction that also forgets its definition, so an
    /// interrupted build goes on with the ones left.
    pub async fn build_deferred(&mut self) -> Result<(), StoreError> {
        let exists: bool = self
            .client
            .query_one(
                "SELECT to_regclass('missive_migration_deferred') IS NOT NULL",
                &[],
            )
            .await
            .map_err(failed)?
            .get(0);
        if !exists {
            return Ok(());
        }
        // Indexes before the foreign keys that may lean on them.
        let deferred = self
            .client
            .query(
                "SELECT name, definition FROM missive_migration_deferred
                 ORDER BY foreign_key, name",
                &[],
            )
            .await
            .map_err(failed)?;
        for row in deferred {
            let (name, definition): (String, String) = (row.get(0), row.get(1));
            let transaction = self.client.transaction().await.map_err(failed)?;
            transaction
                .batch_execute(&definition)
                .await
                .map_err(failed)?;
            transaction
                .execute(
                    "DELETE FROM missive_migration_deferred WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)?;
        }
        self.client
            .batch_execute("DROP TABLE missive_migration_deferred")
            .await
            .map_err(failed)
    }

    /// Ends the migration's bookkeeping.
    pub async fn finish(&self) -> Result<(), StoreError> {
        self.client
            .batch_execute("DROP TABLE IF EXISTS missive_migration")
            .await
            .map_err(failed)
    }

    /// Tables of the target's schema that are neither migrated nor listed
    /// as staying behind (a check for the tests and the migration alike).
    pub async fn unknown_tables(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                &[],
            )
            .await
            .map_err(failed)?;
        Ok(rows
            .iter()
            .map(|row| row.get::<_, String>(0))
            .filter(|name| {
                !TABLES.iter().any(|table| table.name == name)
                    && !NOT_COPIED.contains(&name.as_str())
            })
            .collect())
    }
}

/// Drops every index of the migrated tables but their primary keys, and
/// every foreign key among them, keeping the statements that make each
/// again (see the module docs).
async fn defer_indexes(transaction: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let tables: Vec<&str> = TABLES.iter().map(|table| table.name).collect();
    transaction
        .batch_execute(
            "CREATE TABLE missive_migration_deferred (
                 name        text PRIMARY KEY,
                 foreign_key boolean NOT NULL,
                 definition  text NOT NULL
             )",
        )
        .await
        .map_err(failed)?;
    // Constraints (unique, foreign key) are dropped and added as such;
    // plain indexes by their own definition.
    let found = transaction
        .query(
            "SELECT c.conname::text,
                    format('ALTER TABLE %I ADD CONSTRAINT %I %s', t.relname, c.conname,
                           pg_get_constraintdef(c.oid)),
                    format('ALTER TABLE %I DROP CONSTRAINT %I', t.relname, c.conname),
                    c.contype = 'f'
             FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
             WHERE t.relnamespace = current_schema()::regnamespace
               AND t.relname = ANY($1) AND c.contype IN ('u', 'f')
             UNION ALL
             SELECT i.relname::text, pg_get_indexdef(x.indexrelid),
                    format('DROP INDEX %I', i.relname), false
             FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
                             JOIN pg_class i ON i.oid = x.indexrelid
             WHERE t.relnamespace = current_schema()::regnamespace
               AND t.relname = ANY($1) AND NOT x.indisprimary
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
            &[&tables],
        )
        .await
        .map_err(failed)?;
    // Foreign keys first: a unique constraint a foreign key refers to
    // cannot go before it.
    let mut found: Vec<(String, String, String, bool)> = found
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    found.sort_by_key(|(_, _, _, foreign_key)| !foreign_key);
    for (name, create, drop, foreign_key) in found {
        transaction
            .execute(
                "INSERT INTO missive_migration_deferred (name, foreign_key, definition)
                 VALUES ($1, $2, $3)",
                &[&name, &foreign_key, &create],
            )
            .await
            .map_err(failed)?;
        transaction.batch_execute(&drop).await.map_err(failed)?;
    }
    Ok(())
}

/// A node's check at start: a database a `missive migrate` is still
/// filling holds part of the data, and is not served.
pub(super) async fn refuse_if_importing(client: &Client) -> Outcome<()> {
    let importing: bool = client
        .query_one("SELECT to_regclass('missive_migration') IS NOT NULL", &[])
        .await?
        .get(0);
    if importing {
        return Err(Fault::Refused(StoreError::Backend(
            "a `missive migrate` into this database has not finished: run it again to \
             complete it (or with --replace-target to start over) before starting nodes"
                .into(),
        )));
    }
    Ok(())
}

fn failed(err: tokio_postgres::Error) -> StoreError {
    match err.as_db_error() {
        Some(db) => {
            StoreError::Backend(format!("postgres: {}: {}", db.code().code(), db.message()))
        }
        None => StoreError::Backend(format!("postgres: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::testing::{FreshSchema, client, column_of};

    #[tokio::test]
    async fn the_column_lists_match_the_postgres_schema_and_a_batch_commits_with_its_key() {
        // Goal: every PostgreSQL table is migrated or listed as staying,
        // every migrated table's columns are exactly the ones written, and
        // a batch's rows and its step's key commit together.
        let Some(schema) = FreshSchema::create("import").await else {
            return;
        };
        let mut target = Target::connect(&schema.url).await.expect("connect");
        assert_eq!(target.unknown_tables().await.unwrap(), Vec::<String>::new());
        let db = client(&schema.url).await.expect("inspect");
        assert_columns_match(&db).await;

        assert!(matches!(target.state().await.unwrap(), TargetState::Empty));
        let definitions = "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()
                             AND tablename NOT LIKE 'missive_migration%'
                           UNION ALL
                           SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
                           WHERE connamespace = current_schema()::regnamespace AND contype = 'f'
                           ORDER BY 1";
        let before = column_of(&db, definitions).await;
        target.begin("m-1").await.unwrap();
        let messages_indexes = column_of(
            &db,
            "SELECT indexname::text FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'messages'",
        )
        .await;
        assert_eq!(messages_indexes, ["messages_pkey"], "built after the rows");
        let accounts = &TABLES[0];
        first_batch_commits_with_its_key(&mut target, &db).await;

        // A batch that fails (a primary key, kept while copying) writes
        // neither rows nor progress.
        let clash = Batch {
            rows: vec![account_row(10, "cy"), account_row(9, "dee")],
            last_key: Some(vec![Cell::Int(11)]),
        };
        assert!(target.copy(accounts, &clash).await.is_err());
        assert_eq!(target.count("accounts").await.unwrap(), 2);

        target.copy(accounts, &Batch::default()).await.unwrap();
        target.build_deferred().await.unwrap();
        let after = column_of(&db, definitions).await;
        assert_eq!(after, before, "every index and foreign key made again");
        target.continue_ids(accounts, 12).await.unwrap();
        assert_eq!(
            next_account_id(&db).await,
            13,
            "ids continue past the source's highest"
        );
        target.finish().await.unwrap();
        assert!(matches!(
            target.state().await.unwrap(),
            TargetState::Holds(_)
        ));
        target.empty_out().await.unwrap();
        assert!(matches!(target.state().await.unwrap(), TargetState::Empty));
        schema.drop().await;
    }

    /// Every migrated table's columns are exactly the ones written.
    async fn assert_columns_match(db: &Client) {
        for table in TABLES {
            let mut columns: Vec<String> = db
                .query(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1",
                    &[&table.name],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            columns.sort();
            let mut written: Vec<&str> = table.columns.iter().map(|c| c.target).collect();
            written.sort_unstable();
            assert_eq!(columns, written, "{}", table.name);
        }
    }

    /// A row of `accounts` as the source reads it (suspended).
    fn account_row(id: i64, name: &str) -> Vec<Cell> {
        vec![
            Cell::Int(id),
            Cell::Text(name.into()),
            Cell::Text("hash".into()),
            Cell::Null,
            Cell::Int(1),
            Cell::Int(2),
            Cell::Int(3),
            Cell::Int(1),
        ]
    }

    /// A batch of two accounts: its rows and its step's key commit together.
    async fn first_batch_commits_with_its_key(target: &mut Target, db: &Client) {
        let batch = Batch {
            rows: vec![account_row(4, "ann"), account_row(9, "bo")],
            last_key: Some(vec![Cell::Int(9)]),
        };
        target.copy(&TABLES[0], &batch).await.unwrap();
        let TargetState::Migrating {
            migration_id,
            steps,
        } = target.state().await.unwrap()
        else {
            panic!("not migrating");
        };
        assert_eq!(migration_id, "m-1");
        assert_eq!(
            steps["accounts"],
            Step {
                after: Some(vec![Cell::Int(9)]),
                copied: 2,
                bytes: 0,
                done: false
            }
        );
        assert!(!steps[MEDIA_STEP].done);
        let suspended: Vec<bool> = db
            .query("SELECT suspended FROM accounts ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(suspended, [true, true]);
    }

    /// The id a new account gets.
    async fn next_account_id(db: &Client) -> i64 {
        db.query_one(
            "INSERT INTO accounts (username, password_hash, created_ms)
                 VALUES ('new', 'h', 0) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }
}
