//! Through the CLI: what the store holds of encrypted conversations, on one
//! server and on a cluster, and disappearing messages.

use super::*;

/// Reads the message at `seq` of `group` from history (as `token`) and
/// asserts that the keys the CLI saved for `profile` cannot open it;
/// returns it.
async fn assert_unreadable_with_keys_of(
    api: &missive_client::Api,
    token: &str,
    (group, seq): (i64, i64),
    config_dir: &std::path::Path,
    profile: &str,
) -> missive_proto::rest::HistoryMessage {
    let history = api
        .history(token, group, "limit=50")
        .await
        .expect("history");
    let sealed = history
        .messages
        .into_iter()
        .find(|message| message.seq == seq)
        .expect("in history");
    let keys = config_dir.join(format!("profiles/{profile}.keys.json"));
    let mut vault =
        missive_e2ee::Vault::from_json(&std::fs::read_to_string(keys).expect("saved keys"))
            .expect("vault");
    assert_eq!(
        vault.decrypt(group, "alice", sealed.from_device, &sealed.text),
        Err(missive_e2ee::DecryptError::NoKey),
        "{profile}'s own keys open the message"
    );
    sealed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_encrypts_end_to_end_and_the_store_holds_no_plaintext() {
    // Goal: through the real binary, a device's keys are made and
    // published at login; a message into an encrypted group (and a first
    // encrypted message to a user) reaches the other members' devices
    // decrypted, while no file of the server's data directory (SQLite,
    // its WAL, media) holds the plaintext; after a member is removed the
    // next message is under a new key that the removed member's own saved
    // keys cannot open; a tampered ciphertext is shown as rejected, not as
    // text.
    let (data_dir, config_dir, server) = server_and_config_dir();
    let url = server.url.clone();
    let dir = config_dir.path().to_owned();
    let (group, alice_token) = {
        let (dir, url) = (dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            register_and_check_the_saved_keys(&dir, &url);
            let group = an_encrypted_group_and_a_direct_message_reach_their_readers(&dir, &url);
            (group, saved_token(&dir, "alice"))
        })
        .await
        .expect("cli steps")
    };
    the_store_holds_no_plaintext(data_dir.path());

    // Carol is removed: the next message uses a key she never gets.
    let api = missive_client::Api::new(&url);
    let bob_view = {
        let (dir, url) = (dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || carol_is_removed_and_alice_sends(&dir, &url, group))
            .await
            .expect("cli steps")
    };
    let after = bob_view
        .iter()
        .find(|frame| frame["kind"] == "encrypted")
        .expect("bob got the message");
    assert_eq!(after["text"], "after carol left");
    let seq = after["seq"].as_i64().expect("seq");
    let sealed =
        assert_unreadable_with_keys_of(&api, &alice_token, (group, seq), &dir, "carol").await;
    a_tampered_ciphertext_is_rejected_visibly(&api, &alice_token, group, &sealed.text, dir, url)
        .await;
}

