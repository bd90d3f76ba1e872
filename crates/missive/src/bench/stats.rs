//! Latency recording: an HDR histogram of microseconds and the percentiles
//! the reports quote.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded exactly; anything above is clamped (and still
/// counted), so one stuck message cannot break a run.
const LATENCY_MAX_US: u64 = 60_000_000;

/// The samples themselves, 4 bytes each; the histogram is made only when
/// the percentiles are asked for. A histogram of this precision is ~100
/// KiB, and one per connection made on its first record (2,000 of them at
/// the start of `pairs` 1,000) stalled the load generator on page faults
/// for a few hundred milliseconds, inside the measured phase.
#[derive(Clone, Default)]
pub(super) struct Latencies {
    micros: Vec<u32>,
}

/// The figures a report quotes for one latency, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

fn histogram() -> Histogram<u64> {
    // Three significant digits: 0.1% resolution at every magnitude.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

impl Latencies {
    pub(super) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // LATENCY_MAX_US fits in a u32.
        self.micros.push(
            micros
                .clamp(1, LATENCY_MAX_US)
                .try_into()
                .unwrap_or(u32::MAX),
        );
    }

    pub(super) fn count(&self) -> u64 {
        self.micros.len() as u64
    }

    pub(super) fn merge(&mut self, other: &Latencies) {
        self.micros.extend_from_slice(&other.micros);
    }

    pub(super) fn percentiles(&self) -> Percentiles {
        if self.micros.is_empty() {
            return Percentiles::default();
        }
        let mut histogram = histogram();
        for &micros in &self.micros {
            histogram.saturating_record(u64::from(micros));
        }
        let at = |q: f64| histogram.value_at_quantile(q);
        Percentiles {
            count: histogram.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: histogram.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recorded_values() {
        // Goal: quantiles of 1..=1000 ms land on the matching values within
        // the histogram's 0.1% resolution; an empty recorder reports zeros.
        let mut latencies = Latencies::default();
        assert_eq!(latencies.percentiles(), Percentiles::default());
        for ms in 1..=1000u64 {
            latencies.record(Duration::from_millis(ms));
        }
        let p = latencies.percentiles();
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert_eq!(p.count, 1000);
        assert!(near(p.p50_us, 500_000), "{p:?}");
        assert!(near(p.p90_us, 900_000), "{p:?}");
        assert!(near(p.p99_us, 990_000), "{p:?}");
        assert!(near(p.p999_us, 999_000), "{p:?}");
        assert!(near(p.max_us, 1_000_000), "{p:?}");
    }

    #[test]
    fn merging_and_clamping() {
        // Goal: merged recorders equal one recorder of everything;
        // out-of-range values are clamped, not dropped.
        let (mut a, mut b, mut all) = (
            Latencies::default(),
            Latencies::default(),
            Latencies::default(),
        );
        for us in [5u64, 50, 500, 5_000] {
            a.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        for us in [7u64, 70_000, 700_000] {
            b.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.percentiles(), all.percentiles());
        let mut huge = Latencies::default();
        huge.record(Duration::from_secs(3600));
        huge.record(Duration::ZERO);
        assert_eq!(huge.count(), 2);
        assert_eq!(
            huge.percentiles().max_us,
            histogram().highest_equivalent(LATENCY_MAX_US)
        );
    }
}
