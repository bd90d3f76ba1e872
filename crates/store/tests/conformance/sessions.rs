//! Sessions and presence: the session directory and node leases, who is told of
//! key changes, relay targets, and presence profiles.

use std::sync::Arc;

use missive_core::{AccountId, DeviceId};
use missive_store::{GroupChange, PresenceVisibility, Relation, Store, StoreError};

use crate::support::*;

/// Session directory: node leases and live sessions across nodes.
pub(crate) async fn session_directory(store: Arc<dyn Store>) {
    // Goal: an account is online exactly while one of its devices has a
    // session on a node whose lease holds; a claim on another node names
    // the node it replaces; a stale release does not end a newer claim;
    // reaping a lapsed node reports each newly offline account once and
    // records its last seen.
    // Method: nodes "a" and "b" with leases ending at NOW+100 and
    // NOW+1000; alice's phone moves from a to b; bob lives only on a.
    let store = &*store;
    let (alice, bob) = alice_and_bob(store).await;
    let phone = new_device(store, alice, "alice-phone").await;
    let bobs = new_device(store, bob, "bob-phone").await;
    let online = |account, at| async move {
        store
            .account_online(account, at)
            .await
            .expect("account_online")
    };

    assert!(
        !store.renew_node("a", NOW + 100).await.expect("renew a"),
        "a new node held no lease"
    );
    assert!(store.renew_node("a", NOW + 100).await.expect("renew a"));
    assert!(!store.renew_node("b", NOW + 1000).await.expect("renew b"));
    assert!(!online(alice, NOW).await);

    let claim = |device, account, node: &'static str| async move {
        store
            .claim_session(device, account, node, NOW)
            .await
            .expect("claim_session")
    };
    assert_eq!(claim(phone, alice, "a").await, None);
    assert_eq!(
        claim(phone, alice, "a").await,
        None,
        "a re-claim on the same node replaces nothing elsewhere"
    );
    assert_eq!(claim(bobs, bob, "a").await, None);
    assert!(online(alice, NOW).await && online(bob, NOW).await);
    assert_eq!(claim(phone, alice, "b").await, Some("a".to_owned()));
    store
        .release_session(phone, "a")
        .await
        .expect("stale release");
    assert!(
        online(alice, NOW).await,
        "a's late release must not end b's session"
    );

    a_lapses_and_is_reaped(store, (alice, bob), phone).await;
}

/// [`session_directory`], with alice's phone on "b" and bob's on "a": "a"'s
/// lease lapses and is reaped, then alice's phone leaves "b".
async fn a_lapses_and_is_reaped(
    store: &dyn Store,
    (alice, bob): (AccountId, AccountId),
    phone: DeviceId,
) {
    let online = |account, at| async move {
        store
            .account_online(account, at)
            .await
            .expect("account_online")
    };

    // a's lease lapses: bob shows offline at once, before any reaping.
    assert!(!online(bob, NOW + 100).await);
    assert!(online(alice, NOW + 100).await);
    assert_eq!(
        store.reap_nodes(NOW + 99).await.expect("reap early"),
        vec![]
    );
    assert_eq!(store.reap_nodes(NOW + 150).await.expect("reap"), vec![bob]);
    assert_eq!(
        store.reap_nodes(NOW + 150).await.expect("reap again"),
        vec![],
        "reported once"
    );
    let profile = store
        .presence_profile(bob)
        .await
        .expect("profile")
        .expect("bob");
    assert_eq!(profile.last_seen_ms, NOW + 150);
    assert!(
        !store.renew_node("a", NOW + 300).await.expect("renew a"),
        "a's lease was reaped"
    );
    assert!(!online(bob, NOW + 200).await, "reaped sessions stay gone");

    store.release_session(phone, "b").await.expect("release");
    assert!(!online(alice, NOW + 200).await);
    assert_eq!(
        store.reap_nodes(NOW + 2000).await.expect("reap b"),
        vec![],
        "nobody was left on b"
    );
}

/// Who is told, live, that an account's key listing changed.
pub(crate) async fn online_devices_sharing_a_conversation(store: Arc<dyn Store>) {
    // Goal: the devices in the session directory (on any node) of the
    // account and of every current member of a conversation it is in,
    // each once, by id; not a device without a session, not an
    // outsider, not a member who left, not a member of a conversation
    // the account is not in.
    // Method: alice, bob and carol share a group, dave only a 1:1 with
    // alice later; b2 never connects; sessions on two nodes.
    let store = &*store;
    let GroupCast([alice, bob, carol, dave], group, [a1, a2, b1, _b2, c1, d1]) =
        group_cast(store, ["a1", "a2", "b1", "b2", "c1", "d1"]).await;
    for (device, account, node) in [
        (a1, alice, "node-a"),
        (a2, alice, "node-b"),
        (b1, bob, "node-a"),
        (c1, carol, "node-b"),
        (d1, dave, "node-a"),
    ] {
        store
            .claim_session(device, account, node, NOW)
            .await
            .expect("claim_session");
    }
    let told = |account| async move {
        store
            .online_devices_sharing_with(account)
            .await
            .expect("online_devices_sharing_with")
    };
    assert_eq!(told(alice).await, vec![a1, a2, b1, c1]);
    assert_eq!(told(dave).await, vec![d1], "only its own");

    change(store, carol, c1, group, GroupChange::Leave, NOW + 1)
        .await
        .expect("carol leaves");
    assert_eq!(told(alice).await, vec![a1, a2, b1], "carol left");
    assert_eq!(told(carol).await, vec![c1]);

    direct(store, alice, dave, NOW + 2).await;
    assert_eq!(told(alice).await, vec![a1, a2, b1, d1]);
    assert_eq!(
        told(dave).await,
        vec![a1, a2, d1],
        "not bob: dave shares nothing with him"
    );

    store
        .release_session(a2, "node-b")
        .await
        .expect("release_session");
    assert_eq!(told(bob).await, vec![a1, b1]);
}

