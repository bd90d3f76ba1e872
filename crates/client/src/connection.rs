//! An authenticated WebSocket connection speaking the frames of
//! `missive-proto`.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use missive_proto::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::FrameText;
use crate::errors::{ClientError, transport};

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
        let to = Recipient::User(to);
        self.send_message(to, client_msg_id, text, None, Vec::new(), false)
            .await
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
        self.send_message(to, client_msg_id, ciphertext, None, media, true)
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
        let to = Recipient::Conversation(conversation);
        self.send_message(to, client_msg_id, text, reply_to, Vec::new(), false)
            .await
    }

    /// Sends a `send` frame and waits for its reply.
    async fn send_message(
        &mut self,
        to: Recipient<'_>,
        client_msg_id: &str,
        text: &str,
        reply_to: Option<&str>,
        media: Vec<String>,
        encrypted: bool,
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
            text: text.into(),
            reply_to: reply_to.map(str::to_owned),
            media,
            encrypted,
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
        let reply = self
            .call(|id| ClientFrame::Ack {
                id,
                conversation,
                seq,
            })
            .await?;
        match reply {
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

    /// [`Connection::call`] for a frame answered with `ok`.
    async fn call_ok(
        &mut self,
        build: impl FnOnce(Option<String>) -> ClientFrame,
    ) -> Result<(), ClientError> {
        match self.call(build).await? {
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
        self.call_ok(|id| ClientFrame::Typing {
            id,
            conversation,
            state,
        })
        .await
    }

    /// Replaces this connection's presence subscription with `users` and
    /// returns the `presence` frames the server answers with right after
    /// its `ok` (one per distinct user, in the server's order).
    pub async fn subscribe_presence(
        &mut self,
        users: &[&str],
    ) -> Result<Vec<ServerFrame>, ClientError> {
        self.call_ok(|id| ClientFrame::SubscribePresence {
            id,
            users: users.iter().map(ToString::to_string).collect(),
        })
        .await?;
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
