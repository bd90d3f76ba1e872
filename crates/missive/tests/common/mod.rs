//! Test harness: a real server on a random port (in-process, or the built
//! binary) and typed helpers to drive it over real sockets.
#![allow(dead_code)]

pub(crate) mod cluster;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use missive_client::{Api, ClientError, Connection};
use missive_core::ManualClock;
use missive_proto::ServerFrame;
use missive_server::{App, Config};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const PASSWORD: &str = "correct horse";
/// Upper bound for anything the server should do promptly; generous so a
/// loaded CI machine does not flake, never used as synchronisation.
pub(crate) const PROMPTLY: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub api: Api,
    pub app: App,
    pub clock: ManualClock,
    pub shutdown: CancellationToken,
    pub served: Option<JoinHandle<std::io::Result<()>>>,
    pub data_dir: TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            missive_server::telemetry::init_logging(&Default::default());
        }
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clock = ManualClock::default();
        let app = App::build(config, Arc::new(clock.clone()))
            .await
            .expect("build");
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(app.clone().run(listener, shutdown.clone()));
        Self {
            addr,
            api: Api::new(&format!("http://{addr}")),
            app,
            clock,
            shutdown,
            served: Some(served),
            data_dir,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers `username` and logs in one device; returns its token.
    pub(crate) async fn user(&self, username: &str) -> String {
        self.api
            .register(username, PASSWORD)
            .await
            .expect("register");
        self.device(username).await
    }

    /// Logs in another device of an existing user; returns its token.
    pub(crate) async fn device(&self, username: &str) -> String {
        self.api
            .login(username, PASSWORD, "test")
            .await
            .expect("login")
            .token
    }

    /// Creates a group, owned by the user of `token`, with `members`;
    /// returns its id.
    pub(crate) async fn group(&self, token: &str, name: &str, members: &[&str]) -> i64 {
        self.api
            .create_group(token, name, members)
            .await
            .expect("create group")
            .conversation
    }

    /// The devices of the account whose token this is.
    pub(crate) async fn devices(&self, token: &str) -> Vec<missive_proto::rest::DeviceInfo> {
        self.api.devices(token).await.expect("devices").devices
    }

    pub(crate) async fn connect(&self, token: &str) -> Connection {
        Connection::connect(&self.api.ws_url(), token)
            .await
            .expect("connect")
    }

    /// Stops the server and waits until it has fully stopped.
    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            served.await.expect("server task").expect("server result");
        }
    }
}

/// (message_id, conversation, seq) of a `sent` reply.
pub(crate) fn sent_message(frame: ServerFrame) -> (String, i64, i64) {
    match frame {
        ServerFrame::Sent {
            message_id,
            conversation,
            seq,
            ..
        } => (message_id, conversation, seq),
        other => panic!("expected sent, got {other:?}"),
    }
}

/// Sends texts `{prefix}1` to `{prefix}{n}` (each also its client_msg_id)
/// to `to`, one after another; returns their conversation.
pub(crate) async fn send_numbered(
    connection: &mut Connection,
    to: &str,
    prefix: &str,
    n: usize,
) -> i64 {
    let mut conversation = 0;
    for i in 1..=n {
        let text = format!("{prefix}{i}");
        conversation = sent_message(connection.send_text(to, &text, &text).await.unwrap()).1;
    }
    conversation
}

/// (message_id, seq, duplicate) of a `sent` reply.
pub(crate) fn sent_seq(frame: &ServerFrame) -> (String, i64, bool) {
    match frame {
        ServerFrame::Sent {
            message_id,
            seq,
            duplicate,
            ..
        } => (message_id.clone(), *seq, *duplicate),
        other => panic!("expected sent, got {other:?}"),
    }
}

/// (user, online, last_seen_ms) of a `presence` frame.
pub(crate) fn presence_of(frame: &ServerFrame) -> (String, bool, Option<i64>) {
    match frame {
        ServerFrame::Presence {
            user,
            online,
            last_seen_ms,
        } => (user.clone(), *online, *last_seen_ms),
        other => panic!("expected presence, got {other:?}"),
    }
}

/// Whether a frame is delivery traffic: a stored event (`message`,
/// `expired`) or a receipt cursor (`delivered`, `read`); not replies,
/// typing or presence.
pub(crate) fn is_delivery(frame: &ServerFrame) -> bool {
    frame.ack_point().is_some()
        || matches!(
            frame,
            ServerFrame::Delivered { .. } | ServerFrame::Read { .. }
        )
}

