//! The Blobs boundary: media bytes live here, never in the message store.
//! A thin facade over the `object_store` crate: a local directory by
//! default; an S3-compatible bucket in a cluster (same facade).
//!
//! Uploads are streamed in parts (never fully buffered) and can be aborted,
//! so a refused upload leaves nothing behind.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such blob")]
    NotFound,
    #[error("blob storage failed: {0}")]
    Backend(String),
}

impl From<object_store::Error> for BlobError {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Backend(other.to_string()),
        }
    }
}

/// Where an S3-compatible bucket is.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// For S3-compatible services (MinIO, moto, R2…); `None` is AWS.
    pub endpoint: Option<String>,
}

/// Where blobs are kept. Keys are chosen by missive (never by clients), so
/// no client input ever becomes a path.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

/// Parts of an upload in flight at once.
const PARTS_CONCURRENT_MAX: usize = 4;

impl Blobs {
    /// Blobs under a local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|err| BlobError::Backend(err.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self::from_store(Arc::new(store)))
    }

    /// Blobs in an S3-compatible bucket. Credentials come from the standard
    /// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, …), never from the config file.
    pub fn s3(settings: &S3Settings) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        Ok(Self::from_store(Arc::new(builder.build()?)))
    }

    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Which backend, for the startup log (no credentials).
    pub fn describe(&self) -> String {
        self.store.to_string()
    }

    /// Whether the backend answers: a lookup of a key that never exists
    /// must come back "not found".
    pub async fn is_reachable(&self) -> bool {
        matches!(
            self.store.head(&ObjectPath::from("readiness-probe")).await,
            Ok(_) | Err(object_store::Error::NotFound { .. })
        )
    }

    /// Starts a streamed upload to `key`.
    pub async fn upload(&self, key: &str) -> Result<Upload, BlobError> {
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await?;
        Ok(Upload {
            writer: WriteMultipart::new(upload),
        })
    }

    /// The blob's bytes as a stream.
    pub async fn open(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let result = self.store.get(&ObjectPath::from(key)).await?;
        Ok(result.into_stream().map_err(BlobError::from).boxed())
    }

    /// Deletes the blob; deleting a missing blob is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// An upload in progress: write chunks, then finish or abort.
pub struct Upload {
    writer: WriteMultipart,
}

impl Upload {
    /// Buffers `chunk`, sending full parts in the background; waits when too
    /// many parts are in flight, so memory stays bounded.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.writer.wait_for_capacity(PARTS_CONCURRENT_MAX).await?;
        self.writer.write(chunk);
        Ok(())
    }

    pub async fn finish(self) -> Result<(), BlobError> {
        self.writer.finish().await?;
        Ok(())
    }

    /// Discards everything written so far.
    pub async fn abort(self) -> Result<(), BlobError> {
        self.writer.abort().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upload_open_abort_delete() {
        // Goal: a finished upload reads back byte for byte; an aborted one
        // leaves nothing; deleting twice is fine.
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        let mut upload = blobs.upload("media/a").await.unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(7_000) {
            upload.write(chunk).await.unwrap();
        }
        upload.finish().await.unwrap();
        let read: Vec<u8> = blobs
            .open("media/a")
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await
            .unwrap();
        assert_eq!(read, data);
        let mut aborted = blobs.upload("media/b").await.unwrap();
        aborted.write(b"partial").await.unwrap();
        aborted.abort().await.unwrap();
        assert!(matches!(
            blobs.open("media/b").await,
            Err(BlobError::NotFound)
        ));
        blobs.delete("media/a").await.unwrap();
        blobs.delete("media/a").await.unwrap();
        assert!(matches!(
            blobs.open("media/a").await,
            Err(BlobError::NotFound)
        ));
    }
}
