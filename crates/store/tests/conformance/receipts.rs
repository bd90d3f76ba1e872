//! Receipts: the delivered cursor, the read pointer, `receipts()` and who is
//! told when a cursor moves.

use std::sync::Arc;

use missive_core::{AccountId, MessageId, Seq, UnixMillis};
use missive_store::{GroupChange, NewGroup, ReadOutcome, ReadRequest, Store, StoreError};

use crate::support::*;

/// 5d. The delivered cursor.
pub(crate) async fn delivered_cursor_moves_on_first_ack(store: Arc<dyn Store>) {
    // Goal: the first ack past a seq by any device of a member moves
    // that member's delivered cursor (delivered_seq, with the ack's
    // time) and the ack's outcome says so, naming the devices to tell:
    // those of the other current members who authored a text in the
    // newly covered range (never the acking account's); another device
    // of the same member acking lower, or as far, moves nothing.
    // Method: the group cast alice (a1, a2), bob (b1, b2), carol (c1);
    // alice sends two texts, bob's devices ack in turn, carol sends one,
    // bob and alice ack past it.
    let store = &*store;
    let GroupCast([alice, bob, carol, _], group, [a1, a2, b1, b2, c1]) =
        group_cast(store, ["a1", "a2", "b1", "b2", "c1"]).await;
    let t2 = send_at(store, group, alice, a1, "t2", NOW + 2).await;
    send_at(store, group, alice, a1, "t3", NOW + 3).await;

    let outcome = ack_at(store, b1, bob, vec![(group, 3)], NOW + 10).await;
    assert_eq!(
        outcome,
        acked(
            vec![(group, 3)],
            vec![moved(group, "bob", 3, NOW + 10, vec![a1, a2])]
        ),
        "alice's devices are told, bob's and carol's are not"
    );
    assert_eq!(
        cursors(store, alice, group).await,
        vec![cursor("bob", 3, 0), cursor("carol", 0, 0)]
    );
    assert_eq!(
        cursors(store, carol, group).await,
        vec![cursor("alice", 0, 0), cursor("bob", 3, 0)]
    );

    // bob's second device, lower and then as far: nothing moves.
    for (seq, now_ms) in [(2, NOW + 11), (3, NOW + 12)] {
        let outcome = ack_at(store, b2, bob, vec![(group, seq)], now_ms).await;
        assert_eq!(outcome, acked(vec![(group, seq)], vec![]), "b2 acks {seq}");
    }
    assert_eq!(cursors(store, alice, group).await[0], cursor("bob", 3, 0));
    let record = store
        .receipts(alice, group, &t2.message_id)
        .await
        .expect("receipts");
    assert_eq!(
        record.delivered,
        stamped([("bob", NOW + 10)]),
        "a lower ack moved the cursor's time"
    );

    // carol's text: bob passing it tells carol only.
    send_at(store, group, carol, c1, "t4", NOW + 4).await;
    let outcome = ack_at(store, b2, bob, vec![(group, 4)], NOW + 13).await;
    assert_eq!(
        outcome,
        acked(
            vec![(group, 4)],
            vec![moved(group, "bob", 4, NOW + 13, vec![c1])]
        )
    );
    // alice's first ack covers only her own texts and carol's.
    let outcome = ack_at(store, a2, alice, vec![(group, 4)], NOW + 14).await;
    assert_eq!(
        outcome,
        acked(
            vec![(group, 4)],
            vec![moved(group, "alice", 4, NOW + 14, vec![c1])]
        )
    );
    assert_eq!(
        cursors(store, carol, group).await,
        vec![cursor("alice", 4, 0), cursor("bob", 4, 0)]
    );
    assert_eq!(
        cursors(store, bob, group).await,
        vec![cursor("alice", 4, 0), cursor("carol", 0, 0)]
    );
}

