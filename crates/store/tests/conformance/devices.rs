//! Devices: the per-account limit, tokens, revocation, replacement and expiry,
//! renames, and a revoked device's identity never handed out again.

use std::sync::Arc;

use missive_core::{AccountId, DeviceId, UnixMillis};
use missive_store::{DeviceAuth, DeviceRecord, NewDevice, RevokedDevice, Store, StoreError};

use crate::support::*;

/// 2. Devices.
pub(crate) async fn devices(store: Arc<dyn Store>) {
    // Goal: the device limit, token authentication, listing order, and
    // revocation (own devices only, deleting token and positions)
    // behave as documented; a device created later starts at the
    // conversation's last seq (it gets only what is sent after it).
    // Method: fill alice's two slots, overflow, authenticate, give the
    // devices something waiting, revoke from the wrong account (no
    // effect), then from the right one, then fill the freed slot and
    // check each observable afterwards.
    let store = &*store;
    let (alice, bob) = alice_and_bob(store).await;
    let [a1, a2, b1] = fill_the_slots(store, alice, bob).await;
    let alice_a1 = DeviceAuth {
        account: alice,
        username: username("alice"),
        device: a1,
    };
    let listed = listed_and_authenticated(store, (alice, bob), [a1, a2, b1], &alice_a1).await;

    // Give alice's devices something waiting.
    let conv = direct(store, alice, bob, NOW).await;
    let sent = send(store, conv, bob, b1, "hello").await;
    assert_eq!(sorted(sent.recipients), vec![a1, a2]);
    assert_eq!(waiting(store, a1).await, 1);
    assert_eq!(pending_ids(store, b1).await, vec![], "b1 got its own text");
    assert_eq!(waiting(store, b1).await, 1, "waiting counts own events");

    // Wrong account: refused, nothing changes.
    assert_eq!(store.revoke_device(bob, a1).await, Ok(None));
    assert_eq!(store.revoke_device(alice, b1).await, Ok(None));
    assert_eq!(
        store.revoke_device(alice, DeviceId(987_654_321)).await,
        Ok(None)
    );
    assert_eq!(auth(store, "a-phone").await, Some(alice_a1));
    assert!(auth(store, "b-phone").await.is_some());
    assert_eq!(devices_of(store, alice).await, listed);
    assert_eq!(pending_ids(store, a1).await, vec![sent.message_id.clone()]);

    revoked_by_its_account(store, alice, [a1, a2]).await;

    // The freed slot can be used again; the new device starts now.
    let a3 = store
        .create_device(two_slots(alice, "a-tablet", NOW + 60))
        .await
        .expect("a3")
        .id;
    assert_eq!(devices_of(store, alice).await.len(), 2);
    assert_eq!(waiting(store, a3).await, 0, "a new device got the past");
    assert!(pending_all(store, a3).await.is_empty());
    let next = send(store, conv, bob, b1, "again").await;
    assert_eq!(sorted(next.recipients), sorted(vec![a2, a3]));
    assert_eq!(pending_ids(store, a3).await, vec![next.message_id.clone()]);
    assert_eq!(
        pending_ids(store, a2).await,
        vec![sent.message_id, next.message_id]
    );
    assert_eq!(waiting(store, a1).await, 0);
}

/// A login of `account`'s device `name` at `now_ms`, with room for two
/// devices and no replacing.
fn two_slots(account: AccountId, name: &str, now_ms: UnixMillis) -> NewDevice {
    NewDevice {
        devices_max: 2,
        ..device_request(account, name, now_ms)
    }
}

/// [`devices`]: alice's two slots filled ("a-phone", "a-laptop"), a third
/// refused, then bob's "b-phone"; returns [a1, a2, b1].
async fn fill_the_slots(store: &dyn Store, alice: AccountId, bob: AccountId) -> [DeviceId; 3] {
    let a1 = store
        .create_device(two_slots(alice, "a-phone", NOW))
        .await
        .expect("a1")
        .id;
    let a2 = store
        .create_device(two_slots(alice, "a-laptop", NOW + 1))
        .await
        .expect("a2")
        .id;
    assert_ne!(a1, a2);
    assert_eq!(
        store
            .create_device(two_slots(alice, "a-tablet", NOW + 2))
            .await,
        Err(StoreError::TooManyDevices)
    );
    assert_eq!(auth(store, "a-tablet").await, None);
    let b1 = store
        .create_device(two_slots(bob, "b-phone", NOW + 3))
        .await
        .expect("b1")
        .id;
    [a1, a2, b1]
}

