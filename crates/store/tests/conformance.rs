//! The Store conformance suite.
//!
//! Every scenario in [`scenarios`] is written once against `Arc<dyn Store>`
//! and knows nothing about the engine behind it. A backend joins the suite by
//! providing an `open()` function that returns a fresh, empty store (plus
//! whatever must live as long as it) and invoking [`conformance_tests!`],
//! which turns every scenario into one `#[tokio::test]` (and the model-based
//! property test into one `proptest`) in the backend's module. Only SQLite
//! exists today (`mod sqlite` at the bottom); a PostgreSQL adapter adds a
//! `mod postgres` with its own `open()` and the same macro call.
//!
//! Checks that need to look inside the engine (row counts in SQLite tables,
//! reopening the file) live in the backend's module, clearly separated from
//! the shared scenarios.
//!
//! Time never passes on its own here: every call takes an explicit `now_ms`
//! derived from [`support::NOW`], so expiry is tested without sleeping.

use std::any::Any;
use std::sync::Arc;

use missive_store::Store;

/// A freshly opened, empty store and whatever must outlive it (a temporary
/// directory, a throw-away database, ...).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub _guard: Box<dyn Any + Send>,
}

/// Shared helpers: the usual cast of accounts and devices, builders for
/// requests, thin wrappers of store calls that must succeed, and projections
/// of `pending` pages.
mod support {
    use missive_core::{
        AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText, QueuePos, Seq,
        TokenHash, UnixMillis, Username,
    };
    use missive_store::{
        AccountRecord, AckOutcome, AckRequest, Appended, DeviceAuth, DeviceRecord, NewAccount,
        NewDevice, NewMessage, QueueItem, Store,
    };

    /// The suite's "now"; everything else is an offset from it.
    pub const NOW: UnixMillis = 1_700_000_000_000;
    pub const DAY_MS: i64 = 86_400_000;
    /// A `pending` limit larger than any queue in the suite.
    pub const ALL: usize = 100_000;
    /// The `now_ms` of acks, distinct from `NOW` so receipt timestamps are checkable.
    pub const ACK_NOW: UnixMillis = NOW + 7;

    pub fn username(name: &str) -> Username {
        Username::parse(name).expect("valid username")
    }

    pub fn token(label: &str) -> TokenHash {
        TokenHash::of(&format!("token-of-{label}"))
    }

    pub async fn new_account(store: &dyn Store, name: &str) -> AccountId {
        store
            .create_account(NewAccount {
                username: username(name),
                password_hash: format!("hash-of-{name}"),
                phone: None,
                now_ms: NOW,
            })
            .await
            .expect("create_account")
    }

    /// A device named `label` whose token hash is `token(label)`.
    pub async fn new_device(store: &dyn Store, account: AccountId, label: &str) -> DeviceId {
        store
            .create_device(NewDevice {
                account,
                name: label.to_owned(),
                token_hash: token(label),
                devices_max: 4,
                now_ms: NOW,
            })
            .await
            .expect("create_device")
    }

    /// The accounts "alice" and "bob", created in that order.
    pub async fn alice_and_bob(store: &dyn Store) -> (AccountId, AccountId) {
        let alice = new_account(store, "alice").await;
        let bob = new_account(store, "bob").await;
        (alice, bob)
    }

    /// The direct conversation of `a` and `b` (created on first use).
    pub async fn direct(
        store: &dyn Store,
        a: AccountId,
        b: AccountId,
        now_ms: UnixMillis,
    ) -> ConversationId {
        store
            .direct_conversation(a, b, now_ms)
            .await
            .expect("direct_conversation")
    }

    /// The cast most scenarios start from, built by [`cast`]:
    /// `Cast(alice, bob, conv, devices)`, with one device per label given to
    /// [`cast`], in the same order. Meant to be destructured on the spot:
    /// `let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;`
    pub struct Cast<const N: usize>(
        pub AccountId,
        pub AccountId,
        pub ConversationId,
        pub [DeviceId; N],
    );

    /// alice and bob, then one device per label in the given order (a label
    /// starting with 'a' is alice's, with 'b' bob's; its token hash is
    /// `token(label)`), then their direct conversation at `NOW`.
    pub async fn cast<const N: usize>(store: &dyn Store, labels: [&str; N]) -> Cast<N> {
        let (alice, bob) = alice_and_bob(store).await;
        let mut devices = Vec::with_capacity(N);
        for label in labels {
            let owner = match label.as_bytes().first() {
                Some(b'a') => alice,
                Some(b'b') => bob,
                _ => panic!("device label {label:?} names neither alice nor bob"),
            };
            devices.push(new_device(store, owner, label).await);
        }
        let devices = devices.try_into().expect("one device per label");
        let conv = direct(store, alice, bob, NOW).await;
        Cast(alice, bob, conv, devices)
    }

    pub async fn account_named(store: &dyn Store, name: &str) -> Option<AccountRecord> {
        store
            .account_by_username(&username(name))
            .await
            .expect("account_by_username")
    }

    pub async fn devices_of(store: &dyn Store, account: AccountId) -> Vec<DeviceRecord> {
        store.list_devices(account).await.expect("list_devices")
    }

    /// Who the token of device `label` authenticates as.
    pub async fn auth(store: &dyn Store, label: &str) -> Option<DeviceAuth> {
        store
            .authenticate(&token(label))
            .await
            .expect("authenticate")
    }

    pub async fn depth(store: &dyn Store, device: DeviceId) -> u64 {
        store.queue_depth(device).await.expect("queue_depth")
    }

    pub fn text_of(cmid: &str) -> String {
        format!("text of {cmid}")
    }

    pub fn new_message(
        conversation: ConversationId,
        account: AccountId,
        device: DeviceId,
        cmid: &str,
        now_ms: UnixMillis,
        queue_expires_ms: UnixMillis,
    ) -> NewMessage {
        NewMessage {
            message_id: MessageId::generate(),
            conversation,
            sender_account: account,
            sender_device: device,
            client_msg_id: ClientMsgId::parse(cmid).expect("valid client_msg_id"),
            body: missive_store::Body::Text {
                text: MessageText::parse(&text_of(cmid), 4096).expect("valid text"),
                reply_to: None,
            },
            now_ms,
            queue_expires_ms,
        }
    }

    /// Appends at `NOW` with a one-day queue expiry; panics on refusal.
    pub async fn send(
        store: &dyn Store,
        conversation: ConversationId,
        account: AccountId,
        device: DeviceId,
        cmid: &str,
    ) -> Appended {
        store
            .append_message(new_message(
                conversation,
                account,
                device,
                cmid,
                NOW,
                NOW + DAY_MS,
            ))
            .await
            .expect("append_message")
    }

    /// The device's whole live queue at `NOW`.
    pub async fn pending_all(store: &dyn Store, device: DeviceId) -> Vec<QueueItem> {
        store.pending(device, 0, ALL, NOW).await.expect("pending")
    }

    /// (pos, message_id, seq) of the `Message` items, in page order.
    pub fn messages(items: &[QueueItem]) -> Vec<(QueuePos, MessageId, Seq)> {
        items
            .iter()
            .filter_map(|item| match item {
                QueueItem::Message {
                    pos,
                    message_id,
                    seq,
                    ..
                } => Some((*pos, message_id.clone(), *seq)),
                _ => None,
            })
            .collect()
    }

    /// message ids of the `Message` items, in page order.
    pub fn message_ids(items: &[QueueItem]) -> Vec<MessageId> {
        messages(items).into_iter().map(|(_, id, _)| id).collect()
    }

    /// message ids of the `Message` items of the device's whole live queue.
    pub async fn pending_ids(store: &dyn Store, device: DeviceId) -> Vec<MessageId> {
        message_ids(&pending_all(store, device).await)
    }

    /// (message_id, seq, by, ts_ms) of the `Delivered` items, in page order.
    pub fn delivered(items: &[QueueItem]) -> Vec<(MessageId, Seq, String, UnixMillis)> {
        items
            .iter()
            .filter_map(|item| match item {
                QueueItem::Delivered {
                    message_id,
                    seq,
                    by,
                    ts_ms,
                    ..
                } => Some((message_id.clone(), *seq, by.clone(), *ts_ms)),
                _ => None,
            })
            .collect()
    }

