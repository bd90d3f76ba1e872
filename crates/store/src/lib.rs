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
//! - [`model`]: the records that cross the boundary, defined in
//!   `missive_core::model` and re-exported here.
//! - [`boundary`]: the trait of each concern (accounts, messaging, history,
//!   groups, social, keys, media, sessions); each method's doc states its
//!   contract. [`Store`] is all of them, plus readiness and shutdown; a
//!   caller names the concern it uses.
//! - [`sqlite`]: the embedded adapter (one writer thread with group commit,
//!   a pool of readers).
//! - [`postgres`]: the cluster adapter (many nodes on one database; a
//!   conversation's row lock keeps its seq in commit order).
//!
//! **Architecture invariant:** callers never see SQL or engine types; a
//! PostgreSQL adapter implements the same trait and passes the same
//! conformance suite (`tests/conformance/`).

pub mod boundary;
pub mod postgres;
pub(crate) mod rules;
pub mod sqlite;
pub mod transfer;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

pub use boundary::{
    AccountStore, GroupStore, HistoryStore, KeyStore, MediaStore, MessageStore, SessionStore,
    SocialStore,
};
pub use missive_core::model;
pub use model::*;
pub use postgres::{PostgresConfig, PostgresStore};
pub use rules::ENCRYPTED_MEDIA_TYPE;
pub use sqlite::{Fsync, SqliteConfig, SqliteStore};

/// Rows per table, by table name: what a backup holds and a restore
/// checks (`sqlite::backup`, `postgres::backup`).
pub type TableCounts = std::collections::BTreeMap<String, u64>;

/// A send the store has taken in order and will answer once it is stored
/// (or refused); see [`MessageStore::queue_message`].
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
pub trait Store:
    AccountStore
    + MessageStore
    + HistoryStore
    + GroupStore
    + SocialStore
    + KeyStore
    + MediaStore
    + SessionStore
{
    /// Whether the store can serve reads and writes (for `/readyz`); waits
    /// behind queued writes, so callers should bound it with a timeout.
    async fn is_ready(&self) -> bool;

    /// Commits everything accepted so far and stops accepting writes.
    async fn shutdown(&self);
}
