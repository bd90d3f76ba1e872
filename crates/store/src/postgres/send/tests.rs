//! Batches against a real PostgreSQL: retries, clocks, judging and
//! numbering, and a dedup key reused across nodes.

use crate::MessageStore;

use std::sync::Arc;

use tokio::sync::Barrier;

use super::*;
use missive_core::{Clock, SystemClock};

use crate::postgres::testing::{FreshSchema, account, chat, store_batch, text};
use crate::{PostgresConfig, PostgresStore, Store};

#[tokio::test]
async fn a_retry_held_back_from_its_originals_batch_is_answered_while_nothing_else_comes() {
    // Goal: a send kept out of a batch (its original is in it) is stored
    // by the next batch even when no other send ever arrives: the
    // writer holding it must not wait for the queue's lock, which
    // another writer holds while it waits for a new send.
    // Method: a send and its retry queued together (two writers, so one
    // takes both and holds the retry back, the other waits for work);
    // both must be answered, the retry as a duplicate, within 10 s.
    let Some((schema, store)) = FreshSchema::store("held").await else {
        return;
    };
    let alice = account(&store, "alice").await;
    let bob = account(&store, "bob").await;
    let with_bob = chat(&store, alice, bob).await;
    for round in 0..20 {
        let cmid = format!("twice-{round}");
        let both = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(
                store.append_message(text(with_bob, alice, &cmid)),
                store.append_message(text(with_bob, alice, &cmid)),
            )
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: a held-back retry was never stored"));
        let (first, second) = (both.0.expect("first"), both.1.expect("second"));
        assert_eq!(first.seq, second.seq, "round {round}: stored once");
        assert!(first.duplicate != second.duplicate, "round {round}");
    }
    store.shutdown().await;
    schema.drop().await;
}

#[tokio::test]
async fn a_clock_far_ahead_does_not_pin_a_conversations_times() {
    // Goal: an event's time floors every later one in its conversation,
    // so a node whose clock jumped an hour ahead must not stamp an
    // hour ahead: it gets the database's time (plus at most
    // AHEAD_MAX_MS), and the next event, stamped by a correct clock,
    // carries about the true time.
    let Some((schema, store)) = FreshSchema::store("ahead").await else {
        return;
    };
    let alice = account(&store, "alice").await;
    let bob = account(&store, "bob").await;
    let with_bob = chat(&store, alice, bob).await;
    let true_now = || SystemClock.now_ms();
    let hour = 3_600_000;
    let ahead = store
        .append_message(NewMessage {
            now_ms: true_now() + hour,
            ..text(with_bob, alice, "ahead")
        })
        .await
        .expect("ahead");
    let after = true_now();
    assert!(
        ahead.ts_ms <= after + AHEAD_MAX_MS,
        "stamped {} ms ahead",
        ahead.ts_ms - after
    );
    let next = store
        .append_message(NewMessage {
            now_ms: true_now(),
            ..text(with_bob, bob, "next")
        })
        .await
        .expect("next");
    assert!(next.ts_ms >= ahead.ts_ms, "times never fall");
    assert!(next.ts_ms <= true_now() + AHEAD_MAX_MS);
    store.shutdown().await;
    schema.drop().await;
}

