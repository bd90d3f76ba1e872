//! End-to-end encrypted conversations over the network (issue 22): how a
//! conversation becomes encrypted (a first encrypted message, a group
//! created so, or switching it on), that the server then takes only
//! ciphertext and hands it on untouched, that encrypted media is stored
//! unsniffed with no thumbnail, and the operator's `e2ee` policy.

mod common;

use common::*;
use missive_client::Recipient;
use missive_proto::rest::CreateGroupRequest;
use missive_proto::{ClientFrame, MessageKind, ServerFrame};
use missive_server::config::E2eePolicy;

fn plain_send(
    conversation: i64,
    client_msg_id: &str,
) -> impl FnOnce(Option<String>) -> ClientFrame {
    let client_msg_id = client_msg_id.to_owned();
    move |id| ClientFrame::Send {
        id,
        to: None,
        conversation: Some(conversation),
        client_msg_id,
        text: "plain words".into(),
        reply_to: None,
        media: Vec::new(),
        encrypted: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_conversation_carries_only_ciphertext_untouched() {
    // Goal: a first encrypted message to a user creates an encrypted 1:1;
    // its ciphertext reaches the recipient byte for byte as kind
    // `encrypted`; the list says `encrypted`; plain sends and replies
    // beside the ciphertext are refused with their codes; media uploaded
    // encrypted is stored as opaque bytes (no sniffing, no thumbnail, no
    // filename) and only such media rides an encrypted message; a plain
    // 1:1 is switched on by either member (system event `encrypted`), a
    // group by an admin only, and a group may be created encrypted.
    let server = TestServer::start().await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mut a = server.connect(&alice).await;

    let ciphertext = "AwgAEiBhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NQ+/=";
    let sent = a
        .send_encrypted(Recipient::User("bob"), "e1", ciphertext, Vec::new())
        .await
        .expect("an encrypted first message");
    let ServerFrame::Sent { conversation, .. } = sent else {
        panic!("expected sent, got {sent:?}");
    };
    let mut b = server.connect(&bob).await;
    match &queued(&mut b, 1).await[..] {
        [
            ServerFrame::Message {
                kind: MessageKind::Encrypted,
                text,
                ..
            },
        ] => assert_eq!(text, ciphertext),
        other => panic!("expected the ciphertext, got {other:?}"),
    }
    let listed = api.conversations(&bob).await.expect("list");
    assert!(listed.conversations[0].encrypted);

    assert_eq!(
        refused_code(a.call(plain_send(conversation, "p1")).await),
        "conversation_encrypted"
    );
    let reply = a
        .call(|id| ClientFrame::Send {
            id,
            to: None,
            conversation: Some(conversation),
            client_msg_id: "e2".into(),
            text: ciphertext.into(),
            reply_to: Some("0000000000000000000000000000".into()),
            media: Vec::new(),
            encrypted: true,
        })
        .await;
    assert_eq!(refused_code(reply), "invalid_field");
    let control = a
        .send_encrypted(
            Recipient::Conversation(conversation),
            "e3",
            "not\u{7}ascii",
            Vec::new(),
        )
        .await;
    assert_eq!(refused_code(control), "invalid_field");

    // Media: encrypted bytes stay opaque, even when they look like a PNG.
    let sealed = api
        .upload_encrypted_media(&alice, png(8, 8))
        .await
        .expect("encrypted upload");
    assert_eq!(
        (sealed.content_type.as_str(), sealed.thumbnail),
        ("application/octet-stream", false)
    );
    let plain_media = api
        .upload_media(&alice, png(8, 8))
        .await
        .expect("plain upload");
    let named = reqwest::Client::new()
        .post(format!(
            "{}/v1/media?encrypted=true&filename=a.txt",
            server.url()
        ))
        .bearer_auth(&alice)
        .body(vec![1, 2, 3])
        .send()
        .await
        .expect("upload");
    assert_eq!(named.status(), 400, "a filename beside encrypted bytes");
    let refused = a
        .send_encrypted(
            Recipient::Conversation(conversation),
            "e4",
            ciphertext,
            vec![plain_media.media_id],
        )
        .await;
    assert_eq!(refused_code(refused), "unknown_media");
    a.send_encrypted(
        Recipient::Conversation(conversation),
        "e5",
        ciphertext,
        vec![sealed.media_id.clone()],
    )
    .await
    .expect("ciphertext with encrypted media");
    match &queued(&mut b, 1).await[..] {
        [ServerFrame::Message { kind, media, .. }] => {
            assert_eq!(*kind, MessageKind::Encrypted);
            assert_eq!(media[0].media_id, sealed.media_id);
        }
        other => panic!("expected the ciphertext with media, got {other:?}"),
    }

    // A plain 1:1 is switched on by either member, for good.
    let mut c = server.connect(&carol).await;
    let plain = c.send_text("bob", "c1", "hi bob").await.expect("plain");
    let ServerFrame::Sent {
        conversation: bc, ..
    } = plain
    else {
        panic!("expected sent");
    };
    assert_eq!(
        refused_code(
            c.send_encrypted(Recipient::Conversation(bc), "c2", ciphertext, Vec::new())
                .await
        ),
        "conversation_not_encrypted"
    );
    api.encrypt_conversation(&bob, bc)
        .await
        .expect("bob turns it on");
    let on = queued(&mut c, 1).await;
    assert!(
        matches!(&on[..], [ServerFrame::Message { kind: MessageKind::System, event: Some(event), .. }]
            if event["action"] == "encrypted" && event["actor"] == "bob"),
        "{on:?}"
    );
    assert_eq!(
        refused_code(c.call(plain_send(bc, "c3")).await),
        "conversation_encrypted"
    );
    c.send_encrypted(Recipient::Conversation(bc), "c4", ciphertext, Vec::new())
        .await
        .expect("ciphertext once on");

    // Groups: created encrypted, or switched on by an admin only.
    let sealed_group = api
        .create_group_as(
            &alice,
            &CreateGroupRequest {
                name: "sealed".into(),
                members: vec!["bob".into()],
                encrypted: Some(true),
            },
        )
        .await
        .expect("an encrypted group");
    assert!(sealed_group.encrypted);
    let open = api
        .create_group(&alice, "open", &["bob"])
        .await
        .expect("a plain group");
    assert!(!open.encrypted);
    let by_member = b
        .call(|id| ClientFrame::Encrypt {
            id,
            conversation: open.conversation,
        })
        .await;
    assert_eq!(refused_code(by_member), "not_admin");
    assert_eq!(
        refused_code(api.encrypt_conversation(&carol, open.conversation).await),
        "unknown_conversation"
    );
    let by_admin = a
        .call(|id| ClientFrame::Encrypt {
            id,
            conversation: open.conversation,
        })
        .await
        .expect("the admin turns it on");
    assert!(matches!(by_admin, ServerFrame::Ok { .. }));
    assert!(
        api.group(&bob, open.conversation)
            .await
            .expect("info")
            .encrypted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_policy_requires_or_forbids_encryption() {
    // Goal: under `e2ee = "required"` plaintext is refused everywhere
    // (`encryption_required`, nothing created) and a group is encrypted
    // unless it asks not to be, which is refused too; under `off`
    // ciphertext, encrypted groups and switching on are refused
    // (`encryption_disabled`) and plain messages flow.
    let required = TestServer::start_with(|config| config.e2ee = E2eePolicy::Required).await;
    let alice = required.user("alice").await;
    let bob = required.user("bob").await;
    let mut a = required.connect(&alice).await;
    assert_eq!(
        refused_code(a.send_text("bob", "p1", "plain").await),
        "encryption_required"
    );
    assert!(
        required
            .api
            .conversations(&bob)
            .await
            .expect("list")
            .conversations
            .is_empty(),
        "a refused send created nothing"
    );
    a.send_encrypted(Recipient::User("bob"), "e1", "AAAA", Vec::new())
        .await
        .expect("ciphertext");
    let group = required
        .api
        .create_group(&alice, "team", &["bob"])
        .await
        .expect("a group");
    assert!(group.encrypted, "encrypted by default");
    let plain_group = required
        .api
        .create_group_as(
            &alice,
            &CreateGroupRequest {
                name: "open".into(),
                members: Vec::new(),
                encrypted: Some(false),
            },
        )
        .await;
    assert_eq!(refused_code(plain_group), "encryption_required");

    let off = TestServer::start_with(|config| config.e2ee = E2eePolicy::Off).await;
    let alice = off.user("alice").await;
    off.user("bob").await;
    let mut a = off.connect(&alice).await;
    assert_eq!(
        refused_code(
            a.send_encrypted(Recipient::User("bob"), "e1", "AAAA", Vec::new())
                .await
        ),
        "encryption_disabled"
    );
    let plain = a.send_text("bob", "p1", "plain").await.expect("plain");
    let ServerFrame::Sent { conversation, .. } = plain else {
        panic!("expected sent");
    };
    assert_eq!(
        refused_code(off.api.encrypt_conversation(&alice, conversation).await),
        "encryption_disabled"
    );
    let sealed_group = off
        .api
        .create_group_as(
            &alice,
            &CreateGroupRequest {
                name: "sealed".into(),
                members: Vec::new(),
                encrypted: Some(true),
            },
        )
        .await;
    assert_eq!(refused_code(sealed_group), "encryption_disabled");
}

/// Runs the CLI as `profile` and returns its stdout; panics unless it
/// exits 0.
fn cli_ok(config_dir: &std::path::Path, url: &str, profile: &str, args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.extend(["--profile", profile]);
    let (code, stdout, stderr) = cli(config_dir, url, &args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    stdout
}

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
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let dir = config_dir.path().to_owned();
    let (group, alice_token) = {
        let (dir, url) = (dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let ok = |profile: &str, args: &[&str]| cli_ok(&dir, &url, profile, args);
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
            let created: serde_json::Value = serde_json::from_str(&ok(
                "alice",
                &[
                    "group",
                    "create",
                    "sealed",
                    "--member",
                    "bob",
                    "--member",
                    "carol",
                    "--encrypted",
                ],
            ))
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
            (group, saved_token(&dir, "alice"))
        })
        .await
        .expect("cli steps")
    };
    assert!(
        !files_containing(data_dir.path(), b"PLAIN-MARKER-55").is_empty(),
        "the search finds a plain text in the server's files"
    );
    for marker in [&b"MARKER-7f3a"[..], b"MARKER-1c9e"] {
        assert_eq!(
            files_containing(data_dir.path(), marker),
            Vec::<std::path::PathBuf>::new(),
            "plaintext in the server's files"
        );
    }

    // Carol is removed: the next message uses a key she never gets.
    let api = missive_client::Api::new(&url);
    let bob_view = {
        let (dir, url) = (dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let ok = |profile: &str, args: &[&str]| cli_ok(&dir, &url, profile, args);
            ok("alice", &["group", "remove", &group.to_string(), "carol"]);
            ok(
                "alice",
                &["send", "--group", &group.to_string(), "after carol left"],
            );
            json_lines(&ok("bob", &["listen", "--count", "2", "--idle-secs", "5"]))
        })
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

    // A tampered copy of a real ciphertext is rejected, visibly.
    let mut envelope: serde_json::Value = serde_json::from_str(&sealed.text).expect("envelope");
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
    let mut alice = missive_client::Connection::connect(&api.ws_url(), &alice_token)
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
    let told = queued(&mut a, 1).await;
    assert!(
        matches!(&told[..], [ServerFrame::Message { kind: MessageKind::System, event: Some(event), .. }]
            if event["action"] == "timer" && event["secs"] == 3_600),
        "{told:?}"
    );
    let listed = server.api.conversations(&alice).await.expect("list");
    assert_eq!(listed.conversations[0].disappear_secs, 3_600);

    let photo = server
        .api
        .upload_media(&alice, png(8, 8))
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
    let got = queued(&mut b, 1).await;
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
            .download_media(&bob, &photo.media_id)
            .await
            .is_ok()
    );

    server.clock.advance_ms(3_600_000 - 1_000);
    server.app.sweep_now().await.expect("sweep");
    assert_eq!(
        server
            .api
            .history(&bob, conversation, "limit=50")
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
        .history(&bob, conversation, "limit=50")
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
        refused_code(server.api.download_media(&bob, &photo.media_id).await),
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
            let ok = |profile: &str, args: &[&str]| cli_ok(&dir, &url, profile, args);
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
                        .any(|frame| frame["text"] == "MARKER-pg41 secret"
                            && frame["decrypted"] == true),
                    "{device}: {got:?}"
                );
            }
            (
                group,
                second["device_id"].as_i64().expect("device id"),
                saved_token(&dir, "alice"),
            )
        })
        .await
        .expect("cli steps")
    };
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

