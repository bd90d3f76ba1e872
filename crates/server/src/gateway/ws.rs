//! One WebSocket session: authenticate with the first frame, then two
//! tasks, meeting in the connection's [`Mailbox`]:
//! - the session (this task) reads and decodes client frames and answers
//!   them, in frame order, into the mailbox; sends are queued in the
//!   store's write order and answered once stored, with up to
//!   `FRAMES_IN_FLIGHT_MAX` frames awaiting their answers, so one
//!   connection's sends share commits;
//! - the delivery owns the socket's sink: it writes what the mailbox
//!   holds (ephemeral frames, replies, then the events handed over), reads
//!   what waits above the device's positions from the Store in seq order
//!   per conversation when it must, and pings on keepalive, so catching up
//!   and live delivery are one path with no gap and no reorder. A write
//!   stuck for `write_timeout_ms` closes the connection as a slow consumer
//!   (its messages wait for the next one).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use missive_core::{ConversationId, Seq};
use missive_proto::{ClientFrame, CloseCode, ErrorCode, ServerFrame, decode_client_frame};
use missive_store::DeviceAuth;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use super::connections::Slot;
use super::dispatch::{Dispatcher, Replies};
use super::live::{self, Announce};
use super::web;
use crate::AppState;
use crate::accept::Admitted;
use crate::cache::Generation;
use crate::error::ApiError;
use crate::mailbox::{Mailbox, News};
use crate::service::Messaging;
use crate::wire::pending_frame;

/// Client frames read but not yet answered, at most; the connection reads
/// on once the oldest is answered (docs/PROTOCOL.md, "Sends in flight").
const FRAMES_IN_FLIGHT_MAX: usize = 32;

/// Backoff bounds when the delivery cannot read what waits.
const READ_RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
const READ_RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// `GET /v1/ws`: upgrade with bounded buffers (DESIGN.md §4). Refused
/// before the upgrade when the node or the client's address has its
/// maximum of connections; the account's maximum can only be checked once
/// `auth` names it (see `serve_device`).
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    admitted: Option<axum::Extension<Arc<Admitted>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !web::origin_allowed(&headers, &state.config.web.allowed_origins) {
        return ApiError::new(
            ErrorCode::OriginNotAllowed,
            "pages from this origin may not open a WebSocket here (see web.allowed_origins)",
        )
        .into_response();
    }
    if state.shutdown.is_cancelled() {
        return ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down")
            .into_response();
    }
    let Ok(permit) = state.connection_permits.clone().try_acquire_owned() else {
        return ApiError::new(ErrorCode::RateLimited, "too many connections").into_response();
    };
    let ip = super::http::client_ip(peer, &headers, &state.config.limits.trusted_proxies);
    let ip_slot = match state.connection_limits.ip(ip) {
        Ok(slot) => slot,
        Err(err) => return err.into_response(),
    };
    let frame_bytes_max = state.config.limits.frame_bytes_max;
    let session_guard = state.sessions.token();
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES + 2 * frame_bytes_max)
        .max_message_size(frame_bytes_max)
        .max_frame_size(frame_bytes_max)
        .on_upgrade(move |socket| {
            // The socket is the session's now: so is its admission.
            let admitted = admitted.map(|axum::Extension(admitted)| admitted);
            // A combinator, not an async block: a block would keep room for
            // the socket and the rest (moved into the session) for the
            // session's whole life, and awaiting a future moved into it
            // keeps room for two.
            run_session(socket, state, permit, ip_slot, admitted).map(move |()| drop(session_guard))
        })
}

/// Splits the socket before the session's future exists: an async fn keeps
/// room for its arguments for its whole life, and the socket is large.
fn run_session(
    socket: WebSocket,
    state: Arc<AppState>,
    permit: OwnedSemaphorePermit,
    ip_slot: Slot,
    admitted: Option<Arc<Admitted>>,
) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    authenticate_and_serve(sink, stream, state, permit, ip_slot, admitted)
}

