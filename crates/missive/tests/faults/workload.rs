//! The fault suite's clients: devices that send numbered texts and read
//! (and ack, cumulatively per conversation, once per burst) every event
//! above their positions, over WebSocket or long-poll, and
//! that reconnect — to another node when theirs is gone — until told to
//! stop. Each records what it did into the [`History`] the checker reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use missive_client::{Api, ClientError, Connection};
use missive_proto::{ClientFrame, ErrorCode, ServerFrame};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checker::{History, client_msg_id, payload};

/// How long one call may take before the client gives up on it and
/// reconnects (a node that stopped answering looks like this).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for a node to come back before retrying anyway.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The nodes' base URLs as clients see them; `None` while a node is down.
/// A client prefers its home node and moves to the next live one when its
/// home is gone, as behind a load balancer.
#[derive(Clone)]
pub(crate) struct Nodes {
    urls: Arc<watch::Sender<Vec<Option<String>>>>,
}

impl Nodes {
    pub(crate) fn new(urls: Vec<String>) -> Self {
        Self {
            urls: Arc::new(watch::Sender::new(urls.into_iter().map(Some).collect())),
        }
    }

    pub(crate) fn set(&self, node: usize, url: Option<String>) {
        self.urls.send_modify(|urls| urls[node] = url);
    }

    /// The `attempt`-th choice for a client whose home is `home`.
    fn pick(&self, home: usize, attempt: usize) -> Option<String> {
        let urls = self.urls.borrow();
        let live: Vec<&String> = (0..urls.len())
            .filter_map(|i| urls[(home + i) % urls.len()].as_ref())
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[attempt % live.len()].clone())
    }

    /// Waits until the set of nodes changes, or `RETRY_PAUSE` passes.
    async fn changed(&self) {
        let mut seen = self.urls.subscribe();
        let _ = tokio::time::timeout(RETRY_PAUSE, seen.changed()).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Transport {
    WebSocket,
    LongPoll,
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    User(String),
    Conversation(i64),
}

/// One logged-in device of the workload.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub label: String,
    pub username: String,
    pub token: String,
    pub device_id: i64,
    pub transport: Transport,
    /// The node it connects to first.
    pub home: usize,
    /// What it sends to, if it sends, and who must receive it.
    pub sends: Option<(Target, Vec<String>)>,
    /// Not run by the workload (a test drives it), but drained and checked.
    pub offline: bool,
}

/// `payload`, then a space and filler up to `pad` bytes.
fn padded(mut payload: String, pad: usize) -> String {
    if payload.len() < pad {
        payload.push(' ');
        let fill = pad.saturating_sub(payload.len());
        payload.extend(std::iter::repeat_n('x', fill));
    }
    payload
}

/// Running device tasks.
pub(crate) struct Workload {
    pub history: Arc<History>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts every device; senders send one text per `pace`.
    pub(crate) fn start(devices: &[Device], nodes: &Nodes, pace: Duration) -> Self {
        Self::start_padded(devices, nodes, pace, 0)
    }

    /// Like [`Workload::start`], each text padded to at least `pad` bytes.
    /// Devices listed with `offline` are known to the checker (they must
    /// receive, and are drained at the end) but are not run.
    pub(crate) fn start_padded(
        devices: &[Device],
        nodes: &Nodes,
        pace: Duration,
        pad: usize,
    ) -> Self {
        let history = Arc::new(History::default());
        for device in devices {
            history.device(&device.label, device.device_id);
        }
        let stop = CancellationToken::new();
        let tasks = devices
            .iter()
            .filter(|device| !device.offline)
            .map(|device| {
                let client = Client {
                    device: device.clone(),
                    nodes: nodes.clone(),
                    history: history.clone(),
                    stop: stop.clone(),
                    pace,
                    pad,
                    counter: 0,
                    attempted: false,
                };
                tokio::spawn(client.run())
            })
            .collect();
        Self {
            history,
            stop,
            tasks,
        }
    }

