//! `missive serve`: layer the configuration, bind, run until SIGTERM/ctrl-c.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use figment::providers::Serialized;
use missive_core::SystemClock;
use missive_server::config::{FsyncMode, LogFormat};
use missive_server::{App, Config, telemetry};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Serialize)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see missive.example.toml).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// Directory for the database and media [default: ./missive-data].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip_serializing_if = "LogArgs::is_empty")]
    log: LogArgs,
    #[command(flatten)]
    #[serde(skip_serializing_if = "StoreArgs::is_empty")]
    store: StoreArgs,
    #[command(flatten)]
    #[serde(skip_serializing_if = "BusArgs::is_empty")]
    bus: BusArgs,
    #[command(flatten)]
    #[serde(skip_serializing_if = "ClusterArgs::is_empty")]
    cluster: ClusterArgs,
}

#[derive(clap::Args, Serialize)]
struct BusArgs {
    /// NATS URL for cluster mode (nats://host:4222) [default: in-process].
    #[arg(long = "bus")]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    bus_url: Option<String>,
}

impl BusArgs {
    fn is_empty(&self) -> bool {
        self.bus_url.is_none()
    }
}

#[derive(clap::Args, Serialize)]
struct ClusterArgs {
    /// This node's name in logs and the session directory [default: random].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
}

impl ClusterArgs {
    fn is_empty(&self) -> bool {
        self.node_id.is_none()
    }
}

#[derive(clap::Args, Serialize)]
struct LogArgs {
    /// Log format.
    #[arg(long = "log-format", value_enum)]
    #[serde(rename = "format", skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormatArg>,
}

impl LogArgs {
    fn is_empty(&self) -> bool {
        self.log_format.is_none()
    }
}

#[derive(clap::Args, Serialize)]
struct StoreArgs {
    /// PostgreSQL URL for cluster mode (postgres://user@host:5432/db)
    /// [default: SQLite in the data dir].
    #[arg(long = "store")]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    store_url: Option<String>,
    /// `always`: reply `sent` only once on disk; `off`: benchmarks only.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    fsync: Option<FsyncArg>,
}

impl StoreArgs {
    fn is_empty(&self) -> bool {
        self.fsync.is_none() && self.store_url.is_none()
    }
}

#[derive(Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum FsyncArg {
    Always,
    Off,
}

// Keep the flag enums in step with the config enums they stand for.
const _: fn(LogFormatArg) -> LogFormat = |arg| match arg {
    LogFormatArg::Pretty => LogFormat::Pretty,
    LogFormatArg::Json => LogFormat::Json,
};
const _: fn(FsyncArg) -> FsyncMode = |arg| match arg {
    FsyncArg::Always => FsyncMode::Always,
    FsyncArg::Off => FsyncMode::Off,
};

/// The configuration's layers with `flags` on top (those set), and logging
/// set up as it says; a bad configuration is reported, exit status 2.
pub(crate) fn layered_config(
    file: Option<&std::path::Path>,
    flags: &impl Serialize,
) -> Result<Config, ExitCode> {
    let figment = Config::figment(file).merge(Serialized::defaults(flags));
    let config = Config::from_figment(&figment).map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::from(2)
    })?;
    telemetry::init_logging(&config.log);
    Ok(config)
}

pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    let config = match layered_config(args.config.as_deref(), &args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let _ = telemetry::prometheus();
    let listener = match missive_server::accept::listen(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            return ExitCode::from(1);
        }
    };
    let app = match App::build(config, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match app.run(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: server failed: {err}");
            ExitCode::from(1)
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}
