//! Tokens: every endpoint needs a valid one in the header, the WebSocket
//! takes it in its `auth` frame only, and none reaches the server log.

use missive_proto::ServerFrame;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::*;
use crate::table::*;

/// Every route of `gateway::routes` that needs a token, with a body that
/// would succeed for a valid one: (method, path, JSON body).
fn authenticated_endpoints(
    group: i64,
    direct: i64,
    message: &str,
    media: &str,
) -> Vec<(Method, String, Option<Value>)> {
    let endpoint = |method, path: &str, body| (method, path.to_owned(), body);
    let bob = Some(json!({"username": "bob"}));
    let mut endpoints = vec![
        endpoint(Method::DELETE, "/v1/sessions/current", None),
        endpoint(Method::GET, "/v1/devices", None),
        endpoint(Method::DELETE, "/v1/devices/1", None),
        endpoint(
            Method::POST,
            "/v1/groups",
            Some(json!({"name": "new", "members": ["bob"]})),
        ),
        endpoint(Method::GET, "/v1/conversations", None),
        endpoint(Method::GET, "/v1/contacts", None),
        endpoint(Method::POST, "/v1/contacts", bob.clone()),
        endpoint(Method::DELETE, "/v1/contacts/bob", None),
        endpoint(Method::GET, "/v1/blocks", None),
        endpoint(Method::POST, "/v1/blocks", bob),
        endpoint(Method::DELETE, "/v1/blocks/bob", None),
        endpoint(Method::GET, "/v1/privacy", None),
        endpoint(
            Method::PUT,
            "/v1/privacy",
            Some(json!({"presence": "nobody"})),
        ),
        endpoint(Method::GET, &format!("/v1/media/{media}"), None),
        endpoint(Method::GET, &format!("/v1/media/{media}/thumbnail"), None),
        endpoint(
            Method::POST,
            "/v1/poll",
            Some(json!({"acks": [{"conversation": 1, "seq": 1}], "timeout_ms": 0})),
        ),
        endpoint(
            Method::POST,
            "/v1/frames",
            Some(
                json!({"type": "send", "id": "s", "to": "bob", "client_msg_id": "no-token", "text": "x"}),
            ),
        ),
    ];
    for conversation in [group, direct] {
        let actions = conversation_actions(conversation, message, "t");
        endpoints.extend(actions.into_iter().filter_map(|action| action.rest));
    }
    endpoints
}