/// 6. Read pointer.
pub(crate) async fn mark_read(store: Arc<dyn Store>) {
    // Goal: the read pointer only moves forward and is clamped to the
    // last seq; each move is reported as `moved`, naming the devices of
    // the other members who authored a text in the newly read range
    // (never the reader's); no move reports nothing; the cursors and the
    // unread count (other members' texts only) show in `conversations()`;
    // outsiders are refused.
    // Method: three texts a→b, then a series of mark_read calls by bob
    // (forward, backward, repeat, beyond the end) and by alice.
    let store = &*store;
    let people = cast(store, ["a1", "a2", "b1", "b2"]).await;
    let Cast(alice, bob, conv, [a1, a2, _, _]) = people;
    let carol = new_account(store, "carol").await;
    let _c1 = new_device(store, carol, "c1").await;
    for i in 1..=3 {
        send(store, conv, alice, a1, &format!("m{i}")).await;
    }
    let mark = move |account, seq: Seq, now_ms| async move {
        read_up_to(store, account, conv, seq, now_ms).await
    };
    let moved_to = |by: &str, seq, ts, notify| ReadOutcome {
        seq,
        moved: Some(moved(conv, by, seq, ts, notify)),
    };

    assert_eq!(
        mark(bob, 2, NOW + 10).await,
        moved_to("bob", 2, NOW + 10, vec![a1, a2])
    );

    // Backwards and repeated: no move, nothing to tell.
    for seq in [1, 2, 0, -5] {
        let outcome = mark(bob, seq, NOW + 11).await;
        assert_eq!(
            outcome,
            ReadOutcome {
                seq: 2,
                moved: None
            },
            "mark_read({seq})"
        );
    }

    // Beyond the end: clamped to the last seq; then no further move.
    assert_eq!(
        mark(bob, 100, NOW + 12).await,
        moved_to("bob", 3, NOW + 12, vec![a1, a2])
    );
    assert_eq!(
        mark(bob, 100, NOW + 13).await,
        ReadOutcome {
            seq: 3,
            moved: None
        }
    );
    assert_eq!(cursors(store, alice, conv).await, vec![cursor("bob", 0, 3)]);

    // Each member has their own pointer; alice read only her own text.
    assert_eq!(
        mark(alice, 1, NOW + 14).await,
        moved_to("alice", 1, NOW + 14, vec![])
    );
    assert_eq!(cursors(store, bob, conv).await, vec![cursor("alice", 0, 1)]);

    bob_writes_and_outsiders_are_refused(store, &people, carol).await;
}

/// [`mark_read`], once bob read everything and alice her own text: bob's
/// text, who is told of reads past it, and carol (an outsider) refused.
async fn bob_writes_and_outsiders_are_refused(
    store: &dyn Store,
    &Cast(alice, bob, conv, [_, _, b1, b2]): &Cast<4>,
    carol: AccountId,
) {
    let read = move |account, seq: Seq, now_ms: UnixMillis| ReadRequest {
        account,
        conversation: conv,
        seq,
        now_ms,
    };
    let mark = move |account, seq: Seq, now_ms| async move {
        read_up_to(store, account, conv, seq, now_ms).await
    };
    let moved_to = |by: &str, seq, ts, notify| ReadOutcome {
        seq,
        moved: Some(moved(conv, by, seq, ts, notify)),
    };

    // A text of bob's: alice reading past it tells bob's devices; bob
    // reading past it (his own) tells nobody.
    send(store, conv, bob, b1, "m4").await;
    // Unread counts other members' texts above the reader's pointer:
    // alice's own m2, m3 are not unread for her, bob's m4 is; bob has
    // nothing unread (m4 is his own).
    let unread = |account| async move {
        conversation_of(store, account, conv)
            .await
            .map(|record| record.unread)
    };
    assert_eq!(unread(alice).await, Some(1));
    assert_eq!(unread(bob).await, Some(0));
    assert_eq!(
        mark(alice, 4, NOW + 15).await,
        moved_to("alice", 4, NOW + 15, vec![b1, b2])
    );
    assert_eq!(
        mark(bob, 100, NOW + 16).await,
        moved_to("bob", 4, NOW + 16, vec![])
    );
    assert_eq!(cursors(store, alice, conv).await, vec![cursor("bob", 0, 4)]);
    assert_eq!(cursors(store, bob, conv).await, vec![cursor("alice", 0, 4)]);
    assert_eq!(
        conversation_of(store, bob, conv).await.map(|r| r.read_seq),
        Some(4)
    );

    // Outsiders and unknown conversations are refused.
    assert_eq!(
        store.mark_read(read(carol, 1, NOW)).await,
        Err(StoreError::UnknownConversation)
    );
    let nowhere = ReadRequest {
        conversation: NOWHERE,
        ..read(bob, 1, NOW)
    };
    assert_eq!(
        store.mark_read(nowhere).await,
        Err(StoreError::UnknownConversation)
    );
    assert_eq!(cursors(store, alice, conv).await, vec![cursor("bob", 0, 4)]);
}

