//! What a backup of a cluster's store needs from PostgreSQL besides
//! `pg_dump`: a snapshot held open so that `pg_dump --snapshot` copies
//! exactly the rows counted in it, and the same counts read after a
//! restore to compare.

use tokio_postgres::{Client, NoTls};

use crate::{StoreError, TableCounts};

/// A repeatable-read transaction whose snapshot is exported: while it is
/// held, `pg_dump --snapshot <id>` sees the database as [`counts`] did.
///
/// [`counts`]: HeldSnapshot::counts
pub struct HeldSnapshot {
    client: Client,
    pub id: String,
    pub counts: TableCounts,
}

impl HeldSnapshot {
    /// Ends the transaction (it wrote nothing).
    pub async fn release(self) -> Result<(), StoreError> {
        self.client.batch_execute("COMMIT").await.map_err(failed)
    }
}

/// Opens a connection to `url`, exports a snapshot and counts every table
/// in it.
pub async fn hold_snapshot(url: &str) -> Result<HeldSnapshot, StoreError> {
    let client = connect(url).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(failed)?;
    let id: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(failed)?
        .get(0);
    let counts = count(&client).await?;
    Ok(HeldSnapshot { client, id, counts })
}

/// Row counts of every table of the database at `url`; `None` when it
/// has no missive tables at all (an empty database to restore into).
pub async fn counts(url: &str) -> Result<Option<TableCounts>, StoreError> {
    let client = connect(url).await?;
    let counts = count(&client).await?;
    Ok((!counts.is_empty()).then_some(counts))
}

async fn count(client: &Client) -> Result<TableCounts, StoreError> {
    let tables = client
        .query(
            "SELECT quote_ident(table_name), table_name FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
            &[],
        )
        .await
        .map_err(failed)?;
    let mut counts = TableCounts::new();
    for table in tables {
        let quoted: String = table.get(0);
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await
            .map_err(failed)?
            .get(0);
        counts.insert(table.get(1), u64::try_from(rows).unwrap_or(0));
    }
    Ok(counts)
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "backup connection ended");
        }
    });
    Ok(client)
}

fn failed(err: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}
