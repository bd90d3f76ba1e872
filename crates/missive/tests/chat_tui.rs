//! `missive chat`, the terminal app, driven as a person would: the real
//! binary in a tmux pane (keys sent with `send-keys`, the screen read with
//! `capture-pane`) against a real server, the other users acting through
//! the CLI. Assertions are on the screen's text.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

static NEXT_SOCKET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Tmux {
    /// `None` (with the reason printed) when tmux is missing outside CI;
    /// under CI a missing tmux fails the test.
    fn new() -> Option<Self> {
        let present = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|out| out.status.success());
        if !present {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is not installed (.ci/run installs it)"
            );
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let n = NEXT_SOCKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Self {
            socket: format!("missive-test-{}-{n}", std::process::id()),
        })
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        let output = Command::new("tmux")
            .args(["-u", "-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Opens `missive chat --profile <profile>` in a new session named
    /// after the profile, `width` × `height`, working in `config` (where
    /// downloads land).
    fn chat(&self, config: &Path, profile: &str, width: u16, height: u16) {
        let command = format!(
            "env LANG=C.UTF-8 LC_ALL=C.UTF-8 MISSIVE_CONFIG_DIR='{}' '{BIN}' chat --profile {profile}",
            config.display()
        );
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            profile,
            "-c",
            &config.display().to_string(),
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &command,
        ]);
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, session: &str, text: &str) {
        self.tmux(&["send-keys", "-t", session, "-l", text]);
    }

    /// Presses named keys (`Enter`, `Tab`, `Up`, `q`…).
    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", session]).stdout)
            .into_owned()
    }

    /// Reads the screen until `ready` holds for it, at most [`PROMPTLY`];
    /// returns that screen. The app has no other way to tell us it has
    /// drawn; the pause between reads spares the machine a busy loop.
    fn wait_for(&self, session: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let screen = self.screen(session);
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{session}'s screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&self, session: &str, text: &str) -> String {
        self.wait_for(session, &format!("{text:?}"), |screen| {
            screen.contains(text)
        })
    }

    /// Waits until the conversation's line showing `text` ends with `mark`
    /// (so `✓` is not `✓✓`).
    fn wait_for_mark(&self, session: &str, text: &str, mark: &str) -> String {
        self.wait_for(session, &format!("{text:?} marked {mark}"), |screen| {
            conversation_lines(screen)
                .iter()
                .find(|line| line.contains(text))
                .is_some_and(|line| {
                    let line = line.trim_end_matches(['│', ' ']);
                    line.ends_with(&format!(" {mark}"))
                })
        })
    }

    /// Waits, at most [`PROMPTLY`], for the app in `session` to exit (its
    /// session ends with it), polled like [`Tmux::wait_for`].
    fn wait_for_exit(&self, session: &str, after: &str) {
        let deadline = Instant::now() + PROMPTLY;
        while Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", session])
            .output()
            .is_ok_and(|out| out.status.success())
        {
            assert!(Instant::now() < deadline, "{after} did not quit the app");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The right-hand pane's part of each line (the list is 28 columns wide
/// on a terminal of 84 columns or more).
fn conversation_lines(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(|line| line.chars().skip(28).collect())
        .collect()
}

fn line_with<'a>(screen: &'a str, text: &str) -> Option<&'a str> {
    screen.lines().find(|line| line.contains(text))
}

/// Registers and logs in each user under a profile of its name.
fn accounts(config: &Path, server: &str, users: &[&str]) {
    for user in users {
        for args in [
            vec!["register", user],
            vec!["login", user, "--profile", user],
        ] {
            let (code, _, stderr) = cli(config, server, &args);
            assert_eq!(code, 0, "{args:?}: {stderr}");
        }
    }
}

