//! The missive server as a library: build it from a [`Config`], hand it a
//! bound listener, and cancel a token to stop it.
//!
//! # Layout
//! - [`config`]: typed configuration and its layering.
//! - [`gateway`]: axum routes, REST handlers, the WebSocket session.
//! - [`service`]: domain logic (accounts, messaging) over Store and Bus.
//! - [`router`]: device → live connection on this node; the Bus sink.
//! - [`cluster`]: node id, lease heartbeat, reaping, news from other nodes.
//! - [`cache`]: token and relay-target caches with Bus invalidation.
//! - [`error`]: the one client-facing error type.
//! - [`telemetry`]: logs and Prometheus metrics.

pub mod accept;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod mailbox;
mod poison;
mod revocations;
pub mod router;
pub mod service;
pub mod telemetry;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use missive_blobs::Blobs;
use missive_bus::{Bus, InProcessBus, NatsBus, NatsConfig, Spent};
use missive_core::Clock;
use missive_core::model::SweepOutcome;
use missive_store::{
    Fsync, PostgresConfig, PostgresStore, SqliteConfig, SqliteStore, Store, StoreError,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::cache::Caches;
use crate::config::LimitsConfig;
use crate::router::{NodeEvent, Router};
use crate::service::ServiceError;
use crate::service::send_limit::{Rate, SendLimiter, SharedLimit};
use crate::service::{Accounts, Groups, Keys, Media, Messaging, Push, Social};

/// Everything a request handler or session needs; shared by `Arc`.
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub router: Arc<Router>,
    pub caches: Arc<Caches>,
    pub clock: Arc<dyn Clock>,
    /// This node's session directory entries and lease.
    pub cluster: Arc<cluster::ClusterNode>,
    pub accounts: Accounts,
    pub messaging: Messaging,
    pub groups: Groups,
    pub social: Arc<Social>,
    pub media: Media,
    pub keys: Keys,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// When this server was built: the origin of the connections' shared
    /// keepalive beat.
    pub started: tokio::time::Instant,
    /// Every WebSocket session, so shutdown can wait for them.
    pub sessions: TaskTracker,
    pub connection_permits: Arc<Semaphore>,
    /// Live connections per client address and per account.
    pub connection_limits: Arc<gateway::connections::ConnectionLimits>,
    pub send_limit: SendLimiter,
    /// Media uploads and group creations per account.
    pub upload_limit: SendLimiter,
    pub group_create_limit: SendLimiter,
    /// End-to-end key claims per account.
    pub key_claim_limit: SendLimiter,
    /// News from other nodes; taken by `run`.
    node_events: std::sync::Mutex<Option<mpsc::Receiver<NodeEvent>>>,
}

/// The names of the limits every node spends from together, as spending
/// reports and `missive_limit_spent_elsewhere_total` call them.
pub const SHARED_LIMITS: [&str; 7] = [
    "send",
    "upload",
    "group_create",
    "settings",
    "key_claim",
    "login",
    "registration",
];

