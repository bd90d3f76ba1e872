//! Sending, acking and reading: the delivery model of DESIGN.md §2 on top of
//! the Store, with Bus wake-ups for the devices whose queues grew.

use std::sync::Arc;

use missive_bus::{Bus, DeviceEvent};
use missive_core::{
    ClientMsgId, Clock, ConversationId, DeviceId, MessageId, MessageText, QueuePos, Seq, UnixMillis,
};
use missive_proto::ErrorCode;
use missive_store::{
    AckRequest, Appended, Body, ConversationRecord, DeviceAuth, HistoryRequest, NewMessage,
    QueueItem, ReadRequest, ReceiptsRecord, Store, StoreError, StoredEvent, SweepOutcome,
    SweepRequest,
};

use super::push::Push;
use crate::config::{DeliveryConfig, LimitsConfig};
use crate::error::ApiError;

/// Media a single message may carry.
const MEDIA_PER_MESSAGE_MAX: usize = 10;

/// History page size when the client does not ask for one.
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
}

/// A reaction: 1-16 bytes, no whitespace or control characters.
fn parse_emoji(raw: &str) -> Result<String, ApiError> {
    const EMOJI_BYTES_MAX: usize = 16;
    if raw.is_empty()
        || raw.len() > EMOJI_BYTES_MAX
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "emoji must be 1-16 bytes with no spaces",
        ));
    }
    Ok(raw.to_owned())
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

pub struct Messaging {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    push: Arc<Push>,
    delivery: DeliveryConfig,
    text_bytes_max: usize,
}

