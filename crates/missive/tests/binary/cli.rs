//! The CLI against a running server: walkthrough and exit codes, server
//! selection, conversations by id or name, long polling and files.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_walkthrough_and_exit_codes() {
    // Goal: the README walkthrough works through the real binary, and the
    // documented exit codes hold for refusals, missing logins and no server.
    let (_data_dir, config_dir, server) = server_and_config_dir();
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

        text_output_for_people(&run);

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
    no_server_exits_4_and_another_scheme_2();
}

/// For people: --output text (or MISSIVE_OUTPUT=text), before or after
/// the command.
fn text_output_for_people(run: &impl Fn(&[&str]) -> (i32, String, String)) {
    let (code, stdout, stderr) = run(&["--output", "text", "history", "bob", "--profile", "alice"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout.trim();
    assert!(line.ends_with("] 1 alice: hello bob"), "{stdout}");
    assert!(serde_json::from_str::<serde_json::Value>(line).is_err());
    let (code, stdout, _) = run(&["conversations", "--profile", "alice", "--output", "text"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("#1  alice, bob  last: ["), "{stdout}");
    let (code, _, stderr) = run(&["history", "bob", "--profile", "alice", "--output", "yaml"]);
    assert_eq!(code, 2, "{stderr}");
}

fn no_server_exits_4_and_another_scheme_2() {
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
    let (_data_dir, config_dir, server) = server_and_config_dir();
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
    let (_data_dir, config_dir, server) = server_and_config_dir();
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

        a_name_for_a_conversation(&run);
    })
    .await
    .unwrap();
    drop(server);
}

/// A person's name for a conversation: the other member, or a group's
/// name; one that names two conversations asks for the id.
fn a_name_for_a_conversation(run: &impl Fn(&[&str]) -> (i32, String, String)) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_over_long_polling_prints_and_acks_like_the_websocket() {
    // Goal: `listen --poll` prints stored events as JSON lines and acks
    // them, so a second listen (over either transport) finds nothing.
    let (_data_dir, config_dir, server) = server_and_config_dir();
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