    /// (conversation, seq, by, ts_ms) of the `Read` items, in page order.
    pub fn reads(items: &[QueueItem]) -> Vec<(ConversationId, Seq, String, UnixMillis)> {
        items
            .iter()
            .filter_map(|item| match item {
                QueueItem::Read {
                    conversation,
                    seq,
                    by,
                    ts_ms,
                    ..
                } => Some((*conversation, *seq, by.clone(), *ts_ms)),
                _ => None,
            })
            .collect()
    }

    /// The `Delivered` items of the device's whole live queue, as [`delivered`].
    pub async fn pending_delivered(
        store: &dyn Store,
        device: DeviceId,
    ) -> Vec<(MessageId, Seq, String, UnixMillis)> {
        delivered(&pending_all(store, device).await)
    }

    /// The `Read` items of the device's whole live queue, as [`reads`].
    pub async fn pending_reads(
        store: &dyn Store,
        device: DeviceId,
    ) -> Vec<(ConversationId, Seq, String, UnixMillis)> {
        reads(&pending_all(store, device).await)
    }

    pub fn positions(items: &[QueueItem]) -> Vec<QueuePos> {
        items.iter().map(QueueItem::pos).collect()
    }

    pub fn assert_strictly_increasing(positions: &[i64], what: &str) {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{what} not strictly increasing: {positions:?}"
        );
    }

    /// `actual` is the concatenation of `batches`, each batch in any order.
    pub fn assert_same_in_batches<T: Ord + Clone + std::fmt::Debug>(
        actual: &[T],
        batches: &[Vec<T>],
        what: &str,
    ) {
        let expected_len: usize = batches.iter().map(Vec::len).sum();
        assert_eq!(
            actual.len(),
            expected_len,
            "{what}: {actual:?} vs {batches:?}"
        );
        let mut rest = actual;
        for batch in batches {
            let (head, tail) = rest.split_at(batch.len());
            let mut head = head.to_vec();
            let mut batch = batch.clone();
            head.sort();
            batch.sort();
            assert_eq!(head, batch, "{what}: {actual:?} vs {batches:?}");
            rest = tail;
        }
    }

    pub fn sorted(mut devices: Vec<DeviceId>) -> Vec<DeviceId> {
        devices.sort();
        devices
    }

    pub fn ack_request(
        device: DeviceId,
        account: AccountId,
        up_to: Option<QueuePos>,
        positions: Vec<QueuePos>,
        purge_acked_bodies: bool,
    ) -> AckRequest {
        AckRequest {
            device,
            account,
            up_to,
            positions,
            purge_acked_bodies,
            now_ms: ACK_NOW,
            queue_expires_ms: NOW + DAY_MS,
        }
    }

    pub async fn ack(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        up_to: Option<QueuePos>,
        positions: Vec<QueuePos>,
        purge: bool,
    ) -> AckOutcome {
        store
            .ack(ack_request(device, account, up_to, positions, purge))
            .await
            .expect("ack")
    }

    /// The queue position of `message_id` in the device's queue.
    pub async fn pos_of(store: &dyn Store, device: DeviceId, message_id: &MessageId) -> QueuePos {
        messages(&pending_all(store, device).await)
            .into_iter()
            .find(|(_, id, _)| id == message_id)
            .unwrap_or_else(|| panic!("{message_id} is not queued for device {device}"))
            .0
    }

    /// Acks exactly the entry of `message_id` in the device's queue.
    pub async fn ack_message(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        message_id: &MessageId,
        purge: bool,
    ) -> AckOutcome {
        let pos = pos_of(store, device, message_id).await;
        ack(store, device, account, None, vec![pos], purge).await
    }
}

/// The backend-independent scenarios. Each takes a fresh, empty store.
mod scenarios {
    use std::collections::{BTreeSet, HashMap, HashSet};
    use std::sync::Arc;

    use missive_core::{ConversationId, DeviceId, MessageId, QueuePos, Seq, UnixMillis};
    use missive_store::{
        AccountRecord, AckOutcome, DeviceAuth, DeviceRecord, NewAccount, NewDevice, QueueItem,
        ReadOutcome, ReadRequest, Store, StoreError, SweepOutcome, SweepRequest,
    };
    use proptest::prelude::*;
    use proptest::sample::Index;

    use crate::support::*;

    /// 1. Accounts.
    pub async fn accounts(store: Arc<dyn Store>) {
        // Goal: usernames are unique and lookups find exactly what was stored.
        // Method: create two accounts, try to take a name again (must be
        // refused without overwriting anything), then look up known and
        // unknown names.
        let store = &*store;
        let alice = store
            .create_account(NewAccount {
                username: username("alice"),
                password_hash: "hash-a".into(),
                phone: Some("+15550100".into()),
                now_ms: NOW,
            })
            .await
            .expect("create alice");
        let bob = new_account(store, "bob").await;
        assert_ne!(alice, bob, "two accounts got the same id");

        let again = store
            .create_account(NewAccount {
                username: username("alice"),
                password_hash: "hash-intruder".into(),
                phone: None,
                now_ms: NOW + 1,
            })
            .await;
        assert_eq!(again, Err(StoreError::UsernameTaken));

        let found: AccountRecord = account_named(store, "alice").await.expect("alice exists");
        assert_eq!(found.id, alice);
        assert_eq!(found.username, username("alice"));
        assert_eq!(
            found.password_hash, "hash-a",
            "the refused create overwrote the account"
        );
        let found_bob = account_named(store, "bob").await.expect("bob exists");
        assert_eq!(
            (found_bob.id, found_bob.password_hash.as_str()),
            (bob, "hash-of-bob")
        );
        assert!(account_named(store, "carol").await.is_none());

        // The refusal left the store usable: a new name still gets a new id.
        let carol = new_account(store, "carol").await;
        assert!(carol != alice && carol != bob);
        assert_eq!(
            account_named(store, "carol").await.map(|a| a.id),
            Some(carol)
        );
    }

    /// 2. Devices.
    pub async fn devices(store: Arc<dyn Store>) {
        // Goal: the device limit, token authentication, listing order, and
        // revocation (own devices only, deleting token and queue) behave as
        // documented.
        // Method: fill alice's two slots, overflow, authenticate, give the
        // devices queue entries, revoke from the wrong account (no effect),
        // then from the right one, and check each observable afterwards.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let device = |account, name: &str, now_ms: UnixMillis| NewDevice {
            account,
            name: name.to_owned(),
            token_hash: token(name),
            devices_max: 2,
            now_ms,
        };
        let a1 = store
            .create_device(device(alice, "a-phone", NOW))
            .await
            .expect("a1");
        let a2 = store
            .create_device(device(alice, "a-laptop", NOW + 1))
            .await
            .expect("a2");
        assert_ne!(a1, a2);
        assert_eq!(
            store
                .create_device(device(alice, "a-tablet", NOW + 2))
                .await,
            Err(StoreError::TooManyDevices)
        );
        assert_eq!(auth(store, "a-tablet").await, None);
        let b1 = store
            .create_device(device(bob, "b-phone", NOW + 3))
            .await
            .expect("b1");

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

        let alice_a1 = DeviceAuth {
            account: alice,
            username: username("alice"),
            device: a1,
        };
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

        store.mark_device_seen(a2, NOW + 50).await.expect("seen");
        let listed = devices_of(store, alice).await;
        assert_eq!(
            listed
                .iter()
                .map(|d| (d.id, d.last_seen_ms))
                .collect::<Vec<_>>(),
            vec![(a1, NOW), (a2, NOW + 50)]
        );

        // Give alice's devices something queued.
        let conv = direct(store, alice, bob, NOW).await;
        let sent = send(store, conv, bob, b1, "hello").await;
        assert_eq!(sorted(sent.queued_for), vec![a1, a2]);
        assert_eq!(depth(store, a1).await, 1);

