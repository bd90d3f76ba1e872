//! Logs and metrics setup. Metric names are prefixed `missive_` and carry
//! their unit (`_seconds`, `_total`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates whose trace output carries WebSocket payloads — `auth` frames
/// with their tokens, message texts — and so never log above debug,
/// whatever the configured filter says.
const PAYLOAD_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Installs the global log subscriber. Later calls are no-ops, so tests may
/// call it freely.
pub fn init_logging(config: &LogConfig) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    for target in PAYLOAD_TARGETS {
        if let Ok(directive) = format!("{target}=debug").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
