//! Shared helpers: the usual cast of accounts and devices, builders for
//! requests, thin wrappers of store calls that must succeed, and projections
//! of `pending` pages. Everything is re-exported here, so a scenario module
//! needs only `use crate::support::*;`.

mod acks;
mod history;
mod pages;

pub(crate) use acks::*;
pub(crate) use history::*;
pub(crate) use pages::*;

use missive_core::{
    AccountId, ClientMsgId, ConversationId, DeviceId, MessageId, MessageText, Seq, TokenHash,
    UnixMillis, Username,
};
use missive_store::{
    AccountRecord, Appended, Body, ConversationRecord, DeviceAuth, DeviceRecord, MemberReceipts,
    NewAccount, NewDevice, NewMessage, Store, StoreError,
};

/// The suite's "now"; everything else is an offset from it.
pub(crate) const NOW: UnixMillis = 1_700_000_000_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
/// A `pending` limit larger than anything waiting in the suite.
pub(crate) const ALL: usize = 100_000;
/// The `now_ms` of acks, distinct from `NOW` so receipt timestamps are checkable.
pub(crate) const ACK_NOW: UnixMillis = NOW + 7;
/// An `expired_before_ms` that expires nothing the suite stores.
pub(crate) const NO_EXPIRY: UnixMillis = NOW - DAY_MS;
/// A sweep cutoff that nothing the suite stores is older than.
pub(crate) const LONG_AGO: UnixMillis = NOW - DAY_MS;
/// A conversation id no store hands out in the suite.
pub(crate) const NOWHERE: ConversationId = ConversationId(987_654_321);

pub(crate) fn username(name: &str) -> Username {
    Username::parse(name).expect("valid username")
}

pub(crate) fn token(label: &str) -> TokenHash {
    TokenHash::of(&format!("token-of-{label}"))
}

