//! `group`: one group of M members, all online; one member sends with W
//! messages in flight and every other member receives and acks. Figures:
//! fan-out deliveries per second and the latency until the *last* member
//! has a message, besides send→sent and per-delivery latency.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use missive_client::{Api, Connection};
use tokio::sync::watch;

use super::Common;
use super::ledger::{MessageKey, Tally, tally};
use super::pairs::{Payload, ReceiverTask, SendingWindow, Target, send, spawn_receivers};
use super::report::Report;
use super::setup::{connect_all, members, run_prefix};
use super::stats::Latencies;

#[derive(Args)]
pub(super) struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    /// Members, the sender included (at most the server's
    /// limits.group_members_max).
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Messages in flight from the sender.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// How long the sender sends.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
}

pub(super) async fn run(args: GroupArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.members < 2 || args.window == 0 {
        bail!("--members must be at least 2 and --window at least 1");
    }
    let (group, sender, connections) = group_online(&args).await?;

    let cost = common.server_cost();
    let cost_start = cost.sample().await?;
    let window = SendingWindow::open(args.duration_secs);
    let (epoch, deadline) = (window.epoch, window.deadline);
    let (expect_tx, expect_rx) = watch::channel(None);
    let receiving = spawn_receivers(connections, epoch, &expect_rx, common.settle());
    let (keys, sent_latency) = send(
        sender,
        Target::Conversation(group),
        Payload::default(),
        epoch,
        deadline,
        args.window,
        None,
        common.settle(),
    )
    .await?;
    let sending_ended = window.close();
    let expected: HashSet<MessageKey> = keys.into_iter().collect();
    let _ = expect_tx.send(Some(Arc::new(vec![expected.len(); args.members - 1])));

    let delivered = collect_deliveries(receiving, &expected).await?;
    let cost_end = cost.sample().await?;

    let mut report = Report::new("group");
    cost.report(
        &mut report,
        &cost_start,
        &cost_end,
        Some(delivered.totals.delivered),
    );
    report.param("members", args.members as u64);
    report.param("window", args.window as u64);
    report.param("duration_secs", args.duration_secs);
    report.param("confirmed_sends", expected.len() as u64);
    report.sending_and_delivery(
        &sent_latency,
        sending_ended,
        ("deliveries_per_sec", &delivered.per_delivery),
        delivered.totals,
        delivered.last_delivery,
    );
    report.latency("send_to_last_member", &delivered.to_last.percentiles());
    Ok(report)
}

/// Signs the members up, creates their group (the first member creates
/// it) and connects everyone; returns the group, the first member's
/// connection (the sender) and the others'.
async fn group_online(args: &GroupArgs) -> anyhow::Result<(i64, Connection, Vec<Connection>)> {
    let common = &args.common;
    let prefix = run_prefix();
    let names = (0..args.members).map(|i| format!("{prefix}m{i}")).collect();
    let people = members(common, names, |i| i).await?;
    let others: Vec<&str> = people[1..].iter().map(|m| m.username.as_str()).collect();
    let group = Api::new(&people[0].server)
        .create_group(&people[0].token, "bench", &others)
        .await
        .context("creating the group")?
        .conversation;
    let (mut connections, _) = connect_all(common, &people, 64).await?;
    let sender = connections.remove(0);
    Ok((group, sender, connections))
}

/// What the members received, together.
struct Delivered {
    per_delivery: Latencies,
    /// Per message, the latency until the slowest member had it.
    to_last: Latencies,
    totals: Tally,
    last_delivery: Duration,
}

/// Waits for every receiving member and sets what each got against what
/// the sender had confirmed.
async fn collect_deliveries(
    receiving: Vec<ReceiverTask>,
    expected: &HashSet<MessageKey>,
) -> anyhow::Result<Delivered> {
    let mut per_delivery = Latencies::default();
    let mut last_member: HashMap<MessageKey, u64> = HashMap::new();
    let mut totals = Tally::default();
    let mut last_delivery = Duration::ZERO;
    for task in receiving {
        let outcome = task.await.context("receiver task")??;
        per_delivery.merge(&outcome.latencies);
        totals.merge(&tally(expected, &outcome.received));
        last_delivery = last_delivery.max(outcome.last_delivery);
        for (key, micros) in outcome.arrivals {
            let slowest = last_member.entry(key).or_insert(0);
            *slowest = (*slowest).max(micros);
        }
    }
    let mut to_last = Latencies::default();
    for micros in last_member.values() {
        to_last.record(Duration::from_micros(*micros));
    }
    Ok(Delivered {
        per_delivery,
        to_last,
        totals,
        last_delivery,
    })
}