/// Runs a CLI command as `profile`; asserts success and returns its JSON.
fn as_user(config: &Path, server: &str, profile: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--profile", profile]);
    let (code, stdout, stderr) = cli(config, server, &args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

/// The texts of a conversation's history, oldest first.
fn history_texts(config: &Path, server: &str, profile: &str, conversation: &str) -> Vec<String> {
    let page = as_user(config, server, profile, &["history", conversation]);
    let mut texts: Vec<String> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["kind"] == "text")
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    texts.reverse();
    texts
}

#[test]
fn two_users_chat_both_ways_and_see_their_ticks_change() {
    // Goal: a 1:1 chat started by username works both ways, and the
    // sender's ticks go sent → delivered (the other device connected) →
    // read (the other user opened the chat); typing shows on the other
    // side; the help screen lists the keys; q quits.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    accounts(config.path(), &server.url, &["alice", "bob"]);

    tmux.chat(config.path(), "alice", 100, 30);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["n"]);
    tmux.type_text("alice", "bob");
    tmux.keys("alice", &["Enter"]);
    tmux.type_text("alice", "hello bob");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_mark("alice", "hello bob", "✓");

    tmux.chat(config.path(), "bob", 100, 30);
    tmux.wait_for_text("bob", "(1)");
    tmux.wait_for("bob", "alice online in the list", |screen| {
        line_with(screen, "alice").is_some_and(|entry| entry.starts_with("│● alice"))
    });
    tmux.wait_for_mark("alice", "hello bob", "✓✓");

    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_text("bob", "hello bob");
    tmux.wait_for_mark("alice", "hello bob", "✔✔");

    tmux.type_text("bob", "hi");
    tmux.wait_for_text("alice", "bob is typing…");
    tmux.type_text("bob", " alice");
    tmux.keys("bob", &["M-Enter"]);
    tmux.type_text("bob", "second line");
    tmux.keys("bob", &["Enter"]);
    // One text of two lines, and typing ends with the send.
    tmux.wait_for("alice", "bob's text of two lines", |screen| {
        let lines = conversation_lines(screen);
        let first = lines.iter().position(|l| l.contains("hi alice"));
        first.is_some_and(|at| lines.get(at + 1).is_some_and(|l| l.contains("second line")))
            && !screen.contains("typing…")
    });
    tmux.wait_for_mark("bob", "second line", "✔✔");

    // Every burst above was read on the one connection each app opened:
    // nothing made either reconnect.
    let connects = tokio::runtime::Runtime::new().unwrap().block_on(metric(
        &server.url,
        "missive_connect_seconds_count{step=\"ready\"}",
    ));
    assert_eq!(connects, 2.0, "one connection per app");

    tmux.keys("alice", &["Tab", "?"]);
    tmux.wait_for("alice", "the help screen", |s| {
        s.contains("Keys") && s.contains("reply, edit, delete")
    });
    tmux.keys("alice", &["Escape"]);
    tmux.wait_for("alice", "the help screen closed", |s| !s.contains(" Keys "));
    tmux.keys("alice", &["C-c"]);
    tmux.wait_for_exit("alice", "Ctrl-C");
    assert_eq!(
        history_texts(config.path(), &server.url, "bob", "alice"),
        vec!["hello bob", "hi alice\nsecond line"]
    );
}

