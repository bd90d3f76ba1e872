//! One WebSocket connection, one task: authenticate with the first frame,
//! then one loop that
//! - reads and decodes client frames and answers them in frame order;
//!   sends are queued in the store's write order and answered once stored,
//!   with up to `FRAMES_IN_FLIGHT_MAX` frames awaiting their answers, so
//!   one connection's sends share commits;
//! - writes what the connection's [`Mailbox`] holds: ephemeral frames, and
//!   the committed events the send path handed over, each if it is the
//!   next seq of its conversation;
//! - reads what waits above the device's positions from the Store, a page
//!   at a time, in seq order per conversation, when it must (on connect,
//!   beyond a gap, on a wake-up from another node or the bus's re-check),
//!   so catching up and live delivery are one path with no gap and no
//!   reorder;
//! - pings on keepalive and closes a connection silent for three of them.
//!
//! A write stuck for `write_timeout_ms` closes the connection as a slow
//! consumer (its messages wait for the next one). An idle connection is
//! this task's future parked on its socket, its mailbox and one timer:
//! there is no task per direction.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use missive_core::model::{DeviceAuth, Pending, ToDeviceMessage};
use missive_core::{ConversationId, Seq};
use missive_proto::{CloseCode, ErrorCode, ServerFrame, decode_client_frame};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

mod handshake;

use self::handshake::{authenticate, connect_step, open};
use super::connections::Slot;
use super::dispatch::{Dispatcher, Replies};
use super::web;
use crate::AppState;
use crate::accept::Admitted;
use crate::mailbox::Mailbox;
use crate::service::ServiceError;
use crate::service::keys::{TO_DEVICE_PAGE, to_device_frame};
use crate::wire::pending_frame;

/// Client frames read but not yet answered, at most; the connection reads
/// on once the oldest is answered (docs/PROTOCOL.md, "Sends in flight").
const FRAMES_IN_FLIGHT_MAX: usize = 32;

/// The longest a ping waits for the shared beat.
const BEAT_MAX: Duration = Duration::from_secs(1);

/// `at` moved to the next beat: a whole number of beats (a quarter
/// keepalive, at most [`BEAT_MAX`]) since the server started. Pings then
/// fall due together, so one wake of a runtime thread writes every ping of
/// a beat and the pongs come back together, where a deadline of its own per
/// connection woke a thread for each ping and again for each pong (most of
/// an idle server's CPU: the kernel's scheduling of those wakes).
fn on_beat(started: Instant, keepalive: Duration, at: Instant) -> Instant {
    let beat = (keepalive / 4).clamp(Duration::from_millis(1), BEAT_MAX);
    let since = at.saturating_duration_since(started);
    let beats = since.as_nanos().div_ceil(beat.as_nanos());
    started + beat.saturating_mul(u32::try_from(beats).unwrap_or(u32::MAX))
}

/// Backoff bounds when the connection cannot read what waits.
const READ_RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
const READ_RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

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

/// `GET /v1/ws`: upgrade with bounded buffers (DESIGN.md §4). Refused
/// before the upgrade when the node or the client's address has its
/// maximum of connections; the account's maximum can only be checked once
/// `auth` names it (see `handshake::open`).
pub(super) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    admitted: Option<axum::Extension<Arc<Admitted>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !web::origin_allowed(&headers, &state.config.web.allowed_origins) {
        return ServiceError::new(
            ErrorCode::OriginNotAllowed,
            "pages from this origin may not open a WebSocket here (see web.allowed_origins)",
        )
        .into_response();
    }
    if state.shutdown.is_cancelled() {
        return ServiceError::new(ErrorCode::ShuttingDown, "the server is shutting down")
            .into_response();
    }
    let Ok(permit) = state.connection_permits.clone().try_acquire_owned() else {
        return ServiceError::new(ErrorCode::RateLimited, "too many connections").into_response();
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
        .on_upgrade(move |mut socket| {
            // The socket is the session's now: so is its admission.
            let admitted = admitted.map(|axum::Extension(admitted)| admitted);
            // The socket stays here, and the session borrows it: an async
            // fn keeps room for its arguments for its whole life, and a
            // socket moved into one would be held twice.
            async move {
                serve(&mut socket, state, permit, ip_slot, admitted).await;
                drop(session_guard);
            }
        })
}