        // Wrong account: refused, nothing changes.
        assert!(!store.revoke_device(bob, a1).await.expect("revoke"));
        assert!(!store.revoke_device(alice, b1).await.expect("revoke"));
        assert!(
            !store
                .revoke_device(alice, DeviceId(987_654_321))
                .await
                .expect("revoke")
        );
        assert_eq!(auth(store, "a-phone").await, Some(alice_a1));
        assert!(auth(store, "b-phone").await.is_some());
        assert_eq!(devices_of(store, alice).await, listed);
        assert_eq!(depth(store, a1).await, 1);
        assert_eq!(depth(store, b1).await, 0);

        // Right account: the device, its token and its queue go.
        assert!(store.revoke_device(alice, a1).await.expect("revoke"));
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
        assert_eq!(depth(store, a1).await, 0, "revoke left the queue");
        assert_eq!(depth(store, a2).await, 1);
        assert!(!store.revoke_device(alice, a1).await.expect("revoke twice"));

        // The freed slot can be used again, and fan-out forgets the revoked device.
        let a3 = store
            .create_device(device(alice, "a-tablet", NOW + 60))
            .await
            .expect("a3");
        assert_eq!(devices_of(store, alice).await.len(), 2);
        let next = send(store, conv, bob, b1, "again").await;
        assert_eq!(sorted(next.queued_for), sorted(vec![a2, a3]));
        assert_eq!(depth(store, a1).await, 0);
    }

    /// 2b. Device identity after revocation.
    pub async fn revoked_device_identity_is_not_reused(store: Arc<dyn Store>) {
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
        assert!(store.revoke_device(alice, a2).await.expect("revoke"));

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

    /// 3. Sequence numbers and idempotent append.
    pub async fn seq_and_dedup(store: Arc<dyn Store>) {
        // Goal: seqs are per conversation, 1..N without gaps; a retry with the
        // same (device, client_msg_id) returns the original and stores
        // nothing; refusals store nothing and burn no seq.
        // Method: N appends, a retry with a new message id / text / time, the
        // same client_msg_id from two other devices, two refused appends,
        // then one more append; compare seqs and bob's queue at each step.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, a2, b1]) = cast(store, ["a1", "a2", "b1"]).await;
        let carol = new_account(store, "carol").await;
        let c1 = new_device(store, carol, "c1").await;

        assert_eq!(direct(store, bob, alice, NOW + 1).await, conv);
        assert_eq!(direct(store, alice, bob, NOW + 2).await, conv);
        let conv_ac = direct(store, carol, alice, NOW).await;
        assert_ne!(conv_ac, conv);
        assert_eq!(direct(store, alice, carol, NOW).await, conv_ac);

        const N: i64 = 5;
        let mut originals = Vec::new();
        for i in 1..=N {
            let request = new_message(conv, alice, a1, &format!("m{i}"), NOW + i, NOW + DAY_MS);
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
            messages(&before).iter().map(|m| m.2).collect::<Vec<_>>(),
            (1..=N).collect::<Vec<_>>()
        );

        // A retry: new message id, new text, later time. Nothing is stored.
        let mut retry = new_message(conv, alice, a1, "m3", NOW + 100, NOW + DAY_MS);
        retry.body = missive_store::Body::Text {
            text: missive_core::MessageText::parse("different text", 100).expect("text"),
            reply_to: None,
        };
        let retried = store.append_message(retry).await.expect("retry");
        assert!(retried.duplicate);
        assert_eq!(retried.message_id, originals[2].message_id);
        assert_eq!(retried.seq, 3);
        assert_eq!(retried.ts_ms, NOW + 3);
        assert_eq!(retried.conversation, conv);
        assert!(retried.queued_for.is_empty());
        assert_eq!(
            pending_all(store, b1).await,
            before,
            "a retry changed bob's queue"
        );
        assert_eq!(depth(store, a2).await, N as u64);

        // The same client_msg_id from other devices is a new message each time.
        let from_a2 = send(store, conv, alice, a2, "m3").await;
        assert!(!from_a2.duplicate);
        assert_eq!(from_a2.seq, N + 1);
        assert_ne!(from_a2.message_id, originals[2].message_id);
        let from_b1 = send(store, conv, bob, b1, "m3").await;
        assert!(!from_b1.duplicate);
        assert_eq!(from_b1.seq, N + 2);
        let snapshot_b1 = pending_all(store, b1).await;
        let snapshot_a1 = pending_all(store, a1).await;

        // Refusals: nothing stored, nothing queued, no seq consumed.
        let outsider = store
            .append_message(new_message(conv, carol, c1, "x1", NOW, NOW + DAY_MS))
            .await;
        assert_eq!(outsider, Err(StoreError::NotMember));
        let nowhere = store
            .append_message(new_message(
                ConversationId(987_654_321),
                carol,
                c1,
                "x2",
                NOW,
                NOW + DAY_MS,
            ))
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
    pub async fn fan_out(store: Arc<dyn Store>) {
        // Goal: an append is queued for every device of every member except
        // the sending device (so the sender's other devices see it too), and
        // for no one else.
        // Method: alice and bob with two devices each and an outsider; send
        // from a1 and from b2, and inspect queued_for and every queue.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
        let carol = new_account(store, "carol").await;
        let c1 = new_device(store, carol, "c1").await;

        let sent = send(store, conv, alice, a1, "hi").await;
        assert_eq!(sorted(sent.queued_for.clone()), sorted(vec![a2, b1, b2]));
        assert!(
            pending_all(store, a1).await.is_empty(),
            "the sending device got its own message"
        );
        assert!(pending_all(store, c1).await.is_empty());
        for device in [a2, b1, b2] {
            let items = pending_all(store, device).await;
            assert_eq!(items.len(), 1, "device {device}");
            assert_eq!(
                items[0],
                QueueItem::Message {
                    pos: items[0].pos(),
                    message_id: sent.message_id.clone(),
                    conversation: conv,
                    seq: 1,
                    from: "alice".into(),
                    from_device: a1,
                    client_msg_id: "hi".into(),
                    text: text_of("hi"),
                    kind: missive_store::EventKind::Text,
                    target: None,
                    edited_ms: None,
                    deleted: false,
                    ts_ms: NOW,
                }
            );
            assert_eq!(depth(store, device).await, 1);
        }

        let reply = send(store, conv, bob, b2, "yo").await;
        assert_eq!(sorted(reply.queued_for.clone()), sorted(vec![a1, a2, b1]));
        assert_eq!(pending_ids(store, b2).await, vec![sent.message_id.clone()]);
        for device in [a1, a2, b1] {
            let ids = pending_ids(store, device).await;
            assert_eq!(ids.last(), Some(&reply.message_id), "device {device}");
        }
        assert!(pending_all(store, c1).await.is_empty());
        assert_eq!(depth(store, c1).await, 0);
    }

    /// 5. Paging, acks and delivered receipts.
    pub async fn pending_and_ack(store: Arc<dyn Store>) {
        // Goal: pending pages in position order; acks by `up_to` and by
        // position remove exactly those entries of that device (counted
        // right, never returning); the recipient's first ack of a message
        // queues one `Delivered` to every device of the sender.
        // Method: a1 sends five messages to bob (b1, b2); page b1's queue,
        // ack it in pieces, re-ack, ack another device's positions; then
        // b2 acks everything (no second receipt) and a2 acks its copies
        // (no receipt for one's own messages).
        let store = &*store;
        let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
        let mut sent = Vec::new();
        for i in 1..=5 {
            sent.push(send(store, conv, alice, a1, &format!("m{i}")).await);
        }
        let ids: Vec<MessageId> = sent.iter().map(|s| s.message_id.clone()).collect();

        // Paging.
        let all = pending_all(store, b1).await;
        assert_eq!(message_ids(&all), ids);
        let pos = positions(&all);
        assert_strictly_increasing(&pos, "queue positions");
        let page = |after: QueuePos, limit: usize| async move {
            store.pending(b1, after, limit, NOW).await.expect("page")
        };
        let page1 = page(0, 2).await;
        let page2 = page(page1[1].pos(), 2).await;
        let page3 = page(page2[1].pos(), 2).await;
        let page4 = page(page3[0].pos(), 2).await;
        assert_eq!(page1, all[0..2]);
        assert_eq!(page2, all[2..4]);
        assert_eq!(page3, all[4..5]);
        assert!(page4.is_empty());
        assert_eq!(page(pos[2] - 1, 1).await, all[2..3]);
        assert!(page(0, 0).await.is_empty());

        // ack up_to: removes exactly the entries at or below.
        let outcome = ack(store, b1, bob, Some(pos[1]), vec![], false).await;
        assert_eq!(outcome.removed, 2);
        assert_eq!(outcome.queued_for, sorted(vec![a1, a2]));
        assert_eq!(pending_ids(store, b1).await, ids[2..].to_vec());
        assert_eq!(depth(store, b1).await, 3);

        // ack by position: removes exactly the listed entry.
        let outcome = ack(store, b1, bob, None, vec![pos[3]], false).await;
        assert_eq!(outcome.removed, 1);
        assert_eq!(outcome.queued_for, sorted(vec![a1, a2]));
        assert_eq!(
            pending_ids(store, b1).await,
            vec![ids[2].clone(), ids[4].clone()]
        );

        // Acking again removes nothing and queues nothing.
        let outcome = ack(store, b1, bob, Some(pos[1]), vec![pos[0], pos[3]], false).await;
        assert_eq!((outcome.removed, outcome.queued_for.len()), (0, 0));

        // Positions of another device's queue are not this device's to ack.
        let b2_pos = positions(&pending_all(store, b2).await);
        let outcome = ack(store, b1, bob, None, b2_pos.clone(), false).await;
        assert_eq!(outcome.removed, 0);
        assert_eq!(positions(&pending_all(store, b2).await), b2_pos);
        let outcome = ack(store, a1, alice, Some(b2_pos[4]), vec![], false).await;
        assert_eq!(outcome.removed, 0);
        assert_eq!(positions(&pending_all(store, b2).await), b2_pos);

        // Mixed ack: up_to and positions together, overlaps counted once.
        let outcome = ack(
            store,
            b1,
            bob,
            Some(pos[2]),
            vec![pos[2], pos[4], pos[4]],
            false,
        )
        .await;
        assert_eq!(outcome.removed, 2);
        assert!(pending_all(store, b1).await.is_empty());
        assert_eq!(depth(store, b1).await, 0);

        // Every device of the sender got exactly one Delivered per message,
        // in ack order (the order within one ack call is not specified).
        let receipt = |i: usize| {
            (
                sent[i].message_id.clone(),
                sent[i].seq,
                "bob".to_owned(),
                ACK_NOW,
            )
        };
        let expected_receipts = vec![
            vec![receipt(0), receipt(1)],
            vec![receipt(3)],
            vec![receipt(2), receipt(4)],
        ];
        let assert_receipts = |device: DeviceId, what: &'static str| {
            let expected = &expected_receipts;
            async move {
                assert_same_in_batches(&pending_delivered(store, device).await, expected, what);
            }
        };
        assert_receipts(a1, "a1 receipts").await;
        assert_receipts(a2, "a2 receipts").await;
        for item in pending_all(store, a1).await {
            if let QueueItem::Delivered { conversation, .. } = item {
                assert_eq!(conversation, conv);
            }
        }

        // bob's other device acking: removed 5, but bob already delivered.
        let outcome = ack(store, b2, bob, Some(b2_pos[4]), vec![], false).await;
        assert_eq!(outcome.removed, 5);
        assert!(
            outcome.queued_for.is_empty(),
            "a second device's ack queued receipts again"
        );
        assert_eq!(pending_delivered(store, a1).await.len(), 5);

        // alice's other device acking alice's own messages: no receipts.
        let a2_items = pending_all(store, a2).await;
        assert_eq!(a2_items.len(), 10, "5 messages and 5 receipts");
        let a2_message_pos: Vec<QueuePos> = messages(&a2_items).iter().map(|m| m.0).collect();
        let outcome = ack(store, a2, alice, None, a2_message_pos, false).await;
        assert_eq!(outcome.removed, 5);
        assert!(outcome.queued_for.is_empty());
        assert!(pending_delivered(store, b1).await.is_empty());
        assert!(pending_all(store, b2).await.is_empty());
        assert_receipts(a2, "a2 receipts").await;

        // Acked entries never come back, also not after new traffic.
        let later = send(store, conv, alice, a1, "m6").await;
        assert_eq!(pending_ids(store, b1).await, vec![later.message_id.clone()]);
        let later_pos = pending_all(store, b1).await[0].pos();
        assert!(later_pos > pos[4], "a position was reused");
        // Acking a receipt queues nothing.
        let a1_all = pending_all(store, a1).await;
        let outcome = ack(store, a1, alice, Some(a1_all[4].pos()), vec![], false).await;
        assert_eq!(outcome.removed, 5);
        assert!(outcome.queued_for.is_empty());
        assert!(pending_delivered(store, b1).await.is_empty());
    }

    /// 6. Read pointer.
    pub async fn mark_read(store: Arc<dyn Store>) {
        // Goal: the read pointer only moves forward, is clamped to the last
        // seq, and each move queues one `Read` to the other member's devices
        // only; outsiders are refused.
        // Method: three messages a→b, then a series of mark_read calls by
        // bob (forward, backward, repeat, beyond the end) and by alice,
        // checking the outcome and both sides' queues each time.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
        let carol = new_account(store, "carol").await;
        let _c1 = new_device(store, carol, "c1").await;
        for i in 1..=3 {
            send(store, conv, alice, a1, &format!("m{i}")).await;
        }
        let read = move |account, seq: Seq, now_ms: UnixMillis| ReadRequest {
            account,
            conversation: conv,
            seq,
            now_ms,
            queue_expires_ms: NOW + DAY_MS,
        };
        // mark_read that must succeed.
        let mark = move |account, seq: Seq, now_ms: UnixMillis| async move {
            store
                .mark_read(read(account, seq, now_ms))
                .await
                .expect("read")
        };

        let moved = mark(bob, 2, NOW + 10).await;
        assert_eq!(moved.seq, 2);
        assert_eq!(sorted(moved.queued_for), sorted(vec![a1, a2]));
        for device in [a1, a2] {
            assert_eq!(
                pending_reads(store, device).await,
                vec![(conv, 2, "bob".to_owned(), NOW + 10)]
            );
        }
        for device in [b1, b2] {
            assert!(pending_reads(store, device).await.is_empty());
        }

        // Backwards and repeated: no move, nothing queued.
        for seq in [1, 2, 0, -5] {
            let outcome = mark(bob, seq, NOW + 11).await;
            assert_eq!(
                outcome,
                ReadOutcome {
                    seq: 2,
                    queued_for: vec![]
                },
                "mark_read({seq})"
            );
        }
        assert_eq!(pending_reads(store, a1).await.len(), 1);

        // Beyond the end: clamped to the last seq; then no further move.
        let clamped = mark(bob, 100, NOW + 12).await;
        assert_eq!(clamped.seq, 3);
        assert_eq!(sorted(clamped.queued_for), sorted(vec![a1, a2]));
        let again = mark(bob, 100, NOW + 13).await;
        assert_eq!((again.seq, again.queued_for.len()), (3, 0));
        assert_eq!(
            pending_reads(store, a2).await,
            vec![
                (conv, 2, "bob".to_owned(), NOW + 10),
                (conv, 3, "bob".to_owned(), NOW + 12)
            ]
        );

        // Each member has their own pointer; alice's receipts go to bob only.
        let alice_read = mark(alice, 1, NOW + 14).await;
        assert_eq!(alice_read.seq, 1);
        assert_eq!(sorted(alice_read.queued_for), sorted(vec![b1, b2]));
        assert_eq!(
            pending_reads(store, b1).await,
            vec![(conv, 1, "alice".to_owned(), NOW + 14)]
        );
        assert_eq!(pending_reads(store, a1).await.len(), 2);

        // A new message raises the clamp.
        send(store, conv, alice, a1, "m4").await;
        assert_eq!(mark(bob, 100, NOW + 15).await.seq, 4);

        // Outsiders and unknown conversations are refused, nothing queued.
        let depth_a1 = depth(store, a1).await;
        assert_eq!(
            store.mark_read(read(carol, 1, NOW)).await,
            Err(StoreError::NotMember)
        );
        let nowhere = ReadRequest {
            conversation: ConversationId(987_654_321),
            ..read(bob, 1, NOW)
        };
        assert_eq!(
            store.mark_read(nowhere).await,
            Err(StoreError::UnknownConversation)
        );
        assert_eq!(depth(store, a1).await, depth_a1);
    }

    /// 7. Store-and-forward.
    pub async fn store_and_forward(store: Arc<dyn Store>) {
        // Goal: with purge_acked_bodies, a body lives exactly as long as some
        // queue still holds its message; without it, the body stays (until
        // retention).
        // Method: M1 (acks purge) and M2 (acks do not purge) go from a1 to
        // a2, b1, b2. Ack M1 device by device and check the remaining queues
        // still deliver the full text. The only backend-neutral observable of
        // the final purge is `sweep`: with a retention cutoff after both
        // messages it must find exactly one unqueued body (M2), because M1's
        // was already deleted by the last ack. (The SQLite section checks the
        // row itself.)
        let store = &*store;
        let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
        let m1 = send(store, conv, alice, a1, "m1").await;
        let m2 = send(store, conv, alice, a1, "m2").await;
        let has_body = |items: &[QueueItem], id: &MessageId, cmid: &str| {
            items.iter().any(|item| {
                matches!(item, QueueItem::Message { message_id, text, .. }
                    if message_id == id && *text == text_of(cmid))
            })
        };

        let m1_id = &m1.message_id;
        let m1_body_at = move |device: DeviceId| async move {
            has_body(&pending_all(store, device).await, m1_id, "m1")
        };

        assert_eq!(ack_message(store, b1, bob, m1_id, true).await.removed, 1);
        assert!(m1_body_at(b2).await);
        assert!(m1_body_at(a2).await);

        assert_eq!(ack_message(store, b2, bob, m1_id, true).await.removed, 1);
        assert!(
            m1_body_at(a2).await,
            "the body was purged while the sender's other device still had it queued"
        );

        assert_eq!(ack_message(store, a2, alice, m1_id, true).await.removed, 1);
        for device in [a1, a2, b1, b2] {
            assert!(!pending_ids(store, device).await.contains(m1_id));
        }

        for (device, account) in [(b1, bob), (b2, bob), (a2, alice)] {
            let removed = ack_message(store, device, account, &m2.message_id, false)
                .await
                .removed;
            assert_eq!(removed, 1);
        }

        let swept = store
            .sweep(SweepRequest {
                now_ms: NOW,
                bodies_before_ms: NOW + 1,
                dedup_before_ms: NOW,
                limit: 100,
            })
            .await
            .expect("sweep");
        assert_eq!(
            swept,
            SweepOutcome {
                expired_entries: 0,
                purged_bodies: 1,
                purged_dedup: 0,
            },
            "expected only M2's body left for retention to purge"
        );

        // Idempotence outlives the body.
        let retry = send(store, conv, alice, a1, "m1").await;
        assert!(retry.duplicate);
        assert_eq!((retry.message_id, retry.seq), (m1.message_id.clone(), 1));
        assert_eq!(send(store, conv, alice, a1, "m3").await.seq, 3);
    }

    /// 8. Expiry and sweep.
    pub async fn expiry_and_sweep(store: Arc<dyn Store>) {
        // Goal: an entry whose expiry is ≤ now is invisible to pending(now)
        // and deleted by sweep; sweep purges unqueued bodies older than the
        // cutoff (never a queued one) and dedup records older than theirs,
        // at most `limit` of each, reporting exact counts.
        // Method: three messages with different creation/expiry times; read
        // pending at boundary times; sweep step by step and check counts,
        // depth and what is still delivered. Finally show the dedup window:
        // inside it a retry is a duplicate, after the record is swept the
        // same client_msg_id is a new message. That is intended: dedup
        // protects retries within the window, not forever.
        let store = &*store;
        let Cast(alice, _, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;
        let append = |cmid: &str, now: UnixMillis, expires: UnixMillis| {
            store.append_message(new_message(conv, alice, a1, cmid, now, expires))
        };
        let m1 = append("m1", NOW, NOW + 10).await.expect("m1");
        let m2 = append("m2", NOW, NOW + DAY_MS).await.expect("m2");
        let m3 = append("m3", NOW + 50, NOW + 60).await.expect("m3");
        let ids_at = |now: UnixMillis| async move {
            message_ids(&store.pending(b1, 0, ALL, now).await.expect("pending"))
        };
        let (id1, id2, id3) = (
            m1.message_id.clone(),
            m2.message_id.clone(),
            m3.message_id.clone(),
        );

        assert_eq!(
            ids_at(NOW + 9).await,
            vec![id1.clone(), id2.clone(), id3.clone()]
        );
        assert_eq!(ids_at(NOW + 10).await, vec![id2.clone(), id3.clone()]);
        assert_eq!(ids_at(NOW + 59).await, vec![id2.clone(), id3.clone()]);
        assert_eq!(ids_at(NOW + 60).await, vec![id2.clone()]);
        assert_eq!(depth(store, b1).await, 3, "depth counts expired entries");

        // sweep that must succeed.
        let sweep = |now_ms, bodies_before_ms, dedup_before_ms, limit| async move {
            store
                .sweep(SweepRequest {
                    now_ms,
                    bodies_before_ms,
                    dedup_before_ms,
                    limit,
                })
                .await
                .expect("sweep")
        };
        let outcome = |expired_entries, purged_bodies, purged_dedup| SweepOutcome {
            expired_entries,
            purged_bodies,
            purged_dedup,
        };

        // M1 expires and, now unqueued and old enough, loses its body; M2 is
        // old enough but queued; M3 is too young.
        assert_eq!(sweep(NOW + 10, NOW + 1, NOW, 100).await, outcome(1, 1, 0));
        assert_eq!(depth(store, b1).await, 2);
        assert_eq!(ids_at(NOW + 10).await, vec![id2.clone(), id3.clone()]);
        // M3 expires; its body is still younger than the cutoff.
        assert_eq!(sweep(NOW + 60, NOW + 1, NOW, 100).await, outcome(1, 0, 0));
        assert_eq!(depth(store, b1).await, 1);
        // A later cutoff takes M3's body; M2's stays because it is queued.
        assert_eq!(sweep(NOW + 60, NOW + 51, NOW, 100).await, outcome(0, 1, 0));
        assert_eq!(
            sweep(NOW + 60, NOW + DAY_MS - 1, NOW, 100).await,
            outcome(0, 0, 0)
        );
        let still = store.pending(b1, 0, ALL, NOW + 60).await.expect("pending");
        assert!(
            matches!(&still[..], [QueueItem::Message { message_id, text, .. }]
                if *message_id == id2 && *text == text_of("m2")),
            "the queued M2 lost its body: {still:?}"
        );

        // Dedup window: inside it retries are duplicates (even without a body).
        let retry = append("m1", NOW + 70, NOW + DAY_MS).await.expect("retry");
        assert!(retry.duplicate);
        assert_eq!((retry.message_id, retry.seq), (id1.clone(), 1));
        // Records of M1 and M2 (created at NOW) are older than NOW + 1; M3's is not.
        assert_eq!(
            sweep(NOW + 70, NOW - 1, NOW + 1, 100).await,
            outcome(0, 0, 2)
        );
        assert_eq!(
            sweep(NOW + 70, NOW - 1, NOW + 1, 100).await,
            outcome(0, 0, 0)
        );
        let m3_retry = append("m3", NOW + 70, NOW + DAY_MS).await.expect("retry");
        assert!(m3_retry.duplicate);
        assert_eq!(m3_retry.seq, 3);
        let reborn = append("m1", NOW + 70, NOW + DAY_MS)
            .await
            .expect("after window");
        assert!(
            !reborn.duplicate,
            "a client_msg_id past the dedup window must be a new message"
        );
        assert_eq!(reborn.seq, 4);
        assert_ne!(reborn.message_id, id1);
        assert_eq!(
            ids_at(NOW + 70).await,
            vec![id2.clone(), reborn.message_id.clone()]
        );

        // `limit` bounds each kind of deletion per call.
        for i in 5..=7 {
            append(&format!("m{i}"), NOW + 70, NOW + 80)
                .await
                .expect("append");
        }
        assert_eq!(depth(store, b1).await, 5);
        // Only b1 has a queue in this scenario, so the total is its depth.
        assert_eq!(store.queue_depth_total().await.expect("total"), 5);
        assert_eq!(sweep(NOW + 80, NOW - 1, NOW - 1, 2).await, outcome(2, 0, 0));
        assert_eq!(sweep(NOW + 80, NOW - 1, NOW - 1, 2).await, outcome(1, 0, 0));
        // Bodies: M5-M7 are unqueued now (3); dedup: M3, M1 again, M5-M7 (5).
        let drain = [
            outcome(0, 2, 2),
            outcome(0, 1, 2),
            outcome(0, 0, 1),
            outcome(0, 0, 0),
        ];
        for (call, expected) in drain.into_iter().enumerate() {
            let swept = sweep(NOW + 80, NOW + 71, NOW + 71, 2).await;
            assert_eq!(swept, expected, "sweep call {call} of the drain");
        }
        assert_eq!(depth(store, b1).await, 2);
        assert_eq!(ids_at(NOW + 80).await, vec![id2, reborn.message_id]);

        // Everything expires eventually.
        assert_eq!(
            sweep(NOW + DAY_MS + 70, NOW - 1, NOW - 1, 100).await,
            outcome(2, 0, 0)
        );
        assert_eq!(depth(store, b1).await, 0);
        assert!(ids_at(NOW).await.is_empty(), "swept entries came back");
    }

    /// One step of the model-based test.
    #[derive(Clone, Debug)]
    pub enum Op {
        /// Append from alice's device (`bob == false`) or bob's.
        Send { bob: bool, cmid: u8 },
        /// bob's device acks up to one of the positions seen so far.
        AckUpTo(Index),
        /// bob's device acks some of the positions seen so far.
        AckPositions(Vec<Index>),
    }

    pub fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (any::<bool>(), 0u8..6).prop_map(|(bob, cmid)| Op::Send { bob, cmid }),
            1 => any::<Index>().prop_map(Op::AckUpTo),
            1 => proptest::collection::vec(any::<Index>(), 0..4).prop_map(Op::AckPositions),
        ];
        proptest::collection::vec(op, 1..48)
    }

    /// What the model expects in alice's queue.
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Expect {
        Message(MessageId),
        Delivered(MessageId),
    }

    /// Checks bob's ack against the model, in which it took `gone` out of
    /// bob's queue: exactly those are removed, alice's device `a1` is woken
    /// if and only if any were, and it gets their receipts as one batch.
    fn check_ack(
        outcome: &AckOutcome,
        gone: Vec<(QueuePos, MessageId)>,
        a1: DeviceId,
        alice_queue: &mut Vec<Vec<Expect>>,
        what: &str,
    ) {
        assert_eq!(outcome.removed, gone.len() as u64, "{what}");
        let expected_wake = if gone.is_empty() { vec![] } else { vec![a1] };
        assert_eq!(outcome.queued_for, expected_wake);
        alice_queue.push(
            gone.into_iter()
                .map(|(_, id)| Expect::Delivered(id))
                .collect(),
        );
    }

    /// 9. Model-based test.
    pub async fn model_based(store: Arc<dyn Store>, ops: Vec<Op>) {
        // Goal: under any interleaving of appends (with retries), acks up to
        // a position and acks of position lists, the store agrees with a
        // trivial in-memory model.
        // Method: alice (a1) and bob (b1), one device each. Apply `ops`; after
        // every op compare seqs, duplicate answers, ack counts, and bob's and
        // alice's whole queues with the model.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;

        let mut n_stored: Seq = 0;
        let mut originals: HashMap<(bool, u8), (MessageId, Seq, UnixMillis)> = HashMap::new();
        let mut bob_queue: Vec<(QueuePos, MessageId)> = Vec::new();
        // Batches in commit order; receipts made by one ack are one batch
        // (their order within the batch is not specified).
        let mut alice_queue: Vec<Vec<Expect>> = Vec::new();
        let mut seen_positions: Vec<QueuePos> = Vec::new();
        let mut last_pos: QueuePos = 0;

        for (step, op) in ops.into_iter().enumerate() {
            let now = NOW + step as i64;
            match op {
                Op::Send {
                    bob: from_bob,
                    cmid,
                } => {
                    let (account, device) = if from_bob { (bob, b1) } else { (alice, a1) };
                    let cmid_text = format!("c{cmid}");
                    let appended = store
                        .append_message(new_message(
                            conv,
                            account,
                            device,
                            &cmid_text,
                            now,
                            NOW + DAY_MS,
                        ))
                        .await
                        .expect("append");
                    if let Some((id, seq, ts)) = originals.get(&(from_bob, cmid)) {
                        assert!(appended.duplicate, "step {step}: retry not recognised");
                        assert_eq!(
                            (&appended.message_id, appended.seq, appended.ts_ms),
                            (id, *seq, *ts),
                            "step {step}: retry answered differently"
                        );
                        assert!(appended.queued_for.is_empty());
                    } else {
                        assert!(
                            !appended.duplicate,
                            "step {step}: first send taken for a retry"
                        );
                        n_stored += 1;
                        assert_eq!(appended.seq, n_stored, "step {step}: seq gap or repeat");
                        assert_eq!(appended.ts_ms, now);
                        originals.insert(
                            (from_bob, cmid),
                            (appended.message_id.clone(), appended.seq, now),
                        );
                        if from_bob {
                            assert_eq!(appended.queued_for, vec![a1]);
                            alice_queue.push(vec![Expect::Message(appended.message_id.clone())]);
                        } else {
                            assert_eq!(appended.queued_for, vec![b1]);
                            let fresh = store
                                .pending(b1, last_pos, ALL, now)
                                .await
                                .expect("pending");
                            assert_eq!(
                                fresh.len(),
                                1,
                                "step {step}: expected exactly the new entry"
                            );
                            assert_eq!(message_ids(&fresh), vec![appended.message_id.clone()]);
                            let pos = fresh[0].pos();
                            assert!(pos > last_pos, "step {step}: position went backwards");
                            last_pos = pos;
                            seen_positions.push(pos);
                            bob_queue.push((pos, appended.message_id.clone()));
                        }
                    }
                }
                Op::AckUpTo(index) => {
                    let up_to = if seen_positions.is_empty() {
                        0
                    } else {
                        seen_positions[index.index(seen_positions.len())]
                    };
                    let (gone, kept): (Vec<_>, Vec<_>) =
                        bob_queue.iter().cloned().partition(|(p, _)| *p <= up_to);
                    bob_queue = kept;
                    let outcome = ack(store, b1, bob, Some(up_to), vec![], false).await;
                    let what = format!("step {step}: ack up_to {up_to}");
                    check_ack(&outcome, gone, a1, &mut alice_queue, &what);
                }
                Op::AckPositions(indices) => {
                    let listed: Vec<QueuePos> = if seen_positions.is_empty() {
                        vec![]
                    } else {
                        indices
                            .iter()
                            .map(|i| seen_positions[i.index(seen_positions.len())])
                            .collect()
                    };
                    let listed_set: BTreeSet<QueuePos> = listed.iter().copied().collect();
                    let (gone, kept): (Vec<_>, Vec<_>) = bob_queue
                        .iter()
                        .cloned()
                        .partition(|(p, _)| listed_set.contains(p));
                    bob_queue = kept;
                    let outcome = ack(store, b1, bob, None, listed.clone(), false).await;
                    let what = format!("step {step}: ack {listed:?}");
                    check_ack(&outcome, gone, a1, &mut alice_queue, &what);
                }
            }

            // Invariants after every step.
            let bob_items = store.pending(b1, 0, ALL, now).await.expect("pending");
            assert_eq!(
                bob_items.len(),
                bob_queue.len(),
                "step {step}: bob's queue has foreign items"
            );
            let actual: Vec<(QueuePos, MessageId)> = messages(&bob_items)
                .into_iter()
                .map(|(p, id, _)| (p, id))
                .collect();
            assert_eq!(
                actual, bob_queue,
                "step {step}: bob's queue differs from the model"
            );
            assert_eq!(depth(store, b1).await, bob_queue.len() as u64);

            let alice_items = store.pending(a1, 0, ALL, now).await.expect("pending");
            let alice_actual: Vec<Expect> = alice_items
                .iter()
                .map(|item| match item {
                    QueueItem::Message { message_id, .. } => Expect::Message(message_id.clone()),
                    QueueItem::Delivered { message_id, .. } => {
                        Expect::Delivered(message_id.clone())
                    }
                    other => panic!("step {step}: unexpected item in alice's queue: {other:?}"),
                })
                .collect();
            assert_same_in_batches(
                &alice_actual,
                &alice_queue,
                &format!("step {step}: alice's queue"),
            );

            let mut seqs: Vec<Seq> = originals.values().map(|(_, seq, _)| *seq).collect();
            seqs.sort_unstable();
            assert_eq!(
                seqs,
                (1..=n_stored).collect::<Vec<_>>(),
                "step {step}: seqs have gaps"
            );
        }
    }

    /// 10. Concurrent appends.
    pub async fn concurrent_appends(store: Arc<dyn Store>) {
        // Goal: concurrent appends into one conversation still get gap-free,
        // unique seqs, every queue is in seq order, and concurrent retries
        // are all recognised.
        // Method: 8 tasks over 4 devices (2 per member) each append 50
        // distinct client_msg_ids at once; then check seqs 1..=400, the
        // (device, client_msg_id) ↔ seq mapping seen in the queues, and
        // queue order. Then 8 tasks retry a spread of those sends at once.
        const TASKS: usize = 8;
        const PER_TASK: usize = 50;
        let total = (TASKS * PER_TASK) as i64;
        let Cast(alice, bob, conv, [a1, a2, b1, b2]) =
            cast(&*store, ["a1", "a2", "b1", "b2"]).await;
        let senders = [(alice, a1), (alice, a2), (bob, b1), (bob, b2)];

        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            let (account, device) = senders[task % senders.len()];
            tasks.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for k in 0..PER_TASK {
                    let cmid = format!("t{task}-{k}");
                    let appended = send(&*store, conv, account, device, &cmid).await;
                    assert!(!appended.duplicate);
                    sent.push((device, cmid, appended.seq, appended.message_id));
                }
                sent
            }));
        }
        let mut sent: Vec<(DeviceId, String, Seq, MessageId)> = Vec::new();
        for task in tasks {
            sent.extend(task.await.expect("task panicked"));
        }
        let mut seqs: Vec<Seq> = sent.iter().map(|s| s.2).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=total).collect::<Vec<_>>(),
            "seqs are not exactly 1..=400"
        );
        let distinct_ids: HashSet<&MessageId> = sent.iter().map(|s| &s.3).collect();
        assert_eq!(distinct_ids.len(), sent.len());
        // Each task's own sends got increasing seqs (it awaited each one).
        for task in 0..TASKS {
            let own: Vec<Seq> = sent
                .iter()
                .filter(|s| s.1.starts_with(&format!("t{task}-")))
                .map(|s| s.2)
                .collect();
            assert!(own.windows(2).all(|w| w[0] < w[1]), "task {task}: {own:?}");
        }

        // What the queues say, per seq: (from_device, client_msg_id, message_id).
        let by_seq: HashMap<Seq, (DeviceId, String, MessageId)> = sent
            .iter()
            .map(|(device, cmid, seq, id)| (*seq, (*device, cmid.clone(), id.clone())))
            .collect();
        let mut seen_pairs: HashSet<(DeviceId, String)> = HashSet::new();
        for (_, device) in senders {
            let items = pending_all(&*store, device).await;
            let mut queue_seqs = Vec::new();
            for item in &items {
                let QueueItem::Message {
                    seq,
                    from_device,
                    client_msg_id,
                    message_id,
                    conversation,
                    ..
                } = item
                else {
                    panic!("unexpected item {item:?}");
                };
                assert_eq!(*conversation, conv);
                assert_ne!(*from_device, device, "a device got its own message");
                assert_eq!(
                    by_seq.get(seq),
                    Some(&(*from_device, client_msg_id.clone(), message_id.clone())),
                    "seq {seq} in device {device}'s queue"
                );
                seen_pairs.insert((*from_device, client_msg_id.clone()));
                queue_seqs.push(*seq);
            }
            let expected = sent.iter().filter(|s| s.0 != device).count();
            assert_eq!(queue_seqs.len(), expected, "device {device}'s queue size");
            assert!(
                queue_seqs.windows(2).all(|w| w[0] < w[1]),
                "device {device}: pending order differs from seq order"
            );
        }
        assert_eq!(
            seen_pairs.len(),
            sent.len(),
            "(device, client_msg_id) pairs are not unique"
        );

        // Concurrent retries: all duplicates with their original seq; nothing stored.
        let mut retries = Vec::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            let (account, device) = senders[task % senders.len()];
            let originals: Vec<(String, Seq, MessageId)> = sent
                .iter()
                .filter(|s| s.1.starts_with(&format!("t{task}-")))
                .step_by(5)
                .map(|s| (s.1.clone(), s.2, s.3.clone()))
                .collect();
            retries.push(tokio::spawn(async move {
                for (cmid, seq, id) in originals {
                    let again = send(&*store, conv, account, device, &cmid).await;
                    assert!(again.duplicate, "retry of {cmid}");
                    assert_eq!((again.seq, again.message_id), (seq, id));
                }
            }));
        }
        for retry in retries {
            retry.await.expect("retry task panicked");
        }
        assert_eq!(send(&*store, conv, alice, a1, "last").await.seq, total + 1);
    }

    /// Goal: a read whose caller gives up half-way (a session ending while
    /// its queue is being read) never makes later reads fail. Method: 20
    /// rounds of starting 32 reads and aborting them at once, each followed
    /// by 32 reads that must all succeed.
    pub async fn cancelled_reads_leave_the_store_usable(store: Arc<dyn Store>) {
        let alice = new_account(&*store, "alice").await;
        let a1 = new_device(&*store, alice, "a1").await;
        let spawn_reads = |n: usize| -> Vec<tokio::task::JoinHandle<_>> {
            (0..n)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move { store.pending(a1, 0, ALL, NOW).await })
                })
                .collect()
        };
        for _ in 0..20 {
            let doomed = spawn_reads(32);
            tokio::task::yield_now().await;
            for read in &doomed {
                read.abort();
            }
            for read in spawn_reads(32) {
                read.await
                    .expect("join")
                    .expect("a read after cancelled reads must succeed");
            }
        }
    }

    /// 11. Lifecycle (extra).
    pub async fn shutdown_refuses_further_calls(store: Arc<dyn Store>) {
        // Goal: a store is ready while open; after shutdown every call is
        // refused with `Closed` (never silently dropped) and is_ready is false.
        // Method: write, shut down, then try a write and a read.
        assert!(store.is_ready().await);
        let alice = new_account(&*store, "alice").await;
        store.shutdown().await;
        assert!(!store.is_ready().await);
        let write = store
            .create_account(NewAccount {
                username: username("bob"),
                password_hash: "h".into(),
                phone: None,
                now_ms: NOW,
            })
            .await;
        assert_eq!(write, Err(StoreError::Closed));
        assert_eq!(store.list_devices(alice).await, Err(StoreError::Closed));
    }
}

