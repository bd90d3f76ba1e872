//! End-to-end encryption keys (identity and one-time keys) and to-device messages.

use std::sync::Arc;

use missive_core::{AccountId, DeviceId};
use missive_store::{
    ClaimedKey, DeviceKeys, IdentityKeys, KeyUpload, KeysStored, NewToDevice, OneTimeKey,
    RevokedDevice, Store, StoreError, ToDeviceBatch, ToDeviceMessage,
};

use crate::support::*;

/// End-to-end encryption keys: identity keys set once, one-time keys
/// claimed once each (concurrent claims included), gone with a revoked
/// device.
pub(crate) async fn device_keys_are_claimed_once_and_go_with_their_device(store: Arc<dyn Store>) {
    // Goal: an upload needs identity keys the first time and refuses
    // other ones later (changing nothing); retried key ids are kept as
    // they were; the held count is capped; a claim hands out one key
    // per device, each key once even when claims race; a revoked
    // device's keys are neither listed nor claimed. Only the upload
    // that stores a device's identity keys says so, and a revocation
    // says whether the device had any (what `devices_changed` needs).
    // Method: bob's two devices upload; 12 claims run at once against
    // 10 keys of b1 and 2 of b2; then b2 is revoked, and b3, which
    // never uploaded.
    let (alice, bob) = alice_and_bob(&*store).await;
    let b1 = new_device(&*store, bob, "b1").await;
    let b2 = new_device(&*store, bob, "b2").await;
    let upload = uploads_of(bob);
    b1_uploads(&*store, bob, b1).await;
    assert_eq!(
        store
            .put_device_keys(upload(
                b2,
                Some(identity("b2")),
                (20..=21).map(key).collect(),
                50
            ))
            .await,
        Ok(stored(2, true))
    );
    assert_eq!(
        store.device_keys(bob).await.expect("device_keys"),
        vec![
            DeviceKeys {
                device: b1,
                identity: identity("b1")
            },
            DeviceKeys {
                device: b2,
                identity: identity("b2")
            },
        ]
    );
    assert_eq!(store.device_keys(alice).await, Ok(Vec::new()));

    claims_race(&store, bob, b1).await;
    gone_with_their_device(&*store, bob, [b1, b2]).await;
}

/// The identity keys of the device `name`.
fn identity(name: &str) -> IdentityKeys {
    IdentityKeys {
        curve25519: format!("curve-{name}"),
        ed25519: format!("ed-{name}"),
    }
}

/// One-time key number `n`.
fn key(n: u32) -> OneTimeKey {
    OneTimeKey {
        key_id: format!("k{n:03}"),
        key: format!("key-{n}"),
        signature: format!("sig-{n}"),
    }
}

/// Uploads by devices of `account`: (device, identity keys, one-time keys,
/// how many one-time keys the device may hold).
fn uploads_of(
    account: AccountId,
) -> impl Fn(DeviceId, Option<IdentityKeys>, Vec<OneTimeKey>, u64) -> KeyUpload {
    move |device, identity, keys, max| KeyUpload {
        device,
        account,
        identity,
        one_time_keys: keys,
        one_time_keys_max: max,
        now_ms: NOW,
    }
}

/// What an upload answers.
fn stored(one_time_keys: u64, identity_added: bool) -> KeysStored {
    KeysStored {
        one_time_keys,
        identity_added,
    }
}