/// `missive verify …` as `profile`, answering `y` to its question.
fn verify_saying_yes(
    config_dir: &std::path::Path,
    url: &str,
    profile: &str,
    args: &[&str],
) -> std::process::Child {
    let mut child = std::process::Command::new(BIN)
        .arg("verify")
        .args(args)
        .args(["--timeout-secs", "30", "--profile", profile])
        .env("MISSIVE_CONFIG_DIR", config_dir)
        .env("MISSIVE_SERVER", url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start missive verify");
    // Read once the codes are shown; written now, it waits in the pipe.
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"y\n").expect("answer");
    child
}

/// The first encrypted message `profile` can list, and whether the keys it
/// saved open it (its plaintext, or why not).
async fn open_with_saved_keys(
    url: &str,
    config_dir: &std::path::Path,
    profile: &str,
) -> Result<String, missive_e2ee::DecryptError> {
    let api = missive_client::Api::new(url);
    let token = saved_token(config_dir, profile);
    let list = api.conversations(&token).await.expect("conversations");
    let conversation = list.conversations[0].conversation;
    let history = api
        .history(&token, conversation, "limit=10")
        .await
        .expect("history");
    let sealed = history
        .messages
        .iter()
        .find(|message| message.kind == missive_proto::MessageKind::Encrypted)
        .expect("an encrypted message");
    let keys = config_dir.join(format!("profiles/{profile}.keys.json"));
    let mut vault =
        missive_e2ee::Vault::from_json(&std::fs::read_to_string(keys).expect("saved keys"))
            .expect("vault");
    vault.decrypt(conversation, &sealed.from, sealed.from_device, &sealed.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_verified_by_an_old_one_reads_what_came_before_it() {
    // Goal: a second device of an account cannot read an encrypted message
    // sent before it existed until the user verifies it from the first
    // device (both compare the same codes); the first then forwards its
    // room keys, and the new device's own saved keys open the message.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let (dir, url) = (config_dir.path().to_owned(), server.url.clone());
    let laptop_device = tokio::task::spawn_blocking(move || {
        let ok = |profile: &str, args: &[&str]| cli_ok(&dir, &url, profile, args);
        ok("phone", &["register", "alice"]);
        ok("phone", &["login", "alice"]);
        ok("bob", &["register", "bob"]);
        ok("bob", &["login", "bob"]);
        ok(
            "bob",
            &[
                "send",
                "alice",
                "MARKER-fw1 before the laptop",
                "--encrypted",
            ],
        );
        let got = json_lines(&ok(
            "phone",
            &["listen", "--count", "1", "--idle-secs", "5"],
        ));
        assert_eq!(got[0]["text"], "MARKER-fw1 before the laptop");
        json(&ok("laptop", &["login", "alice"]))["device_id"]
            .as_i64()
            .expect("device id")
    })
    .await
    .expect("cli steps");
    assert_eq!(
        open_with_saved_keys(&server.url, config_dir.path(), "laptop").await,
        Err(missive_e2ee::DecryptError::NoKey),
        "the new device cannot read it yet"
    );

    let (dir, url) = (config_dir.path().to_owned(), server.url.clone());
    let [phone, laptop] = tokio::task::spawn_blocking(move || {
        let accepting = verify_saying_yes(&dir, &url, "laptop", &["--accept"]);
        let starting = verify_saying_yes(
            &dir,
            &url,
            "phone",
            &["alice", "--device", &laptop_device.to_string()],
        );
        let outputs = [starting, accepting].map(|child| child.wait_with_output().expect("ends"));
        for output in &outputs {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // The laptop takes the forwarded keys as it listens.
        cli_ok(&dir, &url, "laptop", &["listen", "--idle-secs", "2"]);
        outputs.map(|output| json_lines(&String::from_utf8_lossy(&output.stdout)))
    })
    .await
    .expect("cli steps");
    assert_eq!(
        phone[0]["text"], laptop[0]["text"],
        "the same codes on both"
    );
    assert_eq!(phone[1]["verify"], "done");
    assert_eq!(phone[1]["device_id"], laptop_device);
    assert!(
        phone[1]["forwarded"].as_u64().is_some_and(|n| n >= 1),
        "{phone:?}"
    );
    assert_eq!(
        open_with_saved_keys(&server.url, config_dir.path(), "laptop")
            .await
            .as_deref(),
        Ok("{\"text\":\"MARKER-fw1 before the laptop\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_attachment_reaches_the_server_as_ciphertext_and_opens_only_as_sent() {
    // Goal: `send --file` into an encrypted group seals the file under a
    // key of its own (without being asked: the group is known encrypted,
    // so nothing is uploaded in the clear first); the server's files hold
    // neither its bytes nor its name; members read it live and again from
    // history, each time with the sender's name, type and size, and
    // `download` opens it by its id alone; a stored copy changed on the
    // server is refused, never written out.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let (url, dir, work) = (
        server.url.clone(),
        config_dir.path().to_owned(),
        work.path().to_owned(),
    );
    let contents = b"MARKER-FILE-9d2b quarterly numbers\n".repeat(500);
    let sent = work.join("MARKERNAME-4e1a.txt");
    std::fs::write(&sent, &contents).unwrap();
    let (media_id, size) = tokio::task::spawn_blocking({
        let (dir, url, work, contents) = (dir.clone(), url.clone(), work.clone(), contents.clone());
        move || {
            let ok = |profile: &str, args: &[&str]| cli_ok(&dir, &url, profile, args);
            for user in ["alice", "bob", "carol"] {
                ok(user, &["register", user]);
                ok(user, &["login", user]);
            }
            let created: serde_json::Value = serde_json::from_str(&ok(
                "alice",
                &[
                    "group",
                    "create",
                    "vault",
                    "--member",
                    "bob",
                    "--member",
                    "carol",
                    "--encrypted",
                ],
            ))
            .expect("group json");
            let group = created["conversation"].as_i64().expect("id").to_string();
            ok(
                "alice",
                &[
                    "send",
                    "--group",
                    &group,
                    "--file",
                    sent.to_str().unwrap(),
                    "the numbers",
                ],
            );
            let got = json_lines(&ok("bob", &["listen", "--count", "2", "--idle-secs", "5"]));
            let message = got
                .iter()
                .find(|frame| frame["kind"] == "encrypted")
                .unwrap_or_else(|| panic!("bob got {got:?}"));
            assert_eq!(message["text"], "the numbers");
            assert_eq!(message["decrypted"], true);
            let media = &message["media"][0];
            assert_eq!(media["filename"], "MARKERNAME-4e1a.txt");
            assert_eq!(media["content_type"], "application/octet-stream");
            assert_eq!(media["size_bytes"], contents.len());
            let media_id = media["media_id"].as_str().expect("id").to_owned();

            let saved = work.join("bob-copy");
            let downloaded: serde_json::Value = serde_json::from_str(&ok(
                "bob",
                &["download", &media_id, "--to", saved.to_str().unwrap()],
            ))
            .expect("download json");
            assert_eq!(downloaded["decrypted"], true);
            assert_eq!(downloaded["filename"], "MARKERNAME-4e1a.txt");
            assert_eq!(std::fs::read(&saved).unwrap(), contents);

            // Carol reads it again from history (with the room key her
            // listen took): opened there too, and her download with it.
            ok("carol", &["listen", "--count", "2", "--idle-secs", "5"]);
            let history: serde_json::Value =
                serde_json::from_str(&ok("carol", &["history", &group])).expect("history json");
            let entry = history["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .find(|message| message["kind"] == "encrypted")
                .expect("in history")
                .clone();
            assert_eq!(entry["text"], "the numbers");
            assert_eq!(entry["media"][0]["filename"], "MARKERNAME-4e1a.txt");
            let carol_copy = work.join("carol-copy");
            ok(
                "carol",
                &["download", &media_id, "--to", carol_copy.to_str().unwrap()],
            );
            assert_eq!(std::fs::read(&carol_copy).unwrap(), contents);
            (media_id, contents.len() as u64 + 16)
        }
    })
    .await
    .expect("cli steps");
    for marker in [&b"MARKER-FILE-9d2b"[..], b"MARKERNAME-4e1a"] {
        assert_eq!(
            files_containing(data_dir.path(), marker),
            Vec::<std::path::PathBuf>::new(),
            "plaintext in the server's files"
        );
    }

    // The stored ciphertext changed behind the server's back: refused.
    let stored = file_named(data_dir.path(), &media_id)
        .unwrap_or_else(|| panic!("no stored blob named {media_id}"));
    let mut bytes = std::fs::read(&stored).unwrap();
    assert_eq!(bytes.len() as u64, size, "the server holds the sealed size");
    bytes[100] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let refused = work.join("refused-copy");
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let refused = refused.clone();
        move || {
            cli(
                &dir,
                &url,
                &[
                    "download",
                    &media_id,
                    "--to",
                    refused.to_str().unwrap(),
                    "--profile",
                    "bob",
                ],
            )
        }
    })
    .await
    .expect("download");
    assert_ne!(code, 0, "a changed file downloads");
    assert!(stderr.contains("not the one the message names"), "{stderr}");
    assert!(!refused.exists(), "a file that did not open was written");
}

/// The file called `name` under `dir`, at any depth.
fn file_named(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let path = entry.path();
        if path.is_dir() {
            file_named(&path, name)
        } else {
            (entry.file_name() == name).then_some(path)
        }
    })
}