#[test]
fn a_group_of_three_with_replies_reactions_edits_and_deletes() {
    // Goal: a group made in the app reaches its members; their texts show
    // under their names; a reply quotes, a reaction, an edit and a delete
    // made on a selected message reach the server as such.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    let url = server.url.as_str();
    accounts(config.path(), url, &["alice", "bob", "carol"]);

    tmux.chat(config.path(), "alice", 100, 30);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["g"]);
    tmux.type_text("alice", "trip");
    tmux.keys("alice", &["Enter"]);
    tmux.type_text("alice", "bob");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "alice created the group trip");
    tmux.wait_for_text("alice", "trip · 2 members");
    tmux.keys("alice", &["Tab", "a"]);
    tmux.type_text("alice", "carol");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "alice added carol");
    tmux.wait_for_text("alice", "trip · 3 members");
    tmux.keys("alice", &["Tab"]);
    tmux.type_text("alice", "hello all");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_mark("alice", "hello all", "✓");

    // Both members' devices receive it (bob: the creation, carol's
    // addition and the text; carol: her addition and the text): only then
    // is it delivered.
    for (member, events) in [("bob", "3"), ("carol", "2")] {
        as_user(config.path(), url, member, &["listen", "--count", events]);
    }
    tmux.wait_for_mark("alice", "hello all", "✓✓");
    let pdf = config.path().join("upload").join("notes.pdf");
    std::fs::create_dir(pdf.parent().unwrap()).unwrap();
    let bytes = b"%PDF-1.7\n1 0 obj << >> endobj\ntrailer\n%%EOF\n";
    std::fs::write(&pdf, bytes).unwrap();
    let pdf = pdf.display().to_string();
    as_user(
        config.path(),
        url,
        "carol",
        &["send", "--group", "trip", "the plan", "--file", &pdf],
    );
    tmux.wait_for_text(
        "alice",
        &format!("📎 notes.pdf (application/pdf, {} B)", bytes.len()),
    );
    tmux.keys("alice", &["Up", "d"]);
    tmux.wait_for_text("alice", &format!("Saved notes.pdf ({} B)", bytes.len()));
    assert_eq!(
        std::fs::read(config.path().join("notes.pdf")).unwrap(),
        bytes
    );
    tmux.keys("alice", &["Escape"]);
    as_user(
        config.path(),
        url,
        "carol",
        &["send", "--group", "trip", "hi from carol"],
    );
    let screen = tmux.wait_for_text("alice", "hi from carol");
    let lines = conversation_lines(&screen);
    let at = lines.iter().position(|l| l.contains("the plan")).unwrap();
    assert_eq!(
        lines[at - 1].trim_matches(['│', ' ']),
        "carol",
        "sender named above:\n{screen}"
    );

    // Reply to carol's text (the newest), then react to it.
    tmux.keys("alice", &["Up", "r"]);
    tmux.wait_for_text("alice", "Reply to carol: hi from carol");
    tmux.type_text("alice", "great");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "┃ carol: hi from carol");
    tmux.wait_for_mark("alice", "great", "✓");
    tmux.keys("alice", &["Up", "Up", "+"]);
    tmux.wait_for_text("alice", "React (1 👍");
    tmux.keys("alice", &["1", "Enter"]);
    tmux.wait_for_text("alice", "👍 alice");

    // Edit "great", then delete "hello all" (above the plan and carol's).
    tmux.keys("alice", &["Up", "e"]);
    tmux.wait_for_text("alice", "Edit message");
    tmux.type_text("alice", "!");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "great!");
    tmux.keys("alice", &["Up", "Up", "Up", "Up", "x"]);
    tmux.wait_for_text("alice", "Delete this message for everyone?");
    tmux.keys("alice", &["y"]);
    tmux.wait_for_text("alice", "(message deleted)");

    let page = as_user(config.path(), url, "bob", &["history", "trip"]);
    let texts: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "text")
        .collect();
    let by_text = |text: &str| {
        texts
            .iter()
            .find(|m| m["text"] == text)
            .unwrap_or_else(|| panic!("{text:?} not in {page}"))
    };
    let carols = by_text("hi from carol");
    assert_eq!(carols["reactions"][0]["emoji"], "👍", "{page}");
    assert_eq!(carols["reactions"][0]["user"], "alice");
    let reply = by_text("great!");
    assert_eq!(reply["target"], carols["message_id"]);
    assert!(reply["edited_ms"].is_i64(), "{reply}");
    assert!(
        texts
            .iter()
            .any(|m| m["deleted"] == true && m["from"] == "alice"),
        "hello all deleted: {page}"
    );
}