/// [`device_keys_are_claimed_once_and_go_with_their_device`]: b1's first
/// upload refused without identity keys, then ten keys stored; retries and
/// refusals after that change nothing.
async fn b1_uploads(store: &dyn Store, bob: AccountId, b1: DeviceId) {
    let upload = uploads_of(bob);
    assert_eq!(
        store
            .put_device_keys(upload(b1, None, vec![key(1)], 50))
            .await,
        Err(StoreError::IdentityKeyMissing)
    );
    let keys: Vec<OneTimeKey> = (1..=10).map(key).collect();
    assert_eq!(
        store
            .put_device_keys(upload(b1, Some(identity("b1")), keys.clone(), 50))
            .await,
        Ok(stored(10, true))
    );
    // A retry (same ids, whatever they carry) adds nothing, identity
    // keys included.
    let mut retried = keys[..3].to_vec();
    retried[0].key = "changed".into();
    assert_eq!(
        store.put_device_keys(upload(b1, None, retried, 50)).await,
        Ok(stored(10, false))
    );
    assert_eq!(
        store
            .put_device_keys(upload(b1, Some(identity("b1")), keys[..1].to_vec(), 50))
            .await,
        Ok(stored(10, false))
    );
    assert_eq!(
        store
            .put_device_keys(upload(b1, Some(identity("other")), vec![key(11)], 50))
            .await,
        Err(StoreError::IdentityKeyMismatch)
    );
    assert_eq!(
        store
            .put_device_keys(upload(b1, None, (11..=12).map(key).collect(), 11))
            .await,
        Err(StoreError::TooManyKeys)
    );
    assert_eq!(
        store.one_time_key_count(b1).await,
        Ok(10),
        "refusals changed nothing"
    );
}

