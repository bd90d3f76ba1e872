//! The NATS bus against a real nats-server (127.0.0.1:4222, or
//! `MISSIVE_TEST_NATS_URL`). Without one: fails under CI, skips elsewhere.

use std::sync::Arc;
use std::time::Duration;

use missive_bus::{Bus, BusSink, DeviceEvent, Invalidation, NatsBus, NatsConfig};
use missive_core::{AccountId, ConversationId, DeviceId};
use tokio::sync::mpsc;
use tokio::time::timeout;

const PROMPTLY: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
enum Heard {
    Event(DeviceId, DeviceEvent),
    Presence(AccountId),
    Invalidate(Invalidation),
    Resync,
}

/// Records what a node hears: every device event when `holds` is `None`
/// (so events for other devices would show), else, like a router, only
/// those of the devices it holds.
struct Channel(mpsc::UnboundedSender<Heard>, Option<Vec<DeviceId>>);

impl BusSink for Channel {
    fn deliver(&self, device: DeviceId, event: DeviceEvent) {
        if self.1.as_ref().is_none_or(|holds| holds.contains(&device)) {
            let _ = self.0.send(Heard::Event(device, event));
        }
    }
    fn presence_changed(&self, account: AccountId) {
        let _ = self.0.send(Heard::Presence(account));
    }
    fn invalidate(&self, what: Invalidation) {
        let _ = self.0.send(Heard::Invalidate(what));
    }
    fn resync(&self) {
        let _ = self.0.send(Heard::Resync);
    }
}