/// Reads frames until `n` delivery frames (events and receipts) arrived.
pub(crate) async fn queued(connection: &mut Connection, n: usize) -> Vec<ServerFrame> {
    let mut frames = Vec::with_capacity(n);
    while frames.len() < n {
        let frame = connection.next_frame(PROMPTLY).await.expect("frame");
        if is_delivery(&frame) {
            frames.push(frame);
        }
    }
    frames
}

/// The highest seq per conversation among the events in `frames` (their
/// ack points), by conversation id: what a client acks after a burst.
pub(crate) fn ack_points(frames: &[ServerFrame]) -> Vec<(i64, i64)> {
    let mut highest = std::collections::BTreeMap::new();
    for (conversation, seq) in frames.iter().filter_map(ServerFrame::ack_point) {
        let entry = highest.entry(conversation).or_insert(seq);
        *entry = (*entry).max(seq);
    }
    highest.into_iter().collect()
}

/// Acks every event in `frames`: one `ack` (with an id, so it waits for
/// `acked`) per conversation at its highest seq.
pub(crate) async fn ack_received(connection: &mut Connection, frames: &[ServerFrame]) {
    for (conversation, seq) in ack_points(frames) {
        connection.ack(conversation, seq).await.expect("ack");
    }
}

/// Asserts that no queued frame arrives: a ping round-trip proves the
/// server has processed everything before it, so this is no sleep.
pub(crate) async fn assert_nothing_queued(connection: &mut Connection) {
    let ping = missive_proto::ClientFrame::Ping {
        id: Some("quiet".into()),
    };
    connection.send_frame(&ping).await.expect("ping");
    loop {
        match connection.next_frame(PROMPTLY).await.expect("frame") {
            ServerFrame::Pong { id } if id.as_deref() == Some("quiet") => return,
            frame if is_delivery(&frame) => panic!("unexpected delivery frame {frame:?}"),
            _ => {}
        }
    }
}

pub(crate) fn texts(frames: &[ServerFrame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn seqs(frames: &[ServerFrame]) -> Vec<i64> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

pub(crate) fn refused_code(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Refused { code, .. }) => code.as_str().to_owned(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Asserts that no ephemeral frame (`typing`, `presence`) reaches this
/// connection: everything before each `pong` has been processed. Two
/// sequential round trips, because the server's session loop picks among
/// ready inputs (client frames, ephemeral frames) in no fixed order; after
/// the first `pong` it has had a full network round trip to forward any
/// ephemeral frame that was already waiting. No sleep. Frames already held
/// in the connection's backlog are checked too.
pub(crate) async fn assert_no_ephemeral(connection: &mut Connection) {
    for round in ["quiet-e1", "quiet-e2"] {
        let ping = missive_proto::ClientFrame::Ping {
            id: Some(round.into()),
        };
        connection.send_frame(&ping).await.expect("ping");
        loop {
            match connection.next_frame(PROMPTLY).await.expect("frame") {
                ServerFrame::Pong { id } if id.as_deref() == Some(round) => break,
                frame @ (ServerFrame::Typing { .. } | ServerFrame::Presence { .. }) => {
                    panic!("unexpected ephemeral frame {frame:?}")
                }
                _ => {}
            }
        }
    }
}

/// The next `typing` or `presence` frame, skipping queued frames and
/// replies; waits at most [`PROMPTLY`] (an event bound, not a sleep).
pub(crate) async fn next_ephemeral(connection: &mut Connection) -> ServerFrame {
    loop {
        let frame = connection
            .next_frame(PROMPTLY)
            .await
            .expect("ephemeral frame");
        if matches!(
            frame,
            ServerFrame::Typing { .. } | ServerFrame::Presence { .. }
        ) {
            return frame;
        }
    }
}

/// Files under `dir`, recursively (none if it does not exist): uploads are
/// stored in nested folders under the media directory.
pub(crate) fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| {
                let path = entry.path();
                if path.is_dir() { files_under(&path) } else { 1 }
            })
            .sum()
    })
}

/// Whether a TCP service answers at `address` (host:port) within 2 s.
/// Under CI its absence fails the test; elsewhere the test should skip,
/// and this prints why.
pub(crate) async fn service_available(name: &str, address: &str) -> bool {
    let reachable = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .is_ok_and(|connected| connected.is_ok());
    if !reachable {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not reachable at {address}: .ci/run must start it"
        );
        eprintln!("skipping: {name} is not reachable at {address}");
    }
    reachable
}

// ── end-to-end keys ─────────────────────────────────────────────────────