impl AppState {
    /// The limits every node spends from together, named as in
    /// [`SHARED_LIMITS`].
    pub fn shared_limits(&self) -> [(&'static str, &dyn SharedLimit); 7] {
        let [logins, registrations] = self.accounts.attempt_limits();
        let [
            send,
            upload,
            group_create,
            settings,
            key_claim,
            login,
            registration,
        ] = SHARED_LIMITS;
        [
            (send, &self.send_limit),
            (upload, &self.upload_limit),
            (group_create, &self.group_create_limit),
            (settings, self.groups.settings_limit()),
            (key_claim, &self.key_claim_limit),
            (login, logins),
            (registration, registrations),
        ]
    }
}

/// A built server, not yet serving. Cloning shares the same state.
#[derive(Clone)]
pub struct App {
    state: Arc<AppState>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open blob storage: {0}")]
    Blobs(#[from] missive_blobs::BlobError),
    #[error("cannot connect the bus: {0}")]
    Bus(#[from] missive_bus::NatsError),
}

/// The blob store `config` names: the data directory's media folder, or
/// an S3 bucket.
pub fn configured_blobs(config: &Config) -> Result<Blobs, missive_blobs::BlobError> {
    match config.blobs.backend {
        config::BlobsBackend::Local => Blobs::local(&config.media_dir()),
        config::BlobsBackend::S3 => Blobs::s3(&missive_blobs::S3Settings {
            bucket: config.blobs.s3_bucket.clone(),
            region: config.blobs.s3_region.clone(),
            endpoint: config.blobs.s3_endpoint.clone(),
        }),
    }
}

/// The services over the node's boundaries, router and caches, and this
/// node's `ClusterNode` (the media service, which alone uses the blobs, is
/// made beside them).
struct Services {
    accounts: Accounts,
    messaging: Messaging,
    groups: Groups,
    social: Arc<Social>,
    keys: Keys,
    cluster: Arc<cluster::ClusterNode>,
}

impl Services {
    fn new(
        config: &Config,
        store: &Arc<dyn Store>,
        bus: &Arc<dyn Bus>,
        router: &Arc<Router>,
        clock: &Arc<dyn Clock>,
        lease_clock: &Arc<cluster::LeaseClock>,
        caches: &Arc<Caches>,
    ) -> Self {
        let accounts = Accounts::new(
            store.clone(),
            bus.clone(),
            clock.clone(),
            caches.clone(),
            &config.limits,
            config.registration.mode,
        );
        let push = Arc::new(Push::start(
            &config.push,
            store.clone(),
            router.clone(),
            clock.clone(),
        ));
        let messaging = Messaging::new(
            store.clone(),
            bus.clone(),
            router.clone(),
            clock.clone(),
            push.clone(),
            config,
        );
        let groups = Groups::new(
            store.clone(),
            bus.clone(),
            clock.clone(),
            push,
            caches.clone(),
            &config.limits,
            config.e2ee,
        );
        let social = Social::new(
            store.clone(),
            bus.clone(),
            router.clone(),
            clock.clone(),
            lease_clock.clone(),
            caches.clone(),
            &config.limits,
        );
        let keys = Keys::new(store.clone(), bus.clone(), clock.clone());
        let social = Arc::new(social);
        let cluster = Arc::new(cluster::ClusterNode::new(
            store.clone(),
            bus.clone(),
            router.clone(),
            (clock.clone(), lease_clock.clone()),
            social.clone(),
            config.cluster.lease_ms,
        ));
        Self {
            accounts,
            messaging,
            groups,
            social,
            keys,
            cluster,
        }
    }
}

/// The node's rate limits, shared with the other nodes when there are any.
struct RateLimits {
    send_limit: SendLimiter,
    upload_limit: SendLimiter,
    group_create_limit: SendLimiter,
    key_claim_limit: SendLimiter,
}

impl RateLimits {
    fn new(limits: &LimitsConfig, shared: bool) -> Self {
        let send_limit = SendLimiter::new(
            Rate {
                per_sec: limits.sends_per_sec_per_device,
                burst: limits.send_burst_per_device,
            },
            Rate {
                per_sec: limits.sends_per_sec_per_account,
                burst: limits.send_burst_per_account,
            },
        )
        .shared(shared);
        let per_account =
            |per_sec: u32, burst: u32| SendLimiter::per_account(per_sec, burst).shared(shared);
        Self {
            send_limit,
            upload_limit: per_account(
                limits.uploads_per_sec_per_account,
                limits.upload_burst_per_account,
            ),
            group_create_limit: per_account(
                limits.group_creates_per_sec_per_account,
                limits.group_create_burst_per_account,
            ),
            key_claim_limit: per_account(
                limits.key_claims_per_sec_per_account,
                limits.key_claim_burst_per_account,
            ),
        }
    }
}

impl App {
    /// Opens the configured backends (the embedded SQLite file under
    /// `config.data_dir`, or PostgreSQL; the in-process bus or NATS; local
    /// or S3 blobs) and wires the services.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        // Install the process-wide recorder before anything records.
        let _ = telemetry::prometheus();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store: Arc<dyn Store> = if config.store.url.is_empty() {
            let mut store_config = SqliteConfig::new(config.database_path());
            store_config.fsync = match config.store.fsync {
                config::FsyncMode::Always => Fsync::Always,
                config::FsyncMode::Off => Fsync::Off,
            };
            store_config.batch_max = config.store.batch_max;
            store_config.readers = config.store.readers;
            Arc::new(SqliteStore::open(&store_config)?)
        } else {
            let mut store_config = PostgresConfig::new(config.store.url.clone());
            store_config.pool_size = config.store.pool_size;
            Arc::new(PostgresStore::connect(&store_config).await?)
        };
        let bus: Arc<dyn Bus> = if config.bus.url.is_empty() {
            Arc::new(InProcessBus::new())
        } else {
            Arc::new(
                NatsBus::connect(NatsConfig {
                    url: config.bus.url.clone(),
                    client_name: match config.cluster.node_id.as_str() {
                        "" => "missive".into(),
                        node => format!("missive {node}"),
                    },
                    subject_prefix: config.bus.subject_prefix.clone(),
                    recheck: Duration::from_millis(config.bus.recheck_ms),
                })
                .await?,
            )
        };
        let blobs = configured_blobs(&config)?;
        Ok(Self::with_boundaries(config, store, bus, blobs, clock))
    }

    /// Wires the services over given boundaries (the cluster mode entry).
    pub fn with_boundaries(
        config: Config,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        blobs: Blobs,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let caches = Arc::new(Caches::default());
        let lease_clock = Arc::new(cluster::LeaseClock::default());
        let clock: Arc<dyn Clock> = Arc::new(cluster::StoreTime::new(clock, lease_clock.clone()));
        let (router, node_events) =
            Router::new(cluster::node_id(&config.cluster.node_id), caches.clone());
        let router = Arc::new(router);
        bus.attach(router.clone());
        let Services {
            accounts,
            messaging,
            groups,
            social,
            keys,
            cluster,
        } = Services::new(
            &config,
            &store,
            &bus,
            &router,
            &clock,
            &lease_clock,
            &caches,
        );
        let media = Media::new(
            store.clone(),
            blobs,
            clock.clone(),
            config.limits.media_bytes_max,
        );
        let connection_permits = Arc::new(Semaphore::new(config.limits.connections_max));
        let connection_limits = gateway::connections::ConnectionLimits::new(
            config.limits.connections_per_ip_max,
            config.limits.connections_per_account_max,
        );
        let RateLimits {
            send_limit,
            upload_limit,
            group_create_limit,
            key_claim_limit,
        } = RateLimits::new(&config.limits, bus.has_peers());
        Self {
            state: Arc::new(AppState {
                config,
                store,
                bus,
                router,
                caches,
                clock,
                cluster,
                accounts,
                messaging,
                groups,
                social,
                media,
                keys,
                shutdown: CancellationToken::new(),
                started: tokio::time::Instant::now(),
                sessions: TaskTracker::new(),
                connection_permits,
                connection_limits,
                send_limit,
                upload_limit,
                group_create_limit,
                key_claim_limit,
                node_events: std::sync::Mutex::new(Some(node_events)),
            }),
        }
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The store backend for the startup log; never includes a password.
    fn describe_store(&self) -> String {
        let config = &self.state.config;
        if config.store.url.is_empty() {
            format!("sqlite {}", config.database_path().display())
        } else {
            format!("postgres {}", redact_password(&config.store.url))
        }
    }

    /// Runs one sweep now (the background sweeper runs it periodically).
    /// Also refreshes the `missive_events_waiting` gauge: summing every
    /// device's backlog is too costly to do per scrape.
    pub async fn sweep_now(&self) -> Result<SweepOutcome, ServiceError> {
        let outcome = self.state.messaging.sweep().await?;
        let grace_ms = i64::try_from(
            self.state
                .config
                .delivery
                .media_grace_secs
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX);
        let before_ms = self.state.clock.now_ms().saturating_sub(grace_ms);
        let collected = self.state.media.collect_garbage(before_ms).await?;
        if collected > 0 {
            tracing::info!(collected, "unshared media collected");
        }
        let expired = self.state.accounts.expire_idle_devices().await?;
        if expired > 0 {
            tracing::info!(expired, "idle devices expired");
        }
        if let Ok(waiting) = self.state.store.waiting_total().await {
            metrics::gauge!("missive_events_waiting").set(waiting as f64);
        }
        Ok(outcome)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes
    /// every WebSocket with 1001 (going away), waits for sessions and
    /// flushes the store.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let local_addr = listener.local_addr()?;
        // Hold a lease before any session claims a device under it.
        state.cluster.renew().await;
        let mut background = vec![
            tokio::spawn(run_sweeper(self.clone())),
            tokio::spawn(revocations::watch(
                state.store.clone(),
                state.caches.clone(),
                state.router.clone(),
            )),
            tokio::spawn(state.cluster.clone().run_heartbeat()),
        ];
        if state.bus.has_peers() {
            background.push(tokio::spawn(run_spending_reports(state.clone())));
        }
        if let Some(every) = state.bus.recheck_interval() {
            background.push(tokio::spawn(state.cluster.clone().run_recheck(every)));
        }
        let node_events = state
            .node_events
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(events) = node_events {
            background.push(tokio::spawn(run_node_events(state.clone(), events)));
        }
        tracing::info!(
            %local_addr,
            node = %state.router.node(),
            store = %self.describe_store(),
            bus = %state.bus.describe(),
            blobs = %state.media.describe_blobs(),
            history_retention = %state.config.delivery.history_retention,
            "missive serving"
        );
        let app = gateway::routes(state.clone());
        let admission = Arc::new(accept::Admission::new(
            // WebSockets and polls are capped at connections_max; the
            // rest are short requests, sign-ups and sockets on their way in.
            state.config.limits.connections_max.saturating_mul(2),
            state.config.limits.unauthenticated_per_ip_max,
        ));
        tracing::info!(connections_max = admission.open_max(), "taking connections");
        let head_timeout = Duration::from_millis(state.config.limits.request_head_timeout_ms);
        let stop = shutdown.clone();
        let session_stop = state.shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            session_stop.cancel();
        });
        accept::serve(listener, app, admission, head_timeout, shutdown.clone()).await;
        state.shutdown.cancel();
        for task in background {
            task.abort();
        }
        state.sessions.close();
        if tokio::time::timeout(Duration::from_secs(10), state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions did not finish within 10 s of shutdown");
        }
        state.store.shutdown().await;
        tracing::info!("missive stopped");
        Ok(())
    }
}

async fn run_sweeper(app: App) {
    let period = Duration::from_secs(app.state.config.delivery.sweep_interval_secs);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match app.sweep_now().await {
            Ok(outcome) if outcome != SweepOutcome::default() => {
                tracing::info!(?outcome, "sweep");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(code = err.code.as_str(), "sweep failed"),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Acts on news from other nodes, in order.
async fn run_node_events(state: Arc<AppState>, mut events: mpsc::Receiver<NodeEvent>) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(NodeEvent::PresenceChanged(account)) => {
                    state.social.announce_here(account).await;
                }
                Some(NodeEvent::Spent(spent)) => debit(&state, &spent),
                None => return,
            },
            () = state.router.resync_needed() => state.cluster.close_revoked().await,
        }
    }
}

