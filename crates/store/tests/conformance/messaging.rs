//! Message kinds that refer to a text: replies, reactions, edits and deletes.

use std::sync::Arc;

use missive_core::{MessageId, Seq};
use missive_store::{EventKind, Store, StoreError};

use crate::support::Shape::Ev;
use crate::support::*;

/// 15. Replies.
pub(crate) async fn replies(store: Arc<dyn Store>) {
    // Goal: a reply names a text of the same conversation and carries it
    // as its target (pending and history); naming an unknown message, a
    // text of another conversation or an event that is not a text is
    // UnknownMessage and stores nothing: no seq, nothing pending, no
    // idempotency record (the same client_msg_id then succeeds).
    // Method: alice (a1), bob (b1), carol (c1); a text in alice–bob, one
    // in alice–carol, a reaction in alice–bob; three refused replies
    // with one client_msg_id, then that id for an accepted reply.
    let store = &*store;
    let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;
    let (carol, c1) = account_with_device(store, "carol", "c1").await;
    let elsewhere = direct(store, alice, carol, NOW).await;
    let m1 = send_at(store, conv, alice, a1, "m1", NOW + 1).await;
    let other = send_at(store, elsewhere, carol, c1, "other", NOW + 1).await;
    let reaction = append_ok(
        store,
        message_with(
            conv,
            bob,
            b1,
            "r",
            react(&m1.message_id, Some("👍")),
            NOW + 2,
        ),
    )
    .await;
    assert_eq!(reaction.seq, 2);

    let reply_to =
        |to: &MessageId| message_with(conv, bob, b1, "re", reply("a reply", to), NOW + 3);
    for bad in [MessageId::generate(), other.message_id, reaction.message_id] {
        assert_refused(store, reply_to(&bad), StoreError::UnknownMessage, &[a1]).await;
    }
    let replied = store
        .append_message(reply_to(&m1.message_id))
        .await
        .expect("reply");
    assert_new(&replied, 3);
    let event = stored(store, alice, conv, &replied.message_id).await;
    assert_eq!(
        (event.kind, event.body.as_str(), event.target),
        (EventKind::Text, "a reply", Some(m1.message_id.clone()))
    );
    let waiting_reply = pending_event(store, a1, &replied.message_id).await;
    assert_eq!(
        (waiting_reply.kind, waiting_reply.target),
        (EventKind::Text, Some(m1.message_id))
    );
}

/// 16. Reactions.
pub(crate) async fn reactions(store: Arc<dyn Store>) {
    // Goal: one reaction per member per text, replaced by a new emoji and
    // removed by `None`, shown in the text's `reactions` sorted by
    // username; every reaction is its own event (kind Reaction, body the
    // emoji or "" when removed, target the text, no reactions of its
    // own); the target must be a text of the conversation
    // (UnknownMessage) that is not deleted (MessageDeleted); refusals
    // store nothing.
    // Method: alice (a1) and bob (b1); bob reacts, changes, alice reacts,
    // bob removes his; then refused reactions with one client_msg_id,
    // which is finally used for an accepted one.
    let store = &*store;
    let (people, m1) = cast_with_text(store, ["a1", "b1"]).await;
    let Cast(alice, bob, conv, [a1, b1]) = people;
    let target = &m1;
    let steps = [
        (bob, b1, Some("👍"), pairs([("bob", "👍")])),
        (bob, b1, Some("❤️"), pairs([("bob", "❤️")])),
        (
            alice,
            a1,
            Some("😂"),
            pairs([("alice", "😂"), ("bob", "❤️")]),
        ),
        (bob, b1, None, pairs([("alice", "😂")])),
    ];
    for (step, (account, device, emoji, expected)) in steps.into_iter().enumerate() {
        let cmid = format!("r{step}");
        let reacted = append_ok(
            store,
            message_with(conv, account, device, &cmid, react(target, emoji), NOW + 1),
        )
        .await;
        assert_eq!(reacted.seq, step as i64 + 2);
        assert_eq!(
            reactions_of(store, bob, conv, target).await,
            expected,
            "step {step}"
        );
    }
    let history = history_all(store, alice, conv).await;
    let reaction = |seq: Seq, emoji: &str| (seq, EventKind::Reaction, emoji.to_owned());
    assert_eq!(
        summaries(&history),
        vec![
            txt(1, "m1"),
            reaction(2, "👍"),
            reaction(3, "❤️"),
            reaction(4, "😂"),
            reaction(5, "")
        ]
    );
    for event in &history[1..] {
        assert_eq!(event.target.as_ref(), Some(target));
        assert!(event.reactions.is_empty());
    }
    let waiting_reaction = pending_event(store, b1, &history[3].message_id).await;
    assert_eq!(
        (
            waiting_reaction.kind,
            waiting_reaction.body.as_str(),
            waiting_reaction.target.as_ref()
        ),
        (EventKind::Reaction, "😂", Some(target))
    );
    assert!(
        pending_event(store, b1, target).await.reactions.is_empty(),
        "reactions travel as events, not on the pending text"
    );

    refused_reactions(store, &people, target, &history[1].message_id).await;
}