#[tokio::test]
async fn sends_of_one_batch_are_judged_alone_and_numbered_without_gaps() {
    // Goal: one batch's statements take every send at once, yet each
    // send is answered as if alone: a retry of a stored send gets the
    // first answer, an outsider is refused without taking a seq, and
    // the others are numbered in batch order per conversation, each
    // with its own recipients.
    // Method: alice's first text to bob is stored; then one batch holds
    // its retry, a second text from alice, carol writing into alice and
    // bob's chat, bob's answer, and alice's first text to carol.
    let Some((schema, store)) = FreshSchema::store("sends").await else {
        return;
    };
    let alice = account(&store, "alice").await;
    let bob = account(&store, "bob").await;
    let carol = account(&store, "carol").await;
    let with_bob = chat(&store, alice, bob).await;
    let with_carol = chat(&store, alice, carol).await;
    let first = store
        .append_message(text(with_bob, alice, "a0"))
        .await
        .expect("first");
    let batch = [
        text(with_bob, alice, "a0"),
        text(with_bob, alice, "a1"),
        text(with_bob, carol, "c0"),
        text(with_bob, bob, "b0"),
        text(with_carol, alice, "a2"),
    ];
    let sends: Vec<&NewMessage> = batch.iter().collect();
    let answers = store_batch::<crate::postgres::sender::Sends>(&store, &sends).await;

    let [retry, second, outsider, answer, to_carol] = &answers[..] else {
        panic!("{answers:?}")
    };
    let retry = retry.as_ref().expect("retry");
    assert!(retry.duplicate);
    assert_eq!((&retry.message_id, retry.seq), (&first.message_id, 1));
    assert_eq!(outsider, &Err(StoreError::UnknownConversation));
    let numbered = |answer: &Answer| {
        let answer = answer.as_ref().expect("stored");
        assert!(!answer.duplicate);
        (answer.conversation, answer.seq, answer.recipients.clone())
    };
    assert_eq!(numbered(second), (with_bob, 2, vec![bob.1]));
    assert_eq!(numbered(answer), (with_bob, 3, vec![alice.1]));
    assert_eq!(numbered(to_carol), (with_carol, 1, vec![carol.1]));
    // The next send finds every seq taken, none skipped.
    let next = store
        .append_message(text(with_bob, bob, "b1"))
        .await
        .expect("next");
    assert_eq!(next.seq, 4);
    store.shutdown().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_reused_into_another_conversation_on_another_node_is_stored_once() {
    // Goal: one (device, client_msg_id) sent at the same moment on two
    // nodes into two different conversations (no conversation lock
    // orders them) is stored once: one call is the original, the other
    // is refused as a reuse of the key for another message, and the
    // other conversation loses no seq.
    // Method: alice talks to bob and to carol; 20 rounds of the same
    // client_msg_id into each, on two nodes released by a barrier; then
    // one more text into each conversation.
    let Some(schema) = FreshSchema::create("retry").await else {
        return;
    };
    let config = PostgresConfig::new(schema.url.clone());
    let nodes = [
        Arc::new(PostgresStore::connect(&config).await.expect("node 0")),
        Arc::new(PostgresStore::connect(&config).await.expect("node 1")),
    ];
    let alice = account(&nodes[0], "alice").await;
    let (bob, _) = account(&nodes[0], "bob").await;
    let (carol, _) = account(&nodes[0], "carol").await;
    let with_bob = nodes[0]
        .direct_conversation(alice.0, bob, 1, false)
        .await
        .expect("ab");
    let with_carol = nodes[0]
        .direct_conversation(alice.0, carol, 1, false)
        .await
        .expect("ac");
    let mut stored = [0, 0];
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(2));
        let attempts: Vec<_> = [with_bob, with_carol]
            .into_iter()
            .zip(&nodes)
            .map(|(conversation, node)| {
                let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
                let message = text(conversation, alice, &format!("race-{round}"));
                tokio::spawn(async move {
                    barrier.wait().await;
                    node.append_message(message).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for attempt in attempts {
            answers.push(attempt.await.expect("task"));
        }
        answers.sort_by_key(Result::is_err);
        let [Ok(original), Err(StoreError::ClientMsgIdReused)] = &answers[..] else {
            panic!("round {round}: {answers:?}")
        };
        assert!(!original.duplicate, "round {round}");
        let idx = usize::from(original.conversation == with_carol);
        stored[idx] += 1;
        assert_eq!(original.seq, stored[idx], "round {round}: a seq was lost");
    }
    for (idx, conversation) in [with_bob, with_carol].into_iter().enumerate() {
        let next = nodes[1]
            .append_message(text(conversation, alice, &format!("after-{idx}")))
            .await
            .expect("append");
        assert_eq!(next.seq, stored[idx] + 1, "conversation {conversation}");
    }
    for node in &nodes {
        node.shutdown().await;
    }
    schema.drop().await;
}
