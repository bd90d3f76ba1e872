//! What waits for a device: its own events skipped but scanned, pages that
//! continue where `scanned` ends, and where new devices and members start.

use std::sync::Arc;

use missive_core::{DeviceId, MessageId};
use missive_store::{EventKind, GroupChange, Store, StoreError};

use crate::support::Shape::{Ev, Ex};
use crate::support::*;

/// 8c. Own events are skipped but scanned.
pub(crate) async fn own_events_are_skipped_but_scanned(store: Arc<dyn Store>) {
    // Goal: a device is never given its own events, yet they count in
    // `scanned` (so the next page starts past them) and in `waiting`;
    // a long run of own events (longer than any one read chunk) before
    // another member's event does not hide that event; the sender's
    // other devices get them all, page after page.
    // Method: a1 sends 600 texts (from six tasks at once), bob one;
    // read a1's, a2's and b1's pending in pages.
    const OWN: i64 = 600;
    let Cast(alice, bob, conv, [a1, a2, b1]) = cast(&*store, ["a1", "a2", "b1"]).await;
    let tasks: Vec<_> = (0..6)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for k in 0..OWN / 6 {
                    send(&*store, conv, alice, a1, &format!("o{task}-{k}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender task");
    }
    let store = &*store;

    let own_only = pending_page(store, a1, &[], 10, NO_EXPIRY).await;
    assert!(own_only.items.is_empty() && !own_only.more, "{own_only:?}");
    assert_eq!(own_only.scanned, vec![(conv, OWN)]);
    assert_eq!(waiting(store, a1).await, OWN as u64);

    let theirs = send(store, conv, bob, b1, "theirs").await;
    assert_eq!(theirs.seq, OWN + 1);
    let page = pending_page(store, a1, &[], 10, NO_EXPIRY).await;
    assert_eq!(event_ids(&page.items), vec![theirs.message_id.clone()]);
    assert_eq!(
        (page.scanned.clone(), page.more),
        (vec![(conv, OWN + 1)], false)
    );
    // Resuming past the own run, or from inside it, finds the same.
    for after in [OWN, OWN / 2] {
        let again = pending_page(store, a1, &[(conv, after)], 10, NO_EXPIRY).await;
        assert_eq!(event_ids(&again.items), vec![theirs.message_id.clone()]);
    }

    // a2 gets all of alice's texts and bob's, in pages.
    let walked = walk(store, a2, 256, NO_EXPIRY).await;
    assert_eq!(
        points(&walked),
        (1..=OWN + 1).map(|seq| (conv, seq)).collect::<Vec<_>>()
    );
    // b1's own text closes its pages.
    let tail = pending_page(store, b1, &[(conv, OWN)], 10, NO_EXPIRY).await;
    assert!(tail.items.is_empty() && !tail.more);
    assert_eq!(tail.scanned, vec![(conv, OWN + 1)]);
    assert_eq!(
        points(&walk(store, b1, 100, NO_EXPIRY).await).len(),
        OWN as usize
    );

    // a1 acks what it scanned: nothing waits for it any more.
    let outcome = ack(store, a1, alice, page.scanned, false).await;
    assert_eq!(
        outcome,
        acked(
            vec![(conv, OWN + 1)],
            vec![moved(conv, "alice", OWN + 1, ACK_NOW, vec![b1])]
        )
    );
    assert_eq!(waiting(store, a1).await, 0);
    assert!(
        pending_page(store, a1, &[], 10, NO_EXPIRY)
            .await
            .items
            .is_empty()
    );
}

/// 8d. Pages continue where `scanned` ends.
pub(crate) async fn pages_continue_where_scanned_ends(store: Arc<dyn Store>) {
    // Goal: reading what waits in pages of any size, each page passing
    // the `scanned` so far as `after`, yields exactly the one-page
    // answer: no event twice, none missed, whatever mix of expired
    // ranges, own events (skipped) and several conversations it
    // crosses; and reading never moves the stored position.
    // Method: bob (b1, b2) in a 1:1 with alice and a group with alice
    // and carol; texts from everyone (b1's own among them), the first
    // one expired; b1 reads with limits 1..=9.
    let store = &*store;
    let Cast(alice, bob, ab, [a1, b1, b2]) = cast(store, ["a1", "b1", "b2"]).await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    send_at(store, ab, alice, a1, "t1", NOW).await;
    let group = create_group(store, new_group(alice, a1, "team", &[bob, carol], NOW + 5))
        .await
        .conversation;
    let plan = [
        (ab, bob, b1),
        (group, carol, c1),
        (ab, bob, b1),
        (group, bob, b1),
        (ab, alice, a1),
        (group, carol, c1),
        (ab, bob, b2),
        (ab, bob, b1),
        (group, bob, b1),
        (ab, alice, a1),
    ];
    for (k, (conv, account, device)) in plan.into_iter().enumerate() {
        send_at(store, conv, account, device, &format!("p{k}"), NOW + 5).await;
    }
    // ab: t1 (expired), b1, b1, a1 (4), b2 (5), b1, a1 (7).
    // group: created, c1 (2), b1, c1 (4), b1.
    let expected = in_conversation_order(vec![
        (ab, vec![Ex(ab, 1, 1), Ev(ab, 4), Ev(ab, 5), Ev(ab, 7)]),
        (group, vec![Ev(group, 1), Ev(group, 2), Ev(group, 4)]),
    ]);
    let whole = pending_page(store, b1, &[], ALL, NOW + 1).await;
    assert_eq!(shapes(&whole.items), expected);
    assert_eq!(
        sorted(whole.scanned.clone()),
        sorted(vec![(ab, 7), (group, 5)])
    );
    for limit in 1..=9 {
        assert_eq!(
            walk(store, b1, limit, NOW + 1).await,
            whole.items,
            "pages of {limit}"
        );
    }
    assert_eq!(
        pending_page(store, b1, &[], ALL, NOW + 1).await,
        whole,
        "reading moved the position"
    );
    assert_eq!(waiting(store, b1).await, 12);
}

/// 8e. New devices and members start now; departed ones stop.
pub(crate) async fn new_devices_and_members_start_now(store: Arc<dyn Store>) {
    // Goal: a device created later starts at each conversation's last
    // seq; a member added to a group gets events from its `added` on,
    // and never an event about a message from before it joined
    // (reactions, edits: skipped, but scanned); a removed member's
    // devices get events up to its `removed` event and nothing later,
    // may ack up to it and no further, and move no cursor; added again,
    // it gets events from the new `added` on only.
    // Method: the group cast alice (a1), bob (b1), carol (c1), dave
    // (d1) and alice–bob's 1:1; texts; bob's second device; dave added;
    // events about old and new texts; carol removed, then re-added.
    let store = &*store;
    let people = group_cast(store, ["a1", "b1", "c1", "d1"]).await;
    let GroupCast([alice, bob, carol, _], group, [a1, b1, c1, _]) = people;
    let ab = direct(store, alice, bob, NOW).await;
    let t2 = send_at(store, group, alice, a1, "t2", NOW + 2).await;
    send_at(store, ab, alice, a1, "m1", NOW + 2).await;

    // A new device starts at each conversation's last seq.
    let b2 = new_device(store, bob, "b2").await;
    assert!(pending_all(store, b2).await.is_empty());
    assert_eq!(waiting(store, b2).await, 0);
    let t3 = send_at(store, group, alice, a1, "t3", NOW + 3).await;
    send_at(store, ab, alice, a1, "m2", NOW + 3).await;
    assert_eq!(
        points(&pending_all(store, b2).await),
        sorted(vec![(group, 3), (ab, 2)])
    );
    assert_eq!(
        points(&pending_all(store, b1).await),
        sorted(vec![(group, 1), (group, 2), (group, 3), (ab, 1), (ab, 2)])
    );

    let d2 = dave_added_at_4(store, &people, b2, [&t2.message_id, &t3.message_id]).await;
    carol_removed_at_9(store, &people, [b2, d2]).await;

    // Added again at seq 11: from there on only.
    let readded = change(
        store,
        alice,
        a1,
        group,
        GroupChange::Add(vec![carol]),
        NOW + 11,
    )
    .await
    .expect("add carol again");
    assert_eq!(readded.seq, 11);
    assert!(readded.recipients.contains(&c1));
    assert_eq!(pending_summaries(store, c1).await, vec![sys(11, "added")]);
    assert_eq!(history_seqs(store, carol, group).await, vec![11]);
}

/// [`new_devices_and_members_start_now`]: dave is added at seq 4; events
/// about the texts t2 and t3 from before (seqs 6, 7) pass him by, one about
/// t5 (seq 8) reaches him. Returns dave's second device, created after.
async fn dave_added_at_4(
    store: &dyn Store,
    &GroupCast([alice, bob, _, dave], group, [a1, b1, c1, d1]): &GroupCast<4>,
    b2: DeviceId,
    [t2, t3]: [&MessageId; 2],
) -> DeviceId {
    // dave is added at seq 4.
    let added = change(
        store,
        alice,
        a1,
        group,
        GroupChange::Add(vec![dave]),
        NOW + 4,
    )
    .await
    .expect("add dave");
    assert_eq!(added.seq, 4);
    assert_eq!(sorted(added.recipients), sorted(vec![b1, b2, c1, d1]));
    let t5 = send_at(store, group, alice, a1, "t5", NOW + 5).await;
    let about_old = [
        message_with(group, bob, b1, "r6", react(t2, Some("👍")), NOW + 6),
        message_with(group, alice, a1, "e7", edit(t3, "t3, edited"), NOW + 7),
    ];
    for message in about_old {
        let appended = append_ok(store, message).await;
        assert!(
            !appended.recipients.contains(&d1),
            "dave's device is a recipient of seq {}",
            appended.seq
        );
    }
    let r8 = append_ok(
        store,
        message_with(
            group,
            bob,
            b1,
            "r8",
            react(&t5.message_id, Some("❤️")),
            NOW + 8,
        ),
    )
    .await;
    assert_eq!(sorted(r8.recipients), sorted(vec![a1, b2, c1, d1]));
    let page = pending_page(store, d1, &[], ALL, NO_EXPIRY).await;
    assert_eq!(
        item_summaries(&page.items),
        vec![
            sys(4, "added"),
            txt(5, "t5"),
            (8, EventKind::Reaction, "❤️".to_owned())
        ]
    );
    assert_eq!(
        page.scanned,
        vec![(group, 8)],
        "skipped events count in scanned"
    );
    assert_eq!(waiting(store, d1).await, 5);
    let d2 = new_device(store, dave, "d2").await;
    assert!(pending_all(store, d2).await.is_empty());
    d2
}

/// [`new_devices_and_members_start_now`]: carol is removed at seq 9: she
/// gets that event and nothing later, acks up to it and no further.
async fn carol_removed_at_9(
    store: &dyn Store,
    &GroupCast([alice, _, carol, _], group, [a1, b1, c1, d1]): &GroupCast<4>,
    [b2, d2]: [DeviceId; 2],
) {
    // carol is removed at seq 9: she gets that event and nothing later.
    let removed = change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 9)
        .await
        .expect("remove carol");
    assert_eq!(removed.seq, 9);
    assert_eq!(sorted(removed.recipients), sorted(vec![b1, b2, c1, d1, d2]));
    let t10 = send_at(store, group, alice, a1, "t10", NOW + 10).await;
    assert_eq!(sorted(t10.recipients), sorted(vec![b1, b2, d1, d2]));
    let page = pending_page(store, c1, &[], ALL, NO_EXPIRY).await;
    assert_eq!(
        item_summaries(&page.items),
        vec![
            sys(1, "created"),
            txt(2, "t2"),
            (3, EventKind::Text, "t3, edited".to_owned()),
            sys(4, "added"),
            txt(5, "t5"),
            (6, EventKind::Reaction, "👍".to_owned()),
            (7, EventKind::Edit, "t3, edited".to_owned()),
            (8, EventKind::Reaction, "❤️".to_owned()),
            sys(9, "removed"),
        ]
    );
    assert_eq!(page.scanned, vec![(group, 9)]);
    assert_eq!(
        store
            .ack(ack_request(c1, carol, vec![(group, 10)], false))
            .await,
        Err(StoreError::SeqOutOfRange),
        "a departed member acked past its removal"
    );
    let outcome = ack(store, c1, carol, vec![(group, 9)], false).await;
    assert_eq!(
        outcome,
        acked(vec![(group, 9)], vec![]),
        "a departed member has no cursor to move"
    );
    assert!(pending_all(store, c1).await.is_empty());
    let listed: Vec<String> = cursors(store, alice, group)
        .await
        .into_iter()
        .map(|c| c.username)
        .collect();
    assert_eq!(
        listed,
        ["bob", "dave"],
        "a departed member's cursors are listed"
    );
}
