//! The cluster bus over core NATS (no JetStream, so any nats-server works).
//!
//! Subjects, under a configurable prefix:
//! - `<prefix>.d.<device>`: that device's events. A node subscribes while it
//!   holds a live connection of the device, so a publish reaches exactly the
//!   node(s) holding it, with no directory lookup.
//! - `<prefix>.presence`: "this account's presence may have changed"; every
//!   node listens and tells its own watchers.
//! - `<prefix>.invalidate`: cache invalidations; every node listens.
//!
//! The connection uses `no_echo`, so a node never hears its own publishes:
//! device events are also handed to this node's sink directly (it ignores
//! devices it does not hold), and presence/invalidations were already
//! applied locally by the caller. Core NATS is at-most-once; after a reconnect the sink is told to
//! resync (re-read every live queue, drop caches), and live sessions re-read
//! their queues every `recheck` anyway.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use missive_core::{AccountId, ConversationId, DeviceId};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::{Bus, BusSink, DeviceEvent, Invalidation};

#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subjects start with this, so clusters can share a NATS server.
    pub subject_prefix: String,
    /// How often live sessions re-read their queues regardless of events.
    pub recheck: Duration,
}

type SinkSlot = Arc<RwLock<Option<Arc<dyn BusSink>>>>;

/// Longest wait for any one call into the NATS client; beyond it the call
/// is abandoned (sessions re-check their queues anyway).
const BUS_CALL_MAX: Duration = Duration::from_secs(1);

pub struct NatsBus {
    client: Client,
    config: NatsConfig,
    sink: SinkSlot,
    /// Followed devices: how many local connections, and the task that
    /// forwards the device's subscription to the sink.
    follows: Arc<Mutex<HashMap<DeviceId, Follow>>>,
    broadcasts: Vec<JoinHandle<()>>,
}

struct Follow {
    count: usize,
    forwarder: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {detail}")]
pub struct NatsError {
    url: String,
    detail: String,
}

impl NatsBus {
    /// Connects (failing if NATS is unreachable now) and subscribes to the
    /// cluster-wide subjects. Reconnects on its own afterwards.
    pub async fn connect(config: NatsConfig) -> Result<Self, NatsError> {
        let sink: SinkSlot = Arc::default();
        let on_event = Arc::clone(&sink);
        let client = ConnectOptions::new()
            .no_echo()
            .name("missive")
            .connection_timeout(Duration::from_secs(3))
            .event_callback(move |event| {
                let sink = Arc::clone(&on_event);
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!("bus connected");
                            if let Some(sink) = current(&sink) {
                                sink.resync();
                            }
                        }
                        Event::Disconnected => tracing::warn!("bus disconnected; reconnecting"),
                        other => tracing::debug!(event = %other, "bus event"),
                    }
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|err| NatsError {
                url: config.url.clone(),
                detail: err.to_string(),
            })?;
        let subscribe = |subject: String| {
            let client = client.clone();
            async move { client.subscribe(subject).await }
        };
        let error = |err: async_nats::SubscribeError| NatsError {
            url: config.url.clone(),
            detail: err.to_string(),
        };
        let presence = subscribe(format!("{}.presence", config.subject_prefix))
            .await
            .map_err(error)?;
        let invalidations = subscribe(format!("{}.invalidate", config.subject_prefix))
            .await
            .map_err(error)?;
        let broadcasts = vec![
            tokio::spawn(forward_presence(presence, Arc::clone(&sink))),
            tokio::spawn(forward_invalidations(invalidations, Arc::clone(&sink))),
        ];
        Ok(Self {
            client,
            config,
            sink,
            follows: Arc::default(),
            broadcasts,
        })
    }

    fn device_subject(&self, device: DeviceId) -> String {
        format!("{}.d.{}", self.config.subject_prefix, device.0)
    }

