//! The cluster bus over core NATS (no JetStream, so any nats-server works).
//!
//! Subjects, under a configurable prefix:
//! - `<prefix>.d.<device>`: that device's events. A node subscribes while it
//!   holds a live connection of the device, so a publish reaches exactly the
//!   node(s) holding it, with no directory lookup.
//! - `<prefix>.presence`: "this account's presence may have changed"; every
//!   node listens and tells its own watchers.
//! - `<prefix>.invalidate`: cache invalidations; every node listens.
//! - `<prefix>.resync`: "events I published may have been lost": every node
//!   re-reads its live queues.
//! - `<prefix>.spent`: what a node spent of the cluster-wide limits since
//!   its last report; every node listens and debits the same budgets.
//!
//! The connection uses `no_echo`, so a node never hears its own publishes:
//! device events are also handed to this node's sink directly (it ignores
//! devices it does not hold), and presence/invalidations were already
//! applied locally by the caller. Core NATS is at-most-once, so every way
//! an event can be lost that a node can see leads to a resync (re-read
//! every live queue, drop caches, close devices that no longer exist):
//! - a node that reconnects resyncs itself (it may have missed events), and
//!   tells every node on `<prefix>.resync` (events it published just before
//!   may have died in its client's buffer);
//! - a node that could not publish a device event (not connected, or the
//!   publish failed) tells every node the same, once it can;
//! - a node whose client dropped incoming messages (slow consumer) resyncs;
//! - a device subscribed late (its first subscribe failed) re-reads its
//!   queue once subscribed;
//! - and every `recheck` each node still asks the store which of its live
//!   devices have something waiting and wakes those, a slow safety net for
//!   a loss no node sees (between the servers of a NATS cluster, for
//!   instance);
//! - events that must not be lost (revocations, takeovers, invalidations,
//!   presence changes) published while NATS is away wait in a bounded
//!   outbox and go out on reconnect;
//! - a device whose subscribe failed stays followed and is subscribed again
//!   by a repair task every second.
//!
//! No lock is held across a call into the NATS client.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use missive_core::{AccountId, DeviceId};
use tokio::task::JoinHandle;

mod codec;

use self::codec::{
    decode_event, decode_invalidation, decode_presence, decode_spent, encode_event,
    encode_invalidation, encode_spent,
};
use crate::{Bus, BusSink, DeviceEvent, Invalidation, Spent};

#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222`, or several servers of one NATS
    /// cluster separated by commas: the node connects to the first it
    /// reaches, in the order given, and moves down the list (then to the
    /// servers the cluster announces) when it loses one.
    pub url: String,
    /// How this node shows in the NATS server's monitoring (`/connz`).
    pub client_name: String,
    /// Subjects start with this, so clusters can share a NATS server.
    pub subject_prefix: String,
    /// How often the node re-checks its live devices regardless of events.
    pub recheck: Duration,
}

type SinkSlot = Arc<RwLock<Option<Arc<dyn BusSink>>>>;

/// Longest wait for any one call into the NATS client; beyond it the call
/// is abandoned (sessions re-check their queues anyway).
const BUS_CALL_MAX: Duration = Duration::from_secs(1);
/// Events that must not be lost (revocations, takeovers, invalidations,
/// presence) wait here while NATS is away; beyond this many the oldest go.
const OUTBOX_MAX: usize = 65_536;
/// What becomes of an event that could not be published.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unsent {
    /// Must not be lost (a revocation, a takeover, an invalidation, a
    /// presence change): kept in the outbox for the reconnect.
    Keep,
    /// A delivery may wait on it: every node re-reads its live queues once
    /// this one can tell them.
    Resync,
    /// Harmless to lose (typing).
    Drop,
}

/// How often the repair task retries failed subscribes, flushes the outbox
/// and owns up to lost publishes.
const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

pub struct NatsBus {
    shared: Arc<Shared>,
    config: NatsConfig,
    background: Vec<JoinHandle<()>>,
}

/// What the event callback and the repair task share with the bus.
struct Shared {
    client: OnceLock<Client>,
    sink: SinkSlot,
    /// Followed devices: how many local connections, and the task that
    /// forwards the device's subscription to the sink (`None` until a
    /// subscribe succeeds; the repair task retries).
    follows: Mutex<HashMap<DeviceId, Follow>>,
    outbox: Mutex<VecDeque<(String, Bytes)>>,
    /// A device event this node published may have been lost: tell every
    /// node once connected.
    lost: AtomicBool,
    /// Connected once already: the next `Connected` is a reconnect.
    connected_before: AtomicBool,
    prefix: String,
}

