//! Media records, which texts carry them, and who may read them.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use missive_core::{AccountId, ConversationId, UnixMillis};
use tokio_postgres::Row;

use super::PostgresStore;
use super::autocommit;
use super::fault::Outcome;
use super::sql::{column, execute, limit, pixels, row, rows, unsigned};
use crate::model::*;
use crate::rules::ENCRYPTED_MEDIA_TYPE;
use crate::{MediaStore, StoreError};

pub(super) async fn create_media<C: GenericClient>(db: &C, media: &MediaRecord) -> Outcome<()> {
    let size = i64::try_from(media.size_bytes).unwrap_or(i64::MAX);
    let width = media.width.map(i64::from);
    let height = media.height.map(i64::from);
    execute(
        db,
        "INSERT INTO media (id, uploader_id, content_type, size_bytes, sha256, created_ms, width, height, thumbnail, filename)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &media.id,
            &media.uploader.0,
            &media.content_type,
            &size,
            &media.sha256,
            &media.created_ms,
            &width,
            &height,
            &media.thumbnail,
            &media.filename,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn media_for<C: GenericClient>(
    db: &C,
    account: AccountId,
    id: &str,
) -> Outcome<Option<MediaRecord>> {
    let found = row(
        db,
        "SELECT id, uploader_id, content_type, size_bytes, sha256, created_ms, width, height, thumbnail,
                filename
         FROM media
         WHERE id = $1 AND (uploader_id = $2 OR EXISTS (
             SELECT 1 FROM message_media mm
             JOIN members mb ON mb.conversation_id = mm.conversation_id AND mb.account_id = $2
             WHERE mm.media_id = media.id AND mm.seq > mb.joined_seq))",
        &[&id, &account.0],
    )
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    Ok(Some(MediaRecord {
        id: found.try_get(0)?,
        uploader: AccountId(found.try_get(1)?),
        content_type: found.try_get(2)?,
        size_bytes: unsigned(found.try_get(3)?, "media size")?,
        sha256: found.try_get(4)?,
        created_ms: found.try_get(5)?,
        width: pixels(found.try_get(6)?)?,
        height: pixels(found.try_get(7)?)?,
        thumbnail: found.try_get(8)?,
        filename: found.try_get(9)?,
    }))
}

/// Safe on every node at once: each picks rows the others have not locked.
pub(super) async fn take_unreferenced_media<C: GenericClient>(
    db: &C,
    before_ms: UnixMillis,
    n: usize,
) -> Outcome<Vec<String>> {
    column(
        db,
        "DELETE FROM media WHERE id IN (
             SELECT id FROM media WHERE created_ms < $1
             AND NOT EXISTS (SELECT 1 FROM message_media mm WHERE mm.media_id = media.id)
             LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id",
        &[&before_ms, &limit(n)],
    )
    .await
}

/// The statements of [`check_own_media`] and [`attach_media`].
const OWN_MEDIA: &str = "SELECT id FROM media WHERE id = ANY($1) AND uploader_id = $2
       AND (NOT $3 OR content_type = $4)
     ORDER BY id FOR KEY SHARE";
const ATTACH_MEDIA: &str = "INSERT INTO message_media (message_id, media_id, conversation_id, seq)
         SELECT $1, media_id, $3, $4 FROM unnest($2::text[]) AS media_id
         ON CONFLICT DO NOTHING";

/// `UnknownMedia` unless `uploader` uploaded every one of `ids` (for an
/// encrypted message, uploaded encrypted). The rows stay share-locked to
/// commit, so media collection (which skips locked rows) cannot delete a
/// record a send is about to attach.
pub(super) async fn check_own_media<C: GenericClient>(
    db: &C,
    ids: &[String],
    uploader: AccountId,
    encrypted: bool,
) -> Outcome<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let owned: Vec<String> = column(
        db,
        OWN_MEDIA,
        &[&ids, &uploader.0, &encrypted, &ENCRYPTED_MEDIA_TYPE],
    )
    .await?;
    if ids.iter().all(|id| owned.contains(id)) {
        Ok(())
    } else {
        Err(StoreError::UnknownMedia.into())
    }
}

/// Shares `media` with the conversation through the text `message_id`.
pub(super) async fn attach_media<C: GenericClient>(
    db: &C,
    message_id: &str,
    conversation: ConversationId,
    seq: i64,
    media: &[String],
) -> Outcome<()> {
    if media.is_empty() {
        return Ok(());
    }
    execute(
        db,
        ATTACH_MEDIA,
        &[&message_id, &media, &conversation.0, &seq],
    )
    .await?;
    Ok(())
}

/// The media attached to each of `message_ids`, by message id, each list
/// ordered by media id.
pub(super) async fn media_of<C: GenericClient>(
    db: &C,
    message_ids: &[&str],
) -> Outcome<HashMap<String, Vec<MediaRef>>> {
    let found = rows(
        db,
        "SELECT mm.message_id, m.id, m.content_type, m.size_bytes, m.width, m.height, m.thumbnail,
                m.filename
         FROM message_media mm JOIN media m ON m.id = mm.media_id
         WHERE mm.message_id = ANY($1) ORDER BY mm.message_id, m.id",
        &[&message_ids],
    )
    .await?;
    let mut by_message: HashMap<String, Vec<MediaRef>> = HashMap::new();
    for row in &found {
        by_message
            .entry(row.try_get(0)?)
            .or_default()
            .push(media_ref(row)?);
    }
    Ok(by_message)
}

fn media_ref(row: &Row) -> Outcome<MediaRef> {
    Ok(MediaRef {
        id: row.try_get(1)?,
        content_type: row.try_get(2)?,
        size_bytes: unsigned(row.try_get(3)?, "media size")?,
        width: pixels(row.try_get(4)?)?,
        height: pixels(row.try_get(5)?)?,
        thumbnail: row.try_get(6)?,
        filename: row.try_get(7)?,
    })
}

#[async_trait]
impl MediaStore for PostgresStore {
    async fn create_media(&self, media: MediaRecord) -> Result<(), StoreError> {
        autocommit!(self, |db| create_media(db, &media))
    }

    async fn media_for(
        &self,
        account: AccountId,
        id: &str,
    ) -> Result<Option<MediaRecord>, StoreError> {
        autocommit!(self, |db| media_for(db, account, id))
    }

    async fn take_unreferenced_media(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        autocommit!(self, |db| take_unreferenced_media(db, before_ms, limit))
    }
}
