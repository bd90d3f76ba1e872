//! Sending, acking and reading: the delivery model of DESIGN.md §2 on top of
//! the Store, with Bus wake-ups for the devices an event is for and live
//! receipt frames for those whose ticks a receipt cursor moved.

use std::sync::Arc;

use missive_bus::{Bus, DeviceEvent};
use missive_core::model::{
    AckRequest, Appended, Body, ConversationRecord, DeviceAuth, EventKind, HistoryRequest,
    NewMessage, Pending, PendingRequest, ReadRequest, ReceiptMoved, ReceiptsRecord, StoredEvent,
    SweepOutcome, SweepRequest,
};
use missive_core::{
    AccountId, ClientMsgId, Clock, ConversationId, DeviceId, MessageId, MessageText, Seq,
};
use missive_proto::{ErrorCode, ServerFrame};
use missive_store::{ENCRYPTED_MEDIA_TYPE, QueuedAppend, Store, StoreError};

use super::push::Push;
use crate::config::{Config, DeliveryConfig, E2eePolicy, Retention};
use crate::router::{LiveEvent, Router};
use crate::service::ServiceError;
use crate::wire;

/// Media a single message may carry.
const MEDIA_PER_MESSAGE_MAX: usize = 10;

/// History page size when the client does not ask for one.
/// Conversations per page of `GET /v1/conversations`: by default, and at
/// most.
pub const CONVERSATIONS_PAGE_DEFAULT: usize = 100;
pub const CONVERSATIONS_PAGE_MAX: usize = 500;

/// A conversation list cursor, `ACTIVITY_MS.CONVERSATION`.
fn conversation_cursor(text: &str) -> Result<(i64, i64), ServiceError> {
    text.split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| {
            ServiceError::new(
                ErrorCode::InvalidField,
                "before must be the next cursor of a previous page",
            )
        })
}

/// Events one search request looks through at most.
pub const SEARCH_SCANNED_MAX: usize = 5_000;
/// Longest search text, in bytes.
const SEARCH_QUERY_BYTES_MAX: usize = 256;

pub const HISTORY_PAGE_DEFAULT: usize = 50;

/// Rows deleted per table per sweeper transaction, so a sweep never holds
/// the writer for long.
const SWEEP_ROWS_MAX: usize = 5_000;

/// A send as the client phrased it, before validation.
pub enum Draft {
    Text {
        text: String,
        reply_to: Option<String>,
        media: Vec<String>,
    },
    Reaction {
        target: String,
        emoji: Option<String>,
    },
    Edit {
        target: String,
        text: String,
    },
    Delete {
        target: String,
    },
    /// Ciphertext for an end-to-end encrypted conversation. `reply_to` is
    /// refused: a reply names its target inside the ciphertext.
    Encrypted {
        ciphertext: String,
        reply_to: Option<String>,
        media: Vec<String>,
    },
}

/// Ciphertext: printable ASCII (what base64 and JSON envelopes are made
/// of), at most this many times the plaintext limit, plus room for the
/// envelope.
const CIPHERTEXT_PER_TEXT_BYTE: usize = 2;
const CIPHERTEXT_ENVELOPE_BYTES: usize = 1024;

fn parse_ciphertext(raw: String, text_bytes_max: usize) -> Result<String, ServiceError> {
    let max = text_bytes_max * CIPHERTEXT_PER_TEXT_BYTE + CIPHERTEXT_ENVELOPE_BYTES;
    if raw.is_empty() {
        return Err(ServiceError::new(
            ErrorCode::EmptyText,
            "ciphertext is empty",
        ));
    }
    if raw.len() > max {
        return Err(ServiceError::new(
            ErrorCode::TextTooLong,
            format!("ciphertext is limited to {max} bytes"),
        ));
    }
    if !raw.bytes().all(|byte| (0x20..0x7f).contains(&byte)) {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "ciphertext must be printable ASCII (base64 or a JSON envelope of it)",
        ));
    }
    Ok(raw)
}

/// A reaction: 1-16 bytes, no whitespace or control characters.
fn parse_emoji(raw: &str) -> Result<String, ServiceError> {
    const EMOJI_BYTES_MAX: usize = 16;
    if raw.is_empty()
        || raw.len() > EMOJI_BYTES_MAX
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            "emoji must be 1-16 bytes with no spaces",
        ));
    }
    Ok(raw.to_owned())
}

/// A send that has its place in the store's write order; see
/// [`Messaging::queue_send`].
pub struct QueuedSend {
    stored: QueuedAppend,
    live: Option<LiveParts>,
}

