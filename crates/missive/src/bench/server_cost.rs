//! What the server itself spends per message: its processes' user+system
//! CPU time (from /proc, so only for servers on this machine, named by
//! `--server-pid`) over the growth of `missive_sends_total` in the same
//! window. Setup is left out by sampling only around the measured phase,
//! and the load generator's own CPU never counts, so the figure stays
//! comparable however heavy the client side is.

use anyhow::Context;
use missive_client::Api;

use super::Report;

/// Linux reports CPU times in USER_HZ, which is 100 on every mainstream
/// architecture.
pub(super) const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of a process in clock ticks (/proc/<pid>/stat).
pub(super) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).context("unexpected /proc stat format")
}

pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after its ')' are
    // plain. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// One sample of the servers' CPU and stored messages.
pub(super) struct Sample {
    ticks: u64,
    sends: f64,
    at: std::time::Instant,
}

pub(super) struct ServerCost {
    pids: Vec<u32>,
    servers: Vec<Api>,
}

impl ServerCost {
    pub(super) fn new(pids: &[u32], servers: &[String]) -> Self {
        Self {
            pids: pids.to_vec(),
            servers: servers.iter().map(|url| Api::new(url)).collect(),
        }
    }

    pub(super) async fn sample(&self) -> anyhow::Result<Sample> {
        let mut ticks = 0;
        for pid in &self.pids {
            ticks += cpu_ticks(*pid)?;
        }
        let mut sends = 0.0;
        for server in &self.servers {
            sends += server
                .metric("missive_sends_total")
                .await
                .context("reading missive_sends_total")?
                .unwrap_or(0.0);
        }
        Ok(Sample {
            ticks,
            sends,
            at: std::time::Instant::now(),
        })
    }

    /// Adds `server_cpu_us_per_msg` and `server_cpu_percent` (of one core)
    /// between two samples, and with `deliveries`, `server_cpu_us_per_delivery`;
    /// nothing without `--server-pid`.
    pub(super) fn report(
        &self,
        report: &mut Report,
        start: &Sample,
        end: &Sample,
        deliveries: Option<u64>,
    ) {
        if self.pids.is_empty() {
            return;
        }
        let cpu_secs = end.ticks.saturating_sub(start.ticks) as f64 / TICKS_PER_SEC;
        if let Some(deliveries) = deliveries.filter(|n| *n > 0) {
            report.figure(
                "server_cpu_us_per_delivery",
                cpu_secs * 1e6 / deliveries as f64,
            );
        }
        let sends = (end.sends - start.sends).max(0.0);
        let wall = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
        report.figure("server_sends", sends);
        report.figure("server_cpu_percent", 100.0 * cpu_secs / wall);
        if sends > 0.0 {
            report.figure("server_cpu_us_per_msg", cpu_secs * 1e6 / sends);
        }
    }
}
