//! The group-chat CLI through the built binary: groups, sends into a
//! conversation, reactions, edits, history, receipts, contacts, blocks,
//! presence and privacy, with the documented output and exit codes.

mod common;

use std::process::Stdio;

use common::*;
use missive_client::{Api, Connection};
use missive_proto::{ClientFrame, ServerFrame, TypingState};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_walkthrough_through_the_cli() {
    // Goal: the README's group-chat walkthrough works through the real
    // binary: a group is created, a message sent into it arrives after the
    // `created` event, reactions and edits show in history, membership and
    // social commands print their JSON, and refusals exit 3 with the
    // server's error code.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let url = server.url.clone();
    let run = move |args: &[&str]| cli(config_dir.path(), &url, args);
    tokio::task::spawn_blocking(move || {
        // Runs a command as `profile`, asserts exit 0 and returns its stdout.
        let ok = |profile: &str, args: &[&str]| {
            let mut args = args.to_vec();
            args.extend(["--profile", profile]);
            let (code, stdout, stderr) = run(&args);
            assert_eq!(code, 0, "{args:?}: {stderr}");
            stdout
        };
        // Runs a command as `profile` that the server must refuse with `code`.
        let refused = |profile: &str, args: &[&str], code: &str| {
            let mut args = args.to_vec();
            args.extend(["--profile", profile]);
            let (status, stdout, stderr) = run(&args);
            assert_eq!(status, 3, "{args:?}: {stderr}");
            assert!(
                stderr.starts_with(&format!("error: {code}:")),
                "{args:?}: {stderr}"
            );
            assert_eq!(stdout, "", "{args:?}");
        };
        for user in ["alice", "bob", "carol"] {
            ok(user, &["register", user]);
            ok(user, &["login", user]);
        }

        let group = json(&ok(
            "alice",
            &[
                "group", "create", "Friends", "--member", "bob", "--member", "carol",
            ],
        ));
        assert_eq!(group["name"], "Friends");
        let mut members: Vec<(&str, &str)> = group["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["username"].as_str().unwrap(), m["role"].as_str().unwrap()))
            .collect();
        members.sort();
        assert_eq!(
            members,
            [("alice", "admin"), ("bob", "member"), ("carol", "member")]
        );
        let group_id = group["conversation"].as_i64().unwrap().to_string();
        let g = group_id.as_str();

        let sent = json(&ok("alice", &["send", "--group", g, "hello group"]));
        assert_eq!(sent["type"], "sent");
        assert_eq!(sent["conversation"], group["conversation"]);
        assert_eq!(sent["seq"], 2, "seq 1 is the `created` event");
        let message_id = sent["message_id"].as_str().unwrap().to_owned();
        let m = message_id.as_str();

        // What waits for bob: the system event, then the message; both acked.
        let frames = json_lines(&ok("bob", &["listen", "--count", "2"]));
        assert_eq!(frames.len(), 2);
        assert_eq!(
            (&frames[0]["type"], &frames[0]["kind"]),
            (&Value::from("message"), &Value::from("system"))
        );
        assert_eq!(frames[0]["event"]["action"], "created");
        assert_eq!(frames[0]["event"]["name"], "Friends");
        assert_eq!(
            (&frames[1]["kind"], &frames[1]["text"], &frames[1]["from"]),
            (
                &Value::from("text"),
                &Value::from("hello group"),
                &Value::from("alice")
            )
        );
        assert_eq!(frames[1]["message_id"].as_str(), Some(m));
        assert_eq!(ok("bob", &["listen", "--idle-secs", "1"]), "");

        // --conversation is --group; --reply-to links the reply.
        let reply = json(&ok(
            "carol",
            &["send", "--conversation", g, "--reply-to", m, "hi all"],
        ));
        assert_eq!(reply["seq"], 3);

        let reacted = json(&ok("bob", &["react", g, m, "👍"]));
        assert_eq!(reacted["type"], "sent");
        let reacted = json(&ok("carol", &["react", g, m, "🎉"]));
        assert_eq!(reacted["type"], "sent");
        json(&ok("carol", &["react", "--remove", g, m]));
        let edited = json(&ok("alice", &["edit", g, m, "hello everyone"]));
        assert_eq!(edited["type"], "sent");
        refused("bob", &["edit", g, m, "not mine"], "not_author");

        let history = json(&ok("carol", &["history", g]));
        let messages = history["messages"].as_array().unwrap();
        let original = messages
            .iter()
            .find(|message| message["message_id"].as_str() == Some(m))
            .expect("the message is in history");
        assert_eq!(original["text"], "hello everyone");
        assert!(original["edited_ms"].is_i64(), "{original}");
        assert_eq!(
            original["reactions"],
            serde_json::json!([{ "user": "bob", "emoji": "👍" }])
        );
        let the_reply = messages
            .iter()
            .find(|message| message["text"] == "hi all")
            .expect("the reply is in history");
        assert_eq!(the_reply["target"].as_str(), Some(m));
        // Newest first; --after pages oldest first, --limit bounds it.
        let seqs: Vec<i64> = messages
            .iter()
            .map(|message| message["seq"].as_i64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
        let page = json(&ok(
            "carol",
            &["history", g, "--after", "1", "--limit", "2"],
        ));
        let page_seqs: Vec<i64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(page_seqs, [2, 3]);

        let info = json(&ok("alice", &["receipts", g, m]));
        assert_eq!(info["message_id"].as_str(), Some(m));
        assert!(
            info["delivered"]
                .as_array()
                .unwrap()
                .iter()
                .any(|entry| entry["user"] == "bob"),
            "{info}"
        );

        let listed = json(&ok("bob", &["conversations"]));
        let summary = &listed["conversations"][0];
        assert_eq!(
            (&summary["kind"], &summary["name"]),
            (&Value::from("group"), &Value::from("Friends"))
        );

        // Only admins change the group.
        refused("bob", &["group", "add", g, "alice"], "not_admin");
        refused("bob", &["group", "rename", g, "Mine"], "not_admin");
        let renamed = json(&ok("alice", &["group", "rename", g, "Best friends"]));
        assert_eq!(renamed["name"], "Best friends");
        let role_of = |info: &Value, user: &str| {
            info["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["username"] == user)
                .map(|m| m["role"].as_str().unwrap().to_owned())
        };
        let promoted = json(&ok("alice", &["group", "promote", g, "bob"]));
        assert_eq!(role_of(&promoted, "bob").as_deref(), Some("admin"));
        let demoted = json(&ok("alice", &["group", "demote", g, "bob"]));
        assert_eq!(role_of(&demoted, "bob").as_deref(), Some("member"));

        let removed = json(&ok("alice", &["group", "remove", g, "carol"]));
        assert_eq!(role_of(&removed, "carol"), None, "{removed}");
        refused(
            "carol",
            &["send", "--group", g, "still here?"],
            "not_member",
        );
        let info = json(&ok("bob", &["group", "info", g]));
        assert_eq!(info["members"].as_array().unwrap().len(), 2);
        assert_eq!(
            json(&ok("bob", &["group", "leave", g])),
            serde_json::json!({ "left": group["conversation"] })
        );

        // Contacts and blocks.
        assert_eq!(
            json(&ok("alice", &["contacts", "add", "bob"])),
            serde_json::json!({ "contact_added": "bob" })
        );
        assert_eq!(
            json(&ok("alice", &["contacts"])),
            serde_json::json!({ "users": ["bob"] })
        );
        assert_eq!(
            json(&ok("alice", &["contacts", "list"])),
            serde_json::json!({ "users": ["bob"] })
        );
        assert_eq!(
            json(&ok("alice", &["block", "carol"])),
            serde_json::json!({ "blocked": "carol" })
        );
        assert_eq!(
            json(&ok("alice", &["blocks"])),
            serde_json::json!({ "users": ["carol"] })
        );
        refused("carol", &["send", "alice", "let me in"], "blocked");
        json(&ok("alice", &["unblock", "carol"]));
        json(&ok("carol", &["send", "alice", "thanks"]));
        json(&ok("alice", &["contacts", "remove", "bob"]));
        assert_eq!(
            json(&ok("alice", &["contacts"])),
            serde_json::json!({ "users": [] })
        );

        // Privacy and presence: one line per distinct user.
        assert_eq!(
            json(&ok("bob", &["privacy"])),
            serde_json::json!({ "presence": "everyone" })
        );
        assert_eq!(
            json(&ok("carol", &["privacy", "nobody"])),
            serde_json::json!({ "presence": "nobody" })
        );
        assert_eq!(
            json(&ok("carol", &["privacy"])),
            serde_json::json!({ "presence": "nobody" })
        );
        let seen = json_lines(&ok("alice", &["presence", "bob", "carol", "bob"]));
        assert_eq!(seen.len(), 2, "{seen:?}");
        for frame in &seen {
            assert_eq!(frame["type"], "presence");
            assert_eq!(frame["online"], false, "{frame}");
        }
        let carol = seen.iter().find(|frame| frame["user"] == "carol").unwrap();
        assert_eq!(carol.get("last_seen_ms"), None, "hidden by privacy");
        refused("alice", &["presence", "nobody"], "unknown_user");

        // Usage errors exit 2 before talking to the server.
        assert_eq!(run(&["send", "hi", "--profile", "alice"]).0, 2);
        assert_eq!(run(&["react", g, m, "--profile", "alice"]).0, 2);
        assert_eq!(run(&["contacts", "add", "--profile", "alice"]).0, 2);
        assert_eq!(
            run(&["history", g, "--before", "3", "--after", "1"]).0,
            2,
            "--before and --after conflict"
        );
    })
    .await
    .unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_ephemeral_prints_typing_and_presence() {
    // Goal: `listen --ephemeral --presence USER` prints `typing` and
    // `presence` frames besides the stored events. Bob's listen runs as a
    // child process whose lines are read as they come; alice acts over a
    // direct WebSocket only after bob's subscription answered, so nothing
    // here waits on a timer.
    let data_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    api.register("alice", PASSWORD).await.unwrap();
    api.register("bob", PASSWORD).await.unwrap();
    let alice_token = api.login("alice", PASSWORD, "a").await.unwrap().token;
    // Bob's device exists before the group, so the `created` event is
    // above its position (a device created later starts after it).
    let (code, _, stderr) = cli(
        config_dir.path(),
        &server.url,
        &["login", "bob", "--profile", "bob"],
    );
    assert_eq!(code, 0, "{stderr}");
    let group = api
        .create_group(&alice_token, "Pair", &["bob"])
        .await
        .unwrap();

    let mut listen = tokio::process::Command::new(BIN)
        .args(["listen", "--profile", "bob", "--ephemeral"])
        .args(["--presence", "alice", "--count", "4", "--idle-secs", "30"])
        .env("MISSIVE_CONFIG_DIR", config_dir.path())
        .env("MISSIVE_SERVER", &server.url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn missive listen");
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        let line = tokio::time::timeout(PROMPTLY, lines.next_line())
            .await
            .expect("listen prints promptly")
            .expect("read stdout")
            .expect("listen exited early");
        json(&line)
    };

    // The stored `created` event and the subscription's answer, in either
    // order: alice is offline.
    let mut first = [next_line().await, next_line().await];
    first.sort_by_key(|frame| frame["type"].to_string());
    assert_eq!(
        (&first[0]["type"], &first[0]["kind"]),
        (&Value::from("message"), &Value::from("system"))
    );
    assert_eq!(
        (&first[1]["type"], &first[1]["user"], &first[1]["online"]),
        (
            &Value::from("presence"),
            &Value::from("alice"),
            &Value::from(false)
        )
    );

    // Alice comes online and types.
    let mut alice = Connection::connect(&api.ws_url(), &alice_token)
        .await
        .unwrap();
    let typing = ClientFrame::Typing {
        id: Some("t".into()),
        conversation: group.conversation,
        state: TypingState::Start,
    };
    alice.send_frame(&typing).await.unwrap();
    loop {
        match alice.next_frame(PROMPTLY).await.unwrap() {
            ServerFrame::Ok { id } if id.as_deref() == Some("t") => break,
            ServerFrame::Error { message, .. } => panic!("typing refused: {message}"),
            _ => {}
        }
    }
    let mut then = [next_line().await, next_line().await];
    then.sort_by_key(|frame| frame["type"].to_string());
    assert_eq!(
        (&then[0]["type"], &then[0]["user"], &then[0]["online"]),
        (
            &Value::from("presence"),
            &Value::from("alice"),
            &Value::from(true)
        )
    );
    assert_eq!(
        (&then[1]["type"], &then[1]["from"], &then[1]["state"]),
        (
            &Value::from("typing"),
            &Value::from("alice"),
            &Value::from("start")
        )
    );
    assert_eq!(then[1]["conversation"], group.conversation);

    // --count 4 reached: listen exits 0 on its own.
    let status = tokio::time::timeout(PROMPTLY, listen.wait())
        .await
        .expect("listen exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    alice.close().await;
    drop(server);
}