/// 19. Receipts.
pub(crate) async fn receipts(store: Arc<dyn Store>) {
    // Goal: `receipts()` ("message info") lists, for any member, the
    // other members whose delivered cursor covers the text (with the
    // time that cursor last moved) and those whose read pointer covers
    // it (pointer time), never the author; acking past only non-texts
    // moves a cursor but tells nobody; it is UnknownMessage for anything
    // but a text of this conversation and NotMember /
    // UnknownConversation as usual.
    // Method: the group cast alice (a1), bob (b1, b2), carol (c1); dave
    // outside. alice sends M, bob reacts; bob's devices and carol ack in
    // steps at distinct times; reads move; check outcomes and receipts.
    let store = &*store;
    let people = group_cast(store, ["a1", "b1", "b2", "c1"]).await;
    let GroupCast([alice, bob, carol, _], group, [a1, b1, b2, c1]) = people;
    let m = send_at(store, group, alice, a1, "m", NOW + 2).await;
    let id = &m.message_id;
    let reaction = append_ok(
        store,
        message_with(group, bob, b1, "r", react(id, Some("👍")), NOW + 3),
    )
    .await;
    let receipts_of = |account| async move {
        let mut record = store.receipts(account, group, id).await.expect("receipts");
        record.delivered.sort();
        record.read.sort();
        record
    };

    // b1 passes M: alice is told.
    let outcome = ack_at(store, b1, bob, vec![(group, 2)], NOW + 10).await;
    assert_eq!(
        outcome.receipts,
        vec![moved(group, "bob", 2, NOW + 10, vec![a1])]
    );
    // carol passes only the created event: her cursor moves, nobody is told.
    let outcome = ack_at(store, c1, carol, vec![(group, 1)], NOW + 11).await;
    assert_eq!(
        outcome.receipts,
        vec![moved(group, "carol", 1, NOW + 11, vec![])]
    );
    assert_eq!(
        receipts_of(alice).await.delivered,
        stamped([("bob", NOW + 10)])
    );

    // carol passes M and bob's reaction: alice is told (not bob: a reaction is no text).
    let outcome = ack_at(store, c1, carol, vec![(group, 3)], NOW + 12).await;
    assert_eq!(
        outcome.receipts,
        vec![moved(group, "carol", 3, NOW + 12, vec![a1])]
    );
    // b2 lower than bob's cursor: nothing; then past his own reaction: a move, nobody told.
    let outcome = ack_at(store, b2, bob, vec![(group, 1)], NOW + 13).await;
    assert!(outcome.receipts.is_empty());
    let outcome = ack_at(store, b2, bob, vec![(group, 3)], NOW + 14).await;
    assert_eq!(
        outcome.receipts,
        vec![moved(group, "bob", 3, NOW + 14, vec![])]
    );

    let record = receipts_of(alice).await;
    assert_eq!((&record.message_id, record.seq), (id, 2));
    assert_eq!(
        record.delivered,
        stamped([("bob", NOW + 14), ("carol", NOW + 12)]),
        "delivered times are when each cursor last moved"
    );
    assert!(record.read.is_empty());

    reads_cover_m(store, &people, id).await;
    receipts_refused(store, &people, id, &reaction.message_id).await;
}