/// A port nothing listens on now, so a server can be restarted on it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn texts_typed_offline_go_out_once_and_a_restart_shows_what_waited() {
    // Goal: with the server down the app says it is offline and keeps what
    // is typed in its outbox (marked waiting); when the server is back it
    // sends each once (the history holds one copy). Messages sent while
    // the app was closed are there, counted unread, when it starts again.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = ServerProcess::start_listening(data.path(), &listen);
    let url = server.url.clone();
    accounts(config.path(), &url, &["alice", "bob"]);
    as_user(config.path(), &url, "bob", &["send", "alice", "first"]);

    tmux.chat(config.path(), "alice", 100, 30);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "first");

    server.kill_9();
    tmux.wait_for_text("alice", "offline");
    tmux.type_text("alice", "sent while away");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_mark("alice", "sent while away", "◷");
    tmux.wait_for_text("alice", "1 waiting to send");

    let server = ServerProcess::start_listening(data.path(), &listen);
    tmux.wait_for_mark("alice", "sent while away", "✓");
    tmux.wait_for_text("alice", "online as alice");
    assert_eq!(
        history_texts(config.path(), &url, "bob", "alice"),
        vec!["first", "sent while away"]
    );

    tmux.keys("alice", &["Tab", "q"]);
    tmux.wait_for_exit("alice", "q");
    for text in ["while you were out", "and another"] {
        as_user(config.path(), &url, "bob", &["send", "alice", text]);
    }
    tmux.chat(config.path(), "alice", 100, 30);
    let screen = tmux.wait_for_text("alice", "(2)");
    assert!(screen.contains("and another"), "{screen}");
    tmux.keys("alice", &["Enter"]);
    let all = [
        "first",
        "sent while away",
        "while you were out",
        "and another",
    ];
    tmux.wait_for("alice", "the whole chat, in seq order", |screen| {
        let lines = conversation_lines(screen);
        let order: Option<Vec<usize>> = all
            .iter()
            .map(|text| lines.iter().position(|l| l.contains(text)))
            .collect();
        order.is_some_and(|order| order.is_sorted())
    });
    drop(server);
}

#[test]
fn the_screen_follows_a_resize_and_a_refusal_shows_in_the_status_line() {
    // Goal: a text to someone who blocked us is marked not sent with the
    // reason in words on the status line (no crash, no JSON); the app
    // redraws to a smaller terminal (80 × 24) with nothing cut off.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    let url = server.url.as_str();
    accounts(config.path(), url, &["alice", "bob"]);
    as_user(
        config.path(),
        url,
        "alice",
        &["send", "bob", "before the block"],
    );
    as_user(config.path(), url, "bob", &["block", "alice"]);

    tmux.chat(config.path(), "alice", 120, 40);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "before the block");
    tmux.type_text("alice", "are you there");
    tmux.keys("alice", &["Enter"]);
    let screen = tmux.wait_for_text("alice", "Not sent: you cannot message this user");
    assert!(!screen.contains('{'), "no JSON on screen:\n{screen}");
    tmux.wait_for_mark("alice", "are you there", "✗ not sent");

    tmux.tmux(&["resize-window", "-t", "alice", "-x", "80", "-y", "24"]);
    // Redrawn whole: 24 lines of 80 columns, the frame closed above the
    // status line, which is the last (a capture may catch the redraw
    // half done, so all of it is the condition).
    let screen = tmux.wait_for("alice", "a whole 80 × 24 screen", |screen| {
        let lines: Vec<&str> = screen.lines().collect();
        lines.len() == 24
            && lines[0].chars().count() == 80
            && lines[0].ends_with('┐')
            && lines[22].starts_with('└')
            && lines[22].ends_with('┘')
            && lines[23].contains("online as alice")
    });
    assert!(screen.contains("before the block"), "{screen}");
}

