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
//! Checks that need to look inside the engine (row counts in SQLite tables,
//! reopening the file, several PostgreSQL nodes on one database) live in
//! the backend's module, clearly separated from the shared scenarios.
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
        AccountRecord, AckOutcome, AckRequest, Appended, Body, ConversationRecord, DeviceAuth,
        DeviceRecord, EventKind, GroupChange, GroupChangeRequest, GroupChanged, GroupName,
        GroupRecord, HistoryRequest, NewAccount, NewDevice, NewGroup, NewMessage, QueueItem,
        ReadOutcome, ReadRequest, Role, Store, StoreError, StoredEvent,
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
            body: plain(&text_of(cmid)),
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
            .append_message(new_message(
                conversation,
                account,
                device,
                cmid,
                now_ms,
                NOW + DAY_MS,
            ))
            .await
            .expect("append_message")
    }

    /// A request to append `body` at `now_ms` (queue expiry a day after `NOW`).
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
            ..new_message(conversation, account, device, cmid, now_ms, NOW + DAY_MS)
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

    /// Asserts that `message` is refused with `expected` and changed nothing:
    /// not the conversation's last seq as its sender sees it, not the queues
    /// of `watched`.
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
        let mut queues_before = Vec::new();
        for device in watched {
            queues_before.push(pending_all(store, *device).await);
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
        for (device, before) in watched.iter().zip(queues_before) {
            assert_eq!(
                pending_all(store, *device).await,
                before,
                "a refused append ({expected:?}) changed device {device}'s queue"
            );
        }
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

    /// Acks `positions` of the device's queue at `now_ms` (no purge).
    pub async fn ack_at(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        positions: Vec<QueuePos>,
        now_ms: UnixMillis,
    ) -> AckOutcome {
        let request = AckRequest {
            now_ms,
            ..ack_request(device, account, None, positions, false)
        };
        store.ack(request).await.expect("ack")
    }

    /// Acks the device's whole live queue at `now_ms`.
    pub async fn ack_all_at(
        store: &dyn Store,
        device: DeviceId,
        account: AccountId,
        now_ms: UnixMillis,
    ) -> AckOutcome {
        let all = positions(&pending_all(store, device).await);
        ack_at(store, device, account, all, now_ms).await
    }

    /// Moves `account`'s read pointer in `conversation` at `now_ms`.
    pub async fn read_up_to(
        store: &dyn Store,
        account: AccountId,
        conversation: ConversationId,
        seq: Seq,
        now_ms: UnixMillis,
    ) -> ReadOutcome {
        store
            .mark_read(ReadRequest {
                account,
                conversation,
                seq,
                now_ms,
                queue_expires_ms: NOW + DAY_MS,
            })
            .await
            .expect("mark_read")
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
            name: group_name(name),
            members: members.to_vec(),
            members_max: GROUP_MAX,
            now_ms,
            queue_expires_ms: NOW + DAY_MS,
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
            queue_expires_ms: NOW + DAY_MS,
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

    // ── Stored events, in queues and in history ──

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

    /// Summaries of the `Message` items, in page order.
    pub fn queue_summaries(items: &[QueueItem]) -> Vec<Summary> {
        items
            .iter()
            .filter_map(|item| match item {
                QueueItem::Message {
                    seq, kind, text, ..
                } => Some(summary(*seq, *kind, text)),
                _ => None,
            })
            .collect()
    }

    /// Summaries of the `Message` items of the device's whole live queue.
    pub async fn pending_summaries(store: &dyn Store, device: DeviceId) -> Vec<Summary> {
        queue_summaries(&pending_all(store, device).await)
    }

    /// The device's queued `Message` item of `message_id`.
    pub async fn queued(store: &dyn Store, device: DeviceId, message_id: &MessageId) -> QueueItem {
        pending_all(store, device)
            .await
            .into_iter()
            .find(|item| matches!(item, QueueItem::Message { message_id: id, .. } if id == message_id))
            .unwrap_or_else(|| panic!("{message_id} is not queued for device {device}"))
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

    /// `[(name, ts)]` as owned pairs (receipt lists).
    pub fn stamped<const N: usize>(pairs: [(&str, UnixMillis); N]) -> Vec<(String, UnixMillis)> {
        pairs
            .into_iter()
            .map(|(name, ts)| (name.to_owned(), ts))
            .collect()
    }
}

/// The backend-independent scenarios. Each takes a fresh, empty store.
mod scenarios {
    use std::collections::{BTreeSet, HashMap, HashSet};
    use std::sync::Arc;

    use missive_core::{AccountId, ConversationId, DeviceId, MessageId, QueuePos, Seq, UnixMillis};
    use missive_store::{
        AccountRecord, AckOutcome, ConversationKind, DeviceAuth, DeviceRecord, EventKind,
        GroupChange, GroupChangeRequest, NewAccount, NewDevice, NewGroup, PresenceVisibility,
        QueueItem, ReadOutcome, ReadRequest, Role, Store, StoreError, StoredEvent, SweepOutcome,
        SweepRequest,
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
            media: Vec::new(),
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
                    media: Vec::new(),
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

    /// 12. Group creation.
    pub async fn group_create(store: Arc<dyn Store>) {
        // Goal: a new group has the creator as its only admin and the others
        // as members, and its `created` system event is seq 1, queued for
        // every member device except the creating one; duplicates and the
        // creator in `members` are ignored; `members_max` counts the creator
        // and a creation beyond it stores nothing; group operations on a 1:1
        // conversation are NotAGroup; group_info is for members only.
        // Method: alice (a1, a2), bob (b1), carol (c1), dave (d1). Create one
        // over the limit, then one at the limit with repeated members;
        // inspect the answer, group_info, every queue, the event's
        // description and the conversation lists.
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
        assert_eq!(sorted(created.queued_for), sorted(vec![a2, b1, c1]));

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
        let QueueItem::Message {
            from,
            from_device,
            conversation,
            text,
            target,
            ts_ms,
            ..
        } = &pending_all(store, b1).await[0]
        else {
            panic!("b1's first item is not the created event");
        };
        assert_eq!(
            (from.as_str(), *from_device, *conversation, target, *ts_ms),
            ("alice", a1, group, &None, NOW + 1)
        );
        let event = description(text);
        assert_eq!(event["name"], "team");
        assert_eq!(event["users"], serde_json::json!(["bob", "carol"]));

        // The group is in every member's list, not in dave's.
        for account in [alice, bob, carol] {
            let record = conversation_of(store, account, group)
                .await
                .expect("listed");
            assert_eq!(record.kind, ConversationKind::Group);
            assert_eq!(record.name.as_deref(), Some("team"));
            assert_eq!(record.members, ["alice", "bob", "carol"]);
        }
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
            Err(StoreError::NotMember)
        );
        assert_eq!(
            store.group_info(dave, ConversationId(987_654_321)).await,
            Err(StoreError::UnknownConversation)
        );
        assert_eq!(group_info(store, alice, group).await.last_seq, 1);
    }

    /// 13. Adding and removing group members.
    pub async fn group_add_and_remove(store: Arc<dyn Store>) {
        // Goal: only admins add and remove; adding an existing member, or
        // beyond `members_max`, is refused and stores nothing (no seq); an
        // added member sees, in its queue and in history, only events from
        // its `added` event on; a removed member's devices get the `removed`
        // event and nothing after (no texts, no read receipts), and it is
        // NotMember for appends, history, group_info and changes; seqs stay
        // gap-free across system events and texts.
        // Method: the group cast alice (a1), bob (b1), carol (c1), and dave
        // (d1) outside. A text, refused adds, dave added at the exact limit,
        // a text, a refused and an accepted removal of carol, a text, a read,
        // a rename; then compare queues, histories and group_info.
        let store = &*store;
        let GroupCast([alice, bob, carol, dave], group, [a1, b1, c1, d1]) =
            group_cast(store, ["a1", "b1", "c1", "d1"]).await;
        let t2 = send_at(store, group, bob, b1, "t2", NOW + 2).await;
        assert_eq!(t2.seq, 2);
        assert_eq!(sorted(t2.queued_for), sorted(vec![a1, c1]));

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
            Err(StoreError::NotMember),
            "a refused add let dave in"
        );

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
        assert_eq!(sorted(added.queued_for), sorted(vec![b1, c1, d1]));
        let t4 = send_at(store, group, dave, d1, "t4", NOW + 4).await;
        assert_eq!(t4.seq, 4);
        assert_eq!(sorted(t4.queued_for), sorted(vec![a1, b1, c1]));

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
        assert_eq!(sorted(removed.queued_for), sorted(vec![b1, c1, d1]));
        let t6 = send_at(store, group, bob, b1, "t6", NOW + 6).await;
        assert_eq!((t6.seq, sorted(t6.queued_for)), (6, sorted(vec![a1, d1])));
        let read = read_up_to(store, bob, group, 6, NOW + 6).await;
        assert_eq!(sorted(read.queued_for), sorted(vec![a1, d1]));
        let renamed = change(store, alice, a1, group, rename("crew"), NOW + 7)
            .await
            .expect("rename");
        assert_eq!(
            (renamed.seq, sorted(renamed.queued_for)),
            (7, sorted(vec![b1, d1]))
        );

        // carol's queue ends with her removal; she is an outsider now.
        let carol_saw = vec![
            sys(1, "created"),
            txt(2, "t2"),
            sys(3, "added"),
            txt(4, "t4"),
            sys(5, "removed"),
        ];
        assert_eq!(pending_summaries(store, c1).await, carol_saw);
        assert!(pending_reads(store, c1).await.is_empty());
        let late = new_message(group, carol, c1, "late", NOW + 8, NOW + DAY_MS);
        assert_eq!(store.append_message(late).await, Err(StoreError::NotMember));
        let history = history_page(store, carol, group, None, None, ALL).await;
        assert_eq!(history, Err(StoreError::NotMember));
        assert_eq!(
            store.group_info(carol, group).await,
            Err(StoreError::NotMember)
        );
        assert!(!conversation_ids(store, carol).await.contains(&group));
        for outsider_change in [
            change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 8).await,
            change(store, carol, c1, group, GroupChange::Leave, NOW + 8).await,
        ] {
            assert_eq!(outsider_change, Err(StoreError::NotMember));
        }

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
    pub async fn group_leave_and_roles(store: Arc<dyn Store>) {
        // Goal: promote, demote and rename are for admins, on members only;
        // any member may leave, the leaver's devices get the `left` event
        // and nothing after; while an admin remains nobody is promoted; when
        // the last admin leaves, the longest-standing remaining member (the
        // earliest to join, not the lowest id or name) becomes admin and the
        // event names it in `promoted`.
        // Method: the group cast alice (a1, a2), bob (b1), carol (c1), dave
        // (d1) outside; alice removes bob, adds dave, re-adds bob (so carol joined first, bob
        // last though his id and name are lowest); promotions by the wrong
        // people; alice promotes dave and leaves (no promotion), then dave
        // leaves (carol promoted).
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
            (alice, a1, GroupChange::Promote(erin), StoreError::NotMember),
            (alice, a1, GroupChange::Demote(erin), StoreError::NotMember),
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
        assert_eq!(sorted(left.queued_for), sorted(vec![a2, b1, c1, d1]));
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
        assert_eq!(sorted(left.queued_for), sorted(vec![b1, c1]));
        assert_roles(store, bob, group, &["carol"], &["bob"]).await;
        assert_eq!(
            seqs(&history_all(store, bob, group).await),
            vec![4, 5, 6, 7],
            "bob, re-added at seq 4, sees from there on"
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
        // as its target (queue and history); naming an unknown message, a
        // text of another conversation or an event that is not a text is
        // UnknownMessage and stores nothing: no seq, no queue entry, no
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
        let QueueItem::Message { kind, target, .. } = queued(store, a1, &replied.message_id).await
        else {
            unreachable!()
        };
        assert_eq!((kind, target), (EventKind::Text, Some(m1.message_id)));
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
        let QueueItem::Message {
            kind,
            text,
            target: queued_target,
            ..
        } = queued(store, b1, &history[3].message_id).await
        else {
            unreachable!()
        };
        assert_eq!(
            (kind, text.as_str(), queued_target.as_ref()),
            (EventKind::Reaction, "😂", Some(target))
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
        // the text's body and sets `edited_ms` (history and queued entries
        // show the current state) and is stored as its own event (kind Edit,
        // body the new text, target the text); only texts can be edited;
        // refusals store nothing.
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
        let QueueItem::Message {
            text,
            edited_ms,
            kind,
            ..
        } = queued(store, b1, target).await
        else {
            unreachable!()
        };
        assert_eq!(
            (kind, text.as_str(), edited_ms),
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
        // empty body, no reactions) in history and in queued entries, empties
        // the bodies of the text's edit events, and is stored as its own event
        // (kind Delete, empty body, target the text); a deleted text cannot
        // be deleted, edited or reacted to again (MessageDeleted); refusals
        // store nothing.
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
        let QueueItem::Message {
            deleted: queued_deleted,
            text,
            ..
        } = queued(store, b1, target).await
        else {
            unreachable!()
        };
        assert_eq!((queued_deleted, text.as_str()), (true, ""));
        let edit_event = stored(store, bob, conv, &edited.message_id).await;
        assert_eq!(
            (edit_event.kind, edit_event.body.as_str()),
            (EventKind::Edit, "")
        );
        let QueueItem::Message { text, .. } = queued(store, b1, &edited.message_id).await else {
            unreachable!()
        };
        assert_eq!(
            text, "",
            "the queued edit event still carries the deleted text"
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
        // Goal: acks produce delivered receipts for texts only (acking a
        // system event or a reaction queues no `Delivered`), once per member
        // whichever of its devices acks first; `receipts()` lists, for any
        // member, the recipients that got the text (first ack time) and those
        // whose read pointer covers it (pointer time), never the sender; it
        // is UnknownMessage for anything but a text of this conversation and
        // NotMember / UnknownConversation as usual.
        // Method: the group cast alice (a1), bob (b1, b2), carol (c1); dave
        // outside. alice sends M, bob reacts; bob, then carol ack in steps at
        // distinct times; reads move; check queues and receipts each time.
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
        let receipts_of =
            |account| async move { store.receipts(account, group, id).await.expect("receipts") };
        let delivered_m = |by: &str, ts_ms| (id.clone(), m.seq, by.to_owned(), ts_ms);

        // bob's b1 acks its whole queue: the created event and M.
        let outcome = ack_all_at(store, b1, bob, NOW + 10).await;
        assert_eq!((outcome.removed, outcome.queued_for), (2, vec![a1]));
        assert_eq!(
            pending_delivered(store, a1).await,
            vec![delivered_m("bob", NOW + 10)]
        );

        // carol acks the created event and the reaction only: no receipts.
        let c1_items = pending_all(store, c1).await;
        let not_texts: Vec<QueuePos> = messages(&c1_items)
            .into_iter()
            .filter(|(_, message_id, _)| message_id != id)
            .map(|(pos, _, _)| pos)
            .collect();
        let outcome = ack_at(store, c1, carol, not_texts, NOW + 11).await;
        assert_eq!((outcome.removed, outcome.queued_for.len()), (2, 0));
        assert!(
            pending_delivered(store, b1).await.is_empty(),
            "a reaction got a receipt"
        );
        assert!(pending_delivered(store, b2).await.is_empty());
        assert_eq!(pending_delivered(store, a1).await.len(), 1);

        // carol's ack of M is her first: a receipt; bob's second device: none.
        let outcome = ack_all_at(store, c1, carol, NOW + 12).await;
        assert_eq!((outcome.removed, outcome.queued_for), (1, vec![a1]));
        let outcome = ack_all_at(store, b2, bob, NOW + 13).await;
        assert_eq!((outcome.removed, outcome.queued_for.len()), (3, 0));
        assert_eq!(
            pending_delivered(store, a1).await,
            vec![delivered_m("bob", NOW + 10), delivered_m("carol", NOW + 12)]
        );

        let record = receipts_of(alice).await;
        assert_eq!((&record.message_id, record.seq), (id, 2));
        assert_eq!(
            record.delivered,
            stamped([("bob", NOW + 10), ("carol", NOW + 12)])
        );
        assert!(record.read.is_empty());

        // Reads: pointers covering M, in pointer time order; the sender never.
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
            Err(StoreError::NotMember)
        );
        assert_eq!(
            store.receipts(alice, ConversationId(987_654_321), id).await,
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
                reactions: vec![],
            }
        );
        assert_eq!(
            history_all(store, alice, conv).await,
            history_all(store, bob, conv).await
        );
        let outsider = history_page(store, carol, conv, None, None, ALL).await;
        assert_eq!(outsider, Err(StoreError::NotMember));
        let nowhere =
            history_page(store, alice, ConversationId(987_654_321), None, None, ALL).await;
        assert_eq!(nowhere, Err(StoreError::UnknownConversation));

        // Retention: once unqueued and older than the cutoff, a body leaves history.
        ack_all_at(store, b1, bob, NOW + 20).await;
        let swept = store
            .sweep(SweepRequest {
                now_ms: NOW + 20,
                bodies_before_ms: NOW + 4,
                dedup_before_ms: NOW - 1,
                limit: 100,
            })
            .await
            .expect("sweep");
        assert_eq!(swept.purged_bodies, 3);
        assert_eq!(
            seqs(&history_all(store, bob, conv).await),
            (4..=10).collect::<Vec<_>>()
        );
        assert_eq!(page(Some(6), None, 10).await, vec![5, 4]);
    }

    /// 21. The conversation list.
    pub async fn conversation_list_order(store: Arc<dyn Store>) {
        // Goal: conversations() lists exactly the account's conversations,
        // most recent activity first (its newest event, or its creation while
        // empty), each with kind, name, members (usernames, sorted), last
        // seq, the account's own read pointer and the newest event.
        // Method: alice and bob (a direct conversation with texts at
        // NOW + 1, + 2), alice and carol (empty, created at NOW + 3), a group
        // of the three (NOW + 4); then bob writes at NOW + 5 and reads;
        // check the lists of all three and of dave, who has none.
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
        assert_eq!(
            (last.message_id, last.seq, last.from.as_str(), last.body),
            (m3.message_id, 3, "bob", text_of("m3"))
        );
        assert_eq!(
            conversation_of(store, bob, ab).await.map(|r| r.read_seq),
            Some(2)
        );

        let empty = conversation_of(store, carol, ac).await.expect("ac");
        assert_eq!(
            (empty.last_seq, empty.read_seq, empty.last_event),
            (0, 0, None)
        );
        assert_eq!(empty.members, ["alice", "carol"]);
        let team = conversation_of(store, bob, group).await.expect("group");
        assert_eq!(
            (team.kind, team.name.as_deref(), team.last_seq),
            (ConversationKind::Group, Some("team"), 1)
        );
        assert_eq!(team.members, ["alice", "bob", "carol"]);
        assert_eq!(team.last_event.map(|e| e.kind), Some(EventKind::System));
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
    pub async fn blocks_refuse_direct_sends(store: Arc<dyn Store>) {
        // Goal: when either member of a 1:1 conversation blocked the other,
        // every append there (texts and other kinds, from either side) is
        // Blocked and stores nothing (no seq, no queue entry, no idempotency
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
            send_at(store, bc, bob, b1, "x", NOW + 2).await.queued_for,
            vec![c1]
        );
        let in_group = send_at(store, group, bob, b1, "g", NOW + 2).await;
        assert_eq!(sorted(in_group.queued_for), sorted(vec![a1, c1]));

        assert!(
            store
                .set_block(alice, bob, false, NOW + 3)
                .await
                .expect("unblock")
        );
        let after = send_at(store, conv, alice, a1, "x", NOW + 4).await;
        assert_new(&after, 2);
        assert_eq!(pending_ids(store, b1).await.last(), Some(&after.message_id));

        // The other direction.
        assert!(
            store
                .set_block(bob, alice, true, NOW + 5)
                .await
                .expect("block")
        );
        let message = new_message(conv, alice, a1, "y", NOW + 6, NOW + DAY_MS);
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
            Err(StoreError::NotMember)
        );
        assert_eq!(
            store
                .relay_targets(alice, ConversationId(987_654_321))
                .await,
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
            .direct_conversation(alice, bob, NOW)
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
        // after it, receipts included: a recipient acking a text the member
        // sent before its removal queues no `Delivered` for the removed
        // member's devices (the receipt is still recorded for receipts()).
        // Method: the group cast alice (a1), bob (b1), carol (c1); carol
        // sends a text, alice removes carol, bob acks; carol's queue must end
        // with the removal.
        let store = &*store;
        let GroupCast([alice, bob, carol, _], group, [a1, b1, c1]) =
            group_cast(store, ["a1", "b1", "c1"]).await;
        let sent = send_at(store, group, carol, c1, "bye", NOW + 1).await;
        change(store, alice, a1, group, GroupChange::Remove(carol), NOW + 2)
            .await
            .expect("remove carol");
        let before = pending_all(store, c1).await;
        assert_eq!(queue_summaries(&before).last(), Some(&sys(3, "removed")));

        let outcome = ack_message(store, b1, bob, &sent.message_id, false).await;
        assert_eq!(outcome.removed, 1);
        assert!(
            !outcome.queued_for.contains(&c1),
            "a Delivered was queued for the removed member"
        );
        assert_eq!(pending_all(store, c1).await, before);
        let record = store.receipts(alice, group, &sent.message_id).await;
        assert_eq!(record.map(|r| r.delivered), Ok(stamped([("bob", ACK_NOW)])));
    }

    /// 27. Read receipts name recipients only.
    pub async fn read_receipts_name_recipients_only(store: Arc<dyn Store>) {
        // Goal: `receipts().read` lists recipients whose read pointer covers
        // the text; a member added after the text was sent was never its
        // recipient (it is neither queued to it nor in its history), so its
        // read pointer moving past the text does not list it.
        // Method: the group cast alice (a1), bob (b1), carol (c1); alice
        // sends M, then adds dave, who reads up to the newest seq; bob reads
        // too. M's read list must name bob only.
        let store = &*store;
        let GroupCast([alice, bob, _, dave], group, [a1, _b1, _c1, _d1]) =
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
            !seqs(&history_all(store, dave, group).await).contains(&m.seq),
            "dave was never shown M"
        );
        read_up_to(store, dave, group, 3, NOW + 3).await;
        read_up_to(store, bob, group, 3, NOW + 4).await;
        let record = store
            .receipts(alice, group, &m.message_id)
            .await
            .expect("receipts");
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
        group_create,
        group_add_and_remove,
        group_leave_and_roles,
        replies,
        reactions,
        edits,
        deletes,
        receipts,
        history_paging,
        history_after_shows_events_about_earlier_messages,
        conversation_list_order,
        contacts_and_blocks,
        blocks_refuse_direct_sends,
        relay_targets,
        presence_profile,
        session_directory,
        find_direct,
        removed_member_gets_no_receipts,
        read_receipts_name_recipients_only,
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
        group_create,
        group_add_and_remove,
        group_leave_and_roles,
        replies,
        reactions,
        edits,
        deletes,
        receipts,
        history_paging,
        history_after_shows_events_about_earlier_messages,
        conversation_list_order,
        contacts_and_blocks,
        blocks_refuse_direct_sends,
        relay_targets,
        presence_profile,
        session_directory,
        find_direct,
        removed_member_gets_no_receipts,
        read_receipts_name_recipients_only,
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

        use missive_core::{AccountId, ConversationId, DeviceId, MessageId, QueuePos, Seq};
        use missive_store::{
            Appended, NewAccount, PostgresConfig, PostgresStore, QueueItem, Store, StoreError,
        };
        use tokio::net::{TcpListener, TcpStream};
        use tokio::sync::Barrier;
        use tokio::task::JoinHandle;

        use super::FreshSchema;
        use crate::support::*;

        /// Messages each sending device sends.
        const PER_DEVICE: usize = 120;

        /// Follows `device`'s queue on `follow` like a live session (page
        /// after the cursor, move the cursor to the last position seen,
        /// repeat), acking up to the cursor on `acker` when given, until a
        /// page read after `done` was set is empty. Returns the seqs seen
        /// per conversation, in arrival order.
        async fn follow_queue(
            follow: Arc<dyn Store>,
            acker: Option<(Arc<dyn Store>, AccountId)>,
            device: DeviceId,
            done: Arc<AtomicBool>,
        ) -> HashMap<ConversationId, Vec<Seq>> {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut cursor: QueuePos = 0;
            let mut seen: HashMap<ConversationId, Vec<Seq>> = HashMap::new();
            loop {
                assert!(
                    Instant::now() < deadline,
                    "device {device} is still reading"
                );
                let finished = done.load(Ordering::Acquire);
                let page = follow
                    .pending(device, cursor, 64, NOW)
                    .await
                    .expect("pending");
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                for item in &page {
                    assert!(item.pos() > cursor, "positions went backwards: {item:?}");
                    cursor = item.pos();
                    if let QueueItem::Message {
                        conversation, seq, ..
                    } = item
                    {
                        seen.entry(*conversation).or_default().push(*seq);
                    }
                }
                if let Some((acker, account)) = &acker {
                    ack(&**acker, device, *account, Some(cursor), vec![], false).await;
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
            // follows its queue live (cursor = last position seen) sees every
            // conversation's seqs exactly 1..=N in order: no position ever
            // becomes visible behind the cursor, nothing twice.
            // Method: alice, bob and dave each send from two devices, each
            // device a task on "their" node alternating between their 1:1
            // with carol and the group; carol's two devices follow on two
            // nodes, one acking (which queues receipts to the senders'
            // devices: more concurrent fan-out) through the third.
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
                tokio::spawn(follow_queue(
                    Arc::clone(&nodes[0]),
                    Some((Arc::clone(&nodes[2]), carol)),
                    c1,
                    Arc::clone(&done),
                )),
                tokio::spawn(follow_queue(
                    Arc::clone(&nodes[1]),
                    None,
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
                            let message = new_message(
                                conv,
                                alice,
                                a1,
                                &format!("race-{round}"),
                                NOW,
                                NOW + DAY_MS,
                            );
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
                assert!(retry.queued_for.is_empty());
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
            // and the recipient's queue are checked.
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
                        0..=2 => {
                            new_message(conv, alice, a1, &format!("ok-{i}"), NOW, NOW + DAY_MS)
                        }
                        3 => new_message(
                            conv,
                            carol,
                            c1,
                            &format!("outsider-{i}"),
                            NOW,
                            NOW + DAY_MS,
                        ),
                        4 => message_with(
                            conv,
                            alice,
                            a1,
                            &format!("bad-{i}"),
                            react(&MessageId::generate(), Some("👍")),
                            NOW,
                        ),
                        // An original; its retry is task SENDS + i / 6.
                        _ => {
                            new_message(conv, bob, b1, &format!("dup-{}", i / 6), NOW, NOW + DAY_MS)
                        }
                    };
                    tokio::spawn(async move {
                        barrier.wait().await;
                        (i, node.append_message(message).await)
                    })
                })
                .chain((0..RETRIES).map(|round| {
                    let (node, barrier) = (Arc::clone(&node), Arc::clone(&barrier));
                    let message =
                        new_message(conv, bob, b1, &format!("dup-{round}"), NOW, NOW + DAY_MS);
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
                    (3, true) => assert_eq!(answer, Err(StoreError::NotMember), "send {i}"),
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