struct Follow {
    count: usize,
    forwarder: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {detail}")]
pub struct NatsError {
    url: String,
    detail: String,
}

/// The servers a `url` names: one, or several separated by commas.
fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

impl NatsBus {
    /// Connects (failing if NATS is unreachable now) and subscribes to the
    /// cluster-wide subjects. Reconnects on its own afterwards.
    pub async fn connect(config: NatsConfig) -> Result<Self, NatsError> {
        let shared = Arc::new(Shared {
            client: OnceLock::new(),
            sink: SinkSlot::default(),
            follows: Mutex::default(),
            outbox: Mutex::default(),
            lost: AtomicBool::new(false),
            connected_before: AtomicBool::new(false),
            prefix: config.subject_prefix.clone(),
        });
        let servers = servers(&config.url);
        if servers.is_empty() {
            return Err(NatsError {
                url: config.url.clone(),
                detail: "no server named (bus.url lists servers separated by commas)".into(),
            });
        }
        let on_event = Arc::clone(&shared);
        let client = ConnectOptions::new()
            .no_echo()
            .name(&config.client_name)
            .retain_servers_order()
            .connection_timeout(Duration::from_secs(3))
            .event_callback(move |event| on_client_event(Arc::clone(&on_event), event))
            .connect(servers.as_slice())
            .await
            .map_err(|err| NatsError {
                url: config.url.clone(),
                detail: err.to_string(),
            })?;
        let _ = shared.client.set(client.clone());
        let background = listen(&client, &shared, &config).await?;
        Ok(Self {
            shared,
            config,
            background,
        })
    }
}

/// What the NATS client reports about its connection.
async fn on_client_event(shared: Arc<Shared>, event: Event) {
    match event {
        // On a task: async-nats drops events that arrive
        // while this callback is busy.
        Event::Connected => {
            tracing::info!("bus connected");
            tokio::spawn(async move {
                // Publishes still in the client's buffer
                // when the connection died are lost.
                if shared.connected_before.swap(true, Ordering::SeqCst) {
                    shared.lost.store(true, Ordering::SeqCst);
                }
                shared.flush_outbox().await;
                shared.own_up().await;
                if let Some(sink) = current(&shared.sink) {
                    sink.resync();
                }
            });
        }
        // The client dropped messages for us: some wake-up
        // or revocation may be among them.
        Event::SlowConsumer(_) => {
            tracing::warn!("bus messages dropped (slow consumer); resyncing");
            if let Some(sink) = current(&shared.sink) {
                sink.resync();
            }
        }
        Event::Disconnected => tracing::warn!("bus disconnected; reconnecting"),
        other => tracing::debug!(event = %other, "bus event"),
    }
}

/// Subscribes to the cluster-wide subjects and starts the tasks that hand
/// what arrives to the sink, and the repair task.
async fn listen(
    client: &Client,
    shared: &Arc<Shared>,
    config: &NatsConfig,
) -> Result<Vec<JoinHandle<()>>, NatsError> {
    let subscribe = async |topic: &'static str| {
        let subscriber = client
            .subscribe(format!("{}.{topic}", config.subject_prefix))
            .await
            .map_err(|err| NatsError {
                url: config.url.clone(),
                detail: err.to_string(),
            })?;
        Ok::<_, NatsError>((subscriber, topic))
    };
    let presence = subscribe("presence").await?;
    let invalidations = subscribe("invalidate").await?;
    let (resyncs, _) = subscribe("resync").await?;
    let spent = subscribe("spent").await?;
    let sink = || Arc::clone(&shared.sink);
    Ok(vec![
        tokio::spawn(forward(
            presence,
            sink(),
            decode_presence,
            <dyn BusSink>::presence_changed,
        )),
        tokio::spawn(forward(
            invalidations,
            sink(),
            decode_invalidation,
            <dyn BusSink>::invalidate,
        )),
        tokio::spawn(forward_resyncs(resyncs, sink())),
        tokio::spawn(forward(
            spent,
            sink(),
            decode_spent,
            <dyn BusSink>::spent_elsewhere,
        )),
        tokio::spawn(repair(Arc::clone(shared))),
    ])
}

impl Shared {
    fn client(&self) -> Option<&Client> {
        self.client.get()
    }

    fn is_connected(&self) -> bool {
        self.client().is_some_and(|client| {
            client.connection_state() == async_nats::connection::State::Connected
        })
    }

    fn device_subject(&self, device: DeviceId) -> String {
        format!("{}.d.{}", self.prefix, device.0)
    }