async fn authenticate_and_serve(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
    ip_slot: Slot,
    admitted: Option<Arc<Admitted>>,
) {
    // Boxed, as every one-off step of a session: a future's size is that of
    // its largest state, and the session's is held for the connection's life.
    let Some(checked) = Box::pin(authenticate(&mut sink, &mut stream, &state)).await else {
        return;
    };
    if let Some(admitted) = &admitted {
        admitted.authenticated();
    }
    let span = tracing::info_span!(
        "session",
        account = %checked.auth.account,
        device = %checked.auth.device
    );
    serve_device(sink, stream, state, checked, ip_slot)
        .instrument(span)
        .await;
}

async fn serve_device(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    state: Arc<AppState>,
    checked: Checked,
    ip_slot: Slot,
) {
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
            Box::pin(say_and_close(
                &mut sink,
                error,
                CloseCode::TooManyConnections,
            ))
            .await;
            return;
        }
    };
    // Register first, then confirm the token: a revoke that landed between
    // the check and the registration found no live connection to close,
    // and would otherwise be missed. Without one, no store read.
    let mut live = Box::pin(live::open(
        &state,
        &auth,
        Announce::Yes,
        vec![ip_slot, account_slot],
    ))
    .await;
    let confirmed = Box::pin(state.accounts.confirm(&token, since)).await;
    drop(token);
    if let Err(err) = confirmed {
        // Only a refused token means revoked; a store that cannot answer
        // now is a reason to come back later.
        let close = match err.code {
            ErrorCode::TokenInvalid => CloseCode::Revoked,
            _ => CloseCode::GoingAway,
        };
        let error = ServerFrame::error(auth_id, err.code, err.message);
        Box::pin(say_and_close(&mut sink, error, close)).await;
        Box::pin(live.end()).await;
        return;
    }
    // Announce before `ready`, so a client that has seen `ready` knows its
    // presence went out (and a later subscriber gets no stale duplicate).
    Box::pin(state.social.device_connected(auth.account)).await;
    let ready = ServerFrame::Ready {
        id: auth_id,
        username: auth.username.to_string(),
        device_id: auth.device.0,
    }
    .to_json();
    if sink.send(Message::Text(ready.into())).await.is_err() {
        Box::pin(live.end()).await;
        return;
    }
    let limits = &state.config.limits;
    let mailbox = Arc::clone(&live.registration().mailbox);
    let mut tasks: JoinSet<()> = JoinSet::new();
    tasks.spawn(deliver(
        state.clone(),
        auth.clone(),
        Arc::clone(&mailbox),
        sink,
        Duration::from_millis(limits.write_timeout_ms),
        Duration::from_secs(limits.keepalive_secs),
    ));
    let mut session = Session {
        state: state.clone(),
        mailbox: Arc::clone(&mailbox),
        dispatcher: Dispatcher::new(state.clone(), auth),
        in_flight: FuturesOrdered::new(),
    };
    let idle_max = Duration::from_secs(limits.keepalive_secs * 3);
    let mut idle_deadline = Instant::now() + idle_max;
    let close = loop {
        tokio::select! {
            // Biased: an order to close wins over everything (a flood of
            // client frames must not delay a revocation).
            biased;
            () = mailbox.session_news() => {
                if let Some(code) = mailbox.close_ordered() {
                    break Some(code);
                }
            }
            _ = state.shutdown.cancelled() => break Some(CloseCode::GoingAway),
            Some(replies) = session.in_flight.next(), if !session.in_flight.is_empty() => {
                if !session.reply_all(replies).await {
                    break Some(CloseCode::SlowConsumer);
                }
            }
            incoming = stream.next(), if session.in_flight.len() < FRAMES_IN_FLIGHT_MAX => {
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
                        if !session.answer(Replies::Now(vec![frame])).await {
                            break Some(CloseCode::SlowConsumer);
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(err)) => {
                        tracing::debug!(%err, "websocket read failed");
                        break read_failure_close(&err);
                    }
                }
            }
            _ = tokio::time::sleep_until(idle_deadline) => break Some(CloseCode::IdleTimeout),
            // The writer ended: it closed the socket itself (a slow
            // consumer) or the socket failed.
            _ = tasks.join_next() => break None,
        }
    };
    // Sends still in flight are stored whatever happens to this connection;
    // finishing them hands them to their recipients (their `sent` is lost
    // with the connection, and a retry answers `duplicate`).
    let in_flight = std::mem::take(&mut session.in_flight);
    if !in_flight.is_empty() {
        tokio::spawn(in_flight.for_each(|_| async {}));
    }
    // The close frame goes after the replies already queued; the delivery
    // writes them within one bound (a stuck write ends it as a slow
    // consumer, with its own close frame).
    if let Some(code) = close {
        tracing::debug!(reason = code.reason(), "closing session");
    }
    mailbox.finish(close);
    drop(session);
    let close_bound = 2 * Duration::from_millis(state.config.limits.write_timeout_ms);
    let _ = timeout(close_bound, tasks.join_next()).await;
    Box::pin(live.end()).await;
}