/// A well-formed public key: 43 characters of unpadded base64.
/// A real PNG of `width` × `height` noisy pixels (images get a thumbnail).
pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .expect("encode png");
    bytes.into_inner()
}

pub(crate) fn public_key(seed: &str) -> String {
    format!("{seed:A<43}")
}

pub(crate) fn signature(seed: &str) -> String {
    format!("{seed:B<86}")
}

pub(crate) fn identity(seed: &str) -> missive_proto::rest::IdentityKeysBody {
    missive_proto::rest::IdentityKeysBody {
        curve25519: public_key(&format!("c{seed}")),
        ed25519: public_key(&format!("e{seed}")),
    }
}

pub(crate) fn one_time_keys(prefix: &str, n: usize) -> Vec<missive_proto::rest::OneTimeKeyBody> {
    (0..n)
        .map(|i| missive_proto::rest::OneTimeKeyBody {
            key_id: format!("{prefix}{i:04}"),
            key: public_key(&format!("{prefix}{i}")),
            signature: signature(&format!("{prefix}{i}")),
        })
        .collect()
}

/// One to-device message for device `device_id` of `user`.
pub(crate) fn share(user: &str, device_id: i64, body: &str) -> missive_proto::ToDeviceOut {
    missive_proto::ToDeviceOut {
        user: user.to_owned(),
        device_id,
        body: body.to_owned(),
    }
}

/// A `to_device` frame with the id "td".
pub(crate) fn to_device(messages: Vec<missive_proto::ToDeviceOut>) -> missive_proto::ClientFrame {
    missive_proto::ClientFrame::ToDevice {
        id: Some("td".into()),
        messages,
    }
}

/// More one-time keys, no identity keys: a top-up.
pub(crate) fn top_up(seed: &str, n: usize) -> missive_proto::rest::KeyUploadRequest {
    missive_proto::rest::KeyUploadRequest {
        identity: None,
        one_time_keys: one_time_keys(seed, n),
    }
}

/// A device's first upload: identity keys from `seed` and `n` one-time
/// keys named `{seed}0000`, `{seed}0001`, …
pub(crate) fn key_upload(seed: &str, n: usize) -> missive_proto::rest::KeyUploadRequest {
    missive_proto::rest::KeyUploadRequest {
        identity: Some(identity(seed)),
        one_time_keys: one_time_keys(seed, n),
    }
}

// Spawning the built binary: `missive serve` on a random port, and the CLI
// against it. Shared by binary.rs and cli_groups.rs. Paths are spelled out so
// this block needs no imports of its own.

/// The built `missive` binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_missive");

/// The binary with no inherited `MISSIVE_*` variables: the environment of
/// the test run (CI's, a developer's) must not become server configuration.
pub(crate) fn server_command() -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MISSIVE_") {
            command.env_remove(key);
        }
    }
    command
}

/// A `missive serve` child process on a random port.
pub(crate) struct ServerProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts the binary on port 0 and reads the bound address from its
    /// JSON log line.
    pub(crate) fn start(data_dir: &std::path::Path) -> Self {
        Self::start_with_env(data_dir, &[])
    }

    /// Like `start`, on a given `host:port` (to restart on the same one).
    pub(crate) fn start_listening(data_dir: &std::path::Path, listen: &str) -> Self {
        Self::spawn_limited(data_dir, &[], "info", None, None, listen).0
    }

    /// Like `start`, with extra environment variables for the server.
    pub(crate) fn start_with_env(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(data_dir, env, "info", None).0
    }

    /// Like `start_with_env` at log level `rust_log` (a `RUST_LOG` value),
    /// keeping every line the server logs, from its first.
    pub(crate) fn start_logged(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        rust_log: &str,
    ) -> (Self, ServerLog) {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (server, reader) = Self::spawn(data_dir, env, rust_log, Some(Arc::clone(&lines)));
        let log = ServerLog {
            lines,
            reader: Some(reader),
        };
        (server, log)
    }

    /// Like `start_with_env`, the process limited to `open_files` open
    /// files (`ulimit -n`).
    pub(crate) fn start_with_open_files(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        open_files: u64,
    ) -> Self {
        Self::spawn_limited(data_dir, env, "info", None, Some(open_files), "127.0.0.1:0").0
    }

    fn spawn(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        rust_log: &str,
        keep: Option<Arc<std::sync::Mutex<Vec<String>>>>,
    ) -> (Self, std::thread::JoinHandle<()>) {
        Self::spawn_limited(data_dir, env, rust_log, keep, None, "127.0.0.1:0")
    }

    fn spawn_limited(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        rust_log: &str,
        keep: Option<Arc<std::sync::Mutex<Vec<String>>>>,
        open_files: Option<u64>,
        listen: &str,
    ) -> (Self, std::thread::JoinHandle<()>) {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut command = match open_files {
            None => server_command(),
            Some(limit) => {
                let mut shell = std::process::Command::new("sh");
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("MISSIVE_") {
                        shell.env_remove(key);
                    }
                }
                shell.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    BIN,
                ]);
                shell
            }
        };
        let mut child = command
            .args([
                "serve",
                "--listen",
                listen,
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data_dir)
            // Only the configuration the test asks for: inherited MISSIVE_*
            // variables would be unknown configuration keys.
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn missive serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("server exited before serving")
                .expect("read log");
            if let Some(keep) = &keep {
                keep.lock().expect("log lines").push(line.clone());
            }
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(addr) = entry["fields"]["local_addr"].as_str() {
                break format!("http://{addr}");
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in lines {
                if let (Ok(line), Some(keep)) = (line, &keep) {
                    keep.lock().expect("log lines").push(line);
                }
            }
        });
        (Self { child, url }, reader)
    }

    pub(crate) fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