/// [`device_keys_are_claimed_once_and_go_with_their_device`]: 12 claims at
/// once for bob's keys (ten of b1, two of another device).
async fn claims_race(store: &Arc<dyn Store>, bob: AccountId, b1: DeviceId) {
    let claims = (0..12).map(|_| {
        let store = Arc::clone(store);
        tokio::spawn(async move { store.claim_one_time_keys(bob).await })
    });
    let mut handed_out = Vec::new();
    let mut remaining_b1 = Vec::new();
    for claim in claims {
        let claimed = claim.await.expect("claim task").expect("claim");
        assert_eq!(claimed.len(), 2, "one entry per device with keys");
        for entry in claimed {
            if entry.device == b1 {
                remaining_b1.push(entry.remaining);
            }
            assert_eq!(
                entry.identity,
                identity(if entry.device == b1 { "b1" } else { "b2" })
            );
            if let Some(one) = entry.one_time_key {
                handed_out.push((entry.device, one.key_id));
            }
        }
    }
    handed_out.sort();
    let unique = handed_out.len();
    handed_out.dedup();
    assert_eq!(handed_out.len(), unique, "a key was handed out twice");
    assert_eq!(unique, 12, "every key handed out, once");
    // Each claim saw what it left: b1's ten keys counted down, and the
    // two claims that found none left saw zero.
    remaining_b1.sort_unstable();
    assert_eq!(remaining_b1, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(store.one_time_key_count(b1).await, Ok(0));
}

/// [`device_keys_are_claimed_once_and_go_with_their_device`]: b2 (which
/// uploaded) and b3 (which did not) are revoked; only b1 is left.
async fn gone_with_their_device(store: &dyn Store, bob: AccountId, [b1, b2]: [DeviceId; 2]) {
    assert_eq!(
        store.revoke_device(bob, b2).await,
        Ok(Some(RevokedDevice {
            device: b2,
            account: bob,
            had_keys: true
        }))
    );
    let b3 = new_device(store, bob, "b3").await;
    assert_eq!(
        store
            .revoke_device(bob, b3)
            .await
            .map(|r| r.map(|r| r.had_keys)),
        Ok(Some(false)),
        "b3 never uploaded"
    );
    assert_eq!(
        store.device_keys(bob).await.expect("device_keys"),
        vec![DeviceKeys {
            device: b1,
            identity: identity("b1")
        }]
    );
    let claimed = store.claim_one_time_keys(bob).await.expect("claim");
    assert_eq!(
        claimed,
        vec![ClaimedKey {
            device: b1,
            identity: identity("b1"),
            one_time_key: None,
            remaining: 0
        }]
    );
}

/// To-device messages: stored per device all or none, read in seq
/// order above a cursor, acked cumulatively, gone with their device.
pub(crate) async fn to_device_messages_wait_for_their_device_until_acked(store: Arc<dyn Store>) {
    // Goal: a batch stores every message or none (an unknown device,
    // a device of another account, a full inbox refuse it whole);
    // each device reads its own messages in the order sent, above any
    // cursor, with the sender's name; an ack removes up to its seq and
    // is idempotent; seqs keep rising after acks; concurrent batches
    // leave each device's seqs in one order; one sender account cannot
    // fill a device's inbox; revoking a device drops its messages.
    // Method: alice's a1 sends to bob's b1 and b2 and to her own a2.
    let (alice, bob) = alice_and_bob(&*store).await;
    let a1 = new_device(&*store, alice, "a1").await;
    let a2 = new_device(&*store, alice, "a2").await;
    let b1 = new_device(&*store, bob, "b1").await;
    let b2 = new_device(&*store, bob, "b2").await;
    let batch = batches_from(alice, a1);
    store
        .send_to_devices(batch(
            vec![
                to(bob, b1, "k1"),
                to(bob, b2, "k2"),
                to(alice, a2, "k3"),
                to(bob, b1, "k4"),
            ],
            10,
        ))
        .await
        .expect("send");
    let waiting = store.to_device_waiting(b1, 0, 10).await.expect("waiting");
    assert_eq!(waiting.len(), 2);
    assert!(waiting[0].seq < waiting[1].seq);
    assert_eq!(
        (
            waiting[0].from.as_str(),
            waiting[0].from_device,
            waiting[0].created_ms
        ),
        ("alice", a1, NOW)
    );
    assert_eq!(bodies(waiting.clone()), ["k1", "k4"]);
    assert_eq!(
        bodies(
            store
                .to_device_waiting(b1, waiting[0].seq, 10)
                .await
                .expect("above")
        ),
        ["k4"]
    );
    assert_eq!(
        bodies(store.to_device_waiting(a2, 0, 10).await.expect("a2")),
        ["k3"]
    );

    let senders = [(alice, a1), (bob, b1)];
    refused_batches_store_nothing(&*store, senders, b2).await;
    acked_then_more(&*store, senders, &waiting).await;
    racing_batches(&store, senders).await;
    one_sender_cannot_fill_an_inbox(&*store, senders, b2).await;

    assert!(
        store
            .revoke_device(bob, b2)
            .await
            .expect("revoke")
            .is_some()
    );
    assert!(
        store
            .to_device_waiting(b2, 0, 10)
            .await
            .expect("revoked")
            .is_empty()
    );
}

/// A to-device message for `device` of `account`.
fn to(account: AccountId, device: DeviceId, body: &str) -> NewToDevice {
    NewToDevice {
        recipient_account: account,
        recipient: device,
        body: body.to_owned(),
    }
}

/// Batches sent by `device` of `account`: (messages, the inbox limit, in
/// all and per sender).
fn batches_from(
    account: AccountId,
    device: DeviceId,
) -> impl Fn(Vec<NewToDevice>, u64) -> ToDeviceBatch {
    move |messages, max| ToDeviceBatch {
        sender_account: account,
        sender_device: device,
        messages,
        waiting_max: max,
        waiting_per_sender_max: max,
        now_ms: NOW,
    }
}

/// The bodies of to-device messages, in order.
fn bodies(messages: Vec<ToDeviceMessage>) -> Vec<String> {
    messages.into_iter().map(|m| m.body).collect()
}

/// [`to_device_messages_wait_for_their_device_until_acked`]: batches from
/// alice (a1) with an unknown device, a device of another account, or one
/// too many for bob's (b1's) inbox, are refused whole.
async fn refused_batches_store_nothing(
    store: &dyn Store,
    [(alice, a1), (bob, b1)]: [(AccountId, DeviceId); 2],
    b2: DeviceId,
) {
    let batch = batches_from(alice, a1);
    // Refused batches store nothing, even their valid messages.
    for (refused, error) in [
        (
            vec![to(bob, b1, "x"), to(bob, DeviceId(987_654), "y")],
            StoreError::UnknownDevice,
        ),
        (
            vec![to(bob, b1, "x"), to(alice, b2, "y")],
            StoreError::UnknownDevice,
        ),
        (
            vec![to(bob, b2, "x"), to(bob, b1, "y"), to(bob, b1, "z")],
            StoreError::InboxFull,
        ),
    ] {
        assert_eq!(store.send_to_devices(batch(refused, 3)).await, Err(error));
    }
    assert_eq!(
        bodies(store.to_device_waiting(b1, 0, 10).await.expect("b1")),
        ["k1", "k4"]
    );
    assert_eq!(
        bodies(store.to_device_waiting(b2, 0, 10).await.expect("b2")),
        ["k2"]
    );
}

/// [`to_device_messages_wait_for_their_device_until_acked`]: b1 acks what
/// was `waiting` for it, and more comes from alice (a1).
async fn acked_then_more(
    store: &dyn Store,
    [(alice, a1), (bob, b1)]: [(AccountId, DeviceId); 2],
    waiting: &[ToDeviceMessage],
) {
    let batch = batches_from(alice, a1);
    // Acks are cumulative and idempotent; later seqs are higher still.
    assert_eq!(store.ack_to_device(b1, waiting[0].seq).await, Ok(1));
    assert_eq!(store.ack_to_device(b1, waiting[0].seq).await, Ok(0));
    store
        .send_to_devices(batch(vec![to(bob, b1, "k5")], 10))
        .await
        .expect("send again");
    let later = store.to_device_waiting(b1, 0, 10).await.expect("later");
    assert_eq!(bodies(later.clone()), ["k4", "k5"]);
    assert!(later[1].seq > waiting[1].seq);
    assert_eq!(store.ack_to_device(b1, later[1].seq).await, Ok(2));
    assert!(
        store
            .to_device_waiting(b1, 0, 10)
            .await
            .expect("empty")
            .is_empty()
    );
}

/// [`to_device_messages_wait_for_their_device_until_acked`]: eight batches
/// from alice (a1) to bob's b1 at once.
async fn racing_batches(
    store: &Arc<dyn Store>,
    [(alice, a1), (bob, b1)]: [(AccountId, DeviceId); 2],
) {
    // Racing batches to one device: one order, each message once.
    let sends = (0..8).map(|n| {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            store
                .send_to_devices(ToDeviceBatch {
                    sender_account: alice,
                    sender_device: a1,
                    messages: vec![NewToDevice {
                        recipient_account: bob,
                        recipient: b1,
                        body: format!("r{n}"),
                    }],
                    waiting_max: 100,
                    waiting_per_sender_max: 100,
                    now_ms: NOW,
                })
                .await
        })
    });
    for send in sends {
        send.await.expect("send task").expect("send");
    }
    let raced = store.to_device_waiting(b1, 0, 100).await.expect("raced");
    let mut seen = bodies(raced.clone());
    seen.sort();
    assert_eq!(seen, (0..8).map(|n| format!("r{n}")).collect::<Vec<_>>());
    assert!(raced.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(
        bodies(
            store
                .to_device_waiting(b1, raced[3].seq, 100)
                .await
                .expect("page")
        ),
        bodies(raced[4..].to_vec())
    );
}

