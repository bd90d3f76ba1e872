//! `devices_changed` (issue 22): a user's list of devices with published
//! keys changed, told live to the connected devices of everyone sharing a
//! conversation with them and to their own other devices. Sent when a
//! device publishes identity keys for the first time and when a device
//! that had them is revoked, whatever revokes it (a revoke, a logout, a
//! login at the device limit, idle expiry, an operator); never for a
//! one-time-key top-up or a device that never published keys. Over
//! WebSocket and long-poll on one node, and across two nodes.

mod common;

use common::cluster::*;
use common::*;
use missive_client::{Api, Connection};
use missive_core::{DeviceId, Username};
use missive_proto::{ClientFrame, ServerFrame};

/// The user named by the next `devices_changed` frame, skipping every
/// other frame; waits at most [`PROMPTLY`] (an event bound, not a sleep).
async fn next_devices_changed(connection: &mut Connection) -> String {
    loop {
        let frame = connection
            .next_frame(PROMPTLY)
            .await
            .expect("a devices_changed frame");
        if let ServerFrame::DevicesChanged { user, .. } = frame {
            return user;
        }
    }
}

/// Fails if a `devices_changed` frame waits for the connection. Every
/// notice is handed to the connection before the request that caused it
/// is answered, and a connection writes what it was handed before any
/// reply, so one that is not there before the `pong` of a ping sent
/// afterwards was never sent; the second round trip is a margin. No sleep.
async fn assert_no_devices_changed(connection: &mut Connection) {
    for round in ["quiet-d1", "quiet-d2"] {
        let ping = ClientFrame::Ping {
            id: Some(round.into()),
        };
        connection.send_frame(&ping).await.expect("ping");
        loop {
            match connection.next_frame(PROMPTLY).await.expect("frame") {
                ServerFrame::Pong { id } if id.as_deref() == Some(round) => break,
                frame @ ServerFrame::DevicesChanged { .. } => {
                    panic!("unexpected {frame:?}")
                }
                _ => {}
            }
        }
    }
}

