//! `idle`: N authenticated connections that only answer the server's
//! keepalive pings. Figures: connect rate, and — with `--server-pid` of a
//! server on this machine — the server's resident memory per connection
//! (from /proc: the growth while the second half of the connections
//! opens, divided by their number) and its CPU use while idle.
//!
//! One process holds at most ~20,000 open files here, which bounds N per
//! bench process; the figures are per server process.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use missive_client::{Api, ClientError};

use super::Common;
use super::report::Report;
use super::setup::{self, Member, PASSWORD, connect_all, members, run_prefix};

/// Tokio's blocking pool retires a thread after 10 s without work.
const BLOCKING_THREADS_RETIRE: Duration = Duration::from_secs(11);

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Devices per user (the server's limits.devices_per_account_max must
    /// allow it); fewer users means fewer registrations to wait for.
    #[arg(long, default_value_t = 5)]
    devices_per_user: usize,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// How long to hold the connections idle while measuring CPU.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.connections == 0 || args.devices_per_user == 0 {
        bail!("--connections and --devices-per-user must be at least 1");
    }
    let prefix = run_prefix();
    let users = args.connections.div_ceil(args.devices_per_user);
    let names = (0..users).map(|i| format!("{prefix}i{i}")).collect();
    let accounts = members(common, names, |i| i).await?;
    // More devices per user: each login is a device with its own token.
    let bar = setup::progress(args.connections as u64, "devices");
    let mut devices: Vec<Member> = Vec::with_capacity(args.connections);
    for account in &accounts {
        for d in 0..args.devices_per_user {
            if devices.len() == args.connections {
                break;
            }
            if d == 0 {
                devices.push(account.clone());
            } else {
                let token = Api::new(&account.server)
                    .login(&account.username, PASSWORD, "bench")
                    .await
                    .with_context(|| format!("logging in {}", account.username))?
                    .token;
                devices.push(Member {
                    token,
                    ..account.clone()
                });
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // Setting up made the server hash passwords on its blocking pool, whose
    // idle threads exit after 10 s; wait that out so their stacks leaving
    // do not hide the connections' memory. Then connect in two halves and
    // count only the second: what one more connection costs.
    if args.server_pid.is_some() {
        tokio::time::sleep(BLOCKING_THREADS_RETIRE).await;
    }
    let half = devices.len() / 2;
    let (mut connections, first_rate) =
        connect_all(common, &devices[..half], args.connect_concurrency).await?;
    let rss_before = args.server_pid.map(rss_bytes).transpose()?;
    let (rest, second_rate) =
        connect_all(common, &devices[half..], args.connect_concurrency).await?;
    let rss_after_connect = args.server_pid.map(rss_bytes).transpose()?;
    connections.extend(rest);
    // All connections over the time both halves took.
    let secs = |n: usize, rate: f64| if n == 0 { 0.0 } else { n as f64 / rate };
    let connect_rate = devices.len() as f64
        / (secs(half, first_rate) + secs(devices.len() - half, second_rate)).max(1e-9);
    // Hold them: reading answers the server's pings.
    let holders: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                loop {
                    match connection.next_frame(Duration::from_secs(3600)).await {
                        Ok(_) | Err(ClientError::Timeout) => {}
                        Err(_) => return false,
                    }
                }
            })
        })
        .collect();
    let mut report = Report::new("idle");
    report.param("connections", args.connections as u64);
    report.param("idle_secs", args.idle_secs);
    report.figure("connect_per_sec", connect_rate);
    let cpu_before = args.server_pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    // Holding the connections idle is the scenario itself, not a wait.
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    if let (Some(pid), Some(before), Some(cpu_before)) = (args.server_pid, rss_before, cpu_before) {
        let cpu = cpu_ticks(pid)?.saturating_sub(cpu_before) as f64 / ticks_per_sec();
        let after = rss_after_connect.unwrap_or(before);
        report.figure(
            "server_rss_per_connection_bytes",
            after.saturating_sub(before) as f64 / (args.connections - half).max(1) as f64,
        );
        report.figure("server_rss_bytes", rss_bytes(pid)? as f64);
        report.figure(
            "server_idle_cpu_percent",
            100.0 * cpu / started.elapsed().as_secs_f64(),
        );
    }
    let closed = holders.iter().filter(|holder| holder.is_finished()).count();
    report.figure("connections_lost", closed as f64);
    for holder in holders {
        holder.abort();
    }
    Ok(report)
}

/// Resident set size of a process, from /proc/<pid>/status (VmRSS).
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS line")
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU time of a process in clock ticks (/proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).context("unexpected /proc stat format")
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after its ')' are
    // plain. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Linux reports CPU times in USER_HZ, which is 100 on every mainstream
/// architecture.
fn ticks_per_sec() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        // Goal: VmRSS in KiB becomes bytes; utime+stime are found even when
        // the command name holds spaces and parentheses.
        let status = "Name:\tmissive\nVmPeak:\t 999 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(320));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
