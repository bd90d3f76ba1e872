//! `pairs`: P online pairs, each sender sending 1:1 to its receiver, who
//! acks. Closed loop keeps W messages in flight per pair; open loop sends
//! at a fixed total rate and stamps each message with its *scheduled* time,
//! so a stalled server shows in the latencies instead of hiding in fewer
//! sends. The senders' schedules are staggered over one interval, so the
//! total rate arrives evenly rather than as one burst from every sender. Figures: messages delivered per second and the latency of send→sent
//! and send→delivered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use missive_client::{ClientError, Connection};
use missive_proto::{ClientFrame, FrameView, ServerFrame};
use tokio::sync::watch;

use super::Common;
use super::ledger::{MessageKey, Received, Tally, message_key, tally};
use super::report::Report;
use super::setup::{self, connect_all, members, run_prefix};
use super::stats::Latencies;

#[derive(Args)]
pub(super) struct PairsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Online sender/receiver pairs.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Messages in flight per pair (closed loop).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Open loop: total sends per second over all pairs (0: closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long senders send.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Send into end-to-end encrypted 1:1s: each text is sent as ciphertext
    /// (`"encrypted": true`), padded to --payload-bytes, so the server's
    /// cost can be set beside plain texts of the same size.
    #[arg(long)]
    encrypted: bool,
    /// Pad each text to this many bytes (the timestamp it carries, then
    /// base64-like filler); 0 sends the timestamp alone.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
}

/// What each message carries: its timestamp, padded, plain or as
/// ciphertext. What the server does with ciphertext is only what it does
/// with any text (it cannot look inside), so the filler stands for it.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Payload {
    pub encrypted: bool,
    pub bytes: usize,
}

impl Payload {
    fn text(self, stamp_nanos: u128) -> String {
        let mut text = stamp_nanos.to_string();
        if text.len() < self.bytes {
            text.push('.');
            text.extend(std::iter::repeat_n('A', self.bytes - text.len()));
        }
        text
    }
}

/// Open-loop senders stop scheduling beyond this many unanswered sends.
const IN_FLIGHT_MAX: usize = 4096;
/// Receivers ack after this many messages (and when traffic pauses).
const ACK_EVERY: u64 = 32;

pub(super) async fn run(args: PairsArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.pairs == 0 || args.window == 0 {
        bail!("--pairs and --window must be at least 1");
    }
    let (people, senders, receivers) = connect_pairs(&args).await?;

    let cost = common.server_cost();
    let cost_start = cost.sample().await?;
    let window = SendingWindow::open(args.duration_secs);
    let (epoch, deadline) = (window.epoch, window.deadline);
    let (expect_tx, expect_rx) = watch::channel(None);
    let receiving = spawn_receivers(receivers, epoch, &expect_rx, common.settle());
    let sending = spawn_senders(&args, &people, senders, epoch, deadline);

    let (sent_latency, expected) = collect_senders(sending).await?;
    let sending_ended = window.close();
    let _ = expect_tx.send(Some(Arc::new(expected.iter().map(HashSet::len).collect())));

    let delivered = collect_receivers(receiving, &expected).await?;
    let cost_end = cost.sample().await?;

    let mut report = Report::new("pairs");
    cost.report(&mut report, &cost_start, &cost_end, None);
    report_pairs(&mut report, &args, &sent_latency, sending_ended, delivered);
    Ok(report)
}

/// Signs up the pairs, connects them and warms each pair's conversation
/// up; returns the people and the (sender, receiver) connections in pair
/// order.
async fn connect_pairs(
    args: &PairsArgs,
) -> anyhow::Result<(Vec<setup::Member>, Vec<Connection>, Vec<Connection>)> {
    let common = &args.common;
    let prefix = run_prefix();
    // Users 2i (sender i) and 2i+1 (receiver i) sit on neighbouring
    // servers, so with several nodes every message crosses nodes.
    let names = (0..args.pairs)
        .flat_map(|i| [format!("{prefix}s{i}"), format!("{prefix}r{i}")])
        .collect();
    let people = members(common, names, |j| j / 2 + j % 2).await?;
    let (connections, _) = connect_all(common, &people, 64).await?;
    let mut connections = connections.into_iter();
    let mut warming = Vec::with_capacity(args.pairs);
    for i in 0..args.pairs {
        let (Some(sender), Some(receiver)) = (connections.next(), connections.next()) else {
            bail!("fewer connections than pairs");
        };
        let to = people[2 * i + 1].username.clone();
        warming.push(tokio::spawn(warm_up(
            sender,
            receiver,
            to,
            args.encrypted,
            common.settle(),
        )));
    }
    let mut senders = Vec::with_capacity(args.pairs);
    let mut receivers = Vec::with_capacity(args.pairs);
    for task in warming {
        let (sender, receiver) = task.await.context("warm-up task")??;
        senders.push(sender);
        receivers.push(receiver);
    }
    Ok((people, senders, receivers))
}

