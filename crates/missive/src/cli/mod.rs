//! The scriptable client commands. Output is JSON on stdout; errors go to
//! stderr as `error: <code>: <message>` with a stable exit status:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | unexpected failure (I/O, protocol) |
//! | 2 | bad usage or no password given |
//! | 3 | the server refused the request (typed error code printed) |
//! | 4 | the server could not be reached, or closed the connection |
//! | 5 | not logged in under this profile |
//!
//! This module holds what every command shares: the arguments, loading the
//! profile, connecting, printing and the exit statuses. The commands are in
//! `account` (login, devices), `send` (texts, files, reactions, edits),
//! `media` (attachments), `listen`, `conversations` (groups, history,
//! receipts) and `social` (contacts, blocks, presence).

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use missive_client::{Api, ClientError, Connection};
use missive_proto::ServerFrame;

use crate::profile::{self, Profile};
use crate::text_output::{self, Output};

mod account;
mod conversations;
mod listen;
mod media;
mod send;
mod social;

pub(crate) use account::{chat, devices, login, logout, register, revoke};
pub(crate) use conversations::{
    HistoryPage, conversations, encrypt, group_add, group_create, group_demote, group_info,
    group_leave, group_promote, group_remove, group_rename, history, read, receipts, set_timer,
};
pub(crate) use listen::{ListenOptions, listen, listen_poll};
pub(crate) use media::download;
pub(crate) use media::safe_file_name;
pub(crate) use send::{Outgoing, Recipient, delete, edit, react, send};
pub(crate) use social::{UserListChange, blocks, contacts, presence, privacy};

#[derive(clap::Args)]
pub(crate) struct ClientArgs {
    /// Server base URL (`host:port` means `http://host:port`) [default:
    /// the profile's server, else http://127.0.0.1:8080].
    #[arg(long, env = "MISSIVE_SERVER", value_parser = server_url)]
    server: Option<String>,
    /// Which saved login to use.
    #[arg(long, env = "MISSIVE_PROFILE", default_value = "default")]
    pub(crate) profile: String,
}

/// Only on the commands that send a password.
#[derive(clap::Args)]
pub(crate) struct PasswordArgs {
    /// The password; read from stdin when absent.
    #[arg(long, env = "MISSIVE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

/// A server base URL as the client library wants it: `http://` or
/// `https://`, no trailing slash. A bare `host:port` gets `http://`; any
/// other scheme is refused here, not later as an opaque "builder error".
fn server_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("http", raw));
    let rest = rest.trim_end_matches('/');
    match scheme {
        _ if raw.is_empty() => Err("the server URL is empty".into()),
        "http" | "https" if rest.is_empty() => Err("the server URL has no host".into()),
        "http" | "https" => Ok(format!("{scheme}://{rest}")),
        other => Err(format!(
            "the server URL must start with http:// or https://, not {other}://"
        )),
    }
}

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_REFUSED: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_NOT_LOGGED_IN: u8 = 5;

/// Says what failed (not a refusal by the server) and exits 1.
pub(crate) fn failure(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_FAILURE)
}

/// A command line that cannot work: exits 2.
pub(crate) fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

