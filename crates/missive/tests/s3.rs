//! Media on an S3-compatible server (`moto_server`, started by `.ci/run`).
//! Outside CI the test skips with a printed reason when no S3 server
//! answers; under CI it fails loudly.

mod common;

use common::*;
use missive_client::Api;
use sha2::{Digest, Sha256};

fn endpoint() -> String {
    std::env::var("S3_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// Whether the S3 endpoint accepts connections; in CI its absence fails.
async fn s3_available(endpoint: &str) -> bool {
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    service_available("the S3 test server (moto_server)", address).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_round_trips_through_s3() {
    // Goal: with blobs.backend = "s3" the same upload/download contract
    // holds against a real S3-compatible server, and a refused upload
    // leaves no object behind (checked through the bucket listing).
    let endpoint = endpoint();
    if !s3_available(&endpoint).await {
        return;
    }
    let bucket = format!("missive-test-{}", std::process::id());
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "creating the bucket: {}",
        created.status()
    );

    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[
            ("MISSIVE_BLOBS__BACKEND", "s3"),
            ("MISSIVE_BLOBS__S3_BUCKET", &bucket),
            ("MISSIVE_BLOBS__S3_ENDPOINT", &endpoint),
            ("MISSIVE_LIMITS__MEDIA_BYTES_MAX", "65536"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let api = Api::new(&server.url);
    api.register("alice", PASSWORD).await.unwrap();
    let token = api.login("alice", PASSWORD, "t").await.unwrap().token;
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..40_000u32).map(|i| (i % 253) as u8));
    let info = api.upload_media(&token, bytes.clone()).await.unwrap();
    assert_eq!(info.content_type, "application/pdf");
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
    let (content_type, downloaded) = api.download_media(&token, &info.media_id).await.unwrap();
    assert_eq!(
        (content_type.as_str(), downloaded),
        ("application/pdf", bytes)
    );

    let mut too_big = b"%PDF-1.7\n".to_vec();
    too_big.resize(70_000, b' ');
    let too_big = api.upload_media(&token, too_big).await;
    assert_eq!(refused_code(too_big), "media_too_large");
    let listing = get_text(&http, format!("{endpoint}/{bucket}")).await;
    assert_eq!(listing.matches("<Key>").count(), 1, "{listing}");
    assert!(listing.contains(&info.media_id), "{listing}");
}
