//! `missive admin backup` and `restore` against the built binary: a backup
//! taken while a server serves and messages flow, restored into a new data
//! directory and served again.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use missive_client::{Api, Connection};
use missive_proto::{ClientFrame, ServerFrame};

/// Runs `missive admin --data-dir DIR ARGS` on a blocking thread (the
/// test's runtime keeps serving its connections); returns (exit status,
/// stdout, stderr).
async fn admin(data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let data_dir = data_dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(BIN)
            .arg("admin")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&args)
            .output()
            .expect("run missive admin");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("admin thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_messages_flow_restores_every_message_sent_before_it() {
    // Goal (issue 21): a backup of a serving embedded server, taken while
    // alice keeps sending, restored into a new data directory: a server on
    // it delivers to bob (with his old token) every message that had its
    // `sent` before the backup began, in order, seqs gap-free, and the
    // media alice shared before it, byte for byte. A restore over a
    // database, a backup into a non-empty directory and a restore from a
    // directory that holds no backup are refused with their codes.
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    api.register("alice", PASSWORD).await.unwrap();
    api.register("bob", PASSWORD).await.unwrap();
    let alice_token = api.login("alice", PASSWORD, "a").await.unwrap().token;
    let bob_token = api.login("bob", PASSWORD, "b").await.unwrap().token;
    // A PDF: stored as sent, not decoded.
    let mut document = b"%PDF-1.7\n".to_vec();
    document.extend((0..50_000u32).map(|i| (i % 251) as u8));
    let media = api
        .upload_media(&alice_token, document.clone())
        .await
        .unwrap();

    let mut alice = Connection::connect(&api.ws_url(), &alice_token)
        .await
        .unwrap();
    let mut before = Vec::new();
    let with_media = alice
        .call(|id| ClientFrame::Send {
            id,
            to: Some("bob".into()),
            conversation: None,
            client_msg_id: "m0".into(),
            text: "a document".into(),
            reply_to: None,
            media: vec![media.media_id.clone()],
        })
        .await
        .unwrap();
    let ServerFrame::Sent { message_id, .. } = with_media else {
        panic!("unexpected reply {with_media:?}")
    };
    before.push(message_id);
    for i in 1..20 {
        match alice
            .send_text("bob", &format!("b{i}"), &format!("before {i}"))
            .await
        {
            Ok(ServerFrame::Sent { message_id, .. }) => before.push(message_id),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    // Alice goes on sending through the backup, and has sent at least
    // once before it starts.
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let sending = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut started = Some(started_tx);
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let reply = alice
                    .send_text("bob", &format!("d{sent}"), &format!("during {sent}"))
                    .await;
                assert!(matches!(reply, Ok(ServerFrame::Sent { .. })), "{reply:?}");
                sent += 1;
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
            sent
        }
    });
    started_rx.await.unwrap();
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("nightly");
    let backup_arg = backup.to_str().unwrap();
    let (code, stdout, stderr) = admin(data_dir.path(), &["backup", backup_arg]).await;
    assert_eq!(code, 0, "{stderr}");
    stop.store(true, Ordering::Relaxed);
    let sent_during = sending.await.unwrap();
    assert!(sent_during >= 1);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["tables"]["accounts"], 2, "{stdout}");
    assert!(
        summary["tables"]["messages"].as_u64().unwrap() >= 20,
        "{stdout}"
    );
    assert_eq!(summary["media_files"], 1, "{stdout}");
    assert_eq!(summary["media_bytes"], document.len(), "{stdout}");

    let (code, _, stderr) = admin(data_dir.path(), &["backup", backup_arg]).await;
    assert_eq!(code, 3, "a backup into a non-empty directory: {stderr}");
    assert!(stderr.contains("target_not_empty"), "{stderr}");
    drop(server);

    let restored_dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = admin(restored_dir.path(), &["restore", backup_arg]).await;
    assert_eq!(code, 0, "{stderr}");
    let restored: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(restored["tables"], summary["tables"], "{stdout}");
    let (code, _, stderr) = admin(restored_dir.path(), &["restore", backup_arg]).await;
    assert_eq!(code, 3, "a restore over a database: {stderr}");
    assert!(stderr.contains("target_not_empty"), "{stderr}");
    let elsewhere = tempfile::tempdir().unwrap();
    let not_a_backup = restored_dir.path().to_str().unwrap();
    let (code, _, stderr) = admin(elsewhere.path(), &["restore", not_a_backup]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("not_a_backup"), "{stderr}");

    let server = ServerProcess::start(restored_dir.path());
    let api = Api::new(&server.url);
    let mut bob = Connection::connect(&api.ws_url(), &bob_token)
        .await
        .unwrap();
    let mut received: Vec<(String, i64)> = Vec::new();
    while !before
        .iter()
        .all(|id| received.iter().any(|(got, _)| got == id))
    {
        if let ServerFrame::Message {
            message_id, seq, ..
        } = bob.next_frame(PROMPTLY).await.unwrap()
        {
            received.push((message_id, seq));
        }
    }
    let seqs: Vec<i64> = received.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=received.len() as i64).collect::<Vec<_>>(),
        "in order, gap-free, each once"
    );
    let ids: Vec<&String> = received
        .iter()
        .map(|(id, _)| id)
        .take(before.len())
        .collect();
    assert_eq!(
        ids,
        before.iter().collect::<Vec<_>>(),
        "the sends before, first"
    );
    let (_, bytes) = api
        .download_media(&bob_token, &media.media_id)
        .await
        .unwrap();
    assert_eq!(bytes, document, "the media, byte for byte");
}