type SenderTask = tokio::task::JoinHandle<anyhow::Result<(Vec<MessageKey>, Latencies)>>;

/// Starts one sender per pair, each to its receiver; open loop, each on
/// its own staggered schedule.
fn spawn_senders(
    args: &PairsArgs,
    people: &[setup::Member],
    senders: Vec<Connection>,
    epoch: Instant,
    deadline: Instant,
) -> Vec<SenderTask> {
    let per_sender_interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.pairs as f64 / args.rate as f64));
    let mut sending = Vec::with_capacity(args.pairs);
    for (i, connection) in senders.into_iter().enumerate() {
        let receiver = people[2 * i + 1].username.clone();
        let schedule = per_sender_interval.map(|interval| Schedule {
            interval,
            phase: stagger(interval, i, args.pairs),
        });
        sending.push(tokio::spawn(send(
            connection,
            Target::User(receiver),
            Payload {
                encrypted: args.encrypted,
                bytes: args.payload_bytes,
            },
            epoch,
            deadline,
            args.window,
            schedule,
            args.common.settle(),
        )));
    }
    sending
}

/// The time senders send: from `epoch` (when it opens) to `deadline`,
/// shown by a progress bar that moves once a second.
pub(super) struct SendingWindow {
    pub epoch: Instant,
    pub deadline: Instant,
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl SendingWindow {
    pub(super) fn open(duration_secs: u64) -> Self {
        let epoch = Instant::now();
        let bar = setup::progress(duration_secs, "sending");
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                ticking.set_position(epoch.elapsed().as_secs().min(ticking.length().unwrap_or(0)));
            }
        });
        Self {
            epoch,
            deadline: epoch + Duration::from_secs(duration_secs),
            bar,
            ticker,
        }
    }

    /// Sending ended: clears the bar; how long since the epoch it took.
    pub(super) fn close(self) -> Duration {
        let sending_ended = self.epoch.elapsed();
        self.ticker.abort();
        self.bar.finish_and_clear();
        sending_ended
    }
}

/// What each receiver is told once sending ends: per receiver (by index),
/// how many messages its sender had confirmed.
pub(super) type Expected = watch::Receiver<Option<Arc<Vec<usize>>>>;

pub(super) type ReceiverTask = tokio::task::JoinHandle<anyhow::Result<ReceiverOutcome>>;

/// Starts a [`receive`] on each connection, receiver `i` on the `i`-th
/// connection.
pub(super) fn spawn_receivers(
    connections: Vec<Connection>,
    epoch: Instant,
    expect: &Expected,
    settle: Duration,
) -> Vec<ReceiverTask> {
    connections
        .into_iter()
        .enumerate()
        .map(|(i, connection)| tokio::spawn(receive(connection, i, epoch, expect.clone(), settle)))
        .collect()
}

/// Waits for every sender: the merged send→sent latencies and, per pair,
/// the messages the server confirmed.
async fn collect_senders(
    sending: Vec<SenderTask>,
) -> anyhow::Result<(Latencies, Vec<HashSet<MessageKey>>)> {
    let mut sent_latency = Latencies::default();
    let mut expected: Vec<HashSet<MessageKey>> = Vec::with_capacity(sending.len());
    for task in sending {
        let (keys, latencies) = task.await.context("sender task")??;
        sent_latency.merge(&latencies);
        expected.push(keys.into_iter().collect());
    }
    Ok((sent_latency, expected))
}

/// What the receivers saw, together.
struct Delivered {
    latency: Latencies,
    totals: Tally,
    last_delivery: Duration,
}

