//! REST handlers and the bearer-token extractor.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use missive_core::DeviceId;
use missive_proto::ErrorCode;
use missive_proto::rest::{
    DeviceList, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse,
};
use missive_store::DeviceAuth;

use crate::AppState;
use crate::error::ApiError;

/// The device behind `Authorization: Bearer <token>`.
pub struct Authenticated(pub DeviceAuth);

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotAuthenticated,
                    "send Authorization: Bearer <token>",
                )
            })?;
        Ok(Self(state.accounts.authenticate(token.trim()).await?))
    }
}

/// Turns axum's JSON rejections into our typed errors.
pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|rejection| {
        let code = match rejection {
            JsonRejection::JsonDataError(_) => ErrorCode::InvalidField,
            _ => ErrorCode::BadFrame,
        };
        ApiError::new(code, rejection.body_text())
    })
}

/// `GET /healthz`: 200 while the process serves HTTP.
pub async fn healthz() -> &'static str {
    "ok"
}

const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: 200 when the store answers, 503 otherwise or when stopping.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let store_ready = tokio::time::timeout(READY_PROBE_TIMEOUT, state.store.is_ready());
    if !state.shutdown.is_cancelled() && matches!(store_ready.await, Ok(true)) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> Response {
    let body = crate::telemetry::prometheus()
        .map(|handle| handle.render())
        .unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /v1/accounts`
pub async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let created = state.accounts.register(json_body(body)?, peer.ip()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `POST /v1/sessions`: log in, creating a device and its token.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    let session = state.accounts.login(json_body(body)?, peer.ip()).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// `DELETE /v1/sessions/current`: log out (revoke the calling device).
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.accounts.revoke(&auth, auth.device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/devices`
pub async fn devices(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
) -> Result<Json<DeviceList>, ApiError> {
    Ok(Json(state.accounts.devices(&auth).await?))
}

/// `DELETE /v1/devices/{device_id}`
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let device_id: i64 = device_id
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidField, "device id must be an integer"))?;
    state.accounts.revoke(&auth, DeviceId(device_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