/// [`to_device_messages_wait_for_their_device_until_acked`]: with one
/// message allowed per sender, alice's (a1's) next to b2 is refused while
/// bob's b1 still reaches b2.
async fn one_sender_cannot_fill_an_inbox(
    store: &dyn Store,
    [(alice, a1), (bob, b1)]: [(AccountId, DeviceId); 2],
    b2: DeviceId,
) {
    let batch = batches_from(alice, a1);
    // No one account fills a device's inbox: alice has one message
    // waiting for b2, so with one allowed per sender her next is
    // refused, while bob's own b1 still reaches b2.
    let capped = ToDeviceBatch {
        waiting_per_sender_max: 1,
        ..batch(vec![to(bob, b2, "one too many")], 10)
    };
    assert_eq!(
        store.send_to_devices(capped).await,
        Err(StoreError::InboxFull)
    );
    store
        .send_to_devices(ToDeviceBatch {
            sender_account: bob,
            sender_device: b1,
            messages: vec![to(bob, b2, "from b1")],
            waiting_max: 10,
            waiting_per_sender_max: 1,
            now_ms: NOW,
        })
        .await
        .expect("another sender");
    assert_eq!(
        bodies(store.to_device_waiting(b2, 0, 10).await.expect("b2")),
        ["k2", "from b1"]
    );
}
