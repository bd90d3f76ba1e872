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
use missive_core::{
    AccountId, ConversationId, DeviceId, MessageId, TokenHash, UnixMillis, Username,
};
use tokio::sync::{RwLock, RwLockReadGuard};
use tokio_postgres::IsolationLevel;

use crate::model::*;
use crate::{Store, StoreError};
use fault::{Fault, Outcome};
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
        sql::ordered($op).await.map_err(Fault::into_store)
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
            let outcome: Outcome<_> = sql::ordered(async {
                let $tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
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
                Err(fault) if fault.is_transient() && attempt < TX_ATTEMPTS => {
                    tracing::debug!(?fault, attempt, "transaction lost a race; running it again");
                    attempt += 1;
                }
                other => break other.map_err(Fault::into_store),
            }
        }
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError> {
        transaction!(self, |tx| accounts::create_account(tx, &account))
    }

    async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<AccountRecord>, StoreError> {
        autocommit!(self, |db| accounts::account_by_username(db, username))
    }

    async fn create_device(&self, device: NewDevice) -> Result<CreatedDevice, StoreError> {
        transaction!(self, |tx| accounts::create_device(tx, &device))
    }

    async fn list_accounts(
        &self,
        after: Option<Username>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        autocommit!(self, |db| accounts::list_accounts(
            db,
            after.as_ref().map(Username::as_str),
            limit
        ))
    }

    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        transaction!(self, |tx| accounts::set_suspended(tx, account, suspended))
    }

    async fn delete_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        transaction!(self, |tx| accounts::delete_account(tx, account))
    }

    async fn create_invites(&self, invites: NewInvites) -> Result<(), StoreError> {
        autocommit!(self, |db| accounts::create_invites(db, &invites))
    }

    async fn set_password_hash(
        &self,
        account: AccountId,
        hash: String,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| accounts::set_password_hash(db, account, &hash))
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, DeviceId)>, StoreError> {
        autocommit!(self, |db| accounts::revocations_after(db, after, limit))
    }

    async fn last_revocation(&self) -> Result<i64, StoreError> {
        autocommit!(self, |db| accounts::last_revocation(db))
    }

    async fn touch_device(&self, device: DeviceId, now_ms: UnixMillis) -> Result<(), StoreError> {
        autocommit!(self, |db| accounts::touch_device(db, device, now_ms))
    }

    async fn expire_devices(
        &self,
        idle_before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<RevokedDevice>, StoreError> {
        transaction!(self, |tx| accounts::expire_devices(
            tx,
            idle_before_ms,
            limit
        ))
    }

    async fn authenticate(&self, token: &TokenHash) -> Result<Option<DeviceAuth>, StoreError> {
        autocommit!(self, |db| accounts::authenticate(db, token))
    }

    async fn list_devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError> {
        autocommit!(self, |db| accounts::list_devices(db, account))
    }

    async fn rename_device(
        &self,
        account: AccountId,
        device: DeviceId,
        name: String,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| accounts::rename_device(
            db, account, device, &name
        ))
    }

    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<RevokedDevice>, StoreError> {
        transaction!(self, |tx| accounts::revoke_device(tx, account, device))
    }

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

    async fn create_group(&self, group: NewGroup) -> Result<GroupChanged, StoreError> {
        transaction!(self, |tx| groups::create_group(tx, &group))
    }

    async fn change_setting(&self, request: SettingRequest) -> Result<GroupChanged, StoreError> {
        transaction!(self, |tx| groups::change_setting(tx, &request))
    }

    async fn change_group(&self, change: GroupChangeRequest) -> Result<GroupChanged, StoreError> {
        transaction!(self, |tx| groups::change_group(tx, &change))
    }

    async fn group_info(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<GroupRecord, StoreError> {
        autocommit!(self, |db| groups::group_info(db, account, conversation))
    }

    async fn history(&self, request: HistoryRequest) -> Result<Vec<StoredEvent>, StoreError> {
        autocommit!(self, |db| history::history(db, &request))
    }

    async fn conversations(
        &self,
        account: AccountId,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        autocommit!(self, |db| history::conversations(db, account))
    }

    async fn receipts(
        &self,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> Result<ReceiptsRecord, StoreError> {
        autocommit!(self, |db| history::receipts(
            db,
            account,
            conversation,
            message_id
        ))
    }

    async fn put_device_keys(&self, upload: KeyUpload) -> Result<KeysStored, StoreError> {
        transaction!(self, |tx| keys::put(tx, &upload))
    }

    async fn device_keys(&self, account: AccountId) -> Result<Vec<DeviceKeys>, StoreError> {
        autocommit!(self, |db| keys::of_account(db, account))
    }

    async fn online_devices_sharing_with(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceId>, StoreError> {
        autocommit!(self, |db| keys::online_devices_sharing_with(db, account))
    }

    async fn claim_one_time_keys(&self, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError> {
        transaction!(self, |tx| keys::claim(tx, account))
    }

    async fn one_time_key_count(&self, device: DeviceId) -> Result<u64, StoreError> {
        autocommit!(self, |db| keys::count(db, device))
    }

    async fn send_to_devices(&self, batch: ToDeviceBatch) -> Result<(), StoreError> {
        transaction!(self, |tx| to_device::send(tx, &batch))
    }

    async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, StoreError> {
        autocommit!(self, |db| to_device::waiting(db, device, after, limit))
    }

    async fn ack_to_device(&self, device: DeviceId, up_to: i64) -> Result<u64, StoreError> {
        autocommit!(self, |db| to_device::ack(db, device, up_to))
    }

    async fn set_contact(
        &self,
        owner: AccountId,
        contact: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| social::set_contact(
            db, owner, contact, present, now_ms
        ))
    }

    async fn contacts(&self, owner: AccountId) -> Result<Vec<String>, StoreError> {
        autocommit!(self, |db| social::contacts(db, owner))
    }

    async fn set_block(
        &self,
        blocker: AccountId,
        blocked: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| social::set_block(
            db, blocker, blocked, present, now_ms
        ))
    }

    async fn blocked(&self, blocker: AccountId) -> Result<Vec<String>, StoreError> {
        autocommit!(self, |db| social::blocked(db, blocker))
    }

    async fn blocked_either_way(&self, a: AccountId, b: AccountId) -> Result<bool, StoreError> {
        autocommit!(self, |db| social::blocked_either_way(db, a, b))
    }

    async fn blocked_with_any(
        &self,
        a: AccountId,
        others: Vec<AccountId>,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| social::blocked_with_any(db, a, &others))
    }

    async fn is_contact(&self, owner: AccountId, contact: AccountId) -> Result<bool, StoreError> {
        autocommit!(self, |db| social::is_contact(db, owner, contact))
    }

    async fn set_presence_visibility(
        &self,
        account: AccountId,
        visibility: PresenceVisibility,
    ) -> Result<(), StoreError> {
        autocommit!(self, |db| social::set_presence_visibility(
            db, account, visibility
        ))
    }

    async fn presence_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<PresenceProfile>, StoreError> {
        autocommit!(self, |db| social::presence_profile(db, account))
    }

    async fn set_last_seen(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<(), StoreError> {
        autocommit!(self, |db| social::set_last_seen(db, account, now_ms))
    }

    async fn relay_targets(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<Vec<(AccountId, DeviceId)>, StoreError> {
        autocommit!(self, |db| social::relay_targets(db, account, conversation))
    }

    async fn create_media(&self, media: MediaRecord) -> Result<(), StoreError> {
        autocommit!(self, |db| media::create_media(db, &media))
    }

    async fn media_for(
        &self,
        account: AccountId,
        id: &str,
    ) -> Result<Option<MediaRecord>, StoreError> {
        autocommit!(self, |db| media::media_for(db, account, id))
    }

    async fn take_unreferenced_media(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        autocommit!(self, |db| media::take_unreferenced_media(
            db, before_ms, limit
        ))
    }

    async fn renew_node(&self, node: &str, lease_until_ms: UnixMillis) -> Result<bool, StoreError> {
        transaction!(self, |tx| sessions::renew_node(tx, node, lease_until_ms))
    }

    async fn claim_session(
        &self,
        device: DeviceId,
        account: AccountId,
        node: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<String>, StoreError> {
        transaction!(self, |tx| sessions::claim_session(
            tx, device, account, node, now_ms
        ))
    }

    async fn release_session(&self, device: DeviceId, node: &str) -> Result<(), StoreError> {
        autocommit!(self, |db| sessions::release_session(db, device, node))
    }

    async fn account_online(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        autocommit!(self, |db| sessions::account_online(db, account, now_ms))
    }

    async fn clock_ms(&self) -> Result<Option<UnixMillis>, StoreError> {
        autocommit!(self, |db| sessions::clock_ms(db)).map(Some)
    }

    async fn reap_nodes(&self, now_ms: UnixMillis) -> Result<Vec<AccountId>, StoreError> {
        transaction!(self, |tx| sessions::reap_nodes(tx, now_ms))
    }

    async fn device_owner(&self, device: DeviceId) -> Result<Option<String>, StoreError> {
        autocommit!(self, |db| accounts::device_owner(db, device))
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