/// Expands to one `#[tokio::test]` per scenario plus the model-based
/// proptest, each against a fresh store from `$open()`. A scenario may carry
/// attributes (e.g. `#[ignore = "known bug ..."]`) for this backend.
macro_rules! conformance_tests {
    ($open:path; $($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            $(#[$attr])*
            async fn $scenario() {
                let opened: $crate::Opened = $open();
                $crate::scenarios::$scenario(std::sync::Arc::clone(&opened.store)).await;
                opened.store.shutdown().await;
            }
        )*

        proptest::proptest! {
            #![proptest_config(proptest::test_runner::Config::with_cases(32))]
            #[test]
            fn model_based(ops in $crate::scenarios::ops()) {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async {
                    let opened: $crate::Opened = $open();
                    $crate::scenarios::model_based(std::sync::Arc::clone(&opened.store), ops).await;
                    opened.store.shutdown().await;
                });
            }
        }
    };
}

// ───────────────────────────── SQLite backend ─────────────────────────────

mod sqlite {
    use std::path::PathBuf;
    use std::sync::Arc;

    use missive_store::{SqliteConfig, SqliteStore, Store};
    use tempfile::TempDir;

    use crate::Opened;

    struct Dir {
        _dir: TempDir,
    }

    fn db_path(dir: &TempDir) -> PathBuf {
        dir.path().join("db.sqlite")
    }

