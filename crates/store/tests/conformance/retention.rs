//! Retention: purging bodies by ack (store-and-forward), expiry and the sweep,
//! expired ranges, swept departures, and dedup keys outliving bodies.

use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, UnixMillis};
use missive_store::{GroupChange, PendingItem, Store, StoreError};

use crate::support::Shape::{Ev, Ex};
use crate::support::*;

/// 7. Store-and-forward (retention 0).
pub(crate) async fn store_and_forward(store: Arc<dyn Store>) {
    // Goal: with purge_delivered_bodies, a body is deleted by the ack
    // after which every device of every member has it (the sending
    // device counts as having its own events), and not before; without
    // the flag bodies stay; a purged body leaves history; its
    // client_msg_id still deduplicates.
    // Method: M1 and M2 go from a1 to a2, b1, b2. Devices ack M1 with
    // purge one by one, checking history (which shows bodies only) and
    // what still waits after each; M2 is acked by all without purge.
    let store = &*store;
    let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
    let m1 = send(store, conv, alice, a1, "m1").await;
    let m2 = send(store, conv, alice, a1, "m2").await;
    let m1_id = &m1.message_id;

    ack(store, b1, bob, vec![(conv, 1)], true).await;
    assert_eq!(history_seqs(store, bob, conv).await, vec![1, 2]);
    assert_eq!(pending_event(store, b2, m1_id).await.body, text_of("m1"));
    assert_eq!(pending_event(store, a2, m1_id).await.body, text_of("m1"));

    ack(store, b2, bob, vec![(conv, 1)], true).await;
    assert_eq!(
        history_seqs(store, alice, conv).await,
        vec![1, 2],
        "the body was purged while the sender's other device still waited for it"
    );
    assert_eq!(pending_event(store, a2, m1_id).await.body, text_of("m1"));

    // The last device: a1 sent M1 and never acks, yet it counts as having it.
    ack(store, a2, alice, vec![(conv, 1)], true).await;
    for account in [alice, bob] {
        assert_eq!(
            history_seqs(store, account, conv).await,
            vec![2],
            "M1 outlived the last ack"
        );
    }
    assert_eq!(
        conversation_of(store, bob, conv)
            .await
            .and_then(|r| r.last_event)
            .map(|e| e.seq),
        Some(2)
    );

    // Without the flag the body stays.
    for (device, account) in [(b1, bob), (b2, bob), (a2, alice)] {
        ack(store, device, account, vec![(conv, 2)], false).await;
    }
    assert_eq!(
        stored(store, bob, conv, &m2.message_id).await.body,
        text_of("m2")
    );
    // (a1 is left out: its own M1, purged, may come to it as expired.)
    for device in [a2, b1, b2] {
        assert!(
            pending_all(store, device).await.is_empty(),
            "device {device}"
        );
    }

    // Idempotence outlives the body.
    let retry = send(store, conv, alice, a1, "m1").await;
    assert!(retry.duplicate);
    assert_eq!((&retry.message_id, retry.seq), (m1_id, 1));
    assert_eq!(send(store, conv, alice, a1, "m3").await.seq, 3);
}

