//! The embedded store's write path:
//! - `batch`: 256 concurrent 1:1 sends, with the writer committing at most
//!   `batch_max` of them per transaction (fsync = always): what group
//!   commit buys, as messages per second against messages per commit;
//! - `fan_out`: one group send queued for M members' devices: the cost of
//!   planning and writing the fan-out as M grows.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use missive_core::{
    AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText, TokenHash, Username,
};
use missive_store::{
    Body, Fsync, GroupName, NewAccount, NewDevice, NewGroup, NewMessage, SqliteConfig, SqliteStore,
    Store,
};
use tokio::runtime::Runtime;

const NOW: i64 = 1_700_000_000_000;
const CONCURRENT_SENDS: usize = 256;

struct Opened {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

fn open(batch_max: usize) -> Opened {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SqliteConfig::new(dir.path().join("bench.sqlite"));
    config.fsync = Fsync::Always;
    config.batch_max = batch_max;
    Opened {
        store: Arc::new(SqliteStore::open(&config).expect("open store")),
        _dir: dir,
    }
}

async fn user(store: &dyn Store, name: &str) -> (AccountId, DeviceId) {
    let account = store
        .create_account(NewAccount {
            username: Username::parse(name).expect("valid name"),
            password_hash: "x".into(),
            phone: None,
            now_ms: NOW,
        })
        .await
        .expect("account");
    let device = store
        .create_device(NewDevice {
            account,
            name: "bench".into(),
            token_hash: TokenHash::of(name),
            devices_max: 5,
            now_ms: NOW,
        })
        .await
        .expect("device");
    (account, device)
}

fn text(conversation: ConversationId, from: (AccountId, DeviceId), n: u64) -> NewMessage {
    NewMessage {
        message_id: MessageId::generate(),
        conversation,
        sender_account: from.0,
        sender_device: from.1,
        client_msg_id: ClientMsgId::parse(&format!("b{n}")).expect("valid id"),
        body: Body::Text {
            text: MessageText::parse("hello", 1024).expect("valid text"),
            reply_to: None,
            media: Vec::new(),
        },
        now_ms: NOW,
        queue_expires_ms: NOW + 86_400_000,
    }
}

fn batch(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("batch");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CONCURRENT_SENDS as u64));
    for batch_max in [1usize, 16, 256] {
        let opened = runtime.block_on(async { open(batch_max) });
        let store = opened.store.clone();
        let pairs = runtime.block_on(async {
            let mut pairs = Vec::with_capacity(CONCURRENT_SENDS);
            for i in 0..CONCURRENT_SENDS {
                let sender = user(&*store, &format!("snd{i}")).await;
                let receiver = user(&*store, &format!("rcv{i}")).await;
                let conversation = store
                    .direct_conversation(sender.0, receiver.0, NOW)
                    .await
                    .expect("conversation");
                pairs.push((conversation, sender));
            }
            pairs
        });
        let mut n = 0u64;
        group.bench_function(BenchmarkId::from_parameter(batch_max), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let sends = pairs.iter().map(|(conversation, sender)| {
                        n += 1;
                        let store = store.clone();
                        let message = text(*conversation, *sender, n);
                        tokio::spawn(async move { store.append_message(message).await })
                    });
                    for send in sends.collect::<Vec<_>>() {
                        send.await.expect("task").expect("append");
                    }
                })
            })
        });
        runtime.block_on(store.shutdown());
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("fan_out");
    group.sample_size(10);
    for members in [2usize, 100, 1000] {
        let opened = runtime.block_on(async { open(512) });
        let store = opened.store.clone();
        let (creator, conversation) = runtime.block_on(async {
            let creator = user(&*store, "creator").await;
            let mut others = Vec::with_capacity(members - 1);
            for i in 1..members {
                others.push(user(&*store, &format!("mem{i}")).await.0);
            }
            let group = store
                .create_group(NewGroup {
                    creator: creator.0,
                    creator_device: creator.1,
                    name: GroupName::parse("bench").expect("valid name"),
                    members: others,
                    members_max: 1024,
                    now_ms: NOW,
                    queue_expires_ms: NOW + 86_400_000,
                })
                .await
                .expect("group");
            (creator, group.conversation)
        });
        let mut n = 0u64;
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter(|| {
                n += 1;
                runtime
                    .block_on(store.append_message(text(conversation, creator, n)))
                    .expect("append")
            })
        });
        runtime.block_on(store.shutdown());
    }
    group.finish();
}

criterion_group!(benches, batch, fan_out);
criterion_main!(benches);
