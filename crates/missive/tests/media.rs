//! Media through the Blobs boundary: streamed upload, hash, sniffed type,
//! size limit, no guessable or shareable-by-accident ids.

mod common;

use common::*;
use missive_client::Connection;
use missive_proto::{ClientFrame, ServerFrame};
use sha2::{Digest, Sha256};

/// A PDF of exactly `size` bytes (PDFs are stored without decoding).
fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.resize(size, b' ');
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
    let bytes = png(800, 600);
    let response = upload(&server, &alice, "application/octet-stream", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["content_type"], "image/png");
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(800), Some(600))
    );
    assert_eq!(info["thumbnail"], true);
    assert_eq!(info["size_bytes"], bytes.len());
    assert_eq!(info["sha256"], hex::encode(Sha256::digest(&bytes)));
    let id = info["media_id"].as_str().unwrap();
    let response = download(&server, &alice, id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);
    // The thumbnail is a JPEG fitting 320×320 with the same aspect ratio.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/media/{id}/thumbnail", server.url()))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let thumbnail = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (320, 240));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_keeps_its_file_name_for_downloads() {
    // Goal: `?filename=` is kept (its last path component, trimmed), told
    // back on upload and in the download's Content-Disposition (ASCII
    // fallback and UTF-8); a name with a control character, or an unknown
    // query parameter, is invalid_field and stores nothing.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let named = |query: &str| {
        reqwest::Client::new()
            .post(format!("{}/v1/media?{query}", server.url()))
            .bearer_auth(&alice)
            .body(pdf(100))
            .send()
    };
    let response = named("filename=..%2Fdocs%2FQ3%20%C3%9Cberweisung.pdf")
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["filename"], "Q3 Überweisung.pdf");
    let id = info["media_id"].as_str().unwrap().to_owned();
    let response = download(&server, &alice, &id).await;
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"Q3 _berweisung.pdf\"; filename*=UTF-8''Q3%20%C3%9Cberweisung.pdf"
    );
    let unnamed = upload(&server, &alice, "application/pdf", pdf(100)).await;
    let info: serde_json::Value = unnamed.json().await.unwrap();
    assert!(info.get("filename").is_none(), "{info}");
    let response = download(&server, &alice, info["media_id"].as_str().unwrap()).await;
    assert_eq!(response.headers()["content-disposition"], "attachment");

    // Sent in a text, the name comes with it, also as the last message of
    // the conversation list.
    let bob = server.user("bob").await;
    let mut alice_ws = server.connect(&alice).await;
    let send = ClientFrame::Send {
        id: Some("s".into()),
        to: Some("bob".into()),
        conversation: None,
        client_msg_id: "named".into(),
        text: String::new(),
        reply_to: None,
        media: vec![id.clone()],
        encrypted: false,
    };
    alice_ws.request(&send, "s").await.unwrap();
    for token in [&alice, &bob] {
        let listed: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/v1/conversations", server.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let media = &listed["conversations"][0]["last_message"]["media"];
        assert_eq!(media[0]["media_id"], id, "{listed}");
        assert_eq!(media[0]["filename"], "Q3 Überweisung.pdf", "{listed}");
    }

    assert_eq!(stored_files(&server), 2);
    for query in ["filename=a%0Ab.pdf", "filename=..", "name=x.pdf"] {
        let refused = named(query).await.unwrap();
        assert_eq!(
            error_code(refused).await,
            (400, "invalid_field".into()),
            "{query}"
        );
    }
    assert_eq!(stored_files(&server), 2, "a refused name stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_store_nothing() {
    // Goal: too big → 413 media_too_large; a disallowed or spoofed type →
    // 415 media_type_not_allowed; either way no blob is left behind.
    let server = TestServer::start_with(|config| config.limits.media_bytes_max = 64 * 1024).await;
    let alice = server.user("alice").await;
    assert_eq!(stored_files(&server), 0);
    let too_big = upload(&server, &alice, "application/pdf", pdf(64 * 1024 + 1)).await;
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
    // PNG magic on bytes that are no image: the sniff alone is not trusted.
    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend([7u8; 5_000]);
    let fake = upload(&server, &alice, "image/png", fake).await;
    assert_eq!(
        error_code(fake).await,
        (415, "media_type_not_allowed".into())
    );
    assert_eq!(stored_files(&server), 0, "a refused upload left a blob");
    let fits = upload(&server, &alice, "application/pdf", pdf(64 * 1024)).await;
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
    let response = upload(&server, &alice, "image/png", png(40, 30)).await;
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

/// Uploads a small PNG as `token`; returns its media id.
async fn uploaded(server: &TestServer, token: &str) -> String {
    let response = upload(server, token, "image/png", png(64, 48)).await;
    assert_eq!(response.status(), 201);
    let info: serde_json::Value = response.json().await.unwrap();
    info["media_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_sent_in_a_conversation_is_readable_by_its_members_only() {
    // Goal: attaching media to a text shares it with the members who got
    // that text, and nobody else: not outsiders, not later members, and
    // nobody once the text is deleted for everyone. Only the uploader may
    // attach it.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;
    let id = server.group(&alice, "g", &["bob"]).await;
    let media = uploaded(&server, &alice).await;
    let mut bob_ws = server.connect(&bob).await;
    only_the_uploader_attaches_it(&mut bob_ws, id, &media).await;

    let mut alice_ws = server.connect(&alice).await;
    let send = ClientFrame::Send {
        id: Some("s".into()),
        to: None,
        conversation: Some(id),
        client_msg_id: "with-photo".into(),
        text: String::new(),
        reply_to: None,
        media: vec![media.clone()],
        encrypted: false,
    };
    let sent = alice_ws.request(&send, "s").await.unwrap();
    let ServerFrame::Sent { message_id, .. } = sent else {
        panic!("{sent:?}")
    };
    let frames = queued(&mut bob_ws, 2).await;
    assert!(
        matches!(&frames[1], ServerFrame::Message { media: m, text, .. }
            if m.len() == 1 && m[0].media_id == media && m[0].content_type == "image/png"
                && (m[0].width, m[0].height) == (Some(64), Some(48)) && m[0].thumbnail && text.is_empty()),
        "{frames:?}"
    );
    assert_eq!(download(&server, &bob, &media).await.status(), 200);
    assert_eq!(
        error_code(download(&server, &carol, &media).await).await.1,
        "unknown_media"
    );
    server.api.add_members(&alice, id, &["dave"]).await.unwrap();
    assert_eq!(
        error_code(download(&server, &dave, &media).await).await.1,
        "unknown_media"
    );
    let history = server.api.history(&bob, id, "").await.unwrap();
    assert!(history.messages.iter().any(|m| {
        m.media
            .iter()
            .map(|r| r.media_id.as_str())
            .eq([media.as_str()])
    }));

    alice_ws.delete(id, "del", &message_id).await.unwrap();
    assert_eq!(
        error_code(download(&server, &bob, &media).await).await.1,
        "unknown_media"
    );
    assert_eq!(
        download(&server, &alice, &media).await.status(),
        200,
        "the uploader keeps access"
    );
}

/// bob may not attach alice's upload.
async fn only_the_uploader_attaches_it(bob_ws: &mut Connection, id: i64, media: &str) {
    let stolen = ClientFrame::Send {
        id: Some("x".into()),
        to: None,
        conversation: Some(id),
        client_msg_id: "x".into(),
        text: String::new(),
        reply_to: None,
        media: vec![media.to_owned()],
        encrypted: false,
    };
    assert_eq!(
        refused_code(bob_ws.request(&stolen, "x").await),
        "unknown_media"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshared_media_is_collected_after_the_grace_period() {
    // Goal: the sweeper deletes media no message references once the grace
    // period has passed (record and bytes); shared media stays.
    let server = TestServer::start_with(|config| config.delivery.media_grace_secs = 3600).await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    let unshared = uploaded(&server, &alice).await;
    let shared = uploaded(&server, &alice).await;
    let mut alice_ws = server.connect(&alice).await;
    let send = ClientFrame::Send {
        id: Some("s".into()),
        to: Some("bob".into()),
        conversation: None,
        client_msg_id: "photo".into(),
        text: "look".into(),
        reply_to: None,
        media: vec![shared.clone()],
        encrypted: false,
    };
    alice_ws.request(&send, "s").await.unwrap();
    server.app.sweep_now().await.unwrap();
    // Two images, each stored with its thumbnail.
    assert_eq!(
        stored_files(&server),
        4,
        "nothing is collected within the grace period"
    );
    server.clock.advance_ms(3_600_001);
    server.app.sweep_now().await.unwrap();
    assert_eq!(stored_files(&server), 2);
    assert_eq!(
        error_code(download(&server, &alice, &unshared).await)
            .await
            .1,
        "unknown_media"
    );
    assert_eq!(download(&server, &alice, &shared).await.status(), 200);
}
