//! The `missive` binary: the server (`serve`) and the scriptable client
//! commands, in one executable. This file only parses flags and dispatches.

mod admin;
mod backup;
mod bench;
mod chat;
mod cli;
mod encryption;
mod file_keys;
mod migrate;
mod profile;
mod serve;
mod text_output;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use missive_proto::rest::PresenceVisibility;

#[derive(Parser)]
#[command(
    name = "missive",
    version,
    about = "A WhatsApp-style messaging server and its clients"
)]
struct Args {
    /// How client and admin commands print: `json` (one JSON value per
    /// line, for scripts) or `text` (for people).
    #[arg(
        long,
        global = true,
        env = "MISSIVE_OUTPUT",
        value_enum,
        default_value_t
    )]
    output: text_output::Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults: SQLite + media under --data-dir).
    Serve(serve::ServeArgs),
    /// Operator commands against the server's store (running or not):
    /// list, create, suspend, resume and delete users, reset a password,
    /// list and revoke devices, make invite codes.
    Admin(admin::AdminArgs),
    /// Move a stopped embedded server's data (accounts, devices, messages,
    /// cursors, media…) into a PostgreSQL database for a cluster; resumes
    /// where an interrupted run stopped.
    Migrate(migrate::MigrateArgs),
    /// Load-generate against a running server and report throughput,
    /// latency, loss and duplicates (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Create an account.
    Register {
        /// The new account's name: 3-32 of a-z, 0-9, "_" and ".".
        username: String,
        /// An invite code from the server's operator (needed when the
        /// server takes registrations by invite only).
        #[arg(long, env = "MISSIVE_INVITE")]
        invite: Option<String>,
        #[command(flatten)]
        password: cli::PasswordArgs,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Log in as a new device and remember its token under --profile.
    Login {
        /// The account to log in to.
        username: String,
        /// Name shown in `missive devices`.
        #[arg(long, default_value = "cli")]
        device_name: String,
        #[command(flatten)]
        password: cli::PasswordArgs,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Open the full-screen terminal chat app as the profile's device (`?`
    /// in the app lists its keys).
    Chat {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Mark a conversation read, by default up to its newest message;
    /// prints the read cursor.
    Read {
        /// The conversation: its id, the other member's username (1:1) or
        /// the group's name.
        conversation: String,
        /// Read up to and including this seq [default: the newest].
        #[arg(long, value_name = "SEQ")]
        up_to: Option<i64>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Send a text to a user (1:1) or, with --group, into a conversation;
    /// prints the `sent` reply as JSON.
    #[command(allow_missing_positional = true)]
    Send {
        /// Recipient username; leave out with --group.
        #[arg(
            value_name = "USER",
            required_unless_present = "group",
            conflicts_with = "group"
        )]
        to: Option<String>,
        /// The message; with --file, its caption (may be "").
        text: String,
        /// Send into this conversation: a group by its id or name, or a 1:1
        /// by its id.
        #[arg(long, visible_alias = "conversation", value_name = "GROUP")]
        group: Option<String>,
        /// Id of the message (same conversation) this text replies to.
        #[arg(long, value_name = "MESSAGE_ID")]
        reply_to: Option<String>,
        /// Upload this file and attach it (repeatable); TEXT is the caption
        /// and may be "".
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Idempotency key; a retry with the same key stores nothing twice.
        #[arg(long)]
        client_msg_id: Option<String>,
        /// End-to-end encrypt it (done anyway in an encrypted
        /// conversation); a first message to a user then creates an
        /// encrypted 1:1.
        #[arg(long)]
        encrypted: bool,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Turn end-to-end encryption on in a conversation, for good (any
    /// member of a 1:1, an admin of a group); prints `{"encrypted": ID}`.
    Encrypt {
        /// The conversation: its id, the other member's username (1:1), or
        /// a group's name.
        conversation: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Verify another device's keys by comparing short codes (emoji) with
    /// its user: `verify USER` starts, `verify --accept` answers; both
    /// print the codes and ask whether they match. `--status` lists USER's
    /// devices and which this device verified.
    Verify {
        /// The user whose device to verify (with --accept: only from them).
        user: Option<String>,
        /// Which of their devices, when they have several.
        #[arg(long)]
        device: Option<i64>,
        /// Wait for another device to start, and answer it.
        #[arg(long)]
        accept: bool,
        /// List USER's devices and whether each is verified.
        #[arg(long)]
        status: bool,
        /// Give up when the other device has not answered by then.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Make messages sent from now on disappear after SECS (3600, 86400,
    /// 604800 or 7776000; 0 turns it off). Any member of a 1:1, an admin
    /// of a group.
    Timer {
        /// The conversation: its id, the other member's username (1:1), or
        /// a group's name.
        conversation: String,
        /// Seconds: 0 (off), 3600, 86400, 604800 or 7776000.
        secs: u32,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Download a media object to a file; prints its type and size.
    Download {
        /// The media id from the message's `media` list.
        media_id: String,
        /// Where to write it [default: the name it was sent under (else its
        /// id) in the current directory, never over an existing file].
        #[arg(long, short = 'o')]
        to: Option<PathBuf>,
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
        /// Also print live frames: `typing`, `presence`, `keys_low`,
        /// `devices_changed` (never acked; they count for --count).
        #[arg(long)]
        ephemeral: bool,
        /// Subscribe to this user's presence (repeatable); needs --ephemeral.
        #[arg(long, value_name = "USER", requires = "ephemeral")]
        presence: Vec<String>,
        /// Use HTTP long-polling instead of a WebSocket.
        #[arg(long, conflicts_with = "presence")]
        poll: bool,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Manage groups; every command but `leave` prints the group as JSON.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Set your reaction to a message, or remove it with --remove.
    React {
        /// The conversation's id.
        conversation: i64,
        /// The message's id.
        message_id: String,
        /// The reaction, e.g. 👍.
        #[arg(required_unless_present = "remove", conflicts_with = "remove")]
        emoji: Option<String>,
        /// Remove your reaction instead of setting one.
        #[arg(long)]
        remove: bool,
        /// Idempotency key; a retry with the same key stores nothing twice.
        #[arg(long)]
        client_msg_id: Option<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Replace the text of one of your messages.
    Edit {
        /// The conversation's id.
        conversation: i64,
        /// The message's id.
        message_id: String,
        /// The new text.
        text: String,
        /// Idempotency key; a retry with the same key stores nothing twice.
        #[arg(long)]
        client_msg_id: Option<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Delete one of your messages for everyone.
    Delete {
        /// The conversation's id.
        conversation: i64,
        /// The message's id.
        message_id: String,
        /// Idempotency key; a retry with the same key stores nothing twice.
        #[arg(long)]
        client_msg_id: Option<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Print a page of a conversation's history (newest first unless --after).
    History {
        /// The conversation: its id, the other member's username (1:1) or
        /// the group's name.
        conversation: String,
        /// Only events with a seq below this.
        #[arg(long, value_name = "SEQ", conflicts_with = "after")]
        before: Option<i64>,
        /// Only events with a seq above this, oldest first.
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
        /// At most this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// List your conversations, most recent activity first.
    Conversations {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Who received and read a message.
    Receipts {
        /// The conversation's id.
        conversation: i64,
        /// The message's id.
        message_id: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// List (default), add or remove contacts.
    Contacts {
        /// What to do.
        #[arg(value_enum, default_value_t = ContactsAction::List)]
        action: ContactsAction,
        /// The user to add or remove.
        #[arg(value_name = "USER", required_if_eq_any([("action", "add"), ("action", "remove")]))]
        user: Option<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Block a user: no 1:1 messages either way, and neither sees the other's presence.
    Block {
        /// The user to block.
        user: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Unblock a user.
    Unblock {
        /// The user to unblock.
        user: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// List the users you blocked.
    Blocks {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Print these users' presence, one JSON line each, and exit.
    Presence {
        /// Whose presence to print.
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Print who may see your presence, or set it.
    Privacy {
        /// Who may see your presence from now on.
        #[arg(value_enum)]
        presence: Option<Visibility>,
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
        /// The device's id (see `missive devices`).
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

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group with you as its admin.
    Create {
        /// The group's name (1-64 bytes).
        name: String,
        /// Add this user too (repeatable).
        #[arg(long = "member", value_name = "USER")]
        members: Vec<String>,
        /// End-to-end encrypted from the start.
        #[arg(long)]
        encrypted: bool,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Add members (admins only).
    Add {
        /// The group's conversation id.
        group: i64,
        /// The users to add.
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Remove a member (admins only).
    Remove {
        /// The group's conversation id.
        group: i64,
        /// The member's username.
        user: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Leave the group; prints `{"left": GROUP_ID}`.
    Leave {
        /// The group's conversation id.
        group: i64,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Print the group's name and members.
    Info {
        /// The group's conversation id.
        group: i64,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Rename the group (admins only).
    Rename {
        /// The group's conversation id.
        group: i64,
        /// The new name (1-64 bytes).
        name: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Make a member an admin (admins only).
    Promote {
        /// The group's conversation id.
        group: i64,
        /// The member's username.
        user: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Make an admin a plain member (admins only).
    Demote {
        /// The group's conversation id.
        group: i64,
        /// The member's username.
        user: String,
        #[command(flatten)]
        client: cli::ClientArgs,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ContactsAction {
    List,
    Add,
    Remove,
}

/// Who may see your presence.
#[derive(Clone, Copy, ValueEnum)]
enum Visibility {
    Everyone,
    Contacts,
    Nobody,
}

impl From<Visibility> for PresenceVisibility {
    fn from(visibility: Visibility) -> Self {
        match visibility {
            Visibility::Everyone => Self::Everyone,
            Visibility::Contacts => Self::Contacts,
            Visibility::Nobody => Self::Nobody,
        }
    }
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
    cli::set_output(args.output);
    runtime.block_on(async move {
        match args.command {
            Command::Serve(serve_args) => serve::run(serve_args).await,
            Command::Admin(admin_args) => admin::run(admin_args).await,
            Command::Migrate(migrate_args) => migrate::run(migrate_args).await,
            Command::Bench(bench_args) => bench::run(bench_args).await,
            Command::Chat { client } => cli::chat(&client).await,
            Command::Register {
                username,
                invite,
                password,
                client,
            } => cli::register(&client, &password, &username, invite.as_deref()).await,
            Command::Login {
                username,
                device_name,
                password,
                client,
            } => cli::login(&client, &password, &username, &device_name).await,
            Command::Read {
                conversation,
                up_to,
                client,
            } => cli::read(&client, &conversation, up_to).await,
            Command::Send {
                to,
                text,
                group,
                reply_to,
                files,
                client_msg_id,
                encrypted,
                client,
            } => {
                let to = match (group, to) {
                    (Some(group), _) => cli::Recipient::Conversation(group),
                    (None, Some(to)) => cli::Recipient::User(to),
                    // clap requires USER unless --group is given.
                    (None, None) => unreachable!("clap enforces USER or --group"),
                };
                let outgoing = cli::Outgoing {
                    text,
                    reply_to,
                    files,
                    client_msg_id,
                    encrypted,
                };
                cli::send(&client, to, outgoing).await
            }
            Command::Encrypt {
                conversation,
                client,
            } => cli::encrypt(&client, &conversation).await,
            Command::Verify {
                user,
                device,
                accept,
                status,
                timeout_secs,
                client,
            } => {
                let options = verify::VerifyOptions {
                    user,
                    device,
                    accept,
                    status,
                    timeout: std::time::Duration::from_secs(timeout_secs),
                };
                verify::verify(&client, options).await
            }
            Command::Timer {
                conversation,
                secs,
                client,
            } => cli::set_timer(&client, &conversation, secs).await,
            Command::Download {
                media_id,
                to,
                client,
            } => cli::download(&client, &media_id, to).await,
            Command::Listen {
                count,
                idle_secs,
                no_ack,
                ephemeral,
                presence,
                poll,
                client,
            } => {
                let options = cli::ListenOptions {
                    count,
                    idle_secs,
                    ack: !no_ack,
                    ephemeral,
                    presence,
                };
                if poll {
                    cli::listen_poll(&client, options).await
                } else {
                    cli::listen(&client, options).await
                }
            }
            Command::Group { command } => group(command).await,
            Command::React {
                conversation,
                message_id,
                emoji,
                remove,
                client_msg_id,
                client,
            } => {
                let emoji = if remove { None } else { emoji.as_deref() };
                cli::react(&client, conversation, &message_id, emoji, client_msg_id).await
            }
            Command::Edit {
                conversation,
                message_id,
                text,
                client_msg_id,
                client,
            } => cli::edit(&client, conversation, &message_id, &text, client_msg_id).await,
            Command::Delete {
                conversation,
                message_id,
                client_msg_id,
                client,
            } => cli::delete(&client, conversation, &message_id, client_msg_id).await,
            Command::History {
                conversation,
                before,
                after,
                limit,
                client,
            } => {
                let page = cli::HistoryPage {
                    before,
                    after,
                    limit,
                };
                cli::history(&client, &conversation, page).await
            }
            Command::Conversations { client } => cli::conversations(&client).await,
            Command::Receipts {
                conversation,
                message_id,
                client,
            } => cli::receipts(&client, conversation, &message_id).await,
            Command::Contacts {
                action,
                user,
                client,
            } => match (action, user) {
                (ContactsAction::List, None) => cli::contacts(&client).await,
                (ContactsAction::Add, Some(user)) => cli::add_contact(&client, &user).await,
                (ContactsAction::Remove, Some(user)) => cli::remove_contact(&client, &user).await,
                (ContactsAction::List, Some(_)) => {
                    eprintln!("error: `contacts list` takes no USER");
                    ExitCode::from(2)
                }
                // clap requires USER for add and remove.
                (_, None) => unreachable!("clap enforces USER for add/remove"),
            },
            Command::Block { user, client } => cli::block(&client, &user).await,
            Command::Unblock { user, client } => cli::unblock(&client, &user).await,
            Command::Blocks { client } => cli::blocks(&client).await,
            Command::Presence { users, client } => cli::presence(&client, &users).await,
            Command::Privacy { presence, client } => {
                cli::privacy(&client, presence.map(PresenceVisibility::from)).await
            }
            Command::Devices { client } => cli::devices(&client).await,
            Command::Revoke { device_id, client } => cli::revoke(&client, device_id).await,
            Command::Logout { client } => cli::logout(&client).await,
        }
    })
}

async fn group(command: GroupCommand) -> ExitCode {
    match command {
        GroupCommand::Create {
            name,
            members,
            encrypted,
            client,
        } => cli::group_create(&client, &name, &members, encrypted.then_some(true)).await,
        GroupCommand::Add {
            group,
            users,
            client,
        } => cli::group_add(&client, group, &users).await,
        GroupCommand::Remove {
            group,
            user,
            client,
        } => cli::group_remove(&client, group, &user).await,
        GroupCommand::Leave { group, client } => cli::group_leave(&client, group).await,
        GroupCommand::Info { group, client } => cli::group_info(&client, group).await,
        GroupCommand::Rename {
            group,
            name,
            client,
        } => cli::group_rename(&client, group, &name).await,
        GroupCommand::Promote {
            group,
            user,
            client,
        } => cli::group_promote(&client, group, &user).await,
        GroupCommand::Demote {
            group,
            user,
            client,
        } => cli::group_demote(&client, group, &user).await,
    }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Args;

    /// Every command, as its path of names (`group add`).
    fn commands(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name()).trim().to_owned();
            out.push((path.clone(), sub.clone()));
            commands(sub, path, out);
        }
    }

    #[test]
    fn every_argument_is_explained_and_passwords_are_asked_only_where_used() {
        // Goal: `--help` describes each argument, positional or option
        // (no bare <USERNAME>), and --password appears only on the
        // commands that send one.
        let mut all = Vec::new();
        commands(&Args::command(), String::new(), &mut all);
        let unexplained: Vec<String> = all
            .iter()
            .flat_map(|(path, command)| {
                command
                    .get_arguments()
                    .filter(|arg| arg.get_help().is_none() && !arg.is_hide_set())
                    .map(move |arg| format!("`missive {path}` {}", arg.get_id()))
            })
            .collect();
        assert!(unexplained.is_empty(), "no help text: {unexplained:#?}");
        for (path, command) in &all {
            let has_password = command
                .get_arguments()
                .any(|arg| arg.get_long() == Some("password"));
            assert_eq!(
                has_password,
                matches!(
                    path.as_str(),
                    "register" | "login" | "admin reset-password" | "admin create"
                ),
                "`missive {path}`"
            );
        }
    }
}
