//! What opening a [`PostgresStore`](super::PostgresStore) sets up before
//! the first call: the schema's migration, on a connection of its own, and
//! the two connection pools (reads and the rest; the batch writers').

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::fault::{Fault, Outcome};
use super::{PostgresConfig, import, schema};
use crate::StoreError;

/// How many batch writers (each holding at most one connection) a pool of
/// `pool_size` gets: a quarter, so reads, acks and sessions keep the rest.
/// More than one, so a batch fills while another commits.
pub(super) fn send_writers(pool_size: usize) -> usize {
    (pool_size / 4).clamp(2, 16)
}

/// How many ack batch writers: fewer than for sends, since a batch of acks
/// takes no conversation lock and may be large.
pub(super) fn ack_writers(pool_size: usize) -> usize {
    (pool_size / 8).clamp(1, 8)
}

/// How `pool_size` connections are shared: (for reads and the rest, for
/// the batch writers). One each for the `writers` batch writers, as far as
/// the size allows while leaving at least one for the rest; writers beyond
/// their pool's size take turns.
pub(super) fn split_pool(pool_size: usize, writers: usize) -> (usize, usize) {
    let writes = writers.min(pool_size.saturating_sub(1)).max(1);
    (pool_size.saturating_sub(writes).max(1), writes)
}

pub(super) fn build_pool(
    pg: &tokio_postgres::Config,
    config: &PostgresConfig,
    size: usize,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        pg.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.wait_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|err| StoreError::Backend(format!("cannot build the connection pool: {err}")))
}

/// Migrates on a connection of its own: the advisory lock that serializes
/// concurrent starts is held by this session, and dies with it.
pub(super) async fn migrate(pg: &tokio_postgres::Config, connect_timeout: Duration) -> Outcome<()> {
    // tokio-postgres's own timeout covers the TCP connect only: a server
    // (or proxy) that accepts and then says nothing would hang the start.
    let connected = tokio::time::timeout(connect_timeout, pg.connect(NoTls))
        .await
        .map_err(|_| {
            tracing::warn!("PostgreSQL accepted the connection but did not answer");
            Fault::Refused(StoreError::Unavailable)
        })?;
    let (mut client, connection) = connected?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "migration connection ended with an error");
        }
    });
    let migrated = match schema::migrate(&mut client).await {
        Ok(()) => import::refuse_if_importing(&client).await,
        failed => failed,
    };
    drop(client);
    let _ = driver.await;
    migrated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_writers_keep_their_share_of_the_pool() {
        // Goal: one connection per batch writer while at least one is left
        // for the rest, and never a pool of none.
        assert_eq!(split_pool(16, 6), (10, 6));
        assert_eq!(split_pool(4, 3), (1, 3));
        assert_eq!(split_pool(2, 3), (1, 1));
        assert_eq!(split_pool(1, 3), (1, 1));
    }
}
