//! Delivery: sequence numbers and idempotent appends, fan-out, pending pages
//! and cumulative acks, and `behind`.

use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq};
use missive_store::{
    Appended, EventKind, GroupChange, PendingItem, Store, StoreError, StoredEvent,
};

use crate::support::*;

/// 3. Sequence numbers and idempotent append.
pub(crate) async fn seq_and_dedup(store: Arc<dyn Store>) {
    // Goal: seqs are per conversation, 1..N without gaps; a retry with the
    // same (device, client_msg_id) and the same request returns the
    // original and stores nothing; the key reused for a different
    // message is refused; refusals store nothing and burn no seq.
    // Method: N appends, a retry with a new message id / text / time, the
    // same client_msg_id from two other devices, two refused appends,
    // then one more append; compare seqs and what waits for bob at each
    // step.
    let store = &*store;
    let people = cast(store, ["a1", "a2", "b1"]).await;
    let Cast(alice, bob, conv, [a1, _a2, b1]) = people;
    let carol = new_account(store, "carol").await;
    let c1 = new_device(store, carol, "c1").await;

    assert_eq!(direct(store, bob, alice, NOW + 1).await, conv);
    assert_eq!(direct(store, alice, bob, NOW + 2).await, conv);
    let conv_ac = direct(store, carol, alice, NOW).await;
    assert_ne!(conv_ac, conv);
    assert_eq!(direct(store, alice, carol, NOW).await, conv_ac);

    let mut originals = Vec::new();
    for i in 1..=N {
        let request = new_message(conv, alice, a1, &format!("m{i}"), NOW + i);
        let message_id = request.message_id.clone();
        let appended = store.append_message(request).await.expect("append");
        assert_eq!(appended.seq, i, "seq of the {i}th message");
        assert_eq!(appended.message_id, message_id);
        assert_eq!(appended.conversation, conv);
        assert_eq!(appended.ts_ms, NOW + i);
        assert!(!appended.duplicate);
        originals.push(appended);
    }
    let before = pending_all(store, b1).await;
    assert_eq!(
        points(&before),
        (1..=N).map(|seq| (conv, seq)).collect::<Vec<_>>()
    );

    retries_store_nothing(store, &people, conv_ac, &originals[2], &before).await;
    other_senders_and_refusals(store, &people, (carol, c1), conv_ac, &originals[2]).await;
}

/// How many texts [`seq_and_dedup`] starts with.
const N: i64 = 5;

/// [`seq_and_dedup`]: retries of m3 (`original`) after the `N` texts that
/// `before` is what waits for b1 after.
async fn retries_store_nothing(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, a2, b1]): &Cast<3>,
    conv_ac: ConversationId,
    original: &Appended,
    before: &[PendingItem],
) {
    // A retry: the same request with a new message id, later. Nothing
    // is stored.
    let retry = new_message(conv, alice, a1, "m3", NOW + 100);
    let retried = store.append_message(retry).await.expect("retry");
    assert!(retried.duplicate);
    assert_eq!(retried.message_id, original.message_id);
    assert_eq!(retried.seq, 3);
    assert_eq!(retried.ts_ms, NOW + 3);
    assert_eq!(retried.conversation, conv);
    assert!(retried.recipients.is_empty());
    assert_eq!(
        pending_all(store, b1).await,
        before,
        "a retry changed what waits for bob"
    );
    assert_eq!(waiting(store, a2).await, N as u64);
    assert_eq!(
        stored(store, bob, conv, &original.message_id).await.body,
        text_of("m3"),
        "a retry overwrote the original"
    );
    // The key reused for another text, or into another conversation:
    // refused, nothing stored, and the original still answers retries.
    let mut reused = new_message(conv, alice, a1, "m3", NOW + 101);
    reused.body = plain("different text");
    assert_eq!(
        store.append_message(reused).await,
        Err(StoreError::ClientMsgIdReused)
    );
    let elsewhere = new_message(conv_ac, alice, a1, "m3", NOW + 102);
    assert_eq!(
        store.append_message(elsewhere).await,
        Err(StoreError::ClientMsgIdReused)
    );
    assert_eq!(pending_all(store, b1).await, before);
    let again = store
        .append_message(new_message(conv, alice, a1, "m3", NOW + 103))
        .await
        .expect("retry after a refusal");
    assert_eq!((again.duplicate, again.seq), (true, 3));
}