/// What a live frame needs that the store does not return: the sender, the
/// client's id and the body's kind, text and target. `None` for a text with
/// media (the frame names each attachment's type and size, which the store
/// looks up), which then goes the slow way, through the store.
struct LiveParts {
    from: String,
    from_device: DeviceId,
    client_msg_id: String,
    kind: EventKind,
    body: String,
    target: Option<MessageId>,
}

impl LiveParts {
    fn of(auth: &DeviceAuth, client_msg_id: &ClientMsgId, body: &Body) -> Option<Self> {
        if !body.media().is_empty() {
            return None;
        }
        let (kind, body, target) = body.stored_form();
        Some(Self {
            from: auth.username.to_string(),
            from_device: auth.device,
            client_msg_id: client_msg_id.as_str().to_owned(),
            kind,
            body,
            target: target.cloned(),
        })
    }

    /// The event as the store will show it to a device reading it.
    fn event(self, appended: &Appended) -> StoredEvent {
        StoredEvent {
            message_id: appended.message_id.clone(),
            conversation: appended.conversation,
            seq: appended.seq,
            from: self.from,
            from_device: self.from_device,
            client_msg_id: self.client_msg_id,
            kind: self.kind,
            body: self.body,
            media: Vec::new(),
            target: self.target,
            edited_ms: None,
            deleted: false,
            ts_ms: appended.ts_ms,
            expires_ms: appended.expires_ms,
            reactions: Vec::new(),
        }
    }
}

/// A send that passed [`Messaging::check`].
pub struct CheckedSend {
    client_msg_id: ClientMsgId,
    body: Body,
}

/// Where a send goes.
pub enum Recipient {
    /// The 1:1 conversation with this user.
    User(String),
    Conversation(ConversationId),
}

/// Largest encoded event sent whole over the Bus to each recipient on
/// another node; a larger one is a wake-up, and its recipients read it from
/// the store. Most texts fit: what the bus carries per recipient stays
/// bounded whatever the message.
const BUS_FRAME_BYTES_MAX: usize = 2048;

pub struct Messaging {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    router: Arc<Router>,
    clock: Arc<dyn Clock>,
    push: Arc<Push>,
    delivery: DeliveryConfig,
    text_bytes_max: usize,
    e2ee: E2eePolicy,
}

