//! Groups: creation, adding and removing members, leaving and roles, sends
//! judged on the group as it is now, and event times that never go back.

use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, Seq, UnixMillis};
use missive_store::{
    ConversationKind, GroupChange, GroupChangeRequest, NewGroup, ReadOutcome, ReadRequest, Role,
    Store, StoreError, StoredEvent,
};

use crate::support::*;

/// 12. Group creation.
pub(crate) async fn group_create(store: Arc<dyn Store>) {
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

    created_event_waits(store, group, [a1, a2, b1, c1, d1]).await;
    listed_for_members_only(store, [alice, bob, carol, dave], group, (a1, direct_ab)).await;
}

/// [`group_create`]: the `created` event waits for every member device but
/// the creating one (a1), and says who created what.
async fn created_event_waits(
    store: &dyn Store,
    group: ConversationId,
    [a1, a2, b1, c1, d1]: [DeviceId; 5],
) {
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
}

/// [`group_create`]: the group in its members' lists, and group calls on
/// alice–bob's 1:1 conversation and by dave, the outsider.
async fn listed_for_members_only(
    store: &dyn Store,
    [alice, bob, carol, dave]: [AccountId; 4],
    group: ConversationId,
    (a1, direct_ab): (DeviceId, ConversationId),
) {
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
pub(crate) async fn group_add_and_remove(store: Arc<dyn Store>) {
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
    let people = group_cast(store, ["a1", "b1", "c1", "d1"]).await;
    let GroupCast([alice, bob, carol, dave], group, [a1, b1, c1, d1]) = people;
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

    dave_added_at_the_limit(store, &people).await;
    carol_removed_by_an_admin(store, &people).await;
    carol_is_an_outsider(store, &people).await;
}

/// [`group_add_and_remove`]: alice adds dave at the limit, who sees from
/// his `added` event on, whichever way history is asked.
async fn dave_added_at_the_limit(
    store: &dyn Store,
    &GroupCast([alice, _, _, dave], group, [a1, b1, c1, d1]): &GroupCast<4>,
) {
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
}

/// [`group_add_and_remove`]: bob may not remove carol, alice may; then
/// bob's text, his read and alice's rename.
async fn carol_removed_by_an_admin(
    store: &dyn Store,
    &GroupCast([alice, bob, carol, _], group, [a1, b1, c1, d1]): &GroupCast<4>,
) {
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
}

/// [`group_add_and_remove`], once carol is removed: what she got, what she
/// may no longer do, and the one gap-free sequence the others see.
async fn carol_is_an_outsider(
    store: &dyn Store,
    &GroupCast([alice, bob, carol, _], group, [a1, _, c1, _]): &GroupCast<4>,
) {
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
pub(crate) async fn event_times_never_go_backwards(store: Arc<dyn Store>) {
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

pub(crate) async fn group_leave_and_roles(store: Arc<dyn Store>) {
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
    let people = group_cast(store, ["a1", "a2", "b1", "c1", "d1"]).await;
    let GroupCast([alice, bob, carol, dave], group, [a1, a2, b1, c1, d1]) = people;
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

    admins_only(store, &people, erin).await;
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

    the_last_admin_leaves(store, &people).await;
}

/// [`group_leave_and_roles`]: role changes and renames by a plain member,
/// and role changes of someone (erin) who is not a member, are refused.
async fn admins_only(
    store: &dyn Store,
    &GroupCast([alice, _, carol, dave], group, [a1, _, _, c1, _]): &GroupCast<5>,
    erin: AccountId,
) {
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
}

/// [`group_leave_and_roles`], once alice left: dave, the last admin,
/// leaves, and carol, in longest, takes over.
async fn the_last_admin_leaves(
    store: &dyn Store,
    &GroupCast([_, bob, carol, dave], group, [a1, a2, b1, c1, d1]): &GroupCast<5>,
) {
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

/// 23. Blocks and sending.
pub(crate) async fn sends_are_judged_on_the_conversation_as_it_is_now(store: Arc<dyn Store>) {
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
