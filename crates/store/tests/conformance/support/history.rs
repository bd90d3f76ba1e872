//! Helpers for groups (requests, changes, roles) and for stored events as
//! they wait and as history shows them.

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, Seq, UnixMillis};
use missive_store::{
    EventKind, GroupChange, GroupChangeRequest, GroupChanged, GroupName, GroupRecord,
    HistoryRequest, NewGroup, PendingItem, Role, Store, StoreError, StoredEvent,
};

use super::{ALL, events, pending_all, sorted, text_of};

// ── Groups ──

/// The group size limit (creator included) scenarios pass unless they
/// test it.
pub(crate) const GROUP_MAX: usize = 8;

pub(crate) fn group_name(name: &str) -> GroupName {
    GroupName::parse(name).expect("valid group name")
}

pub(crate) fn rename(name: &str) -> GroupChange {
    GroupChange::Rename(group_name(name))
}

/// A creation request with limit [`GROUP_MAX`].
pub(crate) fn new_group(
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

pub(crate) async fn create_group(store: &dyn Store, group: NewGroup) -> GroupChanged {
    store.create_group(group).await.expect("create_group")
}

/// A change request with limit [`GROUP_MAX`].
pub(crate) fn change_request(
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
pub(crate) async fn change(
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

pub(crate) async fn group_info(
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
pub(crate) async fn assert_roles(
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
pub(crate) fn description(body: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(body).expect("a system event's body is JSON");
    assert_eq!(value["v"], 1, "system event {body}");
    value
}

// ── Stored events, pending and in history ──

/// (seq, kind, what) of a stored event, where `what` is the body
/// (text, emoji, edited text; empty when removed or deleted) or, for a
/// system event, its `action`.
pub(crate) type Summary = (Seq, EventKind, String);

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
pub(crate) fn txt(seq: Seq, cmid: &str) -> Summary {
    (seq, EventKind::Text, text_of(cmid))
}

/// The summary of a system event with `action` at `seq`.
pub(crate) fn sys(seq: Seq, action: &str) -> Summary {
    (seq, EventKind::System, action.to_owned())
}

/// Summaries of pending items; panics on an `Expired` item.
pub(crate) fn item_summaries(items: &[PendingItem]) -> Vec<Summary> {
    summaries(&events(items))
}

/// Summaries of everything waiting for the device.
pub(crate) async fn pending_summaries(store: &dyn Store, device: DeviceId) -> Vec<Summary> {
    item_summaries(&pending_all(store, device).await)
}

pub(crate) fn summaries(events: &[StoredEvent]) -> Vec<Summary> {
    events
        .iter()
        .map(|event| summary(event.seq, event.kind, &event.body))
        .collect()
}

pub(crate) fn seqs(events: &[StoredEvent]) -> Vec<Seq> {
    events.iter().map(|event| event.seq).collect()
}

/// One history page, as the store answers it.
pub(crate) async fn history_page(
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
pub(crate) async fn history_all(
    store: &dyn Store,
    account: AccountId,
    conversation: ConversationId,
) -> Vec<StoredEvent> {
    history_page(store, account, conversation, None, Some(0), ALL)
        .await
        .expect("history")
}

/// The seqs of everything the account may see of the conversation.
pub(crate) async fn history_seqs(
    store: &dyn Store,
    account: AccountId,
    conversation: ConversationId,
) -> Vec<Seq> {
    seqs(&history_all(store, account, conversation).await)
}

/// The newest event `account` may see in the conversation.
pub(crate) async fn newest(
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
pub(crate) async fn stored(
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
pub(crate) async fn reactions_of(
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
pub(crate) fn pairs<const N: usize>(pairs: [(&str, &str); N]) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

/// `[(name, ts)]` as owned pairs, sorted (receipt lists, whose order
/// is not part of the contract).
pub(crate) fn stamped<const N: usize>(pairs: [(&str, UnixMillis); N]) -> Vec<(String, UnixMillis)> {
    sorted(
        pairs
            .into_iter()
            .map(|(name, ts)| (name.to_owned(), ts))
            .collect(),
    )
}
