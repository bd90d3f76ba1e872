//! The server process: durability across kill -9, config errors and the
//! default log.

use super::*;

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
    let sender =
        alice_sends_as_fast_as_she_can(api.ws_url(), alice_token, acked.clone(), enough_tx);
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

/// alice sends to bob until the server goes away, recording each message
/// that got its `sent` in `acked`; `enough` is told once 100 did. The task
/// returns how many sends she attempted.
fn alice_sends_as_fast_as_she_can(
    ws_url: String,
    alice_token: String,
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    enough_tx: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<usize> {
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
    five_connections_send_and_receive(&format!("http://{addr}")).await;
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

/// bob stays connected while alice connects four times, each time sending
/// him a text.
async fn five_connections_send_and_receive(url: &str) {
    let api = Api::new(url);
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
}
