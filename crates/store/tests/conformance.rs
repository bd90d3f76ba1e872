//! The Store conformance suite.
//!
//! Every scenario in [`scenarios`] is written once against `Arc<dyn Store>`
//! and knows nothing about the engine behind it. A backend joins the suite by
//! providing an `async fn open() -> Option<Opened>` that returns a fresh,
//! empty store (plus whatever must live as long as it), or `None` when the
//! backend's service is not there and the test is skipped, and invoking
//! [`conformance_tests!`], which turns every scenario into one
//! `#[tokio::test]` (and the model-based property test into one `proptest`)
//! in the backend's module: `mod sqlite` and `mod postgres` at the bottom.
//!
//! Checks that need to look inside the engine (rows in SQLite tables,
//! reopening the file, several PostgreSQL nodes on one database) live in
//! the backend's module, clearly separated from the shared scenarios.
//!
//! Time never passes on its own here: every call takes an explicit `now_ms`
//! derived from [`support::NOW`], so expiry is tested without sleeping.
//!
//! The delivery model under test: a message is one stored row; what waits
//! for a device is every event of its conversations above its position
//! (cumulative acks move it forward, never back); receipts are per-member
//! cursors (delivered, read). See `crates/store/src/lib.rs`.

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
    use std::collections::BTreeMap;

    use missive_core::{
        AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText, Seq, TokenHash,
        UnixMillis, Username,
    };
    use missive_store::{
        AccountRecord, AckOutcome, AckRequest, Appended, Body, ConversationRecord, DeviceAuth,
        DeviceRecord, EventKind, GroupChange, GroupChangeRequest, GroupChanged, GroupName,
        GroupRecord, HistoryRequest, MemberReceipts, NewAccount, NewDevice, NewGroup, NewMessage,
        Pending, PendingItem, PendingRequest, ReadOutcome, ReadRequest, ReceiptMoved,
        RevokedDevice, Role, Store, StoreError, StoredEvent, SweepOutcome, SweepRequest,
    };

    /// The suite's "now"; everything else is an offset from it.
    pub const NOW: UnixMillis = 1_700_000_000_000;
    pub const DAY_MS: i64 = 86_400_000;
    /// A `pending` limit larger than anything waiting in the suite.
    pub const ALL: usize = 100_000;
    /// The `now_ms` of acks, distinct from `NOW` so receipt timestamps are checkable.
    pub const ACK_NOW: UnixMillis = NOW + 7;
    /// An `expired_before_ms` that expires nothing the suite stores.
    pub const NO_EXPIRY: UnixMillis = NOW - DAY_MS;
    /// A sweep cutoff that nothing the suite stores is older than.
    pub const LONG_AGO: UnixMillis = NOW - DAY_MS;
    /// A conversation id no store hands out in the suite.
    pub const NOWHERE: ConversationId = ConversationId(987_654_321);

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
                invite: None,
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
                replace_least_recent: false,
                now_ms: NOW,
            })
            .await
            .expect("create_device")
            .id
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
            .direct_conversation(a, b, now_ms, false)
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
    /// `token(label)`), then their direct conversation at `NOW`. The devices
    /// exist before the conversation, so they all start at its beginning.
    pub async fn cast<const N: usize>(store: &dyn Store, labels: [&str; N]) -> Cast<N> {
        let (alice, bob) = alice_and_bob(store).await;
        let devices = cast_devices(store, &[('a', alice), ('b', bob)], labels).await;
        let conv = direct(store, alice, bob, NOW).await;
        Cast(alice, bob, conv, devices)
    }

    /// [`cast`], then alice's text "m1" (`text_of("m1")`, seq 1) at `NOW`
    /// from her first device; returns the cast and that text's id.
    pub async fn cast_with_text<const N: usize>(
        store: &dyn Store,
        labels: [&str; N],
    ) -> (Cast<N>, MessageId) {
        let cast = cast(store, labels).await;
        let a1 = first_of_alice(&labels, &cast.3);
        let m1 = send_at(store, cast.2, cast.0, a1, "m1", NOW).await;
        assert_eq!(m1.seq, 1);
        (cast, m1.message_id)
    }

    /// The device of the first label naming alice.
    fn first_of_alice(labels: &[&str], devices: &[DeviceId]) -> DeviceId {
        let idx = labels
            .iter()
            .position(|label| label.starts_with('a'))
            .expect("the cast needs a device of alice");
        devices[idx]
    }

    /// One device per label, in order, owned by the account whose letter
    /// starts the label; its token hash is `token(label)`.
    async fn cast_devices<const N: usize>(
        store: &dyn Store,
        owners: &[(char, AccountId)],
        labels: [&str; N],
    ) -> [DeviceId; N] {
        let mut devices = Vec::with_capacity(N);
        for label in labels {
            let owner = owners
                .iter()
                .find(|(letter, _)| label.starts_with(*letter))
                .unwrap_or_else(|| panic!("device label {label:?} names no account of the cast"))
                .1;
            devices.push(new_device(store, owner, label).await);
        }
        devices.try_into().expect("one device per label")
    }

    /// The group cast, built by [`group_cast`]:
    /// `GroupCast([alice, bob, carol, dave], group, devices)`.
    pub struct GroupCast<const N: usize>(pub [AccountId; 4], pub ConversationId, pub [DeviceId; N]);

    /// alice, bob, carol and dave, one device per label (its first letter
    /// 'a', 'b', 'c' or 'd' names the owner), then the group "team" that
    /// alice creates at `NOW` from her first device with bob and carol in
    /// it (seq 1). dave is the outsider.
    pub async fn group_cast<const N: usize>(store: &dyn Store, labels: [&str; N]) -> GroupCast<N> {
        let (alice, bob) = alice_and_bob(store).await;
        let carol = new_account(store, "carol").await;
        let dave = new_account(store, "dave").await;
        let owners = [('a', alice), ('b', bob), ('c', carol), ('d', dave)];
        let devices = cast_devices(store, &owners, labels).await;
        let creator_device = first_of_alice(&labels, &devices);
        let created = create_group(
            store,
            new_group(alice, creator_device, "team", &[bob, carol], NOW),
        )
        .await;
        assert_eq!(created.seq, 1, "the created event is seq 1");
        GroupCast([alice, bob, carol, dave], created.conversation, devices)
    }

    /// A new account `name` with one device `label`.
    pub async fn account_with_device(
        store: &dyn Store,
        name: &str,
        label: &str,
    ) -> (AccountId, DeviceId) {
        let account = new_account(store, name).await;
        (account, new_device(store, account, label).await)
    }

    pub async fn account_named(store: &dyn Store, name: &str) -> Option<AccountRecord> {
        store
            .account_by_username(&username(name))
            .await
            .expect("account_by_username")
    }

    /// The account owning `device` (through `device_owner`).
    pub async fn account_of(store: &dyn Store, device: DeviceId) -> AccountId {
        let name = store
            .device_owner(device)
            .await
            .expect("device_owner")
            .unwrap_or_else(|| panic!("device {device} has no owner"));
        account_named(store, &name)
            .await
            .unwrap_or_else(|| panic!("the owner {name:?} of device {device} is unknown"))
            .id
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

    /// How many events lie above the device's positions.
    pub async fn waiting(store: &dyn Store, device: DeviceId) -> u64 {
        store.waiting(device).await.expect("waiting")
    }

    pub fn text_of(cmid: &str) -> String {
        format!("text of {cmid}")
    }

    /// A request to append the text `text_of(cmid)` at `now_ms`.
    pub fn new_message(
        conversation: ConversationId,
        account: AccountId,
        device: DeviceId,
        cmid: &str,
        now_ms: UnixMillis,
    ) -> NewMessage {
        NewMessage {
            message_id: MessageId::generate(),
            conversation,
            sender_account: account,
            sender_device: device,
            client_msg_id: ClientMsgId::parse(cmid).expect("valid client_msg_id"),
            body: plain(&text_of(cmid)),
            now_ms,
        }
    }

    /// Appends at `NOW`; panics on refusal.
    pub async fn send(
        store: &dyn Store,
        conversation: ConversationId,
        account: AccountId,
        device: DeviceId,
        cmid: &str,
    ) -> Appended {
        send_at(store, conversation, account, device, cmid, NOW).await
    }

    /// Appends the text `text_of(cmid)` at `now_ms`; panics on refusal.
    pub async fn send_at(
        store: &dyn Store,
        conversation: ConversationId,
        account: AccountId,
        device: DeviceId,
        cmid: &str,
        now_ms: UnixMillis,
    ) -> Appended {
        store
            .append_message(new_message(conversation, account, device, cmid, now_ms))
            .await
            .expect("append_message")
    }

    /// A request to append `body` at `now_ms`.
    pub fn message_with(
        conversation: ConversationId,
        account: AccountId,
        device: DeviceId,
        cmid: &str,
        body: Body,
        now_ms: UnixMillis,
    ) -> NewMessage {
        NewMessage {
            body,
            ..new_message(conversation, account, device, cmid, now_ms)
        }
    }

    /// Appends `message`; panics on refusal.
    pub async fn append_ok(store: &dyn Store, message: NewMessage) -> Appended {
        store.append_message(message).await.expect("append_message")
    }

    /// Asserts that `appended` is a new message (not a duplicate) at `seq`:
    /// after refusals, that they left neither a seq nor an idempotency record.
    pub fn assert_new(appended: &Appended, seq: Seq) {
        assert_eq!(
            (appended.seq, appended.duplicate),
            (seq, false),
            "expected a new message at seq {seq}"
        );
    }

    /// The edit window the scenarios pass in `Body::Edit`.
    pub const WINDOW_MS: i64 = 900_000;

    pub fn text(text: &str) -> MessageText {
        MessageText::parse(text, 4096).expect("valid text")
    }

    /// A text that replies to nothing.
    pub fn plain(body: &str) -> Body {
        Body::Text {
            text: text(body),
            reply_to: None,
            media: Vec::new(),
        }
    }

    /// A text replying to `to`.
    pub fn reply(body: &str, to: &MessageId) -> Body {
        Body::Text {
            text: text(body),
            reply_to: Some(to.clone()),
            media: Vec::new(),
        }
    }

    /// A reaction to `target`; `None` removes the sender's reaction.
    pub fn react(target: &MessageId, emoji: Option<&str>) -> Body {
        Body::Reaction {
            target: target.clone(),
            emoji: emoji.map(str::to_owned),
        }
    }

    /// An edit of `target` with the window [`WINDOW_MS`].
    pub fn edit(target: &MessageId, body: &str) -> Body {
        Body::Edit {
            target: target.clone(),
            text: text(body),
            window_ms: WINDOW_MS,
        }
    }

    pub fn delete(target: &MessageId) -> Body {
        Body::Delete {
            target: target.clone(),
        }
    }

    /// The account's view of one conversation in `conversations()`.
    pub async fn conversation_of(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
    ) -> Option<ConversationRecord> {
        conversation_list(store, account)
            .await
            .into_iter()
            .find(|record| record.conversation == conversation)
    }

    pub async fn conversation_list(
        store: &dyn Store,
        account: AccountId,
    ) -> Vec<ConversationRecord> {
        store.conversations(account).await.expect("conversations")
    }

    /// The conversations of `account`, in the order `conversations()` lists them.
    pub async fn conversation_ids(store: &dyn Store, account: AccountId) -> Vec<ConversationId> {
        conversation_list(store, account)
            .await
            .iter()
            .map(|record| record.conversation)
            .collect()
    }

    /// The other members' receipt cursors as `account` sees them in
    /// `conversations()`.
    pub async fn cursors(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
    ) -> Vec<MemberReceipts> {
        conversation_of(store, account, conversation)
            .await
            .unwrap_or_else(|| panic!("{conversation} is not listed for {account}"))
            .receipts
    }

    /// A member's cursors as `conversations()` reports them.
    pub fn cursor(username: &str, delivered_seq: Seq, read_seq: Seq) -> MemberReceipts {
        MemberReceipts {
            username: username.to_owned(),
            delivered_seq,
            read_seq,
        }
    }

    /// Asserts that `message` is refused with `expected` and changed nothing:
    /// not the conversation's last seq as its sender sees it, not what waits
    /// for `watched`.
    pub async fn assert_refused(
        store: &dyn Store,
        message: NewMessage,
        expected: StoreError,
        watched: &[DeviceId],
    ) {
        let (account, conversation) = (message.sender_account, message.conversation);
        let cmid = message.client_msg_id.as_str().to_owned();
        let last_seq = |record: Option<ConversationRecord>| record.map(|r| r.last_seq);
        let seq_before = last_seq(conversation_of(store, account, conversation).await);
        let mut pending_before = Vec::new();
        for device in watched {
            pending_before.push(pending_all(store, *device).await);
        }
        assert_eq!(
            store.append_message(message).await,
            Err(expected.clone()),
            "append {cmid:?}"
        );
        assert_eq!(
            last_seq(conversation_of(store, account, conversation).await),
            seq_before,
            "a refused append ({expected:?}) consumed a seq"
        );
        for (device, before) in watched.iter().zip(pending_before) {
            assert_eq!(
                pending_all(store, *device).await,
                before,
                "a refused append ({expected:?}) changed what waits for device {device}"
            );
        }
    }

    // ── Pending pages ──

    /// One page of what waits for the device (its account looked up).
    pub async fn pending_page(
        store: &dyn Store,
        device: DeviceId,
        after: &[(ConversationId, Seq)],
        limit: usize,
        expired_before_ms: UnixMillis,
    ) -> Pending {
        let account = account_of(store, device).await;
        let read = store.pending(PendingRequest {
            device,
            account,
            after: after.to_vec(),
            limit,
            expired_before_ms,
        });
        // A scan that never ends (a cursor that stops moving) fails here
        // instead of hanging the suite.
        tokio::time::timeout(PENDING_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("pending for device {device} did not answer in time"))
            .expect("pending")
    }

    /// How long one `pending` call may take before the suite gives up on it.
    const PENDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    /// Everything waiting for the device, nothing expired by age.
    pub async fn pending_all(store: &dyn Store, device: DeviceId) -> Vec<PendingItem> {
        let page = pending_page(store, device, &[], ALL, NO_EXPIRY).await;
        assert!(
            !page.more,
            "device {device}: a page of {} items said more waits",
            page.items.len()
        );
        page.items
    }

    /// The events of `items`, in page order; panics on an `Expired` item.
    pub fn events(items: &[PendingItem]) -> Vec<StoredEvent> {
        items
            .iter()
            .map(|item| match item {
                PendingItem::Event(event) => event.clone(),
                expired => panic!("unexpected {expired:?}"),
            })
            .collect()
    }

    /// message ids of the events of `items`; panics on an `Expired` item.
    pub fn event_ids(items: &[PendingItem]) -> Vec<MessageId> {
        events(items).into_iter().map(|e| e.message_id).collect()
    }

    /// message ids of everything waiting for the device.
    pub async fn pending_ids(store: &dyn Store, device: DeviceId) -> Vec<MessageId> {
        event_ids(&pending_all(store, device).await)
    }

    /// (conversation, seq) each item stands for, in page order.
    pub fn points(items: &[PendingItem]) -> Vec<(ConversationId, Seq)> {
        items.iter().map(PendingItem::point).collect()
    }

    /// The shape of a pending item: an event at (conversation, seq), or an
    /// expired range (conversation, from_seq, to_seq).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Shape {
        Ev(ConversationId, Seq),
        Ex(ConversationId, Seq, Seq),
    }

    pub fn shapes(items: &[PendingItem]) -> Vec<Shape> {
        items
            .iter()
            .map(|item| match item {
                PendingItem::Event(event) => Shape::Ev(event.conversation, event.seq),
                PendingItem::Expired {
                    conversation,
                    from_seq,
                    to_seq,
                } => Shape::Ex(*conversation, *from_seq, *to_seq),
            })
            .collect()
    }

    /// Per-conversation expectations joined in conversation id order (the
    /// order `pending` reads conversations in).
    pub fn in_conversation_order(mut blocks: Vec<(ConversationId, Vec<Shape>)>) -> Vec<Shape> {
        blocks.sort_by_key(|(conversation, _)| *conversation);
        blocks.into_iter().flat_map(|(_, shapes)| shapes).collect()
    }

    /// `items` with adjacent `Expired` ranges of one conversation joined
    /// (a range split across two pages is still one range).
    pub fn merge_expired(items: Vec<PendingItem>) -> Vec<PendingItem> {
        let mut merged: Vec<PendingItem> = Vec::with_capacity(items.len());
        for item in items {
            if let PendingItem::Expired {
                conversation,
                from_seq,
                to_seq,
            } = &item
            {
                if let Some(PendingItem::Expired {
                    conversation: last_conv,
                    to_seq: last_to,
                    ..
                }) = merged.last_mut()
                {
                    if *last_conv == *conversation && *last_to + 1 == *from_seq {
                        *last_to = *to_seq;
                        continue;
                    }
                }
            }
            merged.push(item);
        }
        merged
    }

    /// Reads everything waiting for the device in pages of `limit` the way a
    /// connection does (each call passes, per conversation, the highest
    /// `scanned` so far as `after`), checking every page: at most `limit`
    /// items, `more` whenever the page stopped short of the end, items
    /// above the `after` they were asked with and covered by `scanned`,
    /// `scanned` never moving back. Returns the pages' items joined (with
    /// split expired ranges merged).
    pub async fn walk(
        store: &dyn Store,
        device: DeviceId,
        limit: usize,
        expired_before_ms: UnixMillis,
    ) -> Vec<PendingItem> {
        let mut after: BTreeMap<ConversationId, Seq> = BTreeMap::new();
        let mut items = Vec::new();
        for call in 0.. {
            assert!(call < 10_000, "device {device}: pages never end");
            let asked: Vec<(ConversationId, Seq)> = after.iter().map(|(c, s)| (*c, *s)).collect();
            let page = pending_page(store, device, &asked, limit, expired_before_ms).await;
            let what = format!("device {device}, limit {limit}, call {call} after {asked:?}");
            assert!(page.items.len() <= limit, "{what}: {page:?}");
            if page.items.len() < limit {
                assert!(!page.more, "{what}: a short page said more waits: {page:?}");
            }
            for item in &page.items {
                let (conversation, last) = item.point();
                let first = match item {
                    PendingItem::Event(event) => event.seq,
                    PendingItem::Expired { from_seq, .. } => *from_seq,
                };
                let above = after.get(&conversation).copied().unwrap_or(0);
                assert!(first > above, "{what}: {item:?} is not above {above}");
                let scanned = page
                    .scanned
                    .iter()
                    .find(|(c, _)| *c == conversation)
                    .map(|(_, s)| *s);
                assert!(
                    scanned.is_some_and(|s| s >= last),
                    "{what}: {item:?} lies beyond scanned {:?}",
                    page.scanned
                );
            }
            for (conversation, seq) in &page.scanned {
                let before = after.insert(*conversation, *seq);
                assert!(
                    before.is_none_or(|b| b <= *seq),
                    "{what}: scanned moved back in {conversation}: {before:?} -> {seq}"
                );
            }
            items.extend(page.items);
            if !page.more {
                break;
            }
        }
        merge_expired(items)
    }

    /// The device's waiting event `message_id`.
    pub async fn pending_event(
        store: &dyn Store,
        device: DeviceId,
        message_id: &MessageId,
    ) -> StoredEvent {
        pending_all(store, device)
            .await
            .into_iter()
            .find_map(|item| match item {
                PendingItem::Event(event) if event.message_id == *message_id => Some(event),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{message_id} is not waiting for device {device}"))
    }

    pub fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
        items.sort();
        items
    }

    /// The devices a revocation removed, without what it said of each.
    pub fn device_ids(revoked: Vec<RevokedDevice>) -> Vec<DeviceId> {
        revoked.into_iter().map(|r| r.device).collect()
    }

    // ── Acks and receipt cursors ──

    pub fn ack_request(
        device: DeviceId,
        account: AccountId,
        points: Vec<(ConversationId, Seq)>,
        purge_delivered_bodies: bool,
    ) -> AckRequest {
        AckRequest {
            device,
            account,
            points,
            purge_delivered_bodies,
            now_ms: ACK_NOW,
        }
    }

    /// Acks `points` at `ACK_NOW`; panics on refusal. The outcome comes
    /// back normalised (see [`normalised`]).
    pub async fn ack(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        points: Vec<(ConversationId, Seq)>,
        purge: bool,
    ) -> AckOutcome {
        let outcome = store
            .ack(ack_request(device, account, points, purge))
            .await
            .expect("ack");
        normalised(outcome)
    }

    /// Acks `points` at `now_ms` (no purge); normalised outcome.
    pub async fn ack_at(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        points: Vec<(ConversationId, Seq)>,
        now_ms: UnixMillis,
    ) -> AckOutcome {
        let request = AckRequest {
            now_ms,
            ..ack_request(device, account, points, false)
        };
        normalised(store.ack(request).await.expect("ack"))
    }

    /// An ack outcome with its positions sorted, its receipts sorted by
    /// conversation and each receipt's `notify` sorted: the order of those
    /// lists is not part of the contract.
    pub fn normalised(mut outcome: AckOutcome) -> AckOutcome {
        outcome.positions.sort();
        outcome.receipts = outcome.receipts.into_iter().map(normal_receipt).collect();
        outcome
            .receipts
            .sort_by(|a, b| (a.conversation, &a.by).cmp(&(b.conversation, &b.by)));
        outcome
    }

    fn normal_receipt(mut moved: ReceiptMoved) -> ReceiptMoved {
        moved.notify.sort();
        moved
    }

    /// The outcome of an ack that moved positions to `positions` and
    /// cursors by `receipts`.
    pub fn acked(positions: Vec<(ConversationId, Seq)>, receipts: Vec<ReceiptMoved>) -> AckOutcome {
        normalised(AckOutcome {
            positions,
            receipts,
        })
    }

    /// A cursor move of `by` to `seq` at `ts_ms`, told to `notify`.
    pub fn moved(
        conversation: ConversationId,
        by: &str,
        seq: Seq,
        ts_ms: UnixMillis,
        notify: Vec<DeviceId>,
    ) -> ReceiptMoved {
        normal_receipt(ReceiptMoved {
            conversation,
            by: by.to_owned(),
            seq,
            ts_ms,
            notify,
        })
    }

    /// Moves `account`'s read pointer in `conversation` at `now_ms`; the
    /// outcome's `notify` sorted.
    pub async fn read_up_to(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
        seq: Seq,
        now_ms: UnixMillis,
    ) -> ReadOutcome {
        let mut outcome = store
            .mark_read(ReadRequest {
                account,
                conversation,
                seq,
                now_ms,
            })
            .await
            .expect("mark_read");
        outcome.moved = outcome.moved.map(normal_receipt);
        outcome
    }

    /// A sweep that must succeed.
    pub async fn sweep(
        store: &dyn Store,
        now_ms: UnixMillis,
        bodies_before_ms: UnixMillis,
        undelivered_before_ms: UnixMillis,
        dedup_before_ms: UnixMillis,
        limit: usize,
    ) -> SweepOutcome {
        store
            .sweep(SweepRequest {
                now_ms,
                bodies_before_ms,
                undelivered_before_ms,
                dedup_before_ms,
                limit,
            })
            .await
            .expect("sweep")
    }

    pub fn swept(purged_bodies: u64, purged_dedup: u64) -> SweepOutcome {
        SweepOutcome {
            purged_bodies,
            purged_dedup,
        }
    }

    /// The two account-to-account relations, which share a contract.
    #[derive(Clone, Copy, Debug)]
    pub enum Relation {
        Contact,
        Block,
    }

    /// `set_contact` or `set_block` at `NOW`: whether anything changed.
    pub async fn set_relation(
        store: &dyn Store,
        relation: Relation,
        from: AccountId,
        to: AccountId,
        present: bool,
    ) -> bool {
        match relation {
            Relation::Contact => store.set_contact(from, to, present, NOW).await,
            Relation::Block => store.set_block(from, to, present, NOW).await,
        }
        .expect("set relation")
    }

    /// `contacts` or `blocked` of `owner`.
    pub async fn relation_list(
        store: &dyn Store,
        relation: Relation,
        owner: AccountId,
    ) -> Vec<String> {
        match relation {
            Relation::Contact => store.contacts(owner).await,
            Relation::Block => store.blocked(owner).await,
        }
        .expect("relation list")
    }

    // ── Groups ──

    /// The group size limit (creator included) scenarios pass unless they
    /// test it.
    pub const GROUP_MAX: usize = 8;

    pub fn group_name(name: &str) -> GroupName {
        GroupName::parse(name).expect("valid group name")
    }

    pub fn rename(name: &str) -> GroupChange {
        GroupChange::Rename(group_name(name))
    }

    /// A creation request with limit [`GROUP_MAX`].
    pub fn new_group(
        creator: AccountId,
        creator_device: DeviceId,
        name: &str,
        members: &[AccountId],
        now_ms: UnixMillis,
    ) -> NewGroup {
        NewGroup {
            creator,
            creator_device,
            encrypted: false,
            name: group_name(name),
            members: members.to_vec(),
            members_max: GROUP_MAX,
            now_ms,
        }
    }

    pub async fn create_group(store: &dyn Store, group: NewGroup) -> GroupChanged {
        store.create_group(group).await.expect("create_group")
    }

    /// A change request with limit [`GROUP_MAX`].
    pub fn change_request(
        actor: AccountId,
        actor_device: DeviceId,
        conversation: ConversationId,
        change: GroupChange,
        now_ms: UnixMillis,
    ) -> GroupChangeRequest {
        GroupChangeRequest {
            actor,
            actor_device,
            conversation,
            change,
            members_max: GROUP_MAX,
            now_ms,
        }
    }

    /// Applies a change (see [`change_request`]), returning the store's answer.
    pub async fn change(
        store: &dyn Store,
        actor: AccountId,
        actor_device: DeviceId,
        conversation: ConversationId,
        change: GroupChange,
        now_ms: UnixMillis,
    ) -> Result<GroupChanged, StoreError> {
        let request = change_request(actor, actor_device, conversation, change, now_ms);
        store.change_group(request).await
    }

    pub async fn group_info(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
    ) -> GroupRecord {
        store
            .group_info(account, conversation)
            .await
            .expect("group_info")
    }

    /// Asserts the group's admins and plain members (usernames, in any
    /// order) as `account` sees them in group_info.
    pub async fn assert_roles(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
        admins: &[&str],
        members: &[&str],
    ) {
        let mut actual: [Vec<String>; 2] = Default::default();
        for member in group_info(store, account, conversation).await.members {
            actual[usize::from(member.role == Role::Member)].push(member.username);
        }
        actual.iter_mut().for_each(|names| names.sort());
        assert_eq!(actual, [admins, members], "[admins, members]");
    }

    /// The description of a system event (its body), checked to be `"v": 1`.
    pub fn description(body: &str) -> serde_json::Value {
        let value: serde_json::Value =
            serde_json::from_str(body).expect("a system event's body is JSON");
        assert_eq!(value["v"], 1, "system event {body}");
        value
    }

    // ── Stored events, pending and in history ──

    /// (seq, kind, what) of a stored event, where `what` is the body
    /// (text, emoji, edited text; empty when removed or deleted) or, for a
    /// system event, its `action`.
    pub type Summary = (Seq, EventKind, String);

    fn summary(seq: Seq, kind: EventKind, body: &str) -> Summary {
        let what = match kind {
            EventKind::System => description(body)["action"]
                .as_str()
                .expect("a system event has an action")
                .to_owned(),
            _ => body.to_owned(),
        };
        (seq, kind, what)
    }

    /// The summary of the text `text_of(cmid)` at `seq`.
    pub fn txt(seq: Seq, cmid: &str) -> Summary {
        (seq, EventKind::Text, text_of(cmid))
    }

    /// The summary of a system event with `action` at `seq`.
    pub fn sys(seq: Seq, action: &str) -> Summary {
        (seq, EventKind::System, action.to_owned())
    }

    /// Summaries of pending items; panics on an `Expired` item.
    pub fn item_summaries(items: &[PendingItem]) -> Vec<Summary> {
        summaries(&events(items))
    }

    /// Summaries of everything waiting for the device.
    pub async fn pending_summaries(store: &dyn Store, device: DeviceId) -> Vec<Summary> {
        item_summaries(&pending_all(store, device).await)
    }

    pub fn summaries(events: &[StoredEvent]) -> Vec<Summary> {
        events
            .iter()
            .map(|event| summary(event.seq, event.kind, &event.body))
            .collect()
    }

    pub fn seqs(events: &[StoredEvent]) -> Vec<Seq> {
        events.iter().map(|event| event.seq).collect()
    }

    /// One history page, as the store answers it.
    pub async fn history_page(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        store
            .history(HistoryRequest {
                account,
                conversation,
                before,
                after,
                limit,
            })
            .await
    }

    /// Everything the account may see of the conversation, oldest first.
    pub async fn history_all(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
    ) -> Vec<StoredEvent> {
        history_page(store, account, conversation, None, Some(0), ALL)
            .await
            .expect("history")
    }

    /// The seqs of everything the account may see of the conversation.
    pub async fn history_seqs(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
    ) -> Vec<Seq> {
        seqs(&history_all(store, account, conversation).await)
    }

    /// The newest event `account` may see in the conversation.
    pub async fn newest(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
    ) -> StoredEvent {
        history_page(store, account, conversation, None, None, 1)
            .await
            .expect("history")
            .pop()
            .expect("an event")
    }

    /// The stored event `message_id` as `account` sees it in history.
    pub async fn stored(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> StoredEvent {
        history_all(store, account, conversation)
            .await
            .into_iter()
            .find(|event| event.message_id == *message_id)
            .unwrap_or_else(|| panic!("{message_id} is not in the history"))
    }

    /// The `reactions` of a text as `account` sees it in history.
    pub async fn reactions_of(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
        message_id: &MessageId,
    ) -> Vec<(String, String)> {
        stored(store, account, conversation, message_id)
            .await
            .reactions
    }

    /// `[(name, value)]` as owned pairs (reactions).
    pub fn pairs<const N: usize>(pairs: [(&str, &str); N]) -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    /// `[(name, ts)]` as owned pairs, sorted (receipt lists, whose order
    /// is not part of the contract).
    pub fn stamped<const N: usize>(pairs: [(&str, UnixMillis); N]) -> Vec<(String, UnixMillis)> {
        sorted(
            pairs
                .into_iter()
                .map(|(name, ts)| (name.to_owned(), ts))
                .collect(),
        )
    }
}

/// The backend-independent scenarios. Each takes a fresh, empty store.
mod scenarios {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    use missive_core::{
        AccountId, ConversationId, DeviceId, MessageId, Seq, TokenHash, UnixMillis,
    };
    use missive_store::{
        AccountRecord, AckOutcome, Body, ClaimedKey, ConversationKind, DELETED_PREFIX, DeviceAuth,
        DeviceKeys, DeviceRecord, ENCRYPTED_MEDIA_TYPE, EventKind, GroupChange, GroupChangeRequest,
        IdentityKeys, KeyUpload, KeysStored, MediaRecord, NewAccount, NewDevice, NewGroup,
        NewInvites, NewToDevice, OneTimeKey, PendingItem, PendingRequest, PresenceVisibility,
        ReadOutcome, ReadRequest, RevokedDevice, Role, Setting, SettingRequest, Store, StoreError,
        StoredEvent, ToDeviceBatch, ToDeviceMessage,
    };
    use proptest::prelude::*;
    use proptest::sample::Index;

    use crate::support::Shape::{Ev, Ex};
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
                invite: None,
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
                invite: None,
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
        // revocation (own devices only, deleting token and positions)
        // behave as documented; a device created later starts at the
        // conversation's last seq (it gets only what is sent after it).
        // Method: fill alice's two slots, overflow, authenticate, give the
        // devices something waiting, revoke from the wrong account (no
        // effect), then from the right one, then fill the freed slot and
        // check each observable afterwards.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let device = |account, name: &str, now_ms: UnixMillis| NewDevice {
            account,
            name: name.to_owned(),
            token_hash: token(name),
            devices_max: 2,
            replace_least_recent: false,
            now_ms,
        };
        let a1 = store
            .create_device(device(alice, "a-phone", NOW))
            .await
            .expect("a1")
            .id;
        let a2 = store
            .create_device(device(alice, "a-laptop", NOW + 1))
            .await
            .expect("a2")
            .id;
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
            .expect("b1")
            .id;

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

        store
            .claim_session(a2, alice, "node-a", NOW + 50)
            .await
            .expect("claim");
        let listed = devices_of(store, alice).await;
        assert_eq!(
            listed
                .iter()
                .map(|d| (d.id, d.last_seen_ms))
                .collect::<Vec<_>>(),
            vec![(a1, NOW), (a2, NOW + 50)]
        );

        // Give alice's devices something waiting.
        let conv = direct(store, alice, bob, NOW).await;
        let sent = send(store, conv, bob, b1, "hello").await;
        assert_eq!(sorted(sent.recipients), vec![a1, a2]);
        assert_eq!(waiting(store, a1).await, 1);
        assert_eq!(pending_ids(store, b1).await, vec![], "b1 got its own text");
        assert_eq!(waiting(store, b1).await, 1, "waiting counts own events");

        // Wrong account: refused, nothing changes.
        assert_eq!(store.revoke_device(bob, a1).await, Ok(None));
        assert_eq!(store.revoke_device(alice, b1).await, Ok(None));
        assert_eq!(
            store.revoke_device(alice, DeviceId(987_654_321)).await,
            Ok(None)
        );
        assert_eq!(auth(store, "a-phone").await, Some(alice_a1));
        assert!(auth(store, "b-phone").await.is_some());
        assert_eq!(devices_of(store, alice).await, listed);
        assert_eq!(pending_ids(store, a1).await, vec![sent.message_id.clone()]);

        // Right account: the device and its token go; nothing waits for it.
        assert_eq!(
            store.revoke_device(alice, a1).await,
            Ok(Some(RevokedDevice {
                device: a1,
                account: alice,
                had_keys: false
            }))
        );
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
        assert_eq!(
            waiting(store, a1).await,
            0,
            "a revoked device has a backlog"
        );
        assert_eq!(store.device_owner(a1).await, Ok(None));
        assert_eq!(waiting(store, a2).await, 1);
        assert_eq!(
            store.revoke_device(alice, a1).await,
            Ok(None),
            "revoked twice"
        );

        // The freed slot can be used again; the new device starts now.
        let a3 = store
            .create_device(device(alice, "a-tablet", NOW + 60))
            .await
            .expect("a3")
            .id;
        assert_eq!(devices_of(store, alice).await.len(), 2);
        assert_eq!(waiting(store, a3).await, 0, "a new device got the past");
        assert!(pending_all(store, a3).await.is_empty());
        let next = send(store, conv, bob, b1, "again").await;
        assert_eq!(sorted(next.recipients), sorted(vec![a2, a3]));
        assert_eq!(pending_ids(store, a3).await, vec![next.message_id.clone()]);
        assert_eq!(
            pending_ids(store, a2).await,
            vec![sent.message_id, next.message_id]
        );
        assert_eq!(waiting(store, a1).await, 0);
    }

    /// 2a. Replacing the least recently used device; idle devices expiring.
    pub async fn devices_are_replaced_and_expire_least_recent_first(store: Arc<dyn Store>) {
        // Goal: at the limit, a login that may replace revokes the device
        // seen longest ago among those without a live session (as a revoke
        // does: token and positions gone) and says which; without leave it
        // is refused as before. Expiry revokes devices idle since before
        // the cut-off that have no live session, and nothing else; a touch
        // moves a device's last use forward, never back.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let login = |name: &str, now_ms: UnixMillis, replace| NewDevice {
            account: alice,
            name: name.to_owned(),
            token_hash: token(name),
            devices_max: 3,
            replace_least_recent: replace,
            now_ms,
        };
        let mut ids = Vec::new();
        for (i, name) in ["old", "live", "newer"].into_iter().enumerate() {
            let created = store
                .create_device(login(name, NOW + i as i64, false))
                .await
                .expect(name);
            assert_eq!(created.replaced, None);
            ids.push(created.id);
        }
        let [old, live, newer] = ids[..] else {
            unreachable!()
        };
        // "live" is the least recently seen but connected; "old" is not.
        store.touch_device(old, NOW + 10).await.expect("touch");
        store.touch_device(old, NOW + 5).await.expect("touch back");
        store
            .claim_session(live, alice, "node-a", NOW)
            .await
            .expect("claim");
        assert_eq!(
            store.create_device(login("refused", NOW + 20, false)).await,
            Err(StoreError::TooManyDevices)
        );
        let room = store
            .create_device(login("replacing", NOW + 20, true))
            .await
            .expect("replace");
        assert_eq!(
            room.replaced,
            Some(RevokedDevice {
                device: newer,
                account: alice,
                had_keys: false
            }),
            "seen at NOW+2, no session"
        );
        assert_eq!(auth(store, "newer").await, None);
        assert_eq!(waiting(store, newer).await, 0);
        let seen: Vec<(DeviceId, UnixMillis)> = devices_of(store, alice)
            .await
            .into_iter()
            .map(|device| (device.id, device.last_seen_ms))
            .collect();
        assert!(seen.contains(&(old, NOW + 10)), "{seen:?}");
        assert_eq!(seen.len(), 3);

        let b1 = new_device(store, bob, "b1").await;
        let expired = store.expire_devices(NOW + 15, 100).await.expect("expire");
        assert_eq!(
            sorted(device_ids(expired)),
            sorted(vec![old, b1]),
            "not the live one"
        );
        assert_eq!(auth(store, "old").await, None);
        assert!(auth(store, "live").await.is_some());
        assert!(auth(store, "replacing").await.is_some());
        assert_eq!(
            store.expire_devices(NOW + 15, 100).await.expect("again"),
            Vec::<RevokedDevice>::new()
        );
    }

    /// 2a'. What an operator sees and changes; numbered revocations.
    pub async fn accounts_listed_passwords_reset_and_revocations_numbered(store: Arc<dyn Store>) {
        // Goal: accounts list in username order with their device counts,
        // page by page; a password hash can be replaced (unknown account:
        // false); every revocation, by revoke or by expiry, is numbered in
        // order and readable from any number on.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let a1 = new_device(store, alice, "a1").await;
        let a2 = new_device(store, alice, "a2").await;
        let b1 = new_device(store, bob, "b1").await;
        let listed = store.list_accounts(None, 10).await.expect("list");
        let summary: Vec<(AccountId, &str, i64)> = listed
            .iter()
            .map(|account| (account.id, account.username.as_str(), account.devices))
            .collect();
        assert_eq!(summary, vec![(alice, "alice", 2), (bob, "bob", 1)]);
        let page = store
            .list_accounts(Some(missive_core::Username::parse("alice").unwrap()), 10)
            .await
            .expect("page");
        assert_eq!(page.iter().map(|a| a.id).collect::<Vec<_>>(), vec![bob]);
        assert_eq!(store.list_accounts(None, 1).await.expect("one").len(), 1);

        assert_eq!(
            store.set_password_hash(bob, "new-hash".into()).await,
            Ok(true)
        );
        let found = store
            .account_by_username(&missive_core::Username::parse("bob").unwrap())
            .await
            .expect("lookup")
            .expect("bob");
        assert_eq!(found.password_hash, "new-hash");
        assert_eq!(
            store
                .set_password_hash(AccountId(999_999), "x".into())
                .await,
            Ok(false)
        );

        assert_eq!(store.last_revocation().await, Ok(0));
        assert!(
            store
                .revoke_device(alice, a2)
                .await
                .expect("revoke")
                .is_some()
        );
        assert_eq!(store.revoke_device(alice, a2).await, Ok(None), "again");
        let expired = store.expire_devices(NOW + 1, 10).await.expect("expire");
        assert_eq!(sorted(device_ids(expired)), sorted(vec![a1, b1]));
        let all = store.revocations_after(0, 10).await.expect("all");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].1, a2, "the revoke came first");
        assert!(all.windows(2).all(|pair| pair[0].0 < pair[1].0), "{all:?}");
        assert_eq!(store.last_revocation().await, Ok(all[2].0));
        assert_eq!(
            store.revocations_after(all[0].0, 10).await.expect("after"),
            all[1..].to_vec()
        );
        assert_eq!(store.revocations_after(all[2].0, 10).await, Ok(vec![]));
    }

    /// 2a''. Suspensions and invites.
    pub async fn suspensions_revoke_devices_and_invites_are_single_use(store: Arc<dyn Store>) {
        // Goal: suspending revokes every device of the account (numbered,
        // as any revocation) and no login adds one until resumed; resuming
        // revokes nothing; an unknown account is None. An invite is used
        // once, before it expires; a refused one leaves no account.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let a1 = new_device(store, alice, "a1").await;
        let a2 = new_device(store, alice, "a2").await;
        let b1 = new_device(store, bob, "b1").await;
        let before = store.last_revocation().await.expect("last");

        let revoked = store.set_suspended(alice, true).await.expect("suspend");
        assert_eq!(revoked.map(device_ids), Some(vec![a1, a2]));
        assert_eq!(auth(store, "a1").await, None);
        assert_eq!(auth(store, "a2").await, None);
        assert!(auth(store, "b1").await.is_some(), "bob untouched");
        let numbered = store.revocations_after(before, 10).await.expect("numbered");
        assert_eq!(
            numbered
                .iter()
                .map(|(_, device)| *device)
                .collect::<Vec<_>>(),
            vec![a1, a2]
        );
        let alice_name = missive_core::Username::parse("alice").unwrap();
        let found = store
            .account_by_username(&alice_name)
            .await
            .expect("lookup");
        assert!(found.expect("alice").suspended);
        let listed = store.list_accounts(None, 10).await.expect("list");
        let flags: Vec<(AccountId, bool, i64)> = listed
            .iter()
            .map(|account| (account.id, account.suspended, account.devices))
            .collect();
        assert_eq!(flags, vec![(alice, true, 0), (bob, false, 1)]);
        let refused = store
            .create_device(NewDevice {
                account: alice,
                name: "a3".into(),
                token_hash: token("a3"),
                devices_max: 4,
                replace_least_recent: false,
                now_ms: NOW,
            })
            .await;
        assert_eq!(
            refused.map(|created| created.id),
            Err(StoreError::AccountSuspended)
        );
        assert_eq!(auth(store, "a3").await, None, "nothing added");

        assert_eq!(store.set_suspended(alice, false).await, Ok(Some(vec![])));
        let a3 = new_device(store, alice, "a3").await;
        assert_eq!(auth(store, "a3").await.map(|found| found.device), Some(a3));
        assert_eq!(
            store.set_suspended(AccountId(999_999), true).await,
            Ok(None)
        );
        let _ = b1;

        let code = |label: &str| token(&format!("invite {label}"));
        store
            .create_invites(NewInvites {
                code_hashes: vec![code("one"), code("two")],
                now_ms: NOW,
                expires_ms: NOW + 1_000,
            })
            .await
            .expect("invites");
        let register = |name: &'static str, invite: Option<TokenHash>, now_ms: UnixMillis| {
            store.create_account(NewAccount {
                username: missive_core::Username::parse(name).unwrap(),
                password_hash: "hash".into(),
                phone: None,
                now_ms,
                invite,
            })
        };
        assert_eq!(
            register("carol", Some(code("unknown")), NOW).await,
            Err(StoreError::InviteInvalid)
        );
        let carol = missive_core::Username::parse("carol").unwrap();
        assert!(
            store
                .account_by_username(&carol)
                .await
                .expect("lookup")
                .is_none(),
            "a refused invite leaves no account"
        );
        register("carol", Some(code("one")), NOW)
            .await
            .expect("carol");
        assert_eq!(
            register("dave", Some(code("one")), NOW).await,
            Err(StoreError::InviteInvalid),
            "used once"
        );
        assert_eq!(
            register("dave", Some(code("two")), NOW + 1_000).await,
            Err(StoreError::InviteInvalid),
            "expired"
        );
        register("dave", Some(code("two")), NOW + 999)
            .await
            .expect("dave");
    }

    /// 2a, continued. Deleting an account.
    pub async fn deleted_accounts_free_their_name_and_keep_their_messages(store: Arc<dyn Store>) {
        // Goal: a deleted account loses its name (now `deleted.<id>`), its
        // devices (numbered revocations), its contacts and blocks both ways,
        // and any way to log in; what it sent stays, under the new name; the
        // old name can be registered again; an unknown account is None.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let a1 = new_device(store, alice, "a1").await;
        new_device(store, bob, "b1").await;
        let conv = direct(store, alice, bob, NOW).await;
        store
            .append_message(new_message(conv, alice, a1, "m1", NOW))
            .await
            .expect("send");
        assert!(
            store
                .set_contact(alice, bob, true, NOW)
                .await
                .expect("contact")
        );
        assert!(
            store
                .set_contact(bob, alice, true, NOW)
                .await
                .expect("contact")
        );
        assert!(store.set_block(bob, alice, true, NOW).await.expect("block"));
        let before = store.last_revocation().await.expect("last");

        assert_eq!(
            store.delete_account(alice).await.map(|r| r.map(device_ids)),
            Ok(Some(vec![a1]))
        );
        assert_eq!(auth(store, "a1").await, None);
        let numbered = store.revocations_after(before, 10).await.expect("numbered");
        assert_eq!(
            numbered.iter().map(|(_, d)| *d).collect::<Vec<_>>(),
            vec![a1]
        );
        let old_name = missive_core::Username::parse("alice").unwrap();
        assert!(
            store
                .account_by_username(&old_name)
                .await
                .expect("lookup")
                .is_none()
        );
        let tombstone = format!("{DELETED_PREFIX}{}", alice.0);
        let listed = store.list_accounts(None, 10).await.expect("list");
        let found = listed.iter().find(|a| a.id == alice).expect("still listed");
        assert_eq!(
            (found.username.as_str(), found.suspended, found.devices),
            (tombstone.as_str(), true, 0)
        );
        assert_eq!(
            store.contacts(bob).await.expect("contacts"),
            Vec::<String>::new()
        );
        assert_eq!(
            store.contacts(alice).await.expect("contacts"),
            Vec::<String>::new()
        );
        assert_eq!(
            store.blocked(bob).await.expect("blocks"),
            Vec::<String>::new()
        );
        let refused = store
            .create_device(NewDevice {
                account: alice,
                name: "again".into(),
                token_hash: token("again"),
                devices_max: 4,
                replace_least_recent: false,
                now_ms: NOW,
            })
            .await;
        assert_eq!(
            refused.map(|created| created.id),
            Err(StoreError::AccountSuspended)
        );
        let history = history_all(store, bob, conv).await;
        assert_eq!(history.len(), 1, "what alice sent stays");
        assert_eq!(history[0].from, tombstone);

        let again = new_account(store, "alice").await;
        assert_ne!(again, alice, "the name is free for a new account");
        assert_eq!(store.delete_account(AccountId(999_999)).await, Ok(None));
    }

    /// 2a, renames. A device's name changes only for its own account.
    pub async fn devices_are_renamed_by_their_account_only(store: Arc<dyn Store>) {
        // Goal: rename_device changes the listed name of the account's own
        // device; another account's or an unknown device is false and
        // changes nothing.
        let store = &*store;
        let (alice, bob) = alice_and_bob(store).await;
        let a1 = new_device(store, alice, "a1").await;
        assert_eq!(
            store
                .rename_device(alice, a1, "Firefox on Linux".into())
                .await,
            Ok(true)
        );
        assert_eq!(
            store.rename_device(bob, a1, "stolen".into()).await,
            Ok(false)
        );
        assert_eq!(
            store
                .rename_device(alice, DeviceId(999_999), "ghost".into())
                .await,
            Ok(false)
        );
        let listed = store.list_devices(alice).await.expect("list");
        let names: Vec<(DeviceId, &str)> = listed.iter().map(|d| (d.id, d.name.as_str())).collect();
        assert_eq!(names, vec![(a1, "Firefox on Linux")]);
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
        assert!(
            store
                .revoke_device(alice, a2)
                .await
                .expect("revoke")
                .is_some()
        );

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
        // same (device, client_msg_id) and the same request returns the
        // original and stores nothing; the key reused for a different
        // message is refused; refusals store nothing and burn no seq.
        // Method: N appends, a retry with a new message id / text / time, the
        // same client_msg_id from two other devices, two refused appends,
        // then one more append; compare seqs and what waits for bob at each
        // step.
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

        // A retry: the same request with a new message id, later. Nothing
        // is stored.
        let retry = new_message(conv, alice, a1, "m3", NOW + 100);
        let retried = store.append_message(retry).await.expect("retry");
        assert!(retried.duplicate);
        assert_eq!(retried.message_id, originals[2].message_id);
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
            stored(store, bob, conv, &originals[2].message_id)
                .await
                .body,
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
    pub async fn fan_out(store: Arc<dyn Store>) {
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
    pub async fn pending_and_ack(store: Arc<dyn Store>) {
        // Goal: pending pages in seq order, `limit` items at a time, with
        // `more` and `scanned` telling where the next page starts; reading
        // moves nothing; an ack moves the device's position (everything up
        // to it stops waiting for that device only), never back; the
        // account's first ack past a text moves its delivered cursor and
        // tells the author's devices; `waiting` and `waiting_total` follow.
        // Method: a1 sends five texts to bob (b1, b2); page b1's pending,
        // ack it in steps, re-ack lower, then b2 and a2 ack everything.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, a2, b1, b2]) = cast(store, ["a1", "a2", "b1", "b2"]).await;
        let mut sent = Vec::new();
        for i in 1..=5 {
            sent.push(send(store, conv, alice, a1, &format!("m{i}")).await);
        }
        let ids: Vec<MessageId> = sent.iter().map(|s| s.message_id.clone()).collect();

        // Paging.
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
        assert_eq!(page(vec![(conv, 1)], ALL).await.items, all[2..]);

        // Acking at or below the position moves nothing and tells nobody.
        for seq in [0, 1, 2] {
            let outcome = ack(store, b1, bob, vec![(conv, seq)], false).await;
            assert_eq!(outcome, acked(vec![(conv, 2)], vec![]), "ack of {seq}");
        }
        assert_eq!(pending_ids(store, b1).await, ids[2..].to_vec());

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
    pub async fn behind_names_devices_with_something_from_others(store: Arc<dyn Store>) {
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

    pub async fn ack_is_cumulative(store: Arc<dyn Store>) {
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
    pub async fn refused_acks_change_nothing(store: Arc<dyn Store>) {
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

    /// 5d. The delivered cursor.
    pub async fn delivered_cursor_moves_on_first_ack(store: Arc<dyn Store>) {
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
    pub async fn mark_read(store: Arc<dyn Store>) {
        // Goal: the read pointer only moves forward and is clamped to the
        // last seq; each move is reported as `moved`, naming the devices of
        // the other members who authored a text in the newly read range
        // (never the reader's); no move reports nothing; the cursors and the
        // unread count (other members' texts only) show in `conversations()`;
        // outsiders are refused.
        // Method: three texts a→b, then a series of mark_read calls by bob
        // (forward, backward, repeat, beyond the end) and by alice.
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
        };
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

    /// 7. Store-and-forward (retention 0).
    pub async fn store_and_forward(store: Arc<dyn Store>) {
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
    pub async fn purge_waits_for_every_member_device(store: Arc<dyn Store>) {
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
    pub async fn expiry_and_sweep(store: Arc<dyn Store>) {
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
        let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;
        let append = |cmid: &str, now: UnixMillis| {
            store.append_message(new_message(conv, alice, a1, cmid, now))
        };
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
    pub async fn expired_events_come_as_one_range(store: Arc<dyn Store>) {
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

    /// 8c. Own events are skipped but scanned.
    pub async fn own_events_are_skipped_but_scanned(store: Arc<dyn Store>) {
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
    pub async fn pages_continue_where_scanned_ends(store: Arc<dyn Store>) {
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
    pub async fn new_devices_and_members_start_now(store: Arc<dyn Store>) {
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
        let GroupCast([alice, bob, carol, dave], group, [a1, b1, c1, d1]) =
            group_cast(store, ["a1", "b1", "c1", "d1"]).await;
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
            message_with(
                group,
                bob,
                b1,
                "r6",
                react(&t2.message_id, Some("👍")),
                NOW + 6,
            ),
            message_with(
                group,
                alice,
                a1,
                "e7",
                edit(&t3.message_id, "t3, edited"),
                NOW + 7,
            ),
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

    /// 8f. A departure ends with the sweep.
    pub async fn swept_departures_end_delivery(store: Arc<dyn Store>) {
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
    pub async fn dedup_survives_purged_body(store: Arc<dyn Store>) {
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

    /// One step of the model-based test. Devices: 0 = alice's a1, 1 and 2
    /// = bob's b1 and b2.
    #[derive(Clone, Debug)]
    pub enum Op {
        /// A text from device `from`; `cmid` repeats make retries.
        Send { from: usize, cmid: u8 },
        /// `device` acks up to a seq picked among 0..=last + 1 (the last
        /// one out of range).
        Ack { device: usize, seq: Index },
        /// alice or bob marks read up to a seq picked among 0..=last + 1.
        Read { bob: bool, seq: Index },
    }

    pub fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0usize..3, 0u8..6).prop_map(|(from, cmid)| Op::Send { from, cmid }),
            2 => (0usize..3, any::<Index>()).prop_map(|(device, seq)| Op::Ack { device, seq }),
            1 => (any::<bool>(), any::<Index>()).prop_map(|(bob, seq)| Op::Read { bob, seq }),
        ];
        proptest::collection::vec(op, 1..48)
    }

    /// 9. Model-based test.
    pub async fn model_based(store: Arc<dyn Store>, ops: Vec<Op>) {
        // Goal: under any interleaving of appends (with retries) from three
        // devices of two accounts, cumulative acks (some out of range) and
        // read marks, the store agrees with a trivial model: positions per
        // device, delivered and read cursors per account, and who is told
        // of a cursor move (the other account's devices, if it authored a
        // text in the newly covered range).
        // Method: alice (a1) and bob (b1, b2) in one conversation. Apply
        // `ops`; after every op compare every answer, every device's
        // pending events and `waiting`, and both accounts' cursors.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, b1, b2]) = cast(store, ["a1", "b1", "b2"]).await;
        let devices = [a1, b1, b2];
        let accounts = [alice, bob];
        let names = ["alice", "bob"];
        let owner = |device: usize| usize::from(device > 0);
        let devices_of = |account: usize| -> Vec<DeviceId> {
            if account == 0 { vec![a1] } else { vec![b1, b2] }
        };

        // texts[seq - 1] = (sending device, message id).
        let mut texts: Vec<(usize, MessageId)> = Vec::new();
        let mut originals: HashMap<(usize, u8), (MessageId, Seq, UnixMillis)> = HashMap::new();
        let mut position: [Seq; 3] = [0; 3];
        let mut delivered: [Seq; 2] = [0; 2];
        let mut read: [Seq; 2] = [0; 2];
        // Who is told when `account`'s cursor moves over (from, to].
        let told = |texts: &[(usize, MessageId)], account: usize, from: Seq, to: Seq| {
            let other = 1 - account;
            let authored = texts[from as usize..to as usize]
                .iter()
                .any(|(device, _)| owner(*device) == other);
            if authored { devices_of(other) } else { vec![] }
        };

        for (step, op) in ops.into_iter().enumerate() {
            let now = NOW + step as i64;
            let last = texts.len() as Seq;
            match op {
                Op::Send { from, cmid } => {
                    let account = accounts[owner(from)];
                    let message =
                        new_message(conv, account, devices[from], &format!("c{cmid}"), now);
                    let appended = append_ok(store, message).await;
                    if let Some((id, seq, ts)) = originals.get(&(from, cmid)) {
                        assert!(appended.duplicate, "step {step}: retry not recognised");
                        assert_eq!(
                            (&appended.message_id, appended.seq, appended.ts_ms),
                            (id, *seq, *ts),
                            "step {step}: retry answered differently"
                        );
                        assert!(appended.recipients.is_empty());
                    } else {
                        assert!(
                            !appended.duplicate,
                            "step {step}: first send taken for a retry"
                        );
                        assert_eq!(appended.seq, last + 1, "step {step}: seq gap or repeat");
                        assert_eq!(appended.ts_ms, now);
                        let others: Vec<DeviceId> =
                            (0..3).filter(|d| *d != from).map(|d| devices[d]).collect();
                        assert_eq!(sorted(appended.recipients.clone()), sorted(others));
                        originals.insert(
                            (from, cmid),
                            (appended.message_id.clone(), appended.seq, now),
                        );
                        texts.push((from, appended.message_id));
                    }
                }
                Op::Ack { device, seq } => {
                    let seq = seq.index(last as usize + 2) as Seq;
                    let account = owner(device);
                    let answer =
                        ack_at_checked(store, devices[device], accounts[account], conv, seq, now)
                            .await;
                    if seq > last {
                        assert_eq!(answer, Err(StoreError::SeqOutOfRange), "step {step}");
                    } else {
                        position[device] = position[device].max(seq);
                        let mut receipts = Vec::new();
                        if seq > delivered[account] {
                            let notify = told(&texts, account, delivered[account], seq);
                            receipts.push(moved(conv, names[account], seq, now, notify));
                            delivered[account] = seq;
                        }
                        assert_eq!(
                            answer,
                            Ok(acked(vec![(conv, position[device])], receipts)),
                            "step {step}: device {device} acks {seq}"
                        );
                    }
                }
                Op::Read { bob: by_bob, seq } => {
                    let seq = seq.index(last as usize + 2) as Seq;
                    let account = usize::from(by_bob);
                    let outcome = read_up_to(store, accounts[account], conv, seq, now).await;
                    let to = seq.min(last);
                    let moved_now = (to > read[account]).then(|| {
                        let notify = told(&texts, account, read[account], to);
                        moved(conv, names[account], to, now, notify)
                    });
                    read[account] = read[account].max(to);
                    assert_eq!(
                        outcome,
                        ReadOutcome {
                            seq: read[account],
                            moved: moved_now
                        },
                        "step {step}: {} reads {seq}",
                        names[account]
                    );
                }
            }

            // Invariants after every step.
            let last = texts.len() as Seq;
            for (d, device) in devices.iter().enumerate() {
                let expected: Vec<MessageId> = texts
                    .iter()
                    .enumerate()
                    .filter(|(i, (from, _))| *i as Seq + 1 > position[d] && *from != d)
                    .map(|(_, (_, id))| id.clone())
                    .collect();
                assert_eq!(
                    pending_ids(store, *device).await,
                    expected,
                    "step {step}: what waits for device {d}"
                );
                assert_eq!(
                    waiting(store, *device).await,
                    (last - position[d]) as u64,
                    "step {step}: waiting of device {d}"
                );
            }
            assert_eq!(
                cursors(store, alice, conv).await,
                vec![cursor("bob", delivered[1], read[1])],
                "step {step}: bob's cursors"
            );
            assert_eq!(
                cursors(store, bob, conv).await,
                vec![cursor("alice", delivered[0], read[0])],
                "step {step}: alice's cursors"
            );
            let mut seqs: Vec<Seq> = originals.values().map(|(_, seq, _)| *seq).collect();
            seqs.sort_unstable();
            assert_eq!(
                seqs,
                (1..=last).collect::<Vec<_>>(),
                "step {step}: seqs have gaps"
            );
        }
    }

    /// One point acked at `now_ms`, the answer normalised.
    async fn ack_at_checked(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        conv: ConversationId,
        seq: Seq,
        now_ms: UnixMillis,
    ) -> Result<AckOutcome, StoreError> {
        let request = missive_store::AckRequest {
            now_ms,
            ..ack_request(device, account, vec![(conv, seq)], false)
        };
        store.ack(request).await.map(normalised)
    }

    /// 10. Concurrent appends.
    pub async fn concurrent_appends(store: Arc<dyn Store>) {
        // Goal: concurrent appends into one conversation still get gap-free,
        // unique seqs, every device's pending is in seq order, and
        // concurrent retries are all recognised.
        // Method: 8 tasks over 4 devices (2 per member) each append 50
        // distinct client_msg_ids at once; then check seqs 1..=400, the
        // (device, client_msg_id) ↔ seq mapping seen in pending, and its
        // order. Then 8 tasks retry a spread of those sends at once.
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

        // What pending says, per seq: (from_device, client_msg_id, message_id).
        let by_seq: HashMap<Seq, (DeviceId, String, MessageId)> = sent
            .iter()
            .map(|(device, cmid, seq, id)| (*seq, (*device, cmid.clone(), id.clone())))
            .collect();
        let mut seen_pairs: HashSet<(DeviceId, String)> = HashSet::new();
        for (_, device) in senders {
            let mut pending_seqs = Vec::new();
            for event in events(&pending_all(&*store, device).await) {
                assert_eq!(event.conversation, conv);
                assert_ne!(event.from_device, device, "a device got its own message");
                assert_eq!(
                    by_seq.get(&event.seq),
                    Some(&(
                        event.from_device,
                        event.client_msg_id.clone(),
                        event.message_id.clone()
                    )),
                    "seq {} waiting for device {device}",
                    event.seq
                );
                seen_pairs.insert((event.from_device, event.client_msg_id.clone()));
                pending_seqs.push(event.seq);
            }
            let expected = sent.iter().filter(|s| s.0 != device).count();
            assert_eq!(
                pending_seqs.len(),
                expected,
                "device {device}: how many wait"
            );
            assert!(
                pending_seqs.windows(2).all(|w| w[0] < w[1]),
                "device {device}: pending order differs from seq order"
            );
            assert_eq!(waiting(&*store, device).await, total as u64);
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
    /// its backlog is being read) never makes later reads fail. Method: 20
    /// rounds of starting 32 reads and aborting them at once, each followed
    /// by 32 reads that must all succeed.
    pub async fn cancelled_reads_leave_the_store_usable(store: Arc<dyn Store>) {
        let Cast(alice, bob, conv, [a1, b1]) = cast(&*store, ["a1", "b1"]).await;
        let sent = send(&*store, conv, alice, a1, "m1").await;
        let spawn_reads = |n: usize| -> Vec<tokio::task::JoinHandle<_>> {
            (0..n)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        store
                            .pending(PendingRequest {
                                device: b1,
                                account: bob,
                                after: vec![],
                                limit: ALL,
                                expired_before_ms: NO_EXPIRY,
                            })
                            .await
                    })
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
                let page = read
                    .await
                    .expect("join")
                    .expect("a read after cancelled reads must succeed");
                assert_eq!(event_ids(&page.items), vec![sent.message_id.clone()]);
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
                invite: None,
            })
            .await;
        assert_eq!(write, Err(StoreError::Closed));
        assert_eq!(store.list_devices(alice).await, Err(StoreError::Closed));
    }

    /// 12. Group creation.
    pub async fn group_create(store: Arc<dyn Store>) {
        // Goal: a new group has the creator as its only admin and the others
        // as members, and its `created` system event is seq 1, for every
        // member device except the creating one; duplicates and the
        // creator in `members` are ignored; `members_max` counts the creator
        // and a creation beyond it stores nothing; group operations on a 1:1
        // conversation are NotAGroup; group_info is for members only.
        // Method: alice (a1, a2), bob (b1), carol (c1), dave (d1). Create one
        // over the limit, then one at the limit with repeated members;
        // inspect the answer, group_info, every device's pending, the
        // event's description, the conversation lists and the cursors.
        let store = &*store;
        let Cast(alice, bob, direct_ab, [a1, a2, b1]) = cast(store, ["a1", "a2", "b1"]).await;
        let (carol, c1) = account_with_device(store, "carol", "c1").await;
        let (dave, d1) = account_with_device(store, "dave", "d1").await;

        let over = NewGroup {
            members: vec![bob, carol, dave],
            members_max: 3,
            ..new_group(alice, a1, "crowd", &[], NOW)
        };
        assert_eq!(store.create_group(over).await, Err(StoreError::GroupFull));
        assert_eq!(conversation_ids(store, alice).await, vec![direct_ab]);
        assert!(conversation_ids(store, dave).await.is_empty());
        assert!(pending_all(store, d1).await.is_empty());

        let created = create_group(
            store,
            NewGroup {
                members: vec![bob, carol, bob, alice],
                members_max: 3,
                ..new_group(alice, a1, "team", &[], NOW + 1)
            },
        )
        .await;
        let group = created.conversation;
        assert_ne!(group, direct_ab);
        assert_eq!(created.seq, 1);
        assert_eq!(sorted(created.recipients), sorted(vec![a2, b1, c1]));

        let info = group_info(store, bob, group).await;
        assert_eq!(
            (info.conversation, info.name.as_str(), info.last_seq),
            (group, "team", 1)
        );
        assert!(info.members.iter().all(|m| m.joined_ms == NOW + 1));
        assert_roles(store, carol, group, &["alice"], &["bob", "carol"]).await;

        assert!(
            pending_all(store, a1).await.is_empty(),
            "the creating device got its own event"
        );
        assert!(pending_all(store, d1).await.is_empty());
        for device in [a2, b1, c1] {
            assert_eq!(
                pending_summaries(store, device).await,
                vec![sys(1, "created")],
                "device {device}"
            );
        }
        let event = events(&pending_all(store, b1).await).remove(0);
        assert_eq!(
            (
                event.from.as_str(),
                event.from_device,
                event.conversation,
                &event.target,
                event.ts_ms
            ),
            ("alice", a1, group, &None, NOW + 1)
        );
        let description = description(&event.body);
        assert_eq!(description["name"], "team");
        assert_eq!(description["users"], serde_json::json!(["bob", "carol"]));

        // The group is in every member's list, not in dave's.
        for account in [alice, bob, carol] {
            let record = conversation_of(store, account, group)
                .await
                .expect("listed");
            assert_eq!(record.kind, ConversationKind::Group);
            assert_eq!(record.name.as_deref(), Some("team"));
            assert_eq!(record.members, ["alice", "bob", "carol"]);
        }
        assert_eq!(
            cursors(store, bob, group).await,
            vec![cursor("alice", 0, 0), cursor("carol", 0, 0)]
        );
        assert!(conversation_ids(store, dave).await.is_empty());

        // Group calls on a 1:1 conversation, and by outsiders.
        assert_eq!(
            store.group_info(alice, direct_ab).await,
            Err(StoreError::NotAGroup)
        );
        for not_for_direct in [rename("x"), GroupChange::Leave] {
            let refused = change(store, alice, a1, direct_ab, not_for_direct, NOW + 2).await;
            assert_eq!(refused, Err(StoreError::NotAGroup));
        }
        assert_eq!(
            store.group_info(dave, group).await,
            Err(StoreError::UnknownConversation)
        );
        assert_eq!(
            store.group_info(dave, NOWHERE).await,
            Err(StoreError::UnknownConversation)
        );
        assert_eq!(group_info(store, alice, group).await.last_seq, 1);
    }

    /// 13. Adding and removing group members.
    pub async fn group_add_and_remove(store: Arc<dyn Store>) {
        // Goal: only admins add and remove; adding an existing member, or
        // beyond `members_max`, is refused and stores nothing (no seq); an
        // added member sees, pending and in history, only events from its
        // `added` event on; a removed member's devices get the `removed`
        // event and nothing after, and it is NotMember for appends, history,
        // group_info and changes; a read past texts tells their authors
        // only; seqs stay gap-free across system events and texts.
        // Method: the group cast alice (a1), bob (b1), carol (c1), and dave
        // (d1) outside. A text, refused adds, dave added at the exact limit,
        // a text, a refused and an accepted removal of carol, a text, a read,
        // a rename; then compare pending, histories and group_info.
        let store = &*store;
        let GroupCast([alice, bob, carol, dave], group, [a1, b1, c1, d1]) =
            group_cast(store, ["a1", "b1", "c1", "d1"]).await;
        let t2 = send_at(store, group, bob, b1, "t2", NOW + 2).await;
        assert_eq!(t2.seq, 2);
        assert_eq!(sorted(t2.recipients), sorted(vec![a1, c1]));

        let refused_adds = [
            (bob, b1, vec![dave], GROUP_MAX, StoreError::NotAdmin),
            (alice, a1, vec![carol], GROUP_MAX, StoreError::AlreadyMember),
            (
                alice,
                a1,
                vec![dave, bob],
                GROUP_MAX,
                StoreError::AlreadyMember,
            ),
            (alice, a1, vec![dave], 3, StoreError::GroupFull),
        ];
        for (actor, device, accounts, members_max, expected) in refused_adds {
            let request = GroupChangeRequest {
                members_max,
                ..change_request(actor, device, group, GroupChange::Add(accounts), NOW + 3)
            };
            assert_eq!(store.change_group(request).await, Err(expected));
        }
        assert_eq!(
            group_info(store, alice, group).await.last_seq,
            2,
            "a refused change consumed a seq"
        );
        assert_eq!(
            store.group_info(dave, group).await,
            Err(StoreError::UnknownConversation),
            "a refused add let dave in"
        );
        assert!(pending_all(store, d1).await.is_empty());

        // At the limit exactly (4 members), a repeated account counted once.
        let add_dave = GroupChangeRequest {
            members_max: 4,
            ..change_request(
                alice,
                a1,
                group,
                GroupChange::Add(vec![dave, dave]),
                NOW + 3,
            )
        };
        let added = store.change_group(add_dave).await.expect("add dave");
        assert_eq!(added.seq, 3);
        assert_eq!(sorted(added.recipients), sorted(vec![b1, c1, d1]));
        let t4 = send_at(store, group, dave, d1, "t4", NOW + 4).await;
        assert_eq!(t4.seq, 4);
        assert_eq!(sorted(t4.recipients), sorted(vec![a1, b1, c1]));

        // dave sees from the `added` event on, however history is asked.
        assert_eq!(pending_summaries(store, d1).await, vec![sys(3, "added")]);
        let dave_sees = vec![sys(3, "added"), txt(4, "t4")];
        assert_eq!(summaries(&history_all(store, dave, group).await), dave_sees);
        let newest_first = history_page(store, dave, group, None, None, ALL).await;
        assert_eq!(newest_first.map(|page| seqs(&page)), Ok(vec![4, 3]));
        let below = history_page(store, dave, group, Some(4), None, ALL).await;
        assert_eq!(below.map(|page| seqs(&page)), Ok(vec![3]));
        let members = group_info(store, dave, group).await.members;
        let joined = members.iter().find(|m| m.account == dave).expect("dave");
        assert_eq!((joined.role, joined.joined_ms), (Role::Member, NOW + 3));

        // Removal: admins only.
        let by_bob = change(store, bob, b1, group, GroupChange::Remove(carol), NOW + 5).await;
        assert_eq!(by_bob, Err(StoreError::NotAdmin));
        let removed = change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 5)
            .await
            .expect("remove carol");
        assert_eq!(removed.seq, 5);
        assert_eq!(sorted(removed.recipients), sorted(vec![b1, c1, d1]));
        let t6 = send_at(store, group, bob, b1, "t6", NOW + 6).await;
        assert_eq!((t6.seq, sorted(t6.recipients)), (6, sorted(vec![a1, d1])));
        // bob reads past t4 (dave's) and his own texts: only dave is told.
        let read = read_up_to(store, bob, group, 6, NOW + 6).await;
        assert_eq!(
            read,
            ReadOutcome {
                seq: 6,
                moved: Some(moved(group, "bob", 6, NOW + 6, vec![d1]))
            }
        );
        let renamed = change(store, alice, a1, group, rename("crew"), NOW + 7)
            .await
            .expect("rename");
        assert_eq!(
            (renamed.seq, sorted(renamed.recipients)),
            (7, sorted(vec![b1, d1]))
        );

        // carol's pending ends with her removal; she is an outsider now.
        let carol_saw = vec![
            sys(1, "created"),
            txt(2, "t2"),
            sys(3, "added"),
            txt(4, "t4"),
            sys(5, "removed"),
        ];
        assert_eq!(pending_summaries(store, c1).await, carol_saw);
        let late = new_message(group, carol, c1, "late", NOW + 8);
        assert_eq!(store.append_message(late).await, Err(StoreError::NotMember));
        let history = history_page(store, carol, group, None, None, ALL).await;
        assert_eq!(history, Err(StoreError::NotMember));
        assert_eq!(
            store.group_info(carol, group).await,
            Err(StoreError::NotMember)
        );
        assert!(!conversation_ids(store, carol).await.contains(&group));
        let read_late = ReadRequest {
            account: carol,
            conversation: group,
            seq: 5,
            now_ms: NOW + 8,
        };
        assert_eq!(store.mark_read(read_late).await, Err(StoreError::NotMember));
        // Removing her again names someone who is not a member; her leaving
        // again is the act of a non-member.
        assert_eq!(
            change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 8).await,
            Err(StoreError::UnknownMember)
        );
        assert_eq!(
            change(store, carol, c1, group, GroupChange::Leave, NOW + 8).await,
            Err(StoreError::NotMember)
        );

        // One gap-free sequence of system events and texts.
        let everything = vec![
            sys(1, "created"),
            txt(2, "t2"),
            sys(3, "added"),
            txt(4, "t4"),
            sys(5, "removed"),
            txt(6, "t6"),
            sys(7, "renamed"),
        ];
        assert_eq!(summaries(&history_all(store, bob, group).await), everything);
        let info = group_info(store, bob, group).await;
        assert_eq!((info.name.as_str(), info.last_seq), ("crew", 7));
        assert_roles(store, bob, group, &["alice"], &["bob", "dave"]).await;
    }

    /// 14. Leaving, roles, and the promotion when no admin is left.
    pub async fn event_times_never_go_backwards(store: Arc<dyn Store>) {
        // Goal: no event is stamped earlier than the event before it in its
        // conversation, whatever clock the sender's node reads (node clocks
        // differ); a later clock stamps its own time again; a retry answers
        // the time first stored; each conversation keeps its own clock.
        // Method: in alice and bob's conversation, texts at NOW+60s, then
        // NOW (a node behind), then NOW+90s, and a retry of the second at
        // NOW-1; then a group created at NOW+120s, a text and a rename in
        // it at earlier times; read both histories.
        let store = &*store;
        let Cast(alice, bob, direct, [a1, b1]) = cast(store, ["a1", "b1"]).await;
        let ahead = send_at(store, direct, alice, a1, "m1", NOW + 60_000).await;
        let behind = send_at(store, direct, bob, b1, "m2", NOW).await;
        let later = send_at(store, direct, alice, a1, "m3", NOW + 90_000).await;
        assert_eq!(
            (ahead.ts_ms, behind.ts_ms, later.ts_ms),
            (NOW + 60_000, NOW + 60_000, NOW + 90_000)
        );
        let retry = send_at(store, direct, bob, b1, "m2", NOW - 1).await;
        assert_eq!((retry.duplicate, retry.ts_ms), (true, NOW + 60_000));

        let group = create_group(store, new_group(alice, a1, "clocks", &[bob], NOW + 120_000))
            .await
            .conversation;
        let text = send_at(store, group, bob, b1, "g1", NOW).await;
        assert_eq!(text.ts_ms, NOW + 120_000);
        let renamed = change(store, alice, a1, group, rename("later"), NOW + 5)
            .await
            .expect("rename");

        let times = |events: Vec<StoredEvent>| -> Vec<(Seq, UnixMillis)> {
            events
                .iter()
                .map(|event| (event.seq, event.ts_ms))
                .collect()
        };
        assert_eq!(
            times(history_all(store, bob, direct).await),
            vec![(1, NOW + 60_000), (2, NOW + 60_000), (3, NOW + 90_000)]
        );
        assert_eq!(
            times(history_all(store, bob, group).await),
            vec![
                (1, NOW + 120_000),
                (text.seq, NOW + 120_000),
                (renamed.seq, NOW + 120_000)
            ]
        );
    }

    pub async fn group_leave_and_roles(store: Arc<dyn Store>) {
        // Goal: promote, demote and rename are for admins, on members only;
        // any member may leave, the leaver's devices get the `left` event
        // and nothing after; while an admin remains nobody is promoted; when
        // the last admin leaves, the longest-standing remaining member (the
        // earliest to join, not the lowest id or name) becomes admin and the
        // event names it in `promoted`.
        // Method: the group cast alice (a1, a2), bob (b1), carol (c1), dave
        // (d1) outside; alice removes bob, adds dave, re-adds bob (so carol
        // joined first, bob last though his id and name are lowest);
        // promotions by the wrong people; alice promotes dave and leaves (no
        // promotion), then dave leaves (carol promoted).
        let store = &*store;
        let GroupCast([alice, bob, carol, dave], group, [a1, a2, b1, c1, d1]) =
            group_cast(store, ["a1", "a2", "b1", "c1", "d1"]).await;
        let erin = new_account(store, "erin").await;
        for (seq, membership) in [
            (2, GroupChange::Remove(bob)),
            (3, GroupChange::Add(vec![dave])),
            (4, GroupChange::Add(vec![bob])),
        ] {
            let changed = change(store, alice, a1, group, membership, NOW + seq)
                .await
                .expect("membership change");
            assert_eq!(changed.seq, seq);
        }

        let refusals = [
            (carol, c1, GroupChange::Promote(dave), StoreError::NotAdmin),
            (carol, c1, GroupChange::Demote(alice), StoreError::NotAdmin),
            (carol, c1, rename("mine"), StoreError::NotAdmin),
            // The target is not a member (the admin is): said as such.
            (
                alice,
                a1,
                GroupChange::Promote(erin),
                StoreError::UnknownMember,
            ),
            (
                alice,
                a1,
                GroupChange::Demote(erin),
                StoreError::UnknownMember,
            ),
            (
                alice,
                a1,
                GroupChange::Remove(erin),
                StoreError::UnknownMember,
            ),
        ];
        for (actor, device, refused, expected) in refusals {
            assert_eq!(
                change(store, actor, device, group, refused, NOW + 5).await,
                Err(expected)
            );
        }
        let promoted = change(store, alice, a1, group, GroupChange::Promote(dave), NOW + 5).await;
        assert_eq!(promoted.map(|c| c.seq), Ok(5));
        assert_roles(store, carol, group, &["alice", "dave"], &["bob", "carol"]).await;

        // alice leaves while dave is admin: nobody is promoted.
        let left = change(store, alice, a1, group, GroupChange::Leave, NOW + 6)
            .await
            .expect("alice leaves");
        assert_eq!(left.seq, 6);
        assert_eq!(sorted(left.recipients), sorted(vec![a2, b1, c1, d1]));
        let alice_left = newest(store, bob, group).await;
        assert_eq!(description(&alice_left.body)["action"], "left");
        assert_eq!(
            description(&alice_left.body)["promoted"],
            serde_json::Value::Null
        );
        assert_eq!(
            store.group_info(alice, group).await,
            Err(StoreError::NotMember)
        );

        // dave, the last admin, leaves: carol has been in longest.
        let left = change(store, dave, d1, group, GroupChange::Leave, NOW + 7)
            .await
            .expect("dave leaves");
        assert_eq!(left.seq, 7);
        assert_eq!(sorted(left.recipients), sorted(vec![b1, c1]));
        assert_roles(store, bob, group, &["carol"], &["bob"]).await;
        assert_eq!(
            history_seqs(store, bob, group).await,
            vec![4, 5, 6, 7],
            "bob, re-added at seq 4, sees from there on"
        );
        assert_eq!(
            pending_summaries(store, b1).await,
            vec![
                sys(4, "added"),
                sys(5, "promoted"),
                sys(6, "left"),
                sys(7, "left")
            ],
            "bob's device, re-added at seq 4, gets events from there on"
        );
        let dave_left = newest(store, bob, group).await;
        assert_eq!(description(&dave_left.body)["action"], "left");
        assert_eq!(description(&dave_left.body)["promoted"], "carol");

        // The new admin administers; the leavers got nothing after leaving.
        let renamed = change(store, carol, c1, group, rename("ours"), NOW + 8).await;
        assert_eq!(renamed.map(|c| c.seq), Ok(8));
        assert!(
            pending_all(store, a1).await.is_empty(),
            "a1 made every change"
        );
        let alice_saw = vec![
            sys(1, "created"),
            sys(2, "removed"),
            sys(3, "added"),
            sys(4, "added"),
            sys(5, "promoted"),
            sys(6, "left"),
        ];
        assert_eq!(pending_summaries(store, a2).await, alice_saw);
        assert_eq!(pending_summaries(store, d1).await, alice_saw[2..].to_vec());
    }

    /// 15. Replies.
    pub async fn replies(store: Arc<dyn Store>) {
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
    pub async fn reactions(store: Arc<dyn Store>) {
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
        let (Cast(alice, bob, conv, [a1, b1]), m1) = cast_with_text(store, ["a1", "b1"]).await;
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
            (history[1].message_id.clone(), StoreError::UnknownMessage),
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
    pub async fn edits(store: Arc<dyn Store>) {
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
        let (Cast(alice, bob, conv, [a1, a2, b1]), m1) =
            cast_with_text(store, ["a1", "a2", "b1"]).await;
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
    pub async fn deletes(store: Arc<dyn Store>) {
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
        let (Cast(alice, bob, conv, [a1, b1]), m1) = cast_with_text(store, ["a1", "b1"]).await;
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
        let edit_event = stored(store, bob, conv, &edited.message_id).await;
        assert_eq!(
            (edit_event.kind, edit_event.body.as_str()),
            (EventKind::Edit, "")
        );
        assert_eq!(
            pending_event(store, b1, &edited.message_id).await.body,
            "",
            "the waiting edit event still carries the deleted text"
        );
        let delete_event = stored(store, alice, conv, &deleted.message_id).await;
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

    /// 19. Receipts.
    pub async fn receipts(store: Arc<dyn Store>) {
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
        let GroupCast([alice, bob, carol, dave], group, [a1, b1, b2, c1]) =
            group_cast(store, ["a1", "b1", "b2", "c1"]).await;
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

        // Refusals.
        let system_id = history_all(store, alice, group).await[0].message_id.clone();
        for not_a_text in [MessageId::generate(), reaction.message_id, system_id] {
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

    /// 20. History paging.
    pub async fn history_after_shows_events_about_earlier_messages(store: Arc<dyn Store>) {
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

    pub async fn history_paging(store: Arc<dyn Store>) {
        // Goal: without `after`, history pages newest first strictly below
        // `before` (from the newest when absent); with `after`, oldest first
        // strictly above it; at most `limit` events; every member sees the
        // same events with their stored fields; bodies past retention drop
        // out of history; outsiders are NotMember.
        // Method: alice (a1) and bob (b1), carol outside; ten texts at
        // NOW + 1..=10; page both ways with various bounds; then bob acks
        // everything and a sweep purges the three oldest bodies.
        let store = &*store;
        let Cast(alice, bob, conv, [a1, b1]) = cast(store, ["a1", "b1"]).await;
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

        let fifth = stored(store, bob, conv, &sent[4].message_id).await;
        assert_eq!(
            fifth,
            StoredEvent {
                message_id: sent[4].message_id.clone(),
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

    /// 21. The conversation list.
    pub async fn conversation_list_order(store: Arc<dyn Store>) {
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
    /// End-to-end encryption keys: identity keys set once, one-time keys
    /// claimed once each (concurrent claims included), gone with a revoked
    /// device.
    pub async fn device_keys_are_claimed_once_and_go_with_their_device(store: Arc<dyn Store>) {
        // Goal: an upload needs identity keys the first time and refuses
        // other ones later (changing nothing); retried key ids are kept as
        // they were; the held count is capped; a claim hands out one key
        // per device, each key once even when claims race; a revoked
        // device's keys are neither listed nor claimed. Only the upload
        // that stores a device's identity keys says so, and a revocation
        // says whether the device had any (what `devices_changed` needs).
        // Method: bob's two devices upload; 12 claims run at once against
        // 10 keys of b1 and 2 of b2; then b2 is revoked, and b3, which
        // never uploaded.
        let (alice, bob) = alice_and_bob(&*store).await;
        let b1 = new_device(&*store, bob, "b1").await;
        let b2 = new_device(&*store, bob, "b2").await;
        let identity = |name: &str| IdentityKeys {
            curve25519: format!("curve-{name}"),
            ed25519: format!("ed-{name}"),
        };
        let key = |n: u32| OneTimeKey {
            key_id: format!("k{n:03}"),
            key: format!("key-{n}"),
            signature: format!("sig-{n}"),
        };
        let upload =
            |device, identity: Option<IdentityKeys>, keys: Vec<OneTimeKey>, max| KeyUpload {
                device,
                account: bob,
                identity,
                one_time_keys: keys,
                one_time_keys_max: max,
                now_ms: NOW,
            };
        let stored = |one_time_keys, identity_added| KeysStored {
            one_time_keys,
            identity_added,
        };
        assert_eq!(
            store
                .put_device_keys(upload(b1, None, vec![key(1)], 50))
                .await,
            Err(StoreError::IdentityKeyMissing)
        );
        let keys: Vec<OneTimeKey> = (1..=10).map(key).collect();
        assert_eq!(
            store
                .put_device_keys(upload(b1, Some(identity("b1")), keys.clone(), 50))
                .await,
            Ok(stored(10, true))
        );
        // A retry (same ids, whatever they carry) adds nothing, identity
        // keys included.
        let mut retried = keys[..3].to_vec();
        retried[0].key = "changed".into();
        assert_eq!(
            store.put_device_keys(upload(b1, None, retried, 50)).await,
            Ok(stored(10, false))
        );
        assert_eq!(
            store
                .put_device_keys(upload(b1, Some(identity("b1")), keys[..1].to_vec(), 50))
                .await,
            Ok(stored(10, false))
        );
        assert_eq!(
            store
                .put_device_keys(upload(b1, Some(identity("other")), vec![key(11)], 50))
                .await,
            Err(StoreError::IdentityKeyMismatch)
        );
        assert_eq!(
            store
                .put_device_keys(upload(b1, None, (11..=12).map(key).collect(), 11))
                .await,
            Err(StoreError::TooManyKeys)
        );
        assert_eq!(
            store.one_time_key_count(b1).await,
            Ok(10),
            "refusals changed nothing"
        );
        assert_eq!(
            store
                .put_device_keys(upload(
                    b2,
                    Some(identity("b2")),
                    (20..=21).map(key).collect(),
                    50
                ))
                .await,
            Ok(stored(2, true))
        );
        assert_eq!(
            store.device_keys(bob).await.expect("device_keys"),
            vec![
                DeviceKeys {
                    device: b1,
                    identity: identity("b1")
                },
                DeviceKeys {
                    device: b2,
                    identity: identity("b2")
                },
            ]
        );
        assert_eq!(store.device_keys(alice).await, Ok(Vec::new()));

        let claims = (0..12).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim_one_time_keys(bob).await })
        });
        let mut handed_out = Vec::new();
        let mut remaining_b1 = Vec::new();
        for claim in claims {
            let claimed = claim.await.expect("claim task").expect("claim");
            assert_eq!(claimed.len(), 2, "one entry per device with keys");
            for entry in claimed {
                if entry.device == b1 {
                    remaining_b1.push(entry.remaining);
                }
                assert_eq!(
                    entry.identity,
                    identity(if entry.device == b1 { "b1" } else { "b2" })
                );
                if let Some(one) = entry.one_time_key {
                    handed_out.push((entry.device, one.key_id));
                }
            }
        }
        handed_out.sort();
        let unique = handed_out.len();
        handed_out.dedup();
        assert_eq!(handed_out.len(), unique, "a key was handed out twice");
        assert_eq!(unique, 12, "every key handed out, once");
        // Each claim saw what it left: b1's ten keys counted down, and the
        // two claims that found none left saw zero.
        remaining_b1.sort_unstable();
        assert_eq!(remaining_b1, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(store.one_time_key_count(b1).await, Ok(0));

        assert_eq!(
            store.revoke_device(bob, b2).await,
            Ok(Some(RevokedDevice {
                device: b2,
                account: bob,
                had_keys: true
            }))
        );
        let b3 = new_device(&*store, bob, "b3").await;
        assert_eq!(
            store
                .revoke_device(bob, b3)
                .await
                .map(|r| r.map(|r| r.had_keys)),
            Ok(Some(false)),
            "b3 never uploaded"
        );
        assert_eq!(
            store.device_keys(bob).await.expect("device_keys"),
            vec![DeviceKeys {
                device: b1,
                identity: identity("b1")
            }]
        );
        let claimed = store.claim_one_time_keys(bob).await.expect("claim");
        assert_eq!(
            claimed,
            vec![ClaimedKey {
                device: b1,
                identity: identity("b1"),
                one_time_key: None,
                remaining: 0
            }]
        );
    }

    /// Who is told, live, that an account's key listing changed.
    pub async fn online_devices_sharing_a_conversation(store: Arc<dyn Store>) {
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

    /// Ciphertext for an encrypted conversation.
    pub fn sealed(ciphertext: &str, media: &[&str]) -> Body {
        Body::Encrypted {
            ciphertext: ciphertext.to_owned(),
            media: media.iter().map(|id| id.to_string()).collect(),
        }
    }

    /// A media record `id` uploaded by `uploader` with `content_type`.
    pub fn uploaded(id: &str, uploader: AccountId, content_type: &str) -> MediaRecord {
        MediaRecord {
            id: id.to_owned(),
            uploader,
            content_type: content_type.to_owned(),
            size_bytes: 3,
            sha256: "00".repeat(32),
            created_ms: NOW,
            width: None,
            height: None,
            thumbnail: false,
            filename: None,
        }
    }

    /// End-to-end encrypted conversations: once on, only ciphertext (and
    /// deletes) go in; it is stored and delivered as it came.
    pub async fn encrypted_conversations_take_only_ciphertext(store: Arc<dyn Store>) {
        // Goal: ciphertext into a plain conversation is refused
        // (ConversationNotEncrypted); any member of a 1:1 turns encryption
        // on, once, recorded as a system event for the others (again: no
        // new event); then a plain text, reply, edit or reaction is refused
        // (ConversationEncrypted) and changes nothing; ciphertext is stored
        // and delivered byte for byte as kind Encrypted, counts as unread,
        // may be deleted by its author, and carries only media uploaded
        // encrypted; a group created encrypted says so in its info, its
        // list entry and its created event; only an admin turns a group's
        // encryption on.
        // Method: alice (a1) and bob (b1) in a 1:1 with alice's text m1;
        // then a group of alice, bob and carol.
        let store = &*store;
        let (Cast(alice, bob, conv, [a1, b1]), m1) = cast_with_text(store, ["a1", "b1"]).await;
        let early = message_with(conv, alice, a1, "x0", sealed("AAAA", &[]), NOW);
        assert_refused(store, early, StoreError::ConversationNotEncrypted, &[b1]).await;
        assert!(
            !conversation_of(store, alice, conv)
                .await
                .expect("listed")
                .encrypted
        );

        let request = |actor, actor_device, conversation| SettingRequest {
            actor,
            actor_device,
            conversation,
            setting: Setting::Encrypt,
            now_ms: NOW + 1,
        };
        let on = store
            .change_setting(request(bob, b1, conv))
            .await
            .expect("encrypt");
        assert_eq!((on.seq, on.recipients.clone()), (2, vec![a1]));
        let event = pending_all(store, a1)
            .await
            .into_iter()
            .find_map(|item| match item {
                PendingItem::Event(event) if event.seq == 2 => Some(event),
                _ => None,
            })
            .expect("the system event waits for a1");
        let description: serde_json::Value =
            serde_json::from_str(&event.body).expect("a JSON description");
        assert_eq!(
            (event.kind, &description["action"], &description["actor"]),
            (
                EventKind::System,
                &serde_json::json!("encrypted"),
                &serde_json::json!("bob")
            )
        );
        let again = store
            .change_setting(request(alice, a1, conv))
            .await
            .expect("encrypt again");
        assert_eq!(
            (again.seq, again.recipients.len()),
            (2, 0),
            "no second event"
        );
        assert!(
            conversation_of(store, bob, conv)
                .await
                .expect("listed")
                .encrypted
        );

        for (cmid, body) in [
            ("p1", plain("hello")),
            ("p2", reply("re", &m1)),
            ("p3", edit(&m1, "v2")),
            ("p4", react(&m1, Some("👍"))),
        ] {
            let refused = message_with(conv, alice, a1, cmid, body, NOW + 2);
            assert_refused(store, refused, StoreError::ConversationEncrypted, &[b1]).await;
        }

        let ciphertext = "AwgAEhAx+/=={\"session_id\":\"x\"}";
        let sent = append_ok(
            store,
            message_with(conv, alice, a1, "s1", sealed(ciphertext, &[]), NOW + 3),
        )
        .await;
        assert_new(&sent, 3);
        let waiting = pending_event(store, b1, &sent.message_id).await;
        assert_eq!(
            (waiting.kind, waiting.body.as_str(), waiting.target),
            (EventKind::Encrypted, ciphertext, None)
        );
        let bobs = conversation_of(store, bob, conv).await.expect("listed");
        assert_eq!(bobs.unread, 2, "m1 and the ciphertext");
        assert_eq!(
            bobs.last_event.map(|event| event.kind),
            Some(EventKind::Encrypted)
        );

        store
            .create_media(uploaded(&"a".repeat(32), alice, "image/png"))
            .await
            .expect("plain upload");
        store
            .create_media(uploaded(&"b".repeat(32), alice, ENCRYPTED_MEDIA_TYPE))
            .await
            .expect("encrypted upload");
        let with_plain_media = message_with(
            conv,
            alice,
            a1,
            "s2",
            sealed("BBBB", &[&"a".repeat(32)]),
            NOW + 4,
        );
        assert_refused(store, with_plain_media, StoreError::UnknownMedia, &[b1]).await;
        let with_media = append_ok(
            store,
            message_with(
                conv,
                alice,
                a1,
                "s3",
                sealed("CCCC", &[&"b".repeat(32)]),
                NOW + 4,
            ),
        )
        .await;
        let carried = stored(store, bob, conv, &with_media.message_id).await;
        assert_eq!(
            carried
                .media
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>(),
            vec!["b".repeat(32)]
        );

        let by_bob = message_with(conv, bob, b1, "d0", delete(&sent.message_id), NOW + 5);
        assert_refused(store, by_bob, StoreError::NotAuthor, &[a1]).await;
        append_ok(
            store,
            message_with(conv, alice, a1, "d1", delete(&sent.message_id), NOW + 5),
        )
        .await;
        let tombstone = stored(store, bob, conv, &sent.message_id).await;
        assert_eq!((tombstone.deleted, tombstone.body.as_str()), (true, ""));

        let (carol, c1) = account_with_device(store, "carol", "c1").await;
        let group = create_group(
            store,
            NewGroup {
                encrypted: true,
                ..new_group(alice, a1, "sealed", &[bob, carol], NOW + 6)
            },
        )
        .await;
        let info = store
            .group_info(carol, group.conversation)
            .await
            .expect("group_info");
        assert!(info.encrypted);
        assert!(
            conversation_of(store, carol, group.conversation)
                .await
                .expect("listed")
                .encrypted
        );
        let created = pending_all(store, c1)
            .await
            .into_iter()
            .find_map(|item| match item {
                PendingItem::Event(event) if event.conversation == group.conversation => {
                    Some(event)
                }
                _ => None,
            })
            .expect("the created event");
        let description: serde_json::Value =
            serde_json::from_str(&created.body).expect("a JSON description");
        assert_eq!(description["encrypted"], serde_json::json!(true));
        let plain_in_group =
            message_with(group.conversation, carol, c1, "g1", plain("hi"), NOW + 7);
        assert_refused(
            store,
            plain_in_group,
            StoreError::ConversationEncrypted,
            &[a1],
        )
        .await;

        let open = create_group(store, new_group(alice, a1, "open", &[bob], NOW + 8)).await;
        assert!(
            !store
                .group_info(bob, open.conversation)
                .await
                .expect("info")
                .encrypted
        );
        assert_eq!(
            store
                .change_setting(request(bob, b1, open.conversation))
                .await
                .map(|changed| changed.seq),
            Err(StoreError::NotAdmin)
        );
        assert_eq!(
            store
                .change_setting(request(carol, c1, open.conversation))
                .await
                .map(|changed| changed.seq),
            Err(StoreError::UnknownConversation)
        );
        let turned = store
            .change_setting(request(alice, a1, open.conversation))
            .await
            .expect("the admin turns it on");
        assert_eq!(sorted(turned.recipients), vec![b1]);
    }

    /// Disappearing messages: a timer set in a conversation stamps each
    /// event sent after it with its expiry; the sweep purges them then.
    pub async fn disappearing_messages_go_at_their_expiry(store: Arc<dyn Store>) {
        // Goal: any member of a 1:1 sets the timer, recorded as a system
        // event (setting it again records nothing); events sent under it
        // carry `expires_ms` (send time + timer) in the answer, in what
        // waits and in history, events sent before do not; at expiry the
        // sweep purges bodies, reactions and media links whatever the
        // cursors (a device that never acked gets an expired range, history
        // no longer shows them), and nothing else; turning the timer off
        // stops stamping.
        // Method: alice (a1), bob (b1); m1 before the timer, then a text,
        // bob's reaction to it and a text with media under a one-hour timer.
        let store = &*store;
        let (Cast(alice, bob, conv, [a1, b1]), m1) = cast_with_text(store, ["a1", "b1"]).await;
        const HOUR_MS: i64 = 3_600_000;
        let timer = |secs, now_ms| SettingRequest {
            actor: bob,
            actor_device: b1,
            conversation: conv,
            setting: Setting::DisappearAfter(secs),
            now_ms,
        };
        let set = store
            .change_setting(timer(3_600, NOW + 1))
            .await
            .expect("timer");
        assert_eq!((set.seq, set.recipients.clone()), (2, vec![a1]));
        let again = store
            .change_setting(timer(3_600, NOW + 2))
            .await
            .expect("again");
        assert_eq!((again.seq, again.recipients.len()), (2, 0));
        let event = pending_event(
            store,
            a1,
            &history_all(store, alice, conv).await[1].message_id,
        )
        .await;
        let description: serde_json::Value = serde_json::from_str(&event.body).expect("json");
        assert_eq!(
            (
                &description["action"],
                &description["secs"],
                event.expires_ms
            ),
            (&serde_json::json!("timer"), &serde_json::json!(3_600), None)
        );
        assert_eq!(
            conversation_of(store, alice, conv)
                .await
                .expect("listed")
                .disappear_secs,
            3_600
        );

        let m2 = append_ok(
            store,
            message_with(conv, alice, a1, "m2", plain("gone soon"), NOW + 10),
        )
        .await;
        assert_eq!(m2.expires_ms, Some(NOW + 10 + HOUR_MS));
        append_ok(
            store,
            message_with(
                conv,
                bob,
                b1,
                "r2",
                react(&m2.message_id, Some("👍")),
                NOW + 11,
            ),
        )
        .await;
        let media_id = "c".repeat(32);
        store
            .create_media(uploaded(&media_id, alice, "image/png"))
            .await
            .expect("upload");
        let m3 = append_ok(
            store,
            message_with(
                conv,
                alice,
                a1,
                "m3",
                Body::Text {
                    text: text("photo"),
                    reply_to: None,
                    media: vec![media_id.clone()],
                },
                NOW + 20,
            ),
        )
        .await;
        assert_eq!(
            pending_event(store, b1, &m2.message_id).await.expires_ms,
            Some(NOW + 10 + HOUR_MS)
        );
        assert_eq!(stored(store, bob, conv, &m1).await.expires_ms, None);
        assert_eq!(
            stored(store, bob, conv, &m3.message_id).await.expires_ms,
            Some(NOW + 20 + HOUR_MS)
        );
        assert!(
            store
                .media_for(bob, &media_id)
                .await
                .expect("media")
                .is_some()
        );

        // One millisecond early: nothing goes.
        let early = sweep(store, NOW + 10 + HOUR_MS - 1, 0, 0, 0, 100).await;
        assert_eq!(early.purged_bodies, 0);
        let swept = sweep(store, NOW + 20 + HOUR_MS, 0, 0, 0, 100).await;
        assert_eq!(swept.purged_bodies, 3, "m2, bob's reaction and m3");
        assert_eq!(
            history_seqs(store, bob, conv).await,
            vec![1, 2],
            "history keeps m1 and the timer's event"
        );
        assert!(
            store
                .media_for(bob, &media_id)
                .await
                .expect("media")
                .is_none()
        );
        assert_eq!(
            shapes(&pending_all(store, b1).await),
            vec![Ev(conv, 1), Ex(conv, 3, 5)],
            "what bob's device never received is an expired range (the timer's event is its own)"
        );

        let off = store.change_setting(timer(0, NOW + 30)).await.expect("off");
        assert_eq!(off.seq, 6);
        let m4 = append_ok(
            store,
            message_with(conv, alice, a1, "m4", plain("stays"), NOW + 31),
        )
        .await;
        assert_eq!(m4.expires_ms, None);
    }

    /// To-device messages: stored per device all or none, read in seq
    /// order above a cursor, acked cumulatively, gone with their device.
    pub async fn to_device_messages_wait_for_their_device_until_acked(store: Arc<dyn Store>) {
        // Goal: a batch stores every message or none (an unknown device,
        // a device of another account, a full inbox refuse it whole);
        // each device reads its own messages in the order sent, above any
        // cursor, with the sender's name; an ack removes up to its seq and
        // is idempotent; seqs keep rising after acks; concurrent batches
        // leave each device's seqs in one order; one sender account cannot
        // fill a device's inbox; revoking a device drops its messages.
        // Method: alice's a1 sends to bob's b1 and b2 and to her own a2.
        let (alice, bob) = alice_and_bob(&*store).await;
        let a1 = new_device(&*store, alice, "a1").await;
        let a2 = new_device(&*store, alice, "a2").await;
        let b1 = new_device(&*store, bob, "b1").await;
        let b2 = new_device(&*store, bob, "b2").await;
        let to = |account, device, body: &str| NewToDevice {
            recipient_account: account,
            recipient: device,
            body: body.to_owned(),
        };
        let batch = |messages: Vec<NewToDevice>, max| ToDeviceBatch {
            sender_account: alice,
            sender_device: a1,
            messages,
            waiting_max: max,
            waiting_per_sender_max: max,
            now_ms: NOW,
        };
        let bodies = |messages: Vec<ToDeviceMessage>| -> Vec<String> {
            messages.into_iter().map(|m| m.body).collect()
        };
        store
            .send_to_devices(batch(
                vec![
                    to(bob, b1, "k1"),
                    to(bob, b2, "k2"),
                    to(alice, a2, "k3"),
                    to(bob, b1, "k4"),
                ],
                10,
            ))
            .await
            .expect("send");
        let waiting = store.to_device_waiting(b1, 0, 10).await.expect("waiting");
        assert_eq!(waiting.len(), 2);
        assert!(waiting[0].seq < waiting[1].seq);
        assert_eq!(
            (
                waiting[0].from.as_str(),
                waiting[0].from_device,
                waiting[0].created_ms
            ),
            ("alice", a1, NOW)
        );
        assert_eq!(bodies(waiting.clone()), ["k1", "k4"]);
        assert_eq!(
            bodies(
                store
                    .to_device_waiting(b1, waiting[0].seq, 10)
                    .await
                    .expect("above")
            ),
            ["k4"]
        );
        assert_eq!(
            bodies(store.to_device_waiting(a2, 0, 10).await.expect("a2")),
            ["k3"]
        );

        // Refused batches store nothing, even their valid messages.
        for (refused, error) in [
            (
                vec![to(bob, b1, "x"), to(bob, DeviceId(987_654), "y")],
                StoreError::UnknownDevice,
            ),
            (
                vec![to(bob, b1, "x"), to(alice, b2, "y")],
                StoreError::UnknownDevice,
            ),
            (
                vec![to(bob, b2, "x"), to(bob, b1, "y"), to(bob, b1, "z")],
                StoreError::InboxFull,
            ),
        ] {
            assert_eq!(store.send_to_devices(batch(refused, 3)).await, Err(error));
        }
        assert_eq!(
            bodies(store.to_device_waiting(b1, 0, 10).await.expect("b1")),
            ["k1", "k4"]
        );
        assert_eq!(
            bodies(store.to_device_waiting(b2, 0, 10).await.expect("b2")),
            ["k2"]
        );

        // Acks are cumulative and idempotent; later seqs are higher still.
        assert_eq!(store.ack_to_device(b1, waiting[0].seq).await, Ok(1));
        assert_eq!(store.ack_to_device(b1, waiting[0].seq).await, Ok(0));
        store
            .send_to_devices(batch(vec![to(bob, b1, "k5")], 10))
            .await
            .expect("send again");
        let later = store.to_device_waiting(b1, 0, 10).await.expect("later");
        assert_eq!(bodies(later.clone()), ["k4", "k5"]);
        assert!(later[1].seq > waiting[1].seq);
        assert_eq!(store.ack_to_device(b1, later[1].seq).await, Ok(2));
        assert!(
            store
                .to_device_waiting(b1, 0, 10)
                .await
                .expect("empty")
                .is_empty()
        );

        // Racing batches to one device: one order, each message once.
        let sends = (0..8).map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .send_to_devices(ToDeviceBatch {
                        sender_account: alice,
                        sender_device: a1,
                        messages: vec![NewToDevice {
                            recipient_account: bob,
                            recipient: b1,
                            body: format!("r{n}"),
                        }],
                        waiting_max: 100,
                        waiting_per_sender_max: 100,
                        now_ms: NOW,
                    })
                    .await
            })
        });
        for send in sends {
            send.await.expect("send task").expect("send");
        }
        let raced = store.to_device_waiting(b1, 0, 100).await.expect("raced");
        let mut seen = bodies(raced.clone());
        seen.sort();
        assert_eq!(seen, (0..8).map(|n| format!("r{n}")).collect::<Vec<_>>());
        assert!(raced.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(
            bodies(
                store
                    .to_device_waiting(b1, raced[3].seq, 100)
                    .await
                    .expect("page")
            ),
            bodies(raced[4..].to_vec())
        );

        // No one account fills a device's inbox: alice has one message
        // waiting for b2, so with one allowed per sender her next is
        // refused, while bob's own b1 still reaches b2.
        let capped = ToDeviceBatch {
            waiting_per_sender_max: 1,
            ..batch(vec![to(bob, b2, "one too many")], 10)
        };
        assert_eq!(
            store.send_to_devices(capped).await,
            Err(StoreError::InboxFull)
        );
        store
            .send_to_devices(ToDeviceBatch {
                sender_account: bob,
                sender_device: b1,
                messages: vec![to(bob, b2, "from b1")],
                waiting_max: 10,
                waiting_per_sender_max: 1,
                now_ms: NOW,
            })
            .await
            .expect("another sender");
        assert_eq!(
            bodies(store.to_device_waiting(b2, 0, 10).await.expect("b2")),
            ["k2", "from b1"]
        );

        assert!(
            store
                .revoke_device(bob, b2)
                .await
                .expect("revoke")
                .is_some()
        );
        assert!(
            store
                .to_device_waiting(b2, 0, 10)
                .await
                .expect("revoked")
                .is_empty()
        );
    }

    /// 22. Contacts and blocks.
    pub async fn contacts_and_blocks(store: Arc<dyn Store>) {
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

    /// 23. Blocks and sending.
    pub async fn sends_are_judged_on_the_conversation_as_it_is_now(store: Arc<dyn Store>) {
        // Goal: whatever a store remembers between sends, each send sees the
        // conversation as it is when it is stored: a device added since the
        // last send is a recipient, a revoked one is not, and a member
        // removed since can no longer send.
        // Method: bob sends in a group of alice, bob and carol before and
        // after each change.
        let store = &*store;
        let (alice, a1) = account_with_device(store, "alice", "a1").await;
        let (bob, b1) = account_with_device(store, "bob", "b1").await;
        let (carol, c1) = account_with_device(store, "carol", "c1").await;
        let group = create_group(store, new_group(alice, a1, "team", &[bob, carol], NOW))
            .await
            .conversation;
        let first = send_at(store, group, bob, b1, "g1", NOW + 1).await;
        assert_eq!(sorted(first.recipients), sorted(vec![a1, c1]));

        let c2 = new_device(store, carol, "c2").await;
        let second = send_at(store, group, bob, b1, "g2", NOW + 2).await;
        assert_eq!(sorted(second.recipients), sorted(vec![a1, c1, c2]));

        assert!(
            store
                .revoke_device(carol, c2)
                .await
                .expect("revoke")
                .is_some()
        );
        let third = send_at(store, group, bob, b1, "g3", NOW + 3).await;
        assert_eq!(sorted(third.recipients), sorted(vec![a1, c1]));

        change(store, alice, a1, group, GroupChange::Remove(bob), NOW + 4)
            .await
            .expect("remove bob");
        let message = new_message(group, bob, b1, "g4", NOW + 5);
        assert_refused(store, message, StoreError::NotMember, &[a1, c1]).await;
        let after = send_at(store, group, carol, c1, "g5", NOW + 6).await;
        assert_eq!(after.recipients, vec![a1], "bob's device is no recipient");
    }

    pub async fn blocks_refuse_direct_sends(store: Arc<dyn Store>) {
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
        assert!(store.set_block(alice, bob, true, NOW).await.expect("block"));

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
                .set_block(alice, bob, false, NOW + 3)
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
                .set_block(bob, alice, true, NOW + 5)
                .await
                .expect("block")
        );
        let message = new_message(conv, alice, a1, "y", NOW + 6);
        assert_refused(store, message, StoreError::Blocked, &[b1]).await;
    }

    /// 24. Relay targets.
    pub async fn relay_targets(store: Arc<dyn Store>) {
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

        assert!(store.set_block(bob, carol, true, NOW).await.expect("block"));
        assert_eq!(targets(bob, group).await, of_alice, "bob blocked carol");
        assert_eq!(
            targets(carol, group).await,
            of_alice,
            "carol is blocked by bob"
        );
        assert_eq!(targets(alice, group).await, everyone_but_alice);

        assert!(store.set_block(alice, bob, true, NOW).await.expect("block"));
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

    /// Looking up a 1:1 conversation never creates it.
    pub async fn find_direct(store: Arc<dyn Store>) {
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

    /// Session directory: node leases and live sessions across nodes.
    pub async fn session_directory(store: Arc<dyn Store>) {
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

    /// 25. Presence profile.
    pub async fn presence_profile(store: Arc<dyn Store>) {
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

    /// 26. A removed member gets no receipts.
    pub async fn removed_member_gets_no_receipts(store: Arc<dyn Store>) {
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
    pub async fn receipt_moves_tell_the_authors_of_texts_in_the_range(store: Arc<dyn Store>) {
        // Goal: a delivered cursor moving over a range tells the devices of
        // exactly the other members who wrote a text in that range (every
        // device of theirs, none of the reader's or of silent members), in
        // a small group and in a large one alike.
        // Method: groups of 4 and of 12; the creator and the second member
        // write texts (the second from both of its devices), the third
        // member writes only before the range; the last member acks.
        let store = &*store;
        for (size, tag) in [(4usize, "s"), (12, "l")] {
            let mut members = Vec::new();
            for i in 0..size {
                members.push(
                    account_with_device(store, &format!("{tag}m{i}"), &format!("{tag}d{i}")).await,
                );
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
    }

    pub async fn read_receipts_name_recipients_only(store: Arc<dyn Store>) {
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
}

/// Expands to one `#[tokio::test]` per scenario plus the model-based
/// proptest, each against a fresh store from `$open().await` (a test whose
/// `$open` gives `None` passes without running: the backend skipped it).
/// A scenario may carry attributes (e.g. `#[ignore = "known bug ..."]`) for
/// this backend.
macro_rules! conformance_tests {
    ($open:path; $($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            $(#[$attr])*
            async fn $scenario() {
                let Some(opened): Option<$crate::Opened> = $open().await else {
                    return;
                };
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
                    let Some(opened): Option<$crate::Opened> = $open().await else {
                        return;
                    };
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

    async fn open() -> Option<Opened> {
        Some(open_at().0)
    }

    conformance_tests!(
        open;
        accounts,
        devices,
        devices_are_replaced_and_expire_least_recent_first,
        accounts_listed_passwords_reset_and_revocations_numbered,
        suspensions_revoke_devices_and_invites_are_single_use,
        deleted_accounts_free_their_name_and_keep_their_messages,
        devices_are_renamed_by_their_account_only,
        revoked_device_identity_is_not_reused,
        seq_and_dedup,
        fan_out,
        pending_and_ack,
        ack_is_cumulative,
        behind_names_devices_with_something_from_others,
        refused_acks_change_nothing,
        delivered_cursor_moves_on_first_ack,
        mark_read,
        store_and_forward,
        purge_waits_for_every_member_device,
        expiry_and_sweep,
        expired_events_come_as_one_range,
        own_events_are_skipped_but_scanned,
        pages_continue_where_scanned_ends,
        new_devices_and_members_start_now,
        swept_departures_end_delivery,
        dedup_survives_purged_body,
        concurrent_appends,
        cancelled_reads_leave_the_store_usable,
        shutdown_refuses_further_calls,
        group_create,
        group_add_and_remove,
        group_leave_and_roles,
        event_times_never_go_backwards,
        replies,
        reactions,
        edits,
        deletes,
        receipts,
        history_paging,
        history_after_shows_events_about_earlier_messages,
        conversation_list_order,
        contacts_and_blocks,
        device_keys_are_claimed_once_and_go_with_their_device,
        online_devices_sharing_a_conversation,
        to_device_messages_wait_for_their_device_until_acked,
        encrypted_conversations_take_only_ciphertext,
        disappearing_messages_go_at_their_expiry,
        blocks_refuse_direct_sends,
        sends_are_judged_on_the_conversation_as_it_is_now,
        relay_targets,
        presence_profile,
        session_directory,
        find_direct,
        removed_member_gets_no_receipts,
        read_receipts_name_recipients_only,
        receipt_moves_tell_the_authors_of_texts_in_the_range,
    );

    // ── SQLite-only checks: they look inside the database file. ──

    #[tokio::test(flavor = "multi_thread")]
    async fn has_no_clock_of_its_own() {
        // Goal: an embedded store's clock is the process's: it reports
        // none, so leases use the node's own time.
        let Some(opened) = open().await else {
            return;
        };
        assert_eq!(opened.store.clock_ms().await, Ok(None));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn changes_made_by_another_process_are_seen_by_the_next_send() {
        // Goal: what the writer remembers about a conversation between
        // sends is forgotten when another connection (an operator's
        // `missive admin` process) changed the database: a member removed
        // there can no longer send here, and a device revoked there is no
        // recipient here.
        // Method: a second store on the same file, as another process has.
        use crate::support::*;
        use missive_store::GroupChange;
        let (opened, path) = open_at();
        let store = &*opened.store;
        let (alice, a1) = account_with_device(store, "alice", "a1").await;
        let (bob, b1) = account_with_device(store, "bob", "b1").await;
        let (carol, c1) = account_with_device(store, "carol", "c1").await;
        let c2 = new_device(store, carol, "c2").await;
        let group = create_group(store, new_group(alice, a1, "team", &[bob, carol], NOW))
            .await
            .conversation;
        let first = send_at(store, group, bob, b1, "g1", NOW + 1).await;
        assert_eq!(sorted(first.recipients), sorted(vec![a1, c1, c2]));

        let other = SqliteStore::open(&SqliteConfig::new(&path)).expect("second store");
        assert!(
            other
                .revoke_device(carol, c2)
                .await
                .expect("revoke")
                .is_some()
        );
        other.shutdown().await;
        let second = send_at(store, group, bob, b1, "g2", NOW + 2).await;
        assert_eq!(sorted(second.recipients), sorted(vec![a1, c1]));

        let other = SqliteStore::open(&SqliteConfig::new(&path)).expect("second store");
        change(&other, alice, a1, group, GroupChange::Remove(bob), NOW + 3)
            .await
            .expect("remove bob");
        other.shutdown().await;
        let message = new_message(group, bob, b1, "g3", NOW + 4);
        assert_eq!(
            store.append_message(message).await,
            Err(missive_store::StoreError::NotMember)
        );
        opened.store.shutdown().await;
    }

    mod engine {
        use std::collections::BTreeMap;
        use std::path::{Path, PathBuf};
        use std::sync::Arc;

        use missive_core::{AccountId, ConversationId, DeviceId, Seq};
        use missive_store::{GroupChange, NewGroup, SqliteConfig, SqliteStore, Store};
        use rusqlite::{Connection, OpenFlags, params};

        use super::open_at;
        use crate::Opened;
        use crate::support::*;

        /// A separate read-only connection on the store's file.
        fn inspect(path: &Path) -> Connection {
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open read-only")
        }

        fn rows(conn: &Connection, table: &str) -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
        }

        /// Whether the `messages` row of `id` exists, and if so whether it
        /// still has its body.
        fn message_row(conn: &Connection, id: &str) -> Option<bool> {
            let mut stmt = conn
                .prepare("SELECT body IS NOT NULL FROM messages WHERE id = ?1")
                .expect("prepare");
            let mut found = stmt
                .query_map([id], |row| row.get::<_, bool>(0))
                .expect("query")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows");
            assert!(found.len() <= 1, "two rows for message {id}");
            found.pop()
        }

        /// Rows of `messages` whose body was purged.
        fn purged_rows(conn: &Connection) -> i64 {
            conn.query_row(
                "SELECT count(*) FROM messages WHERE body IS NULL",
                [],
                |row| row.get(0),
            )
            .expect("count")
        }

        /// The device's `positions` rows: (conversation, seq).
        fn positions_of(conn: &Connection, device: DeviceId) -> Vec<(i64, Seq)> {
            let mut stmt = conn
                .prepare(
                    "SELECT conversation_id, seq FROM positions WHERE device_id = ?1 \
                     ORDER BY conversation_id",
                )
                .expect("prepare");
            stmt.query_map([device.0], |row| Ok((row.get(0)?, row.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        }

        /// The member's delivered cursor: (delivered_seq, delivered_ms).
        fn delivered_cursor(
            conn: &Connection,
            conversation: ConversationId,
            account: AccountId,
        ) -> (Seq, i64) {
            conn.query_row(
                "SELECT delivered_seq, delivered_ms FROM members \
                 WHERE conversation_id = ?1 AND account_id = ?2",
                params![conversation.0, account.0],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("member row")
        }

        /// Every `departures` row: (conversation, account, joined_seq,
        /// left_seq, left_ms).
        fn departures(conn: &Connection) -> Vec<(i64, i64, Seq, Seq, i64)> {
            let mut stmt = conn
                .prepare(
                    "SELECT conversation_id, account_id, joined_seq, left_seq, left_ms \
                     FROM departures ORDER BY conversation_id, account_id",
                )
                .expect("prepare");
            stmt.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
        }

        /// Every row of every table (values rendered), by table name.
        fn everything(conn: &Connection) -> BTreeMap<String, Vec<Vec<String>>> {
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .expect("prepare")
                .query_map([], |row| row.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("tables");
            tables
                .into_iter()
                .map(|table| {
                    let mut stmt = conn
                        .prepare(&format!("SELECT * FROM \"{table}\""))
                        .expect("prepare");
                    let columns: Vec<String> =
                        stmt.column_names().into_iter().map(str::to_owned).collect();
                    let mut rows: Vec<Vec<String>> = stmt
                        .query_map([], |row| {
                            (0..columns.len())
                                .map(|i| {
                                    row.get_ref(i)
                                        .map(|value| format!("{}={value:?}", columns[i]))
                                })
                                .collect()
                        })
                        .expect("query")
                        .collect::<Result<_, _>>()
                        .expect("rows");
                    rows.sort();
                    (table, rows)
                })
                .collect()
        }

        /// A fresh store (see `open_at`) holding the cast alice (a1) and bob
        /// (b1, b2), and its file.
        async fn open_with_cast() -> (Opened, PathBuf, Cast<3>) {
            let (opened, path) = open_at();
            let cast = cast(&*opened.store, ["a1", "b1", "b2"]).await;
            (opened, path, cast)
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn a_group_send_writes_one_row() {
            // Goal: nothing is written per recipient: a text to a group of
            // 50 members (with 51 devices) adds exactly one `messages` row
            // and changes nothing else anywhere but the conversation's
            // last_seq.
            // Method: compare every row of every table before and after
            // the send, through a separate read-only connection.
            let (opened, path) = open_at();
            let store = &*opened.store;
            let (creator, creator_device) = account_with_device(store, "member0", "d0").await;
            new_device(store, creator, "d0-second").await;
            let mut others = Vec::new();
            for i in 1..50 {
                others.push(
                    account_with_device(store, &format!("member{i}"), &format!("d{i}"))
                        .await
                        .0,
                );
            }
            let group = store
                .create_group(NewGroup {
                    members_max: 64,
                    ..new_group(creator, creator_device, "crowd", &others, NOW)
                })
                .await
                .expect("create the group")
                .conversation;
            let db = inspect(&path);
            let before = everything(&db);

            let sent = send(store, group, creator, creator_device, "hello").await;
            assert_eq!(sent.seq, 2);
            assert_eq!(
                sent.recipients.len(),
                50,
                "49 members and the creator's other device"
            );
            let mut after = everything(&db);

            assert_eq!(
                after.keys().collect::<Vec<_>>(),
                before.keys().collect::<Vec<_>>(),
                "tables appeared or went"
            );
            let added: Vec<&Vec<String>> = after["messages"]
                .iter()
                .filter(|row| !before["messages"].contains(row))
                .collect();
            assert_eq!(added.len(), 1, "new messages rows: {added:?}");
            assert_eq!(after["messages"].len(), before["messages"].len() + 1);
            // The conversation row: only last_seq moved, from 1 to 2.
            let conversations = after.get_mut("conversations").expect("conversations");
            for row in conversations.iter_mut() {
                for value in row.iter_mut() {
                    if value == "last_seq=Integer(2)" {
                        *value = "last_seq=Integer(1)".to_owned();
                    }
                }
            }
            assert_eq!(
                after["conversations"], before["conversations"],
                "conversations"
            );
            for (table, rows) in &before {
                if table != "messages" && table != "conversations" {
                    assert_eq!(&after[table], rows, "table {table} changed on a send");
                }
            }
            opened.store.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn ack_purge_empties_the_body_and_keeps_the_row() {
            // Goal: with purge_delivered_bodies the body of a `messages`
            // row becomes NULL with the ack after which every member
            // device has it, not before, and the row stays (its dedup key
            // with it); without the flag the body stays; acks write the
            // device's `positions` row and the member's delivered cursor.
            // Method: M1 and M2 from a1 to b1 and b2; ack device by device
            // and read the rows through a separate read-only connection.
            let (opened, path, Cast(alice, bob, conv, [a1, b1, b2])) = open_with_cast().await;
            let store = &*opened.store;
            let m1 = send(store, conv, alice, a1, "m1").await;
            let m2 = send(store, conv, alice, a1, "m2").await;
            let (m1_id, m2_id) = (m1.message_id.as_str(), m2.message_id.as_str());
            let db = inspect(&path);
            assert_eq!(message_row(&db, m1_id), Some(true));

            ack(store, b1, bob, vec![(conv, 1)], true).await;
            assert_eq!(
                message_row(&db, m1_id),
                Some(true),
                "purged while b2 still waited for it"
            );
            assert_eq!(positions_of(&db, b1), vec![(conv.0, 1)]);
            assert_eq!(delivered_cursor(&db, conv, bob), (1, ACK_NOW));
            ack(store, b2, bob, vec![(conv, 1)], true).await;
            assert_eq!(
                message_row(&db, m1_id),
                Some(false),
                "the body outlived the last ack, or the row went with it"
            );

            for device in [b1, b2] {
                ack(store, device, bob, vec![(conv, 2)], false).await;
            }
            assert_eq!(message_row(&db, m2_id), Some(true));
            assert_eq!((rows(&db, "messages"), purged_rows(&db)), (2, 1));
            assert_eq!(positions_of(&db, b2), vec![(conv.0, 2)]);
            assert_eq!(delivered_cursor(&db, conv, bob), (2, ACK_NOW));
            assert_eq!(delivered_cursor(&db, conv, alice), (0, 0));
            assert_eq!(positions_of(&db, a1), vec![], "a1 never acked");
            opened.store.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn sweep_and_revoke_delete_rows() {
            // Goal: the counts sweep reports are the rows actually changed
            // (bodies set NULL, rows deleted), and revoke deletes the
            // device's `positions` rows.
            // Method: m1 at NOW and m2 at NOW + 20; b1 and b2 ack; sweep
            // bodies, then rows; revoke b2; count rows each time.
            let (opened, path, Cast(alice, bob, conv, [a1, b1, b2])) = open_with_cast().await;
            let store = &*opened.store;
            send_at(store, conv, alice, a1, "m1", NOW).await;
            send_at(store, conv, alice, a1, "m2", NOW + 20).await;
            ack(store, b1, bob, vec![(conv, 1)], false).await;
            ack(store, b2, bob, vec![(conv, 2)], false).await;
            let db = inspect(&path);
            assert_eq!((rows(&db, "messages"), purged_rows(&db)), (2, 0));
            assert_eq!(rows(&db, "positions"), 2);

            let outcome = sweep(store, NOW + 30, NOW + 10, NOW + 10, LONG_AGO, 100).await;
            assert_eq!(outcome, swept(1, 0));
            assert_eq!((rows(&db, "messages"), purged_rows(&db)), (2, 1));
            let outcome = sweep(store, NOW + 30, LONG_AGO, LONG_AGO, NOW + 10, 100).await;
            assert_eq!(outcome, swept(0, 1));
            assert_eq!((rows(&db, "messages"), purged_rows(&db)), (1, 0));

            assert!(
                store
                    .revoke_device(bob, b2)
                    .await
                    .expect("revoke")
                    .is_some()
            );
            assert_eq!(rows(&db, "devices"), 2);
            assert_eq!(positions_of(&db, b2), vec![]);
            assert_eq!(positions_of(&db, b1), vec![(conv.0, 1)]);
            opened.store.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn departures_and_new_devices_write_their_rows() {
            // Goal: a removal writes a `departures` row (joined_seq, the
            // removal's seq and time), an add deletes it, and the sweep
            // deletes it once its TTL passed; a device created later gets a
            // `positions` row at each of its account's conversations' last
            // seq.
            // Method: the group cast alice (a1), bob (b1), carol (c1);
            // alice removes carol, adds her back, removes her again; sweeps;
            // then a second device of bob's.
            let (opened, path) = open_at();
            let store = &*opened.store;
            let GroupCast([alice, bob, carol, _], group, [a1, _b1, _c1]) =
                group_cast(store, ["a1", "b1", "c1"]).await;
            let db = inspect(&path);
            let remove =
                |now_ms| change(store, alice, a1, group, GroupChange::Remove(carol), now_ms);
            remove(NOW + 2).await.expect("remove carol");
            assert_eq!(departures(&db), vec![(group.0, carol.0, 0, 2, NOW + 2)]);
            change(
                store,
                alice,
                a1,
                group,
                GroupChange::Add(vec![carol]),
                NOW + 3,
            )
            .await
            .expect("add carol");
            assert_eq!(departures(&db), vec![]);
            remove(NOW + 4).await.expect("remove carol again");
            assert_eq!(departures(&db), vec![(group.0, carol.0, 2, 4, NOW + 4)]);
            sweep(store, NOW + 10, LONG_AGO, NOW + 4, LONG_AGO, 100).await;
            assert_eq!(departures(&db).len(), 1, "swept within its TTL");
            sweep(store, NOW + 10, LONG_AGO, NOW + 5, LONG_AGO, 100).await;
            assert_eq!(departures(&db), vec![]);

            let ab = direct(store, alice, bob, NOW).await;
            send(store, ab, alice, a1, "m1").await;
            let b2 = new_device(store, bob, "b2").await;
            assert_eq!(positions_of(&db, b2), sorted(vec![(group.0, 4), (ab.0, 1)]));
            opened.store.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn reopen_keeps_everything() {
            // Goal: what was acknowledged before shutdown survives a reopen
            // of the same file: accounts, tokens, positions, cursors, seqs,
            // dedup.
            // Method: write and ack, shut down, open the same path again,
            // read back and continue the conversation.
            let (opened, path, Cast(alice, bob, conv, [a1, b1, _b2])) = open_with_cast().await;
            let store = &*opened.store;
            let m1 = send(store, conv, alice, a1, "m1").await;
            let m2 = send(store, conv, alice, a1, "m2").await;
            ack(store, b1, bob, vec![(conv, 1)], false).await;
            read_up_to(store, bob, conv, 1, NOW + 1).await;
            let before = pending_all(store, b1).await;
            assert_eq!(event_ids(&before), vec![m2.message_id.clone()]);
            opened.store.shutdown().await;

            let reopened: Arc<dyn Store> =
                Arc::new(SqliteStore::open(&SqliteConfig::new(&path)).expect("reopen"));
            let store = &*reopened;
            assert_eq!(auth(store, "b1").await.map(|a| a.device), Some(b1));
            assert_eq!(pending_all(store, b1).await, before);
            assert_eq!(cursors(store, alice, conv).await, vec![cursor("bob", 1, 1)]);
            let retry = send(store, conv, alice, a1, "m1").await;
            assert!(retry.duplicate);
            assert_eq!(retry.message_id, m1.message_id);
            assert_eq!(send(store, conv, alice, a1, "m3").await.seq, 3);
            assert_eq!(direct(store, bob, alice, NOW).await, conv);
            reopened.shutdown().await;
            drop(opened);
        }
    }
}

// ─────────────────────────── PostgreSQL backend ───────────────────────────

/// The same scenarios against PostgreSQL, each in a schema of its own on the
/// server at `MISSIVE_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`). When that server cannot
/// be reached the tests pass without running and say so on stderr, except
/// in CI (`CI` set), where they fail: a CI run must not go green by skipping.
mod postgres {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use missive_store::{PostgresConfig, PostgresStore, Store};
    use tokio_postgres::NoTls;

    use crate::Opened;

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

    fn base_url() -> String {
        std::env::var("MISSIVE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
    }

    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false" && ci != "0")
    }

    /// A schema of its own on the test server, dropped with this value, so
    /// every test starts from an empty database and leaves nothing behind.
    pub struct FreshSchema {
        pub name: String,
        pub base_url: String,
    }

    impl FreshSchema {
        /// `None` (after saying why on stderr) when the server cannot be
        /// reached outside CI; a panic in CI.
        pub async fn create() -> Option<Self> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let base_url = base_url();
            let name = format!(
                "missive_test_{}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            );
            let created = async {
                let client = connect(&base_url).await?;
                client
                    .batch_execute(&format!("CREATE SCHEMA {name}"))
                    .await
                    .map_err(|err| err.to_string())
            };
            match created.await {
                Ok(()) => Some(Self { name, base_url }),
                Err(err) if in_ci() => {
                    panic!("PostgreSQL at {base_url} is needed in CI and cannot be used: {err}")
                }
                Err(err) => {
                    eprintln!("skipping: PostgreSQL at {base_url} cannot be used: {err}");
                    None
                }
            }
        }

        /// A node's configuration: this schema first on its search path.
        pub fn config(&self) -> PostgresConfig {
            let separator = if self.base_url.contains('?') {
                '&'
            } else {
                '?'
            };
            PostgresConfig {
                pool_size: 4,
                wait_timeout: Duration::from_secs(10),
                ..PostgresConfig::new(format!(
                    "{}{separator}options=-csearch_path%3D{}",
                    self.base_url, self.name
                ))
            }
        }

        /// A node on this schema.
        pub async fn node(&self) -> PostgresStore {
            PostgresStore::connect(&self.config())
                .await
                .expect("connect to PostgreSQL")
        }
    }

    /// A plain client for administration, with a bounded connect.
    async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|err| format!("{err}"))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) = config.connect(NoTls).await.map_err(|err| {
            // The cause (refused, timed out) is in the source, not the text.
            match std::error::Error::source(&err) {
                Some(cause) => format!("{err}: {cause}"),
                None => err.to_string(),
            }
        })?;
        tokio::spawn(connection);
        Ok(client)
    }

    impl Drop for FreshSchema {
        fn drop(&mut self) {
            // Drop runs inside the test's runtime, which cannot be blocked
            // on: drop the schema from a thread with a runtime of its own.
            let (name, url) = (self.name.clone(), self.base_url.clone());
            let dropper = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(client) = connect(&url).await {
                        // A store left running by a failed test may hold
                        // locks: give up rather than hang; the name is unique.
                        let _ = client
                            .batch_execute(&format!(
                                "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                            ))
                            .await;
                    }
                });
            });
            let _ = dropper.join();
        }
    }

    async fn open() -> Option<Opened> {
        let schema = FreshSchema::create().await?;
        let store: Arc<dyn Store> = Arc::new(schema.node().await);
        Some(Opened {
            store,
            _guard: Box::new(schema),
        })
    }

    conformance_tests!(
        open;
        accounts,
        devices,
        devices_are_replaced_and_expire_least_recent_first,
        accounts_listed_passwords_reset_and_revocations_numbered,
        suspensions_revoke_devices_and_invites_are_single_use,
        deleted_accounts_free_their_name_and_keep_their_messages,
        devices_are_renamed_by_their_account_only,
        revoked_device_identity_is_not_reused,
        seq_and_dedup,
        fan_out,
        pending_and_ack,
        ack_is_cumulative,
        behind_names_devices_with_something_from_others,
        refused_acks_change_nothing,
        delivered_cursor_moves_on_first_ack,
        mark_read,
        store_and_forward,
        purge_waits_for_every_member_device,
        expiry_and_sweep,
        expired_events_come_as_one_range,
        own_events_are_skipped_but_scanned,
        pages_continue_where_scanned_ends,
        new_devices_and_members_start_now,
        swept_departures_end_delivery,
        dedup_survives_purged_body,
        concurrent_appends,
        cancelled_reads_leave_the_store_usable,
        shutdown_refuses_further_calls,
        group_create,
        group_add_and_remove,
        group_leave_and_roles,
        event_times_never_go_backwards,
        replies,
        reactions,
        edits,
        deletes,
        receipts,
        history_paging,
        history_after_shows_events_about_earlier_messages,
        conversation_list_order,
        contacts_and_blocks,
        device_keys_are_claimed_once_and_go_with_their_device,
        online_devices_sharing_a_conversation,
        to_device_messages_wait_for_their_device_until_acked,
        encrypted_conversations_take_only_ciphertext,
        disappearing_messages_go_at_their_expiry,
        blocks_refuse_direct_sends,
        sends_are_judged_on_the_conversation_as_it_is_now,
        relay_targets,
        presence_profile,
        session_directory,
        find_direct,
        removed_member_gets_no_receipts,
        read_receipts_name_recipients_only,
        receipt_moves_tell_the_authors_of_texts_in_the_range,
    );

    // ── PostgreSQL-only checks: several nodes on one database, outages. ──

    #[tokio::test(flavor = "multi_thread")]
    async fn reports_the_servers_clock() {
        // Goal: PostgreSQL reports its own clock (the time base of leases),
        // which on this machine is within a minute of ours.
        let Some(opened) = open().await else {
            return;
        };
        let local = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        let store_now = opened
            .store
            .clock_ms()
            .await
            .expect("clock_ms")
            .expect("PostgreSQL has a clock of its own");
        assert!(
            (store_now - local).abs() < 60_000,
            "store clock {store_now} vs local {local}"
        );
    }

    mod cluster {
        use std::collections::HashMap;
        use std::net::SocketAddr;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};

        use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq};
        use missive_store::{
            Appended, NewAccount, PendingItem, PendingRequest, PostgresConfig, PostgresStore,
            Store, StoreError,
        };
        use tokio::net::{TcpListener, TcpStream};
        use tokio::sync::Barrier;
        use tokio::task::JoinHandle;

        use super::FreshSchema;
        use crate::support::*;

        /// Messages each sending device sends.
        const PER_DEVICE: usize = 120;

        /// Follows what waits for `device` on `follow` like a live session:
        /// read a page above `after`, move `after` to the page's `scanned`,
        /// repeat; acking up to `after` on `acker` when given; until a page
        /// read after `done` was set is empty. Checks that every item lies
        /// above `after` and that nothing expires. Returns the seqs seen per
        /// conversation, in arrival order.
        async fn follow(
            follow: Arc<dyn Store>,
            acker: Option<Arc<dyn Store>>,
            account: AccountId,
            device: DeviceId,
            done: Arc<AtomicBool>,
        ) -> HashMap<ConversationId, Vec<Seq>> {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut after: HashMap<ConversationId, Seq> = HashMap::new();
            let mut seen: HashMap<ConversationId, Vec<Seq>> = HashMap::new();
            loop {
                assert!(
                    Instant::now() < deadline,
                    "device {device} is still reading"
                );
                let finished = done.load(Ordering::Acquire);
                let page = follow
                    .pending(PendingRequest {
                        device,
                        account,
                        after: after.iter().map(|(c, s)| (*c, *s)).collect(),
                        limit: 64,
                        expired_before_ms: NO_EXPIRY,
                    })
                    .await
                    .expect("pending");
                for item in &page.items {
                    let PendingItem::Event(event) = item else {
                        panic!("device {device}: nothing expires here: {item:?}");
                    };
                    let above = after.get(&event.conversation).copied().unwrap_or(0);
                    assert!(
                        event.seq > above,
                        "device {device}: seq {} in {} came again (after {above})",
                        event.seq,
                        event.conversation
                    );
                    seen.entry(event.conversation).or_default().push(event.seq);
                }
                for (conversation, seq) in &page.scanned {
                    let before = after.insert(*conversation, *seq).unwrap_or(0);
                    assert!(before <= *seq, "scanned moved back in {conversation}");
                }
                if page.items.is_empty() {
                    if finished {
                        return seen;
                    }
                    // Polling, as a live session waits for a wake-up.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if let Some(acker) = &acker {
                    let points = after.iter().map(|(c, s)| (*c, *s)).collect();
                    ack(&**acker, device, account, points, false).await;
                }
            }
        }

        /// What is wrong with `seqs` as the sequence 1..=n: the seqs
        /// missing, and the positions where one is not its predecessor + 1.
        fn flaws(seqs: &[Seq], n: Seq) -> (Vec<Seq>, Vec<usize>) {
            let missing = (1..=n).filter(|seq| !seqs.contains(seq)).collect();
            let misplaced = seqs
                .iter()
                .enumerate()
                .filter(|(idx, seq)| **seq != *idx as Seq + 1)
                .map(|(idx, _)| idx)
                .take(10)
                .collect();
            (missing, misplaced)
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn live_readers_never_skip_across_three_nodes() {
            // Goal: with three nodes (three pools on one database) sending at
            // once into three 1:1 conversations and one group, a device that
            // follows live by position (each page read above the `scanned`
            // of the last) sees every conversation's seqs exactly 1..=N in
            // order: no seq ever becomes visible after a higher one was read,
            // nothing twice.
            // Method: alice, bob and dave each send from two devices, each
            // device a task on "their" node alternating between their 1:1
            // with carol and the group; carol's two devices follow on two
            // nodes, one acking (which moves carol's delivered cursors: more
            // concurrent writes) through the third.
            let Some(schema) = FreshSchema::create().await else {
                return;
            };
            let (n0, n1, n2) = tokio::join!(schema.node(), schema.node(), schema.node());
            let nodes: [Arc<dyn Store>; 3] = [Arc::new(n0), Arc::new(n1), Arc::new(n2)];
            let setup = &*nodes[0];
            let carol = new_account(setup, "carol").await;
            let c1 = new_device(setup, carol, "c1").await;
            let c2 = new_device(setup, carol, "c2").await;
            let mut senders = Vec::new();
            for name in ["alice", "bob", "dave"] {
                let account = new_account(setup, name).await;
                let devices = [
                    new_device(setup, account, &format!("{name}-1")).await,
                    new_device(setup, account, &format!("{name}-2")).await,
                ];
                let conv = direct(setup, account, carol, NOW).await;
                senders.push((account, devices, conv));
            }
            let accounts: Vec<AccountId> = senders.iter().map(|s| s.0).collect();
            let group = create_group(
                setup,
                new_group(
                    accounts[0],
                    senders[0].1[0],
                    "team",
                    &[accounts[1], carol, accounts[2]],
                    NOW,
                ),
            )
            .await
            .conversation;

            let mut expected: HashMap<ConversationId, usize> = HashMap::new();
            expected.insert(group, 1);
            for (_, _, conv) in &senders {
                expected.insert(*conv, 0);
            }
            let mut sends: Vec<JoinHandle<Vec<(ConversationId, Seq)>>> = Vec::new();
            for (i, (account, devices, conv)) in senders.iter().enumerate() {
                for (j, device) in devices.iter().enumerate() {
                    let node = Arc::clone(&nodes[i]);
                    let (account, device, conv) = (*account, *device, *conv);
                    let plan: Vec<ConversationId> = (0..PER_DEVICE)
                        .map(|k| if (k + j) % 2 == 0 { conv } else { group })
                        .collect();
                    for target in &plan {
                        *expected.entry(*target).or_default() += 1;
                    }
                    sends.push(tokio::spawn(async move {
                        let mut got = Vec::new();
                        for (k, target) in plan.into_iter().enumerate() {
                            let cmid = format!("d{device}-{k}");
                            let appended = send(&*node, target, account, device, &cmid).await;
                            assert!(!appended.duplicate);
                            got.push((target, appended.seq));
                        }
                        got
                    }));
                }
            }
            let done = Arc::new(AtomicBool::new(false));
            let readers = [
                tokio::spawn(follow(
                    Arc::clone(&nodes[0]),
                    Some(Arc::clone(&nodes[2])),
                    carol,
                    c1,
                    Arc::clone(&done),
                )),
                tokio::spawn(follow(
                    Arc::clone(&nodes[1]),
                    None,
                    carol,
                    c2,
                    Arc::clone(&done),
                )),
            ];

            // What the senders were told: every seq once, no gaps.
            let mut told: HashMap<ConversationId, Vec<Seq>> = HashMap::new();
            told.entry(group).or_default().push(1);
            for task in sends {
                for (conv, seq) in task.await.expect("sender panicked") {
                    told.entry(conv).or_default().push(seq);
                }
            }
            done.store(true, Ordering::Release);
            for (conv, seqs) in &mut told {
                seqs.sort_unstable();
                let n = expected[conv] as Seq;
                assert_eq!(
                    *seqs,
                    (1..=n).collect::<Vec<_>>(),
                    "seqs told to senders in {conv}"
                );
            }
            // What each live reader saw: exactly 1..=N per conversation, in order.
            for (reader, device) in readers.into_iter().zip([c1, c2]) {
                let seen = reader.await.expect("reader panicked");
                assert_eq!(seen.len(), expected.len(), "device {device}: conversations");
                for (conv, seqs) in seen {
                    let n = expected[&conv] as Seq;
                    let (missing, misplaced) = flaws(&seqs, n);
                    assert!(
                        missing.is_empty() && misplaced.is_empty() && seqs.len() == n as usize,
                        "device {device} in {conv}: {} of {n} seen; skipped for good: {missing:?}; \
                         out of order or repeated at indices {misplaced:?}",
                        seqs.len()
                    );
                }
            }
            for node in &nodes {
                node.shutdown().await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn one_retry_on_two_nodes_at_once_is_stored_once() {
            // Goal: the same (device, client_msg_id) appended on two nodes at
            // the same moment stores one message; both calls answer with its
            // id, seq and time, exactly one with `duplicate`.
            // Method: 30 rounds of two tasks released together by a barrier,
            // each appending through its own node with its own message id.
            let Some(schema) = FreshSchema::create().await else {
                return;
            };
            let (n0, n1) = tokio::join!(schema.node(), schema.node());
            let nodes: [Arc<dyn Store>; 2] = [Arc::new(n0), Arc::new(n1)];
            let Cast(alice, _bob, conv, [a1, b1]) = cast(&*nodes[0], ["a1", "b1"]).await;
            const ROUNDS: Seq = 30;
            for round in 1..=ROUNDS {
                let barrier = Arc::new(Barrier::new(2));
                let attempts: Vec<_> = nodes
                    .iter()
                    .map(|node| {
                        let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
                        tokio::spawn(async move {
                            let message =
                                new_message(conv, alice, a1, &format!("race-{round}"), NOW);
                            barrier.wait().await;
                            node.append_message(message).await.expect("append")
                        })
                    })
                    .collect();
                let mut answers = Vec::new();
                for attempt in attempts {
                    answers.push(attempt.await.expect("append task"));
                }
                answers.sort_by_key(|answer| answer.duplicate);
                let [original, retry] = &answers[..] else {
                    unreachable!("two attempts")
                };
                assert!(
                    !original.duplicate && retry.duplicate,
                    "round {round}: exactly one call must be the original: {answers:?}"
                );
                assert_eq!(
                    (&retry.message_id, retry.seq, retry.ts_ms),
                    (&original.message_id, original.seq, original.ts_ms),
                    "round {round}"
                );
                assert_eq!(
                    original.seq, round,
                    "round {round}: a seq was lost or taken twice"
                );
                assert!(retry.recipients.is_empty());
            }
            assert_eq!(pending_ids(&*nodes[1], b1).await.len(), ROUNDS as usize);
            assert_eq!(
                seqs(&history_all(&*nodes[1], alice, conv).await),
                (1..=ROUNDS).collect::<Vec<_>>()
            );
            for node in &nodes {
                node.shutdown().await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn refused_sends_in_a_crowd_take_no_seq() {
            // Goal: sends that arrive together share transactions, yet each
            // is judged alone: refused ones take no seq and keep nothing
            // (their client_msg_id is free again), the accepted ones get
            // 1..=n with no gap, a retry racing its original is stored once.
            // Method: 240 appends released at once by a barrier on one node
            // (so the batch writers take many per transaction): texts,
            // texts from a non-member, reactions to an unknown message, and
            // pairs of identical retries; then every answer, the history
            // and what waits for the recipient are checked.
            let Some(schema) = FreshSchema::create().await else {
                return;
            };
            let node: Arc<dyn Store> = Arc::new(schema.node().await);
            let Cast(alice, bob, conv, [a1, b1]) = cast(&*node, ["a1", "b1"]).await;
            let (carol, c1) = account_with_device(&*node, "carol", "c1").await;
            const SENDS: usize = 240;
            const RETRIES: usize = SENDS / 6;
            let barrier = Arc::new(Barrier::new(SENDS + RETRIES));
            let tasks: Vec<_> = (0..SENDS)
                .map(|i| {
                    let (node, barrier) = (Arc::clone(&node), Arc::clone(&barrier));
                    let message = match i % 6 {
                        0..=2 => new_message(conv, alice, a1, &format!("ok-{i}"), NOW),
                        3 => new_message(conv, carol, c1, &format!("outsider-{i}"), NOW),
                        4 => message_with(
                            conv,
                            alice,
                            a1,
                            &format!("bad-{i}"),
                            react(&MessageId::generate(), Some("👍")),
                            NOW,
                        ),
                        // An original; its retry is task SENDS + i / 6.
                        _ => new_message(conv, bob, b1, &format!("dup-{}", i / 6), NOW),
                    };
                    tokio::spawn(async move {
                        barrier.wait().await;
                        (i, node.append_message(message).await)
                    })
                })
                .chain((0..RETRIES).map(|round| {
                    let (node, barrier) = (Arc::clone(&node), Arc::clone(&barrier));
                    let message = new_message(conv, bob, b1, &format!("dup-{round}"), NOW);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        (SENDS + round, node.append_message(message).await)
                    })
                }))
                .collect();
            let mut stored: Vec<Seq> = Vec::new();
            let mut retries: HashMap<String, Vec<Appended>> = HashMap::new();
            for task in tasks {
                let (i, answer) = task.await.expect("append task");
                match (i % 6, i < SENDS) {
                    (0..=2, true) => stored.push(answer.expect("a member's text").seq),
                    (3, true) => {
                        assert_eq!(answer, Err(StoreError::UnknownConversation), "send {i}")
                    }
                    (4, true) => assert_eq!(answer, Err(StoreError::UnknownMessage), "send {i}"),
                    _ => {
                        let round = if i < SENDS { i / 6 } else { i - SENDS };
                        retries
                            .entry(format!("dup-{round}"))
                            .or_default()
                            .push(answer.expect("a retried text"));
                    }
                }
            }
            for (cmid, answers) in &retries {
                let [first, second] = &answers[..] else {
                    panic!("{cmid}: two answers expected, got {answers:?}")
                };
                assert!(
                    first.duplicate != second.duplicate,
                    "{cmid}: exactly one original: {answers:?}"
                );
                assert_eq!(
                    (&first.message_id, first.seq),
                    (&second.message_id, second.seq)
                );
                stored.push(first.seq);
            }
            stored.sort_unstable();
            let n = stored.len() as Seq;
            assert_eq!(stored, (1..=n).collect::<Vec<_>>(), "seqs must be gap-free");
            assert_eq!(seqs(&history_all(&*node, alice, conv).await), stored);
            assert_eq!(
                pending_ids(&*node, a1).await.len(),
                retries.len(),
                "alice's device gets bob's texts only"
            );

            // A refused send's client_msg_id was released with it.
            let again = send(&*node, conv, alice, a1, "bad-4").await;
            assert_new(&again, n + 1);
            node.shutdown().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn nodes_reaping_at_once_report_each_account_once() {
            // Goal: when every node reaps the same lapsed nodes at the same
            // moment, each newly offline account is reported by exactly one
            // of them (so it is announced once).
            // Method: 20 rounds; in each, a node "dead-r" holds sessions of
            // five accounts and lapses, then three stores reap together,
            // released by a barrier.
            let Some(schema) = FreshSchema::create().await else {
                return;
            };
            let (n0, n1, n2) = tokio::join!(schema.node(), schema.node(), schema.node());
            let nodes: [Arc<dyn Store>; 3] = [Arc::new(n0), Arc::new(n1), Arc::new(n2)];
            for round in 0..20i64 {
                let dead = format!("dead-{round}");
                let lapse = NOW + 1000 * round;
                nodes[0]
                    .renew_node(&dead, lapse + 100)
                    .await
                    .expect("renew");
                let mut accounts = Vec::new();
                for i in 0..5 {
                    let (account, device) = account_with_device(
                        &*nodes[0],
                        &format!("r{round}u{i}"),
                        &format!("r{round}d{i}"),
                    )
                    .await;
                    nodes[0]
                        .claim_session(device, account, &dead, lapse)
                        .await
                        .expect("claim");
                    accounts.push(account);
                }
                let barrier = Arc::new(Barrier::new(nodes.len()));
                let reapers: Vec<_> = nodes
                    .iter()
                    .map(|node| {
                        let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
                        tokio::spawn(async move {
                            barrier.wait().await;
                            node.reap_nodes(lapse + 200).await.expect("reap")
                        })
                    })
                    .collect();
                let mut reported = Vec::new();
                for reaper in reapers {
                    reported.extend(reaper.await.expect("reaper task"));
                }
                reported.sort();
                accounts.sort();
                assert_eq!(reported, accounts, "round {round}: each account once");
            }
            for node in &nodes {
                node.shutdown().await;
            }
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn an_unreachable_or_silent_server_fails_fast() {
            // Goal: connecting to a server that is not there, or that
            // accepts and never answers, is `Unavailable` within the
            // connect timeout, not a hang.
            if FreshSchema::create().await.is_none() {
                return;
            }
            let started = Instant::now();
            let refused = PostgresStore::connect(&PostgresConfig {
                connect_timeout: Duration::from_secs(1),
                ..PostgresConfig::new("postgres://postgres@127.0.0.1:1/postgres")
            })
            .await;
            assert!(
                matches!(refused, Err(StoreError::Unavailable)),
                "{:?}",
                refused.err()
            );
            assert!(started.elapsed() < Duration::from_secs(5));

            // A server that accepts and then says nothing: only the connect
            // timeout ends the wait, neither much sooner nor much later.
            let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let silent_addr = silent.local_addr().expect("address");
            let holder = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = silent.accept().await {
                    held.push(socket);
                }
            });
            let started = Instant::now();
            let refused = PostgresStore::connect(&PostgresConfig {
                connect_timeout: Duration::from_secs(1),
                ..PostgresConfig::new(format!("postgres://postgres@{silent_addr}/postgres"))
            })
            .await;
            let waited = started.elapsed();
            assert!(
                matches!(refused, Err(StoreError::Unavailable)),
                "{:?}",
                refused.err()
            );
            assert!(
                waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
                "waited {waited:?} for a silent server with a 1 s timeout"
            );
            holder.abort();
        }

        /// A TCP relay to the test server that a test can cut and restore:
        /// an outage without stopping the shared server.
        struct Relay {
            addr: SocketAddr,
            upstream: SocketAddr,
            task: Option<JoinHandle<()>>,
        }

        impl Relay {
            async fn start(upstream: SocketAddr) -> Self {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
                let addr = listener.local_addr().expect("relay address");
                Self {
                    addr,
                    upstream,
                    task: Some(tokio::spawn(Self::serve(listener, upstream))),
                }
            }

            async fn serve(listener: TcpListener, upstream: SocketAddr) {
                // The set owns every relayed connection: dropping it (when
                // this task is aborted) cuts them all.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((mut inbound, _)) = listener.accept().await {
                    connections.spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }

            /// Closes the port and every connection through it.
            async fn cut(&mut self) {
                if let Some(task) = self.task.take() {
                    task.abort();
                    let _ = task.await;
                }
            }

            /// Listens on the same port again.
            async fn restore(&mut self) {
                let listener = TcpListener::bind(self.addr).await.expect("rebind relay");
                self.task = Some(tokio::spawn(Self::serve(listener, self.upstream)));
            }
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn an_outage_is_unavailable_then_heals() {
            // Goal: when the database goes away under a running store, calls
            // fail fast with `Unavailable` (the client may retry) and
            // `is_ready` is false; when it is back, the same store works
            // again without a restart.
            // Method: the store reaches the server through a relay; cut it,
            // call, restore it, call.
            let Some(schema) = FreshSchema::create().await else {
                return;
            };
            let base: tokio_postgres::Config = schema.base_url.parse().expect("test URL");
            let (Some(tokio_postgres::config::Host::Tcp(host)), Some(port), Some(user)) = (
                base.get_hosts().first(),
                base.get_ports().first(),
                base.get_user(),
            ) else {
                eprintln!("skipping: the test URL names no TCP host, port and user");
                return;
            };
            let upstream: SocketAddr = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .expect("resolve the test server")
                .next()
                .expect("an address");
            let mut relay = Relay::start(upstream).await;
            let password = base
                .get_password()
                .map(|p| format!(":{}", String::from_utf8_lossy(p)))
                .unwrap_or_default();
            let config = PostgresConfig {
                connect_timeout: Duration::from_secs(1),
                wait_timeout: Duration::from_secs(1),
                ..PostgresConfig::new(format!(
                    "postgres://{user}{password}@{}/{}?options=-csearch_path%3D{}",
                    relay.addr,
                    base.get_dbname().unwrap_or("postgres"),
                    schema.name
                ))
            };
            let store = PostgresStore::connect(&config)
                .await
                .expect("connect via relay");
            let alice = new_account(&store, "alice").await;
            assert!(store.is_ready().await);

            relay.cut().await;
            let started = Instant::now();
            let refused = store
                .create_account(NewAccount {
                    username: username("bob"),
                    password_hash: "h".into(),
                    phone: None,
                    now_ms: NOW,
                    invite: None,
                })
                .await;
            assert_eq!(refused, Err(StoreError::Unavailable));
            assert_eq!(
                store.list_devices(alice).await,
                Err(StoreError::Unavailable)
            );
            assert!(!store.is_ready().await);
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "the outage took {:?} to report",
                started.elapsed()
            );

            relay.restore().await;
            let healed = Instant::now() + Duration::from_secs(10);
            while !store.is_ready().await {
                assert!(Instant::now() < healed, "the store did not recover");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let bob = new_account(&store, "bob").await;
            assert_ne!(bob, alice);
            store.shutdown().await;
            relay.cut().await;
        }
    }
}
