//! What the adapter's own tests share: a schema of their own on the test
//! server (`MISSIVE_TEST_POSTGRES_URL`, default the local one).

use crate::{AccountStore, MessageStore};

use std::time::Duration;

use missive_core::{
    AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText, Seq, TokenHash,
    Username,
};
use tokio_postgres::{Client, NoTls};

use super::batcher::Batch;
use crate::model::{AckRequest, Body, NewMessage};
use crate::{NewAccount, NewDevice, PostgresConfig, PostgresStore};

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

/// The first column of every row `sql` returns, as text.
pub(super) async fn column_of(db: &Client, sql: &str) -> Vec<String> {
    db.query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|row| row.get(0))
        .collect()
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

    /// A store on a fresh schema; `None` when PostgreSQL does not answer
    /// (outside CI the test then passes without running).
    pub(super) async fn store(label: &str) -> Option<(Self, PostgresStore)> {
        let schema = Self::create(label).await?;
        let store = PostgresStore::connect(&PostgresConfig::new(schema.url.clone()))
            .await
            .expect("store");
        Some((schema, store))
    }

    pub(super) async fn drop(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .expect("drop schema");
    }
}

/// A new account `name` with one device (named and keyed after it).
pub(super) async fn account(store: &PostgresStore, name: &str) -> (AccountId, DeviceId) {
    let account = store
        .create_account(NewAccount {
            username: Username::parse(name).expect("username"),
            password_hash: "h".into(),
            phone: None,
            now_ms: 1,
            invite: None,
        })
        .await
        .expect("account");
    (account, device(store, account, name).await)
}

/// The 1:1 conversation of `a` and `b` (created at time 1).
pub(super) async fn chat(
    store: &PostgresStore,
    a: (AccountId, DeviceId),
    b: (AccountId, DeviceId),
) -> ConversationId {
    store
        .direct_conversation(a.0, b.0, 1, false)
        .await
        .expect("direct conversation")
}

/// Another device of `account`, named and keyed `name`.
pub(super) async fn device(store: &PostgresStore, account: AccountId, name: &str) -> DeviceId {
    store
        .create_device(NewDevice {
            account,
            name: name.into(),
            token_hash: TokenHash::of(name),
            devices_max: 5,
            replace_least_recent: false,
            now_ms: 1,
        })
        .await
        .expect("device")
        .id
}

/// `device` (of `account`) acks up to each of `points`.
pub(super) fn ack(
    (account, device): (AccountId, DeviceId),
    points: &[(ConversationId, Seq)],
) -> AckRequest {
    AckRequest {
        device,
        account,
        points: points.to_vec(),
        purge_delivered_bodies: false,
        now_ms: 5,
    }
}

/// A text "hi" from `sender` under the client id `cmid`.
pub(super) fn text(
    conversation: ConversationId,
    (account, device): (AccountId, DeviceId),
    cmid: &str,
) -> NewMessage {
    NewMessage {
        message_id: MessageId::generate(),
        conversation,
        sender_account: account,
        sender_device: device,
        client_msg_id: ClientMsgId::parse(cmid).expect("cmid"),
        body: Body::Text {
            text: MessageText::parse("hi", 100).expect("text"),
            reply_to: None,
            media: Vec::new(),
        },
        now_ms: 2,
    }
}

/// Stores `items` as one batch of kind `B` in a transaction of its own,
/// committed, so a test knows they shared it.
pub(super) async fn store_batch<B: Batch>(
    store: &PostgresStore,
    items: &[&B::Item],
) -> Vec<Result<B::Answer, crate::StoreError>> {
    let mut client = store.inner.pool.get().await.expect("connection");
    let tx = client.transaction().await.expect("transaction");
    let answers = super::sql::ordered(B::store(&tx, items))
        .await
        .map_err(super::fault::Fault::into_store)
        .expect("batch");
    tx.commit().await.expect("commit");
    answers
}
