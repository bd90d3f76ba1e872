//! Encryption in the terminal app: encrypted groups, verifying keys by
//! emoji, room keys for a new device, and one-time keys.

use super::*;

#[test]
fn an_encrypted_group_is_plain_text_only_on_the_screens() {
    // Goal: the terminal app holds its device's keys: in an encrypted
    // group it shows a CLI user's message decrypted (live and from
    // history), seals what is typed so the CLI reads it decrypted, keeps
    // neither text in the server's files, shows a tampered ciphertext
    // as rejected, never as its bytes, and opens a sealed file.
    let Some(tmux) = Tmux::new() else { return };
    let (data, config, server) = server_with_accounts(&["alice", "bob", "carol"]);
    let (dir, url) = (config.path(), server.url.as_str());
    let group = alice_creates_the_group_and_sends(dir, url);
    bob_reads_and_types_in_the_terminal(&tmux, dir);
    carols_cli_reads_both_and_the_store_neither(dir, url, data.path());
    a_forged_ciphertext_is_rejected_on_screen(&tmux, dir, url, group);
    a_restart_reads_the_history(&tmux, dir);
    a_sealed_file_opens(&tmux, dir, url, data.path(), group);
}

/// alice creates the encrypted group "sealed" and sends into it from the
/// CLI; returns the group.
fn alice_creates_the_group_and_sends(dir: &Path, url: &str) -> i64 {
    let created = as_user(
        dir,
        url,
        "alice",
        &encrypted_group_of_bob_and_carol("sealed"),
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
    group
}

/// bob's terminal shows the CLI's message decrypted and seals what he
/// types.
fn bob_reads_and_types_in_the_terminal(tmux: &Tmux, dir: &Path) {
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
}

/// carol's CLI reads both texts decrypted; the server's files hold
/// neither.
fn carols_cli_reads_both_and_the_store_neither(dir: &Path, url: &str, data: &Path) {
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
            files_containing(data, marker),
            Vec::<std::path::PathBuf>::new(),
            "plaintext in the server's files"
        );
    }
}

/// A ciphertext that does not open: rejected on screen.
fn a_forged_ciphertext_is_rejected_on_screen(tmux: &Tmux, dir: &Path, url: &str, group: i64) {
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
}

/// A restart reads the group's history through the same keys.
fn a_restart_reads_the_history(tmux: &Tmux, dir: &Path) {
    tmux.keys("bob", &["C-c"]);
    tmux.wait_for_exit("bob", "Ctrl-C");
    tmux.chat(dir, "bob", 100, 30);
    tmux.wait_for_text("bob", "online as bob");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for("bob", "both texts from history", |screen| {
        screen.contains("MARKER-tui1 from the cli")
            && screen.contains("MARKER-tui2 from the terminal")
    });
}

fn a_sealed_file_opens(tmux: &Tmux, dir: &Path, url: &str, data: &Path, group: i64) {
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
            files_containing(data, marker),
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
    let (_data, config, server) = server_with_accounts(&["alice", "bob"]);
    let (dir, url) = (config.path(), server.url.as_str());
    as_user(dir, url, "alice", &["send", "bob", "hello", "--encrypted"]);

    tmux.chat(dir, "bob", 200, 30);
    tmux.wait_for_text("bob", "(1)");
    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_text("bob", "not verified");

    let mut verifying = alices_verify(dir, url);
    tmux.wait_for_text("bob", "asks to verify keys with you");
    tmux.keys("bob", &["y"]);
    let mut stdout = std::io::BufReader::new(verifying.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("the compare line");
    let compare: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(compare["verify"], "compare", "{line}");
    let (decimals, names) = codes_of(&compare);
    tmux.wait_for("bob", "the same codes", |screen| {
        screen.contains("Does alice see")
            && screen.contains(&format!("({})?", decimals.join(" ")))
            && names.iter().all(|name| screen.contains(name.as_str()))
    });
    both_say_they_match(&tmux, verifying, stdout);
    let status = as_user(dir, url, "alice", &["verify", "bob", "--status"]);
    assert_eq!(status["devices"][0]["verified"], true, "{status}");
    a_text_in_the_one_to_one_is_sealed_for_both(&tmux, dir, url);
}

/// alice's `missive verify bob`, its stdin and stdout piped.
fn alices_verify(dir: &Path, url: &str) -> std::process::Child {
    piped_verify(dir, url, "alice", &["bob"])
}

/// `missive verify ARGS --timeout-secs 30` as `profile`, its stdin and
/// stdout piped.
fn piped_verify(dir: &Path, url: &str, profile: &str, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("verify")
        .args(args)
        .args(["--timeout-secs", "30", "--profile", profile])
        .env("MISSIVE_CONFIG_DIR", dir)
        .env("MISSIVE_SERVER", url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start missive verify")
}

/// The codes of the CLI's compare line: the numbers and the emoji's names.
fn codes_of(compare: &Value) -> (Vec<String>, Vec<String>) {
    // The numbers and the emoji's names: a terminal may draw an emoji
    // with a variation selector (✈️) differently from how it was written.
    let decimals: Vec<String> = compare["decimals"]
        .as_array()
        .expect("decimals")
        .iter()
        .map(ToString::to_string)
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
    (decimals, names)
}

/// bob and alice each say the codes match: the CLI is done, and bob's
/// header says verified.
fn both_say_they_match(
    tmux: &Tmux,
    mut verifying: std::process::Child,
    mut stdout: std::io::BufReader<std::process::ChildStdout>,
) {
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
}

/// A text typed into the encrypted 1:1 is sealed for its two members.
fn a_text_in_the_one_to_one_is_sealed_for_both(tmux: &Tmux, dir: &Path, url: &str) {
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
    let (_data, config, server) = server_with_accounts(&["alice", "bob"]);
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
    let mut verifying = the_laptops_verify(dir, url, &tui_device);
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

/// The laptop's `missive verify bob --device TUI_DEVICE`, piped.
fn the_laptops_verify(dir: &Path, url: &str, tui_device: &str) -> std::process::Child {
    piped_verify(dir, url, "laptop", &["bob", "--device", tui_device])
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
    let (_data, config, server) = server_with_accounts(&["alice", "bob"]);
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