/// Waits for every receiver and sets what each got against what its
/// sender had confirmed.
async fn collect_receivers(
    receiving: Vec<ReceiverTask>,
    expected: &[HashSet<MessageKey>],
) -> anyhow::Result<Delivered> {
    let mut delivered = Delivered {
        latency: Latencies::default(),
        totals: Tally::default(),
        last_delivery: Duration::ZERO,
    };
    for (i, task) in receiving.into_iter().enumerate() {
        let outcome = task.await.context("receiver task")??;
        delivered.latency.merge(&outcome.latencies);
        delivered
            .totals
            .merge(&tally(&expected[i], &outcome.received));
        delivered.last_delivery = delivered.last_delivery.max(outcome.last_delivery);
    }
    Ok(delivered)
}

/// The run's parameters, rates and latencies, after the server's cost.
fn report_pairs(
    report: &mut Report,
    args: &PairsArgs,
    sent_latency: &Latencies,
    sending_ended: Duration,
    delivered: Delivered,
) {
    report.param("pairs", args.pairs as u64);
    report.param(
        "mode",
        if args.rate > 0 {
            "open loop"
        } else {
            "closed loop"
        },
    );
    report.param("window", args.window as u64);
    report.param("rate", args.rate);
    report.param("duration_secs", args.duration_secs);
    report.sending_and_delivery(
        sent_latency,
        sending_ended,
        ("delivered_per_sec", &delivered.latency),
        delivered.totals,
        delivered.last_delivery,
    );
}

/// One message from the sender to its receiver, delivered and acked
/// before the clock starts. The first send to a user creates the pair's
/// conversation (a store write and the reads that check it may be created,
/// once per pair); with every pair doing it in the same instant the run's
/// first half second measured that storm (p50 130 ms at 1,000 pairs) and
/// not the steady state the figures stand for.
async fn warm_up(
    mut sender: Connection,
    mut receiver: Connection,
    to: String,
    encrypted: bool,
    settle: Duration,
) -> anyhow::Result<(Connection, Connection)> {
    // Encrypted, it creates the pair's 1:1 encrypted.
    let frame = ClientFrame::Send {
        id: Some("warm-up".into()),
        to: Some(to),
        conversation: None,
        client_msg_id: super::client_msg_id('w', 0),
        text: "warm-up".into(),
        reply_to: None,
        media: Vec::new(),
        encrypted,
    };
    sender.send_frame(&frame).await?;
    loop {
        match sender.next_frame(settle).await.context("warm-up: sent")? {
            ServerFrame::Sent { .. } => break,
            ServerFrame::Error { code, message, .. } => {
                bail!(
                    "the warm-up send was refused: {} ({message})",
                    code.as_str()
                )
            }
            _ => {}
        }
    }
    loop {
        let text = receiver
            .next_text(settle)
            .await
            .context("warm-up: delivery")?;
        let point = FrameView::parse(&text)
            .filter(FrameView::is_text)
            .and_then(|view| view.ack_point());
        if let Some((conversation, seq)) = point {
            let ack = ClientFrame::Ack {
                id: None,
                conversation,
                seq,
            };
            receiver.send_frame(&ack).await?;
            return Ok((sender, receiver));
        }
    }
}

/// Where a sender sends.
#[derive(Clone)]
pub(super) enum Target {
    User(String),
    Conversation(i64),
}

/// An open-loop sender's timetable: a send every `interval`, the first at
/// `phase` after the epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Schedule {
    pub interval: Duration,
    pub phase: Duration,
}

/// Sender `index` of `senders` starts `index / senders` of an interval
/// late: with every sender on the same interval, equal phases would send
/// `senders` messages at once each interval (1,000 pairs at 21,000/s: a
/// burst of 1,000 every 47 ms), and the latency measured would be the
/// burst's queue, not the server's at that rate.
fn stagger(interval: Duration, index: usize, senders: usize) -> Duration {
    interval.mul_f64(index as f64 / senders.max(1) as f64)
}

