//! Cluster test fixtures: a database of its own per test on the local
//! PostgreSQL, several `missive serve` processes on it and one NATS subject
//! prefix, a private restartable nats-server, and a TCP proxy that can cut
//! a backend away. Used by cluster.rs and the fault suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use missive_client::{Api, Connection};
use tokio::net::{TcpListener, TcpStream};

use super::{PASSWORD, PROMPTLY, ServerProcess, service_available};

pub(crate) const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
pub(crate) const NATS: &str = "nats://127.0.0.1:4222";
/// Short leases so a dead node is noticed quickly.
pub(crate) const LEASE_MS: u64 = 3_000;

pub(crate) fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{label}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Whether PostgreSQL and NATS answer; in CI their absence fails.
pub(crate) async fn services_available() -> bool {
    service_available("PostgreSQL", "127.0.0.1:5432").await
        && service_available("NATS", "127.0.0.1:4222").await
}

/// A database of its own, dropped at the end of the test.
pub(crate) struct Database {
    pub name: String,
}

impl Database {
    pub(crate) async fn create() -> Self {
        let name = unique("missive_cluster");
        admin(&format!("CREATE DATABASE {name}")).await;
        Self { name }
    }

    pub(crate) fn url_via(&self, host_port: &str) -> String {
        format!("postgres://postgres@{host_port}/{}", self.name)
    }

    pub(crate) fn url(&self) -> String {
        format!("{POSTGRES}/{}", self.name)
    }

    /// How many live sessions the directory lists for `username`.
    pub(crate) async fn sessions_of(&self, username: &str) -> i64 {
        query(
            &self.url(),
            "SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id
             WHERE a.username = $1",
            &[&username],
        )
        .await[0]
            .get(0)
    }

    pub(crate) async fn drop_now(self) {
        admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await;
    }
}

/// Runs one query on its own connection to the database at `url`.
pub(crate) async fn query(
    url: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    let driver = tokio::spawn(connection);
    let rows = client.query(sql, params).await.expect(sql);
    drop(client);
    let _ = driver.await;
    rows
}

pub(crate) async fn admin(sql: &str) {
    let (client, connection) =
        tokio_postgres::connect(&format!("{POSTGRES}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = driver.await;
}

/// Several nodes on one database and one NATS prefix.
pub(crate) struct Cluster {
    pub nodes: Vec<Option<ServerProcess>>,
    pub urls: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dirs: Vec<tempfile::TempDir>,
    /// Node i's `bus.url`, where it differs from the one in `env`.
    pub bus_urls: Vec<String>,
}

impl Cluster {
    pub(crate) fn start(n: usize, store_url: &str, bus_url: &str, extra: &[(&str, &str)]) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("MISSIVE_STORE__URL".into(), store_url.into()),
            ("MISSIVE_STORE__POOL_SIZE".into(), "6".into()),
            ("MISSIVE_BUS__URL".into(), bus_url.into()),
            ("MISSIVE_BUS__SUBJECT_PREFIX".into(), unique("missive")),
            ("MISSIVE_BUS__RECHECK_MS".into(), "1000".into()),
            ("MISSIVE_CLUSTER__LEASE_MS".into(), LEASE_MS.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut cluster = Self {
            nodes: Vec::new(),
            urls: Vec::new(),
            env,
            dirs: Vec::new(),
            bus_urls: Vec::new(),
        };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster
    }

    /// One node per entry of `bus_urls`, node i on `bus_urls[i]`.
    pub(crate) fn start_on_buses(
        store_url: &str,
        bus_urls: &[String],
        extra: &[(&str, &str)],
    ) -> Self {
        let mut cluster = Self::start(0, store_url, NATS, extra);
        cluster.bus_urls = bus_urls.to_vec();
        for _ in bus_urls {
            cluster.add_node();
        }
        cluster
    }

    /// Node `index`'s environment: the cluster's, its node id, its bus.
    fn node_env(&self, index: usize) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        if let Some(bus_url) = self.bus_urls.get(index) {
            env.retain(|(key, _)| key != "MISSIVE_BUS__URL");
            env.push(("MISSIVE_BUS__URL".into(), bus_url.clone()));
        }
        env.push(("MISSIVE_CLUSTER__NODE_ID".into(), format!("node-{index}")));
        env
    }

    pub(crate) fn add_node(&mut self) -> usize {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = self.nodes.len();
        let env = self.node_env(index);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let node = ServerProcess::start_with_env(dir.path(), &env);
        self.urls.push(node.url.clone());
        self.nodes.push(Some(node));
        self.dirs.push(dir);
        index
    }

    pub(crate) fn api(&self, node: usize) -> Api {
        Api::new(&self.urls[node])
    }

    pub(crate) async fn user(&self, node: usize, username: &str) -> String {
        let api = self.api(node);
        api.register(username, PASSWORD).await.expect("register");
        api.login(username, PASSWORD, "test")
            .await
            .expect("login")
            .token
    }

    pub(crate) async fn connect(&self, node: usize, token: &str) -> Connection {
        Connection::connect(&self.api(node).ws_url(), token)
            .await
            .expect("connect")
    }

    pub(crate) fn kill_9(&mut self, node: usize) {
        if let Some(mut process) = self.nodes[node].take() {
            process.kill_9();
        }
    }

    /// Starts a stopped node again (a new process, so a new node id
    /// suffix and a new port); returns its URL.
    pub(crate) fn restart(&mut self, node: usize) -> String {
        let env = self.node_env(node);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let process = ServerProcess::start_with_env(self.dirs[node].path(), &env);
        self.urls[node] = process.url.clone();
        self.nodes[node] = Some(process);
        self.urls[node].clone()
    }
}

/// A PostgreSQL server of the test's own (initdb into a temporary
/// directory, run as the `postgres` user), which the test can crash and
/// start again: `pg_ctl stop -m immediate` is a crash, and the restart runs
/// WAL recovery.
pub(crate) struct PrivatePostgres {
    pub port: u16,
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    /// `None` (with the reason printed) where this machine cannot run one:
    /// no PostgreSQL binaries or no `postgres` user. Under CI that fails.
    pub(crate) fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| versions.flatten().map(|v| v.path().join("bin")).max())
            .filter(|bin| bin.join("initdb").exists());
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs PostgreSQL's binaries under /usr/lib/postgresql"
            );
            eprintln!("skipping: no PostgreSQL binaries under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let owned = std::process::Command::new("chown")
            .arg("postgres")
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !owned {
            assert!(std::env::var_os("CI").is_none(), "CI needs a postgres user");
            eprintln!("skipping: cannot hand a directory to the postgres user");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut postgres = Self {
            port,
            bin,
            dir,
            running: false,
        };
        postgres.as_postgres(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
        );
        postgres.restart();
        Some(postgres)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .arg(self.data())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("runuser");
        assert!(status.success(), "{tool} {args:?} failed");
    }

    pub(crate) fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) fn restart(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.as_postgres("pg_ctl", &["-w", "-o", &options, "-l", &log, "start", "-D"]);
        self.running = true;
    }

    /// Stops it the way a crash would: no checkpoint, no goodbye.
    pub(crate) fn crash(&mut self) {
        self.as_postgres("pg_ctl", &["-m", "immediate", "stop", "-D"]);
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            self.crash();
        }
    }
}