/// [`devices`]: the listing (oldest first, last use moved by a session
/// claim) and who each token authenticates as; returns alice's listing.
async fn listed_and_authenticated(
    store: &dyn Store,
    (alice, bob): (AccountId, AccountId),
    [a1, a2, b1]: [DeviceId; 3],
    alice_a1: &DeviceAuth,
) -> Vec<DeviceRecord> {
    assert_eq!(
        devices_of(store, alice).await,
        vec![
            DeviceRecord {
                id: a1,
                name: "a-phone".into(),
                created_ms: NOW,
                last_seen_ms: NOW,
            },
            DeviceRecord {
                id: a2,
                name: "a-laptop".into(),
                created_ms: NOW + 1,
                last_seen_ms: NOW + 1,
            },
        ],
        "alice's devices, oldest first"
    );
    assert_eq!(devices_of(store, bob).await.len(), 1);

    assert_eq!(auth(store, "a-phone").await, Some(alice_a1.clone()));
    assert_eq!(
        auth(store, "b-phone").await,
        Some(DeviceAuth {
            account: bob,
            username: username("bob"),
            device: b1,
        })
    );
    assert_eq!(auth(store, "nobody").await, None);

    store
        .claim_session(a2, alice, "node-a", NOW + 50)
        .await
        .expect("claim");
    let listed = devices_of(store, alice).await;
    assert_eq!(
        listed
            .iter()
            .map(|d| (d.id, d.last_seen_ms))
            .collect::<Vec<_>>(),
        vec![(a1, NOW), (a2, NOW + 50)]
    );
    listed
}

/// [`devices`]: alice revokes a1: the device and its token go; nothing
/// waits for it.
async fn revoked_by_its_account(store: &dyn Store, alice: AccountId, [a1, a2]: [DeviceId; 2]) {
    // Right account: the device and its token go; nothing waits for it.
    assert_eq!(
        store.revoke_device(alice, a1).await,
        Ok(Some(RevokedDevice {
            device: a1,
            account: alice,
            had_keys: false
        }))
    );
    assert_eq!(auth(store, "a-phone").await, None);
    assert_eq!(auth(store, "a-laptop").await.map(|a| a.device), Some(a2));
    assert_eq!(
        devices_of(store, alice)
            .await
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![a2]
    );
    assert_eq!(
        waiting(store, a1).await,
        0,
        "a revoked device has a backlog"
    );
    assert_eq!(store.device_owner(a1).await, Ok(None));
    assert_eq!(waiting(store, a2).await, 1);
    assert_eq!(
        store.revoke_device(alice, a1).await,
        Ok(None),
        "revoked twice"
    );
}

