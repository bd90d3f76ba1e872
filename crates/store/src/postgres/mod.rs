//! The cluster Store adapter: PostgreSQL through a pool of tokio-postgres
//! connections (deadpool). Any number of nodes, each a `PostgresStore` with
//! its own pool, share one database and keep the guarantees of the
//! single-writer SQLite store. How:
//!
//! - **One row per event, nothing per recipient.** A send stores its event
//!   row (keyed by conversation and seq) and advances the conversation's
//!   `last_seq`; what waits for a device is every event above its
//!   *position* in each of its conversations (`delivery.rs`). The send path
//!   writes no row per recipient and locks no device row; who an event is
//!   for is read, for waking them, not stored.
//! - **Gap-free seq in commit order.** A conversation's next seq is taken
//!   while the writing transaction holds the conversation row (`FOR NO KEY
//!   UPDATE`), to commit, and written back with the event in the same
//!   transaction. So events of one conversation commit one after another in
//!   seq order, no reader sees seq N+1 before N (a reader that sees a
//!   `last_seq` sees every row up to it), and a rollback gives the number
//!   back with nothing written. Every event of a conversation (text,
//!   reaction, edit, delete, group change) takes this lock before its
//!   checks, so membership and target checks see the latest committed state.
//! - **Retries answered once.** The idempotency key is the unique index on
//!   the event rows' (sender device, client_msg_id). A retry into the same
//!   conversation waits on the conversation lock, then finds the first
//!   send's row. One into another conversation, concurrently on another
//!   node, waits on the key itself (`INSERT ... ON CONFLICT`) until the
//!   first commits, finds it taken, and its transaction runs again, this
//!   time answering with the first send's row. No seq is taken for it.
//! - **One lock order.** Conversation rows, then message rows, each kind in
//!   ascending key order. A batch of acks takes the member rows whose
//!   cursors move (ascending by conversation, then account) and, in
//!   store-and-forward, a per-conversation advisory lock before the message
//!   rows it purges; a group change takes its conversation row, then member
//!   rows (all of them, ascending by account, when it writes more than one,
//!   the order a batch of acks takes them in). A deadlock or serialization
//!   failure the engine still reports (other Postgres-wire engines report
//!   conflicts that way) reruns the transaction a few times.
//! - **Many sends per commit.** Sends that arrive together share one
//!   transaction (`batcher.rs`, `sender.rs`, `send.rs`), which takes all its locks up
//!   front in the order above; each send is still judged alone, and a
//!   refused one takes no seq and writes nothing.
//! - **Acks are cursors, many per commit.** Acks that arrive together, from
//!   any devices, share one transaction (`ack.rs`): one multi-row upsert of
//!   positions, one multi-row update of member rows, whatever the number of
//!   acks, conversations or events they cover.
//! - **Sweeps on every node at once.** The sweeper and media collection
//!   delete bounded batches picked with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent sweepers take disjoint rows and never wait on each other or
//!   on a send.
//!
//! Transactions run at READ COMMITTED: each statement sees what committed
//! before it started, which is how a statement that waited for a lock sees
//! the winner's writes. Statements that do not depend on each other's
//! results are pipelined (see `sql.rs`).

mod accounts;
mod ack;
pub mod backup;
mod batcher;
mod codes;
mod conversations;
mod delivery;
mod fault;
mod groups;
mod history;
pub mod import;
mod keys;
mod media;
mod pools;
mod schema;
mod send;
mod sender;
mod sessions;
mod social;
mod sql;
mod sweep;
#[cfg(test)]
mod testing;
mod to_device;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::model::*;
use crate::{MessageStore, Store, StoreError};
use fault::Fault;
use pools::{ack_writers, build_pool, migrate, send_writers, split_pool};

/// Where the database is and how long to wait for it.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/database[?options=...]`.
    pub url: String,
    /// Most connections this node holds open.
    pub pool_size: usize,
    /// Longest wait for a new connection (TCP + startup). Short, so an
    /// outage fails calls fast instead of hanging them.
    pub connect_timeout: Duration,
    /// Longest wait for a free connection of the pool.
    pub wait_timeout: Duration,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            wait_timeout: Duration::from_secs(5),
        }
    }
}