/// [`receipts`], once every member's delivered cursor passed the text `id`
/// (M): read pointers covering it, the author's never.
async fn reads_cover_m(
    store: &dyn Store,
    &GroupCast([alice, bob, carol, _], group, _): &GroupCast<4>,
    id: &MessageId,
) {
    let receipts_of = |account| async move {
        let mut record = store.receipts(account, group, id).await.expect("receipts");
        record.delivered.sort();
        record.read.sort();
        record
    };
    // Reads: pointers covering M; the author never.
    read_up_to(store, bob, group, 2, NOW + 20).await;
    read_up_to(store, carol, group, 1, NOW + 21).await;
    read_up_to(store, alice, group, 3, NOW + 22).await;
    assert_eq!(receipts_of(carol).await.read, stamped([("bob", NOW + 20)]));
    read_up_to(store, carol, group, 3, NOW + 23).await;
    let record = receipts_of(bob).await;
    assert_eq!(
        record.read,
        stamped([("bob", NOW + 20), ("carol", NOW + 23)])
    );
    assert_eq!(
        record,
        receipts_of(alice).await,
        "members see the same record"
    );
    assert_eq!(
        cursors(store, alice, group).await,
        vec![cursor("bob", 3, 2), cursor("carol", 3, 3)]
    );
}

/// [`receipts`]: the receipts of anything but the text `id` of the group
/// (`reaction` is bob's reaction to it), or asked by an outsider.
async fn receipts_refused(
    store: &dyn Store,
    &GroupCast([alice, bob, _, dave], group, _): &GroupCast<4>,
    id: &MessageId,
    reaction: &MessageId,
) {
    // Refusals.
    let system_id = history_all(store, alice, group).await[0].message_id.clone();
    for not_a_text in [MessageId::generate(), reaction.clone(), system_id] {
        let refused = store.receipts(alice, group, &not_a_text).await;
        assert_eq!(refused, Err(StoreError::UnknownMessage));
    }
    let direct_ab = direct(store, alice, bob, NOW).await;
    assert_eq!(
        store.receipts(alice, direct_ab, id).await,
        Err(StoreError::UnknownMessage),
        "a text of another conversation"
    );
    assert_eq!(
        store.receipts(dave, group, id).await,
        Err(StoreError::UnknownConversation)
    );
    assert_eq!(
        store.receipts(alice, NOWHERE, id).await,
        Err(StoreError::UnknownConversation)
    );
}

/// 26. A removed member gets no receipts.
pub(crate) async fn removed_member_gets_no_receipts(store: Arc<dyn Store>) {
    // Goal: a removed member receives the `removed` event and nothing
    // after it, receipts included: a recipient acking past a text the
    // member sent before its removal tells none of the removed member's
    // devices (the cursor still covers the text in receipts()).
    // Method: the group cast alice (a1), bob (b1), carol (c1); carol
    // sends a text, alice removes carol, bob acks past both; what waits
    // for carol must still end with the removal.
    let store = &*store;
    let GroupCast([alice, bob, carol, _], group, [a1, b1, c1]) =
        group_cast(store, ["a1", "b1", "c1"]).await;
    let sent = send_at(store, group, carol, c1, "bye", NOW + 1).await;
    change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 2)
        .await
        .expect("remove carol");
    let before = pending_all(store, c1).await;
    assert_eq!(item_summaries(&before).last(), Some(&sys(3, "removed")));

    let outcome = ack(store, b1, bob, vec![(group, 3)], false).await;
    assert_eq!(
        outcome,
        acked(
            vec![(group, 3)],
            vec![moved(group, "bob", 3, ACK_NOW, vec![])]
        ),
        "the removed author's devices were told"
    );
    assert_eq!(pending_all(store, c1).await, before);
    let record = store.receipts(alice, group, &sent.message_id).await;
    assert_eq!(record.map(|r| r.delivered), Ok(stamped([("bob", ACK_NOW)])));
    assert_eq!(
        read_up_to(store, bob, group, 3, NOW + 9).await,
        ReadOutcome {
            seq: 3,
            moved: Some(moved(group, "bob", 3, NOW + 9, vec![]))
        }
    );
}

