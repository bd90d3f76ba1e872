//! Media uploads and downloads through the Blobs boundary. Uploads stream
//! to blob storage in parts while being counted, hashed and sniffed; a
//! refused upload is aborted and leaves nothing behind.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use missive_blobs::{BlobError, Blobs, Upload};
use missive_core::Clock;
use missive_core::model::{DeviceAuth, MediaRecord};
use missive_proto::ErrorCode;
use missive_proto::rest::MediaInfo;
use missive_store::{ENCRYPTED_MEDIA_TYPE, MediaStore};
use rand::Rng;
use sha2::{Digest, Sha256};

use missive_media::{SNIFF_BYTES, make_thumbnail, sniff};

use crate::service::ServiceError;

/// Where an upload's bytes are kept in Blobs.
pub fn blob_key(id: &str) -> String {
    format!("media/{id}")
}

/// Where an image's thumbnail is kept in Blobs.
pub fn thumbnail_key(id: &str) -> String {
    format!("media/{id}.thumb")
}

/// Image decodes at once (each may use up to `DECODE_ALLOC_MAX`).
const DECODES_CONCURRENT_MAX: usize = 2;

/// Whether `id` has the form of the ids uploads get (32 lowercase hex
/// digits); anything else names no media.
pub(crate) fn is_media_id(id: &str) -> bool {
    id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Longest file name kept with an upload, in bytes.
const FILENAME_BYTES_MAX: usize = 255;

/// The name an upload keeps: the last component of what the client sent
/// (browsers and tools may send a path), trimmed. Refused when it is then
/// empty, `.` or `..`, longer than 255 bytes, or holds a control character.
pub(crate) fn clean_filename(given: &str) -> Result<String, ServiceError> {
    let name = given.rsplit(['/', '\\']).next().unwrap_or(given).trim();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > FILENAME_BYTES_MAX
        || name.chars().any(char::is_control)
    {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "filename must be 1-255 bytes, without control characters, and not . or ..",
        ));
    }
    Ok(name.to_owned())
}