pub(crate) fn fail(err: &ClientError) -> ExitCode {
    match err {
        ClientError::Refused { code, message } => {
            eprintln!("error: {}: {message}", code.as_str());
            ExitCode::from(EXIT_REFUSED)
        }
        ClientError::Transport(_) | ClientError::Closed { .. } | ClientError::Timeout => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        ClientError::Protocol(_) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

static OUTPUT: std::sync::OnceLock<Output> = std::sync::OnceLock::new();

/// How the commands print (`--output`); set once, at start.
pub(crate) fn set_output(output: Output) {
    let _ = OUTPUT.set(output);
}

/// Prints `value` as one JSON line, or with `--output text` as lines for
/// people.
pub(crate) fn print_json(value: &impl serde::Serialize) -> ExitCode {
    let printed = match OUTPUT.get().copied().unwrap_or_default() {
        Output::Json => serde_json::to_string(value),
        Output::Text => serde_json::to_value(value).map(|value| text_output::render(&value)),
    };
    match printed {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub(crate) fn password(args: &PasswordArgs) -> Result<String, ExitCode> {
    if let Some(password) = &args.password {
        return Ok(password.clone());
    }
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
        _ => {
            eprintln!(
                "error: no password: pass --password, set MISSIVE_PASSWORD, or write it to stdin"
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

const SERVER_DEFAULT: &str = "http://127.0.0.1:8080";

impl ClientArgs {
    /// Where to register or log in: `--server` or `MISSIVE_SERVER`, else
    /// the local default.
    fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(SERVER_DEFAULT)
    }
}

/// The saved login; `--server` or `MISSIVE_SERVER`, when given, wins over
/// the server saved with it (the token must then be valid there too).
pub(crate) fn load_profile(args: &ClientArgs) -> Result<Profile, ExitCode> {
    if !profile::valid_name(&args.profile) {
        eprintln!("error: invalid profile name {:?}", args.profile);
        return Err(ExitCode::from(EXIT_USAGE));
    }
    let mut saved = profile::load(&args.profile).map_err(|_| {
        eprintln!(
            "error: not logged in under profile {:?}; run `missive login`",
            args.profile
        );
        ExitCode::from(EXIT_NOT_LOGGED_IN)
    })?;
    if let Some(server) = &args.server {
        saved.server = server.clone();
    }
    Ok(saved)
}

fn generated_client_msg_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

/// A conversation as a person names it: its id, the other member's
/// username (1:1), or a group's name; a name must pick exactly one.
/// Returns the id and the conversation's last seq.
async fn find_conversation(saved: &Profile, named: &str) -> Result<(i64, i64), ExitCode> {
    let list = Api::new(&saved.server)
        .conversations(&saved.token)
        .await
        .map_err(|err| fail(&err))?;
    let by_id = named.parse::<i64>().ok();
    let matches: Vec<_> = list
        .conversations
        .iter()
        .filter(|summary| match by_id {
            Some(id) => summary.conversation == id,
            None => match summary.kind {
                missive_proto::rest::ConversationKind::Group => {
                    summary.name.as_deref() == Some(named)
                }
                missive_proto::rest::ConversationKind::Direct => {
                    named != saved.username && summary.members.iter().any(|m| m == named)
                }
            },
        })
        .collect();
    match matches[..] {
        [summary] => Ok((summary.conversation, summary.last_seq)),
        [] => {
            eprintln!("error: unknown_conversation: you have no conversation {named:?}");
            Err(ExitCode::from(EXIT_REFUSED))
        }
        _ => {
            let ids: Vec<String> = matches.iter().map(|s| s.conversation.to_string()).collect();
            eprintln!(
                "error: {named:?} names {} conversations ({}); give the id",
                matches.len(),
                ids.join(", ")
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// The id of the conversation `named` (as `find_conversation` takes it),
/// asking the server only when it is a name.
async fn conversation_id(args: &ClientArgs, named: &str) -> Result<i64, ExitCode> {
    if let Ok(id) = named.parse::<i64>() {
        return Ok(id);
    }
    let saved = load_profile(args)?;
    find_conversation(&saved, named).await.map(|(id, _)| id)
}

pub(crate) async fn connect(saved: &Profile) -> Result<Connection, ExitCode> {
    let api = Api::new(&saved.server);
    Connection::connect(&api.ws_url(), &saved.token)
        .await
        .map_err(|err| fail(&err))
}

/// Loads the profile and connects with its token.
async fn connect_as(args: &ClientArgs) -> Result<(Profile, Connection), ExitCode> {
    let saved = load_profile(args)?;
    let connection = connect(&saved).await?;
    Ok((saved, connection))
}

/// Connects with the profile's token, runs one request/reply exchange and
/// prints the reply (`sent` for every stored kind).
async fn ws_request(
    args: &ClientArgs,
    op: impl AsyncFnOnce(&mut Connection) -> Result<ServerFrame, ClientError>,
) -> ExitCode {
    let (_, mut connection) = match connect_as(args).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let result = op(&mut connection).await;
    connection.close().await;
    match result {
        Ok(reply) => print_json(&reply),
        Err(err) => fail(&err),
    }
}

/// Loads the profile, runs one REST call with its token and prints the
/// result as JSON.
async fn rest<T: serde::Serialize>(
    args: &ClientArgs,
    op: impl AsyncFnOnce(Api, String) -> Result<T, ClientError>,
) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match op(Api::new(&saved.server), saved.token).await {
        Ok(value) => print_json(&value),
        Err(err) => fail(&err),
    }
}

/// A warning about keys, on standard error.
fn warn(text: String) {
    eprintln!("warning: {text}");
}

#[cfg(test)]
mod tests {
    use super::server_url;

    #[test]
    fn a_server_url_without_a_scheme_means_http_and_other_schemes_are_refused() {
        assert_eq!(
            server_url("chat.example:8080").unwrap(),
            "http://chat.example:8080"
        );
        assert_eq!(
            server_url("https://chat.example/").unwrap(),
            "https://chat.example"
        );
        assert_eq!(
            server_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        let refused = server_url("ws://chat.example").unwrap_err();
        assert!(refused.contains("http:// or https://"), "{refused}");
        assert!(server_url("https://").unwrap_err().contains("no host"));
        assert!(server_url("  ").unwrap_err().contains("empty"));
    }
}
