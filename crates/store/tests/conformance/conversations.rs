//! Conversations: history paging, the conversation list, and finding a 1:1
//! conversation without creating it.

use std::sync::Arc;

use missive_core::{AccountId, MessageId};
use missive_store::{ConversationKind, EventKind, Store, StoreError, StoredEvent};

use crate::support::*;

/// 20. History paging.
pub(crate) async fn history_after_shows_events_about_earlier_messages(store: Arc<dyn Store>) {
    // Goal: a forward page (`after`) includes a reaction, edit or delete
    // whose target lies before the page, when the reader saw that
    // target (it was sent after they joined).
    // Method: three texts, then a reaction to the first and an edit of
    // the second; bob pages forward from seq 3.
    let store = &*store;
    let Cast(alice, bob, conv, [a1, _b1]) = cast(store, ["a1", "b1"]).await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(send(store, conv, alice, a1, &format!("t{i}")).await);
    }
    let reaction = react(&sent[0].message_id, Some("👍"));
    append_ok(store, message_with(conv, alice, a1, "r1", reaction, NOW)).await;
    let edited = edit(&sent[1].message_id, "second, edited");
    append_ok(store, message_with(conv, alice, a1, "e1", edited, NOW)).await;
    let page = history_page(store, bob, conv, None, Some(3), ALL)
        .await
        .expect("history");
    assert_eq!(seqs(&page), vec![4, 5]);
}

pub(crate) async fn history_paging(store: Arc<dyn Store>) {
    // Goal: without `after`, history pages newest first strictly below
    // `before` (from the newest when absent); with `after`, oldest first
    // strictly above it; at most `limit` events; every member sees the
    // same events with their stored fields; bodies past retention drop
    // out of history; outsiders are NotMember.
    // Method: alice (a1) and bob (b1), carol outside; ten texts at
    // NOW + 1..=10; page both ways with various bounds; then bob acks
    // everything and a sweep purges the three oldest bodies.
    let store = &*store;
    let people = cast(store, ["a1", "b1"]).await;
    let Cast(alice, bob, conv, [a1, b1]) = people;
    let carol = new_account(store, "carol").await;
    let mut sent = Vec::new();
    for i in 1..=10 {
        sent.push(send_at(store, conv, alice, a1, &format!("m{i}"), NOW + i).await);
    }
    let page = |before, after, limit| async move {
        let events = history_page(store, bob, conv, before, after, limit)
            .await
            .expect("history");
        seqs(&events)
    };
    let cases = [
        (None, None, 3, vec![10, 9, 8]),
        (Some(8), None, 3, vec![7, 6, 5]),
        (Some(3), None, 5, vec![2, 1]),
        (Some(1), None, 5, vec![]),
        (Some(100), None, 2, vec![10, 9]),
        (None, Some(0), 4, vec![1, 2, 3, 4]),
        (None, Some(8), 4, vec![9, 10]),
        (None, Some(10), 4, vec![]),
        (None, Some(-5), 2, vec![1, 2]),
        (None, None, 0, vec![]),
        (None, Some(0), 0, vec![]),
    ];
    for (before, after, limit, expected) in cases {
        assert_eq!(
            page(before, after, limit).await,
            expected,
            "before {before:?}, after {after:?}, limit {limit}"
        );
    }

    stored_alike_for_members_only(store, &people, carol, &sent[4].message_id).await;

    // Retention: past both cutoffs, a body leaves history.
    ack(store, b1, bob, vec![(conv, 10)], false).await;
    assert_eq!(
        sweep(store, NOW + 20, NOW + 4, NOW + 4, LONG_AGO, 100).await,
        swept(3, 0)
    );
    assert_eq!(
        history_seqs(store, bob, conv).await,
        (4..=10).collect::<Vec<_>>()
    );
    assert_eq!(page(Some(6), None, 10).await, vec![5, 4]);
    assert_eq!(page(None, Some(0), 2).await, vec![4, 5]);
}

/// [`history_paging`]: the fifth text (`fifth_id`) with every stored field,
/// both members' histories alike, and carol (an outsider) refused.
async fn stored_alike_for_members_only(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, _]): &Cast<2>,
    carol: AccountId,
    fifth_id: &MessageId,
) {
    let fifth = stored(store, bob, conv, fifth_id).await;
    assert_eq!(
        fifth,
        StoredEvent {
            message_id: fifth_id.clone(),
            conversation: conv,
            seq: 5,
            from: "alice".into(),
            from_device: a1,
            client_msg_id: "m5".into(),
            kind: EventKind::Text,
            body: text_of("m5"),
            media: Vec::new(),
            target: None,
            edited_ms: None,
            deleted: false,
            ts_ms: NOW + 5,
            expires_ms: None,
            reactions: vec![],
        }
    );
    assert_eq!(
        history_all(store, alice, conv).await,
        history_all(store, bob, conv).await
    );
    let outsider = history_page(store, carol, conv, None, None, ALL).await;
    assert_eq!(outsider, Err(StoreError::UnknownConversation));
    let nowhere = history_page(store, alice, NOWHERE, None, None, ALL).await;
    assert_eq!(nowhere, Err(StoreError::UnknownConversation));
}