    /// Waits until `more` further texts have been acknowledged; fails after
    /// `within` (the workload stalled).
    pub(crate) async fn progress(&self, more: usize, within: Duration) {
        let target = self.history.acknowledged() + more;
        wait_for(
            self.history.subscribe(),
            target,
            within,
            "acknowledged texts",
        )
        .await;
    }

    /// Waits until `more` further connections have been opened; returns how
    /// long that took.
    pub(crate) async fn connects(&self, more: usize, within: Duration) -> Duration {
        let started = Instant::now();
        let mut connects = self.history.subscribe_connects();
        let target = *connects.borrow_and_update() + more;
        wait_for(connects, target, within, "connections").await;
        started.elapsed()
    }

    /// Waits until `more` further calls have been refused as unavailable.
    pub(crate) async fn refusals(&self, more: usize, within: Duration) {
        let mut refusals = self.history.subscribe_refusals();
        let target = *refusals.borrow_and_update() + more;
        wait_for(refusals, target, within, "refusals").await;
    }

    /// Stops every device and waits for them.
    pub(crate) async fn stop(self) -> Arc<History> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("a workload device failed");
        }
        self.history
    }
}

async fn wait_for(mut count: watch::Receiver<usize>, target: usize, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while *count.borrow_and_update() < target {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            tokio::time::timeout(left, count.changed()).await.is_ok(),
            "the workload stalled at {} {what}, waiting for {target}",
            *count.borrow()
        );
    }
}

struct Client {
    device: Device,
    nodes: Nodes,
    history: Arc<History>,
    stop: CancellationToken,
    pace: Duration,
    pad: usize,
    /// The next text to send; `attempted` once it has been tried.
    counter: u64,
    attempted: bool,
}

/// What ended one connection.
enum End {
    Stopped,
    Broken,
}

impl Client {
    async fn run(mut self) {
        let mut attempt = 0;
        while !self.stop.is_cancelled() {
            let Some(url) = self.nodes.pick(self.device.home, attempt) else {
                self.nodes.changed().await;
                continue;
            };
            let end = match self.device.transport {
                Transport::WebSocket => self.websocket(&url).await,
                Transport::LongPoll => self.long_poll(&url).await,
            };
            match end {
                End::Stopped => return,
                End::Broken => {
                    self.history.reconnected();
                    attempt += 1;
                    self.nodes.changed().await;
                }
            }
        }
    }

    /// The next send and its correlation id, if this device sends.
    fn frame(&mut self) -> Option<(String, ClientFrame)> {
        let (target, recipients) = self.device.sends.as_ref()?;
        if !self.attempted {
            self.history
                .attempt(&self.device.label, self.counter, recipients);
            self.attempted = true;
        }
        let (to, conversation) = match target {
            Target::User(user) => (Some(user.clone()), None),
            Target::Conversation(id) => (None, Some(*id)),
        };
        let id = format!("s{}", self.counter);
        Some((
            id.clone(),
            ClientFrame::Send {
                id: Some(id),
                to,
                conversation,
                client_msg_id: client_msg_id(&self.device.label, self.counter),
                text: padded(payload(&self.device.label, self.counter), self.pad),
                reply_to: None,
                media: Vec::new(),
                encrypted: false,
            },
        ))
    }

    /// The reply to a send: acknowledged (next text), refused for a
    /// passing reason (same text again), or a broken connection.
    fn settle(&mut self, reply: Result<ServerFrame, ClientError>) -> Result<(), End> {
        match reply {
            Ok(sent @ ServerFrame::Sent { .. }) => {
                self.history.sent(&self.device.label, self.counter, &sent);
                self.counter += 1;
                self.attempted = false;
                Ok(())
            }
            Ok(other) => panic!("{}: unexpected reply {other:?}", self.device.label),
            Err(ClientError::Refused {
                code: ErrorCode::Unavailable | ErrorCode::ShuttingDown,
                ..
            }) => {
                self.history.refused();
                Ok(())
            }
            Err(ClientError::Refused { code, message }) => panic!(
                "{}: send refused: {} {message}",
                self.device.label,
                code.as_str()
            ),
            Err(_) => Err(End::Broken),
        }
    }