/// One sender: keeps `window` sends in flight (or follows its schedule)
/// until `deadline`, then waits for the last replies. Returns the ids the
/// server confirmed and the send→sent latencies.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    mut connection: Connection,
    target: Target,
    payload: Payload,
    epoch: Instant,
    deadline: Instant,
    window: usize,
    schedule: Option<Schedule>,
    settle: Duration,
) -> anyhow::Result<(Vec<MessageKey>, Latencies)> {
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let mut confirmed = Vec::new();
    let mut latencies = Latencies::default();
    let mut next: u64 = 0;
    let interval = schedule.map(|schedule| schedule.interval);
    let mut next_due = epoch + schedule.map_or(Duration::ZERO, |schedule| schedule.phase);
    loop {
        let now = Instant::now();
        // Sends that are due now (none once sending time is over).
        if now < deadline {
            while let Some(stamp_at) =
                next_send_at(interval, &mut next_due, now, in_flight.len(), window)
            {
                let frame = send_frame(&target, payload, next, stamp_at.duration_since(epoch));
                connection.send_frame(&frame).await?;
                in_flight.insert(next, stamp_at);
                next += 1;
            }
        }
        if now >= deadline && in_flight.is_empty() {
            return Ok((confirmed, latencies));
        }
        // Open loop: wake for the next due send, unless the in-flight cap
        // holds it back anyway (then only a reply can free a slot; waking
        // at once would spin).
        let wait = match interval {
            Some(_) if now < deadline && in_flight.len() < IN_FLIGHT_MAX => {
                next_due.saturating_duration_since(now).min(settle)
            }
            _ => settle,
        };
        let frame = match connection.next_frame(wait).await {
            Ok(frame) => frame,
            Err(ClientError::Timeout) if interval.is_some() && now < deadline => continue,
            Err(err) => return Err(err).context("waiting for sent replies"),
        };
        note_reply(frame, &mut in_flight, &mut latencies, &mut confirmed)?;
    }
}

/// When the next send is due, if one is due now: closed loop, whenever the
/// window has room (stamped now); open loop, each scheduled time that has
/// passed (stamped with that time, advancing the schedule) while under the
/// in-flight cap.
fn next_send_at(
    interval: Option<Duration>,
    next_due: &mut Instant,
    now: Instant,
    in_flight: usize,
    window: usize,
) -> Option<Instant> {
    match interval {
        None if in_flight < window => Some(now),
        None => None,
        Some(interval) if *next_due <= now && in_flight < IN_FLIGHT_MAX => {
            let at = *next_due;
            *next_due += interval;
            Some(at)
        }
        Some(_) => None,
    }
}

/// Send number `next` to the target, carrying its (scheduled) stamp.
fn send_frame(target: &Target, payload: Payload, next: u64, stamp: Duration) -> ClientFrame {
    let (to, conversation) = match target {
        Target::User(user) => (Some(user.clone()), None),
        Target::Conversation(id) => (None, Some(*id)),
    };
    ClientFrame::Send {
        id: Some(next.to_string()),
        to,
        conversation,
        client_msg_id: super::client_msg_id('p', next),
        text: payload.text(stamp.as_nanos()),
        reply_to: None,
        media: Vec::new(),
        encrypted: payload.encrypted,
    }
}

/// A reply to a sender: `sent` times and confirms its send; a refusal
/// ends the run.
fn note_reply(
    frame: ServerFrame,
    in_flight: &mut HashMap<u64, Instant>,
    latencies: &mut Latencies,
    confirmed: &mut Vec<MessageKey>,
) -> anyhow::Result<()> {
    match frame {
        ServerFrame::Sent { id, message_id, .. } => {
            let started = id
                .and_then(|id| id.parse::<u64>().ok())
                .and_then(|id| in_flight.remove(&id));
            if let (Some(started), Some(key)) = (started, message_key(&message_id)) {
                latencies.record(started.elapsed());
                confirmed.push(key);
            }
        }
        ServerFrame::Error { code, message, .. } => {
            bail!("a send was refused: {} ({message})", code.as_str())
        }
        // Delivered receipts are live cursor moves: nothing to ack.
        _ => {}
    }
    Ok(())
}

pub(super) struct ReceiverOutcome {
    pub received: Received,
    pub latencies: Latencies,
    /// (message, send→delivered µs) per text, for per-message figures.
    pub arrivals: Vec<(MessageKey, u64)>,
    /// Since the epoch: when the first and the last text arrived.
    pub first_delivery: Option<Duration>,
    pub last_delivery: Duration,
}