/// alice, bob and carol register and log in through the CLI; alice's
/// device keys are saved at login, readable by her only.
fn register_and_check_the_saved_keys(dir: &std::path::Path, url: &str) {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
    for user in ["alice", "bob", "carol"] {
        ok(user, &["register", user]);
        ok(user, &["login", user]);
    }
    let keys: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("profiles/alice.keys.json")).expect("keys"),
    )
    .expect("json");
    assert_eq!(
        keys["user"], "alice",
        "the device's keys are saved at login"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("profiles/alice.keys.json"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// alice creates an encrypted group and sends into it (bob reads over a
/// WebSocket, carol by long-polling), then an encrypted first message to
/// bob and a plain one to carol. Returns the group.
fn an_encrypted_group_and_a_direct_message_reach_their_readers(
    dir: &std::path::Path,
    url: &str,
) -> i64 {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
    let created: serde_json::Value =
        serde_json::from_str(&ok("alice", &encrypted_group_of_bob_and_carol("sealed")))
            .expect("group json");
    assert_eq!(created["encrypted"], true);
    let group = created["conversation"].as_i64().expect("id");
    ok(
        "alice",
        &[
            "send",
            "--group",
            &group.to_string(),
            "MARKER-7f3a group secret",
        ],
    );
    // bob over a WebSocket, carol by long-polling.
    for (reader, transport) in [("bob", None), ("carol", Some("--poll"))] {
        let mut args = vec!["listen", "--count", "2", "--idle-secs", "5"];
        args.extend(transport);
        let got = json_lines(&ok(reader, &args));
        let message = got
            .iter()
            .find(|frame| frame["kind"] == "encrypted")
            .unwrap_or_else(|| panic!("{reader} got {got:?}"));
        assert_eq!(message["text"], "MARKER-7f3a group secret", "{reader}");
        assert_eq!(message["decrypted"], true);
    }
    ok(
        "alice",
        &["send", "bob", "MARKER-1c9e direct secret", "--encrypted"],
    );
    // The control: a plain message is found where the others are not.
    ok("alice", &["send", "carol", "PLAIN-MARKER-55 in the clear"]);
    let got = json_lines(&ok("bob", &["listen", "--count", "1", "--idle-secs", "5"]));
    assert_eq!(got[0]["text"], "MARKER-1c9e direct secret");
    assert_eq!(got[0]["decrypted"], true);
    group
}

/// The control, a plain text, is found in the server's files; the
/// encrypted ones are not.
fn the_store_holds_no_plaintext(data_dir: &std::path::Path) {
    assert!(
        !files_containing(data_dir, b"PLAIN-MARKER-55").is_empty(),
        "the search finds a plain text in the server's files"
    );
    for marker in [&b"MARKER-7f3a"[..], b"MARKER-1c9e"] {
        assert_eq!(
            files_containing(data_dir, marker),
            Vec::<std::path::PathBuf>::new(),
            "plaintext in the server's files"
        );
    }
}

/// alice removes carol from the group and sends into it; returns what
/// bob's listen prints.
fn carol_is_removed_and_alice_sends(
    dir: &std::path::Path,
    url: &str,
    group: i64,
) -> Vec<serde_json::Value> {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
    ok("alice", &["group", "remove", &group.to_string(), "carol"]);
    ok(
        "alice",
        &["send", "--group", &group.to_string(), "after carol left"],
    );
    json_lines(&ok("bob", &["listen", "--count", "2", "--idle-secs", "5"]))
}

/// A tampered copy of a real ciphertext is rejected, visibly.
async fn a_tampered_ciphertext_is_rejected_visibly(
    api: &missive_client::Api,
    alice_token: &str,
    group: i64,
    sealed_text: &str,
    dir: std::path::PathBuf,
    url: String,
) {
    let mut envelope: serde_json::Value = serde_json::from_str(sealed_text).expect("envelope");
    let mut body = envelope["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_owned();
    let flipped = if body.as_bytes()[30] == b'A' {
        "B"
    } else {
        "A"
    };
    body.replace_range(30..31, flipped);
    envelope["ciphertext"] = body.into();
    let mut alice = missive_client::Connection::connect(&api.ws_url(), alice_token)
        .await
        .expect("connect");
    alice
        .send_encrypted(
            Recipient::Conversation(group),
            "forged-1",
            &envelope.to_string(),
            Vec::new(),
        )
        .await
        .expect("the server stores what it cannot read");
    let got = tokio::task::spawn_blocking(move || {
        json_lines(&cli_ok(
            &dir,
            &url,
            "bob",
            &["listen", "--count", "1", "--idle-secs", "5"],
        ))
    })
    .await
    .expect("listen");
    assert_eq!(
        (got[0]["text"].as_str(), got[0]["decrypt_error"].as_str()),
        (Some(""), Some("tampered"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disappearing_messages_are_purged_at_their_expiry() {
    // Goal: a member sets a conversation's timer (a frame or REST; only
    // the offered values; a system event tells the others, the list shows
    // it); a message sent under it carries `expires_ms`; at that time the
    // sweeper purges it whatever the cursors: history no longer has it,
    // its media is no longer shared (and its bytes go once unshared for
    // the grace period); a message sent before the timer stays.
    let server = TestServer::start_with(|config| config.delivery.media_grace_secs = 60).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut a = server.connect(&alice).await;
    let first = a
        .send_text("bob", "p0", "before the timer")
        .await
        .expect("sent");
    let ServerFrame::Sent { conversation, .. } = first else {
        panic!("expected sent, got {first:?}");
    };
    let mut b = server.connect(&bob).await;
    queued(&mut b, 1).await;
    bob_sets_an_hour(&server, &alice, [&mut a, &mut b], conversation).await;
    let photo =
        a_photo_is_sent_under_the_timer(&server, &alice, &bob, [&mut a, &mut b], conversation)
            .await;
    the_sweeper_purges_it_at_its_expiry(&server, &bob, conversation, &photo).await;
}

/// bob sets the timer: an odd value is refused, an hour is told to alice
/// and listed.
async fn bob_sets_an_hour(
    server: &TestServer,
    alice: &str,
    [a, b]: [&mut missive_client::Connection; 2],
    conversation: i64,
) {
    let odd = b
        .call(|id| ClientFrame::SetTimer {
            id,
            conversation,
            secs: 1_234,
        })
        .await;
    assert_eq!(refused_code(odd), "invalid_field");
    b.call(|id| ClientFrame::SetTimer {
        id,
        conversation,
        secs: 3_600,
    })
    .await
    .expect("bob sets an hour");
    let told = queued(a, 1).await;
    assert!(
        matches!(&told[..], [ServerFrame::Message { kind: MessageKind::System, event: Some(event), .. }]
            if event["action"] == "timer" && event["secs"] == 3_600),
        "{told:?}"
    );
    let listed = server.api.conversations(alice).await.expect("list");
    assert_eq!(listed.conversations[0].disappear_secs, 3_600);
}

/// alice sends a photo under the timer: it carries `expires_ms` and bob
/// can download the photo. Returns the upload.
async fn a_photo_is_sent_under_the_timer(
    server: &TestServer,
    alice: &str,
    bob: &str,
    [a, b]: [&mut missive_client::Connection; 2],
    conversation: i64,
) -> missive_proto::rest::MediaInfo {
    let photo = server
        .api
        .upload_media(alice, png(8, 8))
        .await
        .expect("upload");
    assert_eq!(files_under(&server.data_dir.path().join("media")), 2);
    a.call(|id| ClientFrame::Send {
        id,
        to: None,
        conversation: Some(conversation),
        client_msg_id: "p1".into(),
        text: "gone in an hour".into(),
        reply_to: None,
        media: vec![photo.media_id.clone()],
        encrypted: false,
    })
    .await
    .expect("sent under the timer");
    let got = queued(b, 1).await;
    let [
        ServerFrame::Message {
            ts_ms, expires_ms, ..
        },
    ] = &got[..]
    else {
        panic!("expected the message, got {got:?}");
    };
    assert_eq!(*expires_ms, Some(ts_ms + 3_600_000));
    assert!(
        server
            .api
            .download_media(bob, &photo.media_id)
            .await
            .is_ok()
    );
    photo
}

/// Nothing goes before its time; at it, the message and its media go.
async fn the_sweeper_purges_it_at_its_expiry(
    server: &TestServer,
    bob: &str,
    conversation: i64,
    photo: &missive_proto::rest::MediaInfo,
) {
    server.clock.advance_ms(3_600_000 - 1_000);
    server.app.sweep_now().await.expect("sweep");
    assert_eq!(
        server
            .api
            .history(bob, conversation, "limit=50")
            .await
            .expect("history")
            .messages
            .len(),
        3,
        "nothing goes before its time"
    );
    server.clock.advance_ms(2_000);
    server.app.sweep_now().await.expect("sweep");
    let texts: Vec<String> = server
        .api
        .history(bob, conversation, "limit=50")
        .await
        .expect("history")
        .messages
        .into_iter()
        .map(|message| message.text)
        .collect();
    assert_eq!(
        texts,
        vec!["".to_owned(), "before the timer".to_owned()],
        "the timer's event and p0"
    );
    assert_eq!(
        refused_code(server.api.download_media(bob, &photo.media_id).await),
        "unknown_media"
    );
    // Uploaded more than the grace ago and no longer shared: the bytes
    // (the photo and its thumbnail) went with the same sweep.
    assert_eq!(files_under(&server.data_dir.path().join("media")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_database_holds_no_plaintext_of_an_encrypted_conversation() {
    // Goal: on PostgreSQL too, a message sent through the CLI into an
    // encrypted group is nowhere in a dump of the database, while a plain
    // control message is; a device whose account revoked it gets no key
    // for what is sent after: its own saved keys cannot open it.
    use common::cluster::{Cluster, Database, NATS, services_available};
    if !services_available().await {
        return;
    }
    let database = Database::create().await;
    let cluster = Cluster::start(1, &database.url(), NATS, &[]);
    let url = cluster.urls[0].clone();
    let config_dir = tempfile::tempdir().unwrap();
    let dir = config_dir.path().to_owned();
    let (group, second_device, alice_token) = {
        let (dir, url) = (dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            an_encrypted_group_read_by_both_of_bobs_devices(&dir, &url)
        })
        .await
        .expect("cli steps")
    };
    the_dump_holds_no_plaintext(&database);

    // bob revokes his second device; alice's next message is under a key
    // that device never gets.
    let after = {
        let (dir, url) = (dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let ok = |profile: &str, args: &[&str]| cli_ok(&dir, &url, profile, args);
            ok("bob", &["revoke", &second_device.to_string()]);
            ok(
                "alice",
                &[
                    "send",
                    "--group",
                    &group.to_string(),
                    "after the revocation",
                ],
            );
            json_lines(&ok("bob", &["listen", "--count", "1", "--idle-secs", "5"]))
        })
        .await
        .expect("cli steps")
    };
    assert_eq!(after[0]["text"], "after the revocation");
    let seq = after[0]["seq"].as_i64().expect("seq");
    assert_unreadable_with_keys_of(&cluster.api(0), &alice_token, (group, seq), &dir, "bob2").await;
    drop(cluster);
    database.drop_now().await;
}

/// alice and bob (with a second device, bob2) register; alice sends into
/// an encrypted group with bob and a plain text to him; both of bob's
/// devices read the group's text. Returns the group, bob2's device id and
/// alice's token.
fn an_encrypted_group_read_by_both_of_bobs_devices(
    dir: &std::path::Path,
    url: &str,
) -> (i64, i64, String) {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
    for user in ["alice", "bob"] {
        ok(user, &["register", user]);
        ok(user, &["login", user]);
    }
    let second: serde_json::Value =
        serde_json::from_str(&ok("bob2", &["login", "bob"])).expect("json");
    let created: serde_json::Value = serde_json::from_str(&ok(
        "alice",
        &["group", "create", "vault", "--member", "bob", "--encrypted"],
    ))
    .expect("json");
    let group = created["conversation"].as_i64().expect("id");
    ok(
        "alice",
        &["send", "--group", &group.to_string(), "MARKER-pg41 secret"],
    );
    ok("alice", &["send", "bob", "PLAIN-MARKER-pg77 in the clear"]);
    for device in ["bob", "bob2"] {
        let got = json_lines(&ok(device, &["listen", "--count", "3", "--idle-secs", "5"]));
        assert!(
            got.iter()
                .any(|frame| frame["text"] == "MARKER-pg41 secret" && frame["decrypted"] == true),
            "{device}: {got:?}"
        );
    }
    (
        group,
        second["device_id"].as_i64().expect("device id"),
        saved_token(dir, "alice"),
    )
}

/// A dump of the database shows the plain text, not the encrypted one.
fn the_dump_holds_no_plaintext(database: &cluster::Database) {
    let dump = std::process::Command::new("pg_dump")
        .arg(database.url())
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("PLAIN-MARKER-pg77"),
        "the dump shows plain texts"
    );
    assert!(!dump.contains("MARKER-pg41"), "plaintext in the database");
}