/// [`reactions`]: reactions to an unknown message, to a reaction
/// (`reaction`) and to a deleted text are refused; then one to `target`.
async fn refused_reactions(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, b1]): &Cast<2>,
    target: &MessageId,
    reaction: &MessageId,
) {
    // Refusals.
    let m2 = send_at(store, conv, alice, a1, "m2", NOW + 2).await;
    append_ok(
        store,
        message_with(conv, alice, a1, "del", delete(&m2.message_id), NOW + 3),
    )
    .await;
    let reacting_to =
        |to: &MessageId| message_with(conv, bob, b1, "rx", react(to, Some("👍")), NOW + 4);
    let refusals = [
        (MessageId::generate(), StoreError::UnknownMessage),
        (reaction.clone(), StoreError::UnknownMessage),
        (m2.message_id.clone(), StoreError::MessageDeleted),
    ];
    for (to, expected) in refusals {
        assert_refused(store, reacting_to(&to), expected, &[a1]).await;
    }
    let accepted = store
        .append_message(reacting_to(target))
        .await
        .expect("react");
    assert_new(&accepted, 8);
    assert!(
        stored(store, bob, conv, &m2.message_id)
            .await
            .reactions
            .is_empty()
    );
}

/// 17. Edits.
pub(crate) async fn edits(store: Arc<dyn Store>) {
    // Goal: only the author edits (from any of its devices), up to
    // `window_ms` after the original's time: exactly `window_ms` later is
    // allowed, one millisecond more is EditWindowClosed; an edit replaces
    // the text's body and sets `edited_ms` (history and pending show the
    // current state) and is stored as its own event (kind Edit, body the
    // new text, target the text); only texts can be edited; refusals
    // store nothing.
    // Method: alice (a1, a2) and bob (b1); a text at NOW; refused edits
    // (other author, window + 1, unknown, an edit event) with one
    // client_msg_id; edits at NOW + 10 and at NOW + window; that
    // client_msg_id reused at the end.
    let store = &*store;
    let (people, m1) = cast_with_text(store, ["a1", "a2", "b1"]).await;
    let Cast(alice, bob, conv, [a1, _, b1]) = people;
    let target = &m1;
    let v2 = append_ok(
        store,
        message_with(conv, alice, a1, "e1", edit(target, "v2"), NOW + 10),
    )
    .await;
    assert_eq!(v2.seq, 2);
    let edited = stored(store, bob, conv, target).await;
    assert_eq!(
        (edited.body.as_str(), edited.edited_ms),
        ("v2", Some(NOW + 10))
    );

    let editing = |account, device, to: &MessageId, now_ms| {
        message_with(conv, account, device, "ex", edit(to, "v3"), now_ms)
    };
    let refusals = [
        (bob, b1, target.clone(), NOW + 20, StoreError::NotAuthor),
        (
            alice,
            a1,
            target.clone(),
            NOW + WINDOW_MS + 1,
            StoreError::EditWindowClosed,
        ),
        (
            alice,
            a1,
            MessageId::generate(),
            NOW + 20,
            StoreError::UnknownMessage,
        ),
        (
            alice,
            a1,
            v2.message_id.clone(),
            NOW + 20,
            StoreError::UnknownMessage,
        ),
    ];
    for (account, device, to, now_ms, expected) in refusals {
        assert_refused(
            store,
            editing(account, device, &to, now_ms),
            expected,
            &[b1],
        )
        .await;
    }

    edited_at_the_window_edge(store, &people, target).await;
}

