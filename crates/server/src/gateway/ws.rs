//! One WebSocket session: authenticate with the first frame, then three
//! cooperating parts owned by the session:
//! - the reader (this task) decodes client frames and answers them;
//! - the pump drains the device's queue from the Store in position order,
//!   then waits for a wake-up and drains again, so queued and live delivery
//!   are one path with no gap and no reorder;
//! - the writer owns the socket's sink, writes frames from a bounded channel
//!   and pings on keepalive; a write stuck for `write_timeout_ms` closes the
//!   connection as a slow consumer (its messages stay queued).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use missive_core::{ConversationId, DeviceId};
use missive_proto::rest::GroupInfo;
use missive_proto::{ClientFrame, CloseCode, ErrorCode, ServerFrame, decode_client_frame};
use missive_store::{DeviceAuth, GroupChange, QueueItem};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use super::social_http::{system_event, wire_kind};
use crate::AppState;
use crate::error::ApiError;
use crate::service::{Draft, Messaging, Recipient};

/// Backoff bounds when the pump cannot read the queue.
const READ_RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
const READ_RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// Typing frames a connection may send in a burst, and the refill pace.
const TYPING_FRAMES_MAX: u32 = 10;
const TYPING_REFILL: Duration = Duration::from_millis(500);

/// Conversations remembered per session for `send {to}`; cleared when full.
const RECIPIENT_CACHE_MAX: usize = 1024;

/// `GET /v1/ws`: upgrade with bounded buffers (DESIGN.md §4).
pub async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down")
            .into_response();
    }
    let Ok(permit) = state.connection_permits.clone().try_acquire_owned() else {
        return ApiError::new(ErrorCode::RateLimited, "too many connections").into_response();
    };
    let frame_bytes_max = state.config.limits.frame_bytes_max;
    let session_guard = state.sessions.token();
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * frame_bytes_max)
        .max_message_size(frame_bytes_max)
        .max_frame_size(frame_bytes_max)
        .on_upgrade(move |socket| async move {
            run_session(socket, state, permit).await;
            drop(session_guard);
        })
}

enum Outbound {
    Frame(ServerFrame),
    /// An already-encoded ephemeral frame.
    Text(Arc<str>),
    Close(CloseCode),
}

#[derive(Debug)]
enum WriterEnd {
    Closed,
    SlowConsumer,
    SocketError,
}

async fn run_session(socket: WebSocket, state: Arc<AppState>, _permit: OwnedSemaphorePermit) {
    let (mut sink, mut stream) = socket.split();
    let Some((auth, token, auth_id)) = authenticate(&mut sink, &mut stream, &state).await else {
        return;
    };
    let span = tracing::info_span!("session", account = %auth.account, device = %auth.device);
    serve_device(sink, stream, state, auth, token, auth_id)
        .instrument(span)
        .await;
}

