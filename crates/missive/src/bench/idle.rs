//! `idle`: N authenticated connections that only answer the server's
//! keepalive pings. Figures: connect rate, and — with `--server-pid` of a
//! server on this machine — the server's resident memory per connection
//! (from /proc: the growth while the second half of the connections
//! opens, divided by their number), its CPU per connect and its CPU use
//! while idle. With one bench process, its own CPU per connect too
//! (`bench_cpu_us_per_connect`): on one machine the two share the cores.
//!
//! One process holds at most ~20,000 open files here. `--workers K` spreads
//! the connections over K bench processes (this binary again, with the
//! hidden `--worker` flag, driven line by line over its stdin/stdout) so
//! the bench side can go past that; the server side needs as many nodes
//! (`--server` and `--server-pid` once each), and the memory and CPU
//! figures are then the sums over those server processes.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use missive_client::{Api, ClientError, Connection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use super::Common;
use super::report::Report;
use super::server_cost::{TICKS_PER_SEC, cpu_ticks};
use super::setup::{self, Member, PASSWORD, connect_all, members, run_prefix};

/// Tokio's blocking pool retires a thread after 10 s without work.
const BLOCKING_THREADS_RETIRE: Duration = Duration::from_secs(11);

#[derive(Args)]
pub(super) struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Devices per user (the server's limits.devices_per_account_max must
    /// allow it); fewer users means fewer registrations to wait for.
    #[arg(long, default_value_t = 5)]
    devices_per_user: usize,
    /// How long to hold the connections idle while measuring CPU.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Connections opened at once (over all workers).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Bench processes that hold the connections, each an equal share: one
    /// process may hold at most ~20,000 open files here.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Internal: this process is one of `--workers`, driven by its parent
    /// over stdin/stdout.
    #[arg(long, hide = true)]
    pub worker: bool,
}

pub(super) async fn run(args: IdleArgs) -> anyhow::Result<Report> {
    if args.connections == 0 || args.devices_per_user == 0 || args.workers == 0 {
        bail!("--connections, --devices-per-user and --workers must be at least 1");
    }
    let mut holders = if args.workers == 1 {
        Holders::Local(Slice::prepare(&args, args.connections).await?)
    } else {
        Holders::Workers(spawn_workers(&args).await?)
    };
    // Setting up made the server hash passwords on its blocking pool, whose
    // idle threads exit after 10 s; wait that out so their stacks leaving
    // do not hide the connections' memory. Then connect in two halves and
    // count only the second: what one more connection costs.
    let pids = &args.common.server_pids;
    if !pids.is_empty() {
        tokio::time::sleep(BLOCKING_THREADS_RETIRE).await;
    }
    let connect_cpu_before = sum(pids, cpu_ticks)?;
    let own_cpu_before = cpu_ticks(std::process::id())?;
    let started = Instant::now();
    let first_half = holders.connect(&args, 0).await?;
    let first_secs = started.elapsed().as_secs_f64();
    let rss_before = sum(pids, rss_bytes)?;
    let started = Instant::now();
    let second_half = holders.connect(&args, 1).await?;
    let second_secs = started.elapsed().as_secs_f64();
    let rss_after_connect = sum(pids, rss_bytes)?;
    let connect_cpu = sum(pids, cpu_ticks)?.saturating_sub(connect_cpu_before);
    let own_connect_cpu = cpu_ticks(std::process::id())?.saturating_sub(own_cpu_before);

    let mut report = Report::new("idle");
    report.param("connections", args.connections as u64);
    report.param("idle_secs", args.idle_secs);
    report.param("workers", args.workers as u64);
    report.param("server_processes", pids.len() as u64);
    report.figure("connections_opened", (first_half + second_half) as f64);
    report.figure(
        "connect_per_sec",
        args.connections as f64 / (first_secs + second_secs).max(1e-9),
    );
    if args.workers == 1 {
        // The load generator's own share, next to the server's: on one
        // machine the two split the cores, and the connect rate is bounded
        // by their sum.
        report.figure(
            "bench_cpu_us_per_connect",
            own_connect_cpu as f64 / TICKS_PER_SEC * 1e6 / (first_half + second_half).max(1) as f64,
        );
    }
    let cpu_before = sum(pids, cpu_ticks)?;
    let started = Instant::now();
    // Holding the connections idle is the scenario itself, not a wait.
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    if !pids.is_empty() {
        let cpu = sum(pids, cpu_ticks)?.saturating_sub(cpu_before) as f64 / TICKS_PER_SEC;
        // Upgrade, authentication, registration: what one connect costs
        // the server (the RSS readings in between cost it nothing).
        report.figure(
            "server_cpu_us_per_connect",
            connect_cpu as f64 / TICKS_PER_SEC * 1e6 / (first_half + second_half).max(1) as f64,
        );
        report.figure(
            "server_rss_per_connection_bytes",
            rss_after_connect.saturating_sub(rss_before) as f64 / second_half.max(1) as f64,
        );
        report.figure("server_rss_bytes", sum(pids, rss_bytes)? as f64);
        report.figure(
            "server_idle_cpu_percent",
            100.0 * cpu / started.elapsed().as_secs_f64(),
        );
    }
    report.figure("connections_lost", holders.stop().await? as f64);
    Ok(report)
}

