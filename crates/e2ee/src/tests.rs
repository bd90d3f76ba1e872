//! The vault's own tests: sharing, rotation, tampering and impersonation.
use super::*;

/// `vault`'s device as others address it.
fn device(vault: &Vault) -> Device {
    Device {
        user: vault.user.clone(),
        device_id: vault.device_id,
        identity: vault.identity(),
    }
}

/// `from` seals `text` in `conversation` for `to`'s device alone, and
/// `to` takes the room key's share (a session already open).
fn sealed_for(from: &mut Vault, to: &mut Vault, conversation: i64, text: &str) -> Sealed {
    let sealed = from
        .encrypt(conversation, &[device(to)], text)
        .expect("encrypt");
    to.receive_share(&from.user, from.device_id, &sealed.shares[0].body)
        .expect("share");
    sealed
}

/// Opens `from`'s session with `to` from one of `to`'s published keys.
fn connect(from: &mut Vault, to: &mut Vault) {
    let key = to.new_one_time_keys(1).remove(0);
    to.mark_published();
    from.start_session(&to.identity(), &key).expect("session");
}

#[test]
fn members_read_each_message_and_a_removed_member_cannot_read_the_next() {
    // Goal: a room key reaches each member device over Olm and opens
    // the Megolm messages; removing a member makes the next message
    // use a new session whose key the removed member never gets, so
    // its own keys cannot open it; everything survives a save/load.
    let mut alice = Vault::new("alice", 1);
    let mut bob = Vault::new("bob", 2);
    let mut carol = Vault::new("carol", 3);
    connect(&mut alice, &mut bob);
    connect(&mut alice, &mut carol);
    let both = [device(&bob), device(&carol)];
    let first = alice.encrypt(7, &both, "hello both").expect("encrypt");
    assert_eq!(first.shares.len(), 2);
    let again = alice
        .encrypt(7, &both, "before the shares went")
        .expect("encrypt");
    assert_eq!(again.shares.len(), 2, "shared again until delivered");
    alice.mark_shared(7, &first.shares);
    for share in &first.shares {
        let vault = if share.user == "bob" {
            &mut bob
        } else {
            &mut carol
        };
        vault.receive_share("alice", 1, &share.body).expect("share");
    }
    assert!(!first.ciphertext.contains("hello"));
    assert_eq!(
        bob.decrypt(7, "alice", 1, &first.ciphertext).as_deref(),
        Ok("hello both")
    );
    let mut carol = Vault::from_json(&carol.to_json().expect("save")).expect("reload");
    assert_eq!(
        carol.decrypt(7, "alice", 1, &first.ciphertext).as_deref(),
        Ok("hello both")
    );
    assert_eq!(
        alice.decrypt(7, "alice", 1, &first.ciphertext).as_deref(),
        Ok("hello both")
    );

    let second = alice.encrypt(7, &both, "again").expect("encrypt");
    assert!(second.shares.is_empty(), "the key was shared already");

    let only_bob = [device(&bob)];
    let third = alice
        .encrypt(7, &only_bob, "carol is gone")
        .expect("encrypt");
    assert_eq!(third.shares.len(), 1, "a new session for bob");
    alice.mark_shared(7, &third.shares);
    bob.receive_share("alice", 1, &third.shares[0].body)
        .expect("share");
    assert_eq!(
        bob.decrypt(7, "alice", 1, &third.ciphertext).as_deref(),
        Ok("carol is gone")
    );
    assert_eq!(
        carol.decrypt(7, "alice", 1, &third.ciphertext),
        Err(DecryptError::NoKey)
    );
}

