//! Contacts, blocks, presence and the ephemeral relay targets.

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, ConversationId, DeviceId, UnixMillis};

use crate::StoreError;

/// Contacts, blocks and presence.
#[async_trait]
pub trait SocialStore: Send + Sync + 'static {
    /// Adds (`present`) or removes `other` in `owner`'s list of this
    /// relation (its contacts, or the accounts it blocks); returns whether
    /// anything changed.
    async fn set_relation(
        &self,
        relation: Relation,
        owner: AccountId,
        other: AccountId,
        present: bool,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// The usernames in `owner`'s list of this relation, sorted.
    async fn related(
        &self,
        relation: Relation,
        owner: AccountId,
    ) -> Result<Vec<String>, StoreError>;

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
}