/// Every [`cluster::SPENT_REPORT_PERIOD`], tells the other nodes what this node
/// spent of the limits they share; nothing when nothing was spent, so an
/// idle cluster sends nothing.
async fn run_spending_reports(state: Arc<AppState>) {
    let mut ticks = tokio::time::interval(cluster::SPENT_REPORT_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut report = Vec::new();
        for (limit, shared) in state.shared_limits() {
            report.extend(shared.take_spent().into_iter().map(|(key, units)| Spent {
                limit: limit.to_owned(),
                key,
                units,
            }));
        }
        if !report.is_empty() {
            state.bus.publish_spent(report).await;
        }
    }
}

/// Takes what another node reported spending from the same budgets here.
fn debit(state: &AppState, spent: &[Spent]) {
    let limits = state.shared_limits();
    for entry in spent {
        if let Some((limit, shared)) = limits.iter().find(|(limit, _)| *limit == entry.limit) {
            shared.spent_elsewhere(&entry.key, entry.units);
            metrics::counter!("missive_limit_spent_elsewhere_total", "limit" => *limit)
                .increment(u64::try_from(entry.units).unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_urls_are_logged_without_passwords() {
        // Goal: the startup log never carries a database password.
        assert_eq!(
            super::redact_password("postgres://app:s3cret@db:5432/missive"),
            "postgres://app:***@db:5432/missive"
        );
        assert_eq!(
            super::redact_password("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(super::redact_password("postgres:///x"), "postgres:///x");
    }
}