/// The device id of `token`.
async fn device_of(api: &Api, token: &str) -> i64 {
    api.devices(token)
        .await
        .expect("devices")
        .devices
        .into_iter()
        .find(|device| device.current)
        .expect("the calling device is listed")
        .device_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_key_upload_and_its_revocation_tell_who_shares_a_conversation() {
    // Goal: alice's new device publishing identity keys tells bob (a 1:1
    // with alice) and alice's other device, not carol (who shares a 1:1
    // with bob but nothing with alice) nor the uploading device itself;
    // a top-up, a retried first upload, and a device without keys coming
    // and going tell nobody; revoking the device with keys tells bob and
    // alice's other device again, and its keys are gone from the listing.
    let server = TestServer::start().await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mut alice_live = server.connect(&alice).await;
    alice_live.send_text("bob", "a-1", "hi bob").await.unwrap();
    let mut carol_live = server.connect(&carol).await;
    carol_live.send_text("bob", "c-1", "hi bob").await.unwrap();
    let mut bob_live = server.connect(&bob).await;
    let alice_new = server.device("alice").await;
    let mut alice_new_live = server.connect(&alice_new).await;

    api.upload_keys(&alice_new, &key_upload("n", 5))
        .await
        .unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    assert_eq!(next_devices_changed(&mut alice_live).await, "alice");
    assert_no_devices_changed(&mut bob_live).await;
    assert_no_devices_changed(&mut alice_live).await;
    assert_no_devices_changed(&mut carol_live).await;
    assert_no_devices_changed(&mut alice_new_live).await;

    // Nothing the listing shows changes with these.
    api.upload_keys(&alice_new, &top_up("t", 3)).await.unwrap();
    api.upload_keys(&alice_new, &key_upload("n", 5))
        .await
        .unwrap();
    let keyless = server.device("alice").await;
    api.logout(&keyless).await.unwrap();
    assert_no_devices_changed(&mut bob_live).await;
    assert_no_devices_changed(&mut alice_live).await;

    let revoked = device_of(api, &alice_new).await;
    api.revoke(&alice, revoked).await.unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    assert_eq!(next_devices_changed(&mut alice_live).await, "alice");
    assert_no_devices_changed(&mut bob_live).await;
    assert_no_devices_changed(&mut carol_live).await;
    assert!(
        api.user_keys(&bob, "alice")
            .await
            .unwrap()
            .devices
            .is_empty(),
        "what bob reads again no longer lists it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_of_a_device_with_keys_tells_the_members_of_a_group() {
    // Goal: sharing a group counts like a 1:1; a device with keys going
    // tells bob whatever revokes it: a login at the device limit replacing
    // it, a logout, idle expiry by the sweeper, an operator suspending the
    // account (one notice for all its devices).
    // Method: at most 3 devices per account; alice's first device stays
    // connected (so it is never replaced or expired) and creates the
    // group; the manual clock passes the idle expiry.
    let server = TestServer::start_with(|config| {
        config.limits.devices_per_account_max = 3;
        config.limits.device_idle_expiry_secs = 60;
    })
    .await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    api.create_group(&alice, "trip", &["bob"]).await.unwrap();
    // Held to the end: a connected device is neither replaced nor expired.
    let _alice_live = server.connect(&alice).await;
    let mut bob_live = server.connect(&bob).await;

    // Replaced by a login at the limit: the oldest unconnected device.
    let oldest = server.device("alice").await;
    api.upload_keys(&oldest, &key_upload("o", 2)).await.unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    let oldest_id = device_of(api, &oldest).await;
    let _keyless = server.device("alice").await;
    let login = api.login("alice", PASSWORD, "fourth").await.unwrap();
    assert_eq!(login.replaced_device_id, Some(oldest_id));
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    assert_no_devices_changed(&mut bob_live).await;

    // Logged out.
    api.upload_keys(&login.token, &key_upload("f", 2))
        .await
        .unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    api.logout(&login.token).await.unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    assert_no_devices_changed(&mut bob_live).await;

    // Expired: the keyless device and this one go in one sweep, one
    // notice.
    let idle = server.device("alice").await;
    api.upload_keys(&idle, &key_upload("i", 2)).await.unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    server.clock.advance_ms(61_000);
    server.app.sweep_now().await.expect("sweep");
    assert!(
        api.user_keys(&bob, "alice")
            .await
            .unwrap()
            .devices
            .is_empty(),
        "the idle device expired"
    );
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    assert_no_devices_changed(&mut bob_live).await;

    // Suspended by an operator: every device at once, one notice.
    api.upload_keys(&alice, &key_upload("a", 2)).await.unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    let _second = server.device("alice").await;
    let revoked = server
        .app
        .state()
        .accounts
        .admin_suspend("alice", true)
        .await
        .expect("suspend");
    assert_eq!(revoked.len(), 2);
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    assert_no_devices_changed(&mut bob_live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_poll_is_told_too() {
    // Goal: a device whose poll waits gets `devices_changed` in that
    // poll's answer, as soon as the change is made.
    // Method: bob's poll waits; once its session is in the directory
    // (what the notice's recipients are read from), alice's new device
    // publishes keys.
    let server = TestServer::start().await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut alice_live = server.connect(&alice).await;
    alice_live.send_text("bob", "a-1", "hi bob").await.unwrap();
    // Bob takes the text first, so the waiting poll has nothing else.
    let first = api.poll(&bob, &[], 5_000).await.unwrap();
    let acks = ack_points(&first.frames);
    assert_eq!(acks.len(), 1);
    api.poll(&bob, &acks, 0).await.unwrap();

    let (poll_api, token) = (api.clone(), bob.clone());
    let waiting = tokio::spawn(async move { poll_api.poll(&token, &[], 30_000).await });
    let store = server.app.state().store.clone();
    let bob_account = store
        .account_by_username(&Username::parse("bob").unwrap())
        .await
        .unwrap()
        .expect("bob")
        .id;
    let bob_device = DeviceId(device_of(api, &bob).await);
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while !store
        .online_devices_sharing_with(bob_account)
        .await
        .unwrap()
        .contains(&bob_device)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poll never claimed its session"
        );
        tokio::task::yield_now().await;
    }

    let alice_new = server.device("alice").await;
    api.upload_keys(&alice_new, &key_upload("n", 2))
        .await
        .unwrap();
    let answered = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("the waiting poll returned promptly")
        .unwrap()
        .unwrap();
    assert!(
        answered.frames.iter().any(
            |frame| matches!(frame, ServerFrame::DevicesChanged { user, .. } if user == "alice")
        ),
        "{:?}",
        answered.frames
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_changed_crosses_nodes() {
    // Goal: the notice reaches a device live on another node than the one
    // that made the change, over the bus: for a first upload and for a
    // revocation.
    // Method: two nodes on PostgreSQL + NATS; alice acts through node 0,
    // bob is connected to node 1. Only positive checks: an absence cannot
    // be proved by a round trip when the notice would come over NATS.
    if !services_available().await {
        return;
    }
    let db = Database::create().await;
    let cluster = Cluster::start(2, &db.url(), NATS, &[]);
    let alice = cluster.user(0, "alice").await;
    let bob = cluster.user(1, "bob").await;
    let mut alice_live = cluster.connect(0, &alice).await;
    alice_live.send_text("bob", "a-1", "hi bob").await.unwrap();
    let mut bob_live = cluster.connect(1, &bob).await;

    let alice_new = cluster
        .api(0)
        .login("alice", PASSWORD, "new")
        .await
        .unwrap();
    cluster
        .api(0)
        .upload_keys(&alice_new.token, &key_upload("n", 2))
        .await
        .unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    cluster
        .api(0)
        .revoke(&alice, alice_new.device_id)
        .await
        .unwrap();
    assert_eq!(next_devices_changed(&mut bob_live).await, "alice");
    drop(cluster);
    db.drop_now().await;
}

#[test]
fn cli_listen_prints_devices_changed_with_ephemeral() {
    // Goal: `missive listen --ephemeral` over a WebSocket prints the live
    // `devices_changed` frame (as `--poll --ephemeral` prints every live
    // frame): a user running the CLI learns that a contact's devices
    // changed.
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    let (dir, url) = (config.path(), server.url.as_str());
    let ok = |args: &[&str]| {
        let (code, stdout, stderr) = cli(dir, url, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    };
    for user in ["alice", "bob"] {
        ok(&["register", user]);
        ok(&["login", user, "--profile", user]);
    }
    ok(&[
        "send",
        "bob",
        "a stored message first",
        "--profile",
        "alice",
    ]);
    let mut listen = std::process::Command::new(BIN)
        .args([
            "listen",
            "--ephemeral",
            "--count",
            "2",
            "--idle-secs",
            "10",
            "--profile",
            "bob",
        ])
        .env("MISSIVE_CONFIG_DIR", dir)
        .env("MISSIVE_SERVER", url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start listen");
    let mut lines = std::io::BufReader::new(listen.stdout.take().expect("stdout")).lines();
    // The stored message says the listener is connected.
    let first = json(&lines.next().expect("a line").expect("read"));
    assert_eq!(first["text"], "a stored message first");
    // Alice logs in on a second device: its keys are published.
    ok(&["login", "alice", "--profile", "alice-laptop"]);
    let second = json(&lines.next().expect("a second line").expect("read"));
    assert_eq!(
        (second["type"].as_str(), second["user"].as_str()),
        (Some("devices_changed"), Some("alice"))
    );
    assert!(listen.wait().expect("listen ends").success());
}
