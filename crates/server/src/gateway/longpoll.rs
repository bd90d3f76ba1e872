//! HTTP long-polling: the same delivery as the WebSocket for networks that
//! break WebSockets. `POST /v1/poll` acks (cumulatively, per conversation)
//! on the way in, then waits for what lies above the device's positions;
//! `POST /v1/frames` takes any client frame and answers with the frames
//! the WebSocket would have sent back.
//!
//! A waiting poll registers the device with the router exactly like a
//! WebSocket session, so one device has one live session: a poll replaces a
//! WebSocket (closed with `replaced`) and vice versa, and a newer poll ends an
//! older one at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use missive_core::ConversationId;
use missive_core::model::DeviceAuth;
use missive_proto::rest::{FrameReplies, PollRequest, PollResponse};
use missive_proto::{ClientFrame, ErrorCode, ServerFrame};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::connections::Slot;
use super::dispatch::Dispatcher;
use super::http::{Authenticated, json_body};
use super::live::{self, Announce};
use crate::AppState;
use crate::mailbox::Mailbox;
use crate::service::ServiceError;
use crate::service::keys::{TO_DEVICE_PAGE, to_device_frame};
use crate::wire::pending_frame;

/// The longest a poll may wait, and the wait when the client names none.
const POLL_TIMEOUT_MAX_MS: u64 = 60_000;
const POLL_TIMEOUT_DEFAULT_MS: u64 = 25_000;