    /// A failed poll or ack: a passing refusal or a broken connection means
    /// reconnecting; any other refusal is a defect the test reports.
    fn failed(&self, what: &str, err: ClientError) -> End {
        match err {
            ClientError::Refused {
                code: ErrorCode::Unavailable | ErrorCode::ShuttingDown,
                ..
            } => {
                self.history.refused();
                End::Broken
            }
            ClientError::Refused { code, message } => panic!(
                "{}: {what} refused: {} {message}",
                self.device.label,
                code.as_str()
            ),
            _ => End::Broken,
        }
    }

    async fn websocket(&mut self, url: &str) -> End {
        let ws_url = missive_client::ws_url(url);
        let connected = tokio::time::timeout(
            CALL_TIMEOUT,
            Connection::connect(&ws_url, &self.device.token),
        )
        .await;
        let Ok(Ok(mut connection)) = connected else {
            return End::Broken;
        };
        self.history.connected();
        let mut pace = tokio::time::interval(self.pace);
        loop {
            // Read what has arrived (a burst); a receiver waits for the
            // first frame. Then one cumulative ack per conversation, with
            // the highest seq the burst brought there, without an id: the
            // server answers only a refusal, which a later burst reads.
            let mut wait = if self.device.sends.is_some() {
                Duration::ZERO
            } else {
                self.pace.max(Duration::from_millis(100))
            };
            let mut acks = Acks::default();
            loop {
                match tokio::select! {
                    frame = connection.next_frame(wait) => frame,
                    () = self.stop.cancelled() => return End::Stopped,
                } {
                    Ok(ServerFrame::Error {
                        id: None,
                        code,
                        message,
                        ..
                    }) => self.ack_refused(code, &message),
                    Ok(frame) => {
                        wait = Duration::ZERO;
                        self.history.read(&self.device.label, &frame);
                        acks.received(&frame);
                    }
                    Err(ClientError::Timeout) => break,
                    Err(_) => return End::Broken,
                }
            }
            for (conversation, seq) in acks.take() {
                match tokio::time::timeout(CALL_TIMEOUT, connection.ack_quietly(conversation, seq))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => return self.failed("ack", err),
                    Err(_) => return End::Broken,
                }
            }
            if self.stop.is_cancelled() {
                return End::Stopped;
            }
            let Some((id, frame)) = self.frame() else {
                continue;
            };
            pace.tick().await;
            let reply =
                match tokio::time::timeout(CALL_TIMEOUT, connection.request(&frame, &id)).await {
                    Ok(reply) => reply,
                    Err(_) => return End::Broken,
                };
            if let Err(end) = self.settle(reply) {
                return end;
            }
        }
    }

    async fn long_poll(&mut self, url: &str) -> End {
        let api = Api::new(url);
        // What the last poll brought, acked in the next poll's body.
        let mut acks = Acks::default();
        let mut pace = tokio::time::interval(self.pace);
        let mut answered = false;
        loop {
            let wait_ms = if self.device.sends.is_some() { 0 } else { 200 };
            let points = acks.points();
            let polled = tokio::select! {
                polled = tokio::time::timeout(
                    CALL_TIMEOUT,
                    api.poll(&self.device.token, &points, wait_ms),
                ) => polled,
                () = self.stop.cancelled() => return End::Stopped,
            };
            let response = match polled {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => return self.failed("poll", err),
                Err(_) => return End::Broken,
            };
            // The acks are applied (positions never move back): only what
            // this poll brought needs acking next time.
            acks = Acks::default();
            if !answered {
                answered = true;
                self.history.connected();
            }
            for frame in &response.frames {
                self.history.read(&self.device.label, frame);
                acks.received(frame);
            }
            if response.closed.is_some() {
                return End::Broken;
            }
            if self.stop.is_cancelled() {
                return End::Stopped;
            }
            let Some((_, frame)) = self.frame() else {
                continue;
            };
            pace.tick().await;
            let reply =
                match tokio::time::timeout(CALL_TIMEOUT, api.frame(&self.device.token, &frame))
                    .await
                {
                    Ok(Ok(frames)) => frames
                        .into_iter()
                        .find(|frame| matches!(frame, ServerFrame::Sent { .. }))
                        .ok_or_else(|| ClientError::Protocol("no sent reply".into())),
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(ClientError::Timeout),
                };
            if let Err(end) = self.settle(reply) {
                return end;
            }
        }
    }

    /// An `error` without an id: the answer to a quiet ack. A passing
    /// refusal (the store unavailable) moved nothing, and the next burst's
    /// cumulative ack covers the same events; anything else is a defect.
    fn ack_refused(&self, code: ErrorCode, message: &str) {
        match code {
            ErrorCode::Unavailable | ErrorCode::ShuttingDown => self.history.refused(),
            code => panic!(
                "{}: ack refused: {} {message}",
                self.device.label,
                code.as_str()
            ),
        }
    }
}

