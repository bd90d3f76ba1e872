//! Media is seen only by those it was sent to.

use missive_proto::ClientFrame;
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::support::*;
use crate::table::*;

/// The bytes and the thumbnail of media `id`.
fn paths(id: &str) -> [String; 2] {
    [
        format!("/v1/media/{id}"),
        format!("/v1/media/{id}/thumbnail"),
    ]
}

fn downloads(id: &str) -> Vec<Action> {
    paths(id)
        .into_iter()
        .map(|path| Action::rest(Method::GET, path, None))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_not_shared_with_you_is_404() {
    // Goal: media alice sent only to bob is `unknown_media` (404) for
    // mallory, bytes and thumbnail alike, indistinguishable from an id that
    // does not exist; media alice uploaded but never sent is 404 to everyone
    // but alice (bob included); nobody but the uploader can attach an id
    // (which would otherwise share it with themselves).
    let mut world = World::new().await;
    let api = &world.server.api;
    let sent = api
        .upload_media(&world.alice, png(64, 48))
        .await
        .expect("upload")
        .media_id;
    let unsent = api
        .upload_media(&world.alice, png(32, 32))
        .await
        .expect("upload")
        .media_id;
    let send = ClientFrame::Send {
        id: Some("photo".into()),
        to: None,
        conversation: Some(world.direct),
        client_msg_id: "photo".into(),
        text: String::new(),
        reply_to: None,
        media: vec![sent.clone()],
        encrypted: false,
    };
    world.alice_ws.request(&send, "photo").await.expect("send");
    queued(&mut world.bob_ws, 1).await;

    let server = &world.server;
    for path in paths(&sent) {
        assert_eq!(get(server, &world.alice, &path).await.0, 200);
        assert_eq!(get(server, &world.bob, &path).await.0, 200);
        let answer = get(server, &world.mallory, &path).await;
        let made_up = path.replace(&sent, "0123456789abcdef0123456789abcdef");
        assert_eq!(
            answer,
            get(server, &world.mallory, &made_up).await,
            "an existing id looks exactly like a missing one"
        );
    }
    for path in paths(&unsent) {
        assert_eq!(get(server, &world.alice, &path).await.0, 200);
    }
    let own = world.group(&world.mallory, "mine", &[]).await;
    let mut table = rows(Who::Mallory, downloads(&sent), "unknown_media");
    table.extend(rows(Who::Bob, downloads(&unsent), "unknown_media"));
    table.extend(rows(Who::Mallory, downloads(&unsent), "unknown_media"));
    // Attaching someone else's upload, to a chat of one's own.
    for (n, id) in [&sent, &unsent].into_iter().enumerate() {
        let steal = json!({"conversation": own, "text": "", "media": [id]});
        let steal = frame("send", "steal", &n.to_string(), steal);
        table.extend(rows(Who::Mallory, [Action::frame(steal)], "unknown_media"));
        let forward = json!({"to": "mallory", "text": "fwd", "media": [id]});
        let forward = frame("send", "bob", &n.to_string(), forward);
        table.extend(rows(Who::Bob, [Action::frame(forward)], "unknown_media"));
    }
    table.extend(rows(Who::Mallory, downloads(&unsent), "unknown_media"));
    world.refuse(table).await;
    assert_nothing_queued(&mut world.mallory_ws).await;
    assert_nothing_queued(&mut world.alice_ws).await;
}