#[test]
fn an_encrypted_group_is_plain_text_only_on_the_screens() {
    // Goal: the terminal app holds its device's keys: in an encrypted
    // group it shows a CLI user's message decrypted (live and from
    // history), seals what is typed so the CLI reads it decrypted, keeps
    // neither text in the server's files, shows a tampered ciphertext
    // as rejected, never as its bytes, and opens a sealed file.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    accounts(config.path(), &server.url, &["alice", "bob", "carol"]);
    let (dir, url) = (config.path(), server.url.as_str());
    let created = as_user(
        dir,
        url,
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
    );
    let group = created["conversation"].as_i64().expect("group id");
    as_user(
        dir,
        url,
        "alice",
        &[
            "send",
            "--group",
            &group.to_string(),
            "MARKER-tui1 from the cli",
        ],
    );

    tmux.chat(dir, "bob", 100, 30);
    tmux.wait_for_text("bob", "(1)");
    tmux.keys("bob", &["Enter"]);
    let screen = tmux.wait_for_text("bob", "MARKER-tui1 from the cli");
    assert!(
        screen.contains("🔒 sealed"),
        "the header says so:\n{screen}"
    );
    tmux.type_text("bob", "MARKER-tui2 from the terminal");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_mark("bob", "MARKER-tui2 from the terminal", "✓");

    let (code, stdout, stderr) = cli(
        dir,
        url,
        &[
            "listen",
            "--count",
            "3",
            "--idle-secs",
            "5",
            "--profile",
            "carol",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let got: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|frame: &Value| frame["kind"] == "encrypted")
        .collect();
    let texts: Vec<_> = got
        .iter()
        .map(|m| (m["text"].as_str(), m["decrypted"].as_bool()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (Some("MARKER-tui1 from the cli"), Some(true)),
            (Some("MARKER-tui2 from the terminal"), Some(true)),
        ],
        "carol's CLI reads both"
    );
    for marker in [&b"MARKER-tui1"[..], b"MARKER-tui2"] {
        assert_eq!(
            files_containing(data.path(), marker),
            Vec::<std::path::PathBuf>::new(),
            "plaintext in the server's files"
        );
    }

    // A ciphertext that does not open: rejected on screen.
    let token = saved_token(dir, "alice");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = missive_client::Api::new(url);
        let mut alice = missive_client::Connection::connect(&api.ws_url(), &token)
            .await
            .expect("connect");
        let forged = r#"{"v":1,"session_id":"forged","ciphertext":"AAAA"}"#;
        alice
            .send_encrypted(
                missive_client::Recipient::Conversation(group),
                "forged-1",
                forged,
                Vec::new(),
            )
            .await
            .expect("the server stores what it cannot read");
    });
    let screen = tmux.wait_for_text("bob", "encrypted message rejected: it was tampered with");
    assert!(
        !screen.contains("AAAA") && !screen.contains("session_id"),
        "{screen}"
    );

    // A restart reads the group's history through the same keys.
    tmux.keys("bob", &["C-c"]);
    tmux.wait_for_exit("bob", "Ctrl-C");
    tmux.chat(dir, "bob", 100, 30);
    tmux.wait_for_text("bob", "online as bob");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for("bob", "both texts from history", |screen| {
        screen.contains("MARKER-tui1 from the cli")
            && screen.contains("MARKER-tui2 from the terminal")
    });

    // A file sealed by the CLI: listed under the sender's name and type,
    // and `d` saves the plaintext.
    let upload = tempfile::tempdir().unwrap();
    let file = upload.path().join("MKN-t1.txt");
    let bytes = b"MARKER-tui3 the plan\n".repeat(40);
    std::fs::write(&file, &bytes).unwrap();
    as_user(
        dir,
        url,
        "alice",
        &[
            "send",
            "--group",
            &group.to_string(),
            "a file",
            "--file",
            &file.display().to_string(),
        ],
    );
    tmux.wait_for_text(
        "bob",
        &format!(
            "📎 MKN-t1.txt (application/octet-stream, {} B)",
            bytes.len()
        ),
    );
    tmux.keys("bob", &["Up", "d"]);
    tmux.wait_for_text("bob", &format!("Saved MKN-t1.txt ({} B)", bytes.len()));
    assert_eq!(std::fs::read(dir.join("MKN-t1.txt")).unwrap(), bytes);
    for marker in [&b"MARKER-tui3"[..], b"MKN-t1"] {
        assert_eq!(
            files_containing(data.path(), marker),
            Vec::<std::path::PathBuf>::new(),
            "the file's bytes or name in the server's files"
        );
    }
}

