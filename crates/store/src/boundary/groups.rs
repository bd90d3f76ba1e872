//! Groups: creation, membership and name changes, conversation settings.

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, ConversationId};

use crate::StoreError;

/// Groups and conversation settings; each change is an event of its
/// conversation.
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
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
}