/// The cumulative acks a burst of frames calls for: per conversation, the
/// highest seq a stored event (`message`, or the end of an `expired` range)
/// brought there. Receipts, typing and presence have nothing to ack.
#[derive(Default)]
struct Acks(BTreeMap<i64, i64>);

impl Acks {
    fn received(&mut self, frame: &ServerFrame) {
        if let Some((conversation, seq)) = frame.ack_point() {
            let highest = self.0.entry(conversation).or_insert(seq);
            *highest = seq.max(*highest);
        }
    }

    fn points(&self) -> Vec<(i64, i64)> {
        self.0.iter().map(|(c, s)| (*c, *s)).collect()
    }

    fn take(&mut self) -> Vec<(i64, i64)> {
        let points = self.points();
        self.0.clear();
        points
    }
}

/// After the faults: long-polls each device until a poll returns no stored
/// event, acking (cumulatively, in the next poll) what each poll brought,
/// then passes over every device again until a full pass reads nothing. A
/// poll returns every stored event above the device's acked positions, so
/// its first poll re-reads whatever the device received but had not acked
/// (redeliveries, which the checker allows) as well as anything it never
/// received; a poll reads the store itself, where a WebSocket ping round
/// trip could not prove that nothing waits, because the server pushes a
/// reconnecting device's backlog from a task of its own, which a `pong` can
/// overtake. (The devices used their own transports while the faults ran.)
/// The pass that reads nothing proves the acks moved every position past
/// everything meant for its device. Receipts are live only now, so acks no
/// longer queue anything for the senders. Fails if one pass takes longer
/// than `pass_within` (the drain stalled), or all of them longer than ten
/// times that.
pub(crate) async fn drain(
    devices: &[Device],
    nodes: &Nodes,
    history: &History,
    pass_within: Duration,
) {
    use futures_util::StreamExt;
    let deadline = Instant::now() + pass_within * 10;
    loop {
        assert!(
            Instant::now() < deadline,
            "the devices did not drain within {:?}",
            pass_within * 10
        );
        let pass = futures_util::stream::iter(devices)
            .map(|device| async move {
                let url = nodes
                    .pick(device.home, 0)
                    .expect("a live node to drain from");
                drain_long_poll(device, &url, history).await
            })
            .buffer_unordered(32)
            .fold(0, |total, read| async move { total + read });
        let read = tokio::time::timeout(pass_within, pass)
            .await
            .unwrap_or_else(|_| panic!("a drain pass took longer than {pass_within:?}"));
        if read == 0 {
            return;
        }
    }
}

/// Long-polls until a poll returns no stored event (`message`, `expired`),
/// acking in each poll the highest seq per conversation the previous one
/// brought; returns how many stored events it read.
async fn drain_long_poll(device: &Device, url: &str, history: &History) -> usize {
    let api = Api::new(url);
    let mut read = 0;
    let mut acks = Acks::default();
    loop {
        let response = api
            .poll(&device.token, &acks.points(), 0)
            .await
            .expect("drain: poll");
        acks = Acks::default();
        for frame in &response.frames {
            history.read(&device.label, frame);
            acks.received(frame);
        }
        let events = response
            .frames
            .iter()
            .filter(|frame| frame.ack_point().is_some())
            .count();
        if events == 0 {
            return read;
        }
        read += events;
    }
}