/// 7b. Purging by ack waits for every member device, departed ones too.
pub(crate) async fn purge_waits_for_every_member_device(store: Arc<dyn Store>) {
    // Goal: a purging ack deletes exactly the bodies of that
    // conversation that every device of every member (and of one who
    // left, up to its leaving) has, where an event's sending device
    // counts as having it: a device behind holds a body for everyone,
    // and bodies in other conversations are untouched.
    // Method: the group cast alice (a1), bob (b1, b2), carol (c1); a
    // text from b1 and one from a1; alice removes carol (seq 4); devices
    // ack with purge in turn, carol's last; alice–bob's 1:1 holds a text
    // every device has (acked without purge).
    let store = &*store;
    let GroupCast([alice, bob, carol, _], group, [a1, b1, b2, c1]) =
        group_cast(store, ["a1", "b1", "b2", "c1"]).await;
    let ab = direct(store, alice, bob, NOW).await;
    send(store, ab, alice, a1, "elsewhere").await;
    for device in [b1, b2] {
        ack(store, device, bob, vec![(ab, 1)], false).await;
    }
    send_at(store, group, bob, b1, "t2", NOW + 2).await;
    send_at(store, group, alice, a1, "t3", NOW + 3).await;
    let removed = change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 4)
        .await
        .expect("remove carol");
    assert_eq!(removed.seq, 4);

    // b1 and c1 have nothing yet: nothing goes.
    ack(store, b2, bob, vec![(group, 4)], true).await;
    ack(store, a1, alice, vec![(group, 4)], true).await;
    assert_eq!(history_seqs(store, bob, group).await, vec![1, 2, 3, 4]);
    // carol's device passes t2: t2 is everywhere (b1 sent it); the
    // created event is not (b1 waits for it).
    ack(store, c1, carol, vec![(group, 2)], true).await;
    assert_eq!(history_seqs(store, bob, group).await, vec![1, 3, 4]);
    // b1 catches up: only carol's departed device still waits for 3 and 4.
    ack(store, b1, bob, vec![(group, 4)], true).await;
    assert_eq!(
        history_seqs(store, bob, group).await,
        vec![3, 4],
        "purged past the departed member's position"
    );
    ack(store, c1, carol, vec![(group, 4)], true).await;
    assert!(history_seqs(store, bob, group).await.is_empty());
    assert_eq!(
        newest(store, bob, ab).await.body,
        text_of("elsewhere"),
        "a purge reached into another conversation"
    );
}

/// 8. Expiry and sweep.
pub(crate) async fn expiry_and_sweep(store: Arc<dyn Store>) {
    // Goal: sweep deletes the bodies stored before both its retention
    // and its offline-TTL cutoff (a body past retention that a device
    // still waits for stays while it is within the TTL), then, past the
    // dedup window, the rows of deleted bodies (never a row with a
    // body), at most `limit` of each per call, reporting exact counts;
    // purged events leave history, the conversation's last event and
    // come as expired to whoever still waits for them; a client_msg_id
    // is a duplicate until its row is gone.
    // Method: alice (a1) texts bob (b1) at NOW, +10, +20, +30; b1 never
    // acks; sweep step by step with various cutoffs.
    let store = &*store;
    let people = cast(store, ["a1", "b1"]).await;
    let Cast(alice, _, conv, [a1, b1]) = people;
    let append =
        |cmid: &str, now: UnixMillis| store.append_message(new_message(conv, alice, a1, cmid, now));
    let mut ids = Vec::new();
    for (i, at) in [(1, NOW), (2, NOW + 10), (3, NOW + 20), (4, NOW + 30)] {
        let appended = append(&format!("m{i}"), at).await.expect("append");
        ids.push(appended.message_id);
    }

    // Retention and TTL both passed for m1 and m2 only.
    assert_eq!(
        sweep(store, NOW + 40, NOW + 15, NOW + 15, LONG_AGO, 100).await,
        swept(2, 0)
    );
    assert_eq!(history_seqs(store, alice, conv).await, vec![3, 4]);
    assert_eq!(
        shapes(&pending_all(store, b1).await),
        vec![Ex(conv, 1, 2), Ev(conv, 3), Ev(conv, 4)]
    );
    assert_eq!(waiting(store, b1).await, 4, "waiting counts expired events");
    assert_eq!(
        sweep(store, NOW + 40, NOW + 15, NOW + 15, LONG_AGO, 100).await,
        swept(0, 0),
        "a second sweep found the same bodies"
    );
    // Past retention but within the TTL, and b1 waits for it: m3 stays.
    assert_eq!(
        sweep(store, NOW + 40, NOW + 25, NOW + 15, LONG_AGO, 100).await,
        swept(0, 0)
    );
    // Past the TTL but within retention: m3 stays.
    assert_eq!(
        sweep(store, NOW + 40, NOW + 15, NOW + 25, LONG_AGO, 100).await,
        swept(0, 0)
    );
    assert_eq!(pending_event(store, b1, &ids[2]).await.body, text_of("m3"));

    dedup_window(store, &people, &ids).await;
    limits_per_call(store, &people).await;
}