/// [`seq_and_dedup`]: m3's client_msg_id (`original`) from a2 and b1, then
/// carol's refused appends, then more texts in both conversations.
async fn other_senders_and_refusals(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, a2, b1]): &Cast<3>,
    (carol, c1): (AccountId, DeviceId),
    conv_ac: ConversationId,
    original: &Appended,
) {
    // The same client_msg_id from other devices is a new message each time.
    let from_a2 = send(store, conv, alice, a2, "m3").await;
    assert!(!from_a2.duplicate);
    assert_eq!(from_a2.seq, N + 1);
    assert_ne!(from_a2.message_id, original.message_id);
    let from_b1 = send(store, conv, bob, b1, "m3").await;
    assert!(!from_b1.duplicate);
    assert_eq!(from_b1.seq, N + 2);
    let snapshot_b1 = pending_all(store, b1).await;
    let snapshot_a1 = pending_all(store, a1).await;

    // Refusals: nothing stored, no seq consumed.
    let outsider = store
        .append_message(new_message(conv, carol, c1, "x1", NOW))
        .await;
    assert_eq!(outsider, Err(StoreError::UnknownConversation));
    let nowhere = store
        .append_message(new_message(NOWHERE, carol, c1, "x2", NOW))
        .await;
    assert_eq!(nowhere, Err(StoreError::UnknownConversation));
    assert_eq!(pending_all(store, b1).await, snapshot_b1);
    assert_eq!(pending_all(store, a1).await, snapshot_a1);

    let next = send(store, conv, alice, a1, "m-next").await;
    assert_eq!(next.seq, N + 3, "a refused append consumed a seq");

    // Refused attempts left no idempotency record, and seqs are per conversation.
    let carol_first = send(store, conv_ac, carol, c1, "x1").await;
    assert!(
        !carol_first.duplicate,
        "a refused append was recorded for dedup"
    );
    assert_eq!(carol_first.seq, 1);
    let carol_second = send(store, conv_ac, carol, c1, "x2").await;
    assert!(!carol_second.duplicate);
    assert_eq!(carol_second.seq, 2);
    assert_eq!(send(store, conv, bob, b1, "after").await.seq, N + 4);
}

/// 4. Fan-out.
pub(crate) async fn fan_out(store: Arc<dyn Store>) {
    // Goal: an append is for every device of every member except the
    // sending device (so the sender's other devices see it too), and for
    // no one else; what waits is the stored event with its fields.
    // Method: alice and bob with two devices each and an outsider; send
    // from a1 and from b2, and inspect `recipients`, every device's
    // pending events and `waiting` (which counts own events too).
    let store = &*store;
    let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
    let carol = new_account(store, "carol").await;
    let c1 = new_device(store, carol, "c1").await;

    let sent = send(store, conv, alice, a1, "hi").await;
    assert_eq!(sorted(sent.recipients.clone()), sorted(vec![a2, b1, b2]));
    assert!(
        pending_all(store, a1).await.is_empty(),
        "the sending device got its own message"
    );
    assert!(pending_all(store, c1).await.is_empty());
    for device in [a2, b1, b2] {
        let items = pending_all(store, device).await;
        assert_eq!(
            items,
            vec![PendingItem::Event(StoredEvent {
                message_id: sent.message_id.clone(),
                conversation: conv,
                seq: 1,
                from: "alice".into(),
                from_device: a1,
                client_msg_id: "hi".into(),
                kind: EventKind::Text,
                body: text_of("hi"),
                media: Vec::new(),
                target: None,
                edited_ms: None,
                deleted: false,
                ts_ms: NOW,
                expires_ms: None,
                reactions: vec![],
            })],
            "device {device}"
        );
    }
    for device in [a1, a2, b1, b2] {
        assert_eq!(waiting(store, device).await, 1, "device {device}");
    }
    assert_eq!(waiting(store, c1).await, 0);

    let reply = send(store, conv, bob, b2, "yo").await;
    assert_eq!(sorted(reply.recipients.clone()), sorted(vec![a1, a2, b1]));
    assert_eq!(pending_ids(store, b2).await, vec![sent.message_id.clone()]);
    for device in [a1, a2, b1] {
        let ids = pending_ids(store, device).await;
        assert_eq!(ids.last(), Some(&reply.message_id), "device {device}");
    }
    assert!(pending_all(store, c1).await.is_empty());
    assert_eq!(waiting(store, c1).await, 0);
    assert_eq!(
        store.waiting_total().await,
        Ok(8),
        "four devices, two events each"
    );
}