    /// A fresh SqliteStore in its own temporary directory, plus that path.
    /// Must be called inside a Tokio runtime.
    fn open_at() -> (Opened, PathBuf) {
        let dir = TempDir::new().expect("temp dir");
        let path = db_path(&dir);
        let store = SqliteStore::open(&SqliteConfig::new(&path)).expect("open sqlite store");
        let store: Arc<dyn Store> = Arc::new(store);
        (
            Opened {
                store,
                _guard: Box::new(Dir { _dir: dir }),
            },
            path,
        )
    }

    fn open() -> Opened {
        open_at().0
    }

    conformance_tests!(
        open;
        accounts,
        devices,
        seq_and_dedup,
        fan_out,
        pending_and_ack,
        mark_read,
        store_and_forward,
        expiry_and_sweep,
        concurrent_appends,
        shutdown_refuses_further_calls,
        revoked_device_identity_is_not_reused,
        cancelled_reads_leave_the_store_usable,
    );

    // ── SQLite-only checks: they look inside the database file. ──

    mod engine {
        use std::path::{Path, PathBuf};
        use std::sync::Arc;

        use missive_store::{SqliteConfig, SqliteStore, Store, SweepRequest};
        use rusqlite::{Connection, OpenFlags};

        use super::open_at;
        use crate::Opened;
        use crate::support::*;

