//! Frame dispatch shared by every transport: a decoded client frame in, its
//! reply frames out. The WebSocket session and the long-poll endpoints both
//! call [`Dispatcher::handle`], so the two transports cannot drift apart.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use missive_core::ConversationId;
use missive_core::model::{Appended, DeviceAuth, GroupChange, Setting};
use missive_proto::rest::GroupInfo;
use missive_proto::{ClientFrame, ErrorCode, ServerFrame, ToDeviceOut, TypingState};
use tokio::time::Instant;

use crate::AppState;
use crate::service::ServiceError;
use crate::service::{CheckedSend, Draft, QueuedSend, Recipient};

/// Typing frames a client may send in a burst, and the refill pace.
const TYPING_FRAMES_MAX: u32 = 10;
const TYPING_REFILL: Duration = Duration::from_millis(500);

/// Conversations remembered per dispatcher for `send {to}`; cleared when full.
const RECIPIENT_CACHE_MAX: usize = 1024;

/// The per-client state frame handling needs: who is speaking, a cache of
/// 1:1 conversations by username, and the typing budget.
pub(super) struct Dispatcher {
    state: Arc<AppState>,
    pub auth: DeviceAuth,
    recipients: HashMap<String, ConversationId>,
    typing_budget: Budget,
}

/// A token bucket: `max` actions, one more every `refill`.
pub(super) struct Budget {
    tokens: u32,
    max: u32,
    refill: Duration,
    refilled_at: Instant,
}

