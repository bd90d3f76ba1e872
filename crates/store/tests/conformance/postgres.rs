//! The PostgreSQL backend: the same scenarios, each in a schema of its own
//! on the server at `MISSIVE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When that server cannot
//! be reached the tests pass without running and say so on stderr, except
//! in CI (`CI` set), where they fail: a CI run must not go green by skipping.
//! Checks with several nodes on one database, and outages, are in
//! [`cluster`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use missive_store::{PostgresConfig, PostgresStore, Store};
use tokio_postgres::NoTls;

use crate::Opened;

mod cluster;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn base_url() -> String {
    std::env::var("MISSIVE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false" && ci != "0")
}

/// A schema of its own on the test server, dropped with this value, so
/// every test starts from an empty database and leaves nothing behind.
pub(crate) struct FreshSchema {
    pub name: String,
    pub base_url: String,
}

impl FreshSchema {
    /// `None` (after saying why on stderr) when the server cannot be
    /// reached outside CI; a panic in CI.
    pub(crate) async fn create() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base_url = base_url();
        let name = format!(
            "missive_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let created = async {
            let client = connect(&base_url).await?;
            client
                .batch_execute(&format!("CREATE SCHEMA {name}"))
                .await
                .map_err(|err| err.to_string())
        };
        match created.await {
            Ok(()) => Some(Self { name, base_url }),
            Err(err) if in_ci() => {
                panic!("PostgreSQL at {base_url} is needed in CI and cannot be used: {err}")
            }
            Err(err) => {
                eprintln!("skipping: PostgreSQL at {base_url} cannot be used: {err}");
                None
            }
        }
    }

    /// A node's configuration: this schema first on its search path.
    pub(crate) fn config(&self) -> PostgresConfig {
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        PostgresConfig {
            pool_size: 4,
            wait_timeout: Duration::from_secs(10),
            ..PostgresConfig::new(format!(
                "{}{separator}options=-csearch_path%3D{}",
                self.base_url, self.name
            ))
        }
    }

    /// A node on this schema.
    pub(crate) async fn node(&self) -> PostgresStore {
        PostgresStore::connect(&self.config())
            .await
            .expect("connect to PostgreSQL")
    }
}

/// A plain client for administration, with a bounded connect.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|err| format!("{err}"))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await.map_err(|err| {
        // The cause (refused, timed out) is in the source, not the text.
        match std::error::Error::source(&err) {
            Some(cause) => format!("{err}: {cause}"),
            None => err.to_string(),
        }
    })?;
    tokio::spawn(connection);
    Ok(client)
}

impl Drop for FreshSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked
        // on: drop the schema from a thread with a runtime of its own.
        let (name, url) = (self.name.clone(), self.base_url.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(client) = connect(&url).await {
                    // A store left running by a failed test may hold
                    // locks: give up rather than hang; the name is unique.
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

async fn open() -> Option<Opened> {
    let schema = FreshSchema::create().await?;
    let store: Arc<dyn Store> = Arc::new(schema.node().await);
    Some(Opened {
        store,
        _guard: Box::new(schema),
    })
}

for_each_scenario!(conformance_tests!(postgres, open));

// ── PostgreSQL-only checks: several nodes on one database, outages. ──

#[tokio::test(flavor = "multi_thread")]
async fn reports_the_servers_clock() {
    // Goal: PostgreSQL reports its own clock (the time base of leases),
    // which on this machine is within a minute of ours.
    let Some(opened) = open().await else {
        return;
    };
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let store_now = opened
        .store
        .clock_ms()
        .await
        .expect("clock_ms")
        .expect("PostgreSQL has a clock of its own");
    assert!(
        (store_now - local).abs() < 60_000,
        "store clock {store_now} vs local {local}"
    );
}