/// [`edits`], after v2 and the refusals: the author's other device edits
/// `target` at the very end of the window; the text, the edit event and
/// what waits show it.
async fn edited_at_the_window_edge(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, a2, b1]): &Cast<3>,
    target: &MessageId,
) {
    // At the edge of the window, from the author's other device.
    let v3 = append_ok(
        store,
        message_with(conv, alice, a2, "e2", edit(target, "v3"), NOW + WINDOW_MS),
    )
    .await;
    assert_new(&v3, 3);
    let current = stored(store, bob, conv, target).await;
    assert_eq!(
        (
            current.kind,
            current.body.as_str(),
            current.edited_ms,
            current.ts_ms,
            current.deleted
        ),
        (EventKind::Text, "v3", Some(NOW + WINDOW_MS), NOW, false)
    );
    let edit_event = stored(store, bob, conv, &v3.message_id).await;
    assert_eq!(
        (
            edit_event.kind,
            edit_event.body.as_str(),
            edit_event.target.as_ref(),
            edit_event.from_device
        ),
        (EventKind::Edit, "v3", Some(target), a2)
    );
    let waiting_text = pending_event(store, b1, target).await;
    assert_eq!(
        (
            waiting_text.kind,
            waiting_text.body.as_str(),
            waiting_text.edited_ms
        ),
        (EventKind::Text, "v3", Some(NOW + WINDOW_MS))
    );
    assert_eq!(
        summaries(&history_all(store, alice, conv).await)[1..],
        [
            (2, EventKind::Edit, "v2".to_owned()),
            (3, EventKind::Edit, "v3".to_owned())
        ]
    );
    let reused = send_at(store, conv, alice, a1, "ex", NOW + WINDOW_MS + 2).await;
    assert_new(&reused, 4);
}

/// 18. Deletes.
pub(crate) async fn deletes(store: Arc<dyn Store>) {
    // Goal: only the author deletes; a delete leaves a tombstone (deleted,
    // empty body, no reactions) in history and pending, empties the
    // bodies of the text's edit events, and is stored as its own event
    // (kind Delete, empty body, target the text); a tombstone is still
    // an event, not an expired one; a deleted text cannot be deleted,
    // edited or reacted to again (MessageDeleted); refusals store
    // nothing.
    // Method: alice (a1) and bob (b1); a text, its edit, bob's reaction;
    // bob's delete refused, alice's accepted; then refused follow-ups
    // with one client_msg_id, which a final text reuses.
    let store = &*store;
    let (people, m1) = cast_with_text(store, ["a1", "b1"]).await;
    let Cast(alice, bob, conv, [a1, b1]) = people;
    let target = &m1;
    let edited = append_ok(
        store,
        message_with(conv, alice, a1, "e1", edit(target, "v2"), NOW + 1),
    )
    .await;
    append_ok(
        store,
        message_with(conv, bob, b1, "r1", react(target, Some("👍")), NOW + 2),
    )
    .await;
    let by_bob = message_with(conv, bob, b1, "dx", delete(target), NOW + 3);
    assert_refused(store, by_bob, StoreError::NotAuthor, &[a1, b1]).await;
    let deleted = append_ok(
        store,
        message_with(conv, alice, a1, "d1", delete(target), NOW + 3),
    )
    .await;
    assert_eq!(deleted.seq, 4);

    what_a_delete_leaves(
        store,
        &people,
        target,
        [&edited.message_id, &deleted.message_id],
    )
    .await;
}

/// [`deletes`], after alice deleted `target` (which had the edit `edited`)
/// with `deleted`: the tombstone, the emptied edit, the delete event, and
/// follow-ups refused.
async fn what_a_delete_leaves(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, b1]): &Cast<2>,
    target: &MessageId,
    [edited, deleted]: [&MessageId; 2],
) {
    let tombstone = stored(store, bob, conv, target).await;
    assert_eq!(
        (
            tombstone.deleted,
            tombstone.body.as_str(),
            tombstone.reactions.len()
        ),
        (true, "", 0)
    );
    assert_eq!(
        shapes(&pending_all(store, b1).await),
        vec![Ev(conv, 1), Ev(conv, 2), Ev(conv, 4)],
        "a tombstone is an event, not an expired one (bob's reaction is his own)"
    );
    let waiting_tombstone = pending_event(store, b1, target).await;
    assert_eq!(
        (waiting_tombstone.deleted, waiting_tombstone.body.as_str()),
        (true, "")
    );
    let edit_event = stored(store, bob, conv, edited).await;
    assert_eq!(
        (edit_event.kind, edit_event.body.as_str()),
        (EventKind::Edit, "")
    );
    assert_eq!(
        pending_event(store, b1, edited).await.body,
        "",
        "the waiting edit event still carries the deleted text"
    );
    let delete_event = stored(store, alice, conv, deleted).await;
    assert_eq!(
        (
            delete_event.kind,
            delete_event.body.as_str(),
            delete_event.target.as_ref()
        ),
        (EventKind::Delete, "", Some(target))
    );

    let after_delete = [
        (alice, a1, delete(target)),
        (alice, a1, edit(target, "v3")),
        (bob, b1, react(target, Some("😂"))),
    ];
    for (account, device, body) in after_delete {
        let message = message_with(conv, account, device, "dx", body, NOW + 5);
        assert_refused(store, message, StoreError::MessageDeleted, &[a1, b1]).await;
    }
    for (seq, (account, device)) in [(5, (alice, a1)), (6, (bob, b1))] {
        assert_new(
            &send_at(store, conv, account, device, "dx", NOW + 6).await,
            seq,
        );
    }
}