fn nats_url() -> String {
    std::env::var("MISSIVE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A bus on a prefix of its own, or `None` (skip) outside CI without NATS.
async fn node(
    prefix: &str,
    holds: Option<&[DeviceId]>,
) -> Option<(NatsBus, mpsc::UnboundedReceiver<Heard>)> {
    let config = NatsConfig {
        url: nats_url(),
        client_name: format!("missive test {prefix}"),
        subject_prefix: prefix.to_owned(),
        recheck: Duration::from_secs(5),
    };
    let bus = match NatsBus::connect(config).await {
        Ok(bus) => bus,
        Err(err) if std::env::var_os("CI").is_some() => panic!("NATS is required in CI: {err}"),
        Err(err) => {
            eprintln!("skipping: {err}");
            return None;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    bus.attach(Arc::new(Channel(tx, holds.map(<[DeviceId]>::to_vec))));
    Some((bus, rx))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Heard>) -> Heard {
    loop {
        let heard = timeout(PROMPTLY, rx.recv())
            .await
            .expect("an event in time")
            .expect("sink alive");
        // The initial connect may or may not report as a resync.
        if heard != Heard::Resync {
            return heard;
        }
    }
}

fn unique_prefix() -> String {
    format!(
        "missive-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn events_reach_the_node_following_the_device() {
    // Goal: a device event published on node B reaches node A, which
    // follows the device, in order; broadcasts reach the other node but not
    // the publisher (no echo); after unfollow A stops hearing the device.
    // Method: two buses on one prefix; a marker broadcast published after
    // the unfollowed device's event shows nothing else arrived first (one
    // publisher's messages arrive in order).
    let prefix = unique_prefix();
    // A records every event it hears, so one for device 2 (which it does
    // not follow) would show up between device 1's two.
    let Some((a, mut heard_a)) = node(&prefix, None).await else {
        return;
    };
    let Some((b, mut heard_b)) = node(&prefix, Some(&[])).await else {
        return;
    };
    followed_events_and_broadcasts_arrive(&a, &b, &mut heard_a).await;
    own_events_and_broadcasts_go_where_they_should(&a, &mut heard_a, &mut heard_b).await;
    follows_are_counted_until_the_last_unfollow(&a, &b, &mut heard_a).await;
    assert!(a.is_connected() && b.is_connected());
}

type HeardRx = mpsc::UnboundedReceiver<Heard>;

/// B's events for the device A follows reach A in order, the one for a
/// device A does not follow does not; B's broadcasts reach A.
async fn followed_events_and_broadcasts_arrive(a: &NatsBus, b: &NatsBus, heard_a: &mut HeardRx) {
    a.follow(DeviceId(1)).await;
    b.publish(DeviceId(1), DeviceEvent::QueueChanged).await;
    b.publish(DeviceId(2), DeviceEvent::QueueChanged).await;
    b.publish(DeviceId(1), DeviceEvent::Ephemeral(Arc::from("{}")))
        .await;
    assert_eq!(
        next(heard_a).await,
        Heard::Event(DeviceId(1), DeviceEvent::QueueChanged)
    );
    assert_eq!(
        next(heard_a).await,
        Heard::Event(DeviceId(1), DeviceEvent::Ephemeral(Arc::from("{}")))
    );

    b.publish_presence(AccountId(9)).await;
    b.publish_invalidation(Invalidation::Conversation(ConversationId(3)))
        .await;
    assert_eq!(next(heard_a).await, Heard::Presence(AccountId(9)));
    assert_eq!(
        next(heard_a).await,
        Heard::Invalidate(Invalidation::Conversation(ConversationId(3)))
    );
}

/// A node's own device events reach its own sink; its broadcasts reach only
/// the others.
async fn own_events_and_broadcasts_go_where_they_should(
    a: &NatsBus,
    heard_a: &mut HeardRx,
    heard_b: &mut HeardRx,
) {
    // A node's own device events reach its own sink directly (except a
    // takeover, which is news for the others only); its broadcasts reach
    // only the others.
    a.publish(
        DeviceId(1),
        DeviceEvent::TakenOver {
            node: Arc::from("a"),
        },
    )
    .await;
    a.publish(DeviceId(1), DeviceEvent::Revoked).await;
    a.publish_presence(AccountId(5)).await;
    assert_eq!(
        next(heard_a).await,
        Heard::Event(DeviceId(1), DeviceEvent::Revoked)
    );
    assert_eq!(next(heard_b).await, Heard::Presence(AccountId(5)));
}

/// Counted follows: one unfollow of two keeps the subscription, the second
/// ends it.
async fn follows_are_counted_until_the_last_unfollow(
    a: &NatsBus,
    b: &NatsBus,
    heard_a: &mut HeardRx,
) {
    // Counted follows: one unfollow of two keeps the subscription.
    a.follow(DeviceId(1)).await;
    a.unfollow(DeviceId(1));
    b.publish(DeviceId(1), DeviceEvent::QueueChanged).await;
    b.publish_presence(AccountId(76)).await;
    assert_eq!(
        next(heard_a).await,
        Heard::Event(DeviceId(1), DeviceEvent::QueueChanged),
        "still followed once"
    );
    assert_eq!(next(heard_a).await, Heard::Presence(AccountId(76)));
    a.unfollow(DeviceId(1));
    // The unfollow runs on a task; wait until the subscription is gone by
    // flushing through an event B publishes and A must still hear.
    let mut dropped = false;
    for _ in 0..50 {
        b.publish(DeviceId(1), DeviceEvent::QueueChanged).await;
        b.publish_presence(AccountId(77)).await;
        match next(heard_a).await {
            Heard::Presence(AccountId(77)) => {
                dropped = true;
                break;
            }
            Heard::Event(DeviceId(1), DeviceEvent::QueueChanged) => {
                assert_eq!(next(heard_a).await, Heard::Presence(AccountId(77)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(dropped, "unfollowing twice ends the subscription");
}

#[tokio::test]
async fn a_bus_url_naming_no_server_is_refused_with_a_reason() {
    // Goal: `bus.url = " , "` (a list with nothing in it) stops the node
    // with a clear error instead of a client that never connects.
    let config = NatsConfig {
        url: " , ".into(),
        client_name: "missive test".into(),
        subject_prefix: "missive-empty".into(),
        recheck: Duration::from_secs(5),
    };
    let err = match NatsBus::connect(config).await {
        Ok(_) => panic!("a bus with no server connected"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("no server named"), "{err}");
}
