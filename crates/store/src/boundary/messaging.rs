//! The delivery path: 1:1 conversations, sending (append, in order and
//! idempotent), what waits for a device, acks, read pointers and the sweep.

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};

use crate::{QueuedAppend, StoreError};

/// Sending and delivering: every event of a conversation has a gap-free seq,
/// and what waits for a device is every event above its position.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
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

    /// [`append_message`](MessageStore::append_message) in two steps, so one
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
}