/// `--worker`: prepare this process's share, then obey the parent's lines
/// (`connect 0`, `connect 1`, `stop`), answering each (`ready`,
/// `connected <n>`, `lost <n>`) on stdout.
pub(super) async fn work(args: IdleArgs) -> ExitCode {
    match serve_parent(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: idle worker {}: {err:#}", std::process::id());
            ExitCode::from(1)
        }
    }
}

async fn serve_parent(args: IdleArgs) -> anyhow::Result<()> {
    setup::hide_progress();
    let mut slice = Slice::prepare(&args, args.connections).await?;
    let mut stdout = tokio::io::stdout();
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;
    while let Some(line) = commands.next_line().await? {
        let answer = match line.as_str() {
            "connect 0" => format!("connected {}", slice.connect(&args, 0).await?),
            "connect 1" => format!("connected {}", slice.connect(&args, 1).await?),
            "stop" => format!("lost {}", slice.stop()),
            other => bail!("unexpected command {other:?}"),
        };
        stdout.write_all(answer.as_bytes()).await?;
        stdout.write_all(b"\n").await?;
        stdout.flush().await?;
        if line == "stop" {
            break;
        }
    }
    Ok(())
}

/// Who holds the connections: this process, or worker processes.
enum Holders {
    Local(Slice),
    Workers(Vec<Worker>),
}

impl Holders {
    /// Opens half `half` (0 or 1) of every share; returns how many opened.
    async fn connect(&mut self, args: &IdleArgs, half: usize) -> anyhow::Result<usize> {
        match self {
            Self::Local(slice) => slice.connect(args, half).await,
            Self::Workers(workers) => {
                let command = format!("connect {half}");
                let answers = ask_all(workers, &command).await?;
                answers
                    .iter()
                    .map(|answer| parse_count(answer, "connected"))
                    .sum()
            }
        }
    }

    /// Ends the run; returns how many connections the server had closed.
    async fn stop(self) -> anyhow::Result<usize> {
        match self {
            Self::Local(mut slice) => Ok(slice.stop()),
            Self::Workers(mut workers) => {
                let answers = ask_all(&mut workers, "stop").await?;
                for worker in &mut workers {
                    worker.child.wait().await?;
                }
                answers
                    .iter()
                    .map(|answer| parse_count(answer, "lost"))
                    .sum()
            }
        }
    }
}

/// The devices one process holds, connected in two halves; each
/// connection is read by a task that answers the server's pings.
struct Slice {
    devices: Vec<Member>,
    holders: Vec<JoinHandle<bool>>,
}