/// 2a. Replacing the least recently used device; idle devices expiring.
pub(crate) async fn devices_are_replaced_and_expire_least_recent_first(store: Arc<dyn Store>) {
    // Goal: at the limit, a login that may replace revokes the device
    // seen longest ago among those without a live session (as a revoke
    // does: token and positions gone) and says which; without leave it
    // is refused as before. Expiry revokes devices idle since before
    // the cut-off that have no live session, and nothing else; a touch
    // moves a device's last use forward, never back.
    let store = &*store;
    let (alice, bob) = alice_and_bob(store).await;
    let login = |name: &str, now_ms: UnixMillis, replace| NewDevice {
        devices_max: 3,
        replace_least_recent: replace,
        ..device_request(alice, name, now_ms)
    };
    let mut ids = Vec::new();
    for (i, name) in ["old", "live", "newer"].into_iter().enumerate() {
        let created = store
            .create_device(login(name, NOW + i as i64, false))
            .await
            .expect(name);
        assert_eq!(created.replaced, None);
        ids.push(created.id);
    }
    let [old, live, newer] = ids[..] else {
        unreachable!()
    };
    // "live" is the least recently seen but connected; "old" is not.
    store.touch_device(old, NOW + 10).await.expect("touch");
    store.touch_device(old, NOW + 5).await.expect("touch back");
    store
        .claim_session(live, alice, "node-a", NOW)
        .await
        .expect("claim");
    assert_eq!(
        store.create_device(login("refused", NOW + 20, false)).await,
        Err(StoreError::TooManyDevices)
    );
    let room = store
        .create_device(login("replacing", NOW + 20, true))
        .await
        .expect("replace");
    assert_eq!(
        room.replaced,
        Some(RevokedDevice {
            device: newer,
            account: alice,
            had_keys: false
        }),
        "seen at NOW+2, no session"
    );
    assert_eq!(auth(store, "newer").await, None);
    assert_eq!(waiting(store, newer).await, 0);
    let seen: Vec<(DeviceId, UnixMillis)> = devices_of(store, alice)
        .await
        .into_iter()
        .map(|device| (device.id, device.last_seen_ms))
        .collect();
    assert!(seen.contains(&(old, NOW + 10)), "{seen:?}");
    assert_eq!(seen.len(), 3);

    let b1 = new_device(store, bob, "b1").await;
    let expired = store.expire_devices(NOW + 15, 100).await.expect("expire");
    assert_eq!(
        sorted(device_ids(expired)),
        sorted(vec![old, b1]),
        "not the live one"
    );
    assert_eq!(auth(store, "old").await, None);
    assert!(auth(store, "live").await.is_some());
    assert!(auth(store, "replacing").await.is_some());
    assert_eq!(
        store.expire_devices(NOW + 15, 100).await.expect("again"),
        Vec::<RevokedDevice>::new()
    );
}

/// 2a, renames. A device's name changes only for its own account.
pub(crate) async fn devices_are_renamed_by_their_account_only(store: Arc<dyn Store>) {
    // Goal: rename_device changes the listed name of the account's own
    // device; another account's or an unknown device is false and
    // changes nothing.
    let store = &*store;
    let (alice, bob) = alice_and_bob(store).await;
    let a1 = new_device(store, alice, "a1").await;
    assert_eq!(
        store
            .rename_device(alice, a1, "Firefox on Linux".into())
            .await,
        Ok(true)
    );
    assert_eq!(
        store.rename_device(bob, a1, "stolen".into()).await,
        Ok(false)
    );
    assert_eq!(
        store
            .rename_device(alice, DeviceId(999_999), "ghost".into())
            .await,
        Ok(false)
    );
    let listed = store.list_devices(alice).await.expect("list");
    let names: Vec<(DeviceId, &str)> = listed.iter().map(|d| (d.id, d.name.as_str())).collect();
    assert_eq!(names, vec![(a1, "Firefox on Linux")]);
}

/// 2b. Device identity after revocation.
pub(crate) async fn revoked_device_identity_is_not_reused(store: Arc<dyn Store>) {
    // Goal: a device created after a revoke is a new sender: it does not
    // inherit the revoked device's id, and so not its idempotency records
    // (a fresh login's first client_msg_id must not be swallowed as a
    // "retry" of a message the revoked device sent).
    // Method: alice's newest device sends client_msg_id "c-1" and is
    // revoked; a new device is created and sends "c-1" with other text.
    let store = &*store;
    let Cast(alice, _, conv, [_a1, b1]) = cast(store, ["a1", "b1"]).await;
    let a2 = new_device(store, alice, "a2").await;
    let first = send(store, conv, alice, a2, "c-1").await;
    assert_eq!(first.seq, 1);
    assert!(
        store
            .revoke_device(alice, a2)
            .await
            .expect("revoke")
            .is_some()
    );

    let a3 = new_device(store, alice, "a3").await;
    assert_ne!(a3, a2, "the revoked device's id was handed to a new device");
    let second = send(store, conv, alice, a3, "c-1").await;
    assert!(
        !second.duplicate,
        "a new device's first send was taken for the revoked device's retry"
    );
    assert_eq!(second.seq, 2);
    assert_eq!(
        pending_ids(store, b1).await,
        vec![first.message_id, second.message_id]
    );
}