/// The connection's life. Every one-off step is boxed and every local it
/// needs only for a while lives in a block: a future is as large as its
/// largest state, and this one is held as long as the connection.
async fn serve(
    socket: &mut WebSocket,
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
    ip_slot: Slot,
    admitted: Option<Arc<Admitted>>,
) {
    let upgraded = Instant::now();
    let Some(checked) = Box::pin(authenticate(socket, &state)).await else {
        return;
    };
    connect_step("authenticated", upgraded);
    if let Some(admitted) = &admitted {
        admitted.authenticated();
    }
    let (account, device) = (checked.auth.account, checked.auth.device);
    let span = tracing::info_span!("session", account = %account, device = %device);
    let Some((mut live, auth)) = Box::pin(open(socket, &state, checked, ip_slot))
        .instrument(span.clone())
        .await
    else {
        return;
    };
    connect_step("ready", upgraded);
    // From `ready` to the end: the loop, the close, leaving the router.
    let mailbox = Arc::clone(&live.registration().mailbox);
    let mut connection = Connection::new(socket, state, auth, mailbox);
    let end = connection.run().instrument(span).await;
    Box::pin(connection.finish(end)).await;
    drop(connection);
    Box::pin(live.end()).await;
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

/// Answers to frames already read, in frame order.
type Answer = Pin<Box<dyn Future<Output = Vec<ServerFrame>> + Send>>;
/// One step of writing to the socket: `poll_ready` or `poll_flush`.
type SocketStep = fn(&mut WebSocket, &mut Context<'_>) -> Poll<Result<(), axum::Error>>;
/// A store read of what waits, in progress.
type PageRead = Pin<Box<dyn Future<Output = Result<Page, ServiceError>> + Send>>;

/// What one store read found: events above the connection's places, and
/// to-device messages above the last one it wrote.
struct Page {
    pending: Pending,
    to_device: Vec<ToDeviceMessage>,
}

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Write what is gathered, then this close frame (if any).
    Close(Option<CloseCode>),
    /// The socket failed.
    Failed,
    /// A write took longer than the write timeout.
    SlowConsumer,
}

/// What woke the connection.
enum Step {
    News,
    Close(CloseCode),
    Answered(Vec<ServerFrame>),
    Page(Result<Page, ServiceError>),
    Incoming(Option<Result<Message, axum::Error>>),
    Timer,
}

/// An authenticated connection: its socket, its mailbox, and where it
/// stands.
struct Connection<'a> {
    socket: &'a mut WebSocket,
    state: Arc<AppState>,
    mailbox: Arc<Mailbox>,
    dispatcher: Dispatcher,
    /// Answers awaited, in frame order; made when a frame needs one and
    /// dropped once all are written (it allocates when made, and almost
    /// every connection is idle almost all the time).
    in_flight: Option<FuturesOrdered<Answer>>,
    /// Where this connection stands in each conversation: nothing is
    /// written twice on one connection and nothing is skipped. Unacked
    /// events come again on the next connection.
    after: HashMap<ConversationId, Seq>,
    /// The last to-device message written on this connection; unacked
    /// ones come again on the next connection.
    to_device_after: i64,
    /// The store may hold more than this connection has written.
    read_store: bool,
    /// While a read is in progress, handed-over events stay in the mailbox
    /// (they are placed once the page has moved `after` on).
    reading: Option<PageRead>,
    /// After a failed store read: not again before this, and the wait
    /// before the next one. Replies and live events go on meanwhile.
    retry_at: Option<Instant>,
    retry_delay: Duration,
    page_limit: usize,
    /// Frames fed into the socket since the last flush.
    gathered: usize,
    /// Pings go out every keepalive, busy or not: a client that only
    /// receives answers them with the pongs that keep its session alive.
    next_ping: Instant,
    /// A client silent for three keepalives is gone.
    idle_deadline: Instant,
}

impl<'a> Connection<'a> {
    fn new(
        socket: &'a mut WebSocket,
        state: Arc<AppState>,
        auth: DeviceAuth,
        mailbox: Arc<Mailbox>,
    ) -> Self {
        let now = Instant::now();
        let keepalive = Duration::from_secs(state.config.limits.keepalive_secs);
        let next_ping = on_beat(state.started, keepalive, now + keepalive);
        Self {
            socket,
            dispatcher: Dispatcher::new(Arc::clone(&state), auth),
            state,
            mailbox,
            in_flight: None,
            after: HashMap::new(),
            to_device_after: 0,
            read_store: true,
            reading: None,
            retry_at: None,
            retry_delay: READ_RETRY_DELAY_MIN,
            page_limit: FIRST_PAGE_EVENTS,
            gathered: 0,
            next_ping,
            idle_deadline: now + keepalive * 3,
        }
    }