impl Slice {
    /// Registers users and logs in `count` devices for them.
    async fn prepare(args: &IdleArgs, count: usize) -> anyhow::Result<Self> {
        let common = &args.common;
        let prefix = run_prefix();
        let users = count.div_ceil(args.devices_per_user);
        let names = (0..users).map(|i| format!("{prefix}i{i}")).collect();
        let accounts = members(common, names, |i| i).await?;
        // More devices per user: each login is a device with its own token.
        let bar = setup::progress(count as u64, "devices");
        let mut devices: Vec<Member> = Vec::with_capacity(count);
        for account in &accounts {
            for d in 0..args.devices_per_user {
                if devices.len() == count {
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
        Ok(Self {
            devices,
            holders: Vec::new(),
        })
    }

    async fn connect(&mut self, args: &IdleArgs, half: usize) -> anyhow::Result<usize> {
        let middle = self.devices.len() / 2;
        let devices = if half == 0 {
            &self.devices[..middle]
        } else {
            &self.devices[middle..]
        };
        let concurrency = args.connect_concurrency.div_ceil(args.workers).max(1);
        let (connections, _) = connect_all(&args.common, devices, concurrency).await?;
        let opened = connections.len();
        self.holders.extend(connections.into_iter().map(hold));
        Ok(opened)
    }

    /// Connections the server closed while held; drops the rest.
    fn stop(&mut self) -> usize {
        let closed = self
            .holders
            .iter()
            .filter(|holder| holder.is_finished())
            .count();
        for holder in self.holders.drain(..) {
            holder.abort();
        }
        closed
    }
}

/// Reads a connection until it closes: reading answers the server's pings.
fn hold(mut connection: Connection) -> JoinHandle<bool> {
    tokio::spawn(async move {
        loop {
            match connection.next_frame(Duration::from_secs(3600)).await {
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(_) => return false,
            }
        }
    })
}

/// A worker process and its two pipes.
struct Worker {
    child: Child,
    commands: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

/// Starts `--workers` copies of this binary as `--worker`, each with an
/// equal share of the connections, and waits until all are prepared.
async fn spawn_workers(args: &IdleArgs) -> anyhow::Result<Vec<Worker>> {
    let exe = std::env::current_exe().context("finding the missive binary")?;
    let mut workers = Vec::with_capacity(args.workers);
    for share in shares(args.connections, args.workers) {
        let mut command = tokio::process::Command::new(&exe);
        command.args(["bench", "idle", "--worker"]);
        command.args(["--connections", &share.to_string()]);
        command.args(["--devices-per-user", &args.devices_per_user.to_string()]);
        command.args([
            "--connect-concurrency",
            &args.connect_concurrency.to_string(),
        ]);
        command.args(["--workers", &args.workers.to_string()]);
        command.args(["--sources", &args.common.sources.to_string()]);
        command.args([
            "--setup-concurrency",
            &args.common.setup_concurrency.to_string(),
        ]);
        for server in &args.common.servers {
            command.args(["--server", server]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting an idle worker")?;
        let (Some(commands), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("a worker's pipes are missing");
        };
        workers.push(Worker {
            child,
            commands,
            answers: BufReader::new(stdout).lines(),
        });
    }
    let bar = setup::progress(args.workers as u64, "workers ready");
    for worker in &mut workers {
        let answer = next_answer(worker).await?;
        if answer != "ready" {
            bail!("a worker said {answer:?} instead of ready");
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(workers)
}

/// Sends `command` to every worker at once, then collects their answers.
async fn ask_all(workers: &mut [Worker], command: &str) -> anyhow::Result<Vec<String>> {
    for worker in workers.iter_mut() {
        worker
            .commands
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("a worker stopped listening")?;
        worker.commands.flush().await?;
    }
    let mut answers = Vec::with_capacity(workers.len());
    for worker in workers.iter_mut() {
        answers.push(next_answer(worker).await?);
    }
    Ok(answers)
}

async fn next_answer(worker: &mut Worker) -> anyhow::Result<String> {
    match worker.answers.next_line().await? {
        Some(line) => Ok(line),
        None => {
            let status = worker.child.wait().await?;
            bail!("an idle worker exited ({status}); its error is above")
        }
    }
}

/// `total` split into `parts` shares that differ by at most one.
fn shares(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// The number in a worker's answer `<word> <n>`.
fn parse_count(answer: &str, word: &str) -> anyhow::Result<usize> {
    answer
        .strip_prefix(word)
        .and_then(|rest| rest.trim().parse().ok())
        .with_context(|| format!("a worker answered {answer:?}, expected \"{word} <n>\""))
}

/// A /proc reading summed over the server processes (0 with none).
fn sum(pids: &[u32], read: fn(u32) -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    pids.iter().map(|pid| read(*pid)).sum()
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
        assert_eq!(super::super::server_cost::parse_cpu_ticks(stat), Some(320));
        assert_eq!(super::super::server_cost::parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn workers_share_the_connections_and_report_counts() {
        // Goal: shares add up to the total and differ by at most one; a
        // worker's answer yields its count, anything else is an error.
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(shares(39_000, 2).iter().sum::<usize>(), 39_000);
        assert_eq!(parse_count("connected 42", "connected").unwrap(), 42);
        assert!(parse_count("lost x", "lost").is_err());
        assert!(parse_count("error", "connected").is_err());
    }
}
