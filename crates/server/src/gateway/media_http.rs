//! Media endpoints: `POST /v1/media` streams an upload in, `GET
//! /v1/media/{id}` streams it out with its sniffed content type.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use missive_proto::rest::MediaInfo;

use super::http::Authenticated;
use crate::AppState;
use crate::service::ServiceError;
use crate::service::media::content_disposition;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadQuery {
    filename: Option<String>,
    /// The bytes are the client's ciphertext, for an encrypted
    /// conversation: stored as `application/octet-stream`, unsniffed, with
    /// no thumbnail.
    #[serde(default)]
    encrypted: bool,
}

/// `POST /v1/media[?filename=NAME][?encrypted=true]`: the raw bytes are the
/// body.
pub(super) async fn upload(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<MediaInfo>), ServiceError> {
    let Query(query) = query.map_err(|rejection| {
        ServiceError::new(
            missive_proto::ErrorCode::InvalidField,
            rejection.body_text(),
        )
    })?;
    state
        .upload_limit
        .check(&auth, "too many uploads; slow down")?;
    let info = state
        .media
        .upload(
            &auth,
            query.filename.as_deref(),
            query.encrypted,
            body.into_data_stream(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/media/{id}`
pub(super) async fn download(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let (record, bytes) = state.media.download(&auth, &id).await?;
    let body = Body::from_stream(bytes.map_err(std::io::Error::other));
    Ok((
        [
            (header::CONTENT_TYPE, record.content_type),
            (header::CONTENT_LENGTH, record.size_bytes.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                content_disposition(record.filename.as_deref()),
            ),
        ],
        body,
    )
        .into_response())
}

/// `GET /v1/media/{id}/thumbnail`: a small JPEG of an image.
pub(super) async fn thumbnail(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    let bytes = state.media.thumbnail(&auth, &id).await?;
    let body = Body::from_stream(bytes.map_err(std::io::Error::other));
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}
