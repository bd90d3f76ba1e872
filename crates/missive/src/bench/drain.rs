//! `drain`: D devices are offline while Q messages queue up for each; then
//! they reconnect at a set rate and each drains its queue, acking as it
//! goes. Figures: drain messages per second, time until the last device is
//! empty, per-device drain time, time from reconnecting to `ready` and to
//! the first message, and with `--server-pid` the server's CPU per drained message;
//! loss and duplicates are counted per device.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::{StreamExt, TryStreamExt, stream};
use missive_client::{ClientError, Connection};
use missive_proto::{ClientFrame, ServerFrame};
use tokio::sync::watch;

use super::Common;
use super::ledger::{MessageKey, Tally, message_key, tally};
use super::pairs::{ReceiverOutcome, receive};
use super::report::Report;
use super::setup::{self, connect_all, members, run_prefix, source};
use super::stats::Latencies;

#[derive(Args)]
pub(super) struct DrainArgs {
    #[command(flatten)]
    pub common: Common,
    /// Offline devices that queue messages.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Messages queued for each device.
    #[arg(long, default_value_t = 100)]
    queued: usize,
    /// Reconnects per second once the queues are full.
    #[arg(long, default_value_t = 1000)]
    reconnect_rate: u64,
    /// Connections filling the queues, each with 16 sends in flight.
    #[arg(long, default_value_t = 8)]
    fillers: usize,
}

const FILL_WINDOW: usize = 16;

pub(super) async fn run(args: DrainArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.devices == 0 || args.queued == 0 || args.fillers == 0 || args.reconnect_rate == 0 {
        bail!("--devices, --queued, --fillers and --reconnect-rate must be at least 1");
    }
    let prefix = run_prefix();
    let names = (0..args.fillers)
        .map(|i| format!("{prefix}f{i}"))
        .chain((0..args.devices).map(|i| format!("{prefix}d{i}")))
        .collect();
    let people = members(common, names, |i| i).await?;
    let (fillers, drainers) = people.split_at(args.fillers);
    let expected = fill_queues(&args, fillers, drainers).await?;

    let cost = common.server_cost();
    let cost_start = cost.sample().await?;
    let outcomes = drain_all(&args, drainers, &expected).await?;
    let cost_end = cost.sample().await?;

    let mut report = Report::new("drain");
    let totals = report_drain(&mut report, &args, &expected, &outcomes);
    // The reconnects, the catch-up reads, the frames and the acks: all of
    // the server's work from the first reconnect to the last delivery.
    cost.report(&mut report, &cost_start, &cost_end, Some(totals.delivered));
    report.tally = totals;
    Ok(report)
}

/// Fills the offline devices' queues: filler i sends to devices i,
/// i + fillers, ... Returns, per device, the messages the server confirmed.
async fn fill_queues(
    args: &DrainArgs,
    fillers: &[setup::Member],
    drainers: &[setup::Member],
) -> anyhow::Result<Vec<HashSet<MessageKey>>> {
    let (filler_connections, _) = connect_all(&args.common, fillers, 64).await?;
    let bar = setup::progress((args.devices * args.queued) as u64, "queueing");
    let jobs = filler_connections
        .into_iter()
        .enumerate()
        .map(|(i, connection)| {
            let targets: Vec<(usize, String)> = (i..args.devices)
                .step_by(args.fillers)
                .map(|d| (d, drainers[d].username.clone()))
                .collect();
            let bar = bar.clone();
            tokio::spawn(fill(connection, targets, args.queued, bar))
        });
    let mut expected: Vec<HashSet<MessageKey>> = vec![HashSet::new(); args.devices];
    for job in jobs.collect::<Vec<_>>() {
        for (device, key) in job.await.context("filler task")?? {
            expected[device].insert(key);
        }
    }
    bar.finish_and_clear();
    Ok(expected)
}

/// One device's drain: which device, what it received, how long it took,
/// how long until `ready`, and until its first message.
type DeviceDrain = (usize, ReceiverOutcome, Duration, Duration, Option<Duration>);

