//! A run's results: its parameters, its figures (flat name → number, so
//! runs compare key by key), the loss/duplicate tally; printed as a table
//! and written as JSON. `--baseline` reads an earlier JSON and prints each
//! figure's ratio to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ledger::Tally;
use super::stats::{Latencies, Percentiles};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub scenario: String,
    /// Everything that shaped the run (counts, rates, servers, tags).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Throughputs (`*_per_sec`), latencies (`*_us`), sizes (`*_bytes`).
    pub figures: BTreeMap<String, f64>,
    pub tally: Tally,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn param(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.params.insert(name.to_owned(), value.into());
    }

    pub(crate) fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_owned(), value);
    }

    /// `<name>_p50_us` … `<name>_max_us`.
    pub(crate) fn latency(&mut self, name: &str, p: &Percentiles) {
        for (suffix, value) in [
            ("p50", p.p50_us),
            ("p90", p.p90_us),
            ("p99", p.p99_us),
            ("p999", p.p999_us),
            ("max", p.max_us),
        ] {
            self.figure(&format!("{name}_{suffix}_us"), value as f64);
        }
    }

    /// The figures of a scenario that sends for a while and counts what
    /// arrived: `sent_per_sec` over the sending time, `delivered_figure`
    /// over the time until the later of the last delivery and the end of
    /// sending, the send→sent and send→delivered latencies, and the tally.
    pub(super) fn sending_and_delivery(
        &mut self,
        sent: &Latencies,
        sending_ended: Duration,
        (delivered_figure, delivered): (&str, &Latencies),
        totals: Tally,
        last_delivery: Duration,
    ) {
        let span = last_delivery.max(sending_ended).as_secs_f64().max(1e-9);
        self.figure(
            "sent_per_sec",
            sent.count() as f64 / sending_ended.as_secs_f64(),
        );
        self.figure(delivered_figure, totals.delivered as f64 / span);
        self.latency("send_to_sent", &sent.percentiles());
        self.latency("send_to_delivered", &delivered.percentiles());
        self.tally = totals;
    }

    /// The table printed at the end of a run; with a baseline, a ratio
    /// column (this run / baseline).
    pub(crate) fn table(&self, baseline: Option<&Report>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario: {}", self.scenario);
        for (name, value) in &self.params {
            let _ = writeln!(out, "  {name} = {value}");
        }
        let ratios = baseline.map(|baseline| ratios(self, baseline));
        let _ = writeln!(out, "{:<34} {:>16} {:>10}", "figure", "value", "ratio");
        for (name, value) in &self.figures {
            let ratio = ratios
                .as_ref()
                .and_then(|ratios| ratios.get(name))
                .map(|ratio| format!("{ratio:.2}x"))
                .unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(out, "{name:<34} {:>16} {ratio:>10}", format_value(*value));
        }
        let t = &self.tally;
        let _ = writeln!(
            out,
            "messages: expected {} delivered {} lost {} duplicated {} unexpected {} out_of_order {}",
            t.expected, t.delivered, t.lost, t.duplicated, t.unexpected, t.out_of_order
        );
        out
    }

    pub(crate) fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }

    pub(crate) fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|err| format!("{} is not a report: {err}", path.display()))
    }
}

/// Each figure present in both runs: this / baseline. A zero baseline has
/// no ratio.
pub(super) fn ratios(run: &Report, baseline: &Report) -> BTreeMap<String, f64> {
    run.figures
        .iter()
        .filter_map(|(name, value)| {
            let base = *baseline.figures.get(name)?;
            (base != 0.0).then(|| (name.clone(), value / base))
        })
        .collect()
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_shared_figures_only() {
        // Goal: a ratio per figure both runs have; none for a figure the
        // baseline lacks or has as zero; the table shows them.
        let mut base = Report::new("pairs");
        base.figure("delivered_per_sec", 1000.0);
        base.figure("sent_p99_us", 200.0);
        base.figure("zero", 0.0);
        let mut run = Report::new("pairs");
        run.figure("delivered_per_sec", 1500.0);
        run.figure("sent_p99_us", 100.0);
        run.figure("zero", 5.0);
        run.figure("new_figure", 1.0);
        let r = ratios(&run, &base);
        assert_eq!(r.len(), 2);
        assert_eq!(r["delivered_per_sec"], 1.5);
        assert_eq!(r["sent_p99_us"], 0.5);
        let table = run.table(Some(&base));
        assert!(
            table.contains("1.50x") && table.contains("0.50x"),
            "{table}"
        );
    }

    #[test]
    fn reports_round_trip_through_json_files() {
        // Goal: what `write` stores, `read` gives back; a broken file is a
        // clear error, not a panic.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let mut report = Report::new("drain");
        report.param("devices", 10);
        report.latency(
            "drain",
            &Percentiles {
                count: 3,
                p50_us: 1,
                p90_us: 2,
                p99_us: 3,
                p999_us: 4,
                max_us: 5,
            },
        );
        report.tally.expected = 7;
        report.write(&path).unwrap();
        assert_eq!(Report::read(&path).unwrap(), report);
        std::fs::write(&path, "{oops").unwrap();
        assert!(Report::read(&path).unwrap_err().contains("not a report"));
    }
}
