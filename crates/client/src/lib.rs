//! The missive protocol client used by the CLI, the tests and (later) the
//! terminal app and load generator: REST calls and a WebSocket connection
//! speaking the frames of `missive-proto`.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use missive_proto::rest::{
    AckPoint, ConversationList, CreateGroupRequest, DeviceInfo, DeviceList, ErrorBody,
    FrameReplies, GroupInfo, History, KeyClaim, KeyClaimRequest, KeyCount, KeyUploadRequest,
    LoginRequest, LoginResponse, MediaInfo, MessageInfo, PollRequest, PollResponse,
    PresenceVisibility, Privacy, RegisterRequest, RegisterResponse, UserKeys, UserList,
};
use missive_proto::{ClientFrame, ErrorCode, ServerFrame};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A text frame as it arrived, undecoded (shares the read buffer's bytes).
pub use tokio_tungstenite::tungstenite::Utf8Bytes as FrameText;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with a typed error.
    #[error("{code}: {message}", code = code.as_str())]
    Refused { code: ErrorCode, message: String },
    /// The server could not be reached or the connection broke.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The server said something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection was closed by the server.
    #[error("connection closed by the server ({code} {reason})")]
    Closed { code: u16, reason: String },
    #[error("timed out waiting for the server")]
    Timeout,
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn transport(err: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(err.to_string())
}

/// REST calls against `http://host:port`.
#[derive(Clone)]
pub struct Api {
    base_url: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The value of one counter or gauge in `GET /metrics` (Prometheus
    /// text), `None` if the server does not report it yet.
    pub async fn metric(&self, name: &str) -> Result<Option<f64>, ClientError> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .map_err(transport)?;
        let text = response.text().await.map_err(transport)?;
        Ok(text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        }))
    }

    pub async fn register(
        &self,
        username: &str,
        password: &str,
    ) -> Result<RegisterResponse, ClientError> {
        self.register_with_invite(username, password, None).await
    }

    /// Registers with an operator's invite (registration mode `invite`).
    pub async fn register_with_invite(
        &self,
        username: &str,
        password: &str,
        invite: Option<&str>,
    ) -> Result<RegisterResponse, ClientError> {
        let body = RegisterRequest {
            username: username.into(),
            password: password.into(),
            phone: None,
            invite: invite.map(str::to_owned),
        };
        decode(
            self.http
                .post(format!("{}/v1/accounts", self.base_url))
                .json(&body)
                .send()
                .await,
        )
        .await
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: &str,
    ) -> Result<LoginResponse, ClientError> {
        let body = LoginRequest {
            username: username.into(),
            password: password.into(),
            device_name: Some(device_name.into()),
        };
        decode(
            self.http
                .post(format!("{}/v1/sessions", self.base_url))
                .json(&body)
                .send()
                .await,
        )
        .await
    }

    pub async fn devices(&self, token: &str) -> Result<DeviceList, ClientError> {
        decode(
            self.http
                .get(format!("{}/v1/devices", self.base_url))
                .bearer_auth(token)
                .send()
                .await,
        )
        .await
    }

    /// Renames one of my devices; its new listing.
    pub async fn rename_device(
        &self,
        token: &str,
        device_id: i64,
        name: &str,
    ) -> Result<DeviceInfo, ClientError> {
        decode(
            self.http
                .patch(format!("{}/v1/devices/{device_id}", self.base_url))
                .bearer_auth(token)
                .json(&serde_json::json!({ "name": name }))
                .send()
                .await,
        )
        .await
    }

    /// The texts of a conversation containing `text`, newest first,
    /// strictly below `before`.
    pub async fn search(
        &self,
        token: &str,
        conversation: i64,
        text: &str,
        before: Option<i64>,
    ) -> Result<History, ClientError> {
        let mut query = format!("q={}", percent_encoded(text));
        if let Some(before) = before {
            query.push_str(&format!("&before={before}"));
        }
        self.history(token, conversation, &query).await
    }

    pub async fn revoke(&self, token: &str, device_id: i64) -> Result<(), ClientError> {
        let response = self
            .http
            .delete(format!("{}/v1/devices/{device_id}", self.base_url))
            .bearer_auth(token)
            .send()
            .await;
        expect_empty(response).await
    }

    pub async fn logout(&self, token: &str) -> Result<(), ClientError> {
        let response = self
            .http
            .delete(format!("{}/v1/sessions/current", self.base_url))
            .bearer_auth(token)
            .send()
            .await;
        expect_empty(response).await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        decode(
            self.http
                .get(format!("{}{path}", self.base_url))
                .bearer_auth(token)
                .send()
                .await,
        )
        .await
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        decode(request.bearer_auth(token).json(body).send().await).await
    }

    async fn delete_json<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let request = self.http.delete(format!("{}{path}", self.base_url));
        decode(request.bearer_auth(token).send().await).await
    }

    async fn send_empty(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        expect_empty(request.send().await).await
    }

    pub async fn create_group(
        &self,
        token: &str,
        name: &str,
        members: &[&str],
    ) -> Result<GroupInfo, ClientError> {
        let body = CreateGroupRequest {
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            encrypted: None,
        };
        self.create_group_as(token, &body).await
    }

    /// Creates a group as `request` says (encrypted or not).
    pub async fn create_group_as(
        &self,
        token: &str,
        request: &CreateGroupRequest,
    ) -> Result<GroupInfo, ClientError> {
        self.send_json(reqwest::Method::POST, token, "/v1/groups", request)
            .await
    }

    /// Sets the disappearing timer of messages sent from now on (0: off).
    pub async fn set_timer(
        &self,
        token: &str,
        conversation: i64,
        secs: u32,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "secs": secs });
        self.send_empty(
            reqwest::Method::PUT,
            token,
            &format!("/v1/conversations/{conversation}/timer"),
            Some(&body),
        )
        .await
    }

    /// Turns end-to-end encryption on in a conversation, for good.
    pub async fn encrypt_conversation(
        &self,
        token: &str,
        conversation: i64,
    ) -> Result<(), ClientError> {
        self.send_empty(
            reqwest::Method::POST,
            token,
            &format!("/v1/conversations/{conversation}/encrypt"),
            None,
        )
        .await
    }

    pub async fn group(&self, token: &str, group: i64) -> Result<GroupInfo, ClientError> {
        self.get_json(token, &format!("/v1/groups/{group}")).await
    }

    pub async fn rename_group(
        &self,
        token: &str,
        group: i64,
        name: &str,
    ) -> Result<GroupInfo, ClientError> {
        let body = serde_json::json!({ "name": name });
        self.send_json(
            reqwest::Method::PATCH,
            token,
            &format!("/v1/groups/{group}"),
            &body,
        )
        .await
    }

    pub async fn add_members(
        &self,
        token: &str,
        group: i64,
        members: &[&str],
    ) -> Result<GroupInfo, ClientError> {
        let body = serde_json::json!({ "members": members });
        self.send_json(
            reqwest::Method::POST,
            token,
            &format!("/v1/groups/{group}/members"),
            &body,
        )
        .await
    }

    pub async fn remove_member(
        &self,
        token: &str,
        group: i64,
        username: &str,
    ) -> Result<GroupInfo, ClientError> {
        self.delete_json(token, &format!("/v1/groups/{group}/members/{username}"))
            .await
    }

    pub async fn promote(
        &self,
        token: &str,
        group: i64,
        username: &str,
    ) -> Result<GroupInfo, ClientError> {
        let body = serde_json::json!({ "username": username });
        self.send_json(
            reqwest::Method::POST,
            token,
            &format!("/v1/groups/{group}/admins"),
            &body,
        )
        .await
    }

    pub async fn demote(
        &self,
        token: &str,
        group: i64,
        username: &str,
    ) -> Result<GroupInfo, ClientError> {
        self.delete_json(token, &format!("/v1/groups/{group}/admins/{username}"))
            .await
    }

    pub async fn leave_group(&self, token: &str, group: i64) -> Result<(), ClientError> {
        self.send_empty(
            reqwest::Method::POST,
            token,
            &format!("/v1/groups/{group}/leave"),
            None,
        )
        .await
    }

    /// Every conversation, most recent activity first (all pages).
    pub async fn conversations(&self, token: &str) -> Result<ConversationList, ClientError> {
        let mut all = self.conversations_page(token, None, None).await?;
        while let Some(next) = all.next.take() {
            let page = self.conversations_page(token, Some(&next), None).await?;
            all.conversations.extend(page.conversations);
            all.next = page.next;
        }
        Ok(all)
    }

    /// One page of conversations, after the cursor `before` (a previous
    /// page's `next`).
    pub async fn conversations_page(
        &self,
        token: &str,
        before: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ConversationList, ClientError> {
        let mut query = Vec::new();
        if let Some(before) = before {
            query.push(format!("before={}", percent_encoded(before)));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let path = if query.is_empty() {
            "/v1/conversations".to_owned()
        } else {
            format!("/v1/conversations?{}", query.join("&"))
        };
        self.get_json(token, &path).await
    }

    /// `query` like `before=10&limit=5` (may be empty).
    pub async fn history(
        &self,
        token: &str,
        conversation: i64,
        query: &str,
    ) -> Result<History, ClientError> {
        self.get_json(
            token,
            &format!("/v1/conversations/{conversation}/messages?{query}"),
        )
        .await
    }

    pub async fn receipts(
        &self,
        token: &str,
        conversation: i64,
        message_id: &str,
    ) -> Result<MessageInfo, ClientError> {
        self.get_json(
            token,
            &format!("/v1/conversations/{conversation}/messages/{message_id}/receipts"),
        )
        .await
    }

    pub async fn contacts(&self, token: &str) -> Result<UserList, ClientError> {
        self.get_json(token, "/v1/contacts").await
    }

    pub async fn add_contact(&self, token: &str, username: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "username": username });
        self.send_empty(reqwest::Method::POST, token, "/v1/contacts", Some(&body))
            .await
    }

    pub async fn remove_contact(&self, token: &str, username: &str) -> Result<(), ClientError> {
        self.send_empty(
            reqwest::Method::DELETE,
            token,
            &format!("/v1/contacts/{username}"),
            None,
        )
        .await
    }

    pub async fn blocks(&self, token: &str) -> Result<UserList, ClientError> {
        self.get_json(token, "/v1/blocks").await
    }

    pub async fn block(&self, token: &str, username: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "username": username });
        self.send_empty(reqwest::Method::POST, token, "/v1/blocks", Some(&body))
            .await
    }

    pub async fn unblock(&self, token: &str, username: &str) -> Result<(), ClientError> {
        self.send_empty(
            reqwest::Method::DELETE,
            token,
            &format!("/v1/blocks/{username}"),
            None,
        )
        .await
    }

    pub async fn set_privacy(
        &self,
        token: &str,
        presence: PresenceVisibility,
    ) -> Result<Privacy, ClientError> {
        self.send_json(
            reqwest::Method::PUT,
            token,
            "/v1/privacy",
            &Privacy { presence },
        )
        .await
    }

    /// `PUT /v1/keys`: this device's identity keys (first time) and more
    /// one-time keys; how many one-time keys it now holds.
    pub async fn upload_keys(
        &self,
        token: &str,
        upload: &KeyUploadRequest,
    ) -> Result<KeyCount, ClientError> {
        self.send_json(reqwest::Method::PUT, token, "/v1/keys", upload)
            .await
    }

    /// `GET /v1/keys`: how many one-time keys this device holds.
    pub async fn key_count(&self, token: &str) -> Result<KeyCount, ClientError> {
        self.get_json(token, "/v1/keys").await
    }

    /// `GET /v1/users/{username}/keys`: the identity keys of a user's devices.
    pub async fn user_keys(&self, token: &str, username: &str) -> Result<UserKeys, ClientError> {
        self.get_json(token, &format!("/v1/users/{username}/keys"))
            .await
    }

    /// `POST /v1/keys/claim`: one one-time key of each of a user's devices.
    pub async fn claim_keys(&self, token: &str, username: &str) -> Result<KeyClaim, ClientError> {
        let body = KeyClaimRequest {
            user: username.to_owned(),
        };
        self.send_json(reqwest::Method::POST, token, "/v1/keys/claim", &body)
            .await
    }

    /// `GET /v1/privacy`: this account's current presence visibility.
    pub async fn privacy(&self, token: &str) -> Result<Privacy, ClientError> {
        self.get_json(token, "/v1/privacy").await
    }

    /// One long-poll: applies the cumulative `acks` (conversation, seq),
    /// then waits up to `timeout_ms` for what lies above the device's
    /// positions.
    pub async fn poll(
        &self,
        token: &str,
        acks: &[(i64, i64)],
        timeout_ms: u64,
    ) -> Result<PollResponse, ClientError> {
        self.poll_acking_to_device(token, acks, None, timeout_ms)
            .await
    }

    /// [`Api::poll`] that also acks this device's to-device messages up to
    /// `to_device_ack`.
    pub async fn poll_acking_to_device(
        &self,
        token: &str,
        acks: &[(i64, i64)],
        to_device_ack: Option<i64>,
        timeout_ms: u64,
    ) -> Result<PollResponse, ClientError> {
        let body = PollRequest {
            to_device_ack,
            acks: acks
                .iter()
                .map(|&(conversation, seq)| AckPoint { conversation, seq })
                .collect(),
            timeout_ms: Some(timeout_ms),
        };
        self.send_json(reqwest::Method::POST, token, "/v1/poll", &body)
            .await
    }

    /// Sends one client frame over plain HTTP; returns its replies, or the
    /// refusal when the reply is a single error.
    pub async fn frame(
        &self,
        token: &str,
        frame: &ClientFrame,
    ) -> Result<Vec<ServerFrame>, ClientError> {
        let response = self
            .http
            .post(format!("{}/v1/frames", self.base_url))
            .bearer_auth(token)
            .json(frame)
            .send()
            .await
            .map_err(transport)?;
        let replies: FrameReplies = response
            .json()
            .await
            .map_err(|err| ClientError::Protocol(err.to_string()))?;
        match replies.frames.as_slice() {
            [ServerFrame::Error { code, message, .. }] => Err(ClientError::Refused {
                code: *code,
                message: message.clone(),
            }),
            _ => Ok(replies.frames),
        }
    }

    /// Uploads media bytes; the server sniffs the type.
    pub async fn upload_media(
        &self,
        token: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaInfo, ClientError> {
        self.upload_named_media(token, bytes, None).await
    }

    /// Uploads bytes encrypted for an encrypted conversation: stored as
    /// `application/octet-stream`, unsniffed, with no thumbnail.
    pub async fn upload_encrypted_media(
        &self,
        token: &str,
        bytes: Vec<u8>,
    ) -> Result<MediaInfo, ClientError> {
        let request = self
            .http
            .post(format!("{}/v1/media?encrypted=true", self.base_url));
        decode(request.bearer_auth(token).body(bytes).send().await).await
    }

    /// Uploads media that keeps `filename` (what a download is then saved as).
    pub async fn upload_named_media(
        &self,
        token: &str,
        bytes: Vec<u8>,
        filename: Option<&str>,
    ) -> Result<MediaInfo, ClientError> {
        let url = match filename {
            Some(filename) => format!(
                "{}/v1/media?filename={}",
                self.base_url,
                percent_encoded(filename)
            ),
            None => format!("{}/v1/media", self.base_url),
        };
        let request = self.http.post(url);
        decode(request.bearer_auth(token).body(bytes).send().await).await
    }

    /// Downloads media: (content type, bytes).
    pub async fn download_media(
        &self,
        token: &str,
        media_id: &str,
    ) -> Result<(String, Vec<u8>), ClientError> {
        self.download_named_media(token, media_id)
            .await
            .map(|download| (download.content_type, download.bytes))
    }

    /// Downloads media with the name it was uploaded under, if any.
    pub async fn download_named_media(
        &self,
        token: &str,
        media_id: &str,
    ) -> Result<Download, ClientError> {
        let response = self
            .http
            .get(format!("{}/v1/media/{media_id}", self.base_url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let filename = response
            .headers()
            .get("content-disposition")
            .and_then(|value| value.to_str().ok())
            .and_then(disposition_filename);
        let bytes = response.bytes().await.map_err(transport)?;
        Ok(Download {
            content_type,
            filename,
            bytes: bytes.to_vec(),
        })
    }

    /// The WebSocket URL of this server.
    pub fn ws_url(&self) -> String {
        ws_url(&self.base_url)
    }
}

/// The WebSocket URL of the server at `base_url` (`http://host:port`).
/// Free of an [`Api`]: building one loads the system's CA certificates,
/// which costs milliseconds.
pub fn ws_url(base_url: &str) -> String {
    let base_url = base_url.trim_end_matches('/');
    let rest = base_url
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .or_else(|| {
            base_url
                .strip_prefix("https://")
                .map(|rest| format!("wss://{rest}"))
        })
        .unwrap_or_else(|| base_url.to_owned());
    format!("{rest}{}", missive_proto::WS_PATH)
}

async fn refused(response: reqwest::Response) -> ClientError {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => ClientError::Refused {
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ClientError::Protocol(format!("HTTP {status} without an error body")),
    }
}

async fn decode<T: DeserializeOwned>(
    response: reqwest::Result<reqwest::Response>,
) -> Result<T, ClientError> {
    let response = response.map_err(transport)?;
    if !response.status().is_success() {
        return Err(refused(response).await);
    }
    response
        .json()
        .await
        .map_err(|err| ClientError::Protocol(err.to_string()))
}

async fn expect_empty(response: reqwest::Result<reqwest::Response>) -> Result<(), ClientError> {
    let response = response.map_err(transport)?;
    if !response.status().is_success() {
        return Err(refused(response).await);
    }
    Ok(())
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where a send goes: a user's 1:1, or a conversation by id.
#[derive(Clone, Copy, Debug)]
pub enum Recipient<'a> {
    User(&'a str),
    Conversation(i64),
}

/// An authenticated WebSocket connection.
pub struct Connection {
    socket: Socket,
    /// Frames read while waiting for a specific reply, handed out later in
    /// arrival order.
    backlog: VecDeque<ServerFrame>,
    next_id: u64,
    pub username: String,
    pub device_id: i64,
}

impl Connection {
    /// Connects and authenticates; fails with the server's typed error.
    pub async fn connect(ws_url: &str, token: &str) -> Result<Self, ClientError> {
        let (socket, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .map_err(transport)?;
        Self::authenticate(socket, token).await
    }

    /// Like [`Connection::connect`] (plain `ws://` only), from the local
    /// address `local` when given, and with small socket buffers: the load
    /// generator holds tens of thousands of these, and spreading them over
    /// several 127.0.0.x source addresses lifts the limit of one address's
    /// ephemeral ports.
    pub async fn connect_from(
        ws_url: &str,
        token: &str,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        let authority = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| ClientError::Protocol(format!("not a ws:// URL: {ws_url}")))?;
        let remote = tokio::net::lookup_host(authority)
            .await
            .map_err(transport)?
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("{authority} has no address")))?;
        let tcp = if remote.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(transport)?;
        if let Some(local) = local {
            tcp.bind(std::net::SocketAddr::new(local, 0))
                .map_err(transport)?;
        }
        let stream = tcp.connect(remote).await.map_err(transport)?;
        let _ = stream.set_nodelay(true);
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            ws_url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .map_err(transport)?;
        Self::authenticate(socket, token).await
    }

    async fn authenticate(mut socket: Socket, token: &str) -> Result<Self, ClientError> {
        let auth = ClientFrame::Auth {
            id: None,
            token: token.into(),
        };
        socket
            .send(Message::text(
                serde_json::to_string(&auth).map_err(transport)?,
            ))
            .await
            .map_err(transport)?;
        let mut connection = Self {
            socket,
            backlog: VecDeque::new(),
            next_id: 0,
            username: String::new(),
            device_id: 0,
        };
        match connection.read_frame().await? {
            ServerFrame::Ready {
                username,
                device_id,
                ..
            } => {
                connection.username = username;
                connection.device_id = device_id;
                Ok(connection)
            }
            ServerFrame::Error { code, message, .. } => Err(ClientError::Refused { code, message }),
            other => Err(ClientError::Protocol(format!(
                "expected ready, got {other:?}"
            ))),
        }
    }

    /// Writes any frame as-is.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).map_err(transport)?;
        self.send_raw(&text).await
    }

    /// Writes a raw text frame (tests use this for malformed input).
    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(transport)
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    /// Sends a 1:1 text and waits for its `sent` (or error) reply; frames
    /// arriving meanwhile are kept for [`Connection::next_frame`].
    pub async fn send_text(
        &mut self,
        to: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<ServerFrame, ClientError> {
        let id = self.fresh_id();
        let frame = ClientFrame::Send {
            id: Some(id.clone()),
            to: Some(to.into()),
            conversation: None,
            client_msg_id: client_msg_id.into(),
            text: text.into(),
            reply_to: None,
            media: Vec::new(),
            encrypted: false,
        };
        self.request(&frame, &id).await
    }

    /// Builds a frame around a fresh correlation id, sends it and waits for
    /// its reply.
    pub async fn call(
        &mut self,
        build: impl FnOnce(Option<String>) -> ClientFrame,
    ) -> Result<ServerFrame, ClientError> {
        let id = self.fresh_id();
        let frame = build(Some(id.clone()));
        self.request(&frame, &id).await
    }

    /// Sends ciphertext to a conversation or, with `to`, to a user's 1:1
    /// (created encrypted when there is none yet).
    pub async fn send_encrypted(
        &mut self,
        to: Recipient<'_>,
        client_msg_id: &str,
        ciphertext: &str,
        media: Vec<String>,
    ) -> Result<ServerFrame, ClientError> {
        let (to, conversation) = match to {
            Recipient::User(user) => (Some(user.to_owned()), None),
            Recipient::Conversation(conversation) => (None, Some(conversation)),
        };
        self.call(|id| ClientFrame::Send {
            id,
            to,
            conversation,
            client_msg_id: client_msg_id.into(),
            text: ciphertext.into(),
            reply_to: None,
            media,
            encrypted: true,
        })
        .await
    }

    /// Sends a text into a conversation, optionally as a reply.
    pub async fn send_to(
        &mut self,
        conversation: i64,
        client_msg_id: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<ServerFrame, ClientError> {
        self.call(|id| ClientFrame::Send {
            id,
            to: None,
            conversation: Some(conversation),
            client_msg_id: client_msg_id.into(),
            text: text.into(),
            reply_to: reply_to.map(str::to_owned),
            media: Vec::new(),
            encrypted: false,
        })
        .await
    }

    /// Sets (or with `None`, removes) a reaction.
    pub async fn react(
        &mut self,
        conversation: i64,
        client_msg_id: &str,
        target: &str,
        emoji: Option<&str>,
    ) -> Result<ServerFrame, ClientError> {
        self.call(|id| ClientFrame::React {
            id,
            conversation,
            client_msg_id: client_msg_id.into(),
            target: target.into(),
            emoji: emoji.map(str::to_owned),
        })
        .await
    }

    pub async fn edit(
        &mut self,
        conversation: i64,
        client_msg_id: &str,
        target: &str,
        text: &str,
    ) -> Result<ServerFrame, ClientError> {
        self.call(|id| ClientFrame::Edit {
            id,
            conversation,
            client_msg_id: client_msg_id.into(),
            target: target.into(),
            text: text.into(),
        })
        .await
    }

    pub async fn delete(
        &mut self,
        conversation: i64,
        client_msg_id: &str,
        target: &str,
    ) -> Result<ServerFrame, ClientError> {
        self.call(|id| ClientFrame::Delete {
            id,
            conversation,
            client_msg_id: client_msg_id.into(),
            target: target.into(),
        })
        .await
    }

    /// Sends `frame` (whose correlation id is `id`) and waits for the reply
    /// carrying that id. An error reply becomes `ClientError::Refused`.
    pub async fn request(
        &mut self,
        frame: &ClientFrame,
        id: &str,
    ) -> Result<ServerFrame, ClientError> {
        self.send_frame(frame).await?;
        loop {
            let reply = self.read_frame().await?;
            if reply_id(&reply) == Some(id) {
                return match reply {
                    ServerFrame::Error { code, message, .. } => {
                        Err(ClientError::Refused { code, message })
                    }
                    other => Ok(other),
                };
            }
            self.backlog.push_back(reply);
        }
    }

    /// Acks every event of `conversation` up to and including `seq` and
    /// waits for the answer; returns the device's position there after it.
    pub async fn ack(&mut self, conversation: i64, seq: i64) -> Result<i64, ClientError> {
        let id = self.fresh_id();
        let frame = ClientFrame::Ack {
            id: Some(id.clone()),
            conversation,
            seq,
        };
        match self.request(&frame, &id).await? {
            ServerFrame::Acked { seq, .. } => Ok(seq),
            other => Err(ClientError::Protocol(format!(
                "expected acked, got {other:?}"
            ))),
        }
    }

    /// Acks without waiting (no `id`, so the server answers only a
    /// refusal): what a client does once per burst.
    pub async fn ack_quietly(&mut self, conversation: i64, seq: i64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ack {
            id: None,
            conversation,
            seq,
        })
        .await
    }

    /// The next frame, from the backlog first, waiting at most `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<ServerFrame, ClientError> {
        if let Some(frame) = self.backlog.pop_front() {
            return Ok(frame);
        }
        tokio::time::timeout(wait, self.read_frame())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// The next frame as its JSON text, undecoded, waiting at most `wait`:
    /// for a reader that decodes only the fields it needs (the load
    /// generator). A frame already waiting is returned without arming a
    /// timer.
    pub async fn next_text(&mut self, wait: Duration) -> Result<FrameText, ClientError> {
        if let Some(frame) = self.backlog.pop_front() {
            return Ok(FrameText::from(frame.to_json()));
        }
        if let Some(ready) = self.read_text().now_or_never() {
            return ready;
        }
        tokio::time::timeout(wait, self.read_text())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Cancel-safe: a frame is either returned whole or left in the socket.
    async fn read_text(&mut self) -> Result<FrameText, ClientError> {
        loop {
            let message = self.socket.next().await.ok_or(ClientError::Closed {
                code: 1006,
                reason: String::new(),
            })?;
            match message.map_err(transport)? {
                Message::Text(text) => return Ok(text),
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(ClientError::Closed { code, reason });
                }
                _ => continue,
            }
        }
    }

    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        let text = self.read_text().await?;
        serde_json::from_str(&text).map_err(|err| ClientError::Protocol(format!("{err} in {text}")))
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Sends `frame` (whose correlation id is `id`) and waits for its `ok`
    /// reply; an error reply becomes `ClientError::Refused`.
    async fn request_ok(&mut self, frame: &ClientFrame, id: &str) -> Result<(), ClientError> {
        match self.request(frame, id).await? {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(ClientError::Protocol(format!("expected ok, got {other:?}"))),
        }
    }

    /// Tells the other members of `conversation` that this user started or
    /// stopped typing; waits for the server's `ok`.
    pub async fn typing(
        &mut self,
        conversation: i64,
        state: missive_proto::TypingState,
    ) -> Result<(), ClientError> {
        let id = self.fresh_id();
        let frame = ClientFrame::Typing {
            id: Some(id.clone()),
            conversation,
            state,
        };
        self.request_ok(&frame, &id).await
    }

    /// Replaces this connection's presence subscription with `users` and
    /// returns the `presence` frames the server answers with right after
    /// its `ok` (one per distinct user, in the server's order).
    pub async fn subscribe_presence(
        &mut self,
        users: &[&str],
    ) -> Result<Vec<ServerFrame>, ClientError> {
        let id = self.fresh_id();
        let frame = ClientFrame::SubscribePresence {
            id: Some(id.clone()),
            users: users.iter().map(|user| user.to_string()).collect(),
        };
        self.request_ok(&frame, &id).await?;
        let distinct = users
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        // The server writes the subscription's `presence` frames right
        // after `ok`, before any later ephemeral frame; queued frames may
        // interleave and are kept for `next_frame`.
        let mut frames = Vec::with_capacity(distinct);
        while frames.len() < distinct {
            match self.read_frame().await? {
                frame @ ServerFrame::Presence { .. } => frames.push(frame),
                other => self.backlog.push_back(other),
            }
        }
        Ok(frames)
    }
}

fn reply_id(frame: &ServerFrame) -> Option<&str> {
    match frame {
        ServerFrame::Ready { id, .. }
        | ServerFrame::Sent { id, .. }
        | ServerFrame::Acked { id, .. }
        | ServerFrame::ReadOk { id, .. }
        | ServerFrame::Pong { id }
        | ServerFrame::Ok { id }
        | ServerFrame::Group { id, .. }
        | ServerFrame::Error { id, .. } => id.as_deref(),
        _ => None,
    }
}

/// A downloaded media object.
#[derive(Debug)]
pub struct Download {
    pub content_type: String,
    /// The name it was uploaded under (`filename*` of `Content-Disposition`).
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

/// `text` as a URL query value: every byte but the unreserved ones
/// (RFC 3986) percent-encoded.
fn percent_encoded(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The UTF-8 `filename*` of a `Content-Disposition` header (RFC 6266), as
/// missive's server writes it; `None` when there is none or it does not
/// decode.
fn disposition_filename(header: &str) -> Option<String> {
    let encoded = header
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("filename*=UTF-8''"))?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod disposition_tests {
    use super::disposition_filename;

    #[test]
    fn the_utf8_filename_is_read_back() {
        // Goal: what the server writes decodes to the uploaded name; a
        // header without one, or a broken escape, gives none.
        assert_eq!(
            disposition_filename("attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9 a.txt"),
            Some("é a.txt".to_owned())
        );
        assert_eq!(disposition_filename("attachment"), None);
        assert_eq!(
            disposition_filename("attachment; filename*=UTF-8''%G1"),
            None
        );
        assert_eq!(
            disposition_filename("attachment; filename*=UTF-8''%C3"),
            None
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        // Goal: a name with spaces, separators and non-ASCII survives as
        // one query value.
        assert_eq!(
            super::percent_encoded("Q3 é&x=1.pdf"),
            "Q3%20%C3%A9%26x%3D1.pdf"
        );
    }
}
