//! The HTTP surface: REST under `/v1`, the WebSocket at `/v1/ws`, and the
//! operational endpoints. Handlers translate between the wire (missive-proto)
//! and the services; they never touch the store directly except `/readyz`.

mod http;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::AppState;

pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/v1/accounts", post(http::register))
        .route("/v1/sessions", post(http::login))
        .route("/v1/sessions/current", delete(http::logout))
        .route("/v1/devices", get(http::devices))
        .route("/v1/devices/{device_id}", delete(http::revoke))
        .route(missive_proto::WS_PATH, get(ws::upgrade))
        .with_state(state)
}
