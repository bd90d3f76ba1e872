//! Test harness: a real server on a random port (in-process, or the built
//! binary) and typed helpers to drive it over real sockets.
#![allow(dead_code)]

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

pub const PASSWORD: &str = "correct horse";
/// Upper bound for anything the server should do promptly; generous so a
/// loaded CI machine does not flake, never used as synchronisation.
pub const PROMPTLY: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub api: Api,
    pub app: App,
    pub clock: ManualClock,
    pub shutdown: CancellationToken,
    pub served: Option<JoinHandle<std::io::Result<()>>>,
    pub data_dir: TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
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
        let app = App::build(config, Arc::new(clock.clone())).expect("build");
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers `username` and logs in one device; returns its token.
    pub async fn user(&self, username: &str) -> String {
        self.api
            .register(username, PASSWORD)
            .await
            .expect("register");
        self.device(username).await
    }

    /// Logs in another device of an existing user; returns its token.
    pub async fn device(&self, username: &str) -> String {
        self.api
            .login(username, PASSWORD, "test")
            .await
            .expect("login")
            .token
    }

    pub async fn connect(&self, token: &str) -> Connection {
        Connection::connect(&self.api.ws_url(), token)
            .await
            .expect("connect")
    }

    /// Stops the server and waits until it has fully stopped.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            served.await.expect("server task").expect("server result");
        }
    }
}

/// Reads frames until `n` queued frames (messages/receipts) arrived.
pub async fn queued(connection: &mut Connection, n: usize) -> Vec<ServerFrame> {
    let mut frames = Vec::with_capacity(n);
    while frames.len() < n {
        let frame = connection.next_frame(PROMPTLY).await.expect("frame");
        if frame.queue_pos().is_some() {
            frames.push(frame);
        }
    }
    frames
}

/// Asserts that no queued frame arrives: a ping round-trip proves the
/// server has processed everything before it, so this is no sleep.
pub async fn assert_nothing_queued(connection: &mut Connection) {
    let ping = missive_proto::ClientFrame::Ping {
        id: Some("quiet".into()),
    };
    connection.send_frame(&ping).await.expect("ping");
    loop {
        match connection.next_frame(PROMPTLY).await.expect("frame") {
            ServerFrame::Pong { id } if id.as_deref() == Some("quiet") => return,
            frame if frame.queue_pos().is_some() => panic!("unexpected queued frame {frame:?}"),
            _ => {}
        }
    }
}

pub fn texts(frames: &[ServerFrame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

pub fn seqs(frames: &[ServerFrame]) -> Vec<i64> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

pub fn refused_code(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Refused { code, .. }) => code.as_str().to_owned(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
