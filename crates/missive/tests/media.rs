//! Media through the Blobs boundary: streamed upload, hash, sniffed type,
//! size limit, no guessable or shareable-by-accident ids.

mod common;

use common::*;
use sha2::{Digest, Sha256};

fn png(size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..size.saturating_sub(8)).map(|i| (i * 31 % 251) as u8));
    bytes
}

/// Files under the server's media directory.
fn stored_files(server: &TestServer) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| {
                        if entry.path().is_dir() {
                            walk(&entry.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&server.data_dir.path().join("media"))
}

async fn upload(
    server: &TestServer,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/media", server.url()))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn download(server: &TestServer, token: &str, id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v1/media/{id}", server.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_round_trips_with_its_hash_and_sniffed_type() {
    // Goal: the bytes come back identical, the recorded SHA-256 matches, and
    // the type is the sniffed one, not the one the client claimed.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bytes = png(300_000);
    let response = upload(&server, &alice, "application/octet-stream", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["content_type"], "image/png");
    assert_eq!(info["size_bytes"], bytes.len());
    assert_eq!(info["sha256"], hex::encode(Sha256::digest(&bytes)));
    let id = info["media_id"].as_str().unwrap();
    let response = download(&server, &alice, id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_store_nothing() {
    // Goal: too big → 413 media_too_large; a disallowed or spoofed type →
    // 415 media_type_not_allowed; either way no blob is left behind.
    let server = TestServer::start_with(|config| config.limits.media_bytes_max = 64 * 1024).await;
    let alice = server.user("alice").await;
    assert_eq!(stored_files(&server), 0);
    let too_big = upload(&server, &alice, "image/png", png(64 * 1024 + 1)).await;
    assert_eq!(error_code(too_big).await, (413, "media_too_large".into()));
    let spoofed = upload(
        &server,
        &alice,
        "image/png",
        b"<html><script>alert(1)</script></html>".to_vec(),
    )
    .await;
    assert_eq!(
        error_code(spoofed).await,
        (415, "media_type_not_allowed".into())
    );
    let empty = upload(&server, &alice, "image/png", Vec::new()).await;
    assert_eq!(
        error_code(empty).await,
        (415, "media_type_not_allowed".into())
    );
    assert_eq!(stored_files(&server), 0, "a refused upload left a blob");
    let fits = upload(&server, &alice, "image/png", png(64 * 1024)).await;
    assert_eq!(fits.status(), 201);
    assert_eq!(stored_files(&server), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_and_guessed_ids_get_404() {
    // Goal: no IDOR: another user, a made-up id, a traversal attempt and a
    // missing token all fail without revealing whether the id exists.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let response = upload(&server, &alice, "image/png", png(1000)).await;
    let info: serde_json::Value = response.json().await.unwrap();
    let id = info["media_id"].as_str().unwrap().to_owned();
    assert_eq!(
        error_code(download(&server, &bob, &id).await).await,
        (404, "unknown_media".into())
    );
    let made_up = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        error_code(download(&server, &alice, made_up).await).await,
        (404, "unknown_media".into())
    );
    for probe in ["..%2F..%2Fmissive.sqlite", "%2E%2E", "media"] {
        // Either our unknown_media or the router's own 404: never a file.
        assert_eq!(
            download(&server, &alice, probe).await.status(),
            404,
            "{probe}"
        );
    }
    let anonymous = reqwest::Client::new()
        .get(format!("{}/v1/media/{id}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
