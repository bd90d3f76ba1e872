//! Authorization, black-box through the public protocol (issue 8): for
//! every client frame and every REST endpoint, an outsider (mallory) tries
//! it against a conversation, message, media object, group or device that
//! is not hers. Each attempt must be refused with its typed code, over the
//! WebSocket and over `/v1/frames` alike, and must change nothing for the
//! members: no frame reaches their devices (checked with ping round trips,
//! never sleeps), and their history, receipts, conversation list and group
//! are exactly as before.

mod common;

use common::*;
use missive_client::{ClientError, Connection};
use missive_proto::rest::PresenceVisibility;
use missive_proto::{ClientFrame, ServerFrame, TypingState};
use serde_json::{Value, json};

/// A conversation id nobody has.
const NO_SUCH_CONVERSATION: i64 = 999_999;

/// HTTP status of each error code this sweep expects (docs/PROTOCOL.md).
fn status_of(code: &str) -> u16 {
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
async fn rest(
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

/// The error code of a refused REST answer, checking its status.
fn rest_code((status, body): &(u16, Value)) -> String {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error body, got {status} {body}"))
        .to_owned();
    assert_eq!(*status, status_of(&code), "status of {code}");
    code
}

/// One frame over `POST /v1/frames`: (status, reply frames).
async fn over_http(server: &TestServer, token: &str, frame: &Value) -> (u16, Vec<ServerFrame>) {
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
async fn over_ws(connection: &mut Connection, frame: &Value) -> ServerFrame {
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

fn error_code(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::Error { code, .. } => code.as_str().to_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Sends `frame` as `token` over the WebSocket `connection` and over
/// `/v1/frames`; both must be refused with `code` (and its HTTP status).
async fn refused_both_ways(
    server: &TestServer,
    connection: &mut Connection,
    token: &str,
    frame: &Value,
    code: &str,
) {
    let reply = over_ws(connection, frame).await;
    assert_eq!(error_code(&reply), code, "over the WebSocket: {frame}");
    let (status, replies) = over_http(server, token, frame).await;
    assert_eq!(replies.len(), 1, "{frame}: {replies:?}");
    assert_eq!(error_code(&replies[0]), code, "over /v1/frames: {frame}");
    assert_eq!(status, status_of(code), "HTTP status for {frame}");
}

/// Every client frame that names a conversation, aimed at `conversation`
/// and its message `target`; `tag` keeps ids and client_msg_ids unique.
fn conversation_frames(conversation: i64, target: &str, tag: &str) -> Vec<Value> {
    let c = conversation;
    let id = |name: &str| format!("{tag}-{name}");
    vec![
        json!({"type": "send", "id": id("send"), "conversation": c, "client_msg_id": id("send"), "text": "let me in"}),
        json!({"type": "send", "id": id("reply"), "conversation": c, "client_msg_id": id("reply"), "text": "re", "reply_to": target}),
        json!({"type": "react", "id": id("react"), "conversation": c, "client_msg_id": id("react"), "target": target, "emoji": "💩"}),
        json!({"type": "react", "id": id("unreact"), "conversation": c, "client_msg_id": id("unreact"), "target": target}),
        json!({"type": "edit", "id": id("edit"), "conversation": c, "client_msg_id": id("edit"), "target": target, "text": "forged"}),
        json!({"type": "delete", "id": id("delete"), "conversation": c, "client_msg_id": id("delete"), "target": target}),
        json!({"type": "typing", "id": id("typing"), "conversation": c, "state": "start"}),
        json!({"type": "read", "id": id("read"), "conversation": c, "seq": 1_000}),
        json!({"type": "ack", "id": id("ack"), "conversation": c, "seq": 1}),
        json!({"type": "group_info", "id": id("info"), "conversation": c}),
        json!({"type": "group_rename", "id": id("rename"), "conversation": c, "name": "pwned"}),
        json!({"type": "group_add", "id": id("add"), "conversation": c, "members": ["mallory"]}),
        json!({"type": "group_remove", "id": id("remove"), "conversation": c, "username": "bob"}),
        json!({"type": "group_promote", "id": id("promote"), "conversation": c, "username": "mallory"}),
        json!({"type": "group_demote", "id": id("demote"), "conversation": c, "username": "alice"}),
        json!({"type": "group_leave", "id": id("leave"), "conversation": c}),
    ]
}

/// Every REST call that names a conversation (and message `target`):
/// (method, path, body).
fn conversation_endpoints(
    conversation: i64,
    target: &str,
) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let c = conversation;
    vec![
        (Method::GET, format!("/v1/conversations/{c}/messages"), None),
        (
            Method::GET,
            format!("/v1/conversations/{c}/messages?before=1000&limit=5"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{c}/messages?after=0"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/conversations/{c}/messages/{target}/receipts"),
            None,
        ),
        (Method::GET, format!("/v1/groups/{c}"), None),
        (
            Method::PATCH,
            format!("/v1/groups/{c}"),
            Some(json!({"name": "pwned"})),
        ),
        (
            Method::POST,
            format!("/v1/groups/{c}/members"),
            Some(json!({"members": ["mallory"]})),
        ),
        (Method::DELETE, format!("/v1/groups/{c}/members/bob"), None),
        (
            Method::POST,
            format!("/v1/groups/{c}/admins"),
            Some(json!({"username": "mallory"})),
        ),
        (Method::DELETE, format!("/v1/groups/{c}/admins/alice"), None),
        (Method::POST, format!("/v1/groups/{c}/leave"), None),
        (
            Method::POST,
            "/v1/poll".to_owned(),
            Some(json!({"acks": [{"conversation": c, "seq": 1}], "timeout_ms": 0})),
        ),
    ]
}

/// What a member can observe of a conversation: its history, the receipts
/// of `message`, the member's conversation list and (for groups) the group.
async fn observed(server: &TestServer, token: &str, conversation: i64, message: &str) -> Value {
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
struct World {
    server: TestServer,
    alice: String,
    bob: String,
    mallory: String,
    alice_ws: Connection,
    bob_ws: Connection,
    mallory_ws: Connection,
    /// The alice–bob 1:1.
    direct: i64,
    /// Alice's text in it.
    message: String,
}

impl World {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut missive_server::Config)) -> Self {
        let server = TestServer::start_with(adjust).await;
        let alice = server.user("alice").await;
        let bob = server.user("bob").await;
        let mallory = server.user("mallory").await;
        let mut alice_ws = server.connect(&alice).await;
        let mut bob_ws = server.connect(&bob).await;
        let mallory_ws = server.connect(&mallory).await;
        let (message, direct) = match alice_ws.send_text("bob", "a-1", "secret").await {
            Ok(ServerFrame::Sent {
                message_id,
                conversation,
                ..
            }) => (message_id, conversation),
            other => panic!("expected sent, got {other:?}"),
        };
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
    async fn members_view(&self, conversation: i64, message: &str) -> Value {
        json!({
            "alice": observed(&self.server, &self.alice, conversation, message).await,
            "bob": observed(&self.server, &self.bob, conversation, message).await,
        })
    }

    /// Nothing reached alice's or bob's live devices: no queued frame, no
    /// typing or presence (ping round trips, no sleep).
    async fn assert_members_undisturbed(&mut self) {
        assert_nothing_queued(&mut self.alice_ws).await;
        assert_nothing_queued(&mut self.bob_ws).await;
        assert_no_ephemeral(&mut self.alice_ws).await;
        assert_no_ephemeral(&mut self.bob_ws).await;
    }
}

fn sent_message(frame: ServerFrame) -> (String, i64, i64) {
    match frame {
        ServerFrame::Sent {
            message_id,
            conversation,
            seq,
            ..
        } => (message_id, conversation, seq),
        other => panic!("expected sent, got {other:?}"),
    }
}

fn presence_of(frame: &ServerFrame) -> (String, bool, Option<i64>) {
    match frame {
        ServerFrame::Presence {
            user,
            online,
            last_seen_ms,
        } => (user.clone(), *online, *last_seen_ms),
        other => panic!("expected presence, got {other:?}"),
    }
}

/// The close code the server ends `connection` with, reading until then.
async fn closed_with(connection: &mut Connection) -> u16 {
    loop {
        match connection.next_frame(PROMPTLY).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => return code,
            Err(other) => panic!("expected a close, got {other:?}"),
        }
    }
}

async fn current_device(server: &TestServer, token: &str) -> i64 {
    server
        .api
        .devices(token)
        .await
        .expect("devices")
        .devices
        .iter()
        .find(|device| device.current)
        .expect("the current device")
        .device_id
}

async fn device_ids(server: &TestServer, token: &str) -> Vec<i64> {
    server
        .api
        .devices(token)
        .await
        .expect("devices")
        .devices
        .iter()
        .map(|device| device.device_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_can_do_nothing_in_a_one_to_one() {
    // Goal: every frame and REST endpoint that names a conversation is
    // refused with `unknown_conversation` when mallory aims it at alice and
    // bob's 1:1, exactly as for an id that does not exist (she cannot even
    // learn that it exists), over both transports, and changes nothing
    // alice or bob can observe.
    // Method: snapshot what alice and bob see (history with reactions and
    // edits, receipts, conversation lists), fire every frame and endpoint,
    // then compare and prove with ping round trips that no frame, receipt
    // or typing indication reached either of them.
    let mut world = World::new().await;
    let (direct, message) = (world.direct, world.message.clone());
    let before = world.members_view(direct, &message).await;

    for frame in conversation_frames(direct, &message, "direct") {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "unknown_conversation",
        )
        .await;
    }
    for frame in conversation_frames(NO_SUCH_CONVERSATION, &message, "none") {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "unknown_conversation",
        )
        .await;
    }
    for (method, path, body) in conversation_endpoints(direct, &message) {
        let answer = rest(&world.server, method, &path, Some(&world.mallory), body).await;
        assert_eq!(rest_code(&answer), "unknown_conversation", "{path}");
    }
    for (method, path, body) in conversation_endpoints(NO_SUCH_CONVERSATION, &message) {
        let answer = rest(&world.server, method, &path, Some(&world.mallory), body).await;
        assert_eq!(rest_code(&answer), "unknown_conversation", "{path}");
    }

    world.assert_members_undisturbed().await;
    assert_eq!(world.members_view(direct, &message).await, before);
    let mallory_sees = world.server.api.conversations(&world.mallory).await;
    assert!(
        mallory_sees
            .expect("conversations")
            .conversations
            .is_empty(),
        "mallory's list must not show alice and bob's chat"
    );
    // The members themselves still can (the refusals above were about
    // mallory, not a broken conversation).
    let (_, _, seq) = sent_message(
        world
            .alice_ws
            .send_to(direct, "a-2", "still private", None)
            .await
            .expect("send"),
    );
    assert_eq!(seq, 2, "no refused attempt took a seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_can_do_nothing_in_a_group() {
    // Goal: the same sweep against a group of alice (admin) and bob:
    // mallory can neither read, write, react, edit, delete, type, read-mark,
    // look at the group, rename it, add herself, remove or promote anyone,
    // nor leave it, over frames or REST.
    let mut world = World::new().await;
    let group = world
        .server
        .api
        .create_group(&world.alice, "trip", &["bob"])
        .await
        .expect("group")
        .conversation;
    let (message, _, _) = sent_message(
        world
            .alice_ws
            .send_to(group, "g-1", "group secret", None)
            .await
            .expect("send"),
    );
    let got = queued(&mut world.bob_ws, 2).await;
    ack_received(&mut world.bob_ws, &got).await;
    let delivered = queued(&mut world.alice_ws, 1).await;
    assert!(
        matches!(&delivered[0], ServerFrame::Delivered { conversation, seq: 2, .. } if *conversation == group),
        "{delivered:?}"
    );
    let before = world.members_view(group, &message).await;

    for frame in conversation_frames(group, &message, "group") {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "unknown_conversation",
        )
        .await;
    }
    for (method, path, body) in conversation_endpoints(group, &message) {
        let answer = rest(&world.server, method, &path, Some(&world.mallory), body).await;
        assert_eq!(rest_code(&answer), "unknown_conversation", "{path}");
    }

    world.assert_members_undisturbed().await;
    assert_eq!(world.members_view(group, &message).await, before);
    let group_now = world.server.api.group(&world.alice, group).await;
    let members: Vec<String> = group_now
        .expect("group")
        .members
        .into_iter()
        .map(|member| member.username)
        .collect();
    assert_eq!(members, ["alice", "bob"]);
    assert_nothing_queued(&mut world.mallory_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_another_conversation_cannot_be_named_from_ones_own() {
    // Goal: membership of *some* conversation is no key to another's
    // messages: naming alice's message (from her 1:1 with bob) as the target
    // of a react, edit, delete, reply or receipts query in a conversation
    // the caller belongs to is `unknown_message` — also for bob, who may
    // see that message but only in its own conversation; editing or
    // deleting it where it lives is `not_author` for bob.
    // Method: mallory has a group of her own, bob and mallory share one;
    // every attempt is made over both transports; then alice and bob's
    // view of the 1:1 is compared with the one from before.
    let mut world = World::new().await;
    let (direct, message) = (world.direct, world.message.clone());
    let api = &world.server.api;
    let own = api
        .create_group(&world.mallory, "mine", &[])
        .await
        .expect("group")
        .conversation;
    let shared = api
        .create_group(&world.mallory, "shared", &["bob"])
        .await
        .expect("group")
        .conversation;
    let created = queued(&mut world.bob_ws, 1).await;
    ack_received(&mut world.bob_ws, &created).await;
    let before = world.members_view(direct, &message).await;

    let cross = |conversation: i64, tag: &str| {
        let id = |name: &str| format!("{tag}-{name}");
        vec![
            json!({"type": "send", "id": id("reply"), "conversation": conversation, "client_msg_id": id("reply"), "text": "re", "reply_to": message}),
            json!({"type": "react", "id": id("react"), "conversation": conversation, "client_msg_id": id("react"), "target": message, "emoji": "👀"}),
            json!({"type": "react", "id": id("unreact"), "conversation": conversation, "client_msg_id": id("unreact"), "target": message}),
            json!({"type": "edit", "id": id("edit"), "conversation": conversation, "client_msg_id": id("edit"), "target": message, "text": "forged"}),
            json!({"type": "delete", "id": id("delete"), "conversation": conversation, "client_msg_id": id("delete"), "target": message}),
        ]
    };
    for frame in cross(own, "own") {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "unknown_message",
        )
        .await;
    }
    for frame in cross(shared, "shared") {
        refused_both_ways(
            &world.server,
            &mut world.bob_ws,
            &world.bob,
            &frame,
            "unknown_message",
        )
        .await;
    }
    let receipts = format!("/v1/conversations/{own}/messages/{message}/receipts");
    let answer = rest(
        &world.server,
        reqwest::Method::GET,
        &receipts,
        Some(&world.mallory),
        None,
    )
    .await;
    assert_eq!(rest_code(&answer), "unknown_message");
    let receipts = format!("/v1/conversations/{shared}/messages/{message}/receipts");
    let answer = rest(
        &world.server,
        reqwest::Method::GET,
        &receipts,
        Some(&world.bob),
        None,
    )
    .await;
    assert_eq!(rest_code(&answer), "unknown_message");

    // Where the message lives, bob is a member but not its author.
    for (kind, frame) in [
        (
            "edit",
            json!({"type": "edit", "id": "b-edit", "conversation": direct, "client_msg_id": "b-edit", "target": message, "text": "bob's words"}),
        ),
        (
            "delete",
            json!({"type": "delete", "id": "b-delete", "conversation": direct, "client_msg_id": "b-delete", "target": message}),
        ),
    ] {
        let reply = over_ws(&mut world.bob_ws, &frame).await;
        assert_eq!(error_code(&reply), "not_author", "{kind}");
        let (status, replies) = over_http(&world.server, &world.bob, &frame).await;
        assert_eq!(
            (status, error_code(&replies[0])),
            (403, "not_author".into())
        );
    }

    assert_nothing_queued(&mut world.alice_ws).await;
    assert_eq!(world.members_view(direct, &message).await, before);
    let history = world.server.api.history(&world.mallory, shared, "").await;
    assert_eq!(
        history.expect("history").messages.len(),
        1,
        "only the creation event: no refused attempt was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_is_always_the_authenticated_device() {
    // Goal: nothing in a frame can make a message come from someone else:
    // fields naming a sender or device are refused (`invalid_field`), a
    // second `auth` with alice's token on mallory's socket (or on
    // /v1/frames) is `already_authenticated` and changes nobody's identity,
    // and client_msg_ids are per device, so reusing alice's neither
    // returns her message nor stores anything in her chat.
    // Method: raw frames over both transports; bob's received frames show
    // who the server says sent them.
    let mut world = World::new().await;
    let alice_device = world.alice_ws.device_id;
    let mallory_device = world.mallory_ws.device_id;
    let before = world.members_view(world.direct, &world.message).await;

    let forged_fields = [
        json!({"from": "alice"}),
        json!({"from_device": alice_device}),
        json!({"sender": "alice"}),
        json!({"device_id": alice_device}),
        json!({"account_id": 1}),
        json!({"token": world.alice.clone()}),
    ];
    for (n, extra) in forged_fields.iter().enumerate() {
        for (to, conversation) in [(Some("bob"), None), (None, Some(world.direct))] {
            let mut frame = json!({"type": "send", "id": format!("f{n}"), "client_msg_id": format!("f{n}"), "text": "it's me, alice"});
            if let Some(to) = to {
                frame["to"] = json!(to);
            }
            if let Some(conversation) = conversation {
                frame["conversation"] = json!(conversation);
            }
            for (key, value) in extra.as_object().expect("object") {
                frame[key] = value.clone();
            }
            refused_both_ways(
                &world.server,
                &mut world.mallory_ws,
                &world.mallory,
                &frame,
                "invalid_field",
            )
            .await;
        }
    }
    // The same for reactions, edits and deletes in alice's chat.
    for (n, mut frame) in [
        json!({"type": "react", "conversation": world.direct, "target": world.message, "emoji": "👍"}),
        json!({"type": "edit", "conversation": world.direct, "target": world.message, "text": "x"}),
        json!({"type": "delete", "conversation": world.direct, "target": world.message}),
    ]
    .into_iter()
    .enumerate()
    {
        frame["id"] = json!(format!("k{n}"));
        frame["client_msg_id"] = json!(format!("k{n}"));
        frame["from"] = json!("alice");
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "invalid_field",
        )
        .await;
    }

    // A second auth frame does not switch the connection to alice.
    let auth = json!({"type": "auth", "id": "again", "token": world.alice});
    let reply = over_ws(&mut world.mallory_ws, &auth).await;
    assert_eq!(error_code(&reply), "already_authenticated");
    let (status, replies) = over_http(&world.server, &world.mallory, &auth).await;
    assert_eq!(
        (status, error_code(&replies[0])),
        (409, "already_authenticated".into())
    );
    // alice's client_msg_id, from mallory: not a duplicate of alice's
    // message in alice's chat, and a new message of mallory's to bob.
    let reuse = ClientFrame::Send {
        id: Some("reuse".into()),
        to: None,
        conversation: Some(world.direct),
        client_msg_id: "a-1".into(),
        text: "dup?".into(),
        reply_to: None,
        media: Vec::new(),
        encrypted: false,
    };
    assert_eq!(
        refused_code(world.mallory_ws.request(&reuse, "reuse").await),
        "unknown_conversation"
    );
    world.assert_members_undisturbed().await;
    assert_eq!(
        world.members_view(world.direct, &world.message).await,
        before
    );

    let sent = world.mallory_ws.send_text("bob", "a-1", "hello bob").await;
    let ServerFrame::Sent {
        message_id,
        conversation,
        duplicate,
        ..
    } = sent.expect("send")
    else {
        panic!("expected sent")
    };
    assert!(!duplicate, "client_msg_ids are per device");
    assert_ne!(message_id, world.message);
    assert_ne!(conversation, world.direct);
    let got = queued(&mut world.bob_ws, 1).await;
    match &got[0] {
        ServerFrame::Message {
            from,
            from_device,
            conversation: got_conversation,
            text,
            ..
        } => {
            assert_eq!(
                (
                    from.as_str(),
                    *from_device,
                    *got_conversation,
                    text.as_str()
                ),
                ("mallory", mallory_device, conversation, "hello bob")
            );
        }
        other => panic!("expected a message, got {other:?}"),
    }
    // The same id from another device in the very conversation alice used
    // it in: a new message too (idempotency is per device, not per
    // conversation or per id).
    let sent = world
        .bob_ws
        .send_to(world.direct, "a-1", "same id, other device", None)
        .await;
    let ServerFrame::Sent {
        message_id,
        duplicate,
        ..
    } = sent.expect("send")
    else {
        panic!("expected sent")
    };
    assert!(!duplicate, "client_msg_ids are per device");
    assert_ne!(message_id, world.message);
    assert_eq!(
        texts(&queued(&mut world.alice_ws, 1).await),
        ["same id, other device"]
    );
    assert_nothing_queued(&mut world.alice_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_touch_only_the_callers_own_positions() {
    // Goal: positions are per device and acks are checked against the
    // caller's memberships: mallory acking bob and alice's conversation
    // (over the socket, /v1/frames and /v1/poll, at its last seq or far
    // beyond) is `unknown_conversation`, moves nothing of bob's, sends alice no
    // `delivered` cursor, and bob gets the same events again on his next
    // connection.
    // Method: alice sends two texts; bob receives them without acking;
    // mallory acks; bob reconnects and must be sent both again with the
    // same ids.
    let mut world = World::new().await;
    for (n, text) in ["one", "two"].into_iter().enumerate() {
        world
            .alice_ws
            .send_to(world.direct, &format!("a-ack-{n}"), text, None)
            .await
            .expect("send");
    }
    let first = queued(&mut world.bob_ws, 2).await;
    assert_eq!(ack_points(&first), [(world.direct, 3)]);
    let before = world.members_view(world.direct, &world.message).await;

    let at_end = json!({"type": "ack", "id": "k1", "conversation": world.direct, "seq": 3});
    let beyond = json!({"type": "ack", "id": "k2", "conversation": world.direct, "seq": i64::MAX});
    for frame in [&at_end, &beyond] {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            frame,
            "unknown_conversation",
        )
        .await;
    }
    let polled = world
        .server
        .api
        .poll(&world.mallory, &[(world.direct, 3)], 0)
        .await;
    assert_eq!(refused_code(polled), "unknown_conversation");
    assert_nothing_queued(&mut world.alice_ws).await;
    assert_eq!(
        world.members_view(world.direct, &world.message).await,
        before
    );

    let bob_ws = std::mem::replace(&mut world.bob_ws, world.server.connect(&world.bob).await);
    drop(bob_ws);
    let again = queued(&mut world.bob_ws, 2).await;
    assert_eq!(again, first, "bob's position is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_loses_access_at_once() {
    // Goal: the moment alice removes mallory from a group, mallory can no
    // longer send, react, edit or delete (even her own messages), type,
    // mark read, see history, receipts or the group, download its media or
    // thumbnails, or leave it; nothing sent later reaches her, no receipt
    // for her earlier message reaches her, and typing is no longer relayed
    // to her either way — even though the relay targets were cached while
    // she was a member.
    // Method: everything is first shown to work while she is a member (so
    // each refusal below is a real change), then she is removed and every
    // attempt is made over both transports; bob's connection proves
    // delivery still works for members.
    let mut world = World::new().await;
    let api = &world.server.api;
    let group = api
        .create_group(&world.alice, "team", &["bob", "mallory"])
        .await
        .expect("group")
        .conversation;
    let upload = api
        .upload_media(&world.alice, png(64, 48))
        .await
        .expect("upload");
    let photo = ClientFrame::Send {
        id: Some("photo".into()),
        to: None,
        conversation: Some(group),
        client_msg_id: "photo".into(),
        text: "look".into(),
        reply_to: None,
        media: vec![upload.media_id.clone()],
        encrypted: false,
    };
    let (photo_message, _, _) =
        sent_message(world.alice_ws.request(&photo, "photo").await.expect("send"));
    let (own, _, _) = sent_message(
        world
            .mallory_ws
            .send_to(group, "m-own", "mine", None)
            .await
            .expect("send"),
    );
    // created, photo, mallory's text
    queued(&mut world.bob_ws, 3).await;
    queued(&mut world.mallory_ws, 2).await;
    let media_path = format!("/v1/media/{}", upload.media_id);
    let thumbnail_path = format!("/v1/media/{}/thumbnail", upload.media_id);
    for path in [&media_path, &thumbnail_path] {
        let answer = rest(
            &world.server,
            reqwest::Method::GET,
            path,
            Some(&world.mallory),
            None,
        )
        .await;
        assert_eq!(answer.0, 200, "a member may download {path}");
    }
    // Fill the relay caches both ways while she is a member.
    world
        .alice_ws
        .typing(group, TypingState::Start)
        .await
        .expect("typing");
    for connection in [&mut world.bob_ws, &mut world.mallory_ws] {
        assert!(matches!(
            next_ephemeral(connection).await,
            ServerFrame::Typing { ref from, .. } if from == "alice"
        ));
    }
    world
        .mallory_ws
        .typing(group, TypingState::Start)
        .await
        .expect("typing");
    for connection in [&mut world.alice_ws, &mut world.bob_ws] {
        assert!(matches!(
            next_ephemeral(connection).await,
            ServerFrame::Typing { ref from, .. } if from == "mallory"
        ));
    }
    // Bob's typing filled his cache too; drain it everywhere.
    world
        .bob_ws
        .typing(group, TypingState::Stop)
        .await
        .expect("typing");
    for connection in [&mut world.alice_ws, &mut world.mallory_ws] {
        assert!(matches!(
            next_ephemeral(connection).await,
            ServerFrame::Typing { ref from, .. } if from == "bob"
        ));
    }

    api.remove_member(&world.alice, group, "mallory")
        .await
        .expect("remove");
    let removed = queued(&mut world.mallory_ws, 1).await;
    assert!(
        matches!(&removed[0], ServerFrame::Message { event: Some(event), .. } if event["action"] == "removed"),
        "{removed:?}"
    );
    queued(&mut world.bob_ws, 1).await;

    // A removed member may still ack what she was sent (up to the event
    // of her removal), so acks are checked apart below.
    let not_an_ack = |frame: &Value| frame["type"] != "ack";
    for frame in conversation_frames(group, &photo_message, "gone")
        .into_iter()
        .filter(not_an_ack)
    {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "not_member",
        )
        .await;
    }
    for frame in conversation_frames(group, &own, "gone-own")
        .into_iter()
        .filter(not_an_ack)
    {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "not_member",
        )
        .await;
    }
    for (method, path, body) in conversation_endpoints(group, &photo_message)
        .into_iter()
        .filter(|(_, path, _)| path != "/v1/poll")
    {
        let answer = rest(&world.server, method, &path, Some(&world.mallory), body).await;
        assert_eq!(rest_code(&answer), "not_member", "{path}");
    }
    for path in [&media_path, &thumbnail_path] {
        let answer = rest(
            &world.server,
            reqwest::Method::GET,
            path,
            Some(&world.mallory),
            None,
        )
        .await;
        assert_eq!(rest_code(&answer), "unknown_media", "{path}");
    }

    // Members go on; nothing reaches mallory, in either direction.
    world
        .alice_ws
        .typing(group, TypingState::Start)
        .await
        .expect("typing");
    assert!(matches!(
        next_ephemeral(&mut world.bob_ws).await,
        ServerFrame::Typing { ref from, .. } if from == "alice"
    ));
    world
        .alice_ws
        .send_to(group, "after", "after she left", None)
        .await
        .expect("send");
    let after = queued(&mut world.bob_ws, 1).await;
    // Bob receives, acks and reads mallory's earlier text: no receipt may
    // reach her now.
    ack_received(&mut world.bob_ws, &after).await;
    let read = ClientFrame::Read {
        id: Some("rd".into()),
        conversation: group,
        seq: 100,
    };
    world.bob_ws.request(&read, "rd").await.expect("read");
    // She may ack what she was sent, up to the event of her removal, and
    // nothing beyond it.
    let (_, removed_seq) = removed[0].ack_point().expect("an event");
    let (_, after_seq) = after[0].ack_point().expect("an event");
    assert!(after_seq > removed_seq);
    assert_eq!(
        world.mallory_ws.ack(group, removed_seq).await.expect("ack"),
        removed_seq
    );
    let beyond = json!({"type": "ack", "id": "beyond", "conversation": group, "seq": after_seq});
    refused_both_ways(
        &world.server,
        &mut world.mallory_ws,
        &world.mallory,
        &beyond,
        "invalid_field",
    )
    .await;
    let polled = api.poll(&world.mallory, &[(group, after_seq)], 0).await;
    assert_eq!(refused_code(polled), "invalid_field");
    assert_nothing_queued(&mut world.mallory_ws).await;
    assert_no_ephemeral(&mut world.mallory_ws).await;
    let history = api.history(&world.alice, group, "").await.expect("history");
    assert!(
        history
            .messages
            .iter()
            .all(|m| m.from != "mallory" || m.message_id == own || m.event.is_some()),
        "nothing of mallory's after her removal: {history:?}"
    );
    assert!(
        history
            .messages
            .iter()
            .all(|m| m.reactions.is_empty() && m.edited_ms.is_none() && !m.deleted),
        "{history:?}"
    );
    let list = api.conversations(&world.mallory).await.expect("list");
    assert!(
        list.conversations.iter().all(|c| c.conversation != group),
        "a former group is not listed: {list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_manage_a_group() {
    // Goal: a plain member can read and write but not rename, add, remove,
    // promote (not even themself) or demote (`not_admin`, over REST and
    // frames), and nobody hears of the attempts; being admin of one group
    // gives no rights in another; a demoted admin loses the rights at once.
    // Method: alice admin, bob member, carol outside; then alice promotes
    // bob (so bob's later success shows the refusals were about his role)
    // and demotes him again.
    let mut world = World::new().await;
    let carol = world.server.user("carol").await;
    let mut carol_ws = world.server.connect(&carol).await;
    let api = &world.server.api;
    let group = api
        .create_group(&world.alice, "club", &["bob"])
        .await
        .expect("group")
        .conversation;
    let bobs = api
        .create_group(&world.bob, "bob's own", &["alice"])
        .await
        .expect("group")
        .conversation;
    queued(&mut world.bob_ws, 1).await;
    queued(&mut world.alice_ws, 1).await;
    let before = api.group(&world.alice, group).await.expect("group");

    let attempts = |tag: &str| {
        let id = |name: &str| format!("{tag}-{name}");
        vec![
            json!({"type": "group_rename", "id": id("rename"), "conversation": group, "name": "bob's club"}),
            json!({"type": "group_add", "id": id("add"), "conversation": group, "members": ["carol"]}),
            json!({"type": "group_remove", "id": id("remove"), "conversation": group, "username": "alice"}),
            json!({"type": "group_promote", "id": id("promote"), "conversation": group, "username": "bob"}),
            json!({"type": "group_demote", "id": id("demote"), "conversation": group, "username": "alice"}),
        ]
    };
    for frame in attempts("bob") {
        refused_both_ways(
            &world.server,
            &mut world.bob_ws,
            &world.bob,
            &frame,
            "not_admin",
        )
        .await;
    }
    use reqwest::Method;
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/v1/groups/{group}"),
            Some(json!({"name": "bob's club"})),
        ),
        (
            Method::POST,
            format!("/v1/groups/{group}/members"),
            Some(json!({"members": ["carol"]})),
        ),
        (
            Method::DELETE,
            format!("/v1/groups/{group}/members/alice"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/groups/{group}/admins"),
            Some(json!({"username": "bob"})),
        ),
        (
            Method::DELETE,
            format!("/v1/groups/{group}/admins/alice"),
            None,
        ),
    ] {
        let answer = rest(&world.server, method, &path, Some(&world.bob), body).await;
        assert_eq!(rest_code(&answer), "not_admin", "{path}");
    }
    world.assert_members_undisturbed().await;
    assert_nothing_queued(&mut carol_ws).await;
    let api = &world.server.api;
    assert_eq!(api.group(&world.alice, group).await.expect("group"), before);
    assert!(
        api.conversations(&carol)
            .await
            .expect("list")
            .conversations
            .is_empty()
    );

    // Admin of "bob's own" (where he may add carol) is no admin of "club".
    api.add_members(&world.bob, bobs, &["carol"])
        .await
        .expect("an admin may add");
    queued(&mut carol_ws, 1).await;
    assert_eq!(
        refused_code(api.add_members(&world.bob, group, &["carol"]).await),
        "not_admin"
    );
    // Promoted, bob may; demoted again, at once he may not.
    api.promote(&world.alice, group, "bob")
        .await
        .expect("promote");
    api.rename_group(&world.bob, group, "bob's club")
        .await
        .expect("an admin may rename");
    api.demote(&world.alice, group, "bob")
        .await
        .expect("demote");
    for frame in attempts("demoted") {
        refused_both_ways(
            &world.server,
            &mut world.bob_ws,
            &world.bob,
            &frame,
            "not_admin",
        )
        .await;
    }
    assert_nothing_queued(&mut carol_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_is_fully_blocked() {
    // Goal: once alice blocks mallory, mallory cannot send to alice (by
    // name or conversation id), react, edit or delete in their chat, reach
    // alice through a group she creates or adds alice to, see alice typing
    // (in a shared group too) or her presence — not even as the timing of
    // "offline" frames when alice comes and goes — and cannot lift the
    // block from her side. Everything is checked on alice's live socket.
    // Method: mallory and alice chat first (so there is a message to react
    // to) and share a group bob made; mallory watches alice's presence;
    // then alice blocks her.
    let mut world = World::new().await;
    let api = &world.server.api;
    let (chat_message, chat, _) = sent_message(
        world
            .mallory_ws
            .send_text("alice", "m-1", "hi alice")
            .await
            .expect("send"),
    );
    let shared = api
        .create_group(&world.bob, "both", &["alice", "mallory"])
        .await
        .expect("group")
        .conversation;
    let mallorys = api
        .create_group(&world.mallory, "mallory's", &["bob"])
        .await
        .expect("group")
        .conversation;
    let got = queued(&mut world.alice_ws, 2).await;
    ack_received(&mut world.alice_ws, &got).await;
    queued(&mut world.bob_ws, 1).await;
    // mallory: alice's delivered cursor (over her text) and bob's group.
    let mallory_got = queued(&mut world.mallory_ws, 2).await;
    assert!(
        mallory_got
            .iter()
            .any(|f| matches!(f, ServerFrame::Delivered { by, conversation, .. } if by == "alice" && *conversation == chat)),
        "{mallory_got:?}"
    );
    // Typing in the shared group reaches both ways before the block (and
    // fills the relay caches the block must invalidate).
    world
        .mallory_ws
        .typing(shared, TypingState::Start)
        .await
        .expect("typing");
    for connection in [&mut world.alice_ws, &mut world.bob_ws] {
        assert!(matches!(
            next_ephemeral(connection).await,
            ServerFrame::Typing { ref from, .. } if from == "mallory"
        ));
    }
    world
        .alice_ws
        .typing(shared, TypingState::Start)
        .await
        .expect("typing");
    for connection in [&mut world.mallory_ws, &mut world.bob_ws] {
        assert!(matches!(
            next_ephemeral(connection).await,
            ServerFrame::Typing { ref from, .. } if from == "alice"
        ));
    }
    let now = world
        .mallory_ws
        .subscribe_presence(&["alice"])
        .await
        .expect("subscribe");
    assert_eq!(presence_of(&now[0]), ("alice".into(), true, None));

    api.block(&world.alice, "mallory").await.expect("block");
    assert_eq!(
        presence_of(&next_ephemeral(&mut world.mallory_ws).await),
        ("alice".into(), false, None),
        "the block hides alice at once"
    );
    let before = observed(&world.server, &world.alice, chat, &chat_message).await;

    let frames = [
        json!({"type": "send", "id": "b1", "to": "alice", "client_msg_id": "b1", "text": "unblock me"}),
        json!({"type": "send", "id": "b2", "conversation": chat, "client_msg_id": "b2", "text": "unblock me"}),
        json!({"type": "react", "id": "b3", "conversation": chat, "client_msg_id": "b3", "target": chat_message, "emoji": "🙏"}),
        json!({"type": "edit", "id": "b4", "conversation": chat, "client_msg_id": "b4", "target": chat_message, "text": "please"}),
        json!({"type": "delete", "id": "b5", "conversation": chat, "client_msg_id": "b5", "target": chat_message}),
        json!({"type": "group_create", "id": "b6", "name": "surprise", "members": ["alice"]}),
        json!({"type": "group_add", "id": "b7", "conversation": mallorys, "members": ["alice"]}),
    ];
    for frame in &frames {
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            frame,
            "blocked",
        )
        .await;
    }
    let answer = rest(
        &world.server,
        reqwest::Method::POST,
        "/v1/groups",
        Some(&world.mallory),
        Some(json!({"name": "surprise", "members": ["bob", "alice"]})),
    )
    .await;
    assert_eq!(rest_code(&answer), "blocked");
    let answer = rest(
        &world.server,
        reqwest::Method::POST,
        &format!("/v1/groups/{mallorys}/members"),
        Some(&world.mallory),
        Some(json!({"members": ["alice"]})),
    )
    .await;
    assert_eq!(rest_code(&answer), "blocked");
    // Typing: accepted, relayed to nobody on alice's side, in the 1:1 and
    // in the group they share (bob still gets it there).
    world
        .mallory_ws
        .typing(chat, TypingState::Start)
        .await
        .expect("typing");
    world
        .mallory_ws
        .typing(shared, TypingState::Start)
        .await
        .expect("typing");
    assert!(matches!(
        next_ephemeral(&mut world.bob_ws).await,
        ServerFrame::Typing { ref from, .. } if from == "mallory"
    ));
    world
        .alice_ws
        .typing(shared, TypingState::Start)
        .await
        .expect("typing");
    assert!(matches!(
        next_ephemeral(&mut world.bob_ws).await,
        ServerFrame::Typing { ref from, .. } if from == "alice"
    ));
    assert_no_ephemeral(&mut world.mallory_ws).await;

    // Mallory's own block list is hers: "unblocking" alice lifts nothing.
    api.unblock(&world.mallory, "alice")
        .await
        .expect("not an error");
    assert_eq!(
        api.blocks(&world.alice).await.expect("blocks").users,
        ["mallory"]
    );
    let retry =
        json!({"type": "send", "id": "b8", "to": "alice", "client_msg_id": "b8", "text": "now?"});
    refused_both_ways(
        &world.server,
        &mut world.mallory_ws,
        &world.mallory,
        &retry,
        "blocked",
    )
    .await;

    // Checked while the members' sockets are live: after a reconnect, the
    // backlog could still be on its way when the first pong arrives.
    world.assert_members_undisturbed().await;
    // Presence: alice's comings and goings are invisible to mallory, in
    // the subscription's answer and as later frames.
    let now = world
        .mallory_ws
        .subscribe_presence(&["alice"])
        .await
        .expect("subscribe");
    assert_eq!(presence_of(&now[0]), ("alice".into(), false, None));
    let (_, frames) = over_http(
        &world.server,
        &world.mallory,
        &json!({"type": "subscribe_presence", "id": "p", "users": ["alice"]}),
    )
    .await;
    assert_eq!(presence_of(&frames[1]), ("alice".into(), false, None));
    // Alice goes offline and comes back: bob (who may see her) is told,
    // mallory must not get so much as an "offline" frame, whose timing
    // alone would tell her. A connect announces before `ready`, so once
    // `connect` returns the frames are out.
    let bob_sees = world
        .bob_ws
        .subscribe_presence(&["alice"])
        .await
        .expect("subscribe");
    assert_eq!(presence_of(&bob_sees[0]), ("alice".into(), true, None));
    // (A bystander's connection holds alice's place meanwhile.)
    let zed = world.server.user("zed").await;
    let alice_ws = std::mem::replace(&mut world.alice_ws, world.server.connect(&zed).await);
    alice_ws.close().await;
    let (user, online, last_seen) = presence_of(&next_ephemeral(&mut world.bob_ws).await);
    assert_eq!((user.as_str(), online), ("alice", false));
    assert!(last_seen.is_some());
    assert_no_ephemeral(&mut world.mallory_ws).await;
    world.alice_ws = world.server.connect(&world.alice).await;
    assert_eq!(
        presence_of(&next_ephemeral(&mut world.bob_ws).await),
        ("alice".into(), true, None)
    );
    assert_no_ephemeral(&mut world.mallory_ws).await;

    assert_eq!(
        observed(&world.server, &world.alice, chat, &chat_message).await,
        before
    );
    let api = &world.server.api;
    let alice_groups = api.conversations(&world.alice).await.expect("list");
    assert_eq!(
        alice_groups.conversations.len(),
        3,
        "alice is in her chats with bob and mallory and bob's group only: {alice_groups:?}"
    );
    // Group messages are not affected (docs/PROTOCOL.md): the block is
    // about mallory reaching alice directly.
    world
        .mallory_ws
        .send_to(shared, "g", "hello group", None)
        .await
        .expect("group send");
    assert_eq!(
        texts(&queued(&mut world.alice_ws, 1).await),
        ["hello group"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_cut_off_at_once_everywhere() {
    // Goal: revoking a device stops its token at once for REST, /v1/frames,
    // /v1/poll and new WebSockets (`token_invalid`), closes its open
    // WebSocket with 4003 and ends its waiting poll with "revoked"; logout
    // does the same to the calling device; nobody can revoke a device of
    // another account (`unknown_device`) or log in as its owner.
    // Method: alice has her socket device from the setup, a second socket
    // device, a polling device and a device that only calls REST; mallory
    // tries first, then alice revokes, logs out, and revokes the poller
    // while its poll waits (seen waiting through bob's presence snapshot:
    // it is alice's only live session then).
    let mut world = World::new().await;
    let server = &world.server;
    let on_socket = server.device("alice").await;
    let polling = server.device("alice").await;
    let manager = server.device("alice").await;
    let polling_device = current_device(server, &polling).await;
    let manager_device = current_device(server, &manager).await;
    let mut socket = server.connect(&on_socket).await;
    let socket_device = socket.device_id;
    let alice_devices = device_ids(server, &world.alice).await;
    assert_eq!(alice_devices.len(), 4);

    // Mallory names each of alice's devices.
    for device in &alice_devices {
        let answer = rest(
            server,
            reqwest::Method::DELETE,
            &format!("/v1/devices/{device}"),
            Some(&world.mallory),
            None,
        )
        .await;
        assert_eq!(rest_code(&answer), "unknown_device");
    }
    assert_eq!(device_ids(server, &world.alice).await, alice_devices);
    let mallory_list = server.api.devices(&world.mallory).await.expect("devices");
    assert_eq!(
        mallory_list.devices.len(),
        1,
        "mallory sees her own device only"
    );
    // A wrong password creates no device either.
    assert_eq!(
        refused_code(server.api.login("alice", "not the password", "x").await),
        "wrong_credentials"
    );
    assert_eq!(device_ids(server, &world.alice).await, alice_devices);
    assert_nothing_queued(&mut socket).await;
    assert_nothing_queued(&mut world.alice_ws).await;

    // Revoking the second socket device closes its socket at once.
    server
        .api
        .revoke(&world.alice, socket_device)
        .await
        .expect("revoke");
    assert_eq!(closed_with(&mut socket).await, 4003);
    assert_cut_off(server, &on_socket).await;
    assert_eq!(
        refused_code(server.api.revoke(&world.alice, socket_device).await),
        "unknown_device",
        "a revoked device is gone"
    );

    // Logout: the calling device's socket closes and its token is dead.
    server.api.logout(&world.alice).await.expect("logout");
    assert_eq!(closed_with(&mut world.alice_ws).await, 4003);
    assert_cut_off(server, &world.alice).await;

    // The poller waits; alice shows online only through its poll.
    let waiting = {
        let api = server.api.clone();
        let polling = polling.clone();
        tokio::spawn(async move { api.poll(&polling, &[], 60_000).await })
    };
    let snapshot = json!({"type": "subscribe_presence", "id": "p", "users": ["alice"]});
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let (_, frames) = over_http(server, &world.bob, &snapshot).await;
        if presence_of(&frames[1]).1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poll never became live"
        );
        tokio::task::yield_now().await;
    }
    server
        .api
        .revoke(&manager, polling_device)
        .await
        .expect("revoke");
    let ended = waiting.await.expect("poll task").expect("the poll answers");
    assert_eq!(ended.closed.as_deref(), Some("revoked"));
    assert!(ended.frames.is_empty());
    assert_cut_off(server, &polling).await;
    assert_eq!(device_ids(server, &manager).await, [manager_device]);

    // Bob's message to alice reaches her remaining device only.
    world
        .bob_ws
        .send_text("alice", "b-late", "are you there?")
        .await
        .expect("send");
    let mut manager_ws = server.connect(&manager).await;
    assert_eq!(texts(&queued(&mut manager_ws, 1).await), ["are you there?"]);
}

/// `token` no longer works anywhere: REST, /v1/frames, /v1/poll, WebSocket.
async fn assert_cut_off(server: &TestServer, token: &str) {
    assert_eq!(
        refused_code(server.api.devices(token).await),
        "token_invalid"
    );
    let answer = rest(
        server,
        reqwest::Method::POST,
        "/v1/frames",
        Some(token),
        Some(json!({"type": "ping", "id": "p"})),
    )
    .await;
    assert_eq!(rest_code(&answer), "token_invalid");
    assert_eq!(
        refused_code(server.api.poll(token, &[], 0).await),
        "token_invalid"
    );
    let connected = missive_client::Connection::connect(&server.api.ws_url(), token).await;
    assert_eq!(
        refused_code(connected.map(|connection| connection.device_id)),
        "token_invalid"
    );
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
        .expect("upload");
    let unsent = api
        .upload_media(&world.alice, png(32, 32))
        .await
        .expect("upload");
    let send = ClientFrame::Send {
        id: Some("photo".into()),
        to: None,
        conversation: Some(world.direct),
        client_msg_id: "photo".into(),
        text: String::new(),
        reply_to: None,
        media: vec![sent.media_id.clone()],
        encrypted: false,
    };
    world.alice_ws.request(&send, "photo").await.expect("send");
    queued(&mut world.bob_ws, 1).await;

    let server = &world.server;
    let get = |token: String, path: String| async move {
        rest(server, reqwest::Method::GET, &path, Some(&token), None).await
    };
    let paths = |id: &str| {
        [
            format!("/v1/media/{id}"),
            format!("/v1/media/{id}/thumbnail"),
        ]
    };
    for path in paths(&sent.media_id) {
        assert_eq!(get(world.alice.clone(), path.clone()).await.0, 200);
        assert_eq!(get(world.bob.clone(), path.clone()).await.0, 200);
        let answer = get(world.mallory.clone(), path.clone()).await;
        assert_eq!(rest_code(&answer), "unknown_media", "{path}");
        let made_up = get(
            world.mallory.clone(),
            path.replace(&sent.media_id, "0123456789abcdef0123456789abcdef"),
        )
        .await;
        assert_eq!(
            answer, made_up,
            "an existing id looks exactly like a missing one"
        );
    }
    for path in paths(&unsent.media_id) {
        assert_eq!(get(world.alice.clone(), path.clone()).await.0, 200);
        for token in [&world.bob, &world.mallory] {
            let answer = get(token.clone(), path.clone()).await;
            assert_eq!(rest_code(&answer), "unknown_media", "{path}");
        }
    }
    // Attaching someone else's upload, to a chat of one's own.
    let own = api
        .create_group(&world.mallory, "mine", &[])
        .await
        .expect("group")
        .conversation;
    for (n, id) in [&sent.media_id, &unsent.media_id].into_iter().enumerate() {
        let frame = json!({"type": "send", "id": format!("steal{n}"), "conversation": own,
            "client_msg_id": format!("steal{n}"), "text": "", "media": [id]});
        refused_both_ways(
            &world.server,
            &mut world.mallory_ws,
            &world.mallory,
            &frame,
            "unknown_media",
        )
        .await;
        let frame = json!({"type": "send", "id": format!("bob{n}"), "to": "mallory",
            "client_msg_id": format!("bob{n}"), "text": "fwd", "media": [id]});
        refused_both_ways(
            &world.server,
            &mut world.bob_ws,
            &world.bob,
            &frame,
            "unknown_media",
        )
        .await;
    }
    for path in paths(&unsent.media_id) {
        let answer = get(world.mallory.clone(), path.clone()).await;
        assert_eq!(rest_code(&answer), "unknown_media", "{path}");
    }
    assert_nothing_queued(&mut world.mallory_ws).await;
    assert_nothing_queued(&mut world.alice_ws).await;
}

/// Every route of `gateway::routes` that needs a token, with a body that
/// would succeed for a valid one: (method, path, JSON body).
fn authenticated_endpoints(
    group: i64,
    direct: i64,
    message: &str,
    media: &str,
) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let mut endpoints = vec![
        (Method::DELETE, "/v1/sessions/current".to_owned(), None),
        (Method::GET, "/v1/devices".to_owned(), None),
        (Method::DELETE, "/v1/devices/1".to_owned(), None),
        (
            Method::POST,
            "/v1/groups".to_owned(),
            Some(json!({"name": "new", "members": ["bob"]})),
        ),
        (Method::GET, "/v1/conversations".to_owned(), None),
        (Method::GET, "/v1/contacts".to_owned(), None),
        (
            Method::POST,
            "/v1/contacts".to_owned(),
            Some(json!({"username": "bob"})),
        ),
        (Method::DELETE, "/v1/contacts/bob".to_owned(), None),
        (Method::GET, "/v1/blocks".to_owned(), None),
        (
            Method::POST,
            "/v1/blocks".to_owned(),
            Some(json!({"username": "bob"})),
        ),
        (Method::DELETE, "/v1/blocks/bob".to_owned(), None),
        (Method::GET, "/v1/privacy".to_owned(), None),
        (
            Method::PUT,
            "/v1/privacy".to_owned(),
            Some(json!({"presence": "nobody"})),
        ),
        (Method::GET, format!("/v1/media/{media}"), None),
        (Method::GET, format!("/v1/media/{media}/thumbnail"), None),
        (
            Method::POST,
            "/v1/poll".to_owned(),
            Some(json!({"acks": [{"conversation": 1, "seq": 1}], "timeout_ms": 0})),
        ),
        (
            Method::POST,
            "/v1/frames".to_owned(),
            Some(
                json!({"type": "send", "id": "s", "to": "bob", "client_msg_id": "no-token", "text": "x"}),
            ),
        ),
    ];
    endpoints.extend(conversation_endpoints(group, message));
    endpoints.extend(conversation_endpoints(direct, message));
    endpoints
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
    let group = api
        .create_group(&world.alice, "g", &["bob"])
        .await
        .expect("group")
        .conversation;
    queued(&mut world.bob_ws, 1).await;
    let media = api
        .upload_media(&world.alice, png(16, 16))
        .await
        .expect("upload")
        .media_id;
    let revoked = world.server.device("alice").await;
    api.logout(&revoked).await.expect("logout");
    let before = (
        world.members_view(world.direct, &world.message).await,
        api.devices(&world.alice)
            .await
            .expect("devices")
            .devices
            .len(),
        api.contacts(&world.alice).await.expect("contacts"),
        api.blocks(&world.alice).await.expect("blocks"),
        api.privacy(&world.alice).await.expect("privacy"),
        api.group(&world.alice, group).await.expect("group"),
        api.conversations(&world.alice).await.expect("list"),
    );
    let media_files = || files_under(&world.server.data_dir.path().join("media"));
    let files_before = media_files();
    assert!(
        files_before >= 2,
        "the upload and its thumbnail are counted"
    );

    let endpoints = authenticated_endpoints(group, world.direct, &world.message, &media);
    let forged = "0".repeat(64);
    for (method, path, body) in &endpoints {
        let cases: [(Option<&str>, &str); 4] = [
            (None, "not_authenticated"),
            (Some(&forged), "token_invalid"),
            (Some("not hex at all"), "token_invalid"),
            (Some(&revoked), "token_invalid"),
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
    // The upload takes raw bytes, not JSON.
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

    let api = &world.server.api;
    let after = (
        world.members_view(world.direct, &world.message).await,
        api.devices(&world.alice)
            .await
            .expect("devices")
            .devices
            .len(),
        api.contacts(&world.alice).await.expect("contacts"),
        api.blocks(&world.alice).await.expect("blocks"),
        api.privacy(&world.alice).await.expect("privacy"),
        api.group(&world.alice, group).await.expect("group"),
        api.conversations(&world.alice).await.expect("list"),
    );
    assert_eq!(after, before);
    assert_eq!(media_files(), files_before, "no upload was stored");
    assert_nothing_queued(&mut world.alice_ws).await;
    assert_nothing_queued(&mut world.bob_ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_settings_are_theirs_alone() {
    // Goal: contacts, blocks and the presence setting are per account:
    // whatever mallory does with her own lists and setting changes nothing
    // of alice's, and she cannot see alice's lists.
    let mut world = World::new().await;
    let api = &world.server.api;
    api.add_contact(&world.alice, "bob").await.expect("contact");
    api.block(&world.alice, "mallory").await.expect("block");
    api.set_privacy(&world.alice, PresenceVisibility::Contacts)
        .await
        .expect("privacy");
    let alice_before = (
        api.contacts(&world.alice).await.expect("contacts"),
        api.blocks(&world.alice).await.expect("blocks"),
        api.privacy(&world.alice).await.expect("privacy"),
    );

    api.add_contact(&world.mallory, "alice")
        .await
        .expect("contact");
    api.remove_contact(&world.mallory, "bob")
        .await
        .expect("no-op");
    api.unblock(&world.mallory, "alice").await.expect("no-op");
    api.block(&world.mallory, "bob").await.expect("block");
    api.set_privacy(&world.mallory, PresenceVisibility::Everyone)
        .await
        .expect("privacy");
    assert_eq!(
        api.contacts(&world.mallory).await.expect("contacts").users,
        ["alice"]
    );
    assert_eq!(
        api.blocks(&world.mallory).await.expect("blocks").users,
        ["bob"]
    );
    let alice_after = (
        api.contacts(&world.alice).await.expect("contacts"),
        api.blocks(&world.alice).await.expect("blocks"),
        api.privacy(&world.alice).await.expect("privacy"),
    );
    assert_eq!(alice_after, alice_before);
    // Alice's "contacts" setting does not admit mallory, who added her,
    // and her comings and goings do not show as frames either (the next
    // connect announces before `ready`).
    let now = world
        .mallory_ws
        .subscribe_presence(&["alice"])
        .await
        .expect("subscribe");
    assert_eq!(presence_of(&now[0]), ("alice".into(), false, None));
    // Checked while the members' sockets are live: a fresh connection's
    // backlog could still be on its way when its first pong arrives.
    world.assert_members_undisturbed().await;
    // Bob, her contact, sees her go and come back (so the changes did
    // happen); mallory gets no frame at all.
    let bob_sees = world
        .bob_ws
        .subscribe_presence(&["alice"])
        .await
        .expect("subscribe");
    assert_eq!(presence_of(&bob_sees[0]), ("alice".into(), true, None));
    let bystander = world.server.user("zed").await;
    let alice_ws = std::mem::replace(&mut world.alice_ws, world.server.connect(&bystander).await);
    alice_ws.close().await;
    let (user, online, _) = presence_of(&next_ephemeral(&mut world.bob_ws).await);
    assert_eq!((user.as_str(), online), ("alice", false));
    world.alice_ws = world.server.connect(&world.alice).await;
    let (user, online, _) = presence_of(&next_ephemeral(&mut world.bob_ws).await);
    assert_eq!((user.as_str(), online), ("alice", true));
    assert_no_ephemeral(&mut world.mallory_ws).await;
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
    let api = missive_client::Api::new(&server.url);
    api.register("alice", PASSWORD).await.expect("register");
    api.register("bob", PASSWORD).await.expect("register");
    let alice = api
        .login("alice", PASSWORD, "a")
        .await
        .expect("login")
        .token;
    let bob = api.login("bob", PASSWORD, "b").await.expect("login").token;
    let spare = api.login("alice", PASSWORD, "c").await.expect("login");
    let forged = "ab".repeat(32);
    let _ = api.login("alice", "wrong password!", "d").await;

    // REST with the header, including refusals.
    api.devices(&alice).await.expect("devices");
    assert!(api.devices(&forged).await.is_err());
    let media = api.upload_media(&alice, png(16, 16)).await.expect("upload");
    api.download_media(&alice, &media.media_id)
        .await
        .expect("download");
    assert!(api.download_media(&forged, &media.media_id).await.is_err());
    api.poll(&bob, &[], 0).await.expect("poll");
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
    api.frame(&alice, &frame).await.expect("frame");
    let auth_in_body = ClientFrame::Auth {
        id: Some("a".into()),
        token: bob.clone(),
    };
    assert!(api.frame(&alice, &auth_in_body).await.is_err());
    // Tokens in URLs (refused, but still in request lines).
    for path in [
        format!("/v1/devices?token={alice}"),
        format!("/v1/ws?token={alice}"),
    ] {
        let _ = reqwest::get(format!("{}{path}", server.url)).await;
    }

    // WebSockets: good, forged, malformed and repeated auth frames.
    let mut alice_ws = Connection::connect(&api.ws_url(), &alice)
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
    assert!(Connection::connect(&api.ws_url(), &forged).await.is_err());
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
    let mut bob_ws = Connection::connect(&api.ws_url(), &bob)
        .await
        .expect("connect");
    queued(&mut bob_ws, 2).await;

    // Revocation and logout, with the socket open.
    api.revoke(&alice, spare.device_id).await.expect("revoke");
    assert!(api.devices(&spare.token).await.is_err());
    api.logout(&alice).await.expect("logout");
    assert_eq!(closed_with(&mut alice_ws).await, 4003);
    assert!(api.devices(&alice).await.is_err());
    bob_ws.close().await;

    server.kill_9();
    let lines = log.finish();
    assert!(
        lines.iter().any(|line| line.contains("device logged in"))
            && lines.iter().any(|line| line.contains("device revoked")),
        "the log covers the logins and revocations: {lines:#?}"
    );
    for (what, secret) in [
        ("alice's token", alice.as_str()),
        ("bob's token", bob.as_str()),
        ("a revoked token", spare.token.as_str()),
        ("a forged token", forged.as_str()),
        ("the password", PASSWORD),
        ("a wrong password", "wrong password!"),
        ("a text sent over HTTP", "over http"),
        ("a text sent over the socket", "over the socket"),
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{what} is in the log: {leaks:#?}");
    }
}