/// A connection's `auth` frame, checked.
struct Checked {
    auth: DeviceAuth,
    token: String,
    /// The frame's correlation id, for the `ready` reply.
    id: Option<String>,
    /// Where the caches stood before the check (see `Accounts::confirm`).
    since: Generation,
}

/// Reads the first frame, which must be a valid `auth`, within the deadline.
async fn authenticate(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    state: &AppState,
) -> Option<Checked> {
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
    say_and_close(sink, error, close).await;
    None
}

/// Best effort, bounded: tells the client why, then closes.
async fn say_and_close(
    sink: &mut SplitSink<WebSocket, Message>,
    error: ServerFrame,
    close: CloseCode,
) {
    let _ = timeout(Duration::from_secs(1), async {
        sink.send(Message::Text(error.to_json().into())).await?;
        sink.send(close_message(close)).await
    })
    .await;
}

/// The close a failed read deserves, if the socket can still carry one:
/// the WebSocket crate reports these only as text.
fn read_failure_close(err: &axum::Error) -> Option<CloseCode> {
    let says = |needle: &str| {
        err.to_string().contains(needle)
            || std::error::Error::source(err)
                .is_some_and(|source| source.to_string().contains(needle))
    };
    if says("too long") {
        Some(CloseCode::FrameTooLarge)
    } else if says("UTF-8") {
        Some(CloseCode::InvalidUtf8)
    } else {
        None
    }
}

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    }))
}

struct Session {
    state: Arc<AppState>,
    mailbox: Arc<Mailbox>,
    dispatcher: Dispatcher,
    /// Answers to frames already read, in frame order.
    in_flight: FuturesOrdered<Pin<Box<dyn Future<Output = Vec<ServerFrame>> + Send>>>,
}

impl Session {
    /// Queues replies for the delivery; `false` if the client is too slow
    /// to take them (no room within the write timeout) or the delivery is
    /// gone: the session then closes.
    ///
    /// Waiting is boxed: the session's future is held for the connection's
    /// whole life and is as large as its largest state, and a timed wait
    /// would be inlined into every frame the session handles, although a
    /// reply almost always finds room.
    async fn reply_all(&mut self, replies: Vec<ServerFrame>) -> bool {
        let limits = &self.state.config.limits;
        let (max, wait) = (
            limits.outbound_frames_max,
            Duration::from_millis(limits.write_timeout_ms),
        );
        let mut replies = replies.into_iter().map(Box::new);
        let mut refused = None;
        loop {
            let offered = refused.take().into_iter().chain(&mut replies);
            match self.mailbox.push_replies(offered, max) {
                Ok(()) => return true,
                Err(reply) => refused = Some(reply),
            }
            if self.mailbox.has_delivery_ended() {
                return false;
            }
            if Box::pin(timeout(wait, self.mailbox.session_news()))
                .await
                .is_err()
            {
                return false;
            }
            if self.mailbox.close_ordered().is_some() {
                // The main loop closes with the code it was ordered.
                self.mailbox.renotify_session();
                return true;
            }
        }
    }