/// `POST /v1/poll`
pub(super) async fn poll(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Authenticated(auth): Authenticated,
    body: Result<Json<PollRequest>, JsonRejection>,
) -> Result<Json<PollResponse>, ServiceError> {
    let request = json_body(body)?;
    let (_permit, slots) = admit(&state, peer, &headers, &auth)?;
    apply_acks(&state, &auth, &request).await?;
    let wait_ms = request
        .timeout_ms
        .unwrap_or(POLL_TIMEOUT_DEFAULT_MS)
        .min(POLL_TIMEOUT_MAX_MS);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    // Register before the first read: a send committed after the read wakes us.
    let mut live = live::open(&state, &auth, Announce::No, slots).await;
    let mailbox = Arc::clone(&live.registration().mailbox);
    let mut frames = Vec::new();
    let mut closed = None;
    loop {
        let (page, to_device) = tokio::join!(
            state
                .messaging
                .pending(auth.account, auth.device, Vec::new(), usize::MAX),
            state.keys.to_device_waiting(auth.device, 0, TO_DEVICE_PAGE)
        );
        let (page, to_device) = (page?, to_device?);
        if !page.items.is_empty() || !to_device.is_empty() {
            frames.extend(page.items.into_iter().map(pending_frame));
            frames.extend(to_device.into_iter().map(to_device_frame));
            break;
        }
        tokio::select! {
            // A poll answers with what the store holds; an event handed
            // over live only tells it to look again (as does the node's
            // re-check, when the bus may have lost one).
            () = mailbox.news() => {
                if let Some(code) = mailbox.close_ordered() {
                    closed = Some(code.reason().to_owned());
                    break;
                }
                mailbox.take_deliveries();
                if ephemeral_frames(&mailbox, &mut frames) {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = state.shutdown.cancelled() => {
                closed = Some("shutting_down".to_owned());
                break;
            }
        }
    }
    // Ephemeral frames that arrived meanwhile ride along.
    ephemeral_frames(&mailbox, &mut frames);
    // A polling device is online while a poll waits; record when it last was.
    live.end().await;
    metrics::counter!("missive_deliveries_total").increment(
        frames
            .iter()
            .filter(|frame| matches!(frame, ServerFrame::Message { .. }))
            .count() as u64,
    );
    Ok(Json(PollResponse { frames, closed }))
}

/// Counts the poll as a connection of the node, the client's address and
/// the account (released when the poll ends).
fn admit(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    auth: &DeviceAuth,
) -> Result<(OwnedSemaphorePermit, Vec<Slot>), ServiceError> {
    if state.shutdown.is_cancelled() {
        return Err(ServiceError::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        ));
    }
    let Ok(permit) = state.connection_permits.clone().try_acquire_owned() else {
        return Err(ServiceError::new(
            ErrorCode::RateLimited,
            "too many connections",
        ));
    };
    // A waiting poll is a connection like a WebSocket: counted against the
    // client's address and the account before it acks or registers, so a
    // refusal changes nothing. The slots go back when the poll ends, also
    // when its client goes away and the handler is dropped.
    let ip = super::http::client_ip(peer, headers, &state.config.limits.trusted_proxies);
    let slots = vec![
        state.connection_limits.ip(ip)?,
        state.connection_limits.account(auth.account)?,
    ];
    Ok((permit, slots))
}

/// The acks a poll carries, applied before it waits.
async fn apply_acks(
    state: &AppState,
    auth: &DeviceAuth,
    request: &PollRequest,
) -> Result<(), ServiceError> {
    if let Some(up_to) = request.to_device_ack {
        state.keys.ack_to_device(auth, up_to).await?;
    }
    if !request.acks.is_empty() {
        let points = request
            .acks
            .iter()
            .map(|point| (ConversationId(point.conversation), point.seq))
            .collect();
        state.messaging.ack(auth, points).await?;
    }
    Ok(())
}

/// Moves the ephemeral frames waiting into `frames`; whether there were any.
fn ephemeral_frames(mailbox: &Mailbox, frames: &mut Vec<ServerFrame>) -> bool {
    let ephemeral = mailbox.take_ephemeral();
    let any = !ephemeral.is_empty();
    frames.extend(
        ephemeral
            .iter()
            .filter_map(|frame| serde_json::from_str::<ServerFrame>(frame).ok()),
    );
    any
}

/// `POST /v1/frames`: one client frame (any but `auth`), its replies back.
/// A single `error` reply also sets the HTTP status of its code.
pub(super) async fn frames(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // The router's body limit (`limits.frame_bytes_max`) is the frame limit.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let too_large = ServiceError::new(
                ErrorCode::FrameTooLarge,
                "frame exceeds limits.frame_bytes_max",
            );
            return too_large.into_response();
        }
        Err(rejection) => {
            return ServiceError::new(ErrorCode::BadFrame, rejection.body_text()).into_response();
        }
    };
    // Decoded once, by the same function as WebSocket frames.
    let text = String::from_utf8_lossy(&body);
    let replies = match missive_proto::decode_client_frame(&text) {
        Ok(ClientFrame::Auth { id, .. }) => vec![ServerFrame::error(
            id,
            ErrorCode::AlreadyAuthenticated,
            "authenticate with the Authorization header",
        )],
        // No live session to push updates to: answer with a snapshot.
        Ok(ClientFrame::SubscribePresence { id, users }) => {
            match state.social.presence_of(&auth, &users).await {
                Ok(frames) => std::iter::once(ServerFrame::Ok { id })
                    .chain(frames)
                    .collect(),
                Err(err) => vec![ServerFrame::error(id, err.code, err.message)],
            }
        }
        Ok(frame) => Dispatcher::new(state, auth).handle(frame).await,
        Err(err) => vec![ServerFrame::error(err.id, err.code, err.message)],
    };
    let (status, retry_after_ms) = match replies.as_slice() {
        [
            ServerFrame::Error {
                code,
                retry_after_ms,
                ..
            },
        ] => (ServiceError::new(*code, "").status(), *retry_after_ms),
        _ => (StatusCode::OK, None),
    };
    let mut response = (status, Json(FrameReplies { frames: replies })).into_response();
    if let Some(ms) = retry_after_ms {
        let secs = crate::gateway::refusal::retry_after_secs(Duration::from_millis(ms));
        if let Ok(value) = secs.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}