/// Reconnects the devices at the set rate; each reads until its queue is
/// empty.
async fn drain_all(
    args: &DrainArgs,
    drainers: &[setup::Member],
    expected: &[HashSet<MessageKey>],
) -> anyhow::Result<Vec<DeviceDrain>> {
    let common = &args.common;
    let (_expect_tx, expect_rx) = watch::channel(Some(Arc::new(
        expected.iter().map(HashSet::len).collect::<Vec<_>>(),
    )));
    let epoch = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.reconnect_rate as f64);
    let bar = setup::progress(args.devices as u64, "draining");
    let settle = common.settle();
    let tasks = drainers.iter().enumerate().map(|(i, member)| {
        let (url, token, source) = (member.ws_url(), member.token.clone(), source(common, i));
        let (expect, bar) = (expect_rx.clone(), bar.clone());
        async move {
            // Pacing, not synchronisation: device i reconnects at i / rate.
            tokio::time::sleep_until((epoch + interval * i as u32).into()).await;
            let connected = Instant::now();
            let connecting_at = epoch.elapsed();
            let connection = Connection::connect_from(&url, &token, source)
                .await
                .with_context(|| format!("reconnecting to {url}"))?;
            let ready = connected.elapsed();
            let outcome = receive(connection, i, epoch, expect, settle).await?;
            bar.inc(1);
            let first_message = outcome
                .first_delivery
                .map(|first| first.saturating_sub(connecting_at));
            Ok::<_, anyhow::Error>((i, outcome, connected.elapsed(), ready, first_message))
        }
    });
    // Every device at once: the pacing above spreads them out.
    let outcomes: Vec<_> = stream::iter(tasks)
        .buffer_unordered(args.devices)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    Ok(outcomes)
}

/// The run's parameters, rate and latencies; returns the devices' tally.
fn report_drain(
    report: &mut Report,
    args: &DrainArgs,
    expected: &[HashSet<MessageKey>],
    outcomes: &[DeviceDrain],
) -> Tally {
    let mut totals = Tally::default();
    let mut per_device = Latencies::default();
    let mut first_message = Latencies::default();
    let mut ready = Latencies::default();
    let mut last = Duration::ZERO;
    for (i, outcome, took, connect, first) in outcomes {
        totals.merge(&tally(&expected[*i], &outcome.received));
        per_device.record(*took);
        ready.record(*connect);
        if let Some(first) = first {
            first_message.record(*first);
        }
        last = last.max(outcome.last_delivery);
    }
    report.param("devices", args.devices as u64);
    report.param("queued_per_device", args.queued as u64);
    report.param("reconnect_rate", args.reconnect_rate);
    // The last device reconnects this long after the first: the drain rate
    // cannot exceed devices × queued over it.
    report.param(
        "reconnect_ramp_ms",
        (args.devices.saturating_sub(1) as u64 * 1000) / args.reconnect_rate.max(1),
    );
    report.figure(
        "drain_msgs_per_sec",
        totals.delivered as f64 / last.as_secs_f64().max(1e-9),
    );
    report.figure("time_to_empty_ms", last.as_secs_f64() * 1000.0);
    report.latency("device_drain", &per_device.percentiles());
    // From starting to reconnect to the first queued message: what a user
    // opening the app after a while waits for, under a reconnect storm.
    report.latency("first_message", &first_message.percentiles());
    // The part of it spent connecting: from starting to reconnect to
    // `ready` (the TCP connect, the upgrade, `auth`).
    report.latency("ready", &ready.percentiles());
    totals
}

/// Sends `queued` texts to each target, `FILL_WINDOW` in flight; returns
/// (device index, message) for every confirmed send.
async fn fill(
    mut connection: Connection,
    targets: Vec<(usize, String)>,
    queued: usize,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<Vec<(usize, MessageKey)>> {
    let sends: Vec<(usize, String)> = targets
        .iter()
        .flat_map(|target| std::iter::repeat_n(target.clone(), queued))
        .collect();
    let mut confirmed = Vec::with_capacity(sends.len());
    let mut next = 0;
    let mut in_flight = std::collections::HashMap::new();
    while next < sends.len() || !in_flight.is_empty() {
        while next < sends.len() && in_flight.len() < FILL_WINDOW {
            let (device, to) = &sends[next];
            connection
                .send_frame(&ClientFrame::Send {
                    id: Some(next.to_string()),
                    to: Some(to.clone()),
                    conversation: None,
                    client_msg_id: super::client_msg_id('q', next as u64),
                    // Not a send-time stamp (`setup::elapsed_since_stamp`):
                    // what waited is timed from the reconnect, not from
                    // its send.
                    text: "queued".into(),
                    reply_to: None,
                    media: Vec::new(),
                    encrypted: false,
                })
                .await?;
            in_flight.insert(next, *device);
            next += 1;
        }
        match connection.next_frame(Duration::from_secs(30)).await {
            Ok(ServerFrame::Sent { id, message_id, .. }) => {
                let device = id
                    .and_then(|id| id.parse::<usize>().ok())
                    .and_then(|id| in_flight.remove(&id));
                if let (Some(device), Some(key)) = (device, message_key(&message_id)) {
                    confirmed.push((device, key));
                    bar.inc(1);
                }
            }
            Ok(ServerFrame::Error { code, message, .. }) => {
                bail!("a send was refused: {} ({message})", code.as_str())
            }
            Ok(_) => {}
            Err(ClientError::Timeout) => bail!("no reply to a send within 30 s"),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(confirmed)
}
