//! `missive admin`: an operator's commands, run against the configured
//! store directly (the same configuration layers as `serve`), whether a
//! server is running on it or not. Revocations reach running servers
//! through the store's numbered revocations (each node reads them every
//! second) and, in cluster mode, the bus at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use missive_core::model::{AccountSummary, DeviceRecord};
use missive_core::{DeviceId, SystemClock};
use missive_server::service::ServiceError;
use missive_server::{App, Config};
use serde::Serialize;

use crate::backup;
use crate::cli::{self, PasswordArgs};
use crate::serve::layered_config;

#[derive(clap::Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    action: Action,
}

/// Which store to work on; as `serve` takes them.
#[derive(clap::Args, Serialize)]
struct TargetArgs {
    /// TOML configuration file (see missive.example.toml).
    #[arg(long, global = true)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The server's data directory (its SQLite database) [default:
    /// ./missive-data].
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip_serializing_if = "StoreUrl::is_empty")]
    store: StoreUrl,
    #[command(flatten)]
    #[serde(skip_serializing_if = "BusUrl::is_empty")]
    bus: BusUrl,
}

#[derive(clap::Args, Serialize)]
struct StoreUrl {
    /// PostgreSQL URL of a cluster's store [default: SQLite in the data dir].
    #[arg(long = "store", global = true)]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    store_url: Option<String>,
}

impl StoreUrl {
    fn is_empty(&self) -> bool {
        self.store_url.is_none()
    }
}

#[derive(clap::Args, Serialize)]
struct BusUrl {
    /// A cluster's NATS URL: running nodes then hear of revocations at
    /// once rather than within a second.
    #[arg(long = "bus", global = true)]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    bus_url: Option<String>,
}

impl BusUrl {
    fn is_empty(&self) -> bool {
        self.bus_url.is_none()
    }
}

