//! REST handlers for end-to-end encryption keys (docs/PROTOCOL.md, "End-to-end
//! encryption keys").

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use missive_proto::rest::{KeyClaim, KeyClaimRequest, KeyCount, KeyUploadRequest, UserKeys};

use super::http::{Authenticated, json_body};
use crate::AppState;
use crate::service::ServiceError;

type Shared = State<Arc<AppState>>;

/// `PUT /v1/keys`
pub(super) async fn upload(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    body: Result<Json<KeyUploadRequest>, JsonRejection>,
) -> Result<Json<KeyCount>, ServiceError> {
    let request = json_body(body)?;
    Ok(Json(state.keys.upload(&auth, &request).await?))
}

/// `GET /v1/keys`
pub(super) async fn count(
    State(state): Shared,
    Authenticated(auth): Authenticated,
) -> Result<Json<KeyCount>, ServiceError> {
    Ok(Json(state.keys.count(&auth).await?))
}

/// `GET /v1/users/{username}/keys`
pub(super) async fn of_user(
    State(state): Shared,
    Authenticated(_auth): Authenticated,
    Path(username): Path<String>,
) -> Result<Json<UserKeys>, ServiceError> {
    Ok(Json(state.keys.of_user(&username).await?))
}

/// `POST /v1/keys/claim`
pub(super) async fn claim(
    State(state): Shared,
    Authenticated(auth): Authenticated,
    body: Result<Json<KeyClaimRequest>, JsonRejection>,
) -> Result<Json<KeyClaim>, ServiceError> {
    let request = json_body(body)?;
    state
        .key_claim_limit
        .check(&auth, "too many key claims; slow down")?;
    Ok(Json(state.keys.claim(&auth, &request.user).await?))
}