/// How often a transaction that lost a deadlock or serialization race is
/// tried in all.
const TX_ATTEMPTS: u32 = 5;
/// Bound of the readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reads, sessions and every write that is not batched.
    pool: Pool,
    /// The batch writers' own: a flood of reads (a reconnect storm, the
    /// re-check waking every device behind at once) queues for `pool` and
    /// never keeps a send or an ack waiting for a connection.
    writes: Pool,
    /// Where sends queue for their batch writers.
    sends: batcher::Batcher<sender::Sends>,
    /// Where acks queue for theirs.
    acks: batcher::Batcher<ack::Acks>,
    /// `true` while open. Every call holds a read guard for its whole run,
    /// so `shutdown` (the writer) waits for calls in flight, and calls that
    /// come after it see `false`.
    open: RwLock<bool>,
}

impl PostgresStore {
    /// Connects, migrates the schema (safe when several nodes start at
    /// once) and returns the store. An unreachable server is `Unavailable`.
    pub async fn connect(config: &PostgresConfig) -> Result<Self, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|err| StoreError::Backend(format!("invalid PostgreSQL URL: {err}")))?;
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("missive");
        }
        // Statements stay prepared per connection and PostgreSQL plans them
        // its default way (`plan_cache_mode = auto`): custom plans for the
        // first five executions, then a generic plan only where it costs no
        // more. Forcing a custom plan on every execution (which an earlier
        // schema, with per-device queues, needed) spent more of
        // PostgreSQL's time planning than executing (BENCHMARKS.md, "Issue
        // 15, fourth pass"). A URL's `options` may still set another mode.
        migrate(&pg, config.connect_timeout)
            .await
            .map_err(Fault::into_store)?;
        let (send_writers, ack_writers) = (
            send_writers(config.pool_size),
            ack_writers(config.pool_size),
        );
        let (reads, writes) = split_pool(config.pool_size, send_writers + ack_writers);
        let pool = build_pool(&pg, config, reads)?;
        let writes = build_pool(&pg, config, writes)?;
        let sends = batcher::Batcher::start(&writes, send_writers);
        let acks = batcher::Batcher::start(&writes, ack_writers);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                writes,
                sends,
                acks,
                open: RwLock::new(true),
            }),
        })
    }

    /// Admits a call while the store is open; the guard keeps `shutdown`
    /// waiting until the call is over.
    async fn admit(&self) -> Result<RwLockReadGuard<'_, bool>, StoreError> {
        let open = self.inner.open.read().await;
        if *open {
            Ok(open)
        } else {
            Err(StoreError::Closed)
        }
    }

    async fn connection(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|err| Fault::from(err).into_store())
    }
}

/// Runs `$op`, an expression over `$db`, a pooled connection in autocommit:
/// for reads, and for writes that are one statement.
macro_rules! autocommit {
    ($store:expr, |$db:ident| $op:expr) => {{
        let _open = $store.admit().await?;
        let $db = $store.connection().await?;
        let $db = &$db;
        $crate::postgres::sql::ordered($op)
            .await
            .map_err($crate::postgres::fault::Fault::into_store)
    }};
}

/// Runs `$op`, an expression over `$tx`, a READ COMMITTED
/// transaction committed when `$op` succeeds and rolled back (by dropping
/// it) when it fails. A transient failure reruns the whole transaction.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $op:expr) => {{
        let _open = $store.admit().await?;
        let mut client = $store.connection().await?;
        let mut attempt = 1;
        loop {
            let outcome: $crate::postgres::fault::Outcome<_> =
                $crate::postgres::sql::ordered(async {
                    let $tx = client
                        .build_transaction()
                        .isolation_level(::tokio_postgres::IsolationLevel::ReadCommitted)
                        .start()
                        .await?;
                    let value = {
                        let $tx = &$tx;
                        $op.await?
                    };
                    $tx.commit().await?;
                    Ok(value)
                })
                .await;
            match outcome {
                Err(fault) if fault.is_transient() && attempt < $crate::postgres::TX_ATTEMPTS => {
                    tracing::debug!(?fault, attempt, "transaction lost a race; running it again");
                    attempt += 1;
                }
                other => break other.map_err($crate::postgres::fault::Fault::into_store),
            }
        }
    }};
}
use {autocommit, transaction};