    /// Answers now, or behind the frames still awaiting their answers.
    async fn answer(&mut self, replies: Replies) -> bool {
        match replies {
            Replies::Now(replies) if self.in_flight.is_empty() => self.reply_all(replies).await,
            Replies::Now(replies) => {
                self.in_flight
                    .push_back(Box::pin(std::future::ready(replies)));
                true
            }
            Replies::Later(replies) => {
                self.in_flight.push_back(replies);
                true
            }
        }
    }

    async fn handle_text(&mut self, text: &str) -> bool {
        let replies = match decode_client_frame(text) {
            Ok(frame) => Box::pin(self.dispatcher.start(frame)).await,
            Err(err) => Replies::Now(vec![ServerFrame::error(err.id, err.code, err.message)]),
        };
        self.answer(replies).await
    }
}

/// Where a handed-over event stands for a connection.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    /// Already written on this connection: drop it.
    Had,
    /// The next seq of its conversation: write it (`after` moved on).
    Next,
    /// Beyond a gap, or in a conversation this connection has not placed:
    /// read the store, which has it and what lies before it.
    Gap,
}

fn place(
    after: &mut HashMap<ConversationId, Seq>,
    conversation: ConversationId,
    seq: Seq,
) -> Placement {
    match after.get_mut(&conversation) {
        Some(at) if seq <= *at => Placement::Had,
        Some(at) if seq == *at + 1 => {
            *at = seq;
            Placement::Next
        }
        _ => Placement::Gap,
    }
}

/// Waits until deliveries may be waiting, or at most `recheck` when the
/// bus may lose wake-ups; `true` when the wait ran out (the store is then
/// read anyway).
pub(super) async fn wait_for_deliveries(mailbox: &Mailbox, recheck: Option<Duration>) -> bool {
    match recheck {
        Some(recheck) => timeout(recheck, mailbox.deliveries_waiting())
            .await
            .is_err(),
        None => {
            mailbox.deliveries_waiting().await;
            false
        }
    }
}

/// Bytes of frames the socket writer gathers before writing; a frame that
/// passes it is written at once. Small, because a connection keeps the
/// buffer's capacity once it has grown.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// What a connection's read buffer starts with (tungstenite allocates it
/// up front and keeps it): an idle connection holds it for nothing, and a
/// frame larger than it grows it as needed (reading at most this much per
/// call).
const READ_BUFFER_BYTES: usize = 1024;

/// How long a slow consumer's socket is kept for its close frame once its
/// write timed out (at most the write timeout itself).
const SLOW_CONSUMER_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Events in a connection's first store read (later reads take a whole
/// page). After a restart every device reconnects at once and the reads
/// queue for the same few reader connections, in order: a short first
/// read lets each device see its first messages before any device reads
/// its second page.
const FIRST_PAGE_EVENTS: usize = 32;

/// Frames gathered in the socket's buffer at most before it is flushed.
const FRAMES_PER_WRITE_MAX: usize = 64;

