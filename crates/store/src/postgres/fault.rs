//! What can go wrong inside a PostgreSQL operation, and how it reaches the
//! caller as a [`StoreError`].

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::StoreError;

/// The error of an operation before it leaves the adapter. Kept apart from
/// `StoreError` so the transaction runner can tell a transient conflict
/// (worth running the transaction again) from a refusal or an outage.
#[derive(Debug)]
pub(super) enum Fault {
    /// A deliberate refusal; the transaction is rolled back.
    Refused(StoreError),
    Db(tokio_postgres::Error),
    Pool(PoolError),
    /// A row the transaction relied on vanished between two statements
    /// (another node deleted it); running it again gives a clean answer.
    Raced,
    /// Stored data that cannot be turned into a domain value.
    Corrupt(String),
}

pub(super) type Outcome<T> = Result<T, Fault>;

impl From<tokio_postgres::Error> for Fault {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Db(err)
    }
}

impl From<StoreError> for Fault {
    fn from(err: StoreError) -> Self {
        Self::Refused(err)
    }
}

impl From<PoolError> for Fault {
    fn from(err: PoolError) -> Self {
        Self::Pool(err)
    }
}

impl Fault {
    /// Whether running the whole transaction again may succeed: deadlocks
    /// and serialization failures (engines such as CockroachDB report the
    /// latter for ordinary conflicts) and rows lost to a concurrent delete.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            Self::Raced => true,
            Self::Db(err) => matches!(
                err.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
            ),
            _ => false,
        }
    }

    pub(super) fn into_store(self) -> StoreError {
        match self {
            Self::Refused(err) => err,
            Self::Db(err) => db_error(&err),
            Self::Pool(err) => pool_error(&err),
            Self::Raced => StoreError::Backend("a concurrent change kept winning the race".into()),
            Self::Corrupt(what) => StoreError::Backend(what),
        }
    }
}

fn db_error(err: &tokio_postgres::Error) -> StoreError {
    if is_outage(err) {
        tracing::warn!(%err, "PostgreSQL is unavailable");
        StoreError::Unavailable
    } else if err.code() == Some(&SqlState::DISK_FULL) {
        tracing::error!(%err, "PostgreSQL's disk is full; writes are refused until space is freed");
        StoreError::Full
    } else {
        StoreError::Backend(match err.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => err.to_string(),
        })
    }
}

/// Connection-level failures: the server cannot be reached, went away, is
/// shutting down or starting, is out of connections, or is a read-only
/// standby (mid-failover). The same call may succeed later.
fn is_outage(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::READ_ONLY_SQL_TRANSACTION,
            ]
            .contains(code);
    }
    // Without a server error, a failure is the socket's (I/O, connect,
    // connect timeout): anything else tokio-postgres reports carries a code
    // or concerns our own encoding, which the tests exercise.
    let source_is_io = std::error::Error::source(err)
        .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
    source_is_io || err.to_string().starts_with("timeout waiting for server")
}

fn pool_error(err: &PoolError) -> StoreError {
    match err {
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(_) | PoolError::Backend(_) => {
            tracing::warn!(%err, "no PostgreSQL connection");
            StoreError::Unavailable
        }
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Backend(err.to_string())
        }
    }
}