/// `Content-Disposition` for a download: `attachment`, with the file's name
/// (RFC 6266) as an ASCII fallback and, percent-encoded, as UTF-8.
pub(crate) fn content_disposition(filename: Option<&str>) -> String {
    let Some(name) = filename else {
        return "attachment".to_owned();
    };
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

fn blob_failure(err: BlobError) -> ServiceError {
    tracing::error!(%err, "blob storage failure");
    ServiceError::internal()
}

pub struct Media {
    store: Arc<dyn MediaStore>,
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

    pub fn new(
        store: Arc<dyn MediaStore>,
        blobs: Blobs,
        clock: Arc<dyn Clock>,
        size_max: u64,
    ) -> Self {
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
        filename: Option<&str>,
        encrypted: bool,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<MediaInfo, ServiceError> {
        if encrypted && filename.is_some() {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "an encrypted upload's filename travels inside the encrypted message, not beside it",
            ));
        }
        let filename = filename.map(clean_filename).transpose()?;
        let mut id_bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut id_bytes);
        let id = hex::encode(id_bytes);
        let mut upload = self
            .blobs
            .upload(&blob_key(&id))
            .await
            .map_err(blob_failure)?;
        let Received {
            refusal,
            content_type,
            size_bytes,
            hasher,
        } = self.receive(&mut upload, &mut body, encrypted).await;
        let content_type = match (refusal, content_type) {
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
            filename,
        };
        if let Err(err) = self.store.create_media(record.clone()).await {
            let _ = self.blobs.delete(&blob_key(&id)).await;
            let _ = self.blobs.delete(&thumbnail_key(&id)).await;
            return Err(err.into());
        }
        metrics::counter!("missive_media_uploads_total").increment(1);
        Ok(media_info(record))
    }

    /// Streams `body` into `upload`, hashing it and sniffing its type (unless
    /// encrypted), until it ends or is refused.
    async fn receive<E: std::fmt::Display>(
        &self,
        upload: &mut Upload,
        body: &mut (impl Stream<Item = Result<Bytes, E>> + Unpin),
        encrypted: bool,
    ) -> Received {
        let mut hasher = Sha256::new();
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
        let mut content_type = None;
        let mut size_bytes: u64 = 0;
        let refusal = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => {
                    break Some(ServiceError::new(
                        ErrorCode::BadFrame,
                        format!("upload interrupted: {err}"),
                    ));
                }
            };
            size_bytes += chunk.len() as u64;
            if size_bytes > self.size_max {
                break Some(ServiceError::new(
                    ErrorCode::MediaTooLarge,
                    format!("media is limited to {} bytes", self.size_max),
                ));
            }
            if !encrypted && head.len() < SNIFF_BYTES {
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
        // Encrypted bytes are opaque: no type to sniff, no thumbnail.
        let content_type = if encrypted {
            Some(ENCRYPTED_MEDIA_TYPE)
        } else {
            content_type.or_else(|| sniff(&head))
        };
        Received {
            refusal,
            content_type,
            size_bytes,
            hasher,
        }
    }

    /// Decodes the stored image (bounded in size and allocation), stores a
    /// JPEG thumbnail beside it and returns the image's pixel size. An image
    /// that does not decode is refused: the sniffed type is not trusted alone.
    async fn store_thumbnail(&self, id: &str) -> Result<(u32, u32), ServiceError> {
        let mut stream = self.blobs.open(&blob_key(id)).await.map_err(blob_failure)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(blob_failure)?);
        }
        let _permit = self
            .decodes
            .acquire()
            .await
            .map_err(|_| ServiceError::internal())?;
        let made = tokio::task::spawn_blocking(move || make_thumbnail(&bytes))
            .await
            .map_err(|_| ServiceError::internal())?;
        let thumbnail = made.map_err(|reason| {
            ServiceError::new(
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
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, ServiceError> {
        let record = self.readable(auth, id).await?;
        if !record.thumbnail {
            return Err(unknown_media());
        }
        self.open(&thumbnail_key(id)).await
    }

    /// Deletes media no message references that are older than
    /// `before_ms`: records first, then bytes. Returns how many.
    pub async fn collect_garbage(&self, before_ms: i64) -> Result<u64, ServiceError> {
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
    ) -> Result<(MediaRecord, BoxStream<'static, Result<Bytes, BlobError>>), ServiceError> {
        let record = self.readable(auth, id).await?;
        Ok((record, self.open(&blob_key(id)).await?))
    }

    /// The record of a media object the caller may read. Every other case —
    /// malformed id, missing, someone else's — is the same `unknown_media`,
    /// so ids cannot be probed.
    async fn readable(&self, auth: &DeviceAuth, id: &str) -> Result<MediaRecord, ServiceError> {
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
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, ServiceError> {
        match self.blobs.open(key).await {
            Ok(bytes) => Ok(bytes),
            Err(BlobError::NotFound) => Err(unknown_media()),
            Err(err) => Err(blob_failure(err)),
        }
    }
}

fn unknown_media() -> ServiceError {
    ServiceError::new(ErrorCode::UnknownMedia, "no such media")
}

fn not_allowed() -> ServiceError {
    ServiceError::new(
        ErrorCode::MediaTypeNotAllowed,
        "only images (JPEG, PNG, GIF, WebP), video (MP4, WebM), audio (MP3, Ogg, WAV) and PDF are allowed",
    )
}

/// What streaming an upload's body found: why it is refused, if it is; its
/// type; its size and hash so far.
struct Received {
    refusal: Option<ServiceError>,
    content_type: Option<&'static str>,
    size_bytes: u64,
    hasher: Sha256,
}

fn media_info(record: MediaRecord) -> MediaInfo {
    MediaInfo {
        media_id: record.id,
        content_type: record.content_type,
        size_bytes: record.size_bytes,
        sha256: record.sha256,
        width: record.width,
        height: record.height,
        thumbnail: record.thumbnail,
        filename: record.filename,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_keep_their_last_component_and_refuse_the_unsafe() {
        // Goal: a path keeps only its name; names that could not be saved
        // as given (empty, dot names, control characters, over 255 bytes)
        // are refused rather than changed.
        assert_eq!(clean_filename("report.pdf").unwrap(), "report.pdf");
        assert_eq!(
            clean_filename("C:\\Users\\me\\cat photo.jpg").unwrap(),
            "cat photo.jpg"
        );
        assert_eq!(clean_filename("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(
            clean_filename(" Überweisung.pdf ").unwrap(),
            "Überweisung.pdf"
        );
        for bad in ["", "  ", "dir/", ".", "..", "a\nb.txt", "nul\0.txt"] {
            assert!(clean_filename(bad).is_err(), "{bad:?}");
        }
        assert!(clean_filename(&"x".repeat(256)).is_err());
        assert!(clean_filename(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn downloads_name_the_file_in_ascii_and_utf8() {
        // Goal: the header stays one valid token whatever the name holds,
        // and a UTF-8 name survives in filename*.
        assert_eq!(content_disposition(None), "attachment");
        assert_eq!(
            content_disposition(Some("a \"b\".pdf")),
            "attachment; filename=\"a _b_.pdf\"; filename*=UTF-8''a%20%22b%22.pdf"
        );
        assert_eq!(
            content_disposition(Some("é.txt")),
            "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt"
        );
    }

    #[test]
    fn media_ids_have_one_form() {
        assert!(is_media_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_media_id("../../etc/passwd"));
        assert!(!is_media_id("0123456789ABCDEF0123456789ABCDEF"));
    }
}
