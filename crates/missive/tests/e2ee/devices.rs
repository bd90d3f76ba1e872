//! Verified devices reading what came before them, and encrypted attachments.

use super::*;

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
        .find(|message| message.kind == MessageKind::Encrypted)
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
    let (_data_dir, config_dir, server) = server_and_config_dir();
    let (dir, url) = (config_dir.path().to_owned(), server.url.clone());
    let laptop_device =
        tokio::task::spawn_blocking(move || the_laptop_logs_in_after_bobs_message(&dir, &url))
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
            let group = alice_sends_a_file_into_an_encrypted_group(&dir, &url, &sent);
            let media_id = bob_reads_it_live_and_downloads_it(&dir, &url, &work, &contents);
            carol_reads_it_from_history_and_downloads_it(
                &dir, &url, &work, &group, &media_id, &contents,
            );
            (media_id, contents.len() as u64 + 16)
        }
    })
    .await
    .expect("cli steps");
    the_store_holds_neither_bytes_nor_name(data_dir.path());
    a_changed_copy_is_refused(data_dir.path(), dir, url, &work, media_id, size).await;
}

fn the_store_holds_neither_bytes_nor_name(data_dir: &std::path::Path) {
    for marker in [&b"MARKER-FILE-9d2b"[..], b"MARKERNAME-4e1a"] {
        assert_eq!(
            files_containing(data_dir, marker),
            Vec::<std::path::PathBuf>::new(),
            "plaintext in the server's files"
        );
    }
}

/// The stored ciphertext changed behind the server's back: refused.
async fn a_changed_copy_is_refused(
    data_dir: &std::path::Path,
    dir: std::path::PathBuf,
    url: String,
    work: &std::path::Path,
    media_id: String,
    size: u64,
) {
    let stored = file_named(data_dir, &media_id)
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

/// alice, bob and carol register and log in; alice creates the encrypted
/// group "vault" and sends the file into it. Returns the group.
fn alice_sends_a_file_into_an_encrypted_group(
    dir: &std::path::Path,
    url: &str,
    sent: &std::path::Path,
) -> String {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
    for user in ["alice", "bob", "carol"] {
        ok(user, &["register", user]);
        ok(user, &["login", user]);
    }
    let created: serde_json::Value =
        serde_json::from_str(&ok("alice", &encrypted_group_of_bob_and_carol("vault")))
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
    group
}

/// bob's listen shows the file with its name, type and size, and his
/// download opens it. Returns its media id.
fn bob_reads_it_live_and_downloads_it(
    dir: &std::path::Path,
    url: &str,
    work: &std::path::Path,
    contents: &[u8],
) -> String {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
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
    media_id
}

fn carol_reads_it_from_history_and_downloads_it(
    dir: &std::path::Path,
    url: &str,
    work: &std::path::Path,
    group: &str,
    media_id: &str,
    contents: &[u8],
) {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
    // Carol reads it again from history (with the room key her
    // listen took): opened there too, and her download with it.
    ok("carol", &["listen", "--count", "2", "--idle-secs", "5"]);
    let history: serde_json::Value =
        serde_json::from_str(&ok("carol", &["history", group])).expect("history json");
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
        &["download", media_id, "--to", carol_copy.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&carol_copy).unwrap(), contents);
}

/// alice's phone and bob register; bob sends alice an encrypted message
/// the phone reads; then alice's laptop logs in. Returns its device id.
fn the_laptop_logs_in_after_bobs_message(dir: &std::path::Path, url: &str) -> i64 {
    let ok = |profile: &str, args: &[&str]| cli_ok(dir, url, profile, args);
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
