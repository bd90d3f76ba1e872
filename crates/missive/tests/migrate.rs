//! `missive migrate` against the built binary: a populated embedded server
//! moved to PostgreSQL (media to S3), a cluster node started on the result,
//! and everything its users could see before the move is what they see
//! after it. The fault suite (faults/main.rs) moves a server in the middle
//! of a workload, interrupting the migration once, and checks delivery.

mod common;

use common::cluster::{Database, NATS, services_available};
use common::*;
use missive_client::{Api, Connection};
use missive_proto::rest::{MediaInfo, PresenceVisibility};
use missive_proto::{ClientFrame, ServerFrame};

fn s3_endpoint() -> String {
    std::env::var("S3_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// Runs `missive migrate ARGS` (with `env`) on a blocking thread; returns
/// (exit status, stdout, stderr).
async fn migrate(args: Vec<String>, env: Vec<(String, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = server_command()
            .arg("migrate")
            .args(&args)
            .envs(env)
            .output()
            .expect("run missive migrate");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("migrate thread")
}

/// What one device can read over REST and what waits for it: the
/// conversation list (cursors, receipts, last messages), every
/// conversation's history (reactions, edits, deletions, media), each
/// message's receipts, contacts, blocks, privacy, and the stored events
/// above its positions (a poll that acks nothing).
async fn everything_seen_by(api: &Api, token: &str) -> serde_json::Value {
    let conversations = api.conversations(token).await.expect("conversations");
    let mut histories = Vec::new();
    for summary in &conversations.conversations {
        let history = api
            .history(token, summary.conversation, "limit=100")
            .await
            .expect("history");
        let mut receipts = Vec::new();
        for message in &history.messages {
            receipts.push(
                api.receipts(token, summary.conversation, &message.message_id)
                    .await
                    .map(|info| serde_json::to_value(info).expect("json"))
                    .unwrap_or_else(|err| serde_json::json!(refused_code(Err::<(), _>(err)))),
            );
        }
        histories.push(serde_json::json!({"history": history, "receipts": receipts}));
    }
    let (waiting, to_device): (Vec<ServerFrame>, Vec<ServerFrame>) = api
        .poll(token, &[], 0)
        .await
        .expect("poll")
        .frames
        .into_iter()
        .filter(|frame| {
            frame.ack_point().is_some() || matches!(frame, ServerFrame::ToDevice { .. })
        })
        .partition(|frame| frame.ack_point().is_some());
    serde_json::json!({
        "conversations": conversations,
        "histories": histories,
        "contacts": api.contacts(token).await.expect("contacts"),
        "blocks": api.blocks(token).await.expect("blocks"),
        "privacy": api.privacy(token).await.expect("privacy"),
        "alice's keys": api.user_keys(token, "alice").await.expect("keys"),
        "one-time keys held": api.key_count(token).await.expect("key count"),
        "waiting": waiting,
        "to-device waiting": to_device,
    })
}

/// `GET /v1/media/{id}/thumbnail` on the server at `url`.
async fn thumbnail(url: &str, media_id: &str, token: &str) -> Vec<u8> {
    reqwest::Client::new()
        .get(format!("{url}/v1/media/{media_id}/thumbnail"))
        .bearer_auth(token)
        .send()
        .await
        .expect("thumbnail")
        .bytes()
        .await
        .expect("thumbnail bytes")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_embedded_server_moves_to_postgres_and_s3_as_it_was() {
    // Goal (issue 21): after `missive migrate`, a cluster node on the
    // PostgreSQL database (media in S3) shows every user exactly what the
    // embedded server showed: conversations with their read and delivered
    // cursors, histories with reactions, edits, deletions and media,
    // receipts, contacts, blocks, privacy, published end-to-end keys (one
    // of them claimed), and per device the same events and to-device
    // messages still waiting (a device that never connected, one that
    // acked part).
    // Old tokens work, a revoked one does not, media and thumbnails come
    // back byte for byte, and new accounts, conversations and seqs carry
    // on after the old ones. The sealed source refuses to serve, a second
    // migration is refused, and so is a migration into a database with
    // data in it.
    if !services_available().await {
        return;
    }
    let Some(s3_env) = s3_bucket_env().await else {
        return;
    };

    // ── the embedded server and what its users did ──────────────────────
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data_dir.path());
    let api = Api::new(&server.url);
    let world = populate(&api).await;
    let before = seen_before(&api, &world).await;
    let thumbnail_before = thumbnail(
        &server.url,
        &world.photo_info.media_id,
        &world.token("bob0"),
    )
    .await;
    assert!(!thumbnail_before.is_empty());
    // A crash, not a clean stop: the migration reads what the WAL holds.
    server.kill_9();

    // ── the move ────────────────────────────────────────────────────────
    let db = Database::create().await;
    let from = data_dir.path().to_str().unwrap().to_owned();
    move_and_check_the_seal(&from, &db, &s3_env).await;

    // ── the cluster node on the result ──────────────────────────────────
    let node = start_node(&db, &s3_env);
    let api = Api::new(&node.url);
    node_shows_what_was_seen(&api, &node.url, &world, &before, &thumbnail_before).await;
    new_ids_come_after_the_old(&api, &world, &before).await;
    used_targets_are_refused(&db, &s3_env).await;
    drop(node);
    db.drop_now().await;
}

/// Creates a bucket on the S3 test server and returns the environment
/// that points a process at it; `None` (with the reason printed) when the
/// S3 test server is not there.
async fn s3_bucket_env() -> Option<Vec<(String, String)>> {
    let endpoint = s3_endpoint();
    let address = endpoint.trim_start_matches("http://").to_owned();
    if !service_available("the S3 test server (moto_server)", &address).await {
        return None;
    }
    let bucket = format!("missive-migrate-{}", std::process::id());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(
        created.status().is_success(),
        "bucket: {}",
        created.status()
    );
    let s3_env = [
        ("MISSIVE_BLOBS__BACKEND", "s3"),
        ("MISSIVE_BLOBS__S3_BUCKET", bucket.as_str()),
        ("MISSIVE_BLOBS__S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    Some(s3_env)
}

/// What the users of the embedded server did, as far as the checks after
/// the move need it.
struct World {
    /// Token and device id per device name (`alice0`, `bob0`, …).
    tokens: std::collections::BTreeMap<String, (String, i64)>,
    photo: Vec<u8>,
    photo_info: MediaInfo,
    document: Vec<u8>,
    document_info: MediaInfo,
    direct: i64,
    group: i64,
    revoked_token: String,
    revoked_device: i64,
}

impl World {
    fn token(&self, name: &str) -> String {
        self.tokens[name].0.clone()
    }
}

/// The devices whose view is compared before and after the move.
const READERS: [&str; 5] = ["alice0", "alice1", "bob0", "carol0", "dave0"];

/// Registers the users, logs their devices in and has them do everything
/// that must survive the move.
async fn populate(api: &Api) -> World {
    let mut tokens = std::collections::BTreeMap::new();
    for (user, devices) in [("alice", 3), ("bob", 1), ("carol", 1), ("dave", 1)] {
        api.register(user, PASSWORD).await.unwrap();
        for device in 0..devices {
            let login = api
                .login(user, PASSWORD, &format!("{user}{device}"))
                .await
                .unwrap();
            tokens.insert(format!("{user}{device}"), (login.token, login.device_id));
        }
    }
    let token = |name: &str| tokens[name].0.clone();
    let photo = png(300, 300);
    let photo_info = api
        .upload_media(&token("alice0"), photo.clone())
        .await
        .unwrap();
    let mut document = b"%PDF-1.7\n".to_vec();
    document.extend((0..30_000u32).map(|i| (i % 241) as u8));
    let document_info = api
        .upload_named_media(&token("alice0"), document.clone(), Some("plan.pdf"))
        .await
        .unwrap();

    // alice0 publishes end-to-end keys; bob claims one of them.
    let keys = key_upload("a", 3);
    api.upload_keys(&token("alice0"), &keys).await.unwrap();
    api.claim_keys(&token("bob0"), "alice").await.unwrap();
    let mut alice = Connection::connect(&api.ws_url(), &token("alice0"))
        .await
        .unwrap();
    alice
        .request(
            &to_device(vec![share("bob", tokens["bob0"].1, "a room key")]),
            "td",
        )
        .await
        .unwrap();
    let media = vec![photo_info.media_id.clone(), document_info.media_id.clone()];
    let (direct, first_id) = direct_conversation(&mut alice, media).await;
    let (group, carol) = group_conversation(api, &tokens, &mut alice).await;
    let bob = readings_and_settings(api, &tokens, direct, group, &first_id).await;
    let (revoked_token, revoked_device) = tokens["alice2"].clone();
    api.revoke(&token("alice0"), revoked_device).await.unwrap();
    for connection in [alice, bob, carol] {
        connection.close().await;
    }
    World {
        tokens,
        photo,
        photo_info,
        document,
        document_info,
        direct,
        group,
        revoked_token,
        revoked_device,
    }
}

/// alice writes to bob: six texts, one with the media replying to the
/// first, an edit of the first and a deleted one. Returns the
/// conversation and the first message's id.
async fn direct_conversation(alice: &mut Connection, media: Vec<String>) -> (i64, String) {
    let mut first = None;
    for n in 1..=6 {
        let sent = alice
            .send_text("bob", &format!("a-{n}"), &format!("hello {n}"))
            .await
            .unwrap();
        first.get_or_insert(sent);
    }
    let Some(ServerFrame::Sent {
        conversation: direct,
        message_id: first_id,
        ..
    }) = first
    else {
        panic!("no sent");
    };
    alice
        .call(|id| ClientFrame::Send {
            id,
            to: None,
            conversation: Some(direct),
            client_msg_id: "a-media".into(),
            text: "the photo and the plan".into(),
            reply_to: Some(first_id.clone()),
            media,
            encrypted: false,
        })
        .await
        .unwrap();
    alice
        .edit(direct, "a-edit", &first_id, "hello again")
        .await
        .unwrap();
    let ServerFrame::Sent {
        message_id: second_id,
        ..
    } = alice
        .send_to(direct, "a-7", "to be deleted", None)
        .await
        .unwrap()
    else {
        panic!("no sent");
    };
    alice.delete(direct, "a-del", &second_id).await.unwrap();
    (direct, first_id)
}

/// alice's group with bob, carol and dave; dave leaves it. Returns the
/// conversation and carol's connection.
async fn group_conversation(
    api: &Api,
    tokens: &std::collections::BTreeMap<String, (String, i64)>,
    alice: &mut Connection,
) -> (i64, Connection) {
    let group = api
        .create_group(&tokens["alice0"].0, "team", &["bob", "carol", "dave"])
        .await
        .unwrap()
        .conversation;
    alice.send_to(group, "g-1", "welcome", None).await.unwrap();
    let mut carol = Connection::connect(&api.ws_url(), &tokens["carol0"].0)
        .await
        .unwrap();
    carol.send_to(group, "c-1", "hi all", None).await.unwrap();
    api.leave_group(&tokens["dave0"].0, group).await.unwrap();
    carol
        .send_to(group, "c-2", "dave left", None)
        .await
        .unwrap();
    (group, carol)
}

/// Bob reads part of the 1:1 and reacts; his device acks part of what
/// came. alice1 never connects: everything waits for it. Contacts, a block
/// and a privacy setting. Returns bob's connection.
async fn readings_and_settings(
    api: &Api,
    tokens: &std::collections::BTreeMap<String, (String, i64)>,
    direct: i64,
    group: i64,
    first_id: &str,
) -> Connection {
    let token = |name: &str| tokens[name].0.clone();
    let mut bob = Connection::connect(&api.ws_url(), &token("bob0"))
        .await
        .unwrap();
    bob.react(direct, "b-r", first_id, Some("👍"))
        .await
        .unwrap();
    bob.call(|id| ClientFrame::Read {
        id,
        conversation: direct,
        seq: 3,
    })
    .await
    .unwrap();
    bob.ack(direct, 5).await.unwrap();
    bob.ack(group, 1).await.unwrap();
    api.add_contact(&token("alice0"), "bob").await.unwrap();
    api.block(&token("carol0"), "dave").await.unwrap();
    api.set_privacy(&token("bob0"), PresenceVisibility::Contacts)
        .await
        .unwrap();
    bob
}

/// Everything each of `READERS` sees, checked to hold what must survive.
async fn seen_before(api: &Api, world: &World) -> Vec<serde_json::Value> {
    let mut before = Vec::new();
    for reader in READERS {
        before.push(everything_seen_by(api, &world.token(reader)).await);
    }
    // What must survive is there to survive: alice1 waits for everything
    // (two conversations), bob for the 1:1 above his ack and the group's
    // rest, and bob's read cursor stands at 3.
    let direct = world.direct;
    let waiting = |reader: usize| before[reader]["waiting"].as_array().unwrap().len();
    assert!(waiting(1) >= 12, "alice1 waits for {}", waiting(1));
    assert!(waiting(2) >= 4, "bob0 waits for {}", waiting(2));
    assert!(
        before[2]["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["conversation"] != direct || event["seq"].as_i64() > Some(5)),
        "bob acked the 1:1 up to 5"
    );
    let bobs_direct = &before[2]["conversations"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|summary| summary["conversation"] == direct)
        .unwrap()
        .clone();
    assert_eq!(bobs_direct["read_seq"], 3);
    assert_eq!(before[0]["one-time keys held"]["one_time_keys"], 2);
    assert_eq!(before[2]["to-device waiting"][0]["body"], "a room key");
    assert_eq!(
        before[2]["alice's keys"]["devices"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    before
}

/// Migrates the data dir `from` into `db`, checks the summary, and that
/// the sealed source neither serves nor migrates again.
async fn move_and_check_the_seal(from: &str, db: &Database, s3_env: &[(String, String)]) {
    let args = vec![
        "--from".to_owned(),
        from.to_owned(),
        "--to".to_owned(),
        db.url(),
        "--batch-rows".to_owned(),
        "4".to_owned(),
    ];
    let (status, stdout, stderr) = migrate(args.clone(), s3_env.to_vec()).await;
    assert_eq!(status, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary");
    for (table, counts) in summary["tables"].as_object().unwrap() {
        assert_eq!(counts["source"], counts["target"], "{table}");
    }
    assert_eq!(summary["tables"]["accounts"]["target"], 4);
    assert_eq!(summary["tables"]["media"]["target"], 2);
    assert_eq!(summary["resumed"], false);
    // Two uploads and the photo's thumbnail.
    assert_eq!(summary["media"]["files"], 3, "{summary}");
    assert_eq!(summary["media"]["missing"], 0);

    let refused = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", from])
        .output()
        .expect("serve the sealed source");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("missive migrate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let (status, _, stderr) = migrate(args, s3_env.to_vec()).await;
    assert_eq!(status, 3);
    assert!(stderr.contains("already_migrated"), "{stderr}");
}

/// A cluster node on `db`, its media in the S3 bucket.
fn start_node(db: &Database, s3_env: &[(String, String)]) -> ServerProcess {
    let mut env: Vec<(&str, &str)> = s3_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = db.url();
    env.push(("MISSIVE_BUS__URL", NATS));
    env.push(("MISSIVE_STORE__URL", &url));
    let node_dir = tempfile::tempdir().unwrap();
    ServerProcess::start_with_env(node_dir.path(), &env)
}

/// Every reader sees on the node what it saw before; media and the
/// thumbnail come back byte for byte; the revoked token stays revoked.
async fn node_shows_what_was_seen(
    api: &Api,
    node_url: &str,
    world: &World,
    before: &[serde_json::Value],
    thumbnail_before: &[u8],
) {
    for (reader, seen) in READERS.iter().zip(before) {
        let after = everything_seen_by(api, &world.token(reader)).await;
        assert_eq!(&after, seen, "{reader} sees something else after the move");
    }
    assert_eq!(
        api.download_media(&world.token("bob0"), &world.photo_info.media_id)
            .await
            .unwrap()
            .1,
        world.photo
    );
    let download = api
        .download_named_media(&world.token("bob0"), &world.document_info.media_id)
        .await
        .unwrap();
    assert_eq!(
        (download.bytes, download.filename.as_deref()),
        (world.document.clone(), Some("plan.pdf"))
    );
    let thumbnail_after =
        thumbnail(node_url, &world.photo_info.media_id, &world.token("bob0")).await;
    assert_eq!(thumbnail_after, thumbnail_before);
    assert_eq!(
        refused_code(api.conversations(&world.revoked_token).await),
        "token_invalid"
    );
}

/// New ids come after every old one; the 1:1 goes on at the next seq.
async fn new_ids_come_after_the_old(api: &Api, world: &World, before: &[serde_json::Value]) {
    api.register("erin", PASSWORD).await.unwrap();
    let erin = api.login("erin", PASSWORD, "e").await.unwrap();
    assert!(
        erin.device_id > world.revoked_device,
        "a device id was reused"
    );
    let last_seq = before[0]["conversations"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|summary| summary["conversation"] == world.direct)
        .unwrap()["last_seq"]
        .as_i64()
        .unwrap();
    let mut alice = Connection::connect(&api.ws_url(), &world.token("alice0"))
        .await
        .unwrap();
    let ServerFrame::Sent { seq, .. } = alice.send_text("bob", "a-after", "after").await.unwrap()
    else {
        panic!("no sent");
    };
    assert_eq!(seq, last_seq + 1);
    let ServerFrame::Sent { conversation, .. } =
        alice.send_text("erin", "a-erin", "hi erin").await.unwrap()
    else {
        panic!("no sent");
    };
    assert!(conversation > world.group, "a conversation id was reused");
    alice.close().await;
}

/// With a node running on it, the database is in use; a database with
/// data in it is refused unless the operator says to replace it.
async fn used_targets_are_refused(db: &Database, s3_env: &[(String, String)]) {
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = ServerProcess::start(other_dir.path());
    Api::new(&other.url)
        .register("zed", PASSWORD)
        .await
        .unwrap();
    other.kill_9();
    let other_from = other_dir.path().to_str().unwrap().to_owned();
    let to = |url: String| {
        vec![
            "--from".to_owned(),
            other_from.clone(),
            "--to".to_owned(),
            url,
        ]
    };
    let (status, _, stderr) = migrate(to(db.url()), s3_env.to_vec()).await;
    assert_eq!(status, 3);
    assert!(stderr.contains("target_in_use"), "{stderr}");
    let second = Database::create().await;
    let (status, _, stderr) = migrate(to(second.url()), s3_env.to_vec()).await;
    assert_eq!(status, 0, "{stderr}");
    let reopen = vec![
        "--from".to_owned(),
        other_from.clone(),
        "--reopen".to_owned(),
    ];
    let (status, stdout, stderr) = migrate(reopen, Vec::new()).await;
    assert_eq!(
        (status, stdout.contains("\"reopened\":true")),
        (0, true),
        "{stderr}"
    );
    let (status, _, stderr) = migrate(to(second.url()), s3_env.to_vec()).await;
    assert_eq!(status, 3);
    assert!(stderr.contains("target_not_empty"), "{stderr}");
    let mut replace = to(second.url());
    replace.push("--replace-target".into());
    let (status, stdout, stderr) = migrate(replace, s3_env.to_vec()).await;
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains("\"accounts\":{\"source\":1,\"target\":1}"),
        "{stdout}"
    );
    let (status, _, stderr) = migrate(vec!["--from".into(), other_from.clone()], Vec::new()).await;
    assert_eq!(status, 3);
    assert!(stderr.contains("target_missing"), "{stderr}");
    second.drop_now().await;
}