/// [`expiry_and_sweep`], after m1's and m2's bodies went: the dedup window
/// (`ids` are those of m1 to m4).
async fn dedup_window(
    store: &dyn Store,
    &Cast(alice, _, conv, [a1, b1]): &Cast<2>,
    ids: &[MessageId],
) {
    let append =
        |cmid: &str, now: UnixMillis| store.append_message(new_message(conv, alice, a1, cmid, now));
    // The dedup window: rows of purged bodies still deduplicate.
    let retry = append("m1", NOW + 40).await.expect("retry");
    assert!(retry.duplicate);
    assert_eq!((&retry.message_id, retry.seq), (&ids[0], 1));
    // Only m1's row is older than NOW + 5; m3's and m4's have bodies.
    assert_eq!(
        sweep(store, NOW + 40, LONG_AGO, LONG_AGO, NOW + 5, 100).await,
        swept(0, 1)
    );
    assert_eq!(
        sweep(store, NOW + 40, LONG_AGO, LONG_AGO, NOW + 25, 100).await,
        swept(0, 1),
        "m2's row goes; m3 still has its body"
    );
    let reborn = append("m1", NOW + 40).await.expect("after the window");
    assert!(
        !reborn.duplicate,
        "a client_msg_id past the dedup window must be a new message"
    );
    assert_eq!(reborn.seq, 5);
    assert_ne!(reborn.message_id, ids[0]);
    let m3_retry = append("m3", NOW + 40).await.expect("retry");
    assert!(
        m3_retry.duplicate,
        "a row with a body left the dedup window"
    );
    assert_eq!(
        shapes(&pending_all(store, b1).await),
        vec![Ex(conv, 1, 2), Ev(conv, 3), Ev(conv, 4), Ev(conv, 5)],
        "missing rows expire like purged bodies"
    );
}

/// [`expiry_and_sweep`], with seqs 1..=5 sent: three more texts, then
/// sweeps with small limits until nothing is left.
async fn limits_per_call(store: &dyn Store, &Cast(alice, bob, conv, [a1, b1]): &Cast<2>) {
    let append =
        |cmid: &str, now: UnixMillis| store.append_message(new_message(conv, alice, a1, cmid, now));
    // `limit` bounds each kind of deletion per call.
    for i in 6..=8 {
        append(&format!("m{i}"), NOW + 40 + i)
            .await
            .expect("append");
    }
    // Bodies of m3, m4, m1 again, m6, m7, m8: six.
    for (call, expected) in [2, 2, 2, 0].into_iter().enumerate() {
        let outcome = sweep(store, NOW + 60, NOW + 50, NOW + 50, LONG_AGO, 2).await;
        assert_eq!(outcome, swept(expected, 0), "bodies, call {call}");
    }
    // Their rows: six, and no row with a body is left.
    for (call, expected) in [4, 2, 0].into_iter().enumerate() {
        let outcome = sweep(store, NOW + 60, LONG_AGO, LONG_AGO, NOW + 50, 4).await;
        assert_eq!(outcome, swept(0, expected), "rows, call {call}");
    }
    assert!(history_all(store, bob, conv).await.is_empty());
    let record = conversation_of(store, bob, conv).await.expect("listed");
    assert_eq!((record.last_seq, record.last_event), (8, None));
    assert_eq!(shapes(&pending_all(store, b1).await), vec![Ex(conv, 1, 8)]);
    assert_eq!(waiting(store, b1).await, 8);
    ack(store, b1, bob, vec![(conv, 8)], false).await;
    assert!(pending_all(store, b1).await.is_empty());
    assert_eq!(waiting(store, b1).await, 0);
    assert_eq!(send(store, conv, alice, a1, "m9").await.seq, 9);
}

