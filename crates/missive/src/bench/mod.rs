//! `missive bench`: the load generator. It drives a running server
//! (embedded or a cluster: give `--server` once per node) over real
//! WebSockets with users it registers itself, shows progress, prints a
//! results table and writes the same results as JSON; `--baseline` adds
//! each figure's ratio to an earlier run.
//!
//! Scenarios (one module each): `pairs` (1:1 send → deliver → ack),
//! `group` (fan-out to online members), `drain` (offline queues emptied
//! on reconnect), `idle` (many quiet connections: memory, connect rate,
//! CPU). Every scenario checks that nothing was lost or duplicated
//! ([`ledger`]) and reports the counts; timings come from HDR histograms
//! ([`stats`]).
//!
//! The server must allow the bench's registrations: raise
//! `limits.registrations_per_ip_max` (BENCHMARKS.md shows the settings).

mod drain;
mod group;
mod idle;
mod ledger;
mod pairs;
mod report;
mod server_cost;
mod setup;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};

pub(crate) use report::Report;

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// P online pairs: 1:1 send → sent → delivered → ack.
    Pairs(pairs::PairsArgs),
    /// One group of M online members; one sender fans out.
    Group(group::GroupArgs),
    /// D offline devices with Q queued messages each, then reconnect.
    Drain(drain::DrainArgs),
    /// N authenticated, quiet connections: server memory, connect rate, CPU.
    Idle(idle::IdleArgs),
}

/// What every scenario takes.
#[derive(Args, Clone)]
pub(crate) struct Common {
    /// Server base URL; repeat for the nodes of a cluster (users are
    /// spread over them, and each pair talks across two nodes).
    #[arg(long = "server", default_value = "http://127.0.0.1:8080")]
    servers: Vec<String>,
    /// Where to write the JSON results [default: bench-<scenario>.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// An earlier results file: print each figure's ratio to it.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// KEY=VALUE recorded with the results (e.g. fsync=always).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Spread client connections over this many source addresses,
    /// 127.0.0.1 … 127.0.0.N (each has its own ~28k ephemeral ports).
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Concurrent registrations/logins while setting up.
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Give up waiting for outstanding deliveries after this long.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// A server process id on this machine, to read its CPU (and, for
    /// `idle`, memory) from /proc; repeat for the nodes of a cluster (the
    /// figures are then their sums). With it, `pairs`, `group` and `drain`
    /// report `server_cpu_us_per_msg`: the servers' CPU time over the
    /// messages they stored while measuring, setup left out.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
}

impl Common {
    fn settle(&self) -> Duration {
        Duration::from_secs(self.settle_secs)
    }

    fn server_cost(&self) -> server_cost::ServerCost {
        server_cost::ServerCost::new(&self.server_pids, &self.servers)
    }
}

pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    let scenario = match args.scenario {
        Scenario::Idle(a) if a.worker => return idle::work(a).await,
        scenario => scenario,
    };
    let (name, common, result) = match scenario {
        Scenario::Pairs(a) => ("pairs", a.common.clone(), pairs::run(a).await),
        Scenario::Group(a) => ("group", a.common.clone(), group::run(a).await),
        Scenario::Drain(a) => ("drain", a.common.clone(), drain::run(a).await),
        Scenario::Idle(a) => ("idle", a.common.clone(), idle::run(a).await),
    };
    let mut report = match result {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: bench {name} failed: {err:#}");
            return ExitCode::from(1);
        }
    };
    report.param("servers", common.servers.clone());
    for tag in &common.tags {
        let (key, value) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
        report.param(&format!("tag.{key}"), value);
    }
    let baseline = match &common.baseline {
        Some(path) => match Report::read(path) {
            Ok(baseline) => Some(baseline),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    print!("{}", report.table(baseline.as_ref()));
    let out = common
        .out
        .unwrap_or_else(|| PathBuf::from(format!("bench-{name}.json")));
    if let Err(err) = report.write(&out) {
        eprintln!("error: cannot write {}: {err}", out.display());
        return ExitCode::from(1);
    }
    println!("results written to {}", out.display());
    // Lost or duplicated messages fail the run: numbers over broken
    // delivery mean nothing.
    if report.tally.is_clean() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: messages were lost, duplicated or reordered (see the counts above)");
        ExitCode::from(3)
    }
}

/// A `client_msg_id` that sorts by time across devices, as every missive
/// client makes them: the embedded store's dedup index leads with it, so
/// concurrent sends land on its last page instead of one page per device.
fn client_msg_id(prefix: char, n: u64) -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros())
        .unwrap_or(0);
    format!("{prefix}{micros:013x}-{n:x}")
}
