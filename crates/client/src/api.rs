//! REST calls: accounts and devices, groups, history, contacts and blocks,
//! keys, long-polling, and media.

use missive_proto::rest::{
    AckPoint, ConversationList, CreateGroupRequest, DeviceInfo, DeviceList, ErrorBody,
    FrameReplies, GroupInfo, History, KeyClaim, KeyClaimRequest, KeyCount, KeyUploadRequest,
    LoginRequest, LoginResponse, MessageInfo, PollRequest, PollResponse, PresenceVisibility,
    Privacy, RegisterRequest, RegisterResponse, UserKeys, UserList,
};
use missive_proto::{ClientFrame, ServerFrame};
use serde::de::DeserializeOwned;

mod media;

pub use self::media::Download;
use crate::errors::{ClientError, transport};

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
        self.post_json("/v1/accounts", &body).await
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
        self.post_json("/v1/sessions", &body).await
    }

    pub async fn devices(&self, token: &str) -> Result<DeviceList, ClientError> {
        self.get_json(token, "/v1/devices").await
    }

    /// Renames one of my devices; its new listing.
    pub async fn rename_device(
        &self,
        token: &str,
        device_id: i64,
        name: &str,
    ) -> Result<DeviceInfo, ClientError> {
        let body = serde_json::json!({ "name": name });
        self.send_json(
            reqwest::Method::PATCH,
            token,
            &format!("/v1/devices/{device_id}"),
            &body,
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
        self.delete(token, &format!("/v1/devices/{device_id}"))
            .await
    }

    pub async fn logout(&self, token: &str) -> Result<(), ClientError> {
        self.delete(token, "/v1/sessions/current").await
    }

    /// `POST` without a token (signing up, logging in).
    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let request = self.http.post(format!("{}{path}", self.base_url));
        decode(request.json(body).send().await).await
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

    /// `POST` with no body, answered with no body.
    async fn post(&self, token: &str, path: &str) -> Result<(), ClientError> {
        self.send_empty(reqwest::Method::POST, token, path, None)
            .await
    }

    /// `DELETE`, answered with no body.
    async fn delete(&self, token: &str, path: &str) -> Result<(), ClientError> {
        self.send_empty(reqwest::Method::DELETE, token, path, None)
            .await
    }

    pub async fn create_group(
        &self,
        token: &str,
        name: &str,
        members: &[&str],
    ) -> Result<GroupInfo, ClientError> {
        let body = CreateGroupRequest {
            name: name.into(),
            members: members.iter().map(ToString::to_string).collect(),
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
        self.post(token, &format!("/v1/conversations/{conversation}/encrypt"))
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
        self.post(token, &format!("/v1/groups/{group}/leave")).await
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
        self.add_user(token, "/v1/contacts", username).await
    }

    pub async fn remove_contact(&self, token: &str, username: &str) -> Result<(), ClientError> {
        self.delete(token, &format!("/v1/contacts/{username}"))
            .await
    }

    pub async fn blocks(&self, token: &str) -> Result<UserList, ClientError> {
        self.get_json(token, "/v1/blocks").await
    }

    pub async fn block(&self, token: &str, username: &str) -> Result<(), ClientError> {
        self.add_user(token, "/v1/blocks", username).await
    }

    pub async fn unblock(&self, token: &str, username: &str) -> Result<(), ClientError> {
        self.delete(token, &format!("/v1/blocks/{username}")).await
    }

    /// Adds `username` to one of this account's user lists (`list`:
    /// contacts or blocks).
    async fn add_user(&self, token: &str, list: &str, username: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "username": username });
        self.send_empty(reqwest::Method::POST, token, list, Some(&body))
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

/// The response when the request went through and succeeded; the
/// server's refusal, or the transport error, otherwise.
async fn successful(
    response: reqwest::Result<reqwest::Response>,
) -> Result<reqwest::Response, ClientError> {
    let response = response.map_err(transport)?;
    if !response.status().is_success() {
        return Err(refused(response).await);
    }
    Ok(response)
}

async fn decode<T: DeserializeOwned>(
    response: reqwest::Result<reqwest::Response>,
) -> Result<T, ClientError> {
    successful(response)
        .await?
        .json()
        .await
        .map_err(|err| ClientError::Protocol(err.to_string()))
}

async fn expect_empty(response: reqwest::Result<reqwest::Response>) -> Result<(), ClientError> {
    successful(response).await.map(drop)
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
