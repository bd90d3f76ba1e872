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