/// 24. Relay targets.
pub(crate) async fn relay_targets(store: Arc<dyn Store>) {
    // Goal: relay targets are every device of every other member, minus
    // the members who blocked the caller or whom it blocked; outsiders
    // are NotMember, unknown conversations UnknownConversation.
    // Method: the group cast alice (a1, a2), bob (b1), carol (c1, c2) and
    // alice–bob's 1:1; compare sorted targets before and after bob blocks
    // carol and alice blocks bob.
    let store = &*store;
    let GroupCast([alice, bob, carol, dave], group, [a1, a2, b1, c1, c2]) =
        group_cast(store, ["a1", "a2", "b1", "c1", "c2"]).await;
    let ab = direct(store, alice, bob, NOW).await;
    let targets = |account, conversation| async move {
        let mut targets = store
            .relay_targets(account, conversation)
            .await
            .expect("relay_targets");
        targets.sort();
        targets
    };
    let of_alice = vec![(alice, a1), (alice, a2)];
    let of_carol = vec![(carol, c1), (carol, c2)];
    let everyone_but_alice = [vec![(bob, b1)], of_carol.clone()].concat();
    assert_eq!(targets(alice, group).await, everyone_but_alice);
    assert_eq!(targets(bob, ab).await, of_alice);

    assert!(
        store
            .set_relation(Relation::Block, bob, carol, true, NOW)
            .await
            .expect("block")
    );
    assert_eq!(targets(bob, group).await, of_alice, "bob blocked carol");
    assert_eq!(
        targets(carol, group).await,
        of_alice,
        "carol is blocked by bob"
    );
    assert_eq!(targets(alice, group).await, everyone_but_alice);

    assert!(
        store
            .set_relation(Relation::Block, alice, bob, true, NOW)
            .await
            .expect("block")
    );
    assert!(targets(bob, ab).await.is_empty());
    assert!(targets(alice, ab).await.is_empty());
    assert_eq!(targets(alice, group).await, of_carol);

    assert_eq!(
        store.relay_targets(dave, group).await,
        Err(StoreError::UnknownConversation)
    );
    assert_eq!(
        store.relay_targets(alice, NOWHERE).await,
        Err(StoreError::UnknownConversation)
    );
}

/// 25. Presence profile.
pub(crate) async fn presence_profile(store: Arc<dyn Store>) {
    // Goal: a new account's presence is visible to everyone; visibility
    // changes affect that account only; the last-seen time only moves
    // forward; an unknown account has no profile.
    // Method: alice and bob; change alice's visibility through every
    // value and record last-seen times out of order.
    let store = &*store;
    let (alice, bob) = alice_and_bob(store).await;
    let profile = |account| async move {
        store
            .presence_profile(account)
            .await
            .expect("presence_profile")
            .expect("a profile")
    };
    let fresh = profile(alice).await;
    assert_eq!(
        (fresh.account, fresh.username.as_str(), fresh.visibility),
        (alice, "alice", PresenceVisibility::Everyone)
    );
    for visibility in [
        PresenceVisibility::Contacts,
        PresenceVisibility::Nobody,
        PresenceVisibility::Everyone,
        PresenceVisibility::Nobody,
    ] {
        store
            .set_presence_visibility(alice, visibility)
            .await
            .expect("set_presence_visibility");
        assert_eq!(profile(alice).await.visibility, visibility);
    }
    assert_eq!(profile(bob).await.visibility, PresenceVisibility::Everyone);

    let bob_before = profile(bob).await.last_seen_ms;
    for (now_ms, expected) in [
        (NOW + 10, NOW + 10),
        (NOW + 5, NOW + 10),
        (NOW + 20, NOW + 20),
    ] {
        store
            .set_last_seen(alice, now_ms)
            .await
            .expect("set_last_seen");
        assert_eq!(
            profile(alice).await.last_seen_ms,
            expected,
            "after {now_ms}"
        );
    }
    assert_eq!(profile(bob).await.last_seen_ms, bob_before);
    assert_eq!(
        store.presence_profile(AccountId(987_654_321)).await,
        Ok(None)
    );
}
