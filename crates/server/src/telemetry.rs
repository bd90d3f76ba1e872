//! Logs and metrics setup. Metric names are prefixed `missive_` and carry
//! their unit (`_seconds`, `_total`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates whose debug and trace output dumps WebSocket frames — `auth`
/// frames with their tokens, message texts — and so never log below info,
/// whatever the configured filter says.
const PAYLOAD_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// `filter` with the payload-carrying crates capped at info.
fn capped(mut filter: EnvFilter) -> EnvFilter {
    for target in PAYLOAD_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global log subscriber. Later calls are no-ops, so tests may
/// call it freely. Colour only when stderr is a terminal: no escape codes
/// in files, pipes or the journal.
pub fn init_logging(config: &LogConfig) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        // `RUST_LOG` wins over `log.level`.
        .with_env_filter(capped(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level)),
        ))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` if
/// another recorder was installed first (then `/metrics` is empty).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_gauge!("missive_connections", "Authenticated WebSocket connections");
    metrics::describe_counter!("missive_frames_in_total", "Frames received from clients");
    metrics::describe_counter!("missive_frames_out_total", "Frames sent to clients");
    metrics::describe_counter!(
        "missive_sends_total",
        "Messages stored (duplicates excluded)"
    );
    metrics::describe_counter!(
        "missive_deliveries_total",
        "Stored events written to a connection"
    );
    metrics::describe_counter!(
        "missive_acks_total",
        "Acks applied (one per conversation point)"
    );
    metrics::describe_gauge!(
        "missive_events_waiting",
        "Events above every device's positions, summed at each sweep"
    );
    metrics::describe_histogram!("missive_store_batch_jobs", "Operations per store commit");
    metrics::describe_histogram!("missive_store_commit_seconds", "Store commit latency");
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn frame_dumps_stay_out_of_the_log_at_any_level() {
        // Goal: the payload crates' debug lines (frame dumps with tokens)
        // are dropped even when the configured level is debug, while the
        // server's own debug lines pass at that level and not at info.
        for (level, own_debug_kept) in [("info", false), ("debug", true)] {
            let written = Arc::new(Mutex::new(Vec::<u8>::new()));
            let sink = Arc::clone(&written);
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(capped(EnvFilter::new(level)))
                .with_ansi(false)
                .with_writer(move || Sink(Arc::clone(&sink)))
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::debug!(target: "tungstenite::protocol", "frame dump auth token");
                tracing::debug!(target: "tokio_tungstenite", "frame dump text");
                tracing::debug!(target: "missive_server::gateway", "own debug line");
                tracing::info!(target: "tungstenite::protocol", "an info line");
            });
            let log = String::from_utf8(written.lock().unwrap().clone()).unwrap();
            assert!(!log.contains("frame dump"), "level {level}: {log}");
            assert_eq!(
                log.contains("own debug line"),
                own_debug_kept,
                "level {level}: {log}"
            );
            assert!(log.contains("an info line"), "level {level}: {log}");
        }
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