/// 27. Read receipts name recipients only.
pub(crate) async fn receipt_moves_tell_the_authors_of_texts_in_the_range(store: Arc<dyn Store>) {
    // Goal: a delivered cursor moving over a range tells the devices of
    // exactly the other members who wrote a text in that range (every
    // device of theirs, none of the reader's or of silent members), in
    // a small group and in a large one alike.
    // Method: groups of 4 and of 12; the creator and the second member
    // write texts (the second from both of its devices), the third
    // member writes only before the range; the last member acks.
    let store = &*store;
    for (size, tag) in [(4usize, "s"), (12, "l")] {
        authors_told_in_a_group_of(store, size, tag).await;
    }
}

/// [`receipt_moves_tell_the_authors_of_texts_in_the_range`] in a group of
/// `size` whose names start with `tag`.
async fn authors_told_in_a_group_of(store: &dyn Store, size: usize, tag: &str) {
    let mut members = Vec::new();
    for i in 0..size {
        members
            .push(account_with_device(store, &format!("{tag}m{i}"), &format!("{tag}d{i}")).await);
    }
    let second_phone = new_device(store, members[1].0, &format!("{tag}d1b")).await;
    let others: Vec<AccountId> = members[1..].iter().map(|(account, _)| *account).collect();
    let (creator, creator_device) = members[0];
    let group = NewGroup {
        members_max: 16,
        ..new_group(creator, creator_device, "team", &others, NOW)
    };
    let group = create_group(store, group).await.conversation;
    let (third, third_device) = members[2];
    let before = send_at(
        store,
        group,
        third,
        third_device,
        &format!("{tag}b"),
        NOW + 1,
    )
    .await;
    send_at(
        store,
        group,
        creator,
        creator_device,
        &format!("{tag}x"),
        NOW + 2,
    )
    .await;
    send_at(
        store,
        group,
        members[1].0,
        second_phone,
        &format!("{tag}y"),
        NOW + 3,
    )
    .await;
    let last = send_at(
        store,
        group,
        members[1].0,
        members[1].1,
        &format!("{tag}z"),
        NOW + 4,
    )
    .await;
    let (reader, reader_device) = members[size - 1];
    ack_at(
        store,
        reader_device,
        reader,
        vec![(group, before.seq)],
        NOW + 5,
    )
    .await;
    let outcome = ack_at(
        store,
        reader_device,
        reader,
        vec![(group, last.seq)],
        NOW + 6,
    )
    .await;
    assert_eq!(outcome.receipts.len(), 1, "group of {size}");
    assert_eq!(
        outcome.receipts[0].notify,
        sorted(vec![creator_device, members[1].1, second_phone]),
        "group of {size}"
    );
}

pub(crate) async fn read_receipts_name_recipients_only(store: Arc<dyn Store>) {
    // Goal: `receipts()` lists members whose cursors cover the text; a
    // member added after the text was sent was never its recipient (it
    // is neither pending for it nor in its history), so its cursors
    // moving past the text do not list it.
    // Method: the group cast alice (a1), bob (b1), carol (c1); alice
    // sends M, then adds dave, who acks and reads up to the newest seq;
    // bob too. M's lists must name bob only.
    let store = &*store;
    let GroupCast([alice, bob, _, dave], group, [a1, b1, _c1, d1]) =
        group_cast(store, ["a1", "b1", "c1", "d1"]).await;
    let m = send_at(store, group, alice, a1, "m", NOW + 1).await;
    change(
        store,
        alice,
        a1,
        group,
        GroupChange::Add(vec![dave]),
        NOW + 2,
    )
    .await
    .expect("add dave");
    assert!(
        !history_seqs(store, dave, group).await.contains(&m.seq),
        "dave was never shown M"
    );
    assert_eq!(pending_summaries(store, d1).await, vec![sys(3, "added")]);
    ack_at(store, d1, dave, vec![(group, 3)], NOW + 3).await;
    ack_at(store, b1, bob, vec![(group, 3)], NOW + 4).await;
    read_up_to(store, dave, group, 3, NOW + 3).await;
    read_up_to(store, bob, group, 3, NOW + 4).await;
    let record = store
        .receipts(alice, group, &m.message_id)
        .await
        .expect("receipts");
    assert_eq!(record.delivered, stamped([("bob", NOW + 4)]));
    assert_eq!(record.read, stamped([("bob", NOW + 4)]));
}