/// 5. Pages and acks.
pub(crate) async fn pending_and_ack(store: Arc<dyn Store>) {
    // Goal: pending pages in seq order, `limit` items at a time, with
    // `more` and `scanned` telling where the next page starts; reading
    // moves nothing; an ack moves the device's position (everything up
    // to it stops waiting for that device only), never back; the
    // account's first ack past a text moves its delivered cursor and
    // tells the author's devices; `waiting` and `waiting_total` follow.
    // Method: a1 sends five texts to bob (b1, b2); page b1's pending,
    // ack it in steps, re-ack lower, then b2 and a2 ack everything.
    let store = &*store;
    let people = cast(store, ["a1", "a2", "b1", "b2"]).await;
    let Cast(alice, bob, conv, [a1, a2, b1, b2]) = people;
    let mut sent = Vec::new();
    for i in 1..=5 {
        sent.push(send(store, conv, alice, a1, &format!("m{i}")).await);
    }
    let ids: Vec<MessageId> = sent.iter().map(|s| s.message_id.clone()).collect();
    let all = paged(store, conv, b1, &ids).await;

    // Reading moved nothing.
    assert_eq!(pending_all(store, b1).await, all);
    assert_eq!(waiting(store, b1).await, 5);
    assert_eq!(store.waiting_total().await, Ok(20));

    // An ack: everything up to it stops waiting for that device.
    let outcome = ack(store, b1, bob, vec![(conv, 2)], false).await;
    assert_eq!(
        outcome,
        acked(
            vec![(conv, 2)],
            vec![moved(conv, "bob", 2, ACK_NOW, vec![a1, a2])]
        )
    );
    assert_eq!(pending_ids(store, b1).await, ids[2..].to_vec());
    assert_eq!(waiting(store, b1).await, 3);
    assert_eq!(pending_ids(store, b2).await, ids, "b1's ack moved b2");
    assert_eq!(waiting(store, b2).await, 5);
    assert_eq!(store.waiting_total().await, Ok(18));

    // An `after` below the stored position: the position wins.
    let below = pending_page(store, b1, &[(conv, 1)], ALL, NO_EXPIRY).await;
    assert_eq!(below.items, all[2..]);

    // Acking at or below the position moves nothing and tells nobody.
    for seq in [0, 1, 2] {
        let outcome = ack(store, b1, bob, vec![(conv, seq)], false).await;
        assert_eq!(outcome, acked(vec![(conv, 2)], vec![]), "ack of {seq}");
    }
    assert_eq!(pending_ids(store, b1).await, ids[2..].to_vec());
    acked_to_the_end(store, &people).await;
}

/// [`pending_and_ack`]: b1's pages of the five texts `ids` in `conv`, by
/// limit and `scanned`; returns everything waiting for b1.
async fn paged(
    store: &dyn Store,
    conv: ConversationId,
    b1: DeviceId,
    ids: &[MessageId],
) -> Vec<PendingItem> {
    let all = pending_all(store, b1).await;
    assert_eq!(event_ids(&all), ids);
    let page = |after: Vec<(ConversationId, Seq)>, limit: usize| async move {
        pending_page(store, b1, &after, limit, NO_EXPIRY).await
    };
    let page1 = page(vec![], 2).await;
    assert_eq!(
        (&page1.items[..], &page1.scanned[..], page1.more),
        (&all[0..2], &[(conv, 2)][..], true)
    );
    let page2 = page(page1.scanned.clone(), 2).await;
    assert_eq!(
        (&page2.items[..], &page2.scanned[..], page2.more),
        (&all[2..4], &[(conv, 4)][..], true)
    );
    let page3 = page(page2.scanned.clone(), 2).await;
    assert_eq!(
        (&page3.items[..], &page3.scanned[..], page3.more),
        (&all[4..5], &[(conv, 5)][..], false)
    );
    let page4 = page(page3.scanned.clone(), 2).await;
    assert!(page4.items.is_empty() && !page4.more, "{page4:?}");
    assert_eq!(page(vec![(conv, 2)], 1).await.items, all[2..3]);
    assert_eq!(walk(store, b1, 3, NO_EXPIRY).await, all);
    all
}