async fn serve_device(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    state: Arc<AppState>,
    auth: DeviceAuth,
    token: String,
    auth_id: Option<String>,
) {
    // Register first, then check the token again: a revoke that landed
    // between the first check and the registration found no live
    // connection to close, and would otherwise be missed.
    let mut registration = state.router.register(auth.device, auth.account);
    if state.accounts.authenticate(&token).await.is_err() {
        let error = ServerFrame::error(
            auth_id,
            ErrorCode::TokenInvalid,
            "token is invalid or revoked",
        );
        let _ = timeout(Duration::from_secs(1), async {
            sink.send(Message::Text(error.to_json().into())).await?;
            sink.send(close_message(CloseCode::Revoked)).await
        })
        .await;
        return;
    }
    let ready = ServerFrame::Ready {
        id: auth_id,
        username: auth.username.to_string(),
        device_id: auth.device.0,
    };
    if sink
        .send(Message::Text(ready.to_json().into()))
        .await
        .is_err()
    {
        return;
    }
    if let Err(err) = state
        .store
        .mark_device_seen(auth.device, state.clock.now_ms())
        .await
    {
        tracing::debug!(%err, "could not record last_seen");
    }
    let limits = &state.config.limits;
    let (outbound, outbound_rx) = mpsc::channel(limits.outbound_frames_max);
    let mut tasks: JoinSet<WriterEnd> = JoinSet::new();
    tasks.spawn(write_frames(
        sink,
        outbound_rx,
        Duration::from_millis(limits.write_timeout_ms),
        Duration::from_secs(limits.keepalive_secs),
    ));
    let pump = tokio::spawn(pump_queue(
        state.clone(),
        auth.device,
        registration.wake.clone(),
        outbound.clone(),
    ));
    let mut session = Session {
        state: state.clone(),
        auth,
        outbound,
        recipients: HashMap::new(),
        typing_budget: Budget::new(TYPING_FRAMES_MAX, TYPING_REFILL),
    };
    state.social.device_connected(session.auth.account).await;
    let idle_max = Duration::from_secs(limits.keepalive_secs * 3);
    let mut idle_deadline = Instant::now() + idle_max;
    let close = loop {
        tokio::select! {
            incoming = stream.next() => {
                idle_deadline = Instant::now() + idle_max;
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        metrics::counter!("missive_frames_in_total").increment(1);
                        if !session.handle_text(&text).await {
                            break Some(CloseCode::SlowConsumer);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let frame = ServerFrame::error(None, ErrorCode::BadFrame, "binary frames are not supported; send JSON text");
                        if !session.reply(frame).await {
                            break Some(CloseCode::SlowConsumer);
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(err)) => {
                        let too_large = std::error::Error::source(&err)
                            .map(|source| source.to_string().contains("too long"))
                            .unwrap_or(false)
                            || err.to_string().contains("too long");
                        tracing::debug!(%err, "websocket read failed");
                        break too_large.then_some(CloseCode::FrameTooLarge);
                    }
                }
            }
            _ = tokio::time::sleep_until(idle_deadline) => break Some(CloseCode::IdleTimeout),
            _ = registration.close.changed() => break *registration.close.borrow(),
            Some(frame) = registration.ephemeral.recv() => {
                // Ephemeral frames are dropped rather than waited for.
                let _ = session.outbound.try_send(Outbound::Text(frame));
            }
            _ = state.shutdown.cancelled() => break Some(CloseCode::GoingAway),
            ended = tasks.join_next() => {
                if let Some(Ok(WriterEnd::SlowConsumer)) = ended {
                    metrics::counter!("missive_slow_consumer_closes_total").increment(1);
                    tracing::info!("closed a slow consumer; its queue is kept");
                }
                break None;
            }
        }
    };
    pump.abort();
    if let Some(code) = close {
        tracing::debug!(reason = code.reason(), "closing session");
        // Best effort: a full channel means the writer is stuck anyway.
        let _ = session.outbound.try_send(Outbound::Close(code));
    }
    let account = session.auth.account;
    drop(session);
    // Let the writer flush the close frame, bounded.
    let _ = timeout(Duration::from_secs(2), tasks.join_next()).await;
    drop(registration);
    state.social.device_disconnected(account).await;
}

/// Reads the first frame, which must be a valid `auth`, within the deadline.
async fn authenticate(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    state: &AppState,
) -> Option<(DeviceAuth, String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_millis(state.config.limits.auth_timeout_ms);
    let refuse = |id: Option<String>, code: ErrorCode, message: &str, close: CloseCode| {
        (ServerFrame::error(id, code, message), close)
    };
    let (error, close) = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::time::sleep_until(deadline) => {
                break refuse(None, ErrorCode::NotAuthenticated, "no auth frame within the deadline", CloseCode::AuthTimeout);
            }
            _ = state.shutdown.cancelled() => return None,
        };
        match next {
            Some(Ok(Message::Text(text))) => match decode_client_frame(&text) {
                Ok(ClientFrame::Auth { id, token }) => {
                    match state.accounts.authenticate(&token).await {
                        Ok(auth) => return Some((auth, token, id)),
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
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                break refuse(
                    None,
                    ErrorCode::BadFrame,
                    "binary frames are not supported",
                    CloseCode::AuthFailed,
                );
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
        }
    };
    let _ = timeout(Duration::from_secs(1), async {
        sink.send(Message::Text(error.to_json().into())).await?;
        sink.send(close_message(close)).await
    })
    .await;
    None
}

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    }))
}

