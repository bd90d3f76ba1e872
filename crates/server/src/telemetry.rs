//! Logs and metrics setup. Metric names are prefixed `missive_` and carry
//! their unit (`_seconds`, `_total`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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
                // A count, not a time: operations per commit.
                .set_buckets_for_metric(
                    Matcher::Full("missive_store_batch_jobs".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                )
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Connections, frames and delivery here; the rest in the `describe_*`
/// below. Then every counter at 0.
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
    metrics::describe_counter!(
        "missive_catch_up_reads_total",
        "Reads of what waits for a live connection from the store (on connect, after a gap or a wake-up); events handed over live need none"
    );
    metrics::describe_gauge!(
        "missive_events_waiting",
        "Events above every device's positions, summed at each sweep"
    );
    metrics::describe_counter!(
        "missive_slow_consumer_closes_total",
        "Connections closed because the client read too slowly (their events stay queued)"
    );
    metrics::describe_counter!(
        "missive_connections_refused_total",
        "Connections closed at accept: the server had its most open connections, or the address its most not yet authenticated"
    );
    describe_media_push_and_cluster();
    describe_store();
    // Counters exist from the start, so an alert on their rate has a
    // series to read before the first event.
    for counter in [
        "missive_frames_in_total",
        "missive_frames_out_total",
        "missive_sends_total",
        "missive_deliveries_total",
        "missive_acks_total",
        "missive_catch_up_reads_total",
        "missive_rechecks_total",
        "missive_recheck_wakes_total",
        "missive_slow_consumer_closes_total",
        "missive_connections_refused_total",
        "missive_media_uploads_total",
        "missive_push_sent_total",
        "missive_push_failed_total",
        "missive_push_dropped_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for limit in crate::SHARED_LIMITS {
        metrics::counter!("missive_limit_spent_elsewhere_total", "limit" => limit).increment(0);
    }
}

fn describe_media_push_and_cluster() {
    metrics::describe_counter!("missive_media_uploads_total", "Media uploads stored");
    metrics::describe_counter!("missive_push_sent_total", "Push webhook calls answered 2xx");
    metrics::describe_counter!(
        "missive_push_failed_total",
        "Push webhook calls that failed after their retries"
    );
    metrics::describe_counter!(
        "missive_push_dropped_total",
        "Push notices dropped because the push queue was full"
    );
    metrics::describe_histogram!(
        "missive_connect_seconds",
        "WebSocket connect steps, seconds from the upgrade: auth_frame (the client's auth frame read), authenticated (its token checked), ready (ready written); registered: the session's registration alone"
    );
    metrics::describe_counter!(
        "missive_rechecks_total",
        "With NATS: re-checks of this node's live devices (the safety net for lost wake-ups)"
    );
    metrics::describe_counter!(
        "missive_recheck_wakes_total",
        "Live devices a re-check found with something waiting, and woke"
    );
    metrics::describe_counter!(
        "missive_limit_spent_elsewhere_total",
        "Units of a cluster-wide limit (label limit: send, upload, group_create, settings, key_claim, login, registration) that other nodes reported spending and this node debited"
    );
}

fn describe_store() {
    metrics::describe_histogram!("missive_store_batch_jobs", "Operations per store commit");
    metrics::describe_histogram!(
        "missive_store_commit_seconds",
        "Store commit latency, seconds"
    );
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