/// [`pending_and_ack`], after b1 acked 2: b1 acks the rest in two steps,
/// then b2 and a2 ack everything, and a new text is all that waits.
async fn acked_to_the_end(store: &dyn Store, &Cast(alice, bob, conv, [a1, a2, b1, b2]): &Cast<4>) {
    // Forward again, in two steps.
    let outcome = ack(store, b1, bob, vec![(conv, 4)], false).await;
    assert_eq!(
        outcome,
        acked(
            vec![(conv, 4)],
            vec![moved(conv, "bob", 4, ACK_NOW, vec![a1, a2])]
        )
    );
    let outcome = ack(store, b1, bob, vec![(conv, 5)], false).await;
    assert_eq!(outcome.positions, vec![(conv, 5)]);
    assert!(pending_all(store, b1).await.is_empty());
    assert_eq!(waiting(store, b1).await, 0);

    // bob's other device: its position moves, bob's cursor is there already.
    let outcome = ack(store, b2, bob, vec![(conv, 5)], false).await;
    assert_eq!(outcome, acked(vec![(conv, 5)], vec![]));
    assert!(pending_all(store, b2).await.is_empty());

    // alice's other device acks alice's own texts: her delivered cursor
    // moves, but no text of bob's gets a tick, so nobody is told.
    let outcome = ack(store, a2, alice, vec![(conv, 5)], false).await;
    assert_eq!(
        outcome,
        acked(
            vec![(conv, 5)],
            vec![moved(conv, "alice", 5, ACK_NOW, vec![])]
        )
    );
    assert_eq!(cursors(store, alice, conv).await, vec![cursor("bob", 5, 0)]);
    assert_eq!(cursors(store, bob, conv).await, vec![cursor("alice", 5, 0)]);
    assert_eq!(waiting(store, a1).await, 5, "a1 acked nothing");
    assert_eq!(store.waiting_total().await, Ok(5));

    // What was acked never comes back, also not after new traffic.
    let later = send(store, conv, alice, a1, "m6").await;
    for device in [a2, b1, b2] {
        assert_eq!(
            pending_ids(store, device).await,
            vec![later.message_id.clone()],
            "device {device}"
        );
    }
}

