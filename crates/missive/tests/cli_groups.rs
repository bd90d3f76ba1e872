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
    let (_data_dir, config_dir, server) = server_and_config_dir();
    let cli = Cli {
        config_dir,
        url: server.url.clone(),
    };
    tokio::task::spawn_blocking(move || {
        let group = create_the_group(&cli);
        let group_id = group["conversation"].as_i64().unwrap().to_string();
        let g = group_id.as_str();
        let message_id = send_and_listen(&cli, &group, g);
        let m = message_id.as_str();
        reply_react_edit_and_read_history(&cli, g, m);
        receipts_and_the_conversation_list(&cli, g, m);
        only_admins_change_the_group(&cli, &group, g);
        contacts_and_blocks(&cli);
        privacy_and_presence(&cli);
        usage_errors(&cli, g, m);
    })
    .await
    .unwrap();
    drop(server);
}

/// The CLI with its own config dir, against one server.
struct Cli {
    config_dir: tempfile::TempDir,
    url: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        cli(self.config_dir.path(), &self.url, args)
    }

    /// Runs a command as `profile`, asserts exit 0 and returns its stdout.
    fn ok(&self, profile: &str, args: &[&str]) -> String {
        let mut args = args.to_vec();
        args.extend(["--profile", profile]);
        let (code, stdout, stderr) = self.run(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        stdout
    }

    /// Runs a command as `profile` that the server must refuse with `code`.
    fn refused(&self, profile: &str, args: &[&str], code: &str) {
        let mut args = args.to_vec();
        args.extend(["--profile", profile]);
        let (status, stdout, stderr) = self.run(&args);
        assert_eq!(status, 3, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {code}:")),
            "{args:?}: {stderr}"
        );
        assert_eq!(stdout, "", "{args:?}");
    }
}

