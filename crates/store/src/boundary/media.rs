//! Media records (the bytes are in Blobs).

use async_trait::async_trait;
use missive_core::model::*;
use missive_core::{AccountId, UnixMillis};

use crate::StoreError;

/// Media records: who uploaded what, and who may read it.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
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
}
