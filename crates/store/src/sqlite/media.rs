//! Media records and which messages carry them.

use async_trait::async_trait;
use missive_core::{AccountId, UnixMillis};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::writer::backend;
use crate::model::*;
use crate::{MediaStore, StoreError};

/// Media ids attached to a message.
pub(super) fn media_of(conn: &Connection, message_id: &str) -> Result<Vec<MediaRef>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.id, m.content_type, m.size_bytes, m.width, m.height, m.thumbnail, m.filename
             FROM message_media mm JOIN media m ON m.id = mm.media_id
             WHERE mm.message_id = ?1 ORDER BY m.id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map([message_id], |row| {
            Ok(MediaRef {
                id: row.get(0)?,
                content_type: row.get(1)?,
                size_bytes: row.get::<_, i64>(2)? as u64,
                width: row.get(3)?,
                height: row.get(4)?,
                thumbnail: row.get(5)?,
                filename: row.get(6)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub(super) fn create_media(conn: &Connection, media: &MediaRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO media (id, uploader_id, content_type, size_bytes, sha256, created_ms, width, height, thumbnail, filename)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            media.id,
            media.uploader.0,
            media.content_type,
            media.size_bytes as i64,
            media.sha256,
            media.created_ms,
            media.width,
            media.height,
            media.thumbnail,
            media.filename
        ],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn media_for(
    conn: &Connection,
    account: AccountId,
    id: &str,
) -> Result<Option<MediaRecord>, StoreError> {
    conn.query_row(
        "SELECT id, uploader_id, content_type, size_bytes, sha256, created_ms, width, height, thumbnail, filename FROM media
         WHERE id = ?1 AND (uploader_id = ?2 OR EXISTS (
             SELECT 1 FROM message_media mm
             JOIN members mb ON mb.conversation_id = mm.conversation_id AND mb.account_id = ?2
             WHERE mm.media_id = media.id AND mm.seq > mb.joined_seq))",
        params![id, account.0],
        |row| {
            Ok(MediaRecord {
                id: row.get(0)?,
                uploader: AccountId(row.get(1)?),
                content_type: row.get(2)?,
                size_bytes: row.get::<_, i64>(3)? as u64,
                sha256: row.get(4)?,
                created_ms: row.get(5)?,
                width: row.get(6)?,
                height: row.get(7)?,
                thumbnail: row.get(8)?,
                filename: row.get(9)?,
            })
        },
    )
    .optional()
    .map_err(backend)
}

pub(super) fn take_unreferenced_media(
    conn: &Connection,
    before_ms: UnixMillis,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM media WHERE id IN (
                SELECT id FROM media WHERE created_ms < ?1
                AND NOT EXISTS (SELECT 1 FROM message_media mm WHERE mm.media_id = media.id)
                LIMIT ?2)
             RETURNING id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![before_ms, limit as i64], |row| row.get(0))
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

#[async_trait]
impl MediaStore for SqliteStore {
    async fn create_media(&self, media: MediaRecord) -> Result<(), StoreError> {
        self.write(move |conn| create_media(conn, &media)).await
    }

    async fn media_for(
        &self,
        account: AccountId,
        id: &str,
    ) -> Result<Option<MediaRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| media_for(conn, account, &id)).await
    }

    async fn take_unreferenced_media(
        &self,
        before_ms: UnixMillis,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.write(move |conn| take_unreferenced_media(conn, before_ms, limit))
            .await
    }
}