#[test]
fn tampering_forgery_and_misuse_are_rejected() {
    // Goal: an altered ciphertext is `Tampered`; a session used by
    // another sender or in another conversation is `WrongSender`; a
    // share for another device, or a key with a forged signature, is
    // refused.
    let mut alice = Vault::new("alice", 1);
    let mut bob = Vault::new("bob", 2);
    connect(&mut alice, &mut bob);
    let sealed = sealed_for(&mut alice, &mut bob, 7, "secret");

    let mut envelope: serde_json::Value = serde_json::from_str(&sealed.ciphertext).unwrap();
    let mut ciphertext = envelope["ciphertext"].as_str().unwrap().to_owned();
    let flipped = if ciphertext.as_bytes()[20] == b'A' {
        "B"
    } else {
        "A"
    };
    ciphertext.replace_range(20..21, flipped);
    envelope["ciphertext"] = ciphertext.into();
    assert_eq!(
        bob.decrypt(7, "alice", 1, &envelope.to_string()),
        Err(DecryptError::Tampered)
    );
    assert_eq!(
        bob.decrypt(7, "mallory", 9, &sealed.ciphertext),
        Err(DecryptError::WrongSender)
    );
    assert_eq!(
        bob.decrypt(7, "alice", 1, &sealed.ciphertext).as_deref(),
        Ok("secret")
    );
    assert_eq!(
        bob.decrypt(8, "alice", 1, &sealed.ciphertext),
        Err(DecryptError::WrongSender),
        "pinned to its conversation"
    );

    let mut carol = Vault::new("carol", 3);
    connect(&mut alice, &mut carol);
    let for_carol = alice.encrypt(9, &[device(&carol)], "x").expect("encrypt");
    assert!(matches!(
        bob.receive_share("alice", 1, &for_carol.shares[0].body),
        Err(E2eeError::BadShare(_))
    ));

    // A share whose session key its device did not sign is refused.
    let mut unsigned: serde_json::Value = serde_json::from_str(&for_carol.shares[0].body).unwrap();
    unsigned["sender_signature"] = bob.account.sign(b"other").to_base64().into();
    assert!(matches!(
        carol.receive_share("alice", 1, &unsigned.to_string()),
        Err(E2eeError::BadShare(_))
    ));

    let mut forged = carol.new_one_time_keys(1).remove(0);
    forged.signature = bob.account.sign(forged.key.as_bytes()).to_base64();
    assert!(matches!(
        alice.start_session(&carol.identity(), &forged),
        Err(E2eeError::BadKey(_))
    ));
}

#[test]
fn a_verified_device_is_not_impersonated_by_another_session() {
    // Goal: a room key that claims to come from a device the user
    // verified, but through an Olm session of another key (what a
    // malicious server would open), does not open messages: before
    // verification it would (trust on first use), after it is refused.
    let mut alice = Vault::new("alice", 1);
    let mut bob = Vault::new("bob", 2);
    let mut impostor = Vault::new("alice", 1);
    connect(&mut impostor, &mut bob);
    // An unverified sender is taken on first use.
    let forged = sealed_for(&mut impostor, &mut bob, 7, "words alice never said");
    assert_eq!(
        bob.decrypt(7, "alice", 1, &forged.ciphertext).as_deref(),
        Ok("words alice never said")
    );
    bob.mark_verified("alice", 1, &alice.identity().ed25519);
    assert_eq!(
        bob.decrypt(7, "alice", 1, &forged.ciphertext),
        Err(DecryptError::WrongSender)
    );
    connect(&mut alice, &mut bob);
    let real = sealed_for(&mut alice, &mut bob, 7, "really alice");
    assert_eq!(
        bob.decrypt(7, "alice", 1, &real.ciphertext).as_deref(),
        Ok("really alice")
    );
}

#[test]
fn a_verified_new_device_of_the_same_user_gets_the_old_keys_and_no_one_else_does() {
    // Goal: forwarded keys let a new device read what its account could
    // read before it existed; they go only to a verified device of the
    // same user and are taken only from one.
    let mut old = Vault::new("alice", 1);
    let mut new = Vault::new("alice", 2);
    let mut bob = Vault::new("bob", 3);
    connect(&mut bob, &mut old);
    let sealed = sealed_for(&mut bob, &mut old, 7, "before the new device");
    assert_eq!(
        new.decrypt(7, "bob", 3, &sealed.ciphertext),
        Err(DecryptError::NoKey)
    );

    connect(&mut old, &mut new);
    let to_new = device(&new);
    assert!(
        old.forward_keys(&to_new).is_err(),
        "not to a device the user has not verified"
    );
    old.mark_verified("alice", 2, &new.identity().ed25519);
    let shares = old.forward_keys(&to_new).expect("forward");
    assert!(
        matches!(
            new.receive_share("alice", 1, &shares[0].body),
            Err(E2eeError::BadShare(_))
        ),
        "not from a device this one has not verified"
    );
    new.mark_verified("alice", 1, &old.identity().ed25519);
    let shares = old.forward_keys(&to_new).expect("forward");
    new.receive_share("alice", 1, &shares[0].body)
        .expect("forwarded keys");
    assert_eq!(
        new.decrypt(7, "bob", 3, &sealed.ciphertext).as_deref(),
        Ok("before the new device")
    );
    assert!(
        bob.forward_keys(&device(&new)).is_err(),
        "never to another user's device"
    );
}