/// 8b. Expired events come as one range in their place.
pub(crate) async fn expired_events_come_as_one_range(store: Arc<dyn Store>) {
    // Goal: events stored before `expired_before_ms`, events whose body
    // is gone and seqs whose row is gone come, per conversation, as one
    // `Expired` range in their place (before the next delivered event,
    // or at the end of the scan), followed by the later events in
    // order; acking a range's `to_seq` moves past it; paging never
    // splits, repeats or drops anything.
    // Method: bob (b1) gets four texts from alice at NOW, +10, +20, +30
    // and two from carol at NOW, +30; read with various
    // `expired_before_ms`; then purge the oldest bodies and rows by
    // sweep and read again.
    let store = &*store;
    let Cast(alice, bob, ab, [a1, b1]) = cast(store, ["a1", "b1"]).await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    let bc = direct(store, bob, carol, NOW).await;
    for (i, at) in [(1, NOW), (2, NOW + 10), (3, NOW + 20), (4, NOW + 30)] {
        send_at(store, ab, alice, a1, &format!("m{i}"), at).await;
    }
    send_at(store, bc, carol, c1, "n1", NOW).await;
    send_at(store, bc, carol, c1, "n2", NOW + 30).await;
    let at = |expired_before_ms| async move {
        let page = pending_page(store, b1, &[], ALL, expired_before_ms).await;
        assert!(!page.more);
        (shapes(&page.items), sorted(page.scanned))
    };
    let scanned_all = sorted(vec![(ab, 4), (bc, 2)]);
    let cases = [
        (
            NO_EXPIRY,
            vec![Ev(ab, 1), Ev(ab, 2), Ev(ab, 3), Ev(ab, 4)],
            vec![Ev(bc, 1), Ev(bc, 2)],
        ),
        (
            NOW,
            vec![Ev(ab, 1), Ev(ab, 2), Ev(ab, 3), Ev(ab, 4)],
            vec![Ev(bc, 1), Ev(bc, 2)],
        ),
        (
            NOW + 1,
            vec![Ex(ab, 1, 1), Ev(ab, 2), Ev(ab, 3), Ev(ab, 4)],
            vec![Ex(bc, 1, 1), Ev(bc, 2)],
        ),
        (
            NOW + 21,
            vec![Ex(ab, 1, 3), Ev(ab, 4)],
            vec![Ex(bc, 1, 1), Ev(bc, 2)],
        ),
        (NOW + 31, vec![Ex(ab, 1, 4)], vec![Ex(bc, 1, 2)]),
    ];
    for (expired_before_ms, in_ab, in_bc) in cases {
        let expected = in_conversation_order(vec![(ab, in_ab), (bc, in_bc)]);
        assert_eq!(
            at(expired_before_ms).await,
            (expected, scanned_all.clone()),
            "expired before {expired_before_ms}"
        );
    }
    ranges_page_whole(store, b1, ab).await;
    gone_and_acked(store, (bob, b1), ab, bc).await;
}

/// [`expired_events_come_as_one_range`]: at `NOW + 21`, the event after a
/// range comes whole, and pages of any size give the same items.
async fn ranges_page_whole(store: &dyn Store, b1: DeviceId, ab: ConversationId) {
    // The event after a range is the whole event.
    let page = pending_page(store, b1, &[], ALL, NOW + 21).await;
    let after_range = page
        .items
        .iter()
        .find_map(|item| match item {
            PendingItem::Event(event) if event.conversation == ab => Some(event.clone()),
            _ => None,
        })
        .expect("an event of ab");
    assert_eq!((after_range.seq, after_range.body), (4, text_of("m4")));
    for limit in 1..=4 {
        assert_eq!(
            walk(store, b1, limit, NOW + 21).await,
            page.items,
            "pages of {limit}"
        );
    }
    assert_eq!(waiting(store, b1).await, 6);
}

/// [`expired_events_come_as_one_range`]: sweeps take bodies and rows, which
/// join the ranges; then an ack of a range's end.
async fn gone_and_acked(
    store: &dyn Store,
    (bob, b1): (AccountId, DeviceId),
    ab: ConversationId,
    bc: ConversationId,
) {
    let at = |expired_before_ms| async move {
        let page = pending_page(store, b1, &[], ALL, expired_before_ms).await;
        assert!(!page.more);
        (shapes(&page.items), sorted(page.scanned))
    };
    // Bodies and rows gone: m1's row, m2's body, n1's row.
    assert_eq!(
        sweep(store, NOW + 40, NOW + 15, NOW + 15, LONG_AGO, 100).await,
        swept(3, 0)
    );
    assert_eq!(
        sweep(store, NOW + 40, LONG_AGO, LONG_AGO, NOW + 5, 100).await,
        swept(0, 2)
    );
    assert_eq!(
        at(NO_EXPIRY).await.0,
        in_conversation_order(vec![
            (ab, vec![Ex(ab, 1, 2), Ev(ab, 3), Ev(ab, 4)]),
            (bc, vec![Ex(bc, 1, 1), Ev(bc, 2)]),
        ]),
        "a missing row and a purged body"
    );
    assert_eq!(
        at(NOW + 21).await.0,
        in_conversation_order(vec![
            (ab, vec![Ex(ab, 1, 3), Ev(ab, 4)]),
            (bc, vec![Ex(bc, 1, 1), Ev(bc, 2)]),
        ]),
        "a missing row, a purged body and an old event: one range"
    );

    // Acking a range's end moves past it.
    ack(store, b1, bob, vec![(ab, 2), (bc, 1)], false).await;
    assert_eq!(
        at(NO_EXPIRY).await.0,
        in_conversation_order(vec![
            (ab, vec![Ev(ab, 3), Ev(ab, 4)]),
            (bc, vec![Ev(bc, 2)]),
        ])
    );
    assert_eq!(
        at(NOW + 21).await.0,
        in_conversation_order(vec![
            (ab, vec![Ex(ab, 3, 3), Ev(ab, 4)]),
            (bc, vec![Ev(bc, 2)]),
        ]),
        "a range starts above the position"
    );
}