/// 21. The conversation list.
pub(crate) async fn conversation_list_order(store: Arc<dyn Store>) {
    // Goal: conversations() lists exactly the account's conversations,
    // most recent activity first (its newest event, or its creation while
    // empty), each with kind, name, members (usernames, sorted), last
    // seq, the account's own read pointer, the newest event and the
    // other members' receipt cursors (by username).
    // Method: alice and bob (a direct conversation with texts at
    // NOW + 1, + 2), alice and carol (empty, created at NOW + 3), a group
    // of the three (NOW + 4); then bob writes at NOW + 5, reads and
    // acks; check the lists of all three and of dave, who has none.
    let store = &*store;
    let Cast(alice, bob, ab, [a1, b1]) = cast(store, ["a1", "b1"]).await;
    let carol = new_account(store, "carol").await;
    let dave = new_account(store, "dave").await;
    send_at(store, ab, alice, a1, "m1", NOW + 1).await;
    send_at(store, ab, alice, a1, "m2", NOW + 2).await;
    let ac = direct(store, alice, carol, NOW + 3).await;
    let group = create_group(store, new_group(alice, a1, "team", &[bob, carol], NOW + 4))
        .await
        .conversation;

    assert_eq!(conversation_ids(store, alice).await, vec![group, ac, ab]);
    assert_eq!(conversation_ids(store, bob).await, vec![group, ab]);
    assert_eq!(conversation_ids(store, carol).await, vec![group, ac]);
    assert!(conversation_ids(store, dave).await.is_empty());

    let m3 = send_at(store, ab, bob, b1, "m3", NOW + 5).await;
    read_up_to(store, bob, ab, 2, NOW + 6).await;
    ack(store, b1, bob, vec![(ab, 3)], false).await;
    assert_eq!(conversation_ids(store, alice).await, vec![ab, group, ac]);

    let record = conversation_of(store, alice, ab).await.expect("ab");
    let last = record.last_event.clone().expect("a last event");
    assert_eq!(
        (
            record.kind,
            record.name.as_deref(),
            record.last_seq,
            record.read_seq
        ),
        (ConversationKind::Direct, None, 3, 0)
    );
    assert_eq!(record.members, ["alice", "bob"]);
    assert_eq!(record.receipts, vec![cursor("bob", 3, 2)]);
    assert_eq!(
        (last.message_id, last.seq, last.from.as_str(), last.body),
        (m3.message_id, 3, "bob", text_of("m3"))
    );
    let bobs = conversation_of(store, bob, ab).await.expect("ab");
    assert_eq!(
        (bobs.read_seq, bobs.receipts),
        (2, vec![cursor("alice", 0, 0)])
    );

    let empty = conversation_of(store, carol, ac).await.expect("ac");
    assert_eq!(
        (empty.last_seq, empty.read_seq, empty.last_event),
        (0, 0, None)
    );
    assert_eq!(empty.members, ["alice", "carol"]);
    assert_eq!(empty.receipts, vec![cursor("alice", 0, 0)]);
    let team = conversation_of(store, bob, group).await.expect("group");
    assert_eq!(
        (team.kind, team.name.as_deref(), team.last_seq),
        (ConversationKind::Group, Some("team"), 1)
    );
    assert_eq!(team.members, ["alice", "bob", "carol"]);
    assert_eq!(team.last_event.map(|e| e.kind), Some(EventKind::System));
    assert_eq!(
        team.receipts,
        vec![cursor("alice", 0, 0), cursor("carol", 0, 0)]
    );
}

/// Looking up a 1:1 conversation never creates it.
pub(crate) async fn find_direct(store: Arc<dyn Store>) {
    // Goal: `find_direct_conversation` answers None before the first
    // message between two accounts, in either order, and leaves it so;
    // once `direct_conversation` made it, both orders find that one.
    let (alice, bob) = alice_and_bob(&*store).await;
    for _ in 0..2 {
        assert_eq!(store.find_direct_conversation(alice, bob).await, Ok(None));
        assert_eq!(store.find_direct_conversation(bob, alice).await, Ok(None));
    }
    let made = store
        .direct_conversation(alice, bob, NOW, false)
        .await
        .expect("create");
    assert_eq!(
        store.find_direct_conversation(alice, bob).await,
        Ok(Some(made))
    );
    assert_eq!(
        store.find_direct_conversation(bob, alice).await,
        Ok(Some(made))
    );
}