/// One receiver: notes and times every message, acks in batches, and ends
/// once it has everything its sender was told is sent (or nothing arrives
/// for `settle` after sending ended). Before it ends, a ping round trip
/// collects what was still on its way, so a duplicate arriving after the
/// last new message is counted too.
pub(super) async fn receive(
    mut connection: Connection,
    index: usize,
    epoch: Instant,
    expect: Expected,
    settle: Duration,
) -> anyhow::Result<ReceiverOutcome> {
    let mut outcome = ReceiverOutcome {
        received: Received::default(),
        latencies: Latencies::default(),
        arrivals: Vec::new(),
        first_delivery: None,
        last_delivery: Duration::ZERO,
    };
    let mut unique: HashSet<MessageKey> = HashSet::new();
    let mut unacked = Unacked::default();
    let mut quiet_since = Instant::now();
    loop {
        let target = expect.borrow().as_ref().map(|counts| counts[index]);
        if let Some(target) = target {
            if unique.len() >= target || quiet_since.elapsed() >= settle {
                break;
            }
        }
        // A short wait, so the end of sending is noticed promptly.
        let text = match connection.next_text(Duration::from_millis(100)).await {
            Ok(text) => text,
            Err(ClientError::Timeout) => {
                unacked.flush(&mut connection).await?;
                continue;
            }
            Err(err) => return Err(err).context("receiving"),
        };
        if let Some(point) = note(&mut outcome, &mut unique, epoch, &text) {
            quiet_since = Instant::now();
            unacked.note(point);
            if unacked.count >= ACK_EVERY {
                unacked.flush(&mut connection).await?;
            }
        }
    }
    unacked.flush(&mut connection).await?;
    let ping = ClientFrame::Ping {
        id: Some("end".into()),
    };
    connection.send_frame(&ping).await.context("final ping")?;
    loop {
        let text = connection
            .next_text(settle.max(Duration::from_secs(5)))
            .await
            .context("waiting for the final pong")?;
        let end = FrameView::parse(&text)
            .is_some_and(|view| view.frame_type == "pong" && view.id.as_deref() == Some("end"));
        if end {
            return Ok(outcome);
        }
        note(&mut outcome, &mut unique, epoch, &text);
    }
}

/// Notes a frame: a run's text is recorded (key, latency, arrival). Returns
/// the (conversation, seq) a stored event stands for, for acking.
fn note(
    outcome: &mut ReceiverOutcome,
    unique: &mut HashSet<MessageKey>,
    epoch: Instant,
    text: &str,
) -> Option<(i64, i64)> {
    let view = FrameView::parse(text)?;
    let (conversation, seq) = view.ack_point()?;
    // Only the run's texts count; other events (a group's creation) are
    // acked with them.
    let key = view
        .message_id
        .as_deref()
        .and_then(message_key)
        .filter(|_| view.is_text());
    if let Some(key) = key {
        outcome.last_delivery = epoch.elapsed();
        outcome.first_delivery.get_or_insert(outcome.last_delivery);
        let stamp = view.text.as_deref().unwrap_or_default();
        if let Some(latency) = setup::elapsed_since_stamp(epoch, stamp) {
            outcome.latencies.record(latency);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            outcome.arrivals.push((key, micros));
        }
        outcome.received.note(key, conversation, seq);
        unique.insert(key);
    }
    Some((conversation, seq))
}

/// The highest seq received per conversation since the last ack: acked
/// once per burst, one frame per conversation, without an `id` (so the
/// server answers nothing unless it refuses).
#[derive(Default)]
pub(super) struct Unacked {
    highest: HashMap<i64, i64>,
    count: u64,
}

impl Unacked {
    pub(super) fn note(&mut self, (conversation, seq): (i64, i64)) {
        let highest = self.highest.entry(conversation).or_insert(seq);
        *highest = (*highest).max(seq);
        self.count += 1;
    }

    pub(super) async fn flush(&mut self, connection: &mut Connection) -> Result<(), ClientError> {
        self.count = 0;
        for (conversation, seq) in self.highest.drain() {
            connection
                .send_frame(&ClientFrame::Ack {
                    id: None,
                    conversation,
                    seq,
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_spread_evenly_over_one_interval() {
        let interval = Duration::from_millis(40);
        let phases: Vec<Duration> = (0..4).map(|i| stagger(interval, i, 4)).collect();
        assert_eq!(
            phases,
            [0, 10, 20, 30].map(Duration::from_millis).to_vec(),
            "four senders, one every quarter interval"
        );
        assert!(stagger(interval, 999, 1000) < interval);
        assert_eq!(stagger(interval, 0, 0), Duration::ZERO);
    }
}
