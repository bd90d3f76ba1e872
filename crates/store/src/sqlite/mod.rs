//! The embedded Store adapter: one SQLite file in WAL mode.
//!
//! Writes go to one thread that commits waiting jobs together (group commit);
//! reads go to a small pool of read-only connections. Because a single
//! thread assigns every seq inside its transaction, the order readers see
//! is the commit order.
//!
//! Modules by concern: `accounts` (accounts, devices), `conversations`
//! (1:1 lookup, membership, member devices), `send` (an event's checks and
//! its one row), `groups`, `delivery` (pending, acks, read pointers,
//! sweep), `history`, `media`, `social`, `sessions`.

mod accounts;
pub mod backup;
mod checkpointer;
mod conversations;
mod delivery;
pub mod export;
mod facts;
mod groups;
mod history;
mod keys;
mod media;
mod readers;
mod schema;
mod send;
mod sessions;
mod social;
mod to_device;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};
use rusqlite::{Connection, OpenFlags};

use crate::model::*;
use crate::{MessageStore, QueuedAppend, Store, StoreError};
use checkpointer::Checkpointer;
use readers::Readers;
use writer::{Undo, Writer, backend};

/// How hard a commit is pushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// `sent` only after the batch is on disk (`synchronous = FULL`).
    Always,
    /// No fsync (`synchronous = OFF`): a power cut can lose recent commits.
    /// For benchmarks.
    Off,
}

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub fsync: Fsync,
    /// Most jobs committed in one transaction.
    pub batch_max: usize,
    /// Most jobs waiting for the writer before senders wait.
    pub queue_max: usize,
    pub readers: usize,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: Fsync::Always,
            batch_max: 512,
            queue_max: 8192,
            readers: 4,
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    checkpointer: Checkpointer,
    readers: Readers,
}

/// How much of the database file a reader maps instead of copying pages
/// in with a read call each: catch-up reads touch pages of every
/// conversation a reconnecting device is in.
const READER_MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// Distinct cached statements kept per connection.
const STATEMENT_CACHE_CAPACITY: usize = 256;

fn open(path: &PathBuf, flags: OpenFlags, fsync: Fsync) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    // Room for every statement the adapter caches (rusqlite keeps 16 by
    // default, fewer than a send and an ack use between them, so they were
    // parsed again and again).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    let synchronous = match fsync {
        Fsync::Always => "FULL",
        Fsync::Off => "OFF",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))
    .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, then starts the
    /// writer thread. Must be called inside a Tokio runtime.
    pub fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        let mut writer_conn = open(&config.path, OpenFlags::default(), config.fsync)?;
        schema::migrate(&mut writer_conn).map_err(StoreError::Backend)?;
        export::refuse_if_sealed(&writer_conn)?;
        facts::install(&writer_conn)?;
        writer_conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {}; PRAGMA journal_size_limit = {};",
                checkpointer::WRITER_BACKSTOP_PAGES,
                checkpointer::WAL_KEPT_BYTES
            ))
            .map_err(backend)?;
        let checkpoint_conn = open(&config.path, OpenFlags::default(), config.fsync)?;
        checkpoint_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(backend)?;
        let readers = (0..config.readers.max(1))
            .map(|_| {
                let conn = open(
                    &config.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    config.fsync,
                )?;
                conn.execute_batch(&format!("PRAGMA mmap_size = {READER_MMAP_BYTES};"))
                    .map_err(backend)?;
                Ok(conn)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Writer::start(writer_conn, config.batch_max, config.queue_max)?,
                checkpointer: Checkpointer::start(checkpoint_conn)?,
                readers: Readers::start(readers)?,
            }),
        })
    }

    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(Undo::Savepoint, op).await
    }

    /// [`write`](Self::write) for an `op` that makes every check before its
    /// first write (see [`Undo::Batch`]): sends and acks.
    async fn write_checked_first<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(Undo::Batch, op).await
    }

    async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.readers.read(op).await
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn find_direct_conversation(
        &self,
        a: AccountId,
        b: AccountId,
    ) -> Result<Option<ConversationId>, StoreError> {
        self.read(move |conn| conversations::find_direct_conversation(conn, a, b))
            .await
    }

    async fn direct_conversation(
        &self,
        a: AccountId,
        b: AccountId,
        now_ms: UnixMillis,
        encrypted: bool,
    ) -> Result<ConversationId, StoreError> {
        // Nearly always it exists: answer from a reader and keep the single
        // writer for the first message between two accounts.
        let found = self
            .read(move |conn| conversations::find_direct_conversation(conn, a, b))
            .await?;
        match found {
            Some(conversation) => Ok(conversation),
            None => {
                self.write(move |conn| {
                    conversations::direct_conversation(conn, a, b, now_ms, encrypted)
                })
                .await
            }
        }
    }

    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError> {
        self.write_checked_first(move |conn| send::append_message(conn, &message))
            .await
    }

    async fn queue_message(&self, message: NewMessage) -> Result<QueuedAppend, StoreError> {
        // The writer runs jobs in the order they were queued.
        let stored = self
            .inner
            .writer
            .queue(Undo::Batch, move |conn| {
                send::append_message(conn, &message)
            })
            .await?;
        Ok(Box::pin(stored))
    }

    async fn pending(&self, request: PendingRequest) -> Result<Pending, StoreError> {
        self.read(move |conn| delivery::pending(conn, &request))
            .await
    }

    async fn ack(&self, ack: AckRequest) -> Result<AckOutcome, StoreError> {
        self.write_checked_first(move |conn| delivery::ack(conn, &ack))
            .await
    }

    async fn mark_read(&self, read: ReadRequest) -> Result<ReadOutcome, StoreError> {
        self.write(move |conn| delivery::mark_read(conn, &read))
            .await
    }

    async fn sweep(&self, sweep: SweepRequest) -> Result<SweepOutcome, StoreError> {
        self.write(move |conn| {
            accounts::prune_revocations(conn)?;
            delivery::sweep(conn, &sweep)
        })
        .await
    }

    async fn waiting(&self, device: DeviceId) -> Result<u64, StoreError> {
        self.read(move |conn| delivery::waiting(conn, device)).await
    }

    async fn waiting_total(&self) -> Result<u64, StoreError> {
        self.read(delivery::waiting_total).await
    }

    async fn behind(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>, StoreError> {
        self.read(move |conn| delivery::behind(conn, &devices))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn is_ready(&self) -> bool {
        let probe = |conn: &Connection| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend);
        self.read(probe).await.is_ok() && self.write(probe).await.is_ok()
    }

    async fn shutdown(&self) {
        self.inner.checkpointer.shutdown().await;
        self.inner.writer.shutdown().await;
        self.inner.readers.close();
    }
}