pub(crate) async fn new_account(store: &dyn Store, name: &str) -> AccountId {
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
pub(crate) async fn new_device(store: &dyn Store, account: AccountId, label: &str) -> DeviceId {
    store
        .create_device(device_request(account, label, NOW))
        .await
        .expect("create_device")
        .id
}

/// The login [`new_device`] makes, at `now_ms`: the device `label` (token
/// hash `token(label)`), room for four devices, no replacing.
pub(crate) fn device_request(account: AccountId, label: &str, now_ms: UnixMillis) -> NewDevice {
    NewDevice {
        account,
        name: label.to_owned(),
        token_hash: token(label),
        devices_max: 4,
        replace_least_recent: false,
        now_ms,
    }
}

/// The accounts "alice" and "bob", created in that order.
pub(crate) async fn alice_and_bob(store: &dyn Store) -> (AccountId, AccountId) {
    let alice = new_account(store, "alice").await;
    let bob = new_account(store, "bob").await;
    (alice, bob)
}

/// The direct conversation of `a` and `b` (created on first use).
pub(crate) async fn direct(
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
pub(crate) struct Cast<const N: usize>(
    pub AccountId,
    pub AccountId,
    pub ConversationId,
    pub [DeviceId; N],
);

/// alice and bob, then one device per label in the given order (a label
/// starting with 'a' is alice's, with 'b' bob's; its token hash is
/// `token(label)`), then their direct conversation at `NOW`. The devices
/// exist before the conversation, so they all start at its beginning.
pub(crate) async fn cast<const N: usize>(store: &dyn Store, labels: [&str; N]) -> Cast<N> {
    let (alice, bob) = alice_and_bob(store).await;
    let devices = cast_devices(store, &[('a', alice), ('b', bob)], labels).await;
    let conv = direct(store, alice, bob, NOW).await;
    Cast(alice, bob, conv, devices)
}

/// [`cast`], then alice's text "m1" (`text_of("m1")`, seq 1) at `NOW`
/// from her first device; returns the cast and that text's id.
pub(crate) async fn cast_with_text<const N: usize>(
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
pub(crate) struct GroupCast<const N: usize>(
    pub [AccountId; 4],
    pub ConversationId,
    pub [DeviceId; N],
);

/// alice, bob, carol and dave, one device per label (its first letter
/// 'a', 'b', 'c' or 'd' names the owner), then the group "team" that
/// alice creates at `NOW` from her first device with bob and carol in
/// it (seq 1). dave is the outsider.
pub(crate) async fn group_cast<const N: usize>(
    store: &dyn Store,
    labels: [&str; N],
) -> GroupCast<N> {
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
pub(crate) async fn account_with_device(
    store: &dyn Store,
    name: &str,
    label: &str,
) -> (AccountId, DeviceId) {
    let account = new_account(store, name).await;
    (account, new_device(store, account, label).await)
}

pub(crate) async fn account_named(store: &dyn Store, name: &str) -> Option<AccountRecord> {
    store
        .account_by_username(&username(name))
        .await
        .expect("account_by_username")
}

/// The account owning `device` (through `device_owner`).
pub(crate) async fn account_of(store: &dyn Store, device: DeviceId) -> AccountId {
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

pub(crate) async fn devices_of(store: &dyn Store, account: AccountId) -> Vec<DeviceRecord> {
    store.list_devices(account).await.expect("list_devices")
}

/// Who the token of device `label` authenticates as.
pub(crate) async fn auth(store: &dyn Store, label: &str) -> Option<DeviceAuth> {
    store
        .authenticate(&token(label))
        .await
        .expect("authenticate")
}

/// How many events lie above the device's positions.
pub(crate) async fn waiting(store: &dyn Store, device: DeviceId) -> u64 {
    store.waiting(device).await.expect("waiting")
}

pub(crate) fn text_of(cmid: &str) -> String {
    format!("text of {cmid}")
}

/// A request to append the text `text_of(cmid)` at `now_ms`.
pub(crate) fn new_message(
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
pub(crate) async fn send(
    store: &dyn Store,
    conversation: ConversationId,
    account: AccountId,
    device: DeviceId,
    cmid: &str,
) -> Appended {
    send_at(store, conversation, account, device, cmid, NOW).await
}

/// Appends the text `text_of(cmid)` at `now_ms`; panics on refusal.
pub(crate) async fn send_at(
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
pub(crate) fn message_with(
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
pub(crate) async fn append_ok(store: &dyn Store, message: NewMessage) -> Appended {
    store.append_message(message).await.expect("append_message")
}

/// Asserts that `appended` is a new message (not a duplicate) at `seq`:
/// after refusals, that they left neither a seq nor an idempotency record.
pub(crate) fn assert_new(appended: &Appended, seq: Seq) {
    assert_eq!(
        (appended.seq, appended.duplicate),
        (seq, false),
        "expected a new message at seq {seq}"
    );
}

/// The edit window the scenarios pass in `Body::Edit`.
pub(crate) const WINDOW_MS: i64 = 900_000;

pub(crate) fn text(text: &str) -> MessageText {
    MessageText::parse(text, 4096).expect("valid text")
}

/// A text that replies to nothing.
pub(crate) fn plain(body: &str) -> Body {
    Body::Text {
        text: text(body),
        reply_to: None,
        media: Vec::new(),
    }
}

/// A text replying to `to`.
pub(crate) fn reply(body: &str, to: &MessageId) -> Body {
    Body::Text {
        text: text(body),
        reply_to: Some(to.clone()),
        media: Vec::new(),
    }
}

/// A reaction to `target`; `None` removes the sender's reaction.
pub(crate) fn react(target: &MessageId, emoji: Option<&str>) -> Body {
    Body::Reaction {
        target: target.clone(),
        emoji: emoji.map(str::to_owned),
    }
}

/// An edit of `target` with the window [`WINDOW_MS`].
pub(crate) fn edit(target: &MessageId, body: &str) -> Body {
    Body::Edit {
        target: target.clone(),
        text: text(body),
        window_ms: WINDOW_MS,
    }
}

pub(crate) fn delete(target: &MessageId) -> Body {
    Body::Delete {
        target: target.clone(),
    }
}

/// The account's view of one conversation in `conversations()`.
pub(crate) async fn conversation_of(
    store: &dyn Store,
    account: AccountId,
    conversation: ConversationId,
) -> Option<ConversationRecord> {
    conversation_list(store, account)
        .await
        .into_iter()
        .find(|record| record.conversation == conversation)
}

pub(crate) async fn conversation_list(
    store: &dyn Store,
    account: AccountId,
) -> Vec<ConversationRecord> {
    store.conversations(account).await.expect("conversations")
}

/// The conversations of `account`, in the order `conversations()` lists them.
pub(crate) async fn conversation_ids(store: &dyn Store, account: AccountId) -> Vec<ConversationId> {
    conversation_list(store, account)
        .await
        .iter()
        .map(|record| record.conversation)
        .collect()
}

/// The other members' receipt cursors as `account` sees them in
/// `conversations()`.
pub(crate) async fn cursors(
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
pub(crate) fn cursor(username: &str, delivered_seq: Seq, read_seq: Seq) -> MemberReceipts {
    MemberReceipts {
        username: username.to_owned(),
        delivered_seq,
        read_seq,
    }
}

/// Asserts that `message` is refused with `expected` and changed nothing:
/// not the conversation's last seq as its sender sees it, not what waits
/// for `watched`.
pub(crate) async fn assert_refused(
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
