//! Media uploads and downloads through the Blobs boundary. Uploads stream
//! to blob storage in parts while being counted, hashed and sniffed; a
//! refused upload is aborted and leaves nothing behind.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use missive_blobs::{BlobError, Blobs};
use missive_core::Clock;
use missive_proto::ErrorCode;
use missive_proto::rest::MediaInfo;
use missive_store::{DeviceAuth, MediaRecord, Store};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Bytes looked at to recognise the type.
const SNIFF_BYTES: usize = 64;

/// The allow-list: (magic test, content type). Images, video, audio, PDF.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some("image/gif")
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some("image/webp")
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("audio/wav")
    } else if at(4, b"ftyp") {
        Some("video/mp4")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("video/webm")
    } else if at(0, b"OggS") {
        Some("audio/ogg")
    } else if at(0, b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        Some("audio/mpeg")
    } else if at(0, b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

fn blob_key(id: &str) -> String {
    format!("media/{id}")
}

fn thumbnail_key(id: &str) -> String {
    format!("media/{id}.thumb")
}

/// Longest edge of a thumbnail, and the largest image edge decoded at all.
const THUMBNAIL_EDGE: u32 = 320;
const IMAGE_EDGE_MAX: u32 = 16_384;
/// Memory a single decode may allocate (decompression bombs stop here).
const DECODE_ALLOC_MAX: u64 = 256 * 1024 * 1024;
/// Image decodes at once (each may use up to DECODE_ALLOC_MAX).
const DECODES_CONCURRENT_MAX: usize = 2;

struct Thumbnail {
    width: u32,
    height: u32,
    jpeg: Vec<u8>,
}

fn make_thumbnail(bytes: &[u8]) -> Result<Thumbnail, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| err.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(IMAGE_EDGE_MAX);
    limits.max_image_height = Some(IMAGE_EDGE_MAX);
    limits.max_alloc = Some(DECODE_ALLOC_MAX);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|err| err.to_string())?;
    let preview = decoded.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&preview)
        .map_err(|err| err.to_string())?;
    Ok(Thumbnail {
        width: decoded.width(),
        height: decoded.height(),
        jpeg,
    })
}