    /// Best effort by contract (the Store holds the truth), and never
    /// allowed to stall the caller: while NATS is away the client's
    /// outgoing buffer fills, so skip publishing then and bound each call.
    async fn send(&self, subject: String, payload: Vec<u8>) {
        if !self.is_connected() {
            return;
        }
        match tokio::time::timeout(
            BUS_CALL_MAX,
            self.client.publish(subject, Bytes::from(payload)),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(%err, "bus publish failed"),
            Err(_) => tracing::debug!("bus publish timed out"),
        }
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        for task in &self.broadcasts {
            task.abort();
        }
    }
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
            if let Some(sink) = current(&self.sink) {
                sink.deliver(device, event.clone());
            }
        }
        self.send(self.device_subject(device), encode_event(&event))
            .await;
    }

    async fn publish_presence(&self, account: AccountId) {
        let subject = format!("{}.presence", self.config.subject_prefix);
        self.send(subject, account.0.to_string().into_bytes()).await;
    }

    async fn publish_invalidation(&self, what: Invalidation) {
        let subject = format!("{}.invalidate", self.config.subject_prefix);
        self.send(subject, encode_invalidation(what).into_bytes())
            .await;
    }

    async fn follow(&self, device: DeviceId) {
        let mut follows = self.follows.lock().await;
        if let Some(follow) = follows.get_mut(&device) {
            follow.count += 1;
            return;
        }
        let subscribed = tokio::time::timeout(
            BUS_CALL_MAX,
            self.client.subscribe(self.device_subject(device)),
        )
        .await;
        match subscribed {
            Ok(Ok(subscriber)) => {
                let forwarder =
                    tokio::spawn(forward_device(device, subscriber, Arc::clone(&self.sink)));
                follows.insert(
                    device,
                    Follow {
                        count: 1,
                        forwarder,
                    },
                );
            }
            // The session still re-reads its queue every `recheck`.
            Ok(Err(err)) => tracing::warn!(%err, %device, "bus subscribe failed"),
            Err(_) => tracing::warn!(%device, "bus subscribe timed out"),
        }
        drop(follows);
        // The subscription is in effect once the server has answered a
        // ping sent after it (not while NATS is away: then the session's
        // re-checks cover the gap).
        if self.is_connected() {
            match tokio::time::timeout(BUS_CALL_MAX, self.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::debug!(%err, "bus flush failed"),
                Err(_) => tracing::debug!("bus flush timed out"),
            }
        }
    }

    fn unfollow(&self, device: DeviceId) {
        let follows = Arc::clone(&self.follows);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut follows = follows.lock().await;
            if let Some(follow) = follows.get_mut(&device) {
                follow.count -= 1;
                if follow.count == 0 {
                    // Dropping the subscriber unsubscribes.
                    if let Some(follow) = follows.remove(&device) {
                        follow.forwarder.abort();
                    }
                }
            }
        });
    }

    fn attach(&self, sink: Arc<dyn BusSink>) {
        if let Ok(mut slot) = self.sink.write() {
            *slot = Some(sink);
        }
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
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

async fn forward_presence(mut subscriber: Subscriber, sink: SinkSlot) {
    while let Some(message) = subscriber.next().await {
        let account = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|text| text.parse().ok());
        match (account, current(&sink)) {
            (Some(account), Some(sink)) => sink.presence_changed(AccountId(account)),
            (None, _) => tracing::debug!("undecodable presence event"),
            _ => {}
        }
    }
}

async fn forward_invalidations(mut subscriber: Subscriber, sink: SinkSlot) {
    while let Some(message) = subscriber.next().await {
        match (decode_invalidation(&message.payload), current(&sink)) {
            (Some(what), Some(sink)) => sink.invalidate(what),
            (None, _) => tracing::debug!("undecodable invalidation"),
            _ => {}
        }
    }
}

// Wire format of bus payloads: one tag byte, then the tag's data. Only
// missive nodes of the same build read them.

fn encode_event(event: &DeviceEvent) -> Vec<u8> {
    let (tag, data): (u8, &str) = match event {
        DeviceEvent::QueueChanged => (b'q', ""),
        DeviceEvent::Revoked => (b'r', ""),
        DeviceEvent::Ephemeral(frame) => (b'e', frame),
        DeviceEvent::TakenOver { node } => (b't', node),
    };
    let mut payload = Vec::with_capacity(1 + data.len());
    payload.push(tag);
    payload.extend_from_slice(data.as_bytes());
    payload
}

fn decode_event(payload: &[u8]) -> Option<DeviceEvent> {
    let (&tag, data) = payload.split_first()?;
    let text = || std::str::from_utf8(data).ok().map(Arc::<str>::from);
    Some(match tag {
        b'q' => DeviceEvent::QueueChanged,
        b'r' => DeviceEvent::Revoked,
        b'e' => DeviceEvent::Ephemeral(text()?),
        b't' => DeviceEvent::TakenOver { node: text()? },
        _ => return None,
    })
}

fn encode_invalidation(what: Invalidation) -> String {
    match what {
        Invalidation::Device(device) => format!("d{}", device.0),
        Invalidation::Conversation(conversation) => format!("c{}", conversation.0),
        Invalidation::Everything => "*".to_owned(),
    }
}

fn decode_invalidation(payload: &[u8]) -> Option<Invalidation> {
    let text = std::str::from_utf8(payload).ok()?;
    if text == "*" {
        return Some(Invalidation::Everything);
    }
    let (tag, id) = text.split_at_checked(1)?;
    let id: i64 = id.parse().ok()?;
    match tag {
        "d" => Some(Invalidation::Device(DeviceId(id))),
        "c" => Some(Invalidation::Conversation(ConversationId(id))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_invalidations_round_trip() {
        // Goal: every variant decodes to itself; garbage decodes to nothing.
        for event in [
            DeviceEvent::QueueChanged,
            DeviceEvent::Revoked,
            DeviceEvent::Ephemeral(Arc::from("{\"type\":\"typing\"}")),
            DeviceEvent::TakenOver {
                node: Arc::from("node-b"),
            },
        ] {
            assert_eq!(decode_event(&encode_event(&event)), Some(event));
        }
        for what in [
            Invalidation::Device(DeviceId(42)),
            Invalidation::Conversation(ConversationId(7)),
            Invalidation::Everything,
        ] {
            assert_eq!(
                decode_invalidation(encode_invalidation(what).as_bytes()),
                Some(what)
            );
        }
        assert_eq!(decode_event(b""), None);
        assert_eq!(decode_event(b"x"), None);
        assert_eq!(decode_event(b"e\xff"), None);
        assert_eq!(decode_invalidation(b"d"), None);
        assert_eq!(decode_invalidation(b"dx1"), None);
        assert_eq!(decode_invalidation(b"q1"), None);
    }
}
