//! Media over REST: uploads (named, encrypted) and downloads.

use missive_proto::rest::MediaInfo;

use super::{Api, decode, percent_encoded, successful};
use crate::errors::{ClientError, transport};

impl Api {
    /// Uploads media bytes; the server sniffs the type.
    pub async fn upload_media(
        &self,
        token: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaInfo, ClientError> {
        self.upload_named_media(token, bytes, None).await
    }

    /// Uploads bytes encrypted for an encrypted conversation: stored as
    /// `application/octet-stream`, unsniffed, with no thumbnail.
    pub async fn upload_encrypted_media(
        &self,
        token: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaInfo, ClientError> {
        self.upload(token, "?encrypted=true", bytes).await
    }

    /// Uploads media that keeps `filename` (what a download is then saved as).
    pub async fn upload_named_media(
        &self,
        token: &str,
        bytes: Vec<u8>,
        filename: Option<&str>,
    ) -> Result<MediaInfo, ClientError> {
        let query = match filename {
            Some(filename) => format!("?filename={}", percent_encoded(filename)),
            None => String::new(),
        };
        self.upload(token, &query, bytes).await
    }

    /// `POST /v1/media` with `query` (empty, or from `?` on).
    async fn upload(
        &self,
        token: &str,
        query: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaInfo, ClientError> {
        let request = self.http.post(format!("{}/v1/media{query}", self.base_url));
        decode(request.bearer_auth(token).body(bytes).send().await).await
    }

    /// Downloads media: (content type, bytes).
    pub async fn download_media(
        &self,
        token: &str,
        media_id: &str,
    ) -> Result<(String, Vec<u8>), ClientError> {
        self.download_named_media(token, media_id)
            .await
            .map(|download| (download.content_type, download.bytes))
    }

    /// Downloads media with the name it was uploaded under, if any.
    pub async fn download_named_media(
        &self,
        token: &str,
        media_id: &str,
    ) -> Result<Download, ClientError> {
        let request = self
            .http
            .get(format!("{}/v1/media/{media_id}", self.base_url));
        let response = successful(request.bearer_auth(token).send().await).await?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let filename = response
            .headers()
            .get("content-disposition")
            .and_then(|value| value.to_str().ok())
            .and_then(disposition_filename);
        let bytes = response.bytes().await.map_err(transport)?;
        Ok(Download {
            content_type,
            filename,
            bytes: bytes.to_vec(),
        })
    }
}

/// A downloaded media object.
#[derive(Debug)]
pub struct Download {
    pub content_type: String,
    /// The name it was uploaded under (`filename*` of `Content-Disposition`).
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

/// The UTF-8 `filename*` of a `Content-Disposition` header (RFC 6266), as
/// missive's server writes it; `None` when there is none or it does not
/// decode.
fn disposition_filename(header: &str) -> Option<String> {
    let encoded = header
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("filename*=UTF-8''"))?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod disposition_tests {
    use super::disposition_filename;

    #[test]
    fn the_utf8_filename_is_read_back() {
        // Goal: what the server writes decodes to the uploaded name; a
        // header without one, or a broken escape, gives none.
        assert_eq!(
            disposition_filename("attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9 a.txt"),
            Some("é a.txt".to_owned())
        );
        assert_eq!(disposition_filename("attachment"), None);
        assert_eq!(
            disposition_filename("attachment; filename*=UTF-8''%G1"),
            None
        );
        assert_eq!(
            disposition_filename("attachment; filename*=UTF-8''%C3"),
            None
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        // Goal: a name with spaces, separators and non-ASCII survives as
        // one query value.
        assert_eq!(
            super::percent_encoded("Q3 é&x=1.pdf"),
            "Q3%20%C3%A9%26x%3D1.pdf"
        );
    }
}