/// alice, bob and carol register and log in; alice creates "Friends" with
/// the other two. Returns the group's JSON.
fn create_the_group(cli: &Cli) -> Value {
    for user in ["alice", "bob", "carol"] {
        cli.ok(user, &["register", user]);
        cli.ok(user, &["login", user]);
    }

    let group = json(&cli.ok(
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
    group
}

/// alice sends into the group; bob's listen prints the `created` event and
/// then the message. Returns the message's id.
fn send_and_listen(cli: &Cli, group: &Value, g: &str) -> String {
    let sent = json(&cli.ok("alice", &["send", "--group", g, "hello group"]));
    assert_eq!(sent["type"], "sent");
    assert_eq!(sent["conversation"], group["conversation"]);
    assert_eq!(sent["seq"], 2, "seq 1 is the `created` event");
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    let m = message_id.as_str();

    // What waits for bob: the system event, then the message; both acked.
    let frames = json_lines(&cli.ok("bob", &["listen", "--count", "2"]));
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
    assert_eq!(cli.ok("bob", &["listen", "--idle-secs", "1"]), "");
    message_id
}

/// A reply, reactions and an edit, and how history shows them.
fn reply_react_edit_and_read_history(cli: &Cli, g: &str, m: &str) {
    // --conversation is --group; --reply-to links the reply.
    let reply = json(&cli.ok(
        "carol",
        &["send", "--conversation", g, "--reply-to", m, "hi all"],
    ));
    assert_eq!(reply["seq"], 3);

    let reacted = json(&cli.ok("bob", &["react", g, m, "👍"]));
    assert_eq!(reacted["type"], "sent");
    let reacted = json(&cli.ok("carol", &["react", g, m, "🎉"]));
    assert_eq!(reacted["type"], "sent");
    json(&cli.ok("carol", &["react", "--remove", g, m]));
    let edited = json(&cli.ok("alice", &["edit", g, m, "hello everyone"]));
    assert_eq!(edited["type"], "sent");
    cli.refused("bob", &["edit", g, m, "not mine"], "not_author");

    let history = json(&cli.ok("carol", &["history", g]));
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
    let page = json(&cli.ok("carol", &["history", g, "--after", "1", "--limit", "2"]));
    let page_seqs: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(page_seqs, [2, 3]);
}

/// The message's receipts and bob's conversation list.
fn receipts_and_the_conversation_list(cli: &Cli, g: &str, m: &str) {
    let info = json(&cli.ok("alice", &["receipts", g, m]));
    assert_eq!(info["message_id"].as_str(), Some(m));
    assert!(
        info["delivered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["user"] == "bob"),
        "{info}"
    );

    let listed = json(&cli.ok("bob", &["conversations"]));
    let summary = &listed["conversations"][0];
    assert_eq!(
        (&summary["kind"], &summary["name"]),
        (&Value::from("group"), &Value::from("Friends"))
    );
}

/// Only admins change the group: rename, promote, demote, remove; then bob
/// leaves.
fn only_admins_change_the_group(cli: &Cli, group: &Value, g: &str) {
    cli.refused("bob", &["group", "add", g, "alice"], "not_admin");
    cli.refused("bob", &["group", "rename", g, "Mine"], "not_admin");
    let renamed = json(&cli.ok("alice", &["group", "rename", g, "Best friends"]));
    assert_eq!(renamed["name"], "Best friends");
    let role_of = |info: &Value, user: &str| {
        info["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["username"] == user)
            .map(|m| m["role"].as_str().unwrap().to_owned())
    };
    let promoted = json(&cli.ok("alice", &["group", "promote", g, "bob"]));
    assert_eq!(role_of(&promoted, "bob").as_deref(), Some("admin"));
    let demoted = json(&cli.ok("alice", &["group", "demote", g, "bob"]));
    assert_eq!(role_of(&demoted, "bob").as_deref(), Some("member"));

    let removed = json(&cli.ok("alice", &["group", "remove", g, "carol"]));
    assert_eq!(role_of(&removed, "carol"), None, "{removed}");
    cli.refused(
        "carol",
        &["send", "--group", g, "still here?"],
        "not_member",
    );
    let info = json(&cli.ok("bob", &["group", "info", g]));
    assert_eq!(info["members"].as_array().unwrap().len(), 2);
    assert_eq!(
        json(&cli.ok("bob", &["group", "leave", g])),
        serde_json::json!({ "left": group["conversation"] })
    );
}

/// Contacts and blocks.
fn contacts_and_blocks(cli: &Cli) {
    assert_eq!(
        json(&cli.ok("alice", &["contacts", "add", "bob"])),
        serde_json::json!({ "contact_added": "bob" })
    );
    assert_eq!(
        json(&cli.ok("alice", &["contacts"])),
        serde_json::json!({ "users": ["bob"] })
    );
    assert_eq!(
        json(&cli.ok("alice", &["contacts", "list"])),
        serde_json::json!({ "users": ["bob"] })
    );
    assert_eq!(
        json(&cli.ok("alice", &["block", "carol"])),
        serde_json::json!({ "blocked": "carol" })
    );
    assert_eq!(
        json(&cli.ok("alice", &["blocks"])),
        serde_json::json!({ "users": ["carol"] })
    );
    cli.refused("carol", &["send", "alice", "let me in"], "blocked");
    json(&cli.ok("alice", &["unblock", "carol"]));
    json(&cli.ok("carol", &["send", "alice", "thanks"]));
    json(&cli.ok("alice", &["contacts", "remove", "bob"]));
    assert_eq!(
        json(&cli.ok("alice", &["contacts"])),
        serde_json::json!({ "users": [] })
    );
}

/// Privacy and presence: one line per distinct user.
fn privacy_and_presence(cli: &Cli) {
    assert_eq!(
        json(&cli.ok("bob", &["privacy"])),
        serde_json::json!({ "presence": "everyone" })
    );
    assert_eq!(
        json(&cli.ok("carol", &["privacy", "nobody"])),
        serde_json::json!({ "presence": "nobody" })
    );
    assert_eq!(
        json(&cli.ok("carol", &["privacy"])),
        serde_json::json!({ "presence": "nobody" })
    );
    let seen = json_lines(&cli.ok("alice", &["presence", "bob", "carol", "bob"]));
    assert_eq!(seen.len(), 2, "{seen:?}");
    for frame in &seen {
        assert_eq!(frame["type"], "presence");
        assert_eq!(frame["online"], false, "{frame}");
    }
    let carol = seen.iter().find(|frame| frame["user"] == "carol").unwrap();
    assert_eq!(carol.get("last_seen_ms"), None, "hidden by privacy");
    cli.refused("alice", &["presence", "nobody"], "unknown_user");
}

/// Usage errors exit 2 before talking to the server.
fn usage_errors(cli: &Cli, g: &str, m: &str) {
    assert_eq!(cli.run(&["send", "hi", "--profile", "alice"]).0, 2);
    assert_eq!(cli.run(&["react", g, m, "--profile", "alice"]).0, 2);
    assert_eq!(cli.run(&["contacts", "add", "--profile", "alice"]).0, 2);
    assert_eq!(
        cli.run(&["history", g, "--before", "3", "--after", "1"]).0,
        2,
        "--before and --after conflict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_ephemeral_prints_typing_and_presence() {
    // Goal: `listen --ephemeral --presence USER` prints `typing` and
    // `presence` frames besides the stored events. Bob's listen runs as a
    // child process whose lines are read as they come; alice acts over a
    // direct WebSocket only after bob's subscription answered, so nothing
    // here waits on a timer.
    let (_data_dir, config_dir, server) = server_and_config_dir();
    let api = Api::new(&server.url);
    let (alice_token, conversation) =
        a_group_of_alice_and_bob(&api, config_dir.path(), &server.url).await;
    let mut listen = BobsListen::spawn(config_dir.path(), &server.url);
    listen.prints_the_created_event_and_alice_offline().await;
    let alice = alice_comes_online_and_types(&api, &alice_token, conversation).await;
    listen.prints_alice_online_and_typing(conversation).await;

    // --count 4 reached: listen exits 0 on its own.
    let status = tokio::time::timeout(PROMPTLY, listen.child.wait())
        .await
        .expect("listen exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    alice.close().await;
    drop(server);
}

/// alice and bob register (bob's device through the CLI); alice makes a
/// group with bob. Returns alice's token and the group.
async fn a_group_of_alice_and_bob(
    api: &Api,
    config_dir: &std::path::Path,
    url: &str,
) -> (String, i64) {
    api.register("alice", PASSWORD).await.unwrap();
    api.register("bob", PASSWORD).await.unwrap();
    let alice_token = api.login("alice", PASSWORD, "a").await.unwrap().token;
    // Bob's device exists before the group, so the `created` event is
    // above its position (a device created later starts after it).
    let (code, _, stderr) = cli(config_dir, url, &["login", "bob", "--profile", "bob"]);
    assert_eq!(code, 0, "{stderr}");
    let group = api
        .create_group(&alice_token, "Pair", &["bob"])
        .await
        .unwrap();
    (alice_token, group.conversation)
}

/// Bob's `listen --ephemeral --presence alice --count 4` as a child
/// process, its lines read as they come.
struct BobsListen {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl BobsListen {
    fn spawn(config_dir: &std::path::Path, url: &str) -> Self {
        let mut child = tokio::process::Command::new(BIN)
            .args(["listen", "--profile", "bob", "--ephemeral"])
            .args(["--presence", "alice", "--count", "4", "--idle-secs", "30"])
            .env("MISSIVE_CONFIG_DIR", config_dir)
            .env("MISSIVE_SERVER", url)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn missive listen");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(PROMPTLY, self.lines.next_line())
            .await
            .expect("listen prints promptly")
            .expect("read stdout")
            .expect("listen exited early");
        json(&line)
    }

    /// The stored `created` event and the subscription's answer, in either
    /// order: alice is offline.
    async fn prints_the_created_event_and_alice_offline(&mut self) {
        let mut first = [self.next_line().await, self.next_line().await];
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
    }

    /// alice's presence, now online, and her typing, in either order.
    async fn prints_alice_online_and_typing(&mut self, conversation: i64) {
        let mut then = [self.next_line().await, self.next_line().await];
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
        assert_eq!(then[1]["conversation"], conversation);
    }
}

/// Alice comes online and types; returns once the server took it.
async fn alice_comes_online_and_types(
    api: &Api,
    alice_token: &str,
    conversation: i64,
) -> Connection {
    let mut alice = Connection::connect(&api.ws_url(), alice_token)
        .await
        .unwrap();
    let typing = ClientFrame::Typing {
        id: Some("t".into()),
        conversation,
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
    alice
}