/// 5b. Acks are cumulative per device and conversation.
pub(crate) async fn behind_names_devices_with_something_from_others(store: Arc<dyn Store>) {
    // Goal: `behind` (a cluster's safety net for lost wake-ups) names
    // exactly the devices with an event waiting that another device
    // sent: the sender's own device is not behind on its own text, its
    // other device is; an ack clears a device; a group member added
    // later is not behind on what came before it joined, and one
    // removed is behind on its removal only; unknown ids are left out.
    // Method: alice (a1, a2) and bob (b1) in their conversation; a1
    // sends; acks one by one; then a group created by bob with a text,
    // carol (c1) added after it, then removed before another text.
    let store = &*store;
    let Cast(alice, bob, direct, [a1, a2, b1]) = cast(store, ["a1", "a2", "b1"]).await;
    let behind = |devices: Vec<DeviceId>| async move {
        let mut found = store.behind(devices).await.expect("behind");
        found.sort();
        found
    };
    assert_eq!(behind(vec![a1, a2, b1]).await, Vec::<DeviceId>::new());
    let m1 = send(store, direct, alice, a1, "m1").await;
    assert_eq!(behind(vec![a1, a2, b1, DeviceId(999)]).await, vec![a2, b1]);
    assert_eq!(
        behind(vec![b1]).await,
        vec![b1],
        "only the devices asked of"
    );
    ack(store, b1, bob, vec![(direct, m1.seq)], false).await;
    assert_eq!(behind(vec![a1, a2, b1]).await, vec![a2]);
    ack(store, a2, alice, vec![(direct, m1.seq)], false).await;
    assert_eq!(behind(vec![a1, a2, b1]).await, Vec::<DeviceId>::new());

    let group = create_group(store, new_group(bob, b1, "later", &[alice], NOW))
        .await
        .conversation;
    let text = send(store, group, bob, b1, "g1").await;
    let carol = new_account(store, "carol").await;
    let c1 = new_device(store, carol, "c1").await;
    change(store, bob, b1, group, GroupChange::Add(vec![carol]), NOW)
        .await
        .expect("add carol");
    // Everyone but bob's device waits for the added event; carol's
    // device not for the text before it.
    for device in [a1, a2, c1] {
        assert_eq!(behind(vec![device]).await, vec![device]);
    }
    ack(store, c1, carol, vec![(group, text.seq + 1)], false).await;
    assert_eq!(behind(vec![b1, c1]).await, Vec::<DeviceId>::new());
    // Removed, carol's device waits for the event that removed her, and
    // for nothing after it.
    let removed = change(store, bob, b1, group, GroupChange::Remove(carol), NOW)
        .await
        .expect("remove carol");
    send(store, group, bob, b1, "g2").await;
    assert_eq!(behind(vec![c1]).await, vec![c1]);
    ack(store, c1, carol, vec![(group, removed.seq)], false).await;
    assert_eq!(behind(vec![c1]).await, Vec::<DeviceId>::new());
}

pub(crate) async fn ack_is_cumulative(store: Arc<dyn Store>) {
    // Goal: an ack up to N removes everything up to N of that
    // conversation for that device only: not for the account's other
    // devices, not in other conversations; one call may move several
    // conversations; a point below the position changes nothing there.
    // Method: bob (b1, b2) in a 1:1 with alice (four texts) and one with
    // carol (three texts); b1 acks in steps, single and multi-point.
    let store = &*store;
    let Cast(alice, bob, ab, [a1, b1, b2]) = cast(store, ["a1", "b1", "b2"]).await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    let bc = direct(store, bob, carol, NOW).await;
    for i in 1..=4 {
        send(store, ab, alice, a1, &format!("a{i}")).await;
    }
    for i in 1..=3 {
        send(store, bc, carol, c1, &format!("c{i}")).await;
    }
    let everything: Vec<(ConversationId, Seq)> = sorted(
        [
            (ab, 1),
            (ab, 2),
            (ab, 3),
            (ab, 4),
            (bc, 1),
            (bc, 2),
            (bc, 3),
        ]
        .to_vec(),
    );
    let b2_before = pending_all(store, b2).await;
    assert_eq!(points(&b2_before), everything, "by conversation, then seq");
    assert_eq!(points(&pending_all(store, b1).await), everything);

    let outcome = ack(store, b1, bob, vec![(ab, 3)], false).await;
    assert_eq!(outcome.positions, vec![(ab, 3)]);
    assert_eq!(
        points(&pending_all(store, b1).await),
        sorted(vec![(ab, 4), (bc, 1), (bc, 2), (bc, 3)])
    );
    assert_eq!(pending_all(store, b2).await, b2_before);
    assert_eq!((waiting(store, b1).await, waiting(store, b2).await), (4, 7));

    // Two conversations in one call; the one below its position stays.
    let outcome = ack(store, b1, bob, vec![(ab, 2), (bc, 2)], false).await;
    assert_eq!(
        outcome,
        acked(
            vec![(ab, 3), (bc, 2)],
            vec![moved(bc, "bob", 2, ACK_NOW, vec![c1])]
        )
    );
    assert_eq!(
        points(&pending_all(store, b1).await),
        sorted(vec![(ab, 4), (bc, 3)])
    );
    let outcome = ack(store, b1, bob, vec![(bc, 3), (ab, 4)], false).await;
    assert_eq!(outcome.positions, sorted(vec![(ab, 4), (bc, 3)]));
    assert!(pending_all(store, b1).await.is_empty());
    assert_eq!(waiting(store, b1).await, 0);

    // Nobody else moved.
    assert_eq!(pending_all(store, b2).await, b2_before);
    assert!(pending_all(store, a1).await.is_empty(), "a1 sent all of ab");
    assert!(pending_all(store, c1).await.is_empty(), "c1 sent all of bc");
    assert_eq!((waiting(store, a1).await, waiting(store, c1).await), (4, 3));

    // b2 catches up on one conversation only.
    ack(store, b2, bob, vec![(bc, 3)], false).await;
    assert_eq!(
        points(&pending_all(store, b2).await),
        vec![(ab, 1), (ab, 2), (ab, 3), (ab, 4)]
    );
    assert_eq!(waiting(store, b2).await, 4);
}

