//! The embedded store's write and read paths:
//! - `batch`: 256 concurrent 1:1 sends, with the writer committing at most
//!   `batch_max` of them per transaction (fsync = always): what group
//!   commit buys, as messages per second against messages per commit;
//! - `fan_out`: one group send to M members' devices. A message is one
//!   row whatever M is (nothing is written per recipient), so this should
//!   stay flat as M grows; only the `recipients` list grows with it;
//! - `catch_up`: a device reading 1,000 events waiting for it in one
//!   conversation, in pages of 256, without acking (what a reconnecting
//!   session does before its first ack).

use missive_store::{GroupStore, MessageStore};

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use missive_core::{
    AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText, Seq, TokenHash,
    Username,
};
use missive_store::{
    Body, Fsync, GroupName, NewAccount, NewDevice, NewGroup, NewMessage, PendingRequest,
    SqliteConfig, SqliteStore, Store,
};
use tokio::runtime::Runtime;

const NOW: i64 = 1_700_000_000_000;
const CONCURRENT_SENDS: usize = 256;
const BACKLOG: usize = 1000;
const PAGE: usize = 256;

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
            invite: None,
        })
        .await
        .expect("account");
    let device = store
        .create_device(NewDevice {
            account,
            name: "bench".into(),
            token_hash: TokenHash::of(name),
            devices_max: 5,
            replace_least_recent: false,
            now_ms: NOW,
        })
        .await
        .expect("device")
        .id;
    (account, device)
}

fn text(conversation: ConversationId, from: (AccountId, DeviceId), n: u64) -> NewMessage {
    NewMessage {
        message_id: MessageId::generate(),
        conversation,
        sender_account: from.0,
        sender_device: from.1,
        // Time-ordered, as every missive client makes them.
        client_msg_id: ClientMsgId::parse(&format!("b{n:016x}")).expect("valid id"),
        body: Body::Text {
            text: MessageText::parse("hello", 1024).expect("valid text"),
            reply_to: None,
            media: Vec::new(),
        },
        now_ms: NOW,
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
                    .direct_conversation(sender.0, receiver.0, NOW, false)
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
                });
            });
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
                    encrypted: false,
                    name: GroupName::parse("bench").expect("valid name"),
                    members: others,
                    members_max: 1024,
                    now_ms: NOW,
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
                let appended = runtime
                    .block_on(store.append_message(text(conversation, creator, n)))
                    .expect("append");
                assert_eq!(appended.recipients.len(), members - 1);
            });
        });
        runtime.block_on(store.shutdown());
    }
    group.finish();
}

fn catch_up(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("catch_up");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BACKLOG as u64));
    let opened = runtime.block_on(async { open(512) });
    let store = opened.store.clone();
    let reader = runtime.block_on(async {
        let sender = user(&*store, "sender").await;
        let reader = user(&*store, "reader").await;
        let conversation = store
            .direct_conversation(sender.0, reader.0, NOW, false)
            .await
            .expect("conversation");
        let sends: Vec<_> = (0..BACKLOG as u64)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.append_message(text(conversation, sender, n)).await },
                )
            })
            .collect();
        for send in sends {
            send.await.expect("task").expect("append");
        }
        reader
    });
    group.bench_function(BenchmarkId::from_parameter(PAGE), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut after: Vec<(ConversationId, Seq)> = Vec::new();
                let mut read = 0;
                loop {
                    let page = store
                        .pending(PendingRequest {
                            device: reader.1,
                            account: reader.0,
                            after: after.clone(),
                            limit: PAGE,
                            expired_before_ms: 0,
                        })
                        .await
                        .expect("pending");
                    read += page.items.len();
                    after = page.scanned;
                    if !page.more {
                        break;
                    }
                }
                assert_eq!(read, BACKLOG);
            });
        });
    });
    runtime.block_on(store.shutdown());
    group.finish();
}

criterion_group!(benches, batch, fan_out, catch_up);
criterion_main!(benches);