/// The log lines of a [`ServerProcess::start_logged`] server.
pub(crate) struct ServerLog {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerLog {
    /// Every line the server logged; call after the process ended (its
    /// stderr then closes, so this waits for the last line, not for time).
    pub(crate) fn finish(mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        std::mem::take(&mut *self.lines.lock().expect("log lines"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI arguments that create the encrypted group `name` with bob and
/// carol as members.
pub(crate) fn encrypted_group_of_bob_and_carol(name: &str) -> [&str; 8] {
    [
        "group",
        "create",
        name,
        "--member",
        "bob",
        "--member",
        "carol",
        "--encrypted",
    ]
}

/// The binary serving a fresh data directory, and a fresh CLI config
/// directory: (data directory, config directory, server).
pub(crate) fn server_and_config_dir() -> (TempDir, TempDir, ServerProcess) {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let config_dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data_dir.path());
    (data_dir, config_dir, server)
}

/// Runs the binary as a client with its own config dir and server, the
/// password in the environment; returns (exit status, stdout, stderr).
pub(crate) fn cli(
    config_dir: &std::path::Path,
    server: &str,
    args: &[&str],
) -> (i32, String, String) {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env("MISSIVE_CONFIG_DIR", config_dir)
        .env("MISSIVE_SERVER", server)
        .env("MISSIVE_PASSWORD", PASSWORD)
        .output()
        .expect("run missive");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Parses one JSON document (a command's whole stdout).
pub(crate) fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("{err}: {stdout:?}"))
}

/// Parses a command's stdout as JSON lines.
pub(crate) fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(json).collect()
}

/// The body of a GET of `url`, which must answer.
pub(crate) async fn get_text(http: &reqwest::Client, url: String) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// A metric's value on the server at `url` (`/metrics`); every missive
/// counter is there from the start, so a missing one is a failure.
pub(crate) async fn metric(url: &str, name: &str) -> f64 {
    let page = metrics_page(url).await;
    metric_in(&page, name).unwrap_or_else(|| panic!("{name} not in /metrics:\n{page}"))
}

/// Asks a node's `/metrics` until `name` (0 while absent: a counter appears
/// when first counted) reaches `at_least`, at most [`PROMPTLY`]. The node
/// has no way to tell us; the pause between asks spares it a busy loop.
pub(crate) async fn wait_for_metric(url: &str, name: &str, at_least: f64) {
    let deadline = std::time::Instant::now() + PROMPTLY;
    loop {
        let value = metric_in(&metrics_page(url).await, name).unwrap_or(0.0);
        if value >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {value} on {url}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics_page(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

fn metric_in(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Reads until the connection closes; its close code.
pub(crate) async fn close_code(connection: &mut Connection) -> u16 {
    loop {
        match connection.next_frame(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => return code,
            Err(other) => panic!("expected a close, got {other}"),
        }
    }
}

/// The device token the CLI saved for `profile`.
pub(crate) fn saved_token(config_dir: &std::path::Path, profile: &str) -> String {
    let path = config_dir.join(format!("profiles/{profile}.json"));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("profile")).expect("json");
    saved["token"].as_str().expect("token").to_owned()
}

/// Every file under `dir` that contains `needle`.
pub(crate) fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
        {
            found.push(path);
        }
    }
    found
}
