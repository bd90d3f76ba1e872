//! Between accounts: contacts and blocks, and blocks refusing direct sends.

use std::sync::Arc;

use missive_store::{Relation, Store, StoreError};

use crate::support::*;

/// 22. Contacts and blocks.
pub(crate) async fn contacts_and_blocks(store: Arc<dyn Store>) {
    // Goal: contacts and blocks share one contract: setting is
    // idempotent and says whether anything changed, and the list holds
    // usernames sorted (not in insertion order). Beyond that, is_contact
    // is one-way, blocked_either_way is symmetric, and the two relations
    // are independent of each other.
    // Method: alice, bob, carol, dave; for each relation alice adds dave,
    // again, bob, removes carol (never added), then removes dave twice,
    // reading her list and bob's; then the predicates both ways, and
    // removing the contact bob leaves the block on bob.
    let store = &*store;
    let (alice, bob) = alice_and_bob(store).await;
    let carol = new_account(store, "carol").await;
    let dave = new_account(store, "dave").await;
    for relation in [Relation::Contact, Relation::Block] {
        let set = |other, present| set_relation(store, relation, alice, other, present);
        let list = |owner| relation_list(store, relation, owner);
        let steps = [
            (dave, true, true),
            (dave, true, false),
            (bob, true, true),
            (carol, false, false),
        ];
        for (other, present, changed) in steps {
            assert_eq!(set(other, present).await, changed, "{relation:?} {other}");
        }
        assert_eq!(list(alice).await, ["bob", "dave"], "{relation:?}");
        assert!(list(bob).await.is_empty(), "{relation:?}");
        assert!(set(dave, false).await, "{relation:?}");
        assert!(!set(dave, false).await, "{relation:?}");
        assert_eq!(list(alice).await, ["bob"], "{relation:?}");
    }

    let contact_pairs = [
        (alice, bob, true),
        (bob, alice, false),
        (alice, dave, false),
    ];
    for (owner, other, expected) in contact_pairs {
        assert_eq!(store.is_contact(owner, other).await, Ok(expected));
    }
    let block_pairs = [
        (alice, bob, true),
        (bob, alice, true),
        (alice, dave, false),
        (dave, alice, false),
        (bob, carol, false),
    ];
    for (a, b, expected) in block_pairs {
        assert_eq!(
            store.blocked_either_way(a, b).await,
            Ok(expected),
            "{a} / {b}"
        );
    }
    // The same over a set: any one blocked pair, either way, is enough.
    let set_cases = [
        (alice, vec![dave, carol], false),
        (alice, vec![dave, bob, carol], true),
        (bob, vec![carol, alice], true),
        (dave, vec![alice, bob, carol], false),
        (alice, vec![], false),
    ];
    for (a, others, expected) in set_cases {
        assert_eq!(
            store.blocked_with_any(a, others.clone()).await,
            Ok(expected),
            "{a} / {others:?}"
        );
    }

    assert!(set_relation(store, Relation::Contact, alice, bob, false).await);
    assert_eq!(relation_list(store, Relation::Block, alice).await, ["bob"]);
    assert_eq!(store.blocked_either_way(bob, alice).await, Ok(true));
}

pub(crate) async fn blocks_refuse_direct_sends(store: Arc<dyn Store>) {
    // Goal: when either member of a 1:1 conversation blocked the other,
    // every append there (texts and other kinds, from either side) is
    // Blocked and stores nothing (no seq, nothing pending, no idempotency
    // record); a block is between two accounts only, and group appends
    // are not affected; after unblocking, sending works and seqs continue
    // without a gap.
    // Method: alice (a1), bob (b1), carol (c1); a text, then alice blocks
    // bob; refused appends both ways; bob writes to carol and in a group
    // of the three; alice unblocks; then bob blocks alice.
    let store = &*store;
    let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    let m1 = send_at(store, conv, alice, a1, "m1", NOW).await;
    let group = create_group(store, new_group(alice, a1, "team", &[bob, carol], NOW))
        .await
        .conversation;
    assert!(
        store
            .set_relation(Relation::Block, alice, bob, true, NOW)
            .await
            .expect("block")
    );

    let refused_sends = [
        (alice, a1, plain("hi")),
        (bob, b1, plain("hi")),
        (bob, b1, react(&m1.message_id, Some("👍"))),
        (alice, a1, edit(&m1.message_id, "v2")),
    ];
    for (account, device, body) in refused_sends {
        let message = message_with(conv, account, device, "x", body, NOW + 1);
        assert_refused(store, message, StoreError::Blocked, &[a1, b1]).await;
    }

    // Unaffected: bob to carol, and bob in the group alice is in.
    let bc = direct(store, bob, carol, NOW).await;
    assert_eq!(
        send_at(store, bc, bob, b1, "x", NOW + 2).await.recipients,
        vec![c1]
    );
    let in_group = send_at(store, group, bob, b1, "g", NOW + 2).await;
    assert_eq!(sorted(in_group.recipients), sorted(vec![a1, c1]));

    assert!(
        store
            .set_relation(Relation::Block, alice, bob, false, NOW + 3)
            .await
            .expect("unblock")
    );
    let after = send_at(store, conv, alice, a1, "x", NOW + 4).await;
    assert_new(&after, 2);
    let last_in_conv = events(&pending_all(store, b1).await)
        .into_iter()
        .rfind(|event| event.conversation == conv)
        .map(|event| event.message_id);
    assert_eq!(last_in_conv, Some(after.message_id));

    // The other direction.
    assert!(
        store
            .set_relation(Relation::Block, bob, alice, true, NOW + 5)
            .await
            .expect("block")
    );
    let message = new_message(conv, alice, a1, "y", NOW + 6);
    assert_refused(store, message, StoreError::Blocked, &[b1]).await;
}
