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
use missive_core::{
    AccountId, ConversationId, DeviceId, MessageId, TokenHash, UnixMillis, Username,
};
use rusqlite::{Connection, OpenFlags};

use crate::model::*;
use crate::{QueuedAppend, Store, StoreError};
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
impl Store for SqliteStore {
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError> {
        self.write(move |conn| accounts::create_account(conn, &account))
            .await
    }

    async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let username = username.clone();
        self.read(move |conn| accounts::account_by_username(conn, &username))
            .await
    }

    async fn create_device(&self, device: NewDevice) -> Result<CreatedDevice, StoreError> {
        self.write(move |conn| accounts::create_device(conn, &device))
            .await
    }

    async fn list_accounts(
        &self,
        after: Option<Username>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        self.read(move |conn| {
            accounts::list_accounts(conn, after.as_ref().map(Username::as_str), limit)
        })
        .await
    }

    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        self.write(move |conn| accounts::set_suspended(conn, account, suspended))
            .await
    }

    async fn delete_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError> {
        self.write(move |conn| accounts::delete_account(conn, account))
            .await
    }

    async fn create_invites(&self, invites: NewInvites) -> Result<(), StoreError> {
        self.write(move |conn| accounts::create_invites(conn, &invites))
            .await
    }

    async fn set_password_hash(
        &self,
        account: AccountId,
        hash: String,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| accounts::set_password_hash(conn, account, &hash))
            .await
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, DeviceId)>, StoreError> {
        self.read(move |conn| accounts::revocations_after(conn, after, limit))
            .await
    }

    async fn last_revocation(&self) -> Result<i64, StoreError> {
        self.read(accounts::last_revocation).await
    }

    async fn touch_device(&self, device: DeviceId, now_ms: UnixMillis) -> Result<(), StoreError> {
        self.write(move |conn| accounts::touch_device(conn, device, now_ms))
            .await
    }

    async fn expire_devices(
        &self,
        idle_before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<RevokedDevice>, StoreError> {
        self.write(move |conn| accounts::expire_devices(conn, idle_before_ms, limit))
            .await
    }

    async fn authenticate(&self, token: &TokenHash) -> Result<Option<DeviceAuth>, StoreError> {
        let token = token.clone();
        self.read(move |conn| accounts::authenticate(conn, &token))
            .await
    }

    async fn list_devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(move |conn| accounts::list_devices(conn, account))
            .await
    }

    async fn rename_device(
        &self,
        account: AccountId,
        device: DeviceId,
        name: String,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| accounts::rename_device(conn, account, device, &name))
            .await
    }

    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<RevokedDevice>, StoreError> {
        self.write(move |conn| accounts::revoke_device(conn, account, device))
            .await
    }

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

    async fn create_group(&self, group: NewGroup) -> Result<GroupChanged, StoreError> {
        self.write(move |conn| groups::create_group(conn, &group))
            .await
    }

    async fn change_setting(&self, request: SettingRequest) -> Result<GroupChanged, StoreError> {
        self.write(move |conn| groups::change_setting(conn, &request))
            .await
    }

    async fn change_group(&self, change: GroupChangeRequest) -> Result<GroupChanged, StoreError> {
        self.write(move |conn| groups::change_group(conn, &change))
            .await
    }

    async fn group_info(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<GroupRecord, StoreError> {
        self.read(move |conn| groups::group_info(conn, account, conversation))
            .await
    }

    async fn history(&self, request: HistoryRequest) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |conn| history::history(conn, &request))
            .await
    }

    async fn conversations(
        &self,
        account: AccountId,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        self.read(move |conn| history::conversations(conn, account))
            .await
    }

    async fn receipts(
        &self,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> Result<ReceiptsRecord, StoreError> {
        let message_id = message_id.clone();
        self.read(move |conn| history::receipts(conn, account, conversation, &message_id))
            .await
    }

    async fn put_device_keys(&self, upload: KeyUpload) -> Result<KeysStored, StoreError> {
        self.write(move |conn| keys::put(conn, &upload)).await
    }

    async fn device_keys(&self, account: AccountId) -> Result<Vec<DeviceKeys>, StoreError> {
        self.read(move |conn| keys::of_account(conn, account)).await
    }

    async fn online_devices_sharing_with(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceId>, StoreError> {
        self.read(move |conn| keys::online_devices_sharing_with(conn, account))
            .await
    }

    async fn claim_one_time_keys(&self, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError> {
        self.write(move |conn| keys::claim(conn, account)).await
    }

    async fn one_time_key_count(&self, device: DeviceId) -> Result<u64, StoreError> {
        self.read(move |conn| keys::count(conn, device)).await
    }

    async fn send_to_devices(&self, batch: ToDeviceBatch) -> Result<(), StoreError> {
        self.write(move |conn| to_device::send(conn, &batch)).await
    }

    async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, StoreError> {
        self.read(move |conn| to_device::waiting(conn, device, after, limit))
            .await
    }

    async fn ack_to_device(&self, device: DeviceId, up_to: i64) -> Result<u64, StoreError> {
        self.write(move |conn| to_device::ack(conn, device, up_to))
            .await
    }

    async fn set_contact(
        &self,
        owner: AccountId,
        contact: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| social::set_contact(conn, owner, contact, present, now_ms))
            .await
    }

    async fn contacts(&self, owner: AccountId) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| social::contacts(conn, owner)).await
    }

    async fn set_block(
        &self,
        blocker: AccountId,
        blocked: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| social::set_block(conn, blocker, blocked, present, now_ms))
            .await
    }

    async fn blocked(&self, blocker: AccountId) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| social::blocked(conn, blocker)).await
    }

    async fn blocked_either_way(&self, a: AccountId, b: AccountId) -> Result<bool, StoreError> {
        self.read(move |conn| social::blocked_either_way(conn, a, b))
            .await
    }

    async fn blocked_with_any(
        &self,
        a: AccountId,
        others: Vec<AccountId>,
    ) -> Result<bool, StoreError> {
        // One reader task; each lookup is an index probe in process.
        self.read(move |conn| {
            for b in others {
                if social::blocked_either_way(conn, a, b)? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
    }

    async fn is_contact(&self, owner: AccountId, contact: AccountId) -> Result<bool, StoreError> {
        self.read(move |conn| social::is_contact(conn, owner, contact))
            .await
    }

    async fn set_presence_visibility(
        &self,
        account: AccountId,
        visibility: PresenceVisibility,
    ) -> Result<(), StoreError> {
        self.write(move |conn| social::set_presence_visibility(conn, account, visibility))
            .await
    }

    async fn presence_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<PresenceProfile>, StoreError> {
        self.read(move |conn| social::presence_profile(conn, account))
            .await
    }

    async fn set_last_seen(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(move |conn| social::set_last_seen(conn, account, now_ms))
            .await
    }

    async fn relay_targets(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<Vec<(AccountId, DeviceId)>, StoreError> {
        self.read(move |conn| social::relay_targets(conn, account, conversation))
            .await
    }

    async fn create_media(&self, media: MediaRecord) -> Result<(), StoreError> {
        self.write(move |conn| media::create_media(conn, &media))
            .await
    }

    async fn media_for(
        &self,
        account: AccountId,
        id: &str,
    ) -> Result<Option<MediaRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| media::media_for(conn, account, &id))
            .await
    }

    async fn take_unreferenced_media(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |conn| media::take_unreferenced_media(conn, before_ms, limit))
            .await
    }

    async fn renew_node(&self, node: &str, lease_until_ms: UnixMillis) -> Result<bool, StoreError> {
        let node = node.to_owned();
        self.write(move |conn| sessions::renew_node(conn, &node, lease_until_ms))
            .await
    }

    async fn claim_session(
        &self,
        device: DeviceId,
        account: AccountId,
        node: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<String>, StoreError> {
        let node = node.to_owned();
        self.write(move |conn| sessions::claim_session(conn, device, account, &node, now_ms))
            .await
    }

    async fn release_session(&self, device: DeviceId, node: &str) -> Result<(), StoreError> {
        let node = node.to_owned();
        self.write(move |conn| sessions::release_session(conn, device, &node))
            .await
    }

    async fn account_online(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.read(move |conn| sessions::account_online(conn, account, now_ms))
            .await
    }

    async fn reap_nodes(&self, now_ms: UnixMillis) -> Result<Vec<AccountId>, StoreError> {
        self.write(move |conn| sessions::reap_nodes(conn, now_ms))
            .await
    }

    async fn device_owner(&self, device: DeviceId) -> Result<Option<String>, StoreError> {
        self.read(move |conn| accounts::device_owner(conn, device))
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

    async fn clock_ms(&self) -> Result<Option<UnixMillis>, StoreError> {
        Ok(None)
    }

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