/// 8f. A departure ends with the sweep.
pub(crate) async fn swept_departures_end_delivery(store: Arc<dyn Store>) {
    // Goal: a removed member's devices get events up to its removal
    // until the sweep's offline TTL passes the removal; then the
    // conversation is not theirs at all (nothing waits, acks are
    // NotMember).
    // Method: the group cast alice (a1), bob (b1), carol (c1); alice
    // removes bob at NOW + 3; sweeps with the TTL cutoff at and after it.
    let store = &*store;
    let GroupCast([alice, bob, _, _], group, [a1, b1, _c1]) =
        group_cast(store, ["a1", "b1", "c1"]).await;
    send_at(store, group, alice, a1, "t2", NOW + 2).await;
    change(store, alice, a1, group, GroupChange::Remove(bob), NOW + 3)
        .await
        .expect("remove bob");
    send_at(store, group, alice, a1, "t4", NOW + 4).await;
    let departed = vec![sys(1, "created"), txt(2, "t2"), sys(3, "removed")];
    assert_eq!(pending_summaries(store, b1).await, departed);

    assert_eq!(
        sweep(store, NOW + 10, LONG_AGO, NOW + 3, LONG_AGO, 100).await,
        swept(0, 0)
    );
    assert_eq!(
        pending_summaries(store, b1).await,
        departed,
        "the departure went before its TTL"
    );
    sweep(store, NOW + 10, LONG_AGO, NOW + 4, LONG_AGO, 100).await;
    assert!(pending_all(store, b1).await.is_empty());
    assert_eq!(
        store
            .ack(ack_request(b1, bob, vec![(group, 1)], false))
            .await,
        Err(StoreError::UnknownConversation)
    );
}

/// 8g. The dedup key outlives the body.
pub(crate) async fn dedup_survives_purged_body(store: Arc<dyn Store>) {
    // Goal: a retry of a client_msg_id whose body was purged (by a
    // purging ack) is still a duplicate with the original's id, seq and
    // time, until a sweep's dedup window passes that row; rows that
    // still have a body are never taken by the dedup sweep.
    // Method: alice (a1) sends m1 and m2 to bob (b1); b1 acks m1 with
    // purge; retries; a dedup sweep; retries again.
    let store = &*store;
    let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;
    let m1 = send_at(store, conv, alice, a1, "m1", NOW).await;
    let m2 = send_at(store, conv, alice, a1, "m2", NOW).await;
    ack(store, b1, bob, vec![(conv, 1)], true).await;
    assert_eq!(
        history_seqs(store, alice, conv).await,
        vec![2],
        "m1 was not purged"
    );

    let retry = send_at(store, conv, alice, a1, "m1", NOW + 50).await;
    assert!(retry.duplicate, "a purged body's retry was stored again");
    assert_eq!(
        (&retry.message_id, retry.seq, retry.ts_ms),
        (&m1.message_id, 1, NOW)
    );
    assert!(retry.recipients.is_empty());
    assert_eq!(history_seqs(store, alice, conv).await, vec![2]);

    assert_eq!(
        sweep(store, NOW + 60, LONG_AGO, LONG_AGO, NOW + 1, 100).await,
        swept(0, 1),
        "the dedup sweep takes exactly m1's row"
    );
    let m2_retry = send_at(store, conv, alice, a1, "m2", NOW + 60).await;
    assert!(m2_retry.duplicate);
    assert_eq!(m2_retry.message_id, m2.message_id);
    let reborn = send_at(store, conv, alice, a1, "m1", NOW + 60).await;
    assert_new(&reborn, 3);
}