/// What alice has and sees: her chat with bob, her devices, contacts,
/// blocks, privacy, `group` and conversation list.
async fn alice_state(world: &World, group: i64) -> Value {
    let api = &world.server.api;
    let alice = &world.alice;
    json!([
        world.members_view(world.direct, &world.message).await,
        api.devices(alice).await.expect("devices").devices.len(),
        api.contacts(alice).await.expect("contacts"),
        api.blocks(alice).await.expect("blocks"),
        api.privacy(alice).await.expect("privacy"),
        api.group(alice, group).await.expect("group"),
        api.conversations(alice).await.expect("list"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_a_missing_forged_or_revoked_token() {
    // Goal: no REST endpoint (nor the media upload) does anything without
    // a valid bearer token: none → `not_authenticated`, a made-up or
    // malformed one → `token_invalid`, a revoked one → `token_invalid`, a
    // token in the URL instead of the header → `not_authenticated`. And
    // none of the attempts changed anything.
    // Method: alice's second device is revoked up front; every endpoint of
    // the router is called four ways; then alice and bob's view of their
    // chat and group, alice's settings and the stored media are compared.
    let mut world = World::new().await;
    let api = &world.server.api;
    let group = world.group(&world.alice, "g", &["bob"]).await;
    queued(&mut world.bob_ws, 1).await;
    let media = api
        .upload_media(&world.alice, png(16, 16))
        .await
        .expect("upload")
        .media_id;
    let revoked = world.server.device("alice").await;
    api.logout(&revoked).await.expect("logout");
    let before = alice_state(&world, group).await;
    let media_files = || files_under(&world.server.data_dir.path().join("media"));
    let files_before = media_files();
    assert!(
        files_before >= 2,
        "the upload and its thumbnail are counted"
    );

    let endpoints = authenticated_endpoints(group, world.direct, &world.message, &media);
    for endpoint in &endpoints {
        refused_without_a_valid_token(&world, endpoint, &revoked).await;
    }
    // The upload takes raw bytes, not JSON.
    let forged = "0".repeat(64);
    for token in [None, Some(forged.as_str()), Some(revoked.as_str())] {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/media", world.server.url()))
            .body(png(8, 8));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("upload");
        assert_eq!(response.status(), 401, "upload with {token:?}");
    }

    assert_eq!(alice_state(&world, group).await, before);
    assert_eq!(media_files(), files_before, "no upload was stored");
    assert_nothing_queued(&mut world.alice_ws).await;
    assert_nothing_queued(&mut world.bob_ws).await;
}

/// One endpoint without a token, with a forged, a malformed and a revoked
/// one, and with alice's token in the query string instead of the header.
async fn refused_without_a_valid_token(
    world: &World,
    (method, path, body): &(Method, String, Option<Value>),
    revoked: &str,
) {
    let forged = "0".repeat(64);
    let cases: [(Option<&str>, &str); 4] = [
        (None, "not_authenticated"),
        (Some(&forged), "token_invalid"),
        (Some("not hex at all"), "token_invalid"),
        (Some(revoked), "token_invalid"),
    ];
    for (token, code) in cases {
        let answer = rest(&world.server, method.clone(), path, token, body.clone()).await;
        assert_eq!(rest_code(&answer), code, "{method} {path} with {token:?}");
    }
    // A token in the query string is not a credential.
    let separator = if path.contains('?') { '&' } else { '?' };
    for name in ["token", "access_token"] {
        let in_url = format!("{path}{separator}{name}={}", world.alice);
        let answer = rest(&world.server, method.clone(), &in_url, None, body.clone()).await;
        assert_eq!(answer.0, 401, "{method} {in_url}: {:?}", answer.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_authenticates_by_frame_not_by_url_or_header() {
    // Goal: a token never needs to travel in a URL: the WebSocket takes it
    // only in the `auth` frame. A token in the query string or in an
    // Authorization header of the upgrade request authenticates nothing:
    // the first non-auth frame is refused (`not_authenticated`, close
    // 4002). The browser app never builds a URL with the token either.
    let world = World::new().await;
    let ws_url = world.server.api.ws_url();
    for name in ["token", "access_token"] {
        let url = format!("{ws_url}?{name}={}", world.alice);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        assert_first_frame_refused(socket).await;
    }
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", world.alice).parse().expect("header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_first_frame_refused(socket).await;

    // The browser app: the token goes in headers and the auth frame only.
    for asset in ["/app.js", "/api.js", "/connection.js"] {
        let body = reqwest::get(format!("{}{asset}", world.server.url()))
            .await
            .expect("asset")
            .text()
            .await
            .expect("text");
        assert!(body.contains("token"), "{asset} is the app's code");
        for pattern in ["?token", "&token", "token=", "access_token"] {
            assert!(!body.contains(pattern), "{asset} puts a token in a URL");
        }
    }
}

/// Sends a `ping` as the first frame of an upgraded socket: it must be
/// refused with `not_authenticated` and the connection closed with 4002.
async fn assert_first_frame_refused(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket
        .send(Message::text(r#"{"type":"ping","id":"p"}"#))
        .await
        .expect("send");
    let mut error = None;
    let close = loop {
        let message = tokio::time::timeout(PROMPTLY, socket.next())
            .await
            .expect("an answer")
            .expect("a message")
            .expect("read");
        match message {
            Message::Text(text) => {
                let frame: ServerFrame = serde_json::from_str(&text).expect("frame");
                error = Some(error_code(&frame));
            }
            Message::Close(frame) => break frame.map(|frame| u16::from(frame.code)),
            _ => {}
        }
    };
    assert_eq!(error.as_deref(), Some("not_authenticated"));
    assert_eq!(close, Some(4002));
}