    /// Best effort by contract (the Store holds the truth), and never
    /// allowed to stall the caller: while NATS is away the client's
    /// outgoing buffer fills, so publish only when connected, bound each
    /// call; what becomes of an event that could not go out is `unsent`'s.
    async fn send(&self, subject: String, payload: impl Into<Bytes>, unsent: Unsent) {
        // Shared, not copied, between the publish and the outbox.
        let payload: Bytes = payload.into();
        let sent = match self.client() {
            Some(client) if self.is_connected() => matches!(
                tokio::time::timeout(
                    BUS_CALL_MAX,
                    client.publish(subject.clone(), payload.clone()),
                )
                .await,
                Ok(Ok(()))
            ),
            _ => false,
        };
        if !sent && unsent == Unsent::Resync {
            self.lost.store(true, Ordering::SeqCst);
        }
        if !sent && unsent == Unsent::Keep {
            let mut outbox = lock(&self.outbox);
            if outbox.len() >= OUTBOX_MAX {
                outbox.pop_front();
                tracing::warn!("bus outbox full; dropped its oldest event");
            }
            outbox.push_back((subject, payload));
        }
    }

    /// Returns once the server has processed everything this connection
    /// sent before. `flush` only writes the socket, and core NATS offers
    /// no awaitable ping; a request to a subject nobody serves comes back
    /// as the server's "no responders" answer, which it sends only after
    /// handling every earlier command of ours, such as a `SUB`.
    async fn round_trip(&self) {
        let Some(client) = self.client().filter(|_| self.is_connected()) else {
            return;
        };
        let subject = format!("{}.sync.{}", self.prefix, client.new_inbox());
        match tokio::time::timeout(BUS_CALL_MAX, client.request(subject, Bytes::new())).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(err)) => tracing::debug!(%err, "bus round trip failed"),
            Err(_) => tracing::debug!("bus round trip timed out"),
        }
    }

    /// Tells every node to re-read its live queues if an event this node
    /// published may have been lost (kept for the reconnect if it cannot).
    async fn own_up(&self) {
        if self.lost.swap(false, Ordering::SeqCst) {
            tracing::info!(
                "bus events may have been lost; asking every node to re-read its queues"
            );
            self.send(
                format!("{}.resync", self.prefix),
                Bytes::new(),
                Unsent::Keep,
            )
            .await;
        }
    }

    /// Publishes what waited for a connection, in order.
    async fn flush_outbox(&self) {
        let waiting: Vec<_> = lock(&self.outbox).drain(..).collect();
        if !waiting.is_empty() {
            tracing::info!(events = waiting.len(), "bus outbox flushed");
        }
        for (subject, payload) in waiting {
            self.send(subject, payload, Unsent::Keep).await;
        }
    }

    /// Subscribes to a followed device's subject, unless it was unfollowed
    /// meanwhile or already has a forwarder; `true` if this call started its
    /// forwarder.
    async fn subscribe_device(&self, device: DeviceId) -> bool {
        let Some(client) = self.client() else {
            return false;
        };
        let subscribed =
            tokio::time::timeout(BUS_CALL_MAX, client.subscribe(self.device_subject(device))).await;
        let subscriber = match subscribed {
            Ok(Ok(subscriber)) => subscriber,
            // Retried by the repair task, which then wakes the device.
            Ok(Err(err)) => {
                tracing::warn!(%err, %device, "bus subscribe failed");
                return false;
            }
            Err(_) => {
                tracing::warn!(%device, "bus subscribe timed out");
                return false;
            }
        };
        let mut follows = lock(&self.follows);
        if let Some(follow) = follows.get_mut(&device) {
            if follow.forwarder.is_none() {
                follow.forwarder = Some(tokio::spawn(forward_device(
                    device,
                    subscriber,
                    Arc::clone(&self.sink),
                )));
                return true;
            }
        }
        // Otherwise the subscriber drops here, which unsubscribes.
        false
    }
}