#[async_trait]
impl MessageStore for PostgresStore {
    async fn find_direct_conversation(
        &self,
        a: AccountId,
        b: AccountId,
    ) -> Result<Option<ConversationId>, StoreError> {
        autocommit!(self, |db| conversations::find_direct(db, a, b))
    }

    async fn direct_conversation(
        &self,
        a: AccountId,
        b: AccountId,
        now_ms: UnixMillis,
        encrypted: bool,
    ) -> Result<ConversationId, StoreError> {
        // Nearly always it exists: one read, no transaction.
        let found = autocommit!(self, |db| conversations::find_direct(db, a, b))?;
        match found {
            Some(conversation) => Ok(conversation),
            None => transaction!(self, |tx| conversations::create_direct(
                tx, a, b, now_ms, encrypted
            )),
        }
    }

    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError> {
        let _open = self.admit().await?;
        self.inner.sends.call(message).await
    }

    async fn pending(&self, request: PendingRequest) -> Result<Pending, StoreError> {
        autocommit!(self, |db| delivery::pending(db, &request))
    }

    async fn ack(&self, ack: AckRequest) -> Result<AckOutcome, StoreError> {
        if ack.points.is_empty() {
            return Ok(AckOutcome::default());
        }
        let _open = self.admit().await?;
        self.inner.acks.call(ack).await
    }

    async fn mark_read(&self, read: ReadRequest) -> Result<ReadOutcome, StoreError> {
        transaction!(self, |tx| delivery::mark_read(tx, &read))
    }

    async fn sweep(&self, sweep: SweepRequest) -> Result<SweepOutcome, StoreError> {
        transaction!(self, |tx| async {
            accounts::prune_revocations(tx).await?;
            sweep::sweep(tx, &sweep).await
        })
    }

    async fn waiting(&self, device: DeviceId) -> Result<u64, StoreError> {
        autocommit!(self, |db| delivery::waiting(db, device))
    }

    async fn waiting_total(&self) -> Result<u64, StoreError> {
        autocommit!(self, |db| delivery::waiting_total(db))
    }

    async fn behind(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>, StoreError> {
        autocommit!(self, |db| delivery::behind(db, &devices))
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn is_ready(&self) -> bool {
        let probe = async {
            let _open = self.admit().await?;
            let db = self.connection().await?;
            db.simple_query("SELECT 1")
                .await
                .map_err(|err| Fault::from(err).into_store())?;
            Ok::<_, StoreError>(())
        };
        matches!(tokio::time::timeout(READY_TIMEOUT, probe).await, Ok(Ok(())))
    }

    async fn shutdown(&self) {
        // Each call commits or rolls back on its own; waiting for the write
        // guard lets the calls in flight finish before the pool goes.
        let mut open = self.inner.open.write().await;
        *open = false;
        self.inner.pool.close();
        self.inner.writes.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{FreshSchema, account, ack, chat, text};
    use super::*;

    #[tokio::test]
    async fn sends_and_acks_commit_while_reads_hold_every_other_connection() {
        // Goal: reads queued for the pool (a reconnect storm, the
        // re-check's wake-ups) never hold a send or an ack back: the batch
        // writers have connections of their own.
        let Some((schema, store)) = FreshSchema::store("writers").await else {
            return;
        };
        let alice = account(&store, "alice").await;
        let bob = account(&store, "bob").await;
        let conversation = chat(&store, alice, bob).await;
        let mut held = Vec::new();
        for _ in 0..store.inner.pool.status().max_size {
            held.push(store.inner.pool.get().await.expect("connection"));
        }
        // Well under the pool's wait timeout (5 s), after which a send
        // waiting for a read connection would fail.
        let within = Duration::from_secs(3);
        let appended = tokio::time::timeout(
            within,
            store.append_message(text(conversation, alice, "c1")),
        )
        .await
        .expect("the send waited for a connection")
        .expect("stored");
        let acked =
            tokio::time::timeout(within, store.ack(ack(bob, &[(conversation, appended.seq)])))
                .await
                .expect("the ack waited for a connection");
        assert!(acked.is_ok(), "{acked:?}");
        drop(held);
        schema.drop().await;
    }
}
