//! Conversation settings: end-to-end encrypted conversations (and the media they
//! may carry) and disappearing messages.

use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, MessageId, UnixMillis};
use missive_store::{
    Appended, Body, ENCRYPTED_MEDIA_TYPE, EventKind, MediaRecord, NewGroup, PendingItem, Setting,
    SettingRequest, Store, StoreError,
};

use crate::support::Shape::{Ev, Ex};
use crate::support::*;

/// Ciphertext for an encrypted conversation.
pub(crate) fn sealed(ciphertext: &str, media: &[&str]) -> Body {
    Body::Encrypted {
        ciphertext: ciphertext.to_owned(),
        media: media.iter().map(ToString::to_string).collect(),
    }
}

/// A media record `id` uploaded by `uploader` with `content_type`.
pub(crate) fn uploaded(id: &str, uploader: AccountId, content_type: &str) -> MediaRecord {
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
pub(crate) async fn encrypted_conversations_take_only_ciphertext(store: Arc<dyn Store>) {
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
    let (people, m1) = cast_with_text(store, ["a1", "b1"]).await;
    let Cast(alice, bob, conv, [a1, b1]) = people;
    let early = message_with(conv, alice, a1, "x0", sealed("AAAA", &[]), NOW);
    assert_refused(store, early, StoreError::ConversationNotEncrypted, &[b1]).await;
    assert!(
        !conversation_of(store, alice, conv)
            .await
            .expect("listed")
            .encrypted
    );

    turned_on_by_either_member(store, &people).await;

    for (cmid, body) in [
        ("p1", plain("hello")),
        ("p2", reply("re", &m1)),
        ("p3", edit(&m1, "v2")),
        ("p4", react(&m1, Some("👍"))),
    ] {
        let refused = message_with(conv, alice, a1, cmid, body, NOW + 2);
        assert_refused(store, refused, StoreError::ConversationEncrypted, &[b1]).await;
    }

    let sent = ciphertext_and_its_media(store, &people).await;

    let by_bob = message_with(conv, bob, b1, "d0", delete(&sent.message_id), NOW + 5);
    assert_refused(store, by_bob, StoreError::NotAuthor, &[a1]).await;
    append_ok(
        store,
        message_with(conv, alice, a1, "d1", delete(&sent.message_id), NOW + 5),
    )
    .await;
    let tombstone = stored(store, bob, conv, &sent.message_id).await;
    assert_eq!((tombstone.deleted, tombstone.body.as_str()), (true, ""));

    let (carol, c1) = created_encrypted(store, &people).await;
    only_admins_encrypt_a_group(store, &people, (carol, c1)).await;
}

/// Turning encryption on in `conversation` at `NOW + 1`, by `actor` from
/// `actor_device`.
fn encrypt(
    actor: AccountId,
    actor_device: DeviceId,
    conversation: ConversationId,
) -> SettingRequest {
    SettingRequest {
        actor,
        actor_device,
        conversation,
        setting: Setting::Encrypt,
        now_ms: NOW + 1,
    }
}

/// [`encrypted_conversations_take_only_ciphertext`]: bob turns encryption
/// on, recorded as a system event for alice; alice turning it on again
/// records nothing.
async fn turned_on_by_either_member(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, b1]): &Cast<2>,
) {
    let on = store
        .change_setting(encrypt(bob, b1, conv))
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
        .change_setting(encrypt(alice, a1, conv))
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
}

/// [`encrypted_conversations_take_only_ciphertext`], once encrypted:
/// ciphertext goes in and comes out as it came, with media uploaded
/// encrypted only. Returns the first ciphertext sent.
async fn ciphertext_and_its_media(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, b1]): &Cast<2>,
) -> Appended {
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
    sent
}

/// [`encrypted_conversations_take_only_ciphertext`]: a group created
/// encrypted with carol (c1, returned) says so everywhere and takes no
/// plain text.
async fn created_encrypted(
    store: &dyn Store,
    &Cast(alice, bob, _, [a1, _]): &Cast<2>,
) -> (AccountId, DeviceId) {
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
            PendingItem::Event(event) if event.conversation == group.conversation => Some(event),
            _ => None,
        })
        .expect("the created event");
    let description: serde_json::Value =
        serde_json::from_str(&created.body).expect("a JSON description");
    assert_eq!(description["encrypted"], serde_json::json!(true));
    let plain_in_group = message_with(group.conversation, carol, c1, "g1", plain("hi"), NOW + 7);
    assert_refused(
        store,
        plain_in_group,
        StoreError::ConversationEncrypted,
        &[a1],
    )
    .await;
    (carol, c1)
}

