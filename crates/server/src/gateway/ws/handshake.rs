//! The start of a WebSocket session: the `auth` frame within its deadline,
//! then the account's connection count, registration, the token's
//! confirmation and `ready`. A refusal tells the client why and closes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use missive_core::model::DeviceAuth;
use missive_proto::{ClientFrame, CloseCode, ErrorCode, ServerFrame, decode_client_frame};
use tokio::time::{Instant, timeout};

use super::close_message;
use crate::AppState;
use crate::cache::Generation;
use crate::gateway::connections::Slot;
use crate::gateway::live::{self, Announce, Live};

/// Counts the connection for its account, registers it, confirms its
/// token and says `ready`; `None` when it was refused (and told why).
pub(super) async fn open(
    socket: &mut WebSocket,
    state: &Arc<AppState>,
    checked: Checked,
    ip_slot: Slot,
) -> Option<(Live, DeviceAuth)> {
    let Checked {
        auth,
        token,
        id: auth_id,
        since,
    } = checked;
    // Counted before the session registers anywhere: a refusal replaces no
    // connection of the device and announces nothing.
    let account_slot = match state.connection_limits.account(auth.account) {
        Ok(slot) => slot,
        Err(err) => {
            let error = ServerFrame::error(auth_id, err.code, err.message);
            say_and_close(socket, error, CloseCode::TooManyConnections).await;
            return None;
        }
    };
    // Register first, then confirm the token: a revoke that landed between
    // the check and the registration found no live connection to close,
    // and would otherwise be missed. Without one, no store read.
    let opening = Instant::now();
    let live = live::open(state, &auth, Announce::Yes, vec![ip_slot, account_slot]).await;
    connect_step("registered", opening);
    if let Err(err) = state.accounts.confirm(&token, since).await {
        // Only a refused token means revoked; a store that cannot answer
        // now is a reason to come back later.
        let close = match err.code {
            ErrorCode::TokenInvalid => CloseCode::Revoked,
            _ => CloseCode::GoingAway,
        };
        let error = ServerFrame::error(auth_id, err.code, err.message);
        say_and_close(socket, error, close).await;
        live.end().await;
        return None;
    }
    // Announce before `ready`, so a client that has seen `ready` knows its
    // presence went out (and a later subscriber gets no stale duplicate).
    state.social.device_connected(auth.account).await;
    let ready = ServerFrame::Ready {
        id: auth_id,
        username: auth.username.to_string(),
        device_id: auth.device.0,
    }
    .to_json();
    if socket.send(Message::Text(ready.into())).await.is_err() {
        live.end().await;
        return None;
    }
    Some((live, auth))
}

/// Records how long a step of connecting took (`missive_connect_seconds`):
/// where a slow connect waits, told apart on a live server.
pub(super) fn connect_step(step: &'static str, since: Instant) {
    metrics::histogram!("missive_connect_seconds", "step" => step)
        .record(since.elapsed().as_secs_f64());
}

/// A connection's `auth` frame, checked.
pub(super) struct Checked {
    pub(super) auth: DeviceAuth,
    token: String,
    /// The frame's correlation id, for the `ready` reply.
    id: Option<String>,
    /// Where the caches stood before the check (see `Accounts::confirm`).
    since: Generation,
}

/// Reads the first frame, which must be a valid `auth`, within the deadline.
pub(super) async fn authenticate(socket: &mut WebSocket, state: &AppState) -> Option<Checked> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(state.config.limits.auth_timeout_ms);
    let refuse = |id: Option<String>, code: ErrorCode, message: &str, close: CloseCode| {
        (ServerFrame::error(id, code, message), close)
    };
    let timed_out = || {
        refuse(
            None,
            ErrorCode::NotAuthenticated,
            "no auth frame within the deadline",
            CloseCode::AuthTimeout,
        )
    };
    let (error, close) = loop {
        let next = tokio::select! {
            // A frame that has arrived is taken even when the task is
            // polled only after the deadline too has passed (a busy node).
            biased;
            next = socket.next() => next,
            _ = tokio::time::sleep_until(deadline) => break timed_out(),
            _ = state.shutdown.cancelled() => return None,
        };
        match next {
            Some(Ok(Message::Text(text))) => match decode_client_frame(&text) {
                Ok(ClientFrame::Auth { id, token }) => {
                    connect_step("auth_frame", started);
                    let since = state.accounts.checkpoint();
                    match state.accounts.authenticate(&token).await {
                        Ok(auth) => {
                            return Some(Checked {
                                auth,
                                token,
                                id,
                                since,
                            });
                        }
                        Err(err) => {
                            break refuse(id, err.code, &err.message, CloseCode::AuthFailed);
                        }
                    }
                }
                Ok(_) => {
                    break refuse(
                        None,
                        ErrorCode::NotAuthenticated,
                        "the first frame must be auth",
                        CloseCode::AuthFailed,
                    );
                }
                Err(err) => break refuse(err.id, err.code, &err.message, CloseCode::AuthFailed),
            },
            // With the socket polled first, a client that keeps pinging
            // must still meet the deadline.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) if Instant::now() < deadline => continue,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => break timed_out(),
            Some(Ok(Message::Binary(_))) => {
                break refuse(
                    None,
                    ErrorCode::BadFrame,
                    "binary frames are not supported",
                    CloseCode::AuthFailed,
                );
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
        }
    };
    say_and_close(socket, error, close).await;
    None
}

/// Best effort, bounded: tells the client why, then closes.
pub(super) async fn say_and_close(socket: &mut WebSocket, error: ServerFrame, close: CloseCode) {
    let _ = timeout(Duration::from_secs(1), async {
        socket.send(Message::Text(error.to_json().into())).await?;
        socket.send(close_message(close)).await
    })
    .await;
}