/// A private nats-server on a fixed free port, restartable.
pub(crate) struct PrivateNats {
    pub port: u16,
    /// Joined to other servers as one NATS cluster: its route port, its
    /// monitoring port, the others' route URLs.
    cluster: Option<Routes>,
    child: Option<std::process::Child>,
}

struct Routes {
    port: u16,
    monitor: u16,
    peers: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl PrivateNats {
    pub(crate) fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            cluster: None,
            child: None,
        };
        nats.restart();
        nats
    }

    /// `n` servers joined by routes into one NATS cluster, each knowing
    /// all the others; returns once every server has a route to each.
    pub(crate) fn cluster(n: usize) -> Vec<Self> {
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<Self> = (0..n)
            .map(|i| Self {
                port: free_port(),
                cluster: Some(Routes {
                    port: route_ports[i],
                    monitor: free_port(),
                    peers: (0..n)
                        .filter(|&j| j != i)
                        .map(|j| format!("nats://127.0.0.1:{}", route_ports[j]))
                        .collect(),
                }),
                child: None,
            })
            .collect();
        for server in &mut servers {
            server.restart();
        }
        for server in &servers {
            server.wait_for_routes(n - 1);
        }
        servers
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let mut args = vec!["-a".to_string(), "127.0.0.1".into(), "-p".into()];
        args.push(self.port.to_string());
        if let Some(routes) = &self.cluster {
            args.extend([
                "--cluster_name".into(),
                "missive-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", routes.port),
                "--routes".into(),
                routes.peers.join(","),
                "-m".into(),
                routes.monitor.to_string(),
            ]);
        }
        let child = std::process::Command::new("nats-server")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH (Debian package nats-server)");
        self.child = Some(child);
        // Wait until it accepts connections (an event bound, not a sleep).
        let deadline = Instant::now() + PROMPTLY;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::yield_now();
        }
    }

    /// Waits until the server's monitoring endpoint lists `routes` routes.
    pub(crate) fn wait_for_routes(&self, routes: usize) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let wanted = format!("\"num_routes\": {routes}");
        poll_until(
            &format!("nats-server on {} joined its {routes} peers", self.port),
            || http_get(cluster.monitor, "/routez").is_some_and(|body| body.contains(&wanted)),
        );
    }

    /// Waits until a client called `name` is connected to this server.
    pub(crate) fn wait_for_client(&self, name: &str) {
        wait_for_client_on(std::slice::from_ref(self), &[0], name);
    }

    /// Whether the server's monitoring endpoint lists a client `name`.
    fn has_client(&self, name: &str) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        http_get(cluster.monitor, "/connz")
            .is_some_and(|body| body.contains(&format!("\"name\": \"{name}\"")))
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until a client called `name` is connected to one of
/// `servers[i]` for the indexes `which`.
pub(crate) fn wait_for_client_on(servers: &[PrivateNats], which: &[usize], name: &str) {
    poll_until(
        &format!("client {name:?} on nats-servers {which:?}"),
        || which.iter().any(|&i| servers[i].has_client(name)),
    );
}

/// Asks a peer process (a nats-server's monitoring endpoint) until
/// `done` holds, at most [`PROMPTLY`]. It has no way to tell us; the
/// pause between asks only spares it a busy loop.
fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or `None` if it failed.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy (to PostgreSQL or NATS) that can cut every connection and
/// refuse new ones until restored.
pub(crate) struct CuttableProxy {
    pub address: String,
    open: Arc<AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl CuttableProxy {
    pub(crate) async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, cut_seen) = tokio::sync::watch::channel(0u64);
        let open_flag = open.clone();
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !open_flag.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let mut cut = cut_seen.clone();
                cut.mark_unchanged();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                        return;
                    };
                    // A cut drops both sockets.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            address,
            open,
            cuts,
        }
    }

    pub(crate) fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    pub(crate) fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