#[test]
fn the_terminal_app_verifies_keys_with_a_cli_user_by_comparing_emoji() {
    // Goal: another device's verification request shows as a prompt; once
    // accepted, the terminal app shows the same codes as the CLI, and when
    // both users say they match each records the other as verified (the
    // header of their encrypted 1:1 says "verified", the CLI lists it).
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    accounts(config.path(), &server.url, &["alice", "bob"]);
    let (dir, url) = (config.path(), server.url.as_str());
    as_user(dir, url, "alice", &["send", "bob", "hello", "--encrypted"]);

    tmux.chat(dir, "bob", 200, 30);
    tmux.wait_for_text("bob", "(1)");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_text("bob", "not verified");

    let mut verifying = Command::new(BIN)
        .args([
            "verify",
            "bob",
            "--timeout-secs",
            "30",
            "--profile",
            "alice",
        ])
        .env("MISSIVE_CONFIG_DIR", dir)
        .env("MISSIVE_SERVER", url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start missive verify");
    tmux.wait_for_text("bob", "asks to verify keys with you");
    tmux.keys("bob", &["y"]);
    let mut stdout = std::io::BufReader::new(verifying.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("the compare line");
    let compare: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(compare["verify"], "compare", "{line}");
    // The numbers and the emoji's names: a terminal may draw an emoji
    // with a variation selector (✈️) differently from how it was written.
    let decimals: Vec<String> = compare["decimals"]
        .as_array()
        .expect("decimals")
        .iter()
        .map(|n| n.to_string())
        .collect();
    let text = compare["text"].as_str().expect("text").to_owned();
    let names: Vec<String> = text
        .split(" (")
        .next()
        .unwrap_or_default()
        .split(", ")
        .map(|emoji| {
            emoji
                .split_once(' ')
                .map_or("", |(_, name)| name)
                .to_owned()
        })
        .collect();
    assert_eq!(names.len(), 7, "{text}");
    tmux.wait_for("bob", "the same codes", |screen| {
        screen.contains("Does alice see")
            && screen.contains(&format!("({})?", decimals.join(" ")))
            && names.iter().all(|name| screen.contains(name.as_str()))
    });
    tmux.keys("bob", &["y"]);
    std::io::Write::write_all(&mut verifying.stdin.take().expect("stdin"), b"y\n").expect("answer");
    let output = verifying.wait_with_output().expect("verify ends");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let done: Value = serde_json::from_str(rest.trim()).expect("done line");
    assert_eq!(done["verify"], "done");
    assert_eq!(done["user"], "bob");
    tmux.wait_for_text("bob", "alice's device");
    tmux.wait_for("bob", "the header saying verified", |screen| {
        screen.contains("· verified") && !screen.contains("not verified")
    });
    let status = as_user(dir, url, "alice", &["verify", "bob", "--status"]);
    assert_eq!(status["devices"][0]["verified"], true, "{status}");

    // A text typed into the encrypted 1:1 is sealed for its two members.
    tmux.type_text("bob", "MARKER-d1 in the 1:1");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_mark("bob", "MARKER-d1 in the 1:1", "✓");
    let (code, stdout, stderr) = cli(
        dir,
        url,
        &["listen", "--idle-secs", "2", "--profile", "alice"],
    );
    assert_eq!(code, 0, "{stderr}");
    let heard: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|frame: &Value| frame["kind"] == "encrypted")
        .collect();
    assert_eq!(heard.len(), 1, "{stdout}");
    assert_eq!(heard[0]["text"], "MARKER-d1 in the 1:1");
    assert_eq!(heard[0]["decrypted"], true);
}

#[test]
fn the_terminal_app_hands_a_new_device_of_its_account_the_room_keys_once_verified() {
    // Goal: key forwarding from the terminal app: a device added to the
    // account cannot read an earlier encrypted message until the user
    // verifies it with the terminal app, which then sends it every room
    // key it holds.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    accounts(config.path(), &server.url, &["alice", "bob"]);
    let (dir, url) = (config.path(), server.url.as_str());
    let sent = as_user(
        dir,
        url,
        "alice",
        &["send", "bob", "MARKER-fw2 before the laptop", "--encrypted"],
    );
    let conversation = sent["conversation"]
        .as_i64()
        .expect("conversation")
        .to_string();
    tmux.chat(dir, "bob", 200, 30);
    tmux.wait_for_text("bob", "(1)");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_text("bob", "MARKER-fw2 before the laptop");

    as_user(dir, url, "laptop", &["login", "bob"]);
    let earlier = |profile: &str| -> Value {
        let history = as_user(dir, url, profile, &["history", &conversation]);
        history["messages"]
            .as_array()
            .and_then(|messages| messages.iter().find(|m| m["kind"] == "encrypted"))
            .cloned()
            .expect("the message in history")
    };
    assert_eq!(earlier("laptop")["decrypt_error"], "no_key");

    let tui_device = profile_device(dir, "bob").to_string();
    let mut verifying = Command::new(BIN)
        .args([
            "verify",
            "bob",
            "--device",
            &tui_device,
            "--timeout-secs",
            "30",
        ])
        .args(["--profile", "laptop"])
        .env("MISSIVE_CONFIG_DIR", dir)
        .env("MISSIVE_SERVER", url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start missive verify");
    tmux.wait_for_text("bob", "asks to verify keys with you");
    tmux.keys("bob", &["y"]);
    tmux.wait_for_text("bob", "Does bob see");
    tmux.keys("bob", &["y"]);
    std::io::Write::write_all(&mut verifying.stdin.take().expect("stdin"), b"y\n").expect("answer");
    let output = verifying.wait_with_output().expect("verify ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    tmux.wait_for_text("bob", "is verified and has");

    // The laptop takes the forwarded keys as it listens; its own saved
    // keys then open the earlier message.
    let (code, _, stderr) = cli(
        dir,
        url,
        &["listen", "--idle-secs", "2", "--profile", "laptop"],
    );
    assert_eq!(code, 0, "{stderr}");
    let read = earlier("laptop");
    assert_eq!(
        (read["text"].as_str(), read["decrypted"].as_bool()),
        (Some("MARKER-fw2 before the laptop"), Some(true))
    );
}

/// The device id a profile logged in as.
fn profile_device(config: &Path, profile: &str) -> i64 {
    let saved =
        std::fs::read_to_string(config.join(format!("profiles/{profile}.json"))).expect("profile");
    serde_json::from_str::<Value>(&saved).expect("json")["device_id"]
        .as_i64()
        .expect("device id")
}

#[test]
fn the_terminal_app_publishes_more_one_time_keys_when_others_used_them_up_while_it_was_away() {
    // Goal: `keys_low` reaches only a connected device, so a device whose
    // one-time keys were claimed while it was away tops them up when it
    // connects; otherwise senders would leave it out of new room keys.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path());
    accounts(config.path(), &server.url, &["alice", "bob"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = missive_client::Api::new(&server.url);
    let (alice, bob) = (
        saved_token(config.path(), "alice"),
        saved_token(config.path(), "bob"),
    );
    let left = runtime.block_on(async {
        for _ in 0..35 {
            api.claim_keys(&bob, "alice").await.expect("claim");
        }
        api.key_count(&alice).await.expect("count").one_time_keys
    });
    assert_eq!(left, 15, "login published 50");
    tmux.chat(config.path(), "alice", 100, 30);
    // It tops up before it says it is online.
    tmux.wait_for_text("alice", "online as alice");
    let count = runtime.block_on(api.key_count(&alice)).expect("count");
    assert_eq!(count.one_time_keys, 65, "50 more");
}