/// Every [`REPAIR_INTERVAL`]: publish what waits in the outbox, tell every
/// node if a device event may have been lost, and subscribe followed
/// devices whose subscribe failed (each then re-reads its queue: its events
/// went nowhere meanwhile).
async fn repair(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(REPAIR_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !shared.is_connected() {
            continue;
        }
        shared.flush_outbox().await;
        shared.own_up().await;
        let missing: Vec<DeviceId> = lock(&shared.follows)
            .iter()
            .filter(|(_, follow)| follow.forwarder.is_none())
            .map(|(device, _)| *device)
            .collect();
        for device in missing {
            if shared.subscribe_device(device).await {
                if let Some(sink) = current(&shared.sink) {
                    sink.deliver(device, DeviceEvent::QueueChanged);
                }
            }
        }
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the value consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn current(sink: &SinkSlot) -> Option<Arc<dyn BusSink>> {
    sink.read().ok().and_then(|slot| slot.clone())
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, device: DeviceId, event: DeviceEvent) {
        // No echo, so this node hears its own events only from here; the
        // sink ignores devices it does not hold. A takeover is news only
        // for the other nodes.
        if !matches!(event, DeviceEvent::TakenOver { .. }) {
            if let Some(sink) = current(&self.shared.sink) {
                sink.deliver(device, event.clone());
            }
        }
        // A lost wake-up or event is covered (a resync), a lost typing
        // indication harmless; a lost revocation or takeover is neither.
        let unsent = match event {
            DeviceEvent::Revoked | DeviceEvent::TakenOver { .. } => Unsent::Keep,
            DeviceEvent::QueueChanged | DeviceEvent::Committed { .. } => Unsent::Resync,
            DeviceEvent::Ephemeral(_) => Unsent::Drop,
        };
        self.shared
            .send(
                self.shared.device_subject(device),
                encode_event(&event),
                unsent,
            )
            .await;
    }

    async fn publish_presence(&self, account: AccountId) {
        let subject = format!("{}.presence", self.config.subject_prefix);
        self.shared
            .send(subject, account.0.to_string().into_bytes(), Unsent::Keep)
            .await;
    }

    async fn publish_invalidation(&self, what: Invalidation) {
        let subject = format!("{}.invalidate", self.config.subject_prefix);
        self.shared
            .send(
                subject,
                encode_invalidation(what).into_bytes(),
                Unsent::Keep,
            )
            .await;
    }

    async fn publish_spent(&self, spent: Vec<Spent>) {
        let subject = format!("{}.spent", self.config.subject_prefix);
        self.shared
            .send(subject, encode_spent(&spent).into_bytes(), Unsent::Drop)
            .await;
    }

    fn has_peers(&self) -> bool {
        true
    }

    async fn follow(&self, device: DeviceId) {
        let first = {
            let mut follows = lock(&self.shared.follows);
            let follow = follows.entry(device).or_insert(Follow {
                count: 0,
                forwarder: None,
            });
            follow.count += 1;
            follow.count == 1
        };
        if first {
            self.shared.subscribe_device(device).await;
            // The subscription is in effect once the server has answered
            // something sent after it on this connection (not while NATS
            // is away: then the session's re-checks cover the gap).
            self.shared.round_trip().await;
        }
    }

    fn unfollow(&self, device: DeviceId) {
        let mut follows = lock(&self.shared.follows);
        if let Some(follow) = follows.get_mut(&device) {
            follow.count = follow.count.saturating_sub(1);
            if follow.count == 0 {
                if let Some(forwarder) = follows.remove(&device).and_then(|f| f.forwarder) {
                    // Dropping the subscriber unsubscribes.
                    forwarder.abort();
                }
            }
        }
    }

    fn attach(&self, sink: Arc<dyn BusSink>) {
        if let Ok(mut slot) = self.shared.sink.write() {
            *slot = Some(sink);
        }
    }

    fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    fn recheck_interval(&self) -> Option<Duration> {
        Some(self.config.recheck)
    }

    fn describe(&self) -> String {
        format!(
            "nats {} (subjects {}.*)",
            self.config.url, self.config.subject_prefix
        )
    }
}

async fn forward_device(device: DeviceId, mut subscriber: Subscriber, sink: SinkSlot) {
    while let Some(message) = subscriber.next().await {
        match decode_event(&message.payload) {
            Some(event) => {
                if let Some(sink) = current(&sink) {
                    sink.deliver(device, event);
                }
            }
            None => tracing::debug!(%device, "undecodable device event"),
        }
    }
}

/// Another node may have lost events it published: re-read every live
/// queue here.
async fn forward_resyncs(mut subscriber: Subscriber, sink: SinkSlot) {
    while subscriber.next().await.is_some() {
        if let Some(sink) = current(&sink) {
            sink.resync();
        }
    }
}

/// Hands each decodable payload of a broadcast subject to the sink; the
/// subscription comes with the subject's name (`what`), for the log line
/// of a payload that does not decode.
async fn forward<T>(
    (mut subscriber, what): (Subscriber, &'static str),
    sink: SinkSlot,
    decode: fn(&[u8]) -> Option<T>,
    apply: fn(&dyn BusSink, T),
) {
    while let Some(message) = subscriber.next().await {
        match (decode(&message.payload), current(&sink)) {
            (Some(news), Some(sink)) => apply(sink.as_ref(), news),
            (None, _) => tracing::debug!(what, "undecodable bus payload"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_one_server_or_several() {
        // Goal: `bus.url` lists a NATS cluster's servers in the order given.
        assert_eq!(servers("nats://a:4222"), ["nats://a:4222"]);
        assert_eq!(
            servers("nats://a:4222, nats://b:4222,,nats://c:4222 "),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert!(servers(" , ").is_empty());
    }
}