impl Messaging {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        router: Arc<Router>,
        clock: Arc<dyn Clock>,
        push: Arc<Push>,
        config: &Config,
    ) -> Self {
        Self {
            store,
            bus,
            router,
            clock,
            push,
            delivery: config.delivery.clone(),
            text_bytes_max: config.limits.text_bytes_max,
            e2ee: config.e2ee,
        }
    }

    /// The 1:1 conversation a send to `username` goes into, created by the
    /// first message between the two (end-to-end encrypted if that message
    /// is ciphertext). A send the store would refuse must
    /// not leave an empty conversation behind (a refused request changes
    /// nothing), so before creating it this checks what the store would
    /// check against it: no block either way, no `reply_to` (nothing in a
    /// new conversation to reply to), and media only of the sender's own.
    pub async fn conversation_to(
        &self,
        auth: &DeviceAuth,
        username: &str,
        send: &CheckedSend,
    ) -> Result<ConversationId, ServiceError> {
        let account = super::account_named(&*self.store, username).await?;
        if self.store.blocked_either_way(auth.account, account).await? {
            return Err(StoreError::Blocked.into());
        }
        if let Some(conversation) = self
            .store
            .find_direct_conversation(auth.account, account)
            .await?
        {
            return Ok(conversation);
        }
        if let Body::Text {
            reply_to: Some(_), ..
        } = &send.body
        {
            return Err(StoreError::UnknownMessage.into());
        }
        let encrypted = matches!(send.body, Body::Encrypted { .. });
        for id in send.body.media() {
            let own = self
                .store
                .media_for(auth.account, id)
                .await?
                .is_some_and(|record| {
                    record.uploader == auth.account
                        && (!encrypted || record.content_type == ENCRYPTED_MEDIA_TYPE)
                });
            if !own {
                return Err(StoreError::UnknownMedia.into());
            }
        }
        Ok(self
            .store
            .direct_conversation(auth.account, account, self.clock.now_ms(), encrypted)
            .await?)
    }

    /// What a client asked to send, checked (against the server's
    /// encryption policy too) and turned into a stored body.
    pub fn body(&self, draft: Draft) -> Result<Body, ServiceError> {
        let message_id = |raw: String| {
            MessageId::parse(&raw)
                .ok_or_else(|| ServiceError::new(ErrorCode::UnknownMessage, "no such message"))
        };
        let check_media = |media: &[String]| {
            if media.len() > MEDIA_PER_MESSAGE_MAX {
                return Err(ServiceError::new(
                    ErrorCode::InvalidField,
                    "at most 10 media per message",
                ));
            }
            if !media.iter().all(|id| super::media::is_media_id(id)) {
                return Err(ServiceError::new(ErrorCode::UnknownMedia, "no such media"));
            }
            Ok(())
        };
        match &draft {
            Draft::Delete { .. } => {}
            Draft::Encrypted { .. } => super::check_e2ee(self.e2ee, true)?,
            Draft::Text { .. } | Draft::Reaction { .. } | Draft::Edit { .. } => {
                super::check_e2ee(self.e2ee, false)?;
            }
        }
        Ok(match draft {
            Draft::Text {
                text,
                reply_to,
                media,
            } => {
                check_media(&media)?;
                let text = if media.is_empty() || !text.is_empty() {
                    MessageText::parse(&text, self.text_bytes_max)?
                } else {
                    MessageText::empty_caption()
                };
                Body::Text {
                    text,
                    reply_to: reply_to.map(message_id).transpose()?,
                    media,
                }
            }
            Draft::Reaction { target, emoji } => Body::Reaction {
                target: message_id(target)?,
                emoji: emoji.map(|emoji| parse_emoji(&emoji)).transpose()?,
            },
            Draft::Edit { target, text } => Body::Edit {
                target: message_id(target)?,
                text: MessageText::parse(&text, self.text_bytes_max)?,
                window_ms: secs_to_ms(self.delivery.edit_window_secs),
            },
            Draft::Delete { target } => Body::Delete {
                target: message_id(target)?,
            },
            Draft::Encrypted {
                ciphertext,
                reply_to,
                media,
            } => {
                if reply_to.is_some() {
                    return Err(ServiceError::new(
                        ErrorCode::InvalidField,
                        "an encrypted message names what it replies to inside its ciphertext",
                    ));
                }
                check_media(&media)?;
                Body::Encrypted {
                    ciphertext: parse_ciphertext(ciphertext, self.text_bytes_max)?,
                    media,
                }
            }
        })
    }

    /// Checks what a send can be checked for without the store: its
    /// `client_msg_id` and its body. Callers check before resolving a
    /// username into its 1:1 conversation, so that a refused send does not
    /// create one.
    pub fn check(&self, client_msg_id: &str, draft: Draft) -> Result<CheckedSend, ServiceError> {
        Ok(CheckedSend {
            client_msg_id: ClientMsgId::parse(client_msg_id)?,
            body: self.body(draft)?,
        })
    }

    /// Stores an event durably (to the configured fsync level) and hands it
    /// to its recipients: from memory to those live on this node, through
    /// the Bus, encoded, to the others (a node that cannot place it reads
    /// the store). Idempotent per
    /// (device, client_msg_id).
    pub async fn send(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        checked: CheckedSend,
    ) -> Result<Appended, ServiceError> {
        let queued = self.queue_send(auth, conversation, checked).await?;
        self.finish_send(queued).await
    }

    /// [`send`](Self::send) in two steps, for a connection with many sends
    /// in flight: this resolves once the event has its place in the store's
    /// write order (so one device's sends take seqs in the order it sent
    /// them); [`finish_send`](Self::finish_send) waits for the commit and
    /// hands the event to the recipients.
    pub async fn queue_send(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        checked: CheckedSend,
    ) -> Result<QueuedSend, ServiceError> {
        let CheckedSend {
            client_msg_id,
            body,
        } = checked;
        let now_ms = self.clock.now_ms();
        let live = LiveParts::of(auth, &client_msg_id, &body);
        let stored = self
            .store
            .queue_message(NewMessage {
                message_id: MessageId::generate(),
                conversation,
                sender_account: auth.account,
                sender_device: auth.device,
                client_msg_id,
                body,
                now_ms,
            })
            .await?;
        Ok(QueuedSend { stored, live })
    }

    /// Waits for a queued send to be stored, then hands it to its live
    /// recipients on this node and wakes the others.
    pub async fn finish_send(&self, queued: QueuedSend) -> Result<Appended, ServiceError> {
        let QueuedSend { stored, live } = queued;
        let appended = stored.await?;
        if appended.duplicate {
            return Ok(appended);
        }
        metrics::counter!("missive_sends_total").increment(1);
        match live {
            Some(live) => {
                let frame = wire::event_frame(live.event(&appended));
                let event = Arc::new(LiveEvent {
                    conversation: appended.conversation,
                    seq: appended.seq,
                    frame: frame.to_json().into(),
                });
                // The others may be live on other nodes: the event goes
                // there encoded, so they need not read it back; a large one
                // goes as a wake-up, so bus traffic per recipient stays small.
                for device in self.router.offer(&appended.recipients, &event) {
                    let notice = if event.frame.len() <= BUS_FRAME_BYTES_MAX {
                        DeviceEvent::Committed {
                            conversation: event.conversation,
                            seq: event.seq,
                            frame: Arc::clone(&event.frame),
                        }
                    } else {
                        DeviceEvent::QueueChanged
                    };
                    self.bus.publish(device, notice).await;
                }
            }
            None => {
                for device in &appended.recipients {
                    self.bus.publish(*device, DeviceEvent::QueueChanged).await;
                }
            }
        }
        self.push.queued(&appended.recipients);
        Ok(appended)
    }

    /// Moves the device's positions forward (cumulative acks); returns its
    /// position in each acked conversation. The members whose ticks the
    /// account's delivered cursor moved are told live.
    pub async fn ack(
        &self,
        auth: &DeviceAuth,
        points: Vec<(ConversationId, Seq)>,
    ) -> Result<Vec<(ConversationId, Seq)>, ServiceError> {
        const POINTS_MAX: usize = 1024;
        if points.len() > POINTS_MAX {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "at most 1024 conversations per ack",
            ));
        }
        if points.iter().any(|(_, seq)| *seq < 0) {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "seq must not be negative",
            ));
        }
        let outcome = self
            .store
            .ack(AckRequest {
                device: auth.device,
                account: auth.account,
                points,
                purge_delivered_bodies: self.delivery.history_retention
                    == Retention::UntilDelivered,
                now_ms: self.clock.now_ms(),
            })
            .await?;
        metrics::counter!("missive_acks_total").increment(outcome.positions.len() as u64);
        for moved in &outcome.receipts {
            let frame = ServerFrame::Delivered {
                conversation: moved.conversation.0,
                by: moved.by.clone(),
                seq: moved.seq,
                ts_ms: moved.ts_ms,
            };
            self.tell(moved, &frame).await;
        }
        Ok(outcome.positions)
    }

    /// Marks the conversation read up to `seq`; returns the read pointer.
    pub async fn read(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, ServiceError> {
        let outcome = self
            .store
            .mark_read(ReadRequest {
                account: auth.account,
                conversation,
                seq,
                now_ms: self.clock.now_ms(),
            })
            .await?;
        if let Some(moved) = &outcome.moved {
            let frame = ServerFrame::Read {
                conversation: moved.conversation.0,
                by: moved.by.clone(),
                seq: moved.seq,
                ts_ms: moved.ts_ms,
            };
            self.tell(moved, &frame).await;
        }
        Ok(outcome.seq)
    }

    /// A page of history: newest first below `before`, or oldest first
    /// above `after`; at most `limit` (capped at the configured page size).
    pub async fn history(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<usize>,
    ) -> Result<Vec<StoredEvent>, ServiceError> {
        let limit = limit
            .unwrap_or(HISTORY_PAGE_DEFAULT)
            .clamp(1, self.delivery.page_size);
        Ok(self
            .store
            .history(HistoryRequest {
                account: auth.account,
                conversation,
                before,
                after,
                limit,
            })
            .await?)
    }

    /// The texts of the conversation containing `query` (case-insensitive,
    /// Unicode), newest first, strictly below `before`: at most `limit`,
    /// found among at most `SEARCH_SCANNED_MAX` events so one request costs
    /// a bounded amount whatever the conversation's size. Returns the
    /// matches and where to go on (the lowest seq looked at), or `None`
    /// when the start of the visible history was reached.
    pub async fn search(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        query: &str,
        before: Option<Seq>,
        limit: Option<usize>,
    ) -> Result<(Vec<StoredEvent>, Option<Seq>), ServiceError> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() || needle.len() > SEARCH_QUERY_BYTES_MAX {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "q must be 1-256 bytes of text to look for",
            ));
        }
        let limit = limit
            .unwrap_or(HISTORY_PAGE_DEFAULT)
            .clamp(1, self.delivery.page_size);
        let page = self.delivery.page_size;
        let mut found = Vec::new();
        let mut before = before;
        let mut scanned = 0;
        loop {
            let events = self
                .store
                .history(HistoryRequest {
                    account: auth.account,
                    conversation,
                    before,
                    after: None,
                    limit: page,
                })
                .await?;
            let full = events.len() >= page;
            for event in events {
                scanned += 1;
                before = Some(event.seq);
                // A text's words, or the name of a file it carries.
                let matches = event.kind == EventKind::Text
                    && !event.deleted
                    && (event.body.to_lowercase().contains(&needle)
                        || event.media.iter().any(|media| {
                            media
                                .filename
                                .as_ref()
                                .is_some_and(|name| name.to_lowercase().contains(&needle))
                        }));
                if matches {
                    found.push(event);
                    if found.len() == limit {
                        return Ok((found, before));
                    }
                }
            }
            if !full {
                return Ok((found, None));
            }
            if scanned >= SEARCH_SCANNED_MAX {
                return Ok((found, before));
            }
        }
    }

    /// A page of the caller's conversations, most recent activity first,
    /// strictly after the `before` cursor, and the cursor of the next page
    /// (none on the last). A cursor is `ACTIVITY_MS.CONVERSATION`: a
    /// conversation whose activity moves it above the cursor meanwhile is
    /// not repeated (its new events arrive live).
    pub async fn conversations(
        &self,
        auth: &DeviceAuth,
        before: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<ConversationRecord>, Option<String>), ServiceError> {
        let limit = limit
            .unwrap_or(CONVERSATIONS_PAGE_DEFAULT)
            .clamp(1, CONVERSATIONS_PAGE_MAX);
        let before = before.map(conversation_cursor).transpose()?;
        let mut page: Vec<ConversationRecord> = self
            .store
            .conversations(auth.account)
            .await?
            .into_iter()
            .filter(|record| {
                before.is_none_or(|cursor| (record.activity_ms, record.conversation.0) < cursor)
            })
            .take(limit + 1)
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last()
                .map(|last| format!("{}.{}", last.activity_ms, last.conversation.0))
        } else {
            None
        };
        Ok((page, next))
    }

    pub async fn receipts(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        message_id: &str,
    ) -> Result<ReceiptsRecord, ServiceError> {
        let message_id = MessageId::parse(message_id)
            .ok_or_else(|| ServiceError::new(ErrorCode::UnknownMessage, "no such message"))?;
        Ok(self
            .store
            .receipts(auth.account, conversation, &message_id)
            .await?)
    }

    /// The next page of what waits for the device, above its stored
    /// positions and `after` (where this connection already is): at most
    /// `limit` items, and never more than the configured page size.
    pub async fn pending(
        &self,
        account: AccountId,
        device: DeviceId,
        after: Vec<(ConversationId, Seq)>,
        limit: usize,
    ) -> Result<Pending, ServiceError> {
        let expired_before_ms = self
            .clock
            .now_ms()
            .saturating_sub(secs_to_ms(self.delivery.offline_ttl_secs));
        Ok(self
            .store
            .pending(PendingRequest {
                device,
                account,
                after,
                limit: limit.clamp(1, self.delivery.page_size),
                expired_before_ms,
            })
            .await?)
    }

    pub fn page_size(&self) -> usize {
        self.delivery.page_size
    }

    /// One sweep: bodies past retention that no device waits for, and the
    /// rows of purged bodies once their dedup window has passed. That window
    /// is the longer of retention and the offline TTL, so a retry within
    /// the TTL is always recognised.
    pub async fn sweep(&self) -> Result<SweepOutcome, ServiceError> {
        let now_ms = self.clock.now_ms();
        let retention_ms = self.delivery.history_retention.keep_ms();
        let ttl_ms = secs_to_ms(self.delivery.offline_ttl_secs);
        let dedup_ms = retention_ms.max(ttl_ms);
        let mut total = SweepOutcome::default();
        loop {
            let outcome = self
                .store
                .sweep(SweepRequest {
                    now_ms,
                    bodies_before_ms: now_ms.saturating_sub(retention_ms),
                    undelivered_before_ms: now_ms.saturating_sub(ttl_ms),
                    dedup_before_ms: now_ms.saturating_sub(dedup_ms),
                    limit: SWEEP_ROWS_MAX,
                })
                .await?;
            total.purged_bodies += outcome.purged_bodies;
            total.purged_dedup += outcome.purged_dedup;
            let limit = SWEEP_ROWS_MAX as u64;
            if outcome.purged_bodies < limit && outcome.purged_dedup < limit {
                return Ok(total);
            }
        }
    }

    /// A receipt frame for the devices whose ticks moved; live only.
    async fn tell(&self, moved: &ReceiptMoved, frame: &ServerFrame) {
        if moved.notify.is_empty() {
            return;
        }
        let text: Arc<str> = frame.to_json().into();
        for device in &moved.notify {
            self.bus
                .publish(*device, DeviceEvent::Ephemeral(Arc::clone(&text)))
                .await;
        }
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
