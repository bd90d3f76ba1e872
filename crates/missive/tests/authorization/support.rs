//! Transports and fixtures shared by the authorization tests: raw REST,
//! raw frames over the WebSocket and `/v1/frames`, the three-user world.

use missive_client::{ClientError, Connection};
use missive_proto::{ClientFrame, ServerFrame, TypingState};
use serde_json::{Value, json};

use crate::common::*;

/// A conversation id nobody has.
pub(crate) const NO_SUCH_CONVERSATION: i64 = 999_999;

/// HTTP status of each error code this sweep expects (docs/PROTOCOL.md).
pub(crate) fn status_of(code: &str) -> u16 {
    match code {
        "not_member" | "not_admin" | "blocked" | "not_author" => 403,
        "unknown_conversation"
        | "unknown_message"
        | "unknown_media"
        | "unknown_user"
        | "unknown_device" => 404,
        "invalid_field" | "not_a_group" => 400,
        "already_authenticated" => 409,
        "token_invalid" | "not_authenticated" => 401,
        other => panic!("no status listed for {other}"),
    }
}

/// A raw REST request: (status, JSON body or `null`).
pub(crate) async fn rest(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A raw `GET` as `token`.
pub(crate) async fn get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    rest(server, reqwest::Method::GET, path, Some(token), None).await
}

/// The error code of a refused REST answer, checking its status.
pub(crate) fn rest_code((status, body): &(u16, Value)) -> String {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error body, got {status} {body}"))
        .to_owned();
    assert_eq!(*status, status_of(&code), "status of {code}");
    code
}

/// One frame over `POST /v1/frames`: (status, reply frames).
pub(crate) async fn over_http(
    server: &TestServer,
    token: &str,
    frame: &Value,
) -> (u16, Vec<ServerFrame>) {
    let (status, body) = rest(
        server,
        reqwest::Method::POST,
        "/v1/frames",
        Some(token),
        Some(frame.clone()),
    )
    .await;
    let frames = serde_json::from_value(body["frames"].clone())
        .unwrap_or_else(|err| panic!("{err}: {status} {body}"));
    (status, frames)
}

/// Sends a raw JSON frame (with a string `id`) on the socket and returns
/// the reply carrying that id; other frames are passed over.
pub(crate) async fn over_ws(connection: &mut Connection, frame: &Value) -> ServerFrame {
    let id = frame["id"].as_str().expect("frame id").to_owned();
    connection
        .send_raw(&frame.to_string())
        .await
        .expect("send frame");
    loop {
        let reply = connection.next_frame(PROMPTLY).await.expect("reply");
        let reply_id = match &reply {
            ServerFrame::Sent { id, .. }
            | ServerFrame::Acked { id, .. }
            | ServerFrame::ReadOk { id, .. }
            | ServerFrame::Pong { id }
            | ServerFrame::Ok { id }
            | ServerFrame::Group { id, .. }
            | ServerFrame::Error { id, .. } => id.clone(),
            _ => None,
        };
        if reply_id.as_deref() == Some(id.as_str()) {
            return reply;
        }
    }
}

