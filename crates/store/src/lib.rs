//! The Store boundary: everything missive keeps durably (accounts, devices,
//! conversations, messages, per-device positions, receipt cursors) behind
//! one async trait, and its two adapters.
//!
//! # The delivery model
//! A message is stored once, as one row keyed by (conversation, seq). What
//! waits for a device is every event of its conversations above its
//! *position* there (the seq up to which it acked; a device created later
//! starts at the conversation's last seq, a member added later at the seq
//! it joined at). An ack moves a position forward, never back. Receipts are
//! cursors too: per member, delivered-up-to (any of its devices acked) and
//! read-up-to. Nothing is written per recipient.
//!
//! # Layout
//! - [`model`]: the records that cross the boundary (no serde: not a wire or
//!   disk format).
//! - [`Store`]: the trait; each method's doc states its contract.
//! - [`sqlite`]: the embedded adapter (one writer thread with group commit,
//!   a pool of readers).
//! - [`postgres`]: the cluster adapter (many nodes on one database; a
//!   conversation's row lock keeps its seq in commit order).
//!
//! **Architecture invariant:** callers never see SQL or engine types; a
//! PostgreSQL adapter implements the same trait and passes the same
//! conformance suite (`tests/conformance/`).

pub mod model;
pub mod postgres;
pub(crate) mod rules;
pub mod sqlite;
pub mod transfer;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use missive_core::{
    AccountId, ConversationId, DeviceId, MessageId, TokenHash, UnixMillis, Username,
};

pub use model::*;
pub use postgres::{PostgresConfig, PostgresStore};
pub use rules::ENCRYPTED_MEDIA_TYPE;
pub use sqlite::{Fsync, SqliteConfig, SqliteStore};

/// A send the store has taken in order and will answer once it is stored
/// (or refused); see [`Store::queue_message`].
/// Rows per table, by table name: what a backup holds and a restore
/// checks (`sqlite::backup`, `postgres::backup`).
pub type TableCounts = std::collections::BTreeMap<String, u64>;

pub type QueuedAppend = Pin<Box<dyn Future<Output = Result<Appended, StoreError>> + Send>>;

/// Why a store operation was refused or failed. The first group are
/// deliberate refusals that leave the store unchanged; `Backend` is an engine
/// failure whose text must not reach clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("username is taken")]
    UsernameTaken,
    #[error("the account already has the maximum number of devices")]
    TooManyDevices,
    /// The account is suspended by an operator; nothing changed.
    #[error("the account is suspended")]
    AccountSuspended,
    /// The invite does not exist, was used, or has expired; nothing changed.
    #[error("the invite is unknown, used or expired")]
    InviteInvalid,
    #[error("unknown conversation")]
    UnknownConversation,
    #[error("not a member of the conversation")]
    NotMember,
    #[error("seq is above the conversation's last seq")]
    SeqOutOfRange,
    #[error("no such message in this conversation")]
    UnknownMessage,
    #[error("only the author may do that")]
    NotAuthor,
    #[error("the edit window has closed")]
    EditWindowClosed,
    #[error("the message was deleted")]
    MessageDeleted,
    #[error("one of you has blocked the other")]
    Blocked,
    #[error("the group is full")]
    GroupFull,
    #[error("only a group admin may do that")]
    NotAdmin,
    #[error("not a group")]
    NotAGroup,
    #[error("already a member")]
    AlreadyMember,
    /// The user a group change names (remove, promote, demote) is not a
    /// member; the caller may well be one.
    #[error("that user is not a member of the group")]
    UnknownMember,
    #[error("no such media of yours")]
    UnknownMedia,
    /// The sender device already sent a different message under this
    /// `client_msg_id`; nothing is stored.
    #[error("client_msg_id already used for a different message")]
    ClientMsgIdReused,
    /// A plain message (or a plain reply, edit or reaction) sent into an
    /// end-to-end encrypted conversation; nothing is stored.
    #[error("the conversation is end-to-end encrypted: send ciphertext")]
    ConversationEncrypted,
    /// Ciphertext sent into a conversation that is not encrypted (turn
    /// encryption on first); nothing is stored.
    #[error("the conversation is not end-to-end encrypted")]
    ConversationNotEncrypted,
    /// A key upload names identity keys other than the ones the device
    /// uploaded before; nothing changed.
    #[error("the device's identity keys differ from the ones it uploaded")]
    IdentityKeyMismatch,
    /// One-time keys uploaded by a device that has no identity keys yet;
    /// nothing changed.
    #[error("the device has no identity keys")]
    IdentityKeyMissing,
    /// The upload would leave the device more one-time keys than allowed;
    /// nothing changed.
    #[error("too many one-time keys")]
    TooManyKeys,
    /// A to-device message names a device that is not one of the named
    /// account's (or no longer exists); nothing was stored.
    #[error("unknown device")]
    UnknownDevice,
    /// A recipient device has as many to-device messages waiting as it may;
    /// nothing was stored.
    #[error("the device's to-device inbox is full")]
    InboxFull,
    #[error("the store is shut down")]
    Closed,
    /// The backend cannot be reached now (connection lost, pool timed out);
    /// nothing changed, and the same call may succeed later.
    #[error("the store is unavailable")]
    Unavailable,
    /// The store's disk is full; nothing changed, and the same call may
    /// succeed once space is freed.
    #[error("the store's disk is full")]
    Full,
    #[error("store backend error: {0}")]
    Backend(String),
}