/// 5c. A refused ack changes nothing.
pub(crate) async fn refused_acks_change_nothing(store: Arc<dyn Store>) {
    // Goal: an ack naming a seq above the conversation's last seq is
    // SeqOutOfRange, a conversation the account is not in NotMember, an
    // unknown one UnknownConversation; an ack of several points with one
    // bad point is refused whole: none of its points moves (no position,
    // no cursor, no purge), whatever the bad point's place in the list.
    // Method: bob (b1) in 1:1s with alice (three texts) and carol (one);
    // b1 acks ab up to 1; then refused acks (all with purge), each
    // followed by a check of b1's pending, waiting, bob's cursors as the
    // others see them and the bodies in history; finally a good ack.
    let store = &*store;
    let Cast(alice, bob, ab, [a1, b1]) = cast(store, ["a1", "b1"]).await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    let ac = direct(store, alice, carol, NOW).await;
    let bc = direct(store, bob, carol, NOW).await;
    for i in 1..=3 {
        send(store, ab, alice, a1, &format!("m{i}")).await;
    }
    send(store, ac, alice, a1, "n1").await;
    send(store, bc, carol, c1, "k1").await;
    ack(store, b1, bob, vec![(ab, 1)], false).await;

    let snapshot = || async {
        (
            pending_all(store, b1).await,
            waiting(store, b1).await,
            cursors(store, alice, ab).await,
            cursors(store, carol, bc).await,
            history_seqs(store, alice, ab).await,
            history_seqs(store, carol, bc).await,
        )
    };
    let before = snapshot().await;
    assert_eq!(before.1, 3);
    assert_eq!(before.2, vec![cursor("bob", 1, 0)]);
    let refusals = [
        (vec![(ab, 4)], StoreError::SeqOutOfRange),
        (vec![(ab, 3), (bc, 2)], StoreError::SeqOutOfRange),
        (vec![(bc, 2), (ab, 3)], StoreError::SeqOutOfRange),
        (vec![(ac, 1)], StoreError::UnknownConversation),
        (vec![(ab, 3), (ac, 1)], StoreError::UnknownConversation),
        (
            vec![(ac, 1), (bc, 1), (ab, 3)],
            StoreError::UnknownConversation,
        ),
        (vec![(NOWHERE, 1)], StoreError::UnknownConversation),
        (vec![(ab, 3), (NOWHERE, 1)], StoreError::UnknownConversation),
        (vec![(NOWHERE, 0), (bc, 1)], StoreError::UnknownConversation),
    ];
    for (points, expected) in refusals {
        let what = format!("ack {points:?}");
        let refused = store.ack(ack_request(b1, bob, points, true)).await;
        assert_eq!(refused, Err(expected), "{what}");
        assert_eq!(snapshot().await, before, "{what} changed something");
    }

    // The store still takes a good ack, up to the last seq exactly.
    let outcome = ack(store, b1, bob, vec![(ab, 3), (bc, 1)], false).await;
    assert_eq!(outcome.positions, sorted(vec![(ab, 3), (bc, 1)]));
    assert!(pending_all(store, b1).await.is_empty());
    assert_eq!(cursors(store, alice, ab).await, vec![cursor("bob", 3, 0)]);
}
