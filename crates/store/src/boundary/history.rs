//! Reading back: a conversation's history, the conversation list, receipts.

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, ConversationId, MessageId};

use crate::StoreError;

/// What a member reads back: pages of history, its conversations, receipts.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
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
}