/// The connection's only writer. It writes what the mailbox holds, in this
/// order: ephemeral frames (so one already waiting goes out before the
/// reply to any client frame read after it, and a ping's pong proves
/// nothing ephemeral was pending), the session's replies, then the events
/// the send path handed over, each written if it is the next seq of its
/// conversation. Before any of them it reads what waits above the
/// device's positions from the store, a page at a time (looking at the
/// mailbox between pages); it reads again for an event beyond a gap (or
/// in a conversation this connection has not placed yet), a wake-up from
/// another node, a full mailbox, or the bus's re-check. `after` is where
/// this connection stands in each conversation, so nothing is written
/// twice on one connection and nothing is skipped. Unacked events come
/// again on the next connection.
async fn deliver(
    state: Arc<AppState>,
    auth: DeviceAuth,
    mailbox: Arc<Mailbox>,
    sink: SplitSink<WebSocket, Message>,
    write_timeout: Duration,
    keepalive: Duration,
) {
    let mut writer = Writer {
        sink,
        write_timeout,
        gathered: 0,
    };
    let mut after: HashMap<ConversationId, Seq> = HashMap::new();
    let mut read_store = true;
    // After a failed store read: not again before this, and the wait
    // before the next one. Replies and live events go on meanwhile.
    let mut retry_at: Option<Instant> = None;
    let mut retry_delay = READ_RETRY_DELAY_MIN;
    let mut page_limit = FIRST_PAGE_EVENTS;
    // Pings go out every keepalive, busy or not: a client that only
    // receives answers them with the pongs that keep its session alive.
    let mut next_ping = Instant::now() + keepalive;
    let ended = loop {
        if Instant::now() >= next_ping {
            next_ping = Instant::now() + keepalive;
            if let Err(end) = writer.write(Message::Ping(Default::default())).await {
                break end;
            }
            if let Err(end) = writer.flush().await {
                break end;
            }
        }
        let read_due = read_store && retry_at.is_none_or(|at| Instant::now() >= at);
        let news = mailbox.take_news();
        if news.is_empty() && !read_due {
            let until = match retry_at.filter(|_| read_store) {
                Some(at) => at.min(next_ping),
                None => next_ping,
            };
            tokio::select! {
                timed_out = wait_for_deliveries(&mailbox, state.bus.recheck_interval()) => {
                    read_store |= timed_out;
                }
                () = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        if let Err(end) = Box::pin(writer.write_news(&news, &mut after, &mut read_store)).await {
            break end;
        }
        if let Some(close) = news.finished {
            if let Some(code) = close {
                let _ = writer.write(close_message(code)).await;
            }
            let _ = writer.flush().await;
            break WriteEnd::Done;
        }
        if read_due {
            // Boxed, as the rest of a catch-up: the task's future is held
            // for the connection's life and is only as large as its waiting.
            match Box::pin(catch_up_page(
                &state.messaging,
                &auth,
                &mut after,
                page_limit,
                &mut writer,
            ))
            .await
            {
                Ok(more) => {
                    read_store = more;
                    page_limit = usize::MAX;
                    retry_at = None;
                    retry_delay = READ_RETRY_DELAY_MIN;
                }
                Err(CatchUpError::Write(end)) => break end,
                Err(CatchUpError::Read) => {
                    // Retried with a bounded backoff rather than left for a
                    // wake-up: a backlog may have no new traffic to cause one.
                    retry_at = Some(Instant::now() + retry_delay);
                    retry_delay = (retry_delay * 2).min(READ_RETRY_DELAY_MAX);
                }
            }
        }
        if let Err(end) = writer.flush().await {
            break end;
        }
    };
    if ended == WriteEnd::SlowConsumer {
        writer.close_slow_consumer().await;
    }
    mailbox.delivery_ended();
}

#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// The session finished and its close frame is written.
    Done,
    /// The socket failed.
    Failed,
    /// A write took longer than the write timeout.
    SlowConsumer,
}

enum CatchUpError {
    Read,
    Write(WriteEnd),
}

/// The socket's sink with its write timeout. Frames are fed into the
/// socket's write buffer and flushed together; a write that passes the
/// buffer (`WRITE_BUFFER_BYTES`) goes out at once.
struct Writer {
    sink: SplitSink<WebSocket, Message>,
    write_timeout: Duration,
    /// Frames fed since the last flush.
    gathered: usize,
}

impl Writer {
    async fn write(&mut self, message: Message) -> Result<(), WriteEnd> {
        match timeout(self.write_timeout, self.sink.feed(message)).await {
            Ok(Ok(())) => {
                self.gathered += 1;
                Ok(())
            }
            Ok(Err(_)) => Err(WriteEnd::Failed),
            Err(_) => Err(WriteEnd::SlowConsumer),
        }
    }

    async fn write_text(&mut self, text: Utf8Bytes) -> Result<(), WriteEnd> {
        self.write(Message::Text(text)).await?;
        if self.gathered >= FRAMES_PER_WRITE_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), WriteEnd> {
        if self.gathered == 0 {
            return Ok(());
        }
        metrics::counter!("missive_frames_out_total").increment(self.gathered as u64);
        self.gathered = 0;
        match timeout(self.write_timeout, self.sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteEnd::Failed),
            Err(_) => Err(WriteEnd::SlowConsumer),
        }
    }

    /// Writes the ephemeral frames, the replies, and the handed-over events
    /// that are next in their conversations; one beyond a gap asks for a
    /// store read instead.
    async fn write_news(
        &mut self,
        news: &News,
        after: &mut HashMap<ConversationId, Seq>,
        read_store: &mut bool,
    ) -> Result<(), WriteEnd> {
        *read_store |= news.read_store;
        for frame in &news.ephemeral {
            self.write_text(frame.as_ref().into()).await?;
        }
        for reply in &news.replies {
            self.write_text(reply.to_json().into()).await?;
        }
        if news.finished.is_some() {
            // The session is over: nothing more is delivered on it.
            return Ok(());
        }
        let mut delivered = 0;
        for event in &news.events {
            match place(after, event.conversation, event.seq) {
                Placement::Had => {}
                Placement::Next => {
                    self.write_text(event.frame.as_ref().into()).await?;
                    delivered += 1;
                }
                // The rest of its conversation comes from the store.
                Placement::Gap => *read_store = true,
            }
        }
        metrics::counter!("missive_deliveries_total").increment(delivered);
        Ok(())
    }

    /// What was being written stays in the sink's buffer and the close
    /// frame goes after it: the client learns why if it reads again within
    /// the grace (its socket is held no longer than that).
    async fn close_slow_consumer(mut self) {
        metrics::counter!("missive_slow_consumer_closes_total").increment(1);
        tracing::info!("closing a slow consumer; its queue is kept");
        let _ = timeout(
            self.write_timeout.min(SLOW_CONSUMER_CLOSE_GRACE),
            self.sink.send(close_message(CloseCode::SlowConsumer)),
        )
        .await;
    }
}

