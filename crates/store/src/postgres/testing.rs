//! What the adapter's own tests share: a schema of their own on the test
//! server (`MISSIVE_TEST_POSTGRES_URL`, default the local one).

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

fn base_url() -> String {
    std::env::var("MISSIVE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A client, or `None` (skip) outside CI when the server cannot be reached.
pub(super) async fn client(url: &str) -> Option<Client> {
    let mut config: tokio_postgres::Config = url.parse().expect("test URL");
    config.connect_timeout(Duration::from_secs(3));
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Some(client)
        }
        Err(err) if std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false") => {
            panic!("PostgreSQL is required in CI: {err}")
        }
        Err(err) => {
            eprintln!("skipping: {err}");
            None
        }
    }
}

/// An empty schema; `url` puts it first on the search path. The test
/// drops it with [`FreshSchema::drop`] at its end (a failed test leaves it
/// behind, to look at).
pub(super) struct FreshSchema {
    admin: Client,
    name: String,
    pub(super) url: String,
}

impl FreshSchema {
    pub(super) async fn create(label: &str) -> Option<Self> {
        let base = base_url();
        let admin = client(&base).await?;
        let name = format!(
            "missive_{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        Some(Self { admin, name, url })
    }

    pub(super) async fn drop(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .expect("drop schema");
    }
}
