//! The client and operator commands as clap parses them, and where each
//! one goes: `run` hands a parsed command to its module (`cli`, `verify`,
//! `serve`, `admin`, `migrate`, `bench`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use missive_proto::rest::PresenceVisibility;

use crate::cli::UserListChange;
use crate::{admin, bench, cli, migrate, serve, verify};

#[derive(Subcommand)]
pub(crate) enum Command {
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
    Send(SendArgs),
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
    Verify(VerifyArgs),
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
    Listen(ListenArgs),
    /// Manage groups; every command but `leave` prints the group as JSON.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Set your reaction to a message, or remove it with --remove.
    React(ReactArgs),
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
    History(HistoryArgs),
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
    Contacts(ContactsArgs),
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
pub(crate) enum GroupCommand {
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
pub(crate) enum ContactsAction {
    List,
    Add,
    Remove,
}

/// Who may see your presence.
#[derive(Clone, Copy, ValueEnum)]
pub enum Visibility {
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

/// `missive send`: a text, with its files, to a user or into a conversation.
#[derive(Args)]
pub(crate) struct SendArgs {
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
}

/// `missive verify`: start, answer or list short-code verifications.
#[derive(Args)]
pub(crate) struct VerifyArgs {
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
}

/// `missive listen`: what to print and when to stop, over which transport.
#[derive(Args)]
pub(crate) struct ListenArgs {
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
}

/// `missive react`: set or remove a reaction.
#[derive(Args)]
pub(crate) struct ReactArgs {
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
}

/// `missive history`: which conversation and which page.
#[derive(Args)]
pub(crate) struct HistoryArgs {
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
}

/// `missive contacts`: list, add or remove.
#[derive(Args)]
pub(crate) struct ContactsArgs {
    /// What to do.
    #[arg(value_enum, default_value_t = ContactsAction::List)]
    action: ContactsAction,
    /// The user to add or remove.
    #[arg(value_name = "USER", required_if_eq_any([("action", "add"), ("action", "remove")]))]
    user: Option<String>,
    #[command(flatten)]
    client: cli::ClientArgs,
}

/// Runs a parsed command; its exit status is the process's.
pub(crate) async fn run(command: Command) -> ExitCode {
    match command {
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
        Command::Send(send) => send.run().await,
        Command::Encrypt {
            conversation,
            client,
        } => cli::encrypt(&client, &conversation).await,
        Command::Verify(verify) => verify.run().await,
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
        Command::Listen(listen) => listen.run().await,
        Command::Group { command } => group(command).await,
        Command::React(react) => react.run().await,
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
        Command::History(history) => history.run().await,
        Command::Conversations { client } => cli::conversations(&client).await,
        Command::Receipts {
            conversation,
            message_id,
            client,
        } => cli::receipts(&client, conversation, &message_id).await,
        Command::Contacts(contacts) => contacts.run().await,
        Command::Block { user, client } => UserListChange::Block.run(&client, &user).await,
        Command::Unblock { user, client } => UserListChange::Unblock.run(&client, &user).await,
        Command::Blocks { client } => cli::blocks(&client).await,
        Command::Presence { users, client } => cli::presence(&client, &users).await,
        Command::Privacy { presence, client } => {
            cli::privacy(&client, presence.map(PresenceVisibility::from)).await
        }
        Command::Devices { client } => cli::devices(&client).await,
        Command::Revoke { device_id, client } => cli::revoke(&client, device_id).await,
        Command::Logout { client } => cli::logout(&client).await,
    }
}

impl SendArgs {
    async fn run(self) -> ExitCode {
        let to = match (self.group, self.to) {
            (Some(group), _) => cli::Recipient::Conversation(group),
            (None, Some(to)) => cli::Recipient::User(to),
            // clap requires USER unless --group is given.
            (None, None) => unreachable!("clap enforces USER or --group"),
        };
        let outgoing = cli::Outgoing {
            text: self.text,
            reply_to: self.reply_to,
            files: self.files,
            client_msg_id: self.client_msg_id,
            encrypted: self.encrypted,
        };
        cli::send(&self.client, to, outgoing).await
    }
}

impl VerifyArgs {
    async fn run(self) -> ExitCode {
        let options = verify::VerifyOptions {
            user: self.user,
            device: self.device,
            accept: self.accept,
            status: self.status,
            timeout: std::time::Duration::from_secs(self.timeout_secs),
        };
        verify::verify(&self.client, options).await
    }
}

impl ListenArgs {
    async fn run(self) -> ExitCode {
        let options = cli::ListenOptions {
            count: self.count,
            idle_secs: self.idle_secs,
            ack: !self.no_ack,
            ephemeral: self.ephemeral,
            presence: self.presence,
        };
        if self.poll {
            cli::listen_poll(&self.client, options).await
        } else {
            cli::listen(&self.client, options).await
        }
    }
}

impl ReactArgs {
    async fn run(self) -> ExitCode {
        let emoji = if self.remove {
            None
        } else {
            self.emoji.as_deref()
        };
        let target = &self.message_id;
        cli::react(
            &self.client,
            self.conversation,
            target,
            emoji,
            self.client_msg_id,
        )
        .await
    }
}

impl HistoryArgs {
    async fn run(self) -> ExitCode {
        let page = cli::HistoryPage {
            before: self.before,
            after: self.after,
            limit: self.limit,
        };
        cli::history(&self.client, &self.conversation, page).await
    }
}

impl ContactsArgs {
    async fn run(self) -> ExitCode {
        let client = &self.client;
        match (self.action, self.user) {
            (ContactsAction::List, None) => cli::contacts(client).await,
            (ContactsAction::Add, Some(user)) => {
                UserListChange::AddContact.run(client, &user).await
            }
            (ContactsAction::Remove, Some(user)) => {
                UserListChange::RemoveContact.run(client, &user).await
            }
            (ContactsAction::List, Some(_)) => {
                eprintln!("error: `contacts list` takes no USER");
                ExitCode::from(2)
            }
            // clap requires USER for add and remove.
            (_, None) => unreachable!("clap enforces USER for add/remove"),
        }
    }
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
