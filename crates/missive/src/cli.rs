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

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use missive_client::{Api, ClientError, Connection};
use missive_proto::rest::PresenceVisibility;
use missive_proto::{ClientFrame, ServerFrame};

use crate::encryption;
use crate::file_keys::FileKeys;
use crate::profile::{self, Profile};
use crate::text_output::{self, Output};

#[derive(clap::Args)]
pub struct ClientArgs {
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
pub struct PasswordArgs {
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
pub fn set_output(output: Output) {
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

pub fn password(args: &PasswordArgs) -> Result<String, ExitCode> {
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

/// Runs `missive chat` as the saved login.
pub async fn chat(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match crate::chat::run(&args.profile, saved).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: the terminal failed: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub async fn register(
    args: &ClientArgs,
    secret: &PasswordArgs,
    username: &str,
    invite: Option<&str>,
) -> ExitCode {
    let password = match password(secret) {
        Ok(password) => password,
        Err(code) => return code,
    };
    match Api::new(args.server())
        .register_with_invite(username, &password, invite)
        .await
    {
        Ok(created) => print_json(&created),
        Err(err) => fail(&err),
    }
}

pub async fn login(
    args: &ClientArgs,
    secret: &PasswordArgs,
    username: &str,
    device_name: &str,
) -> ExitCode {
    if !profile::valid_name(&args.profile) {
        eprintln!("error: invalid profile name {:?}", args.profile);
        return ExitCode::from(EXIT_USAGE);
    }
    let password = match password(secret) {
        Ok(password) => password,
        Err(code) => return code,
    };
    let session = match Api::new(args.server())
        .login(username, &password, device_name)
        .await
    {
        Ok(session) => session,
        Err(err) => return fail(&err),
    };
    let saved = Profile {
        server: args.server().to_owned(),
        username: session.username.clone(),
        device_id: session.device_id,
        token: session.token,
    };
    if let Err(err) = profile::save(&args.profile, &saved) {
        eprintln!("error: cannot save the profile: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    // A new device: new keys, published so others can encrypt for it.
    let mut vault = missive_e2ee::Vault::new(&saved.username, saved.device_id);
    let api = Api::new(&saved.server);
    if let Err(err) = encryption::publish(&api, &saved.token, &mut vault).await {
        return fail(&err);
    }
    if let Err(err) = encryption::save(&args.profile, &vault) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    print_json(&serde_json::json!({
        "username": saved.username,
        "device_id": saved.device_id,
        "profile": args.profile,
        "server": saved.server,
    }))
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

/// Marks the conversation read up to `up_to` (default: its last seq);
/// prints the `read` cursor the server keeps.
pub async fn read(args: &ClientArgs, named: &str, up_to: Option<i64>) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let (conversation, last_seq) = match find_conversation(&saved, named).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let seq = up_to.unwrap_or(last_seq);
    let frame = ClientFrame::Read {
        id: Some("read".into()),
        conversation,
        seq,
    };
    ws_request(args, async |connection| {
        connection.request(&frame, "read").await
    })
    .await
}

/// Where a `send` goes: a user (1:1) or a conversation (group or 1:1).
pub enum Recipient {
    User(String),
    /// Its id or name, as `find_conversation` takes it.
    Conversation(String),
}

pub(crate) async fn connect(saved: &Profile) -> Result<Connection, ExitCode> {
    let api = Api::new(&saved.server);
    Connection::connect(&api.ws_url(), &saved.token)
        .await
        .map_err(|err| fail(&err))
}

/// Connects with the profile's token, runs one request/reply exchange and
/// prints the reply (`sent` for every stored kind).
async fn ws_request(
    args: &ClientArgs,
    op: impl AsyncFnOnce(&mut Connection) -> Result<ServerFrame, ClientError>,
) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let mut connection = match connect(&saved).await {
        Ok(connection) => connection,
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

/// What `send` was asked to send.
pub struct Outgoing {
    pub text: String,
    pub reply_to: Option<String>,
    pub files: Vec<std::path::PathBuf>,
    pub client_msg_id: Option<String>,
    /// Encrypt even if the conversation is not (yet) known to be: a first
    /// message to a user then creates an encrypted 1:1.
    pub encrypted: bool,
}

/// Sends a text, end-to-end encrypted when the conversation is (or when
/// asked to).
pub async fn send(args: &ClientArgs, to: Recipient, outgoing: Outgoing) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    if outgoing.encrypted {
        return send_encrypted(args, &saved, to, outgoing).await;
    }
    // Plain first: the server says when the conversation is encrypted
    // (refusing, storing nothing), so a plain send costs no lookup. Not so
    // with files: they would be uploaded in the clear before the refusal.
    let api = Api::new(&saved.server);
    if !outgoing.files.is_empty() {
        let list = match api.conversations(&saved.token).await {
            Ok(list) => list,
            Err(err) => return fail(&err),
        };
        if find_summary(list, &to, &saved.username).is_some_and(|summary| summary.encrypted) {
            return send_encrypted(args, &saved, to, outgoing).await;
        }
    }
    let mut media = Vec::with_capacity(outgoing.files.len());
    for file in &outgoing.files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(err) => {
                eprintln!("error: cannot read {}: {err}", file.display());
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let filename = file.file_name().and_then(|name| name.to_str());
        match api.upload_named_media(&saved.token, bytes, filename).await {
            Ok(info) => media.push(info.media_id),
            Err(err) => return fail(&err),
        }
    }
    let (user, conversation) = match &to {
        Recipient::User(username) => (Some(username.clone()), None),
        Recipient::Conversation(named) => match conversation_id(args, named).await {
            Ok(id) => (None, Some(id)),
            Err(code) => return code,
        },
    };
    let mut connection = match connect(&saved).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    let client_msg_id = outgoing
        .client_msg_id
        .clone()
        .unwrap_or_else(generated_client_msg_id);
    let result = connection
        .call(|id| ClientFrame::Send {
            id,
            to: user,
            conversation,
            client_msg_id: client_msg_id.clone(),
            text: outgoing.text.clone(),
            reply_to: outgoing.reply_to.clone(),
            media,
            encrypted: false,
        })
        .await;
    connection.close().await;
    match result {
        Ok(reply) => print_json(&reply),
        Err(ClientError::Refused {
            code: missive_proto::ErrorCode::ConversationEncrypted,
            ..
        }) => {
            let outgoing = Outgoing {
                client_msg_id: Some(client_msg_id),
                ..outgoing
            };
            send_encrypted(args, &saved, to, outgoing).await
        }
        Err(err) => fail(&err),
    }
}

/// A warning about keys, on standard error.
fn warn(text: String) {
    eprintln!("warning: {text}");
}

/// Conversation key of a message to a user who has no conversation with
/// us yet: the outbound session moves under the real id once `sent` names
/// it.
const NOT_YET_CREATED: i64 = -1;

/// `send` into an end-to-end encrypted conversation (or creating one):
/// sessions with every member device, the room key to those lacking it,
/// then the ciphertext. The keys are saved before anything is sent, so a
/// crash never makes a ratchet step be used twice.
async fn send_encrypted(
    args: &ClientArgs,
    saved: &Profile,
    to: Recipient,
    outgoing: Outgoing,
) -> ExitCode {
    let api = Api::new(&saved.server);
    let list = match api.conversations(&saved.token).await {
        Ok(list) => list,
        Err(err) => return fail(&err),
    };
    let known = find_summary(list, &to, &saved.username);
    let mut vault = match encryption::load(&args.profile, saved) {
        Ok(vault) => vault,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (members, conversation) = match (&to, &known) {
        (_, Some(summary)) => (summary.members.clone(), Some(summary.conversation)),
        (Recipient::User(user), None) => (vec![saved.username.clone(), user.clone()], None),
        (Recipient::Conversation(named), None) => {
            eprintln!("error: unknown_conversation: you have no conversation {named:?}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let mut devices = match encryption::member_devices(&api, saved, &members).await {
        Ok(devices) => devices,
        Err(err) => return fail(&err),
    };
    if let Err(err) = encryption::open_sessions(&api, saved, &mut vault, &mut devices, &warn).await
    {
        return fail(&err);
    }
    // Uploaded before the text is sealed: a failed upload uses no ratchet
    // step.
    let files = match upload_sealed(&api, saved, &outgoing.files).await {
        Ok(files) => files,
        Err(code) => return code,
    };
    let mut content = serde_json::json!({ "text": outgoing.text });
    if let Some(reply_to) = &outgoing.reply_to {
        content["reply_to"] = reply_to.as_str().into();
    }
    if !files.is_empty() {
        content["files"] = serde_json::to_value(&files).unwrap_or_default();
        // The sender's own downloads open too.
        let mut file_keys = FileKeys::load(&args.profile);
        file_keys.remember(&files);
        if let Err(err) = file_keys.save() {
            eprintln!("warning: {err}");
        }
    }
    let media: Vec<String> = files.iter().map(|file| file.media_id.clone()).collect();
    let key = conversation.unwrap_or(NOT_YET_CREATED);
    let sealed = match vault.encrypt(key, &devices, &content.to_string()) {
        Ok(sealed) => sealed,
        Err(err) => {
            eprintln!("error: cannot encrypt: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(err) = encryption::save(&args.profile, &vault) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut connection = match connect(saved).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    let client_msg_id = outgoing
        .client_msg_id
        .unwrap_or_else(generated_client_msg_id);
    let shares = sealed.shares.clone();
    let result = async {
        encryption::send_shares(&mut connection, sealed.shares).await?;
        // Delivered: later sends need not share the key again (until they
        // are, every encrypt shares it, so a lost share is sent again).
        vault.mark_shared(key, &shares);
        if let Err(err) = encryption::save(&args.profile, &vault) {
            eprintln!("warning: {err}");
        }
        let recipient = match conversation {
            Some(id) => missive_client::Recipient::Conversation(id),
            None => match &to {
                Recipient::User(user) => missive_client::Recipient::User(user),
                Recipient::Conversation(_) => missive_client::Recipient::Conversation(key),
            },
        };
        connection
            .send_encrypted(recipient, &client_msg_id, &sealed.ciphertext, media)
            .await
    }
    .await;
    connection.close().await;
    let reply = match result {
        Ok(reply) => reply,
        Err(err) => return fail(&err),
    };
    if let (None, ServerFrame::Sent { conversation, .. }) = (conversation, &reply) {
        vault.rename_conversation(NOT_YET_CREATED, *conversation);
        if let Err(err) = encryption::save(&args.profile, &vault) {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    print_json(&reply)
}

/// The conversation `to` names in the list (a 1:1 with a user, or a
/// conversation by id or group name).
fn find_summary(
    list: missive_proto::rest::ConversationList,
    to: &Recipient,
    me: &str,
) -> Option<missive_proto::rest::ConversationSummary> {
    list.conversations.into_iter().find(|summary| match to {
        Recipient::User(user) => {
            summary.kind == missive_proto::rest::ConversationKind::Direct
                && summary.members.iter().any(|member| member == user)
                && user != me
        }
        Recipient::Conversation(named) => match named.parse::<i64>() {
            Ok(id) => summary.conversation == id,
            Err(_) => summary.name.as_deref() == Some(named.as_str()),
        },
    })
}

/// Seals each file under a key of its own and uploads the ciphertext
/// (`?encrypted=true`): what the encrypted message then lists.
async fn upload_sealed(
    api: &Api,
    saved: &Profile,
    paths: &[std::path::PathBuf],
) -> Result<Vec<missive_e2ee::SharedFile>, ExitCode> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).map_err(|err| {
            eprintln!("error: cannot read {}: {err}", path.display());
            ExitCode::from(EXIT_USAGE)
        })?;
        // The server cannot see the bytes: the type is the sender's to say.
        let head = &bytes[..bytes.len().min(missive_media::SNIFF_BYTES)];
        let content_type = missive_media::sniff(head).unwrap_or("application/octet-stream");
        let sealed = missive_e2ee::seal_file(&bytes).map_err(|err| {
            eprintln!("error: cannot encrypt {}: {err}", path.display());
            ExitCode::from(EXIT_FAILURE)
        })?;
        let info = api
            .upload_encrypted_media(&saved.token, sealed.ciphertext)
            .await
            .map_err(|err| fail(&err))?;
        files.push(missive_e2ee::SharedFile {
            media_id: info.media_id,
            name: path
                .file_name()
                .and_then(|name| name.to_str())
                .map(str::to_owned),
            content_type: content_type.to_owned(),
            size_bytes: bytes.len() as u64,
            key: sealed.key,
        });
    }
    Ok(files)
}

/// Downloads a media object into `output` (default: a file named by its id).
pub async fn download(
    args: &ClientArgs,
    media_id: &str,
    output: Option<std::path::PathBuf>,
) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let mut download = match Api::new(&saved.server)
        .download_named_media(&saved.token, media_id)
        .await
    {
        Ok(download) => download,
        Err(err) => return fail(&err),
    };
    // An attachment of an encrypted message this device read: opened, and
    // only if these are the bytes the message names.
    let shared = FileKeys::load(&args.profile).get(media_id).cloned();
    if let Some(file) = &shared {
        match missive_e2ee::open_file(&download.bytes, &file.key) {
            Ok(bytes) => {
                download.bytes = bytes;
                download.filename = file.name.clone();
                download.content_type = file.content_type.clone();
            }
            Err(err) => {
                eprintln!("error: {media_id}: {err}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    // Without --output: the name it was uploaded under, in the current
    // directory (only its last component, whatever the server said), and
    // never over an existing file.
    let (path, create_new) = match output {
        Some(path) => (path, false),
        None => (
            std::path::PathBuf::from(safe_file_name(download.filename.as_deref(), media_id)),
            true,
        ),
    };
    let written = if create_new {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, &download.bytes))
    } else {
        std::fs::write(&path, &download.bytes)
    };
    if let Err(err) = written {
        eprintln!("error: cannot write {}: {err}", path.display());
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            eprintln!("hint: give --to PATH to choose where it goes");
        }
        return ExitCode::from(EXIT_FAILURE);
    }
    let mut printed = serde_json::json!({
        "media_id": media_id,
        "content_type": download.content_type,
        "filename": download.filename,
        "size_bytes": download.bytes.len(),
        "path": path.display().to_string(),
    });
    if shared.is_some() {
        printed["decrypted"] = true.into();
    }
    print_json(&printed)
}

/// The name to save a download under in the current directory: the last
/// component of the name it was uploaded under (whatever the server said;
/// never a hidden file), else its id.
pub(crate) fn safe_file_name(uploaded: Option<&str>, media_id: &str) -> String {
    uploaded
        .and_then(|name| std::path::Path::new(name).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .unwrap_or_else(|| media_id.to_owned())
}

/// Sets `emoji` as this user's reaction, or removes it when `None`.
pub async fn react(
    args: &ClientArgs,
    conversation: i64,
    target: &str,
    emoji: Option<&str>,
    client_msg_id: Option<String>,
) -> ExitCode {
    let client_msg_id = client_msg_id.unwrap_or_else(generated_client_msg_id);
    ws_request(args, async |connection| {
        connection
            .react(conversation, &client_msg_id, target, emoji)
            .await
    })
    .await
}

pub async fn edit(
    args: &ClientArgs,
    conversation: i64,
    target: &str,
    text: &str,
    client_msg_id: Option<String>,
) -> ExitCode {
    let client_msg_id = client_msg_id.unwrap_or_else(generated_client_msg_id);
    ws_request(args, async |connection| {
        connection
            .edit(conversation, &client_msg_id, target, text)
            .await
    })
    .await
}

pub async fn delete(
    args: &ClientArgs,
    conversation: i64,
    target: &str,
    client_msg_id: Option<String>,
) -> ExitCode {
    let client_msg_id = client_msg_id.unwrap_or_else(generated_client_msg_id);
    ws_request(args, async |connection| {
        connection
            .delete(conversation, &client_msg_id, target)
            .await
    })
    .await
}

/// Correlation id of the presence subscription `listen --presence` sends.
const LISTEN_SUBSCRIBE_ID: &str = "listen-presence";

/// What `listen` prints besides queued frames, and when it stops.
pub struct ListenOptions {
    pub count: Option<u64>,
    pub idle_secs: Option<u64>,
    pub ack: bool,
    /// Also print `typing` and `presence` frames (never acked).
    pub ephemeral: bool,
    /// Subscribe to these users' presence first.
    pub presence: Vec<String>,
}

pub async fn listen(args: &ClientArgs, options: ListenOptions) -> ExitCode {
    let ListenOptions {
        count,
        idle_secs,
        ack,
        ephemeral,
        presence,
    } = options;
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let mut connection = match connect(&saved).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    if !presence.is_empty() {
        let subscribe = ClientFrame::SubscribePresence {
            id: Some(LISTEN_SUBSCRIBE_ID.into()),
            users: presence,
        };
        if let Err(err) = connection.send_frame(&subscribe).await {
            return fail(&err);
        }
    }
    let wait = idle_secs.map_or(Duration::from_secs(u64::MAX / 4), Duration::from_secs);
    let mut printed = 0u64;
    let mut acked_any = false;
    // Encrypted messages are printed decrypted; one whose room key has not
    // come yet waits (with what follows it in its conversation) for it.
    let mut keys = encryption::DeviceKeys::open(&args.profile, &saved, Box::new(warn));
    let mut ready: std::collections::VecDeque<(ServerFrame, encryption::Opened)> =
        std::collections::VecDeque::new();
    'listening: while count.is_none_or(|count| printed < count) {
        if let Some((frame, shown)) = ready.pop_front() {
            if let Err(code) = print_and_ack(&mut connection, &frame, &shown, ack).await {
                return code;
            }
            printed += 1;
            acked_any |= ack;
            continue;
        }
        let frame = match connection.next_frame(wait).await {
            Ok(frame) => frame,
            Err(ClientError::Timeout) => break 'listening,
            Err(err) => return fail(&err),
        };
        if let ServerFrame::ToDevice {
            seq,
            from,
            from_device,
            body,
            ..
        } = &frame
        {
            ready.extend(keys.take_share(from, *from_device, body));
            // Kept before acked: the server deletes what is acked.
            keys.save();
            let done = ClientFrame::ToDeviceAck {
                id: None,
                up_to: *seq,
            };
            if let Err(err) = connection.send_frame(&done).await {
                return fail(&err);
            }
            continue;
        }
        match &frame {
            ServerFrame::Error {
                id, code, message, ..
            } if id.as_deref() == Some(LISTEN_SUBSCRIBE_ID) => {
                let err = ClientError::Refused {
                    code: *code,
                    message: message.clone(),
                };
                connection.close().await;
                return fail(&err);
            }
            // The same live frames `--poll --ephemeral` prints.
            ServerFrame::Typing { .. }
            | ServerFrame::Presence { .. }
            | ServerFrame::KeysLow { .. }
            | ServerFrame::DevicesChanged { .. }
                if ephemeral =>
            {
                print_json(&frame);
                printed += 1;
                continue;
            }
            // Receipt cursors are shown but never acked: they are live
            // frames, not stored events.
            ServerFrame::Delivered { .. } | ServerFrame::Read { .. } => {
                print_json(&frame);
                printed += 1;
                continue;
            }
            _ => {}
        }
        if frame.ack_point().is_none() {
            continue;
        }
        ready.extend(keys.offer(frame));
    }
    // What still waits for a key is printed as undecryptable, in order.
    for (frame, shown) in ready.into_iter().chain(keys.give_up()) {
        if count.is_some_and(|count| printed >= count) {
            break;
        }
        if let Err(code) = print_and_ack(&mut connection, &frame, &shown, ack).await {
            return code;
        }
        printed += 1;
        acked_any |= ack;
    }
    keys.save();
    // Make sure the last ack arrived before leaving.
    if acked_any {
        let ping = ClientFrame::Ping {
            id: Some("final".into()),
        };
        if let Err(err) = connection.request(&ping, "final").await {
            return fail(&err);
        }
    }
    connection.close().await;
    ExitCode::SUCCESS
}

/// Prints a stored event as `listen` shows it and acks it.
async fn print_and_ack(
    connection: &mut Connection,
    frame: &ServerFrame,
    opened: &encryption::Opened,
    ack: bool,
) -> Result<(), ExitCode> {
    print_json(&encryption::printable(frame, opened));
    if let (true, Some((conversation, seq))) = (ack, frame.ack_point()) {
        let frame = ClientFrame::Ack {
            id: None,
            conversation,
            seq,
        };
        connection
            .send_frame(&frame)
            .await
            .map_err(|err| fail(&err))?;
    }
    Ok(())
}

/// Prints the events ready to print, noting each one's ack point for the
/// next poll; false once `count` events are printed.
fn print_polled(
    ready: &mut std::collections::VecDeque<(ServerFrame, encryption::Opened)>,
    printed: &mut u64,
    unacked: &mut BTreeMap<i64, i64>,
    count: Option<u64>,
) -> bool {
    while let Some((event, opened)) = ready.pop_front() {
        if count.is_some_and(|count| *printed >= count) {
            return false;
        }
        print_json(&encryption::printable(&event, &opened));
        *printed += 1;
        if let Some((conversation, seq)) = event.ack_point() {
            let highest = unacked.entry(conversation).or_insert(seq);
            *highest = (*highest).max(seq);
        }
    }
    true
}

/// `listen --poll`: the same output and acking as `listen`, over HTTP
/// long-polling. Acks ride on the next poll; the last one is sent as an
/// `ack` frame before exiting.
pub async fn listen_poll(args: &ClientArgs, options: ListenOptions) -> ExitCode {
    const POLL_WAIT_MS: u64 = 25_000;
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let api = Api::new(&saved.server);
    let wait_ms = options
        .idle_secs
        .map_or(POLL_WAIT_MS, |secs| secs.saturating_mul(1000).min(60_000));
    // The highest seq printed per conversation, acked by the next poll.
    let mut unacked: BTreeMap<i64, i64> = BTreeMap::new();
    // As `listen`: encrypted messages printed decrypted, held back until
    // their room key comes; the room keys taken are acked by the next poll.
    let mut keys = encryption::DeviceKeys::open(&args.profile, &saved, Box::new(warn));
    let mut ready: std::collections::VecDeque<(ServerFrame, encryption::Opened)> =
        std::collections::VecDeque::new();
    let mut to_device_done: Option<i64> = None;
    let mut printed = 0u64;
    'polling: while options.count.is_none_or(|count| printed < count) {
        let acks: Vec<(i64, i64)> = if options.ack {
            std::mem::take(&mut unacked).into_iter().collect()
        } else {
            Vec::new()
        };
        let response = match api
            .poll_acking_to_device(&saved.token, &acks, to_device_done.take(), wait_ms)
            .await
        {
            Ok(response) => response,
            Err(err) => return fail(&err),
        };
        if let Some(reason) = response.closed {
            eprintln!("error: the poll ended: {reason}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        if response.frames.is_empty() && options.idle_secs.is_some() {
            break;
        }
        for frame in response.frames {
            if options.count.is_some_and(|count| printed >= count) {
                break 'polling;
            }
            match &frame {
                ServerFrame::ToDevice {
                    seq,
                    from,
                    from_device,
                    body,
                    ..
                } => {
                    ready.extend(keys.take_share(from, *from_device, body));
                    // Kept before the next poll acks it.
                    keys.save();
                    to_device_done = Some(*seq);
                }
                // Printed below once its key (if it needs one) is there.
                _ if frame.ack_point().is_some() => ready.extend(keys.offer(frame)),
                ServerFrame::Delivered { .. } | ServerFrame::Read { .. } => {
                    print_json(&frame);
                    printed += 1;
                }
                _ if options.ephemeral => {
                    print_json(&frame);
                    printed += 1;
                }
                _ => {}
            }
            if !print_polled(&mut ready, &mut printed, &mut unacked, options.count) {
                break 'polling;
            }
        }
    }
    // What still waits for a key is printed as undecryptable, in order.
    ready.extend(keys.give_up());
    print_polled(&mut ready, &mut printed, &mut unacked, options.count);
    keys.save();
    if let Some(up_to) = to_device_done {
        let done = ClientFrame::ToDeviceAck {
            id: Some("final-keys".into()),
            up_to,
        };
        if let Err(err) = api.frame(&saved.token, &done).await {
            return fail(&err);
        }
    }
    for (conversation, seq) in unacked.into_iter().filter(|_| options.ack) {
        let ack = ClientFrame::Ack {
            id: Some("final".into()),
            conversation,
            seq,
        };
        if let Err(err) = api.frame(&saved.token, &ack).await {
            return fail(&err);
        }
    }
    ExitCode::SUCCESS
}

/// How long `presence` waits for the server's answers.
const PRESENCE_WAIT: Duration = Duration::from_secs(30);

/// Subscribes to `users`' presence, prints one `presence` frame per user
/// (the latest state seen before the server answered a following ping) and
/// exits.
pub async fn presence(args: &ClientArgs, users: &[String]) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let mut connection = match connect(&saved).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    // The server answers frames in order: everything the subscription
    // produces arrives before the pong.
    let frames = [
        ClientFrame::SubscribePresence {
            id: Some("subscribe".into()),
            users: users.to_vec(),
        },
        ClientFrame::Ping {
            id: Some("done".into()),
        },
    ];
    for frame in &frames {
        if let Err(err) = connection.send_frame(frame).await {
            return fail(&err);
        }
    }
    let mut seen: Vec<(String, ServerFrame)> = Vec::new();
    let mut refused = None;
    loop {
        let frame = match connection.next_frame(PRESENCE_WAIT).await {
            Ok(frame) => frame,
            Err(err) => return fail(&err),
        };
        match frame {
            ServerFrame::Presence { ref user, .. } => {
                match seen.iter_mut().find(|(seen_user, _)| seen_user == user) {
                    Some(entry) => entry.1 = frame,
                    None => seen.push((user.clone(), frame)),
                }
            }
            ServerFrame::Error {
                id, code, message, ..
            } if id.as_deref() == Some("subscribe") => {
                refused = Some(ClientError::Refused { code, message });
            }
            ServerFrame::Pong { id } if id.as_deref() == Some("done") => break,
            _ => {}
        }
    }
    connection.close().await;
    if let Some(err) = refused {
        return fail(&err);
    }
    for (_, frame) in &seen {
        print_json(frame);
    }
    ExitCode::SUCCESS
}

pub async fn devices(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match Api::new(&saved.server).devices(&saved.token).await {
        Ok(list) => print_json(&list),
        Err(err) => fail(&err),
    }
}

pub async fn revoke(args: &ClientArgs, device_id: i64) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    match Api::new(&saved.server)
        .revoke(&saved.token, device_id)
        .await
    {
        Ok(()) => print_json(&serde_json::json!({ "revoked": device_id })),
        Err(err) => fail(&err),
    }
}

pub async fn logout(args: &ClientArgs) -> ExitCode {
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    if let Err(err) = Api::new(&saved.server).logout(&saved.token).await {
        return fail(&err);
    }
    let _ = profile::remove(&args.profile);
    print_json(&serde_json::json!({ "logged_out": saved.device_id }))
}

/// Creates a group; `encrypted: None` takes the server's default.
pub async fn group_create(
    args: &ClientArgs,
    name: &str,
    members: &[String],
    encrypted: Option<bool>,
) -> ExitCode {
    let request = missive_proto::rest::CreateGroupRequest {
        name: name.to_owned(),
        members: members.to_vec(),
        encrypted,
    };
    rest(args, async |api, token| {
        api.create_group_as(&token, &request).await
    })
    .await
}

/// Sets a conversation's disappearing timer; prints `{"conversation": ID,
/// "disappear_secs": SECS}`.
pub async fn set_timer(args: &ClientArgs, named: &str, secs: u32) -> ExitCode {
    let conversation = match conversation_id(args, named).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    rest(args, async |api, token| {
        api.set_timer(&token, conversation, secs)
            .await
            .map(|()| serde_json::json!({ "conversation": conversation, "disappear_secs": secs }))
    })
    .await
}

/// Turns end-to-end encryption on in a conversation, for good; prints
/// `{"encrypted": ID}`.
pub async fn encrypt(args: &ClientArgs, named: &str) -> ExitCode {
    let conversation = match conversation_id(args, named).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    rest(args, async |api, token| {
        api.encrypt_conversation(&token, conversation)
            .await
            .map(|()| serde_json::json!({ "encrypted": conversation }))
    })
    .await
}

pub async fn group_add(args: &ClientArgs, group: i64, members: &[String]) -> ExitCode {
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    rest(args, async |api, token| {
        api.add_members(&token, group, &members).await
    })
    .await
}

pub async fn group_remove(args: &ClientArgs, group: i64, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.remove_member(&token, group, username).await
    })
    .await
}

pub async fn group_leave(args: &ClientArgs, group: i64) -> ExitCode {
    rest(args, async |api, token| {
        api.leave_group(&token, group).await?;
        Ok(serde_json::json!({ "left": group }))
    })
    .await
}

pub async fn group_info(args: &ClientArgs, group: i64) -> ExitCode {
    rest(args, async |api, token| api.group(&token, group).await).await
}

pub async fn group_rename(args: &ClientArgs, group: i64, name: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.rename_group(&token, group, name).await
    })
    .await
}

pub async fn group_promote(args: &ClientArgs, group: i64, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.promote(&token, group, username).await
    })
    .await
}

pub async fn group_demote(args: &ClientArgs, group: i64, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.demote(&token, group, username).await
    })
    .await
}

/// Which page of a conversation's history to fetch.
pub struct HistoryPage {
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

pub async fn history(args: &ClientArgs, named: &str, page: HistoryPage) -> ExitCode {
    let conversation = match conversation_id(args, named).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let mut query = Vec::new();
    if let Some(before) = page.before {
        query.push(format!("before={before}"));
    }
    if let Some(after) = page.after {
        query.push(format!("after={after}"));
    }
    if let Some(limit) = page.limit {
        query.push(format!("limit={limit}"));
    }
    let query = query.join("&");
    let saved = match load_profile(args) {
        Ok(saved) => saved,
        Err(code) => return code,
    };
    let history = match Api::new(&saved.server)
        .history(&saved.token, conversation, &query)
        .await
    {
        Ok(history) => history,
        Err(err) => return fail(&err),
    };
    // Encrypted messages printed as `listen` prints them: decrypted, or
    // with why they cannot be, never as ciphertext.
    let mut printed = serde_json::to_value(&history).unwrap_or_default();
    if history
        .messages
        .iter()
        .any(|message| message.kind == missive_proto::MessageKind::Encrypted)
    {
        let mut keys = encryption::DeviceKeys::open(&args.profile, &saved, Box::new(warn));
        let messages = printed["messages"].as_array_mut().into_iter().flatten();
        for (message, printed) in history.messages.iter().zip(messages) {
            if message.kind == missive_proto::MessageKind::Encrypted && !message.deleted {
                let opened = keys.open_text(
                    conversation,
                    &message.from,
                    message.from_device,
                    &message.text,
                );
                encryption::mark_opened(printed, &opened);
            }
        }
        keys.save();
    }
    print_json(&printed)
}

pub async fn conversations(args: &ClientArgs) -> ExitCode {
    rest(args, async |api, token| api.conversations(&token).await).await
}

pub async fn receipts(args: &ClientArgs, conversation: i64, message_id: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.receipts(&token, conversation, message_id).await
    })
    .await
}

pub async fn contacts(args: &ClientArgs) -> ExitCode {
    rest(args, async |api, token| api.contacts(&token).await).await
}

pub async fn add_contact(args: &ClientArgs, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.add_contact(&token, username).await?;
        Ok(serde_json::json!({ "contact_added": username }))
    })
    .await
}

pub async fn remove_contact(args: &ClientArgs, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.remove_contact(&token, username).await?;
        Ok(serde_json::json!({ "contact_removed": username }))
    })
    .await
}

pub async fn blocks(args: &ClientArgs) -> ExitCode {
    rest(args, async |api, token| api.blocks(&token).await).await
}

pub async fn block(args: &ClientArgs, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.block(&token, username).await?;
        Ok(serde_json::json!({ "blocked": username }))
    })
    .await
}

pub async fn unblock(args: &ClientArgs, username: &str) -> ExitCode {
    rest(args, async |api, token| {
        api.unblock(&token, username).await?;
        Ok(serde_json::json!({ "unblocked": username }))
    })
    .await
}

/// `privacy` with no argument prints the current setting; with one, sets it.
pub async fn privacy(args: &ClientArgs, presence: Option<PresenceVisibility>) -> ExitCode {
    rest(args, async |api, token| match presence {
        Some(presence) => api.set_privacy(&token, presence).await,
        None => api.privacy(&token).await,
    })
    .await
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