        /// A separate read-only connection on the store's file.
        fn inspect(path: &Path) -> Connection {
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open read-only")
        }

        fn count(conn: &Connection, sql: &str, arg: &str) -> i64 {
            conn.query_row(sql, [arg], |row| row.get(0)).expect("count")
        }

        fn rows(conn: &Connection, table: &str) -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
        }

        fn message_rows(conn: &Connection, id: &str) -> i64 {
            count(conn, "SELECT count(*) FROM messages WHERE id = ?1", id)
        }

        /// Rows in (`queue`, `messages`, `dedup`).
        fn queue_messages_dedup(conn: &Connection) -> (i64, i64, i64) {
            (
                rows(conn, "queue"),
                rows(conn, "messages"),
                rows(conn, "dedup"),
            )
        }

        /// A fresh store (see `open_at`) holding the cast alice (a1) and bob
        /// (b1, b2), and its file.
        async fn open_with_cast() -> (Opened, PathBuf, Cast<3>) {
            let (opened, path) = open_at();
            let cast = cast(&*opened.store, ["a1", "b1", "b2"]).await;
            (opened, path, cast)
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn ack_purge_deletes_the_message_row() {
            // Goal: with purge_acked_bodies the `messages` row is deleted by
            // the ack that empties the last queue holding it, not before;
            // without the flag the row stays.
            // Method: M1 and M2 to b1 and b2; ack device by device and count
            // rows in `messages` through a separate read-only connection.
            let (opened, path, Cast(alice, bob, conv, [a1, b1, b2])) = open_with_cast().await;
            let store = &*opened.store;
            let m1 = send(store, conv, alice, a1, "m1").await;
            let m2 = send(store, conv, alice, a1, "m2").await;
            let db = inspect(&path);
            assert_eq!(message_rows(&db, m1.message_id.as_str()), 1);

            ack_message(store, b1, bob, &m1.message_id, true).await;
            assert_eq!(
                message_rows(&db, m1.message_id.as_str()),
                1,
                "purged while b2 still queued it"
            );
            ack_message(store, b2, bob, &m1.message_id, true).await;
            assert_eq!(
                message_rows(&db, m1.message_id.as_str()),
                0,
                "not purged after the last ack"
            );

            for device in [b1, b2] {
                ack_message(store, device, bob, &m2.message_id, false).await;
            }
            assert_eq!(message_rows(&db, m2.message_id.as_str()), 1);
            assert_eq!(
                rows(&db, "queue"),
                2,
                "only the two delivered receipts (to a1) remain"
            );
            assert_eq!(
                count(
                    &db,
                    "SELECT count(*) FROM queue WHERE device_id = ?1",
                    &a1.0.to_string()
                ),
                2
            );
            opened.store.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn sweep_and_revoke_delete_rows() {
            // Goal: the counts sweep reports are the rows actually deleted,
            // and revoke removes the device's rows.
            // Method: two messages, one expiring; count `queue`, `messages`,
            // `dedup` and `devices` rows before and after sweep and revoke.
            let (opened, path, Cast(alice, bob, conv, [a1, _b1, b2])) = open_with_cast().await;
            let store = &*opened.store;
            store
                .append_message(new_message(conv, alice, a1, "m1", NOW, NOW + 10))
                .await
                .expect("m1");
            send(store, conv, alice, a1, "m2").await;
            let db = inspect(&path);
            assert_eq!(queue_messages_dedup(&db), (4, 2, 2));

            let outcome = store
                .sweep(SweepRequest {
                    now_ms: NOW + 10,
                    bodies_before_ms: NOW + 1,
                    dedup_before_ms: NOW + 1,
                    limit: 100,
                })
                .await
                .expect("sweep");
            assert_eq!(
                (
                    outcome.expired_entries,
                    outcome.purged_bodies,
                    outcome.purged_dedup
                ),
                (2, 1, 2)
            );
            assert_eq!(queue_messages_dedup(&db), (2, 1, 0));

            assert!(store.revoke_device(bob, b2).await.expect("revoke"));
            assert_eq!(rows(&db, "devices"), 2);
            assert_eq!(rows(&db, "queue"), 1);
            opened.store.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn reopen_keeps_everything() {
            // Goal: what was acknowledged before shutdown survives a reopen
            // of the same file: accounts, tokens, queues, seqs, dedup.
            // Method: write, shut down, open the same path again, read back
            // and continue the conversation.
            let (opened, path, Cast(alice, bob, conv, [a1, b1, _b2])) = open_with_cast().await;
            let store = &*opened.store;
            let m1 = send(store, conv, alice, a1, "m1").await;
            let before = pending_all(store, b1).await;
            opened.store.shutdown().await;

            let reopened: Arc<dyn Store> =
                Arc::new(SqliteStore::open(&SqliteConfig::new(&path)).expect("reopen"));
            let store = &*reopened;
            assert_eq!(auth(store, "b1").await.map(|a| a.device), Some(b1));
            assert_eq!(pending_all(store, b1).await, before);
            let retry = send(store, conv, alice, a1, "m1").await;
            assert!(retry.duplicate);
            assert_eq!(retry.message_id, m1.message_id);
            assert_eq!(send(store, conv, alice, a1, "m2").await.seq, 2);
            assert_eq!(direct(store, bob, alice, NOW).await, conv);
            reopened.shutdown().await;
            drop(opened);
        }
    }
}