impl Budget {
    pub(super) fn new(max: u32, refill: Duration) -> Self {
        Self {
            tokens: max,
            max,
            refill,
            refilled_at: Instant::now(),
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let earned =
            now.duration_since(self.refilled_at).as_millis() / self.refill.as_millis().max(1);
        if earned > 0 {
            self.tokens = self.max.min(
                self.tokens
                    .saturating_add(earned.min(u128::from(self.max)) as u32),
            );
            self.refilled_at = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Dispatcher {
    pub(super) fn new(state: Arc<AppState>, auth: DeviceAuth) -> Self {
        Self {
            state,
            auth,
            recipients: HashMap::new(),
            typing_budget: Budget::new(TYPING_FRAMES_MAX, TYPING_REFILL),
        }
    }

    /// Handles one decoded client frame and returns its replies in order
    /// (usually one; `subscribe_presence` answers `ok` then the presence of
    /// each user).
    pub(super) async fn handle(&mut self, frame: ClientFrame) -> Vec<ServerFrame> {
        match self.start(frame).await {
            Replies::Now(replies) => replies,
            Replies::Later(replies) => replies.await,
        }
    }

    /// Starts handling one frame. A send (and a reaction, edit or delete)
    /// answers `Later`: it has its place in the store's write order, and
    /// the future resolves to its reply once it is stored, so the caller
    /// may start the next frame meanwhile and one connection's sends share
    /// commits. Everything else is handled to the end and answers `Now`.
    pub(super) async fn start(&mut self, frame: ClientFrame) -> Replies {
        let send = match Route::of(frame) {
            Route::Queue(send) => send,
            Route::Handle(other) => return Replies::Now(self.handle_now(other).await),
        };
        let id = send.id;
        let queued = self
            .queue_send(send.to, send.conversation, &send.client_msg_id, send.draft)
            .await;
        match queued {
            Ok(queued) => {
                let state = Arc::clone(&self.state);
                Replies::Later(Box::pin(async move {
                    let reply = match state.messaging.finish_send(queued).await {
                        Ok(appended) => sent_frame(&appended),
                        Err(err) => error_frame(id.clone(), err),
                    };
                    vec![reply.with_id(id)]
                }))
            }
            Err(err) => Replies::Now(vec![error_frame(id, err)]),
        }
    }

    /// Handles a frame that is not a send to the end: one named handler
    /// per frame kind.
    async fn handle_now(&mut self, frame: ClientFrame) -> Vec<ServerFrame> {
        let reply = match frame {
            ClientFrame::Auth { id, .. } => ServerFrame::error(
                id,
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            ),
            ClientFrame::Ping { id } => ServerFrame::Pong { id },
            // `start` queues these; answering here keeps a mistake visible
            // without a panic.
            ClientFrame::Send { id, .. }
            | ClientFrame::React { id, .. }
            | ClientFrame::Edit { id, .. }
            | ClientFrame::Delete { id, .. } => error_frame(
                id,
                ServiceError::new(ErrorCode::Internal, "sends are queued by Dispatcher::start"),
            ),
            ClientFrame::ToDevice { id, messages } => self.to_device(id, messages).await,
            ClientFrame::ToDeviceAck { id, up_to } => self.to_device_ack(id, up_to).await,
            ClientFrame::Typing {
                id,
                conversation,
                state,
            } => self.typing(id, conversation, state).await,
            ClientFrame::SubscribePresence { id, users } => {
                return self.subscribe_presence(id, &users).await;
            }
            frame @ (ClientFrame::GroupCreate { .. }
            | ClientFrame::Encrypt { .. }
            | ClientFrame::SetTimer { .. }
            | ClientFrame::GroupInfo { .. }
            | ClientFrame::GroupRename { .. }
            | ClientFrame::GroupAdd { .. }
            | ClientFrame::GroupRemove { .. }
            | ClientFrame::GroupPromote { .. }
            | ClientFrame::GroupDemote { .. }
            | ClientFrame::GroupLeave { .. }) => self.handle_group(frame).await,
            ClientFrame::Ack {
                id,
                conversation,
                seq,
            } => match self.ack(id, conversation, seq).await {
                Some(reply) => reply,
                // An ack without an id is answered only when refused:
                // clients ack once per burst and need no echo.
                None => return Vec::new(),
            },
            ClientFrame::Read {
                id,
                conversation,
                seq,
            } => self.read(id, conversation, seq).await,
        };
        vec![reply]
    }

    /// Group management and conversation settings.
    async fn handle_group(&self, frame: ClientFrame) -> ServerFrame {
        match frame {
            ClientFrame::GroupCreate {
                id,
                name,
                members,
                encrypted,
            } => self.group_create(id, &name, &members, encrypted).await,
            ClientFrame::Encrypt { id, conversation } => {
                self.set(id, conversation, Setting::Encrypt).await
            }
            ClientFrame::SetTimer {
                id,
                conversation,
                secs,
            } => {
                self.set(id, conversation, Setting::DisappearAfter(secs))
                    .await
            }
            ClientFrame::GroupInfo { id, conversation } => self.group_info(id, conversation).await,
            ClientFrame::GroupRename {
                id,
                conversation,
                name,
            } => self.group_rename(id, conversation, &name).await,
            ClientFrame::GroupAdd {
                id,
                conversation,
                members,
            } => self.group_add(id, conversation, &members).await,
            ClientFrame::GroupRemove {
                id,
                conversation,
                username,
            } => {
                self.group_member(id, conversation, &username, GroupChange::Remove)
                    .await
            }
            ClientFrame::GroupPromote {
                id,
                conversation,
                username,
            } => {
                self.group_member(id, conversation, &username, GroupChange::Promote)
                    .await
            }
            ClientFrame::GroupDemote {
                id,
                conversation,
                username,
            } => {
                self.group_member(id, conversation, &username, GroupChange::Demote)
                    .await
            }
            ClientFrame::GroupLeave { id, conversation } => {
                self.group_leave(id, conversation).await
            }
            // `handle_now` passes only the frames above.
            _ => error_frame(
                None,
                ServiceError::new(ErrorCode::Internal, "not a group frame"),
            ),
        }
    }

    async fn to_device(&self, id: Option<String>, messages: Vec<ToDeviceOut>) -> ServerFrame {
        let now = std::time::Instant::now();
        if let Err(wait) = self
            .state
            .send_limit
            .take(self.auth.device, self.auth.account, now)
        {
            return error_frame(
                id,
                ServiceError::rate_limited(wait, "too many sends; slow down"),
            );
        }
        match self.state.keys.send_to_devices(&self.auth, messages).await {
            Ok(()) => ServerFrame::Ok { id },
            Err(err) => error_frame(id, err),
        }
    }

    async fn to_device_ack(&self, id: Option<String>, up_to: i64) -> ServerFrame {
        match self.state.keys.ack_to_device(&self.auth, up_to).await {
            Ok(()) => ServerFrame::Ok { id },
            Err(err) => error_frame(id, err),
        }
    }

    async fn typing(
        &mut self,
        id: Option<String>,
        conversation: i64,
        state: TypingState,
    ) -> ServerFrame {
        if !self.typing_budget.take(Instant::now()) {
            return error_frame(
                id,
                ServiceError::new(ErrorCode::RateLimited, "too many typing frames; slow down"),
            );
        }
        match self
            .state
            .social
            .typing(&self.auth, ConversationId(conversation), state)
            .await
        {
            Ok(()) => ServerFrame::Ok { id },
            Err(err) => error_frame(id, err),
        }
    }

    /// `ok` first, then the current presence of each user.
    async fn subscribe_presence(&self, id: Option<String>, users: &[String]) -> Vec<ServerFrame> {
        match self.state.social.subscribe(&self.auth, users).await {
            Ok(frames) => std::iter::once(ServerFrame::Ok { id })
                .chain(frames)
                .collect(),
            Err(err) => vec![error_frame(id, err)],
        }
    }

    async fn group_create(
        &self,
        id: Option<String>,
        name: &str,
        members: &[String],
        encrypted: Option<bool>,
    ) -> ServerFrame {
        let result = match self
            .state
            .group_create_limit
            .check(&self.auth, "too many groups created; slow down")
        {
            Ok(()) => {
                self.state
                    .groups
                    .create(&self.auth, name, members, encrypted)
                    .await
            }
            Err(refused) => Err(refused),
        };
        group_reply(id, result)
    }

    async fn group_info(&self, id: Option<String>, conversation: i64) -> ServerFrame {
        let result = self
            .state
            .groups
            .info(&self.auth, ConversationId(conversation))
            .await;
        group_reply(id, result)
    }

    async fn group_rename(&self, id: Option<String>, conversation: i64, name: &str) -> ServerFrame {
        let conversation = ConversationId(conversation);
        let result = self
            .state
            .groups
            .rename(&self.auth, conversation, name)
            .await;
        group_reply(id, result)
    }

    async fn group_add(
        &self,
        id: Option<String>,
        conversation: i64,
        members: &[String],
    ) -> ServerFrame {
        let conversation = ConversationId(conversation);
        let result = self
            .state
            .groups
            .add(&self.auth, conversation, members)
            .await;
        group_reply(id, result)
    }

    async fn group_leave(&self, id: Option<String>, conversation: i64) -> ServerFrame {
        let conversation = ConversationId(conversation);
        match self
            .state
            .groups
            .change(&self.auth, conversation, GroupChange::Leave)
            .await
        {
            Ok(_) => ServerFrame::Ok { id },
            Err(err) => error_frame(id, err),
        }
    }

    /// `None`: acked, and the ack carried no id to answer.
    async fn ack(&self, id: Option<String>, conversation: i64, seq: i64) -> Option<ServerFrame> {
        let acked = self
            .state
            .messaging
            .ack(&self.auth, vec![(ConversationId(conversation), seq)])
            .await;
        match (acked, id) {
            (Ok(positions), Some(id)) => Some(ServerFrame::Acked {
                id: Some(id),
                conversation,
                seq: positions.first().map_or(seq, |(_, seq)| *seq),
            }),
            (Ok(_), None) => None,
            (Err(err), id) => Some(error_frame(id, err)),
        }
    }

    async fn read(&self, id: Option<String>, conversation: i64, seq: i64) -> ServerFrame {
        match self
            .state
            .messaging
            .read(&self.auth, ConversationId(conversation), seq)
            .await
        {
            Ok(seq) => ServerFrame::ReadOk {
                id,
                conversation,
                seq,
            },
            Err(err) => error_frame(id, err),
        }
    }

    async fn group_member(
        &self,
        id: Option<String>,
        conversation: i64,
        username: &str,
        change: fn(missive_core::AccountId) -> GroupChange,
    ) -> ServerFrame {
        let conversation = ConversationId(conversation);
        let result = self
            .state
            .groups
            .change_member(&self.auth, conversation, username, change)
            .await;
        group_reply(id, result)
    }

    /// A conversation setting changed, answered `ok`.
    async fn set(&self, id: Option<String>, conversation: i64, setting: Setting) -> ServerFrame {
        let conversation = ConversationId(conversation);
        match self
            .state
            .groups
            .set(&self.auth, conversation, setting)
            .await
        {
            Ok(()) => ServerFrame::Ok { id },
            Err(err) => error_frame(id, err),
        }
    }

    async fn queue_send(
        &mut self,
        to: Option<String>,
        conversation: Option<i64>,
        client_msg_id: &str,
        draft: Draft,
    ) -> Result<QueuedSend, ServiceError> {
        let recipient = match (to, conversation) {
            (Some(username), None) => Recipient::User(username),
            (None, Some(conversation)) => Recipient::Conversation(ConversationId(conversation)),
            _ => {
                return Err(ServiceError::new(
                    ErrorCode::InvalidField,
                    "give exactly one of \"to\" or \"conversation\"",
                ));
            }
        };
        // Every check that needs no store comes before `to` is resolved:
        // resolving creates the 1:1 conversation, and a refused send must
        // change nothing.
        let checked = self.state.messaging.check(client_msg_id, draft)?;
        let now = std::time::Instant::now();
        if let Err(wait) = self
            .state
            .send_limit
            .take(self.auth.device, self.auth.account, now)
        {
            return Err(ServiceError::rate_limited(
                wait,
                "too many sends; slow down",
            ));
        }
        let conversation = match recipient {
            Recipient::User(username) => self.conversation_with(username, &checked).await?,
            Recipient::Conversation(conversation) => conversation,
        };
        self.state
            .messaging
            .queue_send(&self.auth, conversation, checked)
            .await
    }

    async fn conversation_with(
        &mut self,
        username: String,
        send: &CheckedSend,
    ) -> Result<ConversationId, ServiceError> {
        if let Some(conversation) = self.recipients.get(&username) {
            return Ok(*conversation);
        }
        let conversation = self
            .state
            .messaging
            .conversation_to(&self.auth, &username, send)
            .await?;
        if self.recipients.len() >= RECIPIENT_CACHE_MAX {
            self.recipients.clear();
        }
        self.recipients.insert(username, conversation);
        Ok(conversation)
    }
}

/// What [`Dispatcher::start`] made of a frame.
pub(super) enum Replies {
    /// Handled: the replies, in order.
    Now(Vec<ServerFrame>),
    /// Queued for the store: the replies once it is stored.
    Later(Pin<Box<dyn Future<Output = Vec<ServerFrame>> + Send>>),
}

/// A send, reaction, edit or delete frame, taken apart for `queue_send`.
struct SendFrame {
    id: Option<String>,
    to: Option<String>,
    conversation: Option<i64>,
    client_msg_id: String,
    draft: Draft,
}

/// What [`Dispatcher::start`] does with a frame: queue it (a send, taken
/// apart) or handle it to the end.
enum Route {
    Queue(SendFrame),
    Handle(ClientFrame),
}

impl Route {
    #[inline]
    fn of(frame: ClientFrame) -> Self {
        let (id, to, conversation, client_msg_id, draft) = match frame {
            ClientFrame::Send {
                id,
                to,
                conversation,
                client_msg_id,
                text,
                reply_to,
                media,
                encrypted,
            } => {
                let draft = if encrypted {
                    Draft::Encrypted {
                        ciphertext: text,
                        reply_to,
                        media,
                    }
                } else {
                    Draft::Text {
                        text,
                        reply_to,
                        media,
                    }
                };
                (id, to, conversation, client_msg_id, draft)
            }
            ClientFrame::React {
                id,
                conversation,
                client_msg_id,
                target,
                emoji,
            } => {
                let draft = Draft::Reaction { target, emoji };
                (id, None, Some(conversation), client_msg_id, draft)
            }
            ClientFrame::Edit {
                id,
                conversation,
                client_msg_id,
                target,
                text,
            } => {
                let draft = Draft::Edit { target, text };
                (id, None, Some(conversation), client_msg_id, draft)
            }
            ClientFrame::Delete {
                id,
                conversation,
                client_msg_id,
                target,
            } => {
                let draft = Draft::Delete { target };
                (id, None, Some(conversation), client_msg_id, draft)
            }
            other => return Self::Handle(other),
        };
        Self::Queue(SendFrame {
            id,
            to,
            conversation,
            client_msg_id,
            draft,
        })
    }
}

fn sent_frame(appended: &Appended) -> ServerFrame {
    ServerFrame::Sent {
        id: None,
        message_id: appended.message_id.to_string(),
        conversation: appended.conversation.0,
        seq: appended.seq,
        ts_ms: appended.ts_ms,
        duplicate: appended.duplicate,
        expires_ms: appended.expires_ms,
    }
}

trait WithId {
    fn with_id(self, id: Option<String>) -> Self;
}

impl WithId for ServerFrame {
    fn with_id(mut self, new_id: Option<String>) -> Self {
        if let ServerFrame::Sent { id, .. } | ServerFrame::Error { id, .. } = &mut self {
            *id = new_id;
        }
        self
    }
}

fn group_reply(id: Option<String>, result: Result<GroupInfo, ServiceError>) -> ServerFrame {
    match result {
        Ok(group) => ServerFrame::Group { id, group },
        Err(err) => error_frame(id, err),
    }
}

fn error_frame(id: Option<String>, err: ServiceError) -> ServerFrame {
    ServerFrame::Error {
        id,
        code: err.code,
        message: err.message,
        retry_after_ms: err
            .retry_after
            .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
    }
}