/// The durable state of missive. All writes are atomic per call; a call that
/// returns `Ok` is durable to the configured fsync level.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; `UsernameTaken` if the name exists. With an
    /// invite, the invite is consumed in the same transaction
    /// (`InviteInvalid` if it is unknown, used or expired: nothing stored).
    async fn create_account(&self, account: NewAccount) -> Result<AccountId, StoreError>;

    /// The account with this username, if any.
    async fn account_by_username(
        &self,
        username: &Username,
    ) -> Result<Option<AccountRecord>, StoreError>;

    /// Adds a device (a login) to an account. When the account already has
    /// `devices_max`: `TooManyDevices`, or, with `replace_least_recent`, the
    /// device last seen longest ago (preferring one with no live session)
    /// is revoked as by `revoke_device` in the same transaction, and
    /// returned as `replaced`.
    async fn create_device(&self, device: NewDevice) -> Result<CreatedDevice, StoreError>;

    /// Up to `limit` accounts with a username after `after`, in username
    /// order.
    async fn list_accounts(
        &self,
        after: Option<Username>,
        limit: usize,
    ) -> Result<Vec<AccountSummary>, StoreError>;

    /// Suspends (or resumes) the account. Suspending revokes every device of
    /// the account as `revoke_device` does, in the same transaction, and
    /// `create_device` refuses a suspended account (`AccountSuspended`), so
    /// no device of it survives. Returns the revoked devices; `None` if
    /// there is no such account.
    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError>;

    /// Deletes an account as an operator does: in one transaction its
    /// username becomes `DELETED_PREFIX` + its id (freeing the name; its
    /// messages stay in others' histories under that name), its password
    /// hash and phone are cleared, it is suspended (no login ever again),
    /// every device is revoked as by `revoke_device`, and its contacts and
    /// blocks, both ways, are dropped. Group memberships are left to the
    /// caller (leaving is a group change with its own event). Returns the
    /// revoked devices; `None` if there is no such account.
    async fn delete_account(
        &self,
        account: AccountId,
    ) -> Result<Option<Vec<RevokedDevice>>, StoreError>;

    /// Stores single-use registration invites.
    async fn create_invites(&self, invites: NewInvites) -> Result<(), StoreError>;

    /// Replaces the account's password hash; `false` if there is no such
    /// account.
    async fn set_password_hash(&self, account: AccountId, hash: String)
    -> Result<bool, StoreError>;

    /// Every revocation (`revoke_device`, a replacement, an expiry) is
    /// numbered in the store, so that every node, and a server that did
    /// not make it (an operator's `missive admin`), hears of it: the
    /// revoked devices numbered above `after`, oldest first, up to `limit`.
    /// The last `REVOCATIONS_KEPT` are kept.
    async fn revocations_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, DeviceId)>, StoreError>;

    /// The number of the latest revocation (0 if none).
    async fn last_revocation(&self) -> Result<i64, StoreError>;

    /// Records that the device was used at `now_ms` (never moves back).
    async fn touch_device(&self, device: DeviceId, now_ms: UnixMillis) -> Result<(), StoreError>;

    /// Revokes, as `revoke_device` does, up to `limit` devices last seen
    /// before `idle_before_ms` that have no live session; returns them.
    async fn expire_devices(
        &self,
        idle_before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<RevokedDevice>, StoreError>;

    /// The device holding this token, unless revoked.
    async fn authenticate(&self, token: &TokenHash) -> Result<Option<DeviceAuth>, StoreError>;

    /// The account's devices, oldest first.
    async fn list_devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Renames one of the account's devices; `false` if it has no such
    /// device (nothing changes).
    async fn rename_device(
        &self,
        account: AccountId,
        device: DeviceId,
        name: String,
    ) -> Result<bool, StoreError>;

    /// Deletes the device, its token, its positions, its keys and its
    /// waiting to-device messages, and numbers the revocation. `None` if
    /// the account has no such device (nothing changes).
    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Option<RevokedDevice>, StoreError>;

    /// The 1:1 conversation of two accounts, if it exists (never creates).
    async fn find_direct_conversation(
        &self,
        a: AccountId,
        b: AccountId,
    ) -> Result<Option<ConversationId>, StoreError>;

    /// The 1:1 conversation of two accounts, created on first use
    /// (end-to-end encrypted if `encrypted`; an existing one is returned
    /// as it is).
    async fn direct_conversation(
        &self,
        a: AccountId,
        b: AccountId,
        now_ms: UnixMillis,
        encrypted: bool,
    ) -> Result<ConversationId, StoreError>;

    /// Stores an event (one row) and advances the conversation's last seq,
    /// atomically, after checking it against the conversation (membership,
    /// blocks, its target).
    ///
    /// Ordering: seq is the conversation's previous seq + 1, with no gaps,
    /// and no reader sees seq N+1 before N.
    /// Idempotence: a second call with the same (sender device,
    /// client_msg_id) stores nothing and returns the first call's message id,
    /// seq and timestamp with `duplicate = true`.
    async fn append_message(&self, message: NewMessage) -> Result<Appended, StoreError>;

    /// [`append_message`](Store::append_message) in two steps, so one
    /// connection can have many sends in flight: this resolves once the
    /// message has its place in the write order (waiting while the store's
    /// queue is full), the returned future once it is stored. Messages
    /// queued one after the other are stored in that order, so the seqs of
    /// one sender follow the order it sent in. An adapter that cannot
    /// promise the order stores the message before it resolves (the
    /// default).
    async fn queue_message(&self, message: NewMessage) -> Result<QueuedAppend, StoreError> {
        let stored = self.append_message(message).await;
        Ok(Box::pin(std::future::ready(stored)))
    }

    /// Up to `limit` items waiting for the device: for each conversation of
    /// its account (and one it left, up to the event of its leaving), the
    /// events above the higher of its stored position and `after`, in seq
    /// order, the device's own events and events about messages its account
    /// never saw skipped (but counted in `scanned`, which also names every
    /// conversation read with nothing above it). Events stored before
    /// `expired_before_ms`, or whose bodies are gone, come as one `Expired`
    /// range in their place.
    async fn pending(&self, request: PendingRequest) -> Result<Pending, StoreError>;

    /// Moves the device's positions forward (never back) and its account's
    /// delivered cursors with them, atomically for all points; refused
    /// whole for a conversation the account is not in (`NotMember`,
    /// `UnknownConversation`) or a seq above its last (`SeqOutOfRange`).
    /// With `purge_delivered_bodies`, bodies every member device has are
    /// deleted (store-and-forward).
    async fn ack(&self, ack: AckRequest) -> Result<AckOutcome, StoreError>;

    /// Moves the account's read pointer in the conversation forward to `seq`
    /// (clamped to the last seq; never backwards).
    async fn mark_read(&self, read: ReadRequest) -> Result<ReadOutcome, StoreError>;

    /// Deletes bodies past retention that no device waits for, and rows of
    /// deleted bodies past the dedup window; at most `limit` of each.
    async fn sweep(&self, sweep: SweepRequest) -> Result<SweepOutcome, StoreError>;

    /// Creates a group with the creator as its only admin and stores a
    /// `created` system event (seq 1) for every member's devices but the
    /// creator's creating device. `GroupFull` beyond `members_max`.
    async fn create_group(&self, group: NewGroup) -> Result<GroupChanged, StoreError>;

    /// Applies a membership/name change and stores it as a system event in
    /// the conversation, atomically. The event is for the members after the
    /// change plus, for a removal or leave, the one who left (whose devices
    /// receive events up to that one and nothing later). Added members see
    /// events from this one on.
    async fn change_group(&self, change: GroupChangeRequest) -> Result<GroupChanged, StoreError>;

    /// Changes a conversation setting (encryption on, the disappearing
    /// timer) and records it as a system event for every member's devices.
    /// Already so: `Ok` with no new event (`seq` is the conversation's
    /// last).
    async fn change_setting(&self, request: SettingRequest) -> Result<GroupChanged, StoreError>;

    /// A group's name and members, for members only.
    async fn group_info(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<GroupRecord, StoreError>;

    /// A page of the conversation's stored events visible to this member
    /// (those after it joined whose bodies are still retained).
    async fn history(&self, request: HistoryRequest) -> Result<Vec<StoredEvent>, StoreError>;

    /// Every conversation the account belongs to, most recent activity first.
    async fn conversations(
        &self,
        account: AccountId,
    ) -> Result<Vec<ConversationRecord>, StoreError>;

    /// Who got and who read a message ("message info"), for members only.
    async fn receipts(
        &self,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> Result<ReceiptsRecord, StoreError>;

    /// Adds (`present`) or removes a contact; returns whether anything changed.
    async fn set_contact(
        &self,
        owner: AccountId,
        contact: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// The owner's contacts' usernames, sorted.
    async fn contacts(&self, owner: AccountId) -> Result<Vec<String>, StoreError>;

    /// Blocks (`present`) or unblocks; returns whether anything changed.
    async fn set_block(
        &self,
        blocker: AccountId,
        blocked: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Usernames the account has blocked, sorted.
    async fn blocked(&self, blocker: AccountId) -> Result<Vec<String>, StoreError>;

    /// Whether either account has blocked the other.
    async fn blocked_either_way(&self, a: AccountId, b: AccountId) -> Result<bool, StoreError>;

    /// Whether `a` and any of `others` blocked one another, either way (one
    /// read for a whole group's members).
    async fn blocked_with_any(
        &self,
        a: AccountId,
        others: Vec<AccountId>,
    ) -> Result<bool, StoreError>;

    /// Whether `owner` has `contact` in their contacts.
    async fn is_contact(&self, owner: AccountId, contact: AccountId) -> Result<bool, StoreError>;

    async fn set_presence_visibility(
        &self,
        account: AccountId,
        visibility: PresenceVisibility,
    ) -> Result<(), StoreError>;

    async fn presence_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<PresenceProfile>, StoreError>;

    /// Records when the account was last online (its last device left).
    async fn set_last_seen(&self, account: AccountId, now_ms: UnixMillis)
    -> Result<(), StoreError>;

    /// (account, device) of every member of the conversation except
    /// `account`, skipping members that blocked it or that it blocked; for
    /// ephemeral relays. Checks membership.
    async fn relay_targets(
        &self,
        account: AccountId,
        conversation: ConversationId,
    ) -> Result<Vec<(AccountId, DeviceId)>, StoreError>;

    /// Stores a device's keys (see [`KeyUpload`]); a one-time key id the
    /// device already holds is kept as it was (an upload may be retried).
    /// Returns how many one-time keys the device now holds and whether this
    /// upload stored its identity keys.
    async fn put_device_keys(&self, upload: KeyUpload) -> Result<KeysStored, StoreError>;

    /// The identity keys of `account`'s devices that uploaded some, by
    /// device id. A revoked device's keys are gone with it.
    async fn device_keys(&self, account: AccountId) -> Result<Vec<DeviceKeys>, StoreError>;

    /// The devices in the session directory (live on some node, or on one
    /// whose lapsed lease is not reaped yet) of `account` and of every
    /// account that is a member of a conversation `account` is a member
    /// of, by id: who is told, live, that `account`'s key listing changed.
    /// Members who left are not included; blocks do not matter (the
    /// listing is public).
    async fn online_devices_sharing_with(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceId>, StoreError>;

    /// One one-time key of each of `account`'s devices with identity keys,
    /// each removed as it is handed out: no key is ever handed out twice,
    /// concurrent claims included.
    async fn claim_one_time_keys(&self, account: AccountId) -> Result<Vec<ClaimedKey>, StoreError>;

    /// How many one-time keys `device` holds unclaimed.
    async fn one_time_key_count(&self, device: DeviceId) -> Result<u64, StoreError>;

    /// Stores every message of the batch for its device, or none (see
    /// [`ToDeviceBatch`]). Each device's messages get increasing seqs in
    /// commit order, so a reader that has seen seq N never later finds one
    /// below it.
    async fn send_to_devices(&self, batch: ToDeviceBatch) -> Result<(), StoreError>;

    /// Up to `limit` of `device`'s waiting to-device messages above seq
    /// `after`, oldest first.
    async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, StoreError>;

    /// Removes `device`'s to-device messages up to and including seq
    /// `up_to` (cumulative, idempotent); how many went.
    async fn ack_to_device(&self, device: DeviceId, up_to: i64) -> Result<u64, StoreError>;

    /// Records an uploaded media object (after its bytes are stored).
    async fn create_media(&self, media: MediaRecord) -> Result<(), StoreError>;

    /// The media record, if `account` may read it: its uploader, or a member
    /// who received a (not deleted) text carrying it. Anyone else gets
    /// `None`, indistinguishable from a missing id.
    async fn media_for(
        &self,
        account: AccountId,
        id: &str,
    ) -> Result<Option<MediaRecord>, StoreError>;

    /// Media no text references that were uploaded before `before_ms`, at
    /// most `limit`; their records are deleted, their ids returned so the
    /// caller deletes the bytes.
    async fn take_unreferenced_media(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    // ── Session directory: which node holds which device's live connection.
    // Every node renews a lease; a node that stops renewing (crashed) is
    // reaped by any other, so its users show offline within the lease.

    /// Extends `node`'s lease to `lease_until_ms`, creating the node row if
    /// needed. `false` if the node held no lease (new, or reaped after it
    /// lapsed): the caller must claim its live sessions again.
    async fn renew_node(&self, node: &str, lease_until_ms: UnixMillis) -> Result<bool, StoreError>;

    /// Records that `node` now holds `device`'s live connection, and that
    /// the device was seen at `now_ms` (its `last_seen_ms`). Returns the
    /// node that held it before, if that was another node (it must close its
    /// connection: "replaced").
    async fn claim_session(
        &self,
        device: DeviceId,
        account: AccountId,
        node: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<String>, StoreError>;

    /// Ends `device`'s session on `node`; does nothing if another node has
    /// claimed the device since.
    async fn release_session(&self, device: DeviceId, node: &str) -> Result<(), StoreError>;

    /// Whether some device of the account has a session on a node whose
    /// lease holds at `now_ms`.
    async fn account_online(
        &self,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// The store's own wall clock, where it has one apart from this
    /// process's (a database server): the time base leases are kept in, so
    /// nodes whose clocks disagree still agree on who lapsed. `None` for an
    /// embedded store, whose clock is this process's.
    async fn clock_ms(&self) -> Result<Option<UnixMillis>, StoreError>;

    /// Deletes the nodes whose lease ended at or before `now_ms`, with their
    /// sessions, and returns the accounts left with no live session (their
    /// last seen becomes `now_ms`). Safe to run on every node at once: each
    /// reaped account is returned by one caller only.
    async fn reap_nodes(&self, now_ms: UnixMillis) -> Result<Vec<AccountId>, StoreError>;

    /// The username owning the device, if it exists.
    async fn device_owner(&self, device: DeviceId) -> Result<Option<String>, StoreError>;

    /// How many events lie above the device's positions, its own and
    /// expired ones included (an upper bound of what waits for it).
    async fn waiting(&self, device: DeviceId) -> Result<u64, StoreError>;

    /// `waiting` summed over every device (for metrics).
    async fn waiting_total(&self) -> Result<u64, StoreError>;

    /// Of `devices`, those for which something waits: an event above the
    /// device's position in a conversation of its account that another
    /// device sent (its own events never wait for it). One statement for
    /// all of them on PostgreSQL: a node asks this of its live devices as
    /// the safety net for wake-ups the bus lost.
    async fn behind(&self, devices: Vec<DeviceId>) -> Result<Vec<DeviceId>, StoreError>;

    /// Whether the store can serve reads and writes (for `/readyz`); waits
    /// behind queued writes, so callers should bound it with a timeout.
    async fn is_ready(&self) -> bool;

    /// Commits everything accepted so far and stops accepting writes.
    async fn shutdown(&self);
}