/// Writes one page of what waits above `after` in the store, moving
/// `after` on; `Ok(true)` when more waits.
async fn catch_up_page(
    messaging: &Messaging,
    auth: &DeviceAuth,
    after: &mut HashMap<ConversationId, Seq>,
    limit: usize,
    writer: &mut Writer,
) -> Result<bool, CatchUpError> {
    let positions = after.iter().map(|(c, s)| (*c, *s)).collect();
    metrics::counter!("missive_catch_up_reads_total").increment(1);
    let page = match messaging.pending(auth, positions, limit).await {
        Ok(page) => page,
        Err(err) => {
            tracing::warn!(
                code = err.code.as_str(),
                "reading what waits failed; retrying"
            );
            return Err(CatchUpError::Read);
        }
    };
    after.extend(page.scanned);
    let delivered = page.items.len() as u64;
    for item in page.items {
        writer
            .write_text(pending_frame(item).to_json().into())
            .await
            .map_err(CatchUpError::Write)?;
    }
    metrics::counter!("missive_deliveries_total").increment(delivered);
    Ok(page.more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_over_event_is_written_only_as_the_next_seq() {
        // Goal: nothing written twice, nothing written past a gap, and an
        // unplaced conversation goes to the store; only `Next` moves on.
        let (seven, eight) = (ConversationId(7), ConversationId(8));
        let mut after = HashMap::from([(seven, 4)]);
        assert_eq!(place(&mut after, seven, 4), Placement::Had);
        assert_eq!(place(&mut after, seven, 3), Placement::Had);
        assert_eq!(place(&mut after, seven, 6), Placement::Gap);
        assert_eq!(after[&seven], 4, "a gap moves nothing");
        assert_eq!(place(&mut after, seven, 5), Placement::Next);
        assert_eq!(after[&seven], 5);
        assert_eq!(place(&mut after, seven, 5), Placement::Had);
        assert_eq!(place(&mut after, eight, 1), Placement::Gap);
        assert!(!after.contains_key(&eight));
    }
}