pub(crate) fn error_code(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::Error { code, .. } => code.as_str().to_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// What a member can observe of a conversation: its history, the receipts
/// of `message`, the member's conversation list and (for groups) the group.
pub(crate) async fn observed(
    server: &TestServer,
    token: &str,
    conversation: i64,
    message: &str,
) -> Value {
    let api = &server.api;
    let history = api.history(token, conversation, "").await.expect("history");
    let receipts = api
        .receipts(token, conversation, message)
        .await
        .expect("receipts");
    let list = api.conversations(token).await.expect("conversations");
    let group = api.group(token, conversation).await.ok();
    json!({
        "history": serde_json::to_value(history).expect("json"),
        "receipts": serde_json::to_value(receipts).expect("json"),
        "conversations": serde_json::to_value(list).expect("json"),
        "group": serde_json::to_value(group).expect("json"),
    })
}

/// Alice, bob and mallory, each connected; alice sent bob `secret` in
/// their 1:1 and bob received, acked and read it (so there are receipt
/// cursors).
pub(crate) struct World {
    pub server: TestServer,
    pub alice: String,
    pub bob: String,
    pub mallory: String,
    pub alice_ws: Connection,
    pub bob_ws: Connection,
    pub mallory_ws: Connection,
    /// The alice–bob 1:1.
    pub direct: i64,
    /// Alice's text in it.
    pub message: String,
}

impl World {
    pub(crate) async fn new() -> Self {
        let server = TestServer::start().await;
        let alice = server.user("alice").await;
        let bob = server.user("bob").await;
        let mallory = server.user("mallory").await;
        let mut alice_ws = server.connect(&alice).await;
        let mut bob_ws = server.connect(&bob).await;
        let mallory_ws = server.connect(&mallory).await;
        let sent = alice_ws.send_text("bob", "a-1", "secret").await;
        let (message, direct, _) = sent_message(sent.expect("send"));
        let got = queued(&mut bob_ws, 1).await;
        ack_received(&mut bob_ws, &got).await;
        let read = ClientFrame::Read {
            id: Some("r".into()),
            conversation: direct,
            seq: 1,
        };
        bob_ws.request(&read, "r").await.expect("read");
        let receipts = queued(&mut alice_ws, 2).await;
        assert!(matches!(receipts[0], ServerFrame::Delivered { seq: 1, .. }));
        assert!(matches!(receipts[1], ServerFrame::Read { seq: 1, .. }));
        Self {
            server,
            alice,
            bob,
            mallory,
            alice_ws,
            bob_ws,
            mallory_ws,
            direct,
            message,
        }
    }

    /// What alice and bob observe of `conversation` (about `message`).
    pub(crate) async fn members_view(&self, conversation: i64, message: &str) -> Value {
        json!({
            "alice": observed(&self.server, &self.alice, conversation, message).await,
            "bob": observed(&self.server, &self.bob, conversation, message).await,
        })
    }

    /// Nothing reached alice's or bob's live devices: no queued frame, no
    /// typing or presence (ping round trips, no sleep).
    pub(crate) async fn assert_members_undisturbed(&mut self) {
        assert_nothing_queued(&mut self.alice_ws).await;
        assert_nothing_queued(&mut self.bob_ws).await;
        assert_no_ephemeral(&mut self.alice_ws).await;
        assert_no_ephemeral(&mut self.bob_ws).await;
    }

    /// The live WebSocket of alice, bob or mallory.
    fn ws(&mut self, name: &str) -> &mut Connection {
        match name {
            "alice" => &mut self.alice_ws,
            "bob" => &mut self.bob_ws,
            "mallory" => &mut self.mallory_ws,
            other => panic!("no user {other}"),
        }
    }

    /// `typist` types (`state`) in `conversation`; each of `watchers` is
    /// told.
    pub(crate) async fn types(
        &mut self,
        typist: &str,
        conversation: i64,
        state: TypingState,
        watchers: &[&str],
    ) {
        let typing = self.ws(typist).typing(conversation, state).await;
        typing.expect("typing");
        for watcher in watchers {
            assert!(matches!(
                next_ephemeral(self.ws(watcher)).await,
                ServerFrame::Typing { ref from, .. } if from == typist
            ));
        }
    }

    /// Mallory, subscribing to alice's presence, is told she is offline.
    pub(crate) async fn assert_alice_hidden_from_mallory(&mut self) {
        let now = self
            .mallory_ws
            .subscribe_presence(&["alice"])
            .await
            .expect("subscribe");
        assert_eq!(presence_of(&now[0]), ("alice".into(), false, None));
    }

    /// Creates a group of `creator` (a token) with `members`; its id.
    pub(crate) async fn group(&self, creator: &str, name: &str, members: &[&str]) -> i64 {
        self.server.group(creator, name, members).await
    }

    /// Alice leaves and comes back (a bystander, zed, holds her place
    /// meanwhile); bob, subscribed to her, sees both, and mallory nothing.
    /// Returns bob's "offline" and "online" frames.
    pub(crate) async fn alice_goes_and_comes_back(&mut self) -> [(String, bool, Option<i64>); 2] {
        let bob_sees = self
            .bob_ws
            .subscribe_presence(&["alice"])
            .await
            .expect("subscribe");
        assert_eq!(presence_of(&bob_sees[0]), ("alice".into(), true, None));
        let zed = self.server.user("zed").await;
        let alice_ws = std::mem::replace(&mut self.alice_ws, self.server.connect(&zed).await);
        alice_ws.close().await;
        let offline = presence_of(&next_ephemeral(&mut self.bob_ws).await);
        assert_eq!((offline.0.as_str(), offline.1), ("alice", false));
        assert_no_ephemeral(&mut self.mallory_ws).await;
        self.alice_ws = self.server.connect(&self.alice).await;
        let online = presence_of(&next_ephemeral(&mut self.bob_ws).await);
        assert_eq!((online.0.as_str(), online.1), ("alice", true));
        assert_no_ephemeral(&mut self.mallory_ws).await;
        [offline, online]
    }
}

/// The close code the server ends `connection` with, reading until then.
pub(crate) async fn closed_with(connection: &mut Connection) -> u16 {
    loop {
        match connection.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => return code,
            Err(other) => panic!("expected a close, got {other:?}"),
        }
    }
}
