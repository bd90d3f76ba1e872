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

/// Bytes looked at to recognise the type: [`sniff`] sees the first this many.
pub const SNIFF_BYTES: usize = 64;

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

/// An image's pixel size and its JPEG preview.
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// Decodes an uploaded image (bounded in edge length and allocation) and
/// encodes its JPEG thumbnail; `Err` (the reason) when it does not decode.
/// Public as the entry point of the `media_sniff` fuzz target (fuzz/),
/// which feeds it what [`sniff`] took for an image, as an upload does.
pub fn make_thumbnail(bytes: &[u8]) -> Result<Thumbnail, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| err.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(IMAGE_EDGE_MAX);
    limits.max_image_height = Some(IMAGE_EDGE_MAX);
    limits.max_alloc = Some(DECODE_ALLOC_MAX);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|err| err.to_string())?;
    // A GIF may declare a 773×0 screen and still "decode": no pixels.
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err("the image has no pixels".into());
    }
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

    #[test]
    fn an_image_without_pixels_is_refused() {
        // Goal: regression (fuzz/ media_sniff): this GIF declares a 773×0
        // screen; it decoded into a zero-height image and a broken
        // thumbnail was stored. An image with no pixels does not decode.
        let gif: &[u8] = b"GIF89a\x05\x03\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\
            !\xf9\x04\x08\x00\x00\x00\x00,\x08\x00\x00\x00\x05\x00\x03\x00\x83\x00\x00\
            \x07\x00P\x07\x00\xa0\x072\x00\x072P\x072\xa0\x07d\x00\x07dP\x07d\xa0\x07\x96\x00\
            \x07\x96P\x07\x96\xa0\x07\xc8\x00\x07\xc8P\x07\xc8\xa0\x07\x00\x00\x00\x04\x0b\x10\
            \x0c\x93X G5Q\xd0r\x11\x00;";
        assert_eq!(gif.len(), 100);
        assert_eq!(sniff(gif), Some("image/gif"));
        let refused = make_thumbnail(gif).err().expect("refused");
        assert!(refused.contains("no pixels"), "{refused}");
    }

    /// A PNG that only declares its size: signature, IHDR (8-bit RGBA),
    /// an empty IDAT and IEND, with correct CRCs.
    fn png_declaring(width: u32, height: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = 0xFFFF_FFFFu32;
            for &byte in bytes {
                crc ^= u32::from(byte);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xEDB8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            let crc = crc32(&png[start..]);
            png.extend_from_slice(&crc.to_be_bytes());
        };
        let mut header = Vec::new();
        header.extend_from_slice(&width.to_be_bytes());
        header.extend_from_slice(&height.to_be_bytes());
        header.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(b"IHDR", &header);
        chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        png
    }

    #[test]
    fn image_bombs_are_refused_before_decoding() {
        // Goal: a tiny image declaring a huge size is refused from its
        // header, before any pixel buffer exists: past the edge limit
        // (100,000² would be 40 GB of RGBA), or within it but over the
        // decoder's memory limit (16,384² RGBA is 1 GiB > 256 MiB).
        for (width, height) in [
            (100_000, 100_000),
            (IMAGE_EDGE_MAX + 1, 1),
            (IMAGE_EDGE_MAX, IMAGE_EDGE_MAX),
        ] {
            let png = png_declaring(width, height);
            assert!(png.len() < 100);
            assert_eq!(sniff(&png), Some("image/png"));
            let started = std::time::Instant::now();
            let refused = make_thumbnail(&png).err().expect("refused");
            assert!(
                refused.to_lowercase().contains("limit"),
                "{width}×{height}: {refused}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{width}×{height}"
            );
        }
        // The same header at a sane size gets as far as the pixel data:
        // the refusal above is the size, not the forged chunks.
        let small = make_thumbnail(&png_declaring(2, 2))
            .err()
            .expect("no pixel data");
        assert!(!small.to_lowercase().contains("limit"), "{small}");
    }

    /// A tiny image of each decoded format, encoded by the image crate.
    fn tiny_images() -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let pixels =
            image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 80, 7]));
        let image = image::DynamicImage::ImageRgb8(pixels);
        [
            ("tiny.png", "image/png", image::ImageFormat::Png),
            ("tiny.jpg", "image/jpeg", image::ImageFormat::Jpeg),
            ("tiny.gif", "image/gif", image::ImageFormat::Gif),
            ("tiny.webp", "image/webp", image::ImageFormat::WebP),
        ]
        .into_iter()
        .map(|(name, content_type, format)| {
            let mut bytes = std::io::Cursor::new(Vec::new());
            image.write_to(&mut bytes, format).expect("encode");
            (name, content_type, bytes.into_inner())
        })
        .collect()
    }

    #[test]
    fn every_image_format_sniffs_and_thumbnails() {
        // Goal: each allowed image format is recognised and decoded into
        // its size and a JPEG preview. These bytes are also the fuzzing
        // seeds: MISSIVE_FUZZ_SEEDS=fuzz/corpus/media_sniff writes them.
        let seeds = std::env::var_os("MISSIVE_FUZZ_SEEDS");
        for (name, content_type, bytes) in tiny_images() {
            assert_eq!(
                sniff(&bytes[..bytes.len().min(SNIFF_BYTES)]),
                Some(content_type),
                "{name}"
            );
            let thumbnail = make_thumbnail(&bytes).expect(name);
            assert_eq!((thumbnail.width, thumbnail.height), (5, 3), "{name}");
            assert!(thumbnail.jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "{name}");
            if let Some(dir) = &seeds {
                std::fs::write(std::path::Path::new(dir).join(name), &bytes).expect("write seed");
            }
        }
    }
}