    fn keepalive(&self) -> Duration {
        Duration::from_secs(self.state.config.limits.keepalive_secs)
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.state.config.limits.write_timeout_ms)
    }

    /// Until the connection ends: wait for whatever comes first, handle it,
    /// write what it produced.
    async fn run(&mut self) -> End {
        loop {
            // Checked on every turn: a flood of client frames must not
            // delay a revocation.
            if let Some(code) = self.mailbox.close_ordered() {
                return End::Close(Some(code));
            }
            let now = Instant::now();
            if now >= self.idle_deadline {
                return End::Close(Some(CloseCode::IdleTimeout));
            }
            if now >= self.next_ping {
                self.next_ping =
                    on_beat(self.state.started, self.keepalive(), now + self.keepalive());
                if let Err(end) = self.write(Message::Ping(Default::default())).await {
                    return end;
                }
            }
            if self.read_store && self.reading.is_none() && self.retry_at.is_none_or(|at| now >= at)
            {
                self.start_read();
            }
            if let Err(end) = self.flush().await {
                return end;
            }
            let wake_at = self.wake_at();
            let step = tokio::select! {
                () = self.mailbox.news() => Step::News,
                _ = self.state.shutdown.cancelled() => Step::Close(CloseCode::GoingAway),
                Some(replies) = next_answer(&mut self.in_flight), if self.in_flight.is_some() => {
                    Step::Answered(replies)
                }
                page = read(&mut self.reading), if self.reading.is_some() => Step::Page(page),
                incoming = self.socket.next(), if self.answers_awaited() < FRAMES_IN_FLIGHT_MAX => {
                    Step::Incoming(incoming)
                }
                () = tokio::time::sleep_until(wake_at) => Step::Timer,
            };
            let handled = match step {
                Step::News => self.write_mailbox(Vec::new()).await,
                Step::Close(code) => Err(End::Close(Some(code))),
                Step::Answered(replies) => self.write_answers(replies).await,
                Step::Page(page) => Box::pin(self.write_page(page)).await,
                Step::Incoming(incoming) => self.handle_incoming(incoming).await,
                Step::Timer => Ok(()),
            };
            if let Err(end) = handled {
                return end;
            }
        }
    }

    /// The earliest of the next ping, the idle deadline and a read's retry.
    fn wake_at(&self) -> Instant {
        let at = self.next_ping.min(self.idle_deadline);
        if self.read_store && self.reading.is_none() {
            return self.retry_at.map_or(at, |retry| at.min(retry));
        }
        at
    }

    async fn handle_incoming(
        &mut self,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Result<(), End> {
        self.idle_deadline = Instant::now() + self.keepalive() * 3;
        let replies = match incoming {
            Some(Ok(Message::Text(text))) => {
                metrics::counter!("missive_frames_in_total").increment(1);
                match decode_client_frame(&text) {
                    Ok(frame) => Box::pin(self.dispatcher.start(frame)).await,
                    Err(err) => {
                        Replies::Now(vec![ServerFrame::error(err.id, err.code, err.message)])
                    }
                }
            }
            Some(Ok(Message::Binary(_))) => Replies::Now(vec![ServerFrame::error(
                None,
                ErrorCode::BadFrame,
                "binary frames are not supported; send JSON text",
            )]),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
            Some(Ok(Message::Close(_))) | None => return Err(End::Close(None)),
            Some(Err(err)) => {
                tracing::debug!(%err, "websocket read failed");
                return Err(End::Close(read_failure_close(&err)));
            }
        };
        self.answer(replies).await
    }

    /// Answers now, or behind the frames still awaiting their answers.
    async fn answer(&mut self, replies: Replies) -> Result<(), End> {
        match replies {
            Replies::Now(replies) if self.in_flight.is_none() => self.write_mailbox(replies).await,
            Replies::Now(replies) => {
                self.await_answer(Box::pin(std::future::ready(replies)));
                Ok(())
            }
            Replies::Later(replies) => {
                self.await_answer(replies);
                Ok(())
            }
        }
    }

    fn answers_awaited(&self) -> usize {
        self.in_flight.as_ref().map_or(0, FuturesOrdered::len)
    }

    fn await_answer(&mut self, answer: Answer) {
        self.in_flight
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(answer);
    }

    /// Writes these answers and any others already there, in frame order.
    async fn write_answers(&mut self, mut replies: Vec<ServerFrame>) -> Result<(), End> {
        if let Some(in_flight) = &mut self.in_flight {
            while let Some(Some(more)) = in_flight.next().now_or_never() {
                replies.extend(more);
            }
            if in_flight.is_empty() {
                self.in_flight = None;
            }
        }
        self.write_mailbox(replies).await
    }

    /// Writes, in this order: the ephemeral frames waiting (so one already
    /// waiting goes out before the reply to any client frame read after
    /// it, and a ping's pong proves nothing ephemeral was pending),
    /// `replies`, then the handed-over events that are next in their
    /// conversations; one beyond a gap asks for a store read instead.
    /// While a read is in progress the events wait in the mailbox.
    async fn write_mailbox(&mut self, replies: Vec<ServerFrame>) -> Result<(), End> {
        let (ephemeral, deliveries) = self.mailbox.take(self.reading.is_none());
        for frame in &ephemeral {
            self.write(Message::Text(frame.as_ref().into())).await?;
        }
        // Encoded as they go: a frame held across the write would be held
        // in the connection's future for its whole life.
        for text in replies.into_iter().map(|reply| reply.to_json()) {
            self.write(Message::Text(text.into())).await?;
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        self.read_store |= deliveries.read_store;
        let mut delivered = 0;
        for event in &deliveries.events {
            match place(&mut self.after, event.conversation, event.seq) {
                Placement::Had => {}
                Placement::Next => {
                    self.write(Message::Text(event.frame.as_ref().into()))
                        .await?;
                    delivered += 1;
                }
                // The rest of its conversation comes from the store.
                Placement::Gap => self.read_store = true,
            }
        }
        metrics::counter!("missive_deliveries_total").increment(delivered);
        Ok(())
    }

    /// Starts reading one page of what waits above `after`.
    fn start_read(&mut self) {
        let state = Arc::clone(&self.state);
        let (account, device) = (self.dispatcher.auth.account, self.dispatcher.auth.device);
        let positions = self.after.iter().map(|(c, s)| (*c, *s)).collect();
        let limit = self.page_limit;
        let to_device_after = self.to_device_after;
        metrics::counter!("missive_catch_up_reads_total").increment(1);
        self.reading = Some(Box::pin(async move {
            let (pending, to_device) = tokio::join!(
                state.messaging.pending(account, device, positions, limit),
                state
                    .keys
                    .to_device_waiting(device, to_device_after, TO_DEVICE_PAGE)
            );
            Ok(Page {
                pending: pending?,
                to_device: to_device?,
            })
        }));
    }

    /// Writes a page read from the store, moving `after` on, then what
    /// the mailbox kept meanwhile. A failed read is retried with a bounded
    /// backoff rather than left for a wake-up: a backlog may have no new
    /// traffic to cause one.
    async fn write_page(&mut self, page: Result<Page, ServiceError>) -> Result<(), End> {
        self.reading = None;
        let now = Instant::now();
        match page {
            Ok(Page {
                pending: page,
                to_device,
            }) => {
                self.after.extend(page.scanned);
                self.read_store = page.more || to_device.len() >= TO_DEVICE_PAGE;
                if let Some(last) = to_device.last() {
                    self.to_device_after = last.seq;
                }
                for message in to_device {
                    self.write(Message::Text(to_device_frame(message).to_json().into()))
                        .await?;
                }
                self.page_limit = usize::MAX;
                self.retry_at = None;
                self.retry_delay = READ_RETRY_DELAY_MIN;
                let delivered = page.items.len() as u64;
                for item in page.items {
                    self.write(Message::Text(pending_frame(item).to_json().into()))
                        .await?;
                }
                metrics::counter!("missive_deliveries_total").increment(delivered);
            }
            Err(err) => {
                tracing::warn!(
                    code = err.code.as_str(),
                    "reading what waits failed; retrying"
                );
                self.retry_at = Some(now + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(READ_RETRY_DELAY_MAX);
            }
        }
        self.write_mailbox(Vec::new()).await
    }

    /// Feeds one frame into the socket's buffer; a full buffer is flushed.
    async fn write(&mut self, message: Message) -> Result<(), End> {
        self.socket_step(SinkExt::poll_ready_unpin).await?;
        self.socket
            .start_send_unpin(message)
            .map_err(|_| End::Failed)?;
        self.gathered += 1;
        if self.gathered >= FRAMES_PER_WRITE_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is gathered.
    async fn flush(&mut self) -> Result<(), End> {
        if self.gathered == 0 {
            return Ok(());
        }
        metrics::counter!("missive_frames_out_total").increment(self.gathered as u64);
        self.gathered = 0;
        self.socket_step(SinkExt::poll_flush_unpin).await
    }

    /// Room for a frame, or a flush, within the write timeout. The socket
    /// almost always can go on at once: only waiting is boxed (a timed wait
    /// inlined here would be inlined into every caller, and the
    /// connection's future is as large as its largest state).
    async fn socket_step(&mut self, step: SocketStep) -> Result<(), End> {
        let done = match poll_fn(|cx| step(self.socket, cx)).now_or_never() {
            Some(done) => done,
            None => {
                let write_timeout = self.write_timeout();
                let waited = poll_fn(|cx| step(self.socket, cx));
                match Box::pin(timeout(write_timeout, waited)).await {
                    Ok(done) => done,
                    Err(_) => return Err(End::SlowConsumer),
                }
            }
        };
        done.map_err(|_| End::Failed)
    }

    /// Sends still in flight are stored whatever happens to this
    /// connection: they finish on a task of their own, which hands them to
    /// their recipients (their `sent` is lost with the connection, and a
    /// retry answers `duplicate`). Then the close frame, after what is
    /// already gathered, within one bound; a slow consumer's socket is
    /// held only for the grace.
    async fn finish(&mut self, end: End) {
        if let Some(in_flight) = self.in_flight.take() {
            tokio::spawn(in_flight.for_each(|_| async {}));
        }
        match end {
            End::Close(close) => {
                if let Some(code) = close {
                    tracing::debug!(reason = code.reason(), "closing session");
                }
                let bound = 2 * self.write_timeout();
                let _ = timeout(bound, async {
                    if let Some(code) = close {
                        self.write(close_message(code)).await?;
                    }
                    self.flush().await
                })
                .await;
            }
            End::Failed => {}
            End::SlowConsumer => {
                metrics::counter!("missive_slow_consumer_closes_total").increment(1);
                tracing::info!("closing a slow consumer; its queue is kept");
                let grace = self.write_timeout().min(SLOW_CONSUMER_CLOSE_GRACE);
                let _ = timeout(
                    grace,
                    self.socket.send(close_message(CloseCode::SlowConsumer)),
                )
                .await;
            }
        }
    }
}

/// The next answer awaited, if any (the branch that polls it is enabled
/// only then).
async fn next_answer(in_flight: &mut Option<FuturesOrdered<Answer>>) -> Option<Vec<ServerFrame>> {
    match in_flight {
        Some(in_flight) => in_flight.next().await,
        None => std::future::pending().await,
    }
}

/// The read in progress, if any (the branch that polls it is enabled only
/// then).
async fn read(reading: &mut Option<PageRead>) -> Result<Page, ServiceError> {
    match reading {
        Some(read) => read.await,
        None => std::future::pending().await,
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

    #[test]
    fn pings_fall_due_on_a_shared_beat() {
        // Goal: a ping deadline moves to the next beat (a quarter keepalive,
        // at most a second), never earlier, so deadlines of connections
        // opened at different moments coincide.
        let started = Instant::now();
        let keepalive = Duration::from_secs(30);
        let at = |ms: u64| started + Duration::from_millis(ms);
        assert_eq!(on_beat(started, keepalive, at(30_000)), at(30_000));
        assert_eq!(on_beat(started, keepalive, at(30_001)), at(31_000));
        assert_eq!(on_beat(started, keepalive, at(30_999)), at(31_000));
        let short = Duration::from_secs(1);
        assert_eq!(on_beat(started, short, at(1_010)), at(1_250));
    }
}
