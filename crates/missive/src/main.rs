//! The `missive` binary: the server (`serve`) and the scriptable client
//! commands, in one executable. This file only parses flags and dispatches.

mod cli;
mod profile;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "missive",
    version,
    about = "A WhatsApp-style messaging server and its clients"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults: SQLite + media under --data-dir).
    Serve(serve::ServeArgs),
    /// Create an account.
    Register {
        username: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Log in as a new device and remember its token under --profile.
    Login {
        username: String,
        /// Name shown in `missive devices`.
        #[arg(long, default_value = "cli")]
        device_name: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Send a 1:1 text; prints the `sent` reply as JSON.
    Send {
        to: String,
        text: String,
        /// Idempotency key; a retry with the same key stores nothing twice.
        #[arg(long)]
        client_msg_id: Option<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Print received messages and receipts as JSON lines, acking each after printing.
    Listen {
        /// Exit after printing this many frames.
        #[arg(long)]
        count: Option<u64>,
        /// Exit (status 0) after this long without a frame.
        #[arg(long)]
        idle_secs: Option<u64>,
        /// Do not ack: frames will be delivered again next time.
        #[arg(long)]
        no_ack: bool,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// List this account's devices.
    Devices {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Revoke a device; its connections close at once.
    Revoke {
        device_id: i64,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Revoke this profile's device and forget its token.
    Logout {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match args.command {
            Command::Serve(serve_args) => serve::run(serve_args).await,
            Command::Register { username, client } => cli::register(&client, &username).await,
            Command::Login {
                username,
                device_name,
                client,
            } => cli::login(&client, &username, &device_name).await,
            Command::Send {
                to,
                text,
                client_msg_id,
                client,
            } => cli::send(&client, &to, &text, client_msg_id).await,
            Command::Listen {
                count,
                idle_secs,
                no_ack,
                client,
            } => cli::listen(&client, count, idle_secs, !no_ack).await,
            Command::Devices { client } => cli::devices(&client).await,
            Command::Revoke { device_id, client } => cli::revoke(&client, device_id).await,
            Command::Logout { client } => cli::logout(&client).await,
        }
    })
}

/// Where profiles live: `$MISSIVE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/missive`,
/// else `~/.config/missive`.
fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MISSIVE_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("missive");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("missive")
}