#[derive(clap::Subcommand)]
enum Action {
    /// List every account with its number of devices.
    Users,
    /// Create an account, whatever the registration mode.
    Create {
        /// The new account's name: 3-32 of a-z, 0-9, "_" and ".".
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Suspend an account: its devices are revoked (their connections
    /// close, 4003) and it cannot log in until resumed. Its conversations
    /// and messages stay.
    Suspend {
        /// The account's username.
        username: String,
    },
    /// Delete an account for good: it leaves every group, its devices are
    /// revoked, its contacts and blocks dropped, and its name is freed (its
    /// messages stay in others' chats, from "deleted.<id>").
    Delete {
        /// The account's username.
        username: String,
    },
    /// Let a suspended account log in again.
    Resume {
        /// The account's username.
        username: String,
    },
    /// Create single-use invite codes for registration mode `invite`; they
    /// are shown only this once.
    Invite {
        /// How many codes.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
        /// Days each code stays valid.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..=3650))]
        valid_days: u16,
    },
    /// List a user's devices.
    Devices {
        /// The account's username.
        username: String,
    },
    /// Revoke a user's device, or all of them; their connections close
    /// (4003) and their tokens stop working.
    Revoke {
        /// The account's username.
        username: String,
        /// The device to revoke (see `missive admin devices`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        device_id: Option<i64>,
        /// Revoke every device of the account.
        #[arg(long)]
        all: bool,
    },
    /// Copy the store (a consistent snapshot, taken while servers run on
    /// it; PostgreSQL through pg_dump) and the local media into a new
    /// directory.
    Backup {
        /// Where the backup goes: a new or empty directory.
        dir: PathBuf,
    },
    /// Put a backup into the configured store, which must be empty (no
    /// database in the data directory, or no tables in the PostgreSQL
    /// database; no server running on it), and its media into the data
    /// directory.
    Restore {
        /// A directory `missive admin backup` wrote.
        dir: PathBuf,
    },
    /// Set a user's password, for someone locked out of every device.
    ResetPassword {
        /// The account's username.
        username: String,
        /// Revoke the account's devices as well.
        #[arg(long)]
        revoke_devices: bool,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

pub(crate) async fn run(args: AdminArgs) -> ExitCode {
    let config = match layered_config(args.target.config.as_deref(), &args.target) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Files, not the store's API: a backup reads the database beside the
    // server that writes it, and a restore runs before any server does.
    if let Some(code) = copy_files(&config, &args.action).await {
        return code;
    }
    let app = match App::build(config, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(4);
        }
    };
    let done = match act(&app, args.action).await {
        Ok(done) => done,
        Err(code) => return code,
    };
    app.state().store.shutdown().await;
    match done {
        Ok(value) => cli::print_json(&value),
        Err(err) => refused(&err),
    }
}

/// Carries out a backup or a restore (a copy of the files); the exit code
/// if `action` was one of them.
async fn copy_files(config: &Config, action: &Action) -> Option<ExitCode> {
    let copied = match action {
        Action::Backup { dir } => backup::backup(config, dir).await,
        Action::Restore { dir } => backup::restore(config, dir).await,
        _ => return None,
    };
    Some(match copied {
        Ok(summary) => cli::print_json(&summary),
        Err(err) => {
            eprintln!("error: {}: {}", err.code, err.message);
            ExitCode::from(3)
        }
    })
}

/// Carries out an account action on the opened store: what to print, or
/// the store's refusal; `Err` is an exit before the store was touched (an
/// unreadable password).
async fn act(
    app: &App,
    action: Action,
) -> Result<Result<serde_json::Value, ServiceError>, ExitCode> {
    let accounts = &app.state().accounts;
    let done = match action {
        Action::Users => accounts.admin_users().await.map(|users| users_json(&users)),
        Action::Create { username, password } => {
            let password = match cli::password(&password) {
                Ok(password) => password,
                Err(code) => return Err(code),
            };
            accounts
                .admin_create(&username, &password)
                .await
                .map(|account| serde_json::json!({"account_id": account.0, "username": username}))
        }
        Action::Suspend { username } => accounts
            .admin_suspend(&username, true)
            .await
            .map(|revoked| revoked_json(&revoked)),
        Action::Delete { username } => accounts
            .admin_delete(&username, &app.state().groups)
            .await
            .map(|(revoked, groups_left)| {
                serde_json::json!({
                    "deleted": username,
                    "revoked": revoked.iter().map(|device| device.0).collect::<Vec<_>>(),
                    "groups_left": groups_left,
                })
            }),
        Action::Resume { username } => accounts
            .admin_suspend(&username, false)
            .await
            .map(|_| serde_json::json!({"resumed": username})),
        Action::Invite { count, valid_days } => accounts
            .admin_invite(usize::from(count), u64::from(valid_days) * 24 * 60 * 60)
            .await
            .map(|(codes, expires_ms)| {
                serde_json::json!({"invites": codes, "expires_ms": expires_ms})
            }),
        Action::Devices { username } => accounts
            .admin_devices(&username)
            .await
            .map(|devices| devices_json(&devices)),
        Action::Revoke {
            username,
            device_id,
            all: _,
        } => accounts
            .admin_revoke(&username, device_id.map(DeviceId))
            .await
            .map(|revoked| revoked_json(&revoked)),
        Action::ResetPassword {
            username,
            revoke_devices,
            password,
        } => {
            let password = match cli::password(&password) {
                Ok(password) => password,
                Err(code) => return Err(code),
            };
            accounts
                .admin_reset_password(&username, &password, revoke_devices)
                .await
                .map(|revoked| revoked_json(&revoked))
        }
        // Answered above, before the store was opened.
        Action::Backup { .. } | Action::Restore { .. } => return Err(ExitCode::from(1)),
    };
    Ok(done)
}

fn users_json(users: &[AccountSummary]) -> serde_json::Value {
    serde_json::json!({"users": users.iter().map(|user| serde_json::json!({
        "account_id": user.id.0,
        "username": user.username,
        "created_ms": user.created_ms,
        "devices": user.devices,
        "suspended": user.suspended,
    })).collect::<Vec<_>>()})
}

fn devices_json(devices: &[DeviceRecord]) -> serde_json::Value {
    serde_json::json!({"devices": devices.iter().map(|device| serde_json::json!({
        "device_id": device.id.0,
        "name": device.name,
        "created_ms": device.created_ms,
        "last_seen_ms": device.last_seen_ms,
    })).collect::<Vec<_>>()})
}

fn revoked_json(revoked: &[DeviceId]) -> serde_json::Value {
    serde_json::json!({"revoked": revoked.iter().map(|device| device.0).collect::<Vec<_>>()})
}

/// Refusals exit 3 with the code, as the client commands do.
fn refused(err: &ServiceError) -> ExitCode {
    eprintln!("error: {}: {}", err.code.as_str(), err.message);
    ExitCode::from(3)
}