/// [`encrypted_conversations_take_only_ciphertext`]: in a plain group of
/// alice and bob, only alice (its admin) turns encryption on; carol, not
/// in it, may not either.
async fn only_admins_encrypt_a_group(
    store: &dyn Store,
    &Cast(alice, bob, _, [a1, b1]): &Cast<2>,
    (carol, c1): (AccountId, DeviceId),
) {
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
            .change_setting(encrypt(bob, b1, open.conversation))
            .await
            .map(|changed| changed.seq),
        Err(StoreError::NotAdmin)
    );
    assert_eq!(
        store
            .change_setting(encrypt(carol, c1, open.conversation))
            .await
            .map(|changed| changed.seq),
        Err(StoreError::UnknownConversation)
    );
    let turned = store
        .change_setting(encrypt(alice, a1, open.conversation))
        .await
        .expect("the admin turns it on");
    assert_eq!(sorted(turned.recipients), vec![b1]);
}

/// Disappearing messages: a timer set in a conversation stamps each
/// event sent after it with its expiry; the sweep purges them then.
pub(crate) async fn disappearing_messages_go_at_their_expiry(store: Arc<dyn Store>) {
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
    let (people, m1) = cast_with_text(store, ["a1", "b1"]).await;
    let Cast(alice, _, conv, [a1, _]) = people;
    let timer = timer_of(&people);
    timer_set_once(store, &people).await;
    let media_id = sent_under_the_timer(store, &people, &m1).await;
    swept_at_expiry(store, &people, &media_id).await;

    let off = store.change_setting(timer(0, NOW + 30)).await.expect("off");
    assert_eq!(off.seq, 6);
    let m4 = append_ok(
        store,
        message_with(conv, alice, a1, "m4", plain("stays"), NOW + 31),
    )
    .await;
    assert_eq!(m4.expires_ms, None);
}

const HOUR_MS: i64 = 3_600_000;

/// Requests setting the disappearing timer of the cast's conversation, by
/// bob (b1): (seconds, `now_ms`).
fn timer_of(&Cast(_, bob, conv, [_, b1]): &Cast<2>) -> impl Fn(u32, UnixMillis) -> SettingRequest {
    move |secs, now_ms| SettingRequest {
        actor: bob,
        actor_device: b1,
        conversation: conv,
        setting: Setting::DisappearAfter(secs),
        now_ms,
    }
}

/// [`disappearing_messages_go_at_their_expiry`]: bob sets a one-hour timer
/// (a system event for alice), then again (nothing recorded).
async fn timer_set_once(store: &dyn Store, people: &Cast<2>) {
    let &Cast(alice, _, conv, [a1, _]) = people;
    let timer = timer_of(people);
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
}

/// [`disappearing_messages_go_at_their_expiry`], under the one-hour timer:
/// m2, bob's reaction to it and m3 with media carry their expiry, m1 (from
/// before the timer) none. Returns m3's media id.
async fn sent_under_the_timer(
    store: &dyn Store,
    &Cast(alice, bob, conv, [a1, b1]): &Cast<2>,
    m1: &MessageId,
) -> String {
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
    assert_eq!(stored(store, bob, conv, m1).await.expires_ms, None);
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
    media_id
}

/// [`disappearing_messages_go_at_their_expiry`]: the sweep at the expiry of
/// m3 (with the media `media_id`) purges what was sent under the timer.
async fn swept_at_expiry(
    store: &dyn Store,
    &Cast(_, bob, conv, [_, b1]): &Cast<2>,
    media_id: &str,
) {
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
            .media_for(bob, media_id)
            .await
            .expect("media")
            .is_none()
    );
    assert_eq!(
        shapes(&pending_all(store, b1).await),
        vec![Ev(conv, 1), Ex(conv, 3, 5)],
        "what bob's device never received is an expired range (the timer's event is its own)"
    );
}