struct Session {
    state: Arc<AppState>,
    auth: DeviceAuth,
    outbound: mpsc::Sender<Outbound>,
    recipients: HashMap<String, ConversationId>,
    typing_budget: Budget,
}

/// A token bucket: `max` actions, one more every `refill`.
struct Budget {
    tokens: u32,
    max: u32,
    refill: Duration,
    refilled_at: Instant,
}

impl Budget {
    fn new(max: u32, refill: Duration) -> Self {
        Self {
            tokens: max,
            max,
            refill,
            refilled_at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let earned =
            now.duration_since(self.refilled_at).as_millis() / self.refill.as_millis().max(1);
        if earned > 0 {
            self.tokens = self.max.min(
                self.tokens
                    .saturating_add(earned.min(u128::from(self.max)) as u32),
            );
            self.refilled_at = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Session {
    /// Queues a reply for the writer; `false` if the client is too slow to
    /// take it within the write timeout (the session then closes).
    async fn reply(&self, frame: ServerFrame) -> bool {
        let wait = Duration::from_millis(self.state.config.limits.write_timeout_ms);
        matches!(
            timeout(wait, self.outbound.send(Outbound::Frame(frame))).await,
            Ok(Ok(()))
        )
    }

    async fn handle_text(&mut self, text: &str) -> bool {
        let frame = match decode_client_frame(text) {
            Ok(frame) => frame,
            Err(err) => {
                return self
                    .reply(ServerFrame::error(err.id, err.code, err.message))
                    .await;
            }
        };
        let reply = match frame {
            ClientFrame::Auth { id, .. } => ServerFrame::error(
                id,
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            ),
            ClientFrame::Ping { id } => ServerFrame::Pong { id },
            ClientFrame::Send {
                id,
                to,
                conversation,
                client_msg_id,
                text,
                reply_to,
            } => {
                let draft = Draft::Text { text, reply_to };
                self.send(to, conversation, &client_msg_id, draft)
                    .await
                    .unwrap_or_else(|err| error_frame(id.clone(), err))
                    .with_id(id)
            }
            ClientFrame::React {
                id,
                conversation,
                client_msg_id,
                target,
                emoji,
            } => {
                let draft = Draft::Reaction { target, emoji };
                self.send(None, Some(conversation), &client_msg_id, draft)
                    .await
                    .unwrap_or_else(|err| error_frame(id.clone(), err))
                    .with_id(id)
            }
            ClientFrame::Edit {
                id,
                conversation,
                client_msg_id,
                target,
                text,
            } => {
                let draft = Draft::Edit { target, text };
                self.send(None, Some(conversation), &client_msg_id, draft)
                    .await
                    .unwrap_or_else(|err| error_frame(id.clone(), err))
                    .with_id(id)
            }
            ClientFrame::Delete {
                id,
                conversation,
                client_msg_id,
                target,
            } => {
                let draft = Draft::Delete { target };
                self.send(None, Some(conversation), &client_msg_id, draft)
                    .await
                    .unwrap_or_else(|err| error_frame(id.clone(), err))
                    .with_id(id)
            }
            ClientFrame::Typing {
                id,
                conversation,
                state,
            } => {
                if !self.typing_budget.take(Instant::now()) {
                    error_frame(
                        id,
                        ApiError::new(ErrorCode::RateLimited, "too many typing frames; slow down"),
                    )
                } else {
                    match self
                        .state
                        .social
                        .typing(&self.auth, ConversationId(conversation), state)
                        .await
                    {
                        Ok(()) => ServerFrame::Ok { id },
                        Err(err) => error_frame(id, err),
                    }
                }
            }
            ClientFrame::SubscribePresence { id, users } => {
                match self.state.social.subscribe(&self.auth, &users).await {
                    Ok(frames) => {
                        if !self.reply(ServerFrame::Ok { id }).await {
                            return false;
                        }
                        for frame in frames {
                            if !self.reply(frame).await {
                                return false;
                            }
                        }
                        return true;
                    }
                    Err(err) => error_frame(id, err),
                }
            }
            ClientFrame::GroupCreate { id, name, members } => {
                let result = self.state.groups.create(&self.auth, &name, &members).await;
                group_reply(id, result)
            }
            ClientFrame::GroupInfo { id, conversation } => {
                let result = self
                    .state
                    .groups
                    .info(&self.auth, ConversationId(conversation))
                    .await;
                group_reply(id, result)
            }
            ClientFrame::GroupRename {
                id,
                conversation,
                name,
            } => {
                let conversation = ConversationId(conversation);
                let result = self
                    .state
                    .groups
                    .rename(&self.auth, conversation, &name)
                    .await;
                group_reply(id, result)
            }
            ClientFrame::GroupAdd {
                id,
                conversation,
                members,
            } => {
                let conversation = ConversationId(conversation);
                let result = self
                    .state
                    .groups
                    .add(&self.auth, conversation, &members)
                    .await;
                group_reply(id, result)
            }
            ClientFrame::GroupRemove {
                id,
                conversation,
                username,
            } => {
                self.group_member(id, conversation, &username, GroupChange::Remove)
                    .await
            }
            ClientFrame::GroupPromote {
                id,
                conversation,
                username,
            } => {
                self.group_member(id, conversation, &username, GroupChange::Promote)
                    .await
            }
            ClientFrame::GroupDemote {
                id,
                conversation,
                username,
            } => {
                self.group_member(id, conversation, &username, GroupChange::Demote)
                    .await
            }
            ClientFrame::GroupLeave { id, conversation } => {
                let conversation = ConversationId(conversation);
                match self
                    .state
                    .groups
                    .change(&self.auth, conversation, GroupChange::Leave)
                    .await
                {
                    Ok(_) => ServerFrame::Ok { id },
                    Err(err) => error_frame(id, err),
                }
            }
            ClientFrame::Ack {
                id,
                up_to,
                positions,
            } => match self.state.messaging.ack(&self.auth, up_to, positions).await {
                Ok(removed) => ServerFrame::Acked { id, removed },
                Err(err) => error_frame(id, err),
            },
            ClientFrame::Read {
                id,
                conversation,
                seq,
            } => {
                match self
                    .state
                    .messaging
                    .read(&self.auth, ConversationId(conversation), seq)
                    .await
                {
                    Ok(seq) => ServerFrame::ReadOk {
                        id,
                        conversation,
                        seq,
                    },
                    Err(err) => error_frame(id, err),
                }
            }
        };
        self.reply(reply).await
    }

    async fn group_member(
        &self,
        id: Option<String>,
        conversation: i64,
        username: &str,
        change: fn(missive_core::AccountId) -> GroupChange,
    ) -> ServerFrame {
        let conversation = ConversationId(conversation);
        let result = self
            .state
            .groups
            .change_member(&self.auth, conversation, username, change)
            .await;
        group_reply(id, result)
    }

    async fn send(
        &mut self,
        to: Option<String>,
        conversation: Option<i64>,
        client_msg_id: &str,
        draft: Draft,
    ) -> Result<ServerFrame, ApiError> {
        let conversation = match (to, conversation) {
            (Some(username), None) => self.conversation_with(username).await?,
            (None, Some(conversation)) => ConversationId(conversation),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    "give exactly one of \"to\" or \"conversation\"",
                ));
            }
        };
        let appended = self
            .state
            .messaging
            .send(&self.auth, conversation, client_msg_id, draft)
            .await?;
        Ok(ServerFrame::Sent {
            id: None,
            message_id: appended.message_id.to_string(),
            conversation: appended.conversation.0,
            seq: appended.seq,
            ts_ms: appended.ts_ms,
            duplicate: appended.duplicate,
        })
    }

    async fn conversation_with(&mut self, username: String) -> Result<ConversationId, ApiError> {
        if let Some(conversation) = self.recipients.get(&username) {
            return Ok(*conversation);
        }
        let conversation = self
            .state
            .messaging
            .conversation_for(&self.auth, Recipient::User(username.clone()))
            .await?;
        if self.recipients.len() >= RECIPIENT_CACHE_MAX {
            self.recipients.clear();
        }
        self.recipients.insert(username, conversation);
        Ok(conversation)
    }
}

trait WithId {
    fn with_id(self, id: Option<String>) -> Self;
}

impl WithId for ServerFrame {
    fn with_id(mut self, new_id: Option<String>) -> Self {
        if let ServerFrame::Sent { id, .. } | ServerFrame::Error { id, .. } = &mut self {
            *id = new_id;
        }
        self
    }
}

fn group_reply(id: Option<String>, result: Result<GroupInfo, ApiError>) -> ServerFrame {
    match result {
        Ok(group) => ServerFrame::Group { id, group },
        Err(err) => error_frame(id, err),
    }
}

fn error_frame(id: Option<String>, err: ApiError) -> ServerFrame {
    ServerFrame::error(id, err.code, err.message)
}

/// Drains the device's queue page by page, then sleeps until woken. The
/// cursor only moves forward, so each entry is written at most once per
/// connection; unacked entries come again on the next connection.
async fn pump_queue(
    state: Arc<AppState>,
    device: DeviceId,
    wake: Arc<Notify>,
    outbound: mpsc::Sender<Outbound>,
) {
    let messaging: &Messaging = &state.messaging;
    let mut cursor = 0;
    let mut retry_delay = READ_RETRY_DELAY_MIN;
    loop {
        let page = match messaging.pending(device, cursor).await {
            Ok(page) => page,
            Err(err) => {
                // Do not wait for a wake-up: a backlog may have no new
                // traffic to cause one. Retry with a bounded backoff.
                tracing::warn!(
                    code = err.code.as_str(),
                    "reading the queue failed; retrying"
                );
                tokio::time::sleep(retry_delay).await;
                retry_delay = (retry_delay * 2).min(READ_RETRY_DELAY_MAX);
                continue;
            }
        };
        retry_delay = READ_RETRY_DELAY_MIN;
        let page_was_full = page.len() >= messaging.page_size();
        for item in page {
            cursor = item.pos();
            if outbound
                .send(Outbound::Frame(queue_frame(item)))
                .await
                .is_err()
            {
                return;
            }
            metrics::counter!("missive_deliveries_total").increment(1);
        }
        if !page_was_full {
            wake.notified().await;
        }
    }
}

fn queue_frame(item: QueueItem) -> ServerFrame {
    match item {
        QueueItem::Message {
            pos,
            message_id,
            conversation,
            seq,
            from,
            from_device,
            client_msg_id,
            text,
            kind,
            target,
            edited_ms,
            deleted,
            ts_ms,
        } => {
            let event = system_event(kind, &text);
            ServerFrame::Message {
                pos,
                message_id: message_id.to_string(),
                conversation: conversation.0,
                seq,
                from,
                from_device: from_device.0,
                client_msg_id,
                kind: wire_kind(kind),
                text: if event.is_some() { String::new() } else { text },
                target: target.map(|target| target.to_string()),
                event,
                edited_ms,
                deleted,
                ts_ms,
            }
        }
        QueueItem::Delivered {
            pos,
            conversation,
            message_id,
            seq,
            by,
            ts_ms,
        } => ServerFrame::Delivered {
            pos,
            conversation: conversation.0,
            message_id: message_id.to_string(),
            seq,
            by,
            ts_ms,
        },
        QueueItem::Read {
            pos,
            conversation,
            seq,
            by,
            ts_ms,
        } => ServerFrame::Read {
            pos,
            conversation: conversation.0,
            seq,
            by,
            ts_ms,
        },
    }
}

/// Owns the sink: writes frames in order and pings on keepalive.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Outbound>,
    write_timeout: Duration,
    keepalive: Duration,
) -> WriterEnd {
    let mut pings = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    loop {
        let message = tokio::select! {
            next = frames.recv() => match next {
                Some(Outbound::Frame(frame)) => {
                    metrics::counter!("missive_frames_out_total").increment(1);
                    Message::Text(frame.to_json().into())
                }
                Some(Outbound::Text(text)) => {
                    metrics::counter!("missive_frames_out_total").increment(1);
                    Message::Text(text.as_ref().into())
                }
                Some(Outbound::Close(code)) => {
                    let _ = timeout(write_timeout, sink.send(close_message(code))).await;
                    return WriterEnd::Closed;
                }
                None => return WriterEnd::Closed,
            },
            _ = pings.tick() => Message::Ping(Default::default()),
        };
        match timeout(write_timeout, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return WriterEnd::SocketError,
            Err(_) => return WriterEnd::SlowConsumer,
        }
    }
}
