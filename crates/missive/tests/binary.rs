//! Tests that spawn the built `missive` binary: crash durability under
//! `kill -9`, the CLI walkthrough with its exit codes, config errors.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use missive_client::{Api, Connection};
use missive_proto::ServerFrame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sent_message_survives_kill_9() {
    // Goal: DESIGN.md §2 "nothing acknowledged as sent is ever lost, also
    // not through kill -9". Method: alice sends as fast as she can while the
    // server is SIGKILLed mid-stream; after a restart on the same data dir
    // bob must receive every message that got a `sent`, exactly once after
    // dedup by message id, with gap-free seqs.
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    api.register("alice", PASSWORD).await.unwrap();
    api.register("bob", PASSWORD).await.unwrap();
    let alice_token = api.login("alice", PASSWORD, "a").await.unwrap().token;
    let bob_token = api.login("bob", PASSWORD, "b").await.unwrap().token;

    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel();
    let sender = {
        let acked = acked.clone();
        let ws_url = api.ws_url();
        tokio::spawn(async move {
            let mut alice = Connection::connect(&ws_url, &alice_token).await.unwrap();
            let mut enough = Some(enough_tx);
            for i in 0.. {
                match alice
                    .send_text("bob", &format!("k{i}"), &format!("msg {i}"))
                    .await
                {
                    Ok(ServerFrame::Sent {
                        message_id, seq, ..
                    }) => {
                        let n = {
                            let mut acked = acked.lock().unwrap();
                            acked.push((message_id, seq));
                            acked.len()
                        };
                        if n == 100 {
                            if let Some(enough) = enough.take() {
                                let _ = enough.send(());
                            }
                        }
                    }
                    Ok(other) => panic!("unexpected reply {other:?}"),
                    Err(_) => return i,
                }
            }
            unreachable!()
        })
    };
    enough_rx.await.unwrap();
    server.kill_9();
    let attempted = sender.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100 && attempted >= acked.len());

    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    let mut bob = Connection::connect(&api.ws_url(), &bob_token)
        .await
        .unwrap();
    // Everything stored is at least what was acked; read until the acked
    // count is covered (what was stored beyond it can only be an
    // in-flight send).
    let mut received: Vec<(String, i64)> = Vec::new();
    while received.len() < acked.len() {
        if let ServerFrame::Message {
            message_id, seq, ..
        } = bob.next_frame(PROMPTLY).await.unwrap()
        {
            if !received.iter().any(|(id, _)| *id == message_id) {
                received.push((message_id, seq));
            }
        }
    }
    for (message_id, seq) in &acked {
        assert!(
            received.contains(&(message_id.clone(), *seq)),
            "acked message seq {seq} lost"
        );
    }
    let seqs: Vec<i64> = received.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=received.len() as i64).collect::<Vec<_>>(),
        "seqs must be gap-free and ordered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_walkthrough_and_exit_codes() {
    // Goal: the README walkthrough works through the real binary, and the
    // documented exit codes hold for refusals, missing logins and no server.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let run = move |args: &[&str]| cli(config_dir.path(), &url, args);
    tokio::task::spawn_blocking(move || {
        assert_eq!(run(&["register", "alice"]).0, 0);
        assert_eq!(run(&["register", "bob"]).0, 0);
        let (code, _, stderr) = run(&["register", "bob"]);
        assert_eq!(
            (code, stderr.trim()),
            (3, "error: username_taken: username is taken")
        );
        assert_eq!(run(&["login", "alice", "--profile", "alice"]).0, 0);
        assert_eq!(run(&["login", "bob", "--profile", "bob"]).0, 0);

        let (code, stdout, _) = run(&[
            "send",
            "bob",
            "hello bob",
            "--profile",
            "alice",
            "--client-msg-id",
            "w1",
        ]);
        assert_eq!(code, 0);
        let sent: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            (sent["type"].as_str(), sent["seq"].as_i64()),
            (Some("sent"), Some(1))
        );

        let (code, stdout, _) = run(&["listen", "--profile", "bob", "--count", "1"]);
        assert_eq!(code, 0);
        let message: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            (message["type"].as_str(), message["text"].as_str()),
            (Some("message"), Some("hello bob"))
        );
        // listen acked it: a second listen finds nothing.
        let (code, stdout, _) = run(&["listen", "--profile", "bob", "--idle-secs", "1"]);
        assert_eq!((code, stdout.as_str()), (0, ""));
        // Alice was away when bob's ack moved his delivered cursor (live
        // only): her conversation list shows it.
        let (code, stdout, _) = run(&["conversations", "--profile", "alice"]);
        assert_eq!(code, 0);
        let list: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            list["conversations"][0]["receipts"],
            serde_json::json!([{"user": "bob", "delivered_seq": 1, "read_seq": 0}]),
            "{stdout}"
        );

        // For people: --output text (or MISSIVE_OUTPUT=text), before or
        // after the command.
        let (code, stdout, stderr) =
            run(&["--output", "text", "history", "bob", "--profile", "alice"]);
        assert_eq!(code, 0, "{stderr}");
        let line = stdout.trim();
        assert!(line.ends_with("] 1 alice: hello bob"), "{stdout}");
        assert!(serde_json::from_str::<serde_json::Value>(line).is_err());
        let (code, stdout, _) = run(&["conversations", "--profile", "alice", "--output", "text"]);
        assert_eq!(code, 0);
        assert!(stdout.starts_with("#1  alice, bob  last: ["), "{stdout}");
        let (code, _, stderr) = run(&["history", "bob", "--profile", "alice", "--output", "yaml"]);
        assert_eq!(code, 2, "{stderr}");

        let (code, _, stderr) = run(&["send", "nobody", "hi", "--profile", "alice"]);
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.starts_with("error: unknown_user:"), "{stderr}");
        assert_eq!(run(&["send", "bob", "hi", "--profile", "carol"]).0, 5);

        let (code, stdout, _) = run(&["devices", "--profile", "bob"]);
        assert_eq!(code, 0);
        let devices: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
        assert_eq!(run(&["logout", "--profile", "bob"]).0, 0);
        assert_eq!(run(&["devices", "--profile", "bob"]).0, 5);
    })
    .await
    .unwrap();
    drop(server);
    let nowhere = tempfile::tempdir().unwrap();
    let (code, _, stderr) = cli(nowhere.path(), "http://127.0.0.1:9", &["register", "zed"]);
    assert_eq!(code, 4, "{stderr}");
    // Without a scheme the address means http:// (so: unreachable, not a
    // failure to build the request); another scheme is bad usage.
    let (code, _, stderr) = cli(nowhere.path(), "127.0.0.1:9", &["register", "zed"]);
    assert_eq!(code, 4, "{stderr}");
    let (code, _, stderr) = cli(nowhere.path(), "ws://127.0.0.1:9", &["register", "zed"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("http:// or https://"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_flag_and_env_win_over_the_profile() {
    // Goal: a profile remembers its server (login prints it) and later
    // commands use it, but `--server` or `MISSIVE_SERVER`, when given, is
    // where the command goes.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let config = config_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        assert_eq!(cli(&config, &url, &["register", "alice"]).0, 0);
        let (code, stdout, _) = cli(&config, &url, &["login", "alice"]);
        assert_eq!(code, 0);
        let login: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(login["server"].as_str(), Some(url.as_str()));
        let without_env = |args: &[&str]| {
            std::process::Command::new(BIN)
                .args(args)
                .env("MISSIVE_CONFIG_DIR", &config)
                .env_remove("MISSIVE_SERVER")
                .status()
                .expect("run missive")
                .code()
        };
        // The profile's server.
        assert_eq!(without_env(&["devices"]), Some(0));
        // The flag, then the environment, win: nothing listens there.
        assert_eq!(
            without_env(&["devices", "--server", "http://127.0.0.1:9"]),
            Some(4)
        );
        assert_eq!(cli(&config, "http://127.0.0.1:9", &["devices"]).0, 4);
    })
    .await
    .unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_history_take_a_conversation_by_id_or_by_name() {
    // Goal: `missive read CONV` moves the caller's read cursor to the
    // conversation's newest message (`--up-to SEQ`: to that one), which the
    // other member then sees in the conversation list; `read`, `history`
    // and `send --group` take the other member's username or a group's
    // name too.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let config = config_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| cli(&config, &url, args);
        for name in ["alice", "bob"] {
            assert_eq!(run(&["register", name]).0, 0);
            assert_eq!(run(&["login", name, "--profile", name]).0, 0);
        }
        let mut conversation = String::new();
        for text in ["one", "two", "three"] {
            let (code, stdout, _) = run(&["send", "bob", text, "--profile", "alice"]);
            assert_eq!(code, 0);
            let sent: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            conversation = sent["conversation"].to_string();
        }
        let read = |extra: &[&str]| {
            let mut args = vec!["read", conversation.as_str(), "--profile", "bob"];
            args.extend_from_slice(extra);
            let (code, stdout, stderr) = run(&args);
            assert_eq!(code, 0, "{stderr}");
            let reply: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            reply["seq"].as_i64()
        };
        assert_eq!(read(&["--up-to", "2"]), Some(2));
        assert_eq!(read(&[]), Some(3));
        let (_, stdout, _) = run(&["conversations", "--profile", "alice"]);
        let list: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(
            list["conversations"][0]["receipts"][0]["read_seq"], 3,
            "{stdout}"
        );
        let (code, _, stderr) = run(&["read", "999", "--profile", "bob"]);
        assert_eq!(code, 3, "{stderr}");

        // A person's name for a conversation: the other member, or a
        // group's name; one that names two conversations asks for the id.
        let (code, stdout, stderr) = run(&["history", "alice", "--profile", "bob"]);
        assert_eq!(code, 0, "{stderr}");
        let history: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(history["messages"][0]["text"], "three", "{stdout}");
        for _ in 0..2 {
            let (code, _, stderr) = run(&[
                "group",
                "create",
                "team",
                "--member",
                "bob",
                "--profile",
                "alice",
            ]);
            assert_eq!(code, 0, "{stderr}");
        }
        let (code, _, stderr) = run(&["read", "team", "--profile", "bob"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("give the id"), "{stderr}");
        let (code, _, stderr) = run(&["history", "nobody", "--profile", "bob"]);
        assert_eq!(code, 3, "{stderr}");
        let (code, _, stderr) = run(&["read", "alice", "--profile", "bob"]);
        assert_eq!(code, 0, "{stderr}");
        let (code, _, stderr) = run(&[
            "group",
            "create",
            "solo",
            "--member",
            "bob",
            "--profile",
            "alice",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let (code, stdout, stderr) = run(&["send", "--group", "solo", "hi", "--profile", "bob"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("\"sent\""), "{stdout}");
    })
    .await
    .unwrap();
    drop(server);
}

/// Runs `missive admin` on the store in `data_dir`, with `password` in
/// the environment; returns (exit status, stdout, stderr).
fn admin(data_dir: &std::path::Path, args: &[&str], password: &str) -> (i32, String, String) {
    let output = std::process::Command::new(BIN)
        .arg("admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("MISSIVE_PASSWORD", password)
        .output()
        .expect("run missive admin");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `admin` on a blocking thread, so the test's runtime keeps serving its
/// connections meanwhile.
async fn admin_off_thread(
    data_dir: &std::path::Path,
    args: &[&str],
    password: &'static str,
) -> (i32, String, String) {
    let data_dir = data_dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&data_dir, &args, password)
    })
    .await
    .expect("admin thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_revokes_devices_and_resets_a_password_while_the_server_runs() {
    // Goal: `missive admin` works on the store of a running embedded
    // server: it lists users and devices; a device it revokes is closed on
    // the server (4003) and its token dies, though the server never heard
    // from the admin process; a reset password works at once and, with
    // --revoke-devices, ends every session; an unknown user is refused.
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    api.register("alice", PASSWORD).await.unwrap();
    let phone = api.login("alice", PASSWORD, "phone").await.unwrap();
    let laptop = api.login("alice", PASSWORD, "laptop").await.unwrap();
    let mut phone_ws = Connection::connect(&api.ws_url(), &phone.token)
        .await
        .unwrap();
    let dir = data_dir.path().to_path_buf();

    let (code, stdout, stderr) = admin_off_thread(&dir, &["users"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let users: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(users["users"][0]["username"], "alice", "{stdout}");
    assert_eq!(users["users"][0]["devices"], 2, "{stdout}");
    let (code, stdout, _) = admin_off_thread(&dir, &["devices", "alice"], "").await;
    assert_eq!(code, 0);
    assert!(stdout.contains("\"laptop\""), "{stdout}");

    let phone_id = phone.device_id.to_string();
    let (code, stdout, stderr) = admin_off_thread(&dir, &["revoke", "alice", &phone_id], "").await;
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(revoked, serde_json::json!({"revoked": [phone.device_id]}));
    assert_eq!(close_code(&mut phone_ws).await, 4003);
    assert_eq!(
        refused_code(api.devices(&phone.token).await),
        "token_invalid"
    );
    api.devices(&laptop.token).await.unwrap();

    let mut laptop_ws = Connection::connect(&api.ws_url(), &laptop.token)
        .await
        .unwrap();
    let (code, stdout, stderr) = admin_off_thread(
        &dir,
        &["reset-password", "alice", "--revoke-devices"],
        "a brand new password",
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        revoked,
        serde_json::json!({"revoked": [laptop.device_id]}),
        "only the laptop was left to revoke"
    );
    assert_eq!(close_code(&mut laptop_ws).await, 4003);
    assert_eq!(
        refused_code(api.devices(&laptop.token).await),
        "token_invalid"
    );
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "old").await),
        "wrong_credentials"
    );
    api.login("alice", "a brand new password", "new")
        .await
        .unwrap();

    let (code, _, stderr) = admin_off_thread(&dir, &["devices", "nobody"], "").await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("unknown_user"), "{stderr}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_on_the_store_of_a_stopped_server_and_every_action_is_logged() {
    // Goal: `missive admin` needs no running server: with it stopped, it
    // creates a user, revokes all of another's devices (`--all`) and makes
    // invites, each action logged on stderr; `--output text` lists users
    // for people; the server started again honours all of it (the revoked
    // tokens are dead, the new user logs in, an invite registers).
    let data_dir = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::start_with_env(data_dir.path(), &[("MISSIVE_REGISTRATION__MODE", "invite")]);
    let api = Api::new(&server.url);
    let (code, stdout, stderr) = admin_off_thread(data_dir.path(), &["invite"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let invite: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let invite = invite["invites"][0].as_str().unwrap().to_string();
    api.register_with_invite("alice", PASSWORD, Some(&invite))
        .await
        .unwrap();
    let phone = api.login("alice", PASSWORD, "phone").await.unwrap();
    let laptop = api.login("alice", PASSWORD, "laptop").await.unwrap();
    server.kill_9();
    let dir = data_dir.path().to_path_buf();

    let (code, stdout, stderr) = admin(&dir, &["create", "carol"], "carol's password");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"carol\""), "{stdout}");
    assert!(
        stderr.contains("account created by an operator"),
        "{stderr}"
    );
    let (code, stdout, stderr) = admin(&dir, &["revoke", "alice", "--all"], "");
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mut revoked: Vec<i64> = serde_json::from_value(revoked["revoked"].clone()).unwrap();
    revoked.sort_unstable();
    assert_eq!(revoked, [phone.device_id, laptop.device_id]);
    assert_eq!(
        stderr.matches("device revoked by an operator").count(),
        2,
        "{stderr}"
    );
    let (code, stdout, stderr) = admin(&dir, &["invite", "--count", "2"], "");
    assert_eq!(code, 0, "{stderr}");
    let invites: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(invites["invites"].as_array().unwrap().len(), 2, "{stdout}");
    assert!(
        stderr.contains("invites created by an operator"),
        "{stderr}"
    );
    let (code, stdout, stderr) = admin(&dir, &["--output", "text", "users"], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        serde_json::from_str::<serde_json::Value>(stdout.trim()).is_err(),
        "text, not JSON: {stdout}"
    );
    for name in ["alice", "carol"] {
        assert!(
            stdout.lines().any(|line| line.contains(name)),
            "{name} missing from {stdout}"
        );
    }

    let server =
        ServerProcess::start_with_env(data_dir.path(), &[("MISSIVE_REGISTRATION__MODE", "invite")]);
    let api = Api::new(&server.url);
    for token in [&phone.token, &laptop.token] {
        assert_eq!(refused_code(api.devices(token).await), "token_invalid");
    }
    api.login("carol", "carol's password", "phone")
        .await
        .unwrap();
    let second = invites["invites"][1].as_str().unwrap();
    api.register_with_invite("dave", PASSWORD, Some(second))
        .await
        .unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_invites_creates_suspends_and_resumes_users() {
    // Goal: with registration by invite, the server says so, refuses a
    // registration without an invite (invite_required) or with a bad one
    // (invite_invalid) and takes one `missive admin invite` code once;
    // `admin create` makes an account whatever the mode; `admin suspend`
    // closes the user's live connection (4003), kills its token and
    // refuses logins (account_suspended, only once the password is right);
    // `admin resume` lets them log in again; `admin users` shows it.
    let data_dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with_env(data_dir.path(), &[("MISSIVE_REGISTRATION__MODE", "invite")]);
    let api = Api::new(&server.url);
    let mode: serde_json::Value = reqwest::get(format!("{}/v1/registration", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mode, serde_json::json!({"mode": "invite"}));
    assert_eq!(
        refused_code(api.register("alice", PASSWORD).await),
        "invite_required"
    );
    assert_eq!(
        refused_code(
            api.register_with_invite("alice", PASSWORD, Some("0123"))
                .await
        ),
        "invite_invalid"
    );

    let dir = data_dir.path().to_path_buf();
    let (code, stdout, stderr) = admin_off_thread(&dir, &["invite", "--count", "2"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let invites: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let codes: Vec<String> = invites["invites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 2, "{stdout}");
    api.register_with_invite("alice", PASSWORD, Some(&codes[0]))
        .await
        .unwrap();
    assert_eq!(
        refused_code(
            api.register_with_invite("carol", PASSWORD, Some(&codes[0]))
                .await
        ),
        "invite_invalid",
        "an invite is used once"
    );
    let (code, stdout, stderr) = admin_off_thread(&dir, &["create", "bob"], PASSWORD).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"bob\""), "{stdout}");
    api.login("bob", PASSWORD, "phone").await.unwrap();

    let phone = api.login("alice", PASSWORD, "phone").await.unwrap();
    let mut phone_ws = Connection::connect(&api.ws_url(), &phone.token)
        .await
        .unwrap();
    let (code, stdout, stderr) = admin_off_thread(&dir, &["suspend", "alice"], "").await;
    assert_eq!(code, 0, "{stderr}");
    let revoked: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(revoked, serde_json::json!({"revoked": [phone.device_id]}));
    assert_eq!(close_code(&mut phone_ws).await, 4003);
    assert_eq!(
        refused_code(api.devices(&phone.token).await),
        "token_invalid"
    );
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "again").await),
        "account_suspended"
    );
    assert_eq!(
        refused_code(api.login("alice", "not the password", "again").await),
        "wrong_credentials",
        "the suspension is told only to whoever knows the password"
    );
    let (code, stdout, _) = admin_off_thread(&dir, &["users"], "").await;
    assert_eq!(code, 0);
    let users: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(users["users"][0]["username"], "alice", "{stdout}");
    assert_eq!(users["users"][0]["suspended"], true, "{stdout}");
    assert_eq!(users["users"][1]["suspended"], false, "{stdout}");

    let (code, _, stderr) = admin_off_thread(&dir, &["resume", "alice"], "").await;
    assert_eq!(code, 0, "{stderr}");
    api.login("alice", PASSWORD, "again").await.unwrap();
    let (code, _, stderr) = admin_off_thread(&dir, &["suspend", "nobody"], "").await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("unknown_user"), "{stderr}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deletes_a_user_for_good() {
    // Goal: `missive admin delete` on a running server's store closes the
    // user's connection (4003), takes them out of their groups (the other
    // members see a "left" event), keeps their messages under
    // "deleted.<id>", refuses their login, and frees the name for a new
    // account; names of that form cannot be registered.
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    for user in ["alice", "bob"] {
        api.register(user, PASSWORD).await.unwrap();
    }
    let alice = api.login("alice", PASSWORD, "phone").await.unwrap();
    let bob = api.login("bob", PASSWORD, "phone").await.unwrap();
    let group = api
        .create_group(&bob.token, "trip", &["alice"])
        .await
        .unwrap()
        .conversation;
    let mut alice_ws = Connection::connect(&api.ws_url(), &alice.token)
        .await
        .unwrap();
    alice_ws
        .send_to(group, "a-1", "hello from alice", None)
        .await
        .unwrap();

    let dir = data_dir.path().to_path_buf();
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || admin(&dir, &["delete", "alice"], ""))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let deleted: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        deleted,
        serde_json::json!({"deleted": "alice", "revoked": [alice.device_id], "groups_left": 1})
    );
    assert_eq!(close_code(&mut alice_ws).await, 4003);
    assert_eq!(
        refused_code(api.login("alice", PASSWORD, "again").await),
        "wrong_credentials"
    );
    let info = api.group(&bob.token, group).await.unwrap();
    let members: Vec<&str> = info.members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(members, ["bob"]);
    let history = api.history(&bob.token, group, "").await.unwrap();
    let tombstone = format!("deleted.{}", deleted_id(&history));
    assert!(
        history
            .messages
            .iter()
            .any(|m| m.text == "hello from alice" && m.from == tombstone),
        "{history:?}"
    );
    assert_eq!(
        refused_code(api.register(&tombstone, PASSWORD).await),
        "invalid_username"
    );
    api.register("alice", PASSWORD).await.unwrap();
    drop(server);
}

/// The account id in the name the deleted sender's messages now carry.
fn deleted_id(history: &missive_proto::rest::History) -> String {
    history
        .messages
        .iter()
        .find_map(|m| m.from.strip_prefix("deleted.").map(str::to_owned))
        .expect("a message from the deleted account")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_server_takes_no_registrations() {
    // Goal: registration mode `closed` refuses every registration with
    // registration_closed (even with an invite) and says so.
    let data_dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with_env(data_dir.path(), &[("MISSIVE_REGISTRATION__MODE", "closed")]);
    let api = Api::new(&server.url);
    let mode: serde_json::Value = reqwest::get(format!("{}/v1/registration", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mode, serde_json::json!({"mode": "closed"}));
    assert_eq!(
        refused_code(api.register("alice", PASSWORD).await),
        "registration_closed"
    );
    assert_eq!(
        refused_code(api.register_with_invite("alice", PASSWORD, Some("x")).await),
        "registration_closed"
    );
    drop(server);
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    // Goal: a bad config file stops `serve` with exit 2 naming the key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[delivery]\noffline_ttl = 5\n").unwrap();
    let output = server_command()
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("offline_ttl"), "{stderr}");
    let output = server_command()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("MISSIVE_STORE__FSYNC", "sometimes")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("store.fsync"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_over_long_polling_prints_and_acks_like_the_websocket() {
    // Goal: `listen --poll` prints stored events as JSON lines and acks
    // them, so a second listen (over either transport) finds nothing.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let run = move |args: &[&str]| cli(config_dir.path(), &url, args);
    tokio::task::spawn_blocking(move || {
        for user in ["alice", "bob"] {
            assert_eq!(run(&["register", user]).0, 0);
            assert_eq!(run(&["login", user, "--profile", user]).0, 0);
        }
        for (cmid, text) in [("p1", "one"), ("p2", "two"), ("p3", "three")] {
            let sent = run(&[
                "send",
                "bob",
                text,
                "--profile",
                "alice",
                "--client-msg-id",
                cmid,
            ]);
            assert_eq!(sent.0, 0, "{}", sent.2);
        }
        let (code, stdout, stderr) = run(&["listen", "--poll", "--profile", "bob", "--count", "2"]);
        assert_eq!(code, 0, "{stderr}");
        let texts: Vec<String> = stdout
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(texts, ["one", "two"]);
        // Only the printed two were acked: the third comes next, then nothing.
        let (code, stdout, _) = run(&["listen", "--poll", "--profile", "bob", "--idle-secs", "1"]);
        assert_eq!(code, 0);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(stdout.contains("\"three\""), "{stdout}");
        let (code, stdout, _) = run(&["listen", "--profile", "bob", "--idle-secs", "1"]);
        assert_eq!((code, stdout.as_str()), (0, ""));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sends_a_file_and_the_recipient_downloads_it() {
    // Goal: `send --file` uploads and attaches, keeping the file's name;
    // the recipient's `listen` shows the media id and name, and `download`
    // writes the identical bytes: to --output, or without it under the
    // sent name in the current directory, never over an existing file.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let config = config_dir.path().to_path_buf();
    let run = move |args: &[&str]| cli(config_dir.path(), &url, args);
    let photo = files.path().join("ticket.pdf");
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..5_000u32).map(|i| (i % 256) as u8));
    std::fs::write(&photo, &bytes).unwrap();
    let saved = files.path().join("saved.pdf");
    let downloads = files.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let download_here = move |media_id: &str| {
        let output = std::process::Command::new(BIN)
            .args(["download", media_id, "--profile", "bob"])
            .current_dir(&downloads)
            .env("MISSIVE_CONFIG_DIR", &config)
            .output()
            .expect("run missive download");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
            downloads.join("ticket.pdf"),
        )
    };
    tokio::task::spawn_blocking(move || {
        for user in ["alice", "bob"] {
            assert_eq!(run(&["register", user]).0, 0);
            assert_eq!(run(&["login", user, "--profile", user]).0, 0);
        }
        let photo = photo.to_str().unwrap();
        let (code, _, stderr) = run(&["send", "bob", "", "--file", photo, "--profile", "alice"]);
        assert_eq!(code, 0, "{stderr}");
        let (code, stdout, _) = run(&["listen", "--profile", "bob", "--count", "1"]);
        assert_eq!(code, 0);
        let message: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let media_id = message["media"][0]["media_id"].as_str().unwrap().to_owned();
        assert_eq!(message["media"][0]["filename"], "ticket.pdf", "{stdout}");
        let saved_path = saved.to_str().unwrap();
        let (code, stdout, stderr) = run(&[
            "download",
            &media_id,
            "--to",
            saved_path,
            "--profile",
            "bob",
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("application/pdf"), "{stdout}");
        assert_eq!(std::fs::read(saved_path).unwrap(), bytes);
        let (code, stdout, stderr, named) = download_here(&media_id);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("\"filename\":\"ticket.pdf\""), "{stdout}");
        assert_eq!(std::fs::read(&named).unwrap(), bytes);
        std::fs::write(&named, b"mine").unwrap();
        let (code, _, stderr, named) = download_here(&media_id);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("--to"), "{stderr}");
        assert_eq!(std::fs::read(&named).unwrap(), b"mine", "not overwritten");
        let (code, _, stderr) = run(&[
            "download",
            "0123456789abcdef0123456789abcdef",
            "--profile",
            "bob",
        ]);
        assert_eq!(code, 3);
        assert!(stderr.starts_with("error: unknown_media:"), "{stderr}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_log_is_plain_text_with_no_line_per_message_or_frame() {
    // Goal: at the default level and format, a server whose stderr is a
    // pipe writes no colour codes, no frame dumps, and at most one line per
    // connection: here five connections each send and receive messages,
    // and apart from start, stop, accounts and logins the log says nothing.
    use std::io::BufRead;
    use std::process::Stdio;
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = server_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn missive serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        assert!(!line.contains('\x1b'), "colour codes in a pipe: {line}");
        log.push(line.clone());
        if let Some(at) = line.find("local_addr=") {
            let rest = &line[at + "local_addr=".len()..];
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let api = Api::new(&format!("http://{addr}"));
    api.register("alice", PASSWORD).await.unwrap();
    api.register("bob", PASSWORD).await.unwrap();
    let bob = api.login("bob", PASSWORD, "bob").await.unwrap();
    let mut bob = Connection::connect(&api.ws_url(), &bob.token)
        .await
        .unwrap();
    let alice = api.login("alice", PASSWORD, "alice").await.unwrap();
    for i in 0..4 {
        let mut alice = Connection::connect(&api.ws_url(), &alice.token)
            .await
            .unwrap();
        alice
            .send_text("bob", &format!("m{i}"), "a secret text")
            .await
            .unwrap();
        alice.close().await;
    }
    let mut received = 0;
    while received < 4 {
        if let ServerFrame::Message { .. } = bob.next_frame(PROMPTLY).await.unwrap() {
            received += 1;
        }
    }
    bob.close().await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    log.extend(lines.map(Result::unwrap));
    child.wait().unwrap();

    let all = log.join("\n");
    assert!(!all.contains('\x1b'), "colour codes in a pipe:\n{all}");
    assert!(!all.contains("a secret text"), "{all}");
    assert!(!all.contains("tungstenite"), "{all}");
    let expected = [
        "missive serving",
        "taking connections",
        "account registered",
        "device logged in",
        "shutdown signal received",
        "missive stopped",
    ];
    let others: Vec<&String> = log
        .iter()
        .filter(|line| !expected.iter().any(|known| line.contains(known)))
        .collect();
    assert!(
        others.len() <= 5,
        "more than a line per connection: {others:#?}"
    );
    assert!(all.contains("missive stopped"), "{all}");
}