/// Whether `id` has the form of the ids uploads get (32 lowercase hex
/// digits); anything else names no media.
pub(crate) fn is_media_id(id: &str) -> bool {
    id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn blob_failure(err: BlobError) -> ApiError {
    tracing::error!(%err, "blob storage failure");
    ApiError::internal()
}

pub struct Media {
    store: Arc<dyn Store>,
    blobs: Blobs,
    clock: Arc<dyn Clock>,
    size_max: u64,
    decodes: tokio::sync::Semaphore,
}

impl Media {
    pub fn describe_blobs(&self) -> String {
        self.blobs.describe()
    }

    pub async fn blobs_reachable(&self) -> bool {
        self.blobs.is_reachable().await
    }

    pub fn new(store: Arc<dyn Store>, blobs: Blobs, clock: Arc<dyn Clock>, size_max: u64) -> Self {
        Self {
            store,
            blobs,
            clock,
            size_max,
            decodes: tokio::sync::Semaphore::new(DECODES_CONCURRENT_MAX),
        }
    }

    /// Streams `body` into blob storage and records it. Refused (and
    /// aborted) beyond the size limit or when the bytes are not an allowed
    /// type, whatever the client claimed.
    pub async fn upload<E: std::fmt::Display>(
        &self,
        auth: &DeviceAuth,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<MediaInfo, ApiError> {
        let mut id_bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut id_bytes);
        let id = hex::encode(id_bytes);
        let mut upload = self
            .blobs
            .upload(&blob_key(&id))
            .await
            .map_err(blob_failure)?;
        let mut hasher = Sha256::new();
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
        let mut content_type = None;
        let mut size_bytes: u64 = 0;
        let refusal = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => {
                    break Some(ApiError::new(
                        ErrorCode::BadFrame,
                        format!("upload interrupted: {err}"),
                    ));
                }
            };
            size_bytes += chunk.len() as u64;
            if size_bytes > self.size_max {
                break Some(ApiError::new(
                    ErrorCode::MediaTooLarge,
                    format!("media is limited to {} bytes", self.size_max),
                ));
            }
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() == SNIFF_BYTES {
                    content_type = sniff(&head);
                    if content_type.is_none() {
                        break Some(not_allowed());
                    }
                }
            }
            hasher.update(&chunk);
            if let Err(err) = upload.write(&chunk).await {
                break Some(blob_failure(err));
            }
        };
        let content_type = match (refusal, content_type.or_else(|| sniff(&head))) {
            (None, Some(content_type)) => content_type,
            (refusal, _) => {
                if let Err(err) = upload.abort().await {
                    tracing::warn!(%err, "aborting a refused upload failed");
                }
                return Err(refusal.unwrap_or_else(not_allowed));
            }
        };
        upload.finish().await.map_err(blob_failure)?;
        let preview = if content_type.starts_with("image/") {
            match self.store_thumbnail(&id).await {
                Ok(preview) => Some(preview),
                Err(refusal) => {
                    let _ = self.blobs.delete(&blob_key(&id)).await;
                    return Err(refusal);
                }
            }
        } else {
            None
        };
        let record = MediaRecord {
            id: id.clone(),
            uploader: auth.account,
            content_type: content_type.to_owned(),
            size_bytes,
            sha256: hex::encode(hasher.finalize()),
            created_ms: self.clock.now_ms(),
            width: preview.map(|(width, _)| width),
            height: preview.map(|(_, height)| height),
            thumbnail: preview.is_some(),
        };
        if let Err(err) = self.store.create_media(record.clone()).await {
            let _ = self.blobs.delete(&blob_key(&id)).await;
            let _ = self.blobs.delete(&thumbnail_key(&id)).await;
            return Err(err.into());
        }
        metrics::counter!("missive_media_uploads_total").increment(1);
        Ok(MediaInfo {
            media_id: record.id,
            content_type: record.content_type,
            size_bytes: record.size_bytes,
            sha256: record.sha256,
            width: record.width,
            height: record.height,
            thumbnail: record.thumbnail,
        })
    }

    /// Decodes the stored image (bounded in size and allocation), stores a
    /// JPEG thumbnail beside it and returns the image's pixel size. An image
    /// that does not decode is refused: the sniffed type is not trusted alone.
    async fn store_thumbnail(&self, id: &str) -> Result<(u32, u32), ApiError> {
        let mut stream = self.blobs.open(&blob_key(id)).await.map_err(blob_failure)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(blob_failure)?);
        }
        let _permit = self
            .decodes
            .acquire()
            .await
            .map_err(|_| ApiError::internal())?;
        let made = tokio::task::spawn_blocking(move || make_thumbnail(&bytes))
            .await
            .map_err(|_| ApiError::internal())?;
        let thumbnail = made.map_err(|reason| {
            ApiError::new(
                ErrorCode::MediaTypeNotAllowed,
                format!("not a decodable image: {reason}"),
            )
        })?;
        let mut upload = self
            .blobs
            .upload(&thumbnail_key(id))
            .await
            .map_err(blob_failure)?;
        upload.write(&thumbnail.jpeg).await.map_err(blob_failure)?;
        upload.finish().await.map_err(blob_failure)?;
        Ok((thumbnail.width, thumbnail.height))
    }

    /// The JPEG thumbnail of an image the caller may read.
    pub async fn thumbnail(
        &self,
        auth: &DeviceAuth,
        id: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, ApiError> {
        let record = self.readable(auth, id).await?;
        if !record.thumbnail {
            return Err(unknown_media());
        }
        self.open(&thumbnail_key(id)).await
    }

    /// Deletes media no message references that are older than
    /// `before_ms`: records first, then bytes. Returns how many.
    pub async fn collect_garbage(&self, before_ms: i64) -> Result<u64, ApiError> {
        const BATCH: usize = 1_000;
        let mut collected = 0;
        loop {
            let ids = self.store.take_unreferenced_media(before_ms, BATCH).await?;
            for id in &ids {
                let _ = self.blobs.delete(&thumbnail_key(id)).await;
                if let Err(err) = self.blobs.delete(&blob_key(id)).await {
                    tracing::warn!(%err, media = %id, "deleting collected media bytes failed");
                }
            }
            collected += ids.len() as u64;
            if ids.len() < BATCH {
                return Ok(collected);
            }
        }
    }

    /// The record and bytes of a media object the caller may read.
    pub async fn download(
        &self,
        auth: &DeviceAuth,
        id: &str,
    ) -> Result<(MediaRecord, BoxStream<'static, Result<Bytes, BlobError>>), ApiError> {
        let record = self.readable(auth, id).await?;
        Ok((record, self.open(&blob_key(id)).await?))
    }

    /// The record of a media object the caller may read. Every other case —
    /// malformed id, missing, someone else's — is the same `unknown_media`,
    /// so ids cannot be probed.
    async fn readable(&self, auth: &DeviceAuth, id: &str) -> Result<MediaRecord, ApiError> {
        if !is_media_id(id) {
            return Err(unknown_media());
        }
        self.store
            .media_for(auth.account, id)
            .await?
            .ok_or_else(unknown_media)
    }

    async fn open(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, ApiError> {
        match self.blobs.open(key).await {
            Ok(bytes) => Ok(bytes),
            Err(BlobError::NotFound) => Err(unknown_media()),
            Err(err) => Err(blob_failure(err)),
        }
    }
}

fn unknown_media() -> ApiError {
    ApiError::new(ErrorCode::UnknownMedia, "no such media")
}

fn not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MediaTypeNotAllowed,
        "only images (JPEG, PNG, GIF, WebP), video (MP4, WebM), audio (MP3, Ogg, WAV) and PDF are allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_follows_the_bytes_not_names() {
        // Goal: each allowed format is recognised by its magic bytes;
        // anything else (HTML, scripts, empty) is refused.
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\xFF\xD8\xFF\xE0rest", Some("image/jpeg")),
            (b"\x89PNG\r\n\x1a\nrest", Some("image/png")),
            (b"RIFF\0\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"\0\0\0\x18ftypmp42", Some("video/mp4")),
            (b"%PDF-1.7", Some("application/pdf")),
            (b"<html><script>", None),
            (b"#!/bin/sh", None),
            (b"", None),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), *expected, "{head:?}");
        }
        assert!(is_media_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_media_id("../../etc/passwd"));
        assert!(!is_media_id("0123456789ABCDEF0123456789ABCDEF"));
    }
}
