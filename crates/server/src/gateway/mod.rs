//! The HTTP surface: REST under `/v1`, the WebSocket at `/v1/ws`, the
//! operational endpoints, and the browser app at `/`. Handlers translate between the wire (missive-proto)
//! and the services; they never touch the store directly except `/readyz`.

pub mod connections;
mod dispatch;
mod http;
mod keys_http;
mod live;
mod longpoll;
mod media_http;
pub(crate) mod refusal;
mod social_http;
mod web;
mod ws;

use std::sync::Arc;

use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Router};
use missive_core::model::{GroupChange, Relation};

use crate::AppState;

pub fn routes(state: Arc<AppState>) -> Router {
    // No request body may be larger than a frame (the media upload, which
    // streams and counts against `media_bytes_max`, excepted); a larger one
    // is refused with `frame_too_large` (413) before it is read whole.
    let body_bytes_max = state.config.limits.frame_bytes_max;
    Router::new()
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/v1/accounts", post(http::register))
        .route("/v1/registration", get(http::registration))
        .route("/v1/sessions", post(http::login))
        .route("/v1/sessions/current", delete(http::logout))
        .route("/v1/users", get(http::users))
        .route("/v1/devices", get(http::devices))
        .route(
            "/v1/devices/{device_id}",
            delete(http::revoke).patch(http::rename_device),
        )
        .route("/v1/groups", post(social_http::create_group))
        .route(
            "/v1/groups/{id}",
            get(social_http::group_info).patch(social_http::rename_group),
        )
        .route("/v1/groups/{id}/members", post(social_http::add_members))
        .route(
            "/v1/groups/{id}/members/{username}",
            member_change(GroupChange::Remove),
        )
        .route("/v1/groups/{id}/admins", post(social_http::promote))
        .route(
            "/v1/groups/{id}/admins/{username}",
            member_change(GroupChange::Demote),
        )
        .route("/v1/groups/{id}/leave", post(social_http::leave))
        .route("/v1/conversations", get(social_http::conversations))
        .route("/v1/conversations/{id}/encrypt", post(social_http::encrypt))
        .route("/v1/conversations/{id}/timer", put(social_http::set_timer))
        .route("/v1/conversations/{id}/messages", get(social_http::history))
        .route(
            "/v1/conversations/{id}/messages/{message_id}/receipts",
            get(social_http::receipts),
        )
        // Contacts and blocks are one list API over two relations.
        .route("/v1/contacts", relation_list(Relation::Contact))
        .route("/v1/contacts/{username}", relation_entry(Relation::Contact))
        .route("/v1/blocks", relation_list(Relation::Block))
        .route("/v1/blocks/{username}", relation_entry(Relation::Block))
        .route(
            "/v1/privacy",
            get(social_http::privacy).put(social_http::set_privacy),
        )
        .route(
            "/v1/media",
            // The upload enforces limits.media_bytes_max itself, streaming.
            post(media_http::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/media/{id}", get(media_http::download))
        .route("/v1/media/{id}/thumbnail", get(media_http::thumbnail))
        .route("/v1/keys", get(keys_http::count).put(keys_http::upload))
        .route("/v1/keys/claim", post(keys_http::claim))
        .route("/v1/users/{username}/keys", get(keys_http::of_user))
        .route("/v1/poll", post(longpoll::poll))
        .route("/v1/frames", post(longpoll::frames))
        .route(missive_proto::WS_PATH, get(ws::upgrade))
        // After every route: it is given to each route added before it.
        .method_not_allowed_fallback(http::method_not_allowed)
        .fallback(web::asset)
        .layer(axum::extract::DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// `GET` (the list) and `POST` (add a user) of one relation's list.
fn relation_list(relation: Relation) -> MethodRouter<Arc<AppState>> {
    get(social_http::related)
        .post(social_http::relate)
        .layer(Extension(relation))
}

/// `DELETE` of one user from one relation's list.
fn relation_entry(relation: Relation) -> MethodRouter<Arc<AppState>> {
    delete(social_http::unrelate).layer(Extension(relation))
}

/// `DELETE` of a named member, making `change` to them.
fn member_change(change: social_http::MemberChange) -> MethodRouter<Arc<AppState>> {
    delete(social_http::change_named_member).layer(Extension(change))
}
