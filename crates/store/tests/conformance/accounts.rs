//! Accounts: creation and lookup, the operator's listing and password resets,
//! suspensions and invites, deletion.

use std::sync::Arc;

use missive_core::{AccountId, ConversationId, DeviceId, TokenHash, UnixMillis};
use missive_store::{
    AccountRecord, DELETED_PREFIX, NewAccount, NewInvites, Relation, Store, StoreError,
};

use crate::support::*;

/// 1. Accounts.
pub(crate) async fn accounts(store: Arc<dyn Store>) {
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

/// 2a'. What an operator sees and changes; numbered revocations.
pub(crate) async fn accounts_listed_passwords_reset_and_revocations_numbered(
    store: Arc<dyn Store>,
) {
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
pub(crate) async fn suspensions_revoke_devices_and_invites_are_single_use(store: Arc<dyn Store>) {
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
    let refused = store.create_device(device_request(alice, "a3", NOW)).await;
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

    invites_are_single_use(store).await;
}

/// [`suspensions_revoke_devices_and_invites_are_single_use`]: two invites
/// expiring at `NOW + 1_000`; carol and dave register with them.
async fn invites_are_single_use(store: &dyn Store) {
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
pub(crate) async fn deleted_accounts_free_their_name_and_keep_their_messages(
    store: Arc<dyn Store>,
) {
    // Goal: a deleted account loses its name (now `deleted.<id>`), its
    // devices (numbered revocations), its contacts and blocks both ways,
    // and any way to log in; what it sent stays, under the new name; the
    // old name can be registered again; an unknown account is None.
    let store = &*store;
    let (alice, bob, a1, conv) = related_with_a_text(store).await;
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
        store
            .related(Relation::Contact, bob)
            .await
            .expect("contacts"),
        Vec::<String>::new()
    );
    assert_eq!(
        store
            .related(Relation::Contact, alice)
            .await
            .expect("contacts"),
        Vec::<String>::new()
    );
    assert_eq!(
        store.related(Relation::Block, bob).await.expect("blocks"),
        Vec::<String>::new()
    );
    let refused = store
        .create_device(device_request(alice, "again", NOW))
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

/// alice (a1) and bob (b1), contacts both ways and bob blocking alice, with
/// alice's text in their conversation: (alice, bob, a1, conversation).
async fn related_with_a_text(
    store: &dyn Store,
) -> (AccountId, AccountId, DeviceId, ConversationId) {
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
            .set_relation(Relation::Contact, alice, bob, true, NOW)
            .await
            .expect("contact")
    );
    assert!(
        store
            .set_relation(Relation::Contact, bob, alice, true, NOW)
            .await
            .expect("contact")
    );
    assert!(
        store
            .set_relation(Relation::Block, bob, alice, true, NOW)
            .await
            .expect("block")
    );
    (alice, bob, a1, conv)
}