impl Messaging {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
        push: Arc<Push>,
        delivery: &DeliveryConfig,
        limits: &LimitsConfig,
    ) -> Self {
        Self {
            store,
            bus,
            clock,
            push,
            delivery: delivery.clone(),
            text_bytes_max: limits.text_bytes_max,
        }
    }

    fn queue_expires_ms(&self, now_ms: UnixMillis) -> UnixMillis {
        now_ms.saturating_add(secs_to_ms(self.delivery.offline_ttl_secs))
    }

    /// The 1:1 conversation a send to `username` goes into, created by the
    /// first message between the two. A send the store would refuse must
    /// not leave an empty conversation behind (a refused request changes
    /// nothing), so before creating it this checks what the store would
    /// check against it: no block either way, no `reply_to` (nothing in a
    /// new conversation to reply to), and media only of the sender's own.
    pub async fn conversation_to(
        &self,
        auth: &DeviceAuth,
        username: &str,
        send: &CheckedSend,
    ) -> Result<ConversationId, ApiError> {
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
            reply_to, media, ..
        } = &send.body
        {
            if reply_to.is_some() {
                return Err(StoreError::UnknownMessage.into());
            }
            for id in media {
                let own = self
                    .store
                    .media_for(auth.account, id)
                    .await?
                    .is_some_and(|record| record.uploader == auth.account);
                if !own {
                    return Err(StoreError::UnknownMedia.into());
                }
            }
        }
        Ok(self
            .store
            .direct_conversation(auth.account, account, self.clock.now_ms())
            .await?)
    }

    /// What a client asked to send, checked and turned into a stored body.
    pub fn body(&self, draft: Draft) -> Result<Body, ApiError> {
        let message_id = |raw: String| {
            MessageId::parse(&raw)
                .ok_or_else(|| ApiError::new(ErrorCode::UnknownMessage, "no such message"))
        };
        Ok(match draft {
            Draft::Text {
                text,
                reply_to,
                media,
            } => {
                if media.len() > MEDIA_PER_MESSAGE_MAX {
                    return Err(ApiError::new(
                        ErrorCode::InvalidField,
                        "at most 10 media per message",
                    ));
                }
                let text = if media.is_empty() || !text.is_empty() {
                    MessageText::parse(&text, self.text_bytes_max)?
                } else {
                    MessageText::empty_caption()
                };
                if !media.iter().all(|id| super::media::is_media_id(id)) {
                    return Err(ApiError::new(ErrorCode::UnknownMedia, "no such media"));
                }
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
        })
    }

    /// Checks what a send can be checked for without the store: its
    /// `client_msg_id` and its body. Callers check before resolving a
    /// username into its 1:1 conversation, so that a refused send does not
    /// create one.
    pub fn check(&self, client_msg_id: &str, draft: Draft) -> Result<CheckedSend, ApiError> {
        Ok(CheckedSend {
            client_msg_id: ClientMsgId::parse(client_msg_id)?,
            body: self.body(draft)?,
        })
    }

    /// Stores an event durably (to the configured fsync level) and wakes the
    /// devices it was queued for. Idempotent per (device, client_msg_id).
    pub async fn send(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        checked: CheckedSend,
    ) -> Result<Appended, ApiError> {
        let CheckedSend {
            client_msg_id,
            body,
        } = checked;
        let now_ms = self.clock.now_ms();
        let appended = self
            .store
            .append_message(NewMessage {
                message_id: MessageId::generate(),
                conversation,
                sender_account: auth.account,
                sender_device: auth.device,
                client_msg_id,
                body,
                now_ms,
                queue_expires_ms: self.queue_expires_ms(now_ms),
            })
            .await?;
        if !appended.duplicate {
            metrics::counter!("missive_sends_total").increment(1);
        }
        self.wake(&appended.queued_for).await;
        Ok(appended)
    }

    /// Removes acked entries from the caller's queue; returns how many.
    pub async fn ack(
        &self,
        auth: &DeviceAuth,
        up_to: Option<QueuePos>,
        positions: Vec<QueuePos>,
    ) -> Result<u64, ApiError> {
        const POSITIONS_MAX: usize = 1024;
        if positions.len() > POSITIONS_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                "at most 1024 positions per ack",
            ));
        }
        let now_ms = self.clock.now_ms();
        let outcome = self
            .store
            .ack(AckRequest {
                device: auth.device,
                account: auth.account,
                up_to,
                positions,
                purge_acked_bodies: self.delivery.history_retention_secs == 0,
                now_ms,
                queue_expires_ms: self.queue_expires_ms(now_ms),
            })
            .await?;
        metrics::counter!("missive_acks_total").increment(outcome.removed);
        self.wake(&outcome.queued_for).await;
        Ok(outcome.removed)
    }

    /// Marks the conversation read up to `seq`; returns the read pointer.
    pub async fn read(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        seq: Seq,
    ) -> Result<Seq, ApiError> {
        let now_ms = self.clock.now_ms();
        let outcome = self
            .store
            .mark_read(ReadRequest {
                account: auth.account,
                conversation,
                seq,
                now_ms,
                queue_expires_ms: self.queue_expires_ms(now_ms),
            })
            .await?;
        self.wake(&outcome.queued_for).await;
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
    ) -> Result<Vec<StoredEvent>, ApiError> {
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

    pub async fn conversations(
        &self,
        auth: &DeviceAuth,
    ) -> Result<Vec<ConversationRecord>, ApiError> {
        Ok(self.store.conversations(auth.account).await?)
    }

    pub async fn receipts(
        &self,
        auth: &DeviceAuth,
        conversation: ConversationId,
        message_id: &str,
    ) -> Result<ReceiptsRecord, ApiError> {
        let message_id = MessageId::parse(message_id)
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownMessage, "no such message"))?;
        Ok(self
            .store
            .receipts(auth.account, conversation, &message_id)
            .await?)
    }

    /// The next page of the device's queue after `after`.
    pub async fn pending(
        &self,
        device: DeviceId,
        after: QueuePos,
    ) -> Result<Vec<QueueItem>, ApiError> {
        Ok(self
            .store
            .pending(device, after, self.delivery.page_size, self.clock.now_ms())
            .await?)
    }

    pub fn page_size(&self) -> usize {
        self.delivery.page_size
    }

    /// One sweep: expired entries, bodies past retention, old dedup records.
    /// Dedup records are kept as long as either window so a retry within the
    /// offline TTL is always recognised.
    pub async fn sweep(&self) -> Result<SweepOutcome, ApiError> {
        let now_ms = self.clock.now_ms();
        let retention_ms = secs_to_ms(self.delivery.history_retention_secs);
        let dedup_ms = retention_ms.max(secs_to_ms(self.delivery.offline_ttl_secs));
        let mut total = SweepOutcome::default();
        loop {
            let outcome = self
                .store
                .sweep(SweepRequest {
                    now_ms,
                    bodies_before_ms: now_ms.saturating_sub(retention_ms),
                    dedup_before_ms: now_ms.saturating_sub(dedup_ms),
                    limit: SWEEP_ROWS_MAX,
                })
                .await?;
            total.expired_entries += outcome.expired_entries;
            total.purged_bodies += outcome.purged_bodies;
            total.purged_dedup += outcome.purged_dedup;
            let limit = SWEEP_ROWS_MAX as u64;
            if outcome.expired_entries < limit
                && outcome.purged_bodies < limit
                && outcome.purged_dedup < limit
            {
                return Ok(total);
            }
        }
    }

    async fn wake(&self, devices: &[DeviceId]) {
        for device in devices {
            self.bus.publish(*device, DeviceEvent::QueueChanged).await;
        }
        self.push.queued(devices);
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
