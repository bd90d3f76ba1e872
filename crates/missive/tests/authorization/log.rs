//! No token, password or message text in the server's log.

use missive_client::{Api, Connection};
use missive_proto::ClientFrame;
use serde_json::json;

use crate::common::*;
use crate::support::*;

/// The tokens of the run: alice's and bob's, alice's spare device (revoked
/// later) and a forged one.
struct Tokens {
    alice: String,
    bob: String,
    spare: missive_proto::rest::LoginResponse,
    forged: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_reach_the_server_log() {
    // Goal: the built server, logging at trace level (the WebSocket
    // crates' trace, which carries frame payloads, explicitly asked for),
    // never writes a token (valid, forged, revoked, presented in a header,
    // an auth frame, a malformed auth frame or a URL), a password or a
    // message text into its log.
    // Method: `missive serve` with its stderr collected; every way a token
    // travels is exercised, including refusals, revocation and logout;
    // then the process is stopped and every line searched. The log must
    // show the logins, so the search covers the right stretch of time.
    let data_dir = tempfile::tempdir().expect("tempdir");
    let (mut server, log) = ServerProcess::start_logged(
        data_dir.path(),
        &[],
        "trace,tungstenite=trace,tokio_tungstenite=trace",
    );
    let api = Api::new(&server.url);
    let tokens = log_in(&api).await;
    rest_with_the_header(&api, &tokens).await;
    // Tokens in URLs (refused, but still in request lines).
    for path in [
        format!("/v1/devices?token={}", tokens.alice),
        format!("/v1/ws?token={}", tokens.alice),
    ] {
        let _ = reqwest::get(format!("{}{path}", server.url)).await;
    }
    let (mut alice_ws, bob_ws) = websockets(&api, &tokens).await;

    // Revocation and logout, with the socket open.
    api.revoke(&tokens.alice, tokens.spare.device_id)
        .await
        .expect("revoke");
    assert!(api.devices(&tokens.spare.token).await.is_err());
    api.logout(&tokens.alice).await.expect("logout");
    assert_eq!(closed_with(&mut alice_ws).await, 4003);
    assert!(api.devices(&tokens.alice).await.is_err());
    bob_ws.close().await;

    server.kill_9();
    assert_no_secret_in(&log.finish(), &tokens);
}

/// Registers alice and bob and logs them in (alice twice, and once with
/// a wrong password).
async fn log_in(api: &Api) -> Tokens {
    api.register("alice", PASSWORD).await.expect("register");
    api.register("bob", PASSWORD).await.expect("register");
    let login = |user: &'static str, device: &'static str| async move {
        api.login(user, PASSWORD, device).await.expect("login")
    };
    let tokens = Tokens {
        alice: login("alice", "a").await.token,
        bob: login("bob", "b").await.token,
        spare: login("alice", "c").await,
        forged: "ab".repeat(32),
    };
    let _ = api.login("alice", "wrong password!", "d").await;
    tokens
}

/// REST with the header, including refusals; a frame over `/v1/frames`
/// and an `auth` frame in its body.
async fn rest_with_the_header(api: &Api, tokens: &Tokens) {
    let Tokens {
        alice, bob, forged, ..
    } = tokens;
    api.devices(alice).await.expect("devices");
    assert!(api.devices(forged).await.is_err());
    let media = api.upload_media(alice, png(16, 16)).await.expect("upload");
    api.download_media(alice, &media.media_id)
        .await
        .expect("download");
    assert!(api.download_media(forged, &media.media_id).await.is_err());
    api.poll(bob, &[], 0).await.expect("poll");
    let frame = ClientFrame::Send {
        id: Some("s".into()),
        to: Some("bob".into()),
        conversation: None,
        client_msg_id: "http".into(),
        text: "over http".into(),
        reply_to: None,
        media: vec![media.media_id.clone()],
        encrypted: false,
    };
    api.frame(alice, &frame).await.expect("frame");
    let auth_in_body = ClientFrame::Auth {
        id: Some("a".into()),
        token: bob.clone(),
    };
    assert!(api.frame(alice, &auth_in_body).await.is_err());
}

/// WebSockets: good, forged, malformed and repeated auth frames; returns
/// alice's and bob's open sockets.
async fn websockets(api: &Api, tokens: &Tokens) -> (Connection, Connection) {
    let Tokens {
        alice, bob, forged, ..
    } = tokens;
    let mut alice_ws = Connection::connect(&api.ws_url(), alice)
        .await
        .expect("connect");
    alice_ws
        .send_text("bob", "ws", "over the socket")
        .await
        .expect("send");
    let again = json!({"type": "auth", "id": "again", "token": bob});
    assert_eq!(
        error_code(&over_ws(&mut alice_ws, &again).await),
        "already_authenticated"
    );
    assert!(Connection::connect(&api.ws_url(), forged).await.is_err());
    for bad in [
        json!({"type": "auth", "token": bob, "extra": true}),
        json!({"type": "auth", "token": [bob]}),
        json!({"type": "ping", "token": bob}),
    ] {
        let (mut socket, _) = tokio_tungstenite::connect_async(api.ws_url())
            .await
            .expect("upgrade");
        use futures_util::{SinkExt, StreamExt};
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(
                bad.to_string(),
            ))
            .await
            .expect("send");
        // Read until the server closes.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PROMPTLY, socket.next()).await {}
    }
    let mut bob_ws = Connection::connect(&api.ws_url(), bob)
        .await
        .expect("connect");
    queued(&mut bob_ws, 2).await;
    (alice_ws, bob_ws)
}

/// The log covers the logins and revocations, and no secret is in it.
fn assert_no_secret_in(lines: &[String], tokens: &Tokens) {
    assert!(
        lines.iter().any(|line| line.contains("device logged in"))
            && lines.iter().any(|line| line.contains("device revoked")),
        "the log covers the logins and revocations: {lines:#?}"
    );
    for (what, secret) in [
        ("alice's token", tokens.alice.as_str()),
        ("bob's token", tokens.bob.as_str()),
        ("a revoked token", tokens.spare.token.as_str()),
        ("a forged token", tokens.forged.as_str()),
        ("the password", PASSWORD),
        ("a wrong password", "wrong password!"),
        ("a text sent over HTTP", "over http"),
        ("a text sent over the socket", "over the socket"),
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{what} is in the log: {leaks:#?}");
    }
}
