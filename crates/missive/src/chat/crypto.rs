//! The terminal app's end-to-end encryption, on the CLI's
//! [`crate::encryption`]: one set of device keys shared by the connection
//! task, which opens stored events before the app sees them and seals
//! texts for encrypted conversations, and the history reads, which open
//! each page. The app never sees a ciphertext: an encrypted message
//! reaches it with its plaintext, or with a line saying why this device
//! cannot read it.

use std::collections::HashMap;
use std::sync::Arc;

use missive_client::{Api, ClientError, Connection};
use missive_e2ee::{DecryptError, VerifyMessage};
use missive_proto::rest::{History, MediaRef};
use missive_proto::{ClientFrame, ErrorCode, MessageKind, ServerFrame, ToDeviceOut};
use tokio::sync::Mutex;
use tokio::sync::mpsc::UnboundedSender;

use super::state::{AppEvent, UNREADABLE};
use super::verify::{Outcome, Verifier, VerifyAction, VerifyUpdate};
use crate::encryption::{self, DeviceKeys, Opened};
use crate::profile::Profile;

/// What a message whose ciphertext was altered shows instead.
pub(super) const TAMPERED: &str = "⚠ encrypted message rejected: it was tampered with";
/// What a message whose key belongs to another sender shows instead.
pub(super) const WRONG_SENDER: &str =
    "⚠ encrypted message rejected: its key belongs to another sender or conversation";

/// Conversation key of a first message to a user (no conversation yet):
/// its outbound session moves under the real id once `sent` names it.
const NOT_YET_CREATED: i64 = -1;

#[derive(Clone)]
pub(super) struct Crypto {
    keys: Arc<Mutex<DeviceKeys>>,
    verifier: Arc<Mutex<Verifier>>,
    /// 1:1 members by conversation: they never change, so read once.
    direct_members: Arc<Mutex<HashMap<i64, Vec<String>>>>,
    api: Api,
    saved: Arc<Profile>,
}

/// What one incoming frame gives the connection task to do.
#[derive(Default)]
pub(super) struct Incoming {
    /// Frames for the app, in order (an encrypted message opened).
    pub show: Vec<ServerFrame>,
    /// A to-device message taken: ack up to this seq.
    pub to_device_done: Option<i64>,
    /// A key verification's replies to send, and what to show of it.
    pub verify_send: Vec<ToDeviceOut>,
    pub verify_update: Option<VerifyUpdate>,
}

/// Why a text could not be sealed.
pub(super) enum SealError {
    /// The connection or a REST read failed: try again on the next
    /// connection.
    Lost(ClientError),
    /// Refused for good: tell the app as the send's error (boxed: a frame
    /// is large and this is the rare way out).
    Refused(Box<ServerFrame>),
}

impl Crypto {
    /// The profile's keys, made and published when it has none; without
    /// them (the server unreachable, an unreadable keys file) the app runs
    /// and shows encrypted messages as unreadable.
    pub(super) async fn start(
        api: &Api,
        profile_name: &str,
        saved: &Profile,
        events: &UnboundedSender<AppEvent>,
    ) -> Self {
        let notices = events.clone();
        let warn: encryption::Warn = Box::new(move |text| {
            let _ = notices.send(AppEvent::Notice(text));
        });
        let vault = match encryption::load_or_publish(api, profile_name, saved).await {
            Ok(vault) => Some(vault),
            Err(err) => {
                warn(format!("{err}; encrypted messages stay unread"));
                None
            }
        };
        Self {
            keys: Arc::new(Mutex::new(DeviceKeys::with(profile_name, vault, warn))),
            verifier: Arc::new(Mutex::new(Verifier::default())),
            direct_members: Arc::default(),
            api: api.clone(),
            saved: Arc::new(saved.clone()),
        }
    }

    /// A frame from the server, opened: a stored event (held back while
    /// its room key has not come), a room key, or anything else as it is.
    pub(super) async fn incoming(&self, frame: ServerFrame) -> Incoming {
        match frame {
            ServerFrame::ToDevice {
                seq,
                from,
                from_device,
                body,
                ..
            } => {
                let mut keys = self.keys.lock().await;
                if let Some(message) = VerifyMessage::parse(&body) {
                    let mut verifier = self.verifier.lock().await;
                    let outcome = verifier
                        .receive(
                            &mut keys,
                            &self.api,
                            &self.saved,
                            (&from, from_device),
                            message,
                        )
                        .await;
                    return Incoming {
                        to_device_done: Some(seq),
                        verify_send: outcome.send,
                        verify_update: outcome.update,
                        ..Incoming::default()
                    };
                }
                let opened = keys.take_share(&from, from_device, &body);
                keys.save();
                Incoming {
                    show: opened.into_iter().map(shown).collect(),
                    to_device_done: Some(seq),
                    ..Incoming::default()
                }
            }
            ServerFrame::KeysLow { .. } => {
                let crypto = self.clone();
                tokio::spawn(async move { crypto.top_up().await });
                Incoming::default()
            }
            frame if frame.ack_point().is_some() => {
                let mut keys = self.keys.lock().await;
                let opened = keys.offer(frame);
                keys.save();
                Incoming {
                    show: opened.into_iter().map(shown).collect(),
                    ..Incoming::default()
                }
            }
            frame => Incoming {
                show: vec![frame],
                ..Incoming::default()
            },
        }
    }

    /// The user's decision in a key verification: what to send, and show.
    pub(super) async fn verify(&self, action: VerifyAction) -> Outcome {
        let mut keys = self.keys.lock().await;
        let mut verifier = self.verifier.lock().await;
        verifier
            .act(&mut keys, &self.api, &self.saved, action)
            .await
    }

    /// Whether every device of `user` is verified here (None: unknown, the
    /// server could not be asked).
    pub(super) async fn peer_verified(&self, user: &str) -> Option<bool> {
        let mut keys = self.keys.lock().await;
        super::verify::all_verified(&mut keys, &self.api, &self.saved, user).await
    }

    /// Whether stored events wait for a room key.
    pub(super) async fn holding(&self) -> bool {
        self.keys.lock().await.holding()
    }

    /// The events still waiting for a key, as unreadable.
    pub(super) async fn give_up(&self) -> Vec<ServerFrame> {
        let mut keys = self.keys.lock().await;
        keys.give_up().into_iter().map(shown).collect()
    }

    /// A `sent` for a first encrypted message to a user names its new
    /// conversation: the session made for it moves there.
    pub(super) async fn created(&self, conversation: i64) {
        let mut keys = self.keys.lock().await;
        let profile = keys.profile().to_owned();
        let Some(vault) = keys.vault_mut() else {
            return;
        };
        vault.rename_conversation(NOT_YET_CREATED, conversation);
        if let Err(err) = encryption::save(&profile, vault) {
            keys.warn(err);
        }
    }

    /// On each connection: more one-time keys if others claimed them while
    /// this device was away (`keys_low` reaches only a connected device).
    pub(super) async fn top_up_if_low(&self) {
        const KEYS_LOW: u64 = 20;
        match self.api.key_count(&self.saved.token).await {
            Ok(count) if count.one_time_keys < KEYS_LOW => self.top_up().await,
            _ => {}
        }
    }

    async fn top_up(&self) {
        let mut keys = self.keys.lock().await;
        let profile = keys.profile().to_owned();
        let Some(vault) = keys.vault_mut() else {
            return;
        };
        let result = match encryption::top_up(&self.api, &self.saved.token, vault).await {
            Ok(()) => encryption::save(&profile, vault),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = result {
            keys.warn(format!("cannot publish more one-time keys: {err}"));
        }
    }

    /// Opens every encrypted message of a history page in place.
    /// The key of an attachment of an encrypted message this device read.
    pub(super) async fn file(&self, media_id: &str) -> Option<missive_e2ee::SharedFile> {
        self.keys.lock().await.file(media_id)
    }

    pub(super) async fn open_history(&self, history: &mut History) {
        let mut keys = self.keys.lock().await;
        for message in &mut history.messages {
            if message.kind != MessageKind::Encrypted || message.deleted {
                continue;
            }
            let opened = keys.open_text(
                message.conversation,
                &message.from,
                message.from_device,
                &message.text,
            );
            show(
                opened,
                &mut message.text,
                &mut message.target,
                &mut message.media,
            );
        }
        keys.save();
    }

    /// Who a sealed text in `conversation` is for: a group's members read
    /// afresh (one removed a moment ago must not get the key), a 1:1's from
    /// the conversation list once.
    async fn members_of(&self, conversation: i64) -> Result<Vec<String>, ClientError> {
        if let Some(members) = self.direct_members.lock().await.get(&conversation) {
            return Ok(members.clone());
        }
        match self.api.group(&self.saved.token, conversation).await {
            Ok(group) => return Ok(group.members.into_iter().map(|m| m.username).collect()),
            Err(ClientError::Refused {
                code: ErrorCode::NotAGroup,
                ..
            }) => {}
            Err(err) => return Err(err),
        }
        let list = self.api.conversations(&self.saved.token).await?;
        let summary = list
            .conversations
            .into_iter()
            .find(|summary| summary.conversation == conversation)
            .ok_or_else(|| ClientError::Refused {
                code: ErrorCode::NotMember,
                message: "you are not a member of this conversation".into(),
            })?;
        self.direct_members
            .lock()
            .await
            .insert(conversation, summary.members.clone());
        Ok(summary.members)
    }

    /// Seals a `send` the app marked `encrypted` (its text still plain):
    /// sessions with every member device, the room key to those lacking it
    /// (sent here, first), and the frame to send with the ciphertext. The
    /// keys are saved before the frame goes, so a ratchet step is never
    /// used twice.
    pub(super) async fn seal(
        &self,
        connection: &mut Connection,
        mut frame: ClientFrame,
    ) -> Result<ClientFrame, SealError> {
        let ClientFrame::Send {
            id,
            to,
            conversation,
            text,
            reply_to,
            encrypted: true,
            ..
        } = &mut frame
        else {
            return Ok(frame);
        };
        let (members, key) = match (*conversation, &*to) {
            (Some(conversation), _) => (
                self.members_of(conversation)
                    .await
                    .map_err(|err| lost_or_refused(id, err))?,
                conversation,
            ),
            (None, Some(user)) => (
                vec![self.saved.username.clone(), user.clone()],
                NOT_YET_CREATED,
            ),
            (None, None) => {
                return Err(refusal(id, ErrorCode::BadFrame, "no recipient".into()));
            }
        };
        let mut devices = encryption::member_devices(&self.api, &self.saved, &members)
            .await
            .map_err(|err| lost_or_refused(id, err))?;
        let mut content = serde_json::json!({ "text": text });
        if let Some(reply_to) = reply_to {
            content["reply_to"] = reply_to.as_str().into();
        }
        let (sealed, profile) = self
            .encrypt_for(id, key, &mut devices, &content.to_string())
            .await?;
        let shares = sealed.shares.clone();
        encryption::send_shares(connection, sealed.shares)
            .await
            .map_err(|err| lost_or_refused(id, err))?;
        // Delivered: until now every seal shared the key again, so a share
        // lost with its connection goes with the next try.
        let mut keys = self.keys.lock().await;
        if let Some(vault) = keys.vault_mut() {
            vault.mark_shared(key, &shares);
            if let Err(err) = encryption::save(&profile, vault) {
                keys.warn(err);
            }
        }
        // The same frame, its text now the ciphertext (the reply travels
        // inside it).
        *text = sealed.ciphertext;
        *reply_to = None;
        Ok(frame)
    }

    /// Opens sessions with `devices` and seals `plaintext` for them under
    /// the room key of conversation `key`, the keys saved before it
    /// returns; also the profile they are saved under. Refusals answer the
    /// frame `id`.
    async fn encrypt_for(
        &self,
        id: &Option<String>,
        key: i64,
        devices: &mut Vec<missive_e2ee::Device>,
        plaintext: &str,
    ) -> Result<(missive_e2ee::Sealed, String), SealError> {
        let mut keys = self.keys.lock().await;
        let profile = keys.profile().to_owned();
        let Some(vault) = keys.vault_mut() else {
            return Err(refusal(
                id,
                ErrorCode::Internal,
                "this device has no keys to encrypt with; log in again".into(),
            ));
        };
        let warnings = std::sync::Mutex::new(Vec::new());
        encryption::open_sessions(&self.api, &self.saved, vault, devices, &|warning| {
            warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(warning);
        })
        .await
        .map_err(|err| lost_or_refused(id, err))?;
        let sealed = vault
            .encrypt(key, devices, plaintext)
            .map_err(|err| refusal(id, ErrorCode::Internal, format!("cannot encrypt: {err}")))?;
        let saved = encryption::save(&profile, vault);
        for warning in warnings
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            keys.warn(warning);
        }
        saved.map_err(|err| refusal(id, ErrorCode::Internal, err))?;
        Ok((sealed, profile))
    }
}

/// A send the app asked for, refused here as the server would refuse it
/// (an `error` answering frame `id`).
fn refusal(id: &Option<String>, code: ErrorCode, message: String) -> SealError {
    SealError::Refused(Box::new(ServerFrame::Error {
        id: id.clone(),
        code,
        message,
        retry_after_ms: None,
    }))
}

/// A failed call while sealing: the server's refusal passed on to the app
/// as the answer to frame `id`, anything else the connection lost.
fn lost_or_refused(id: &Option<String>, err: ClientError) -> SealError {
    match err {
        ClientError::Refused { code, message } => refusal(id, code, message),
        other => SealError::Lost(other),
    }
}

/// A stored event as the app gets it: an encrypted message's text (and
/// reply) replaced by what it says, or by why it cannot be read.
fn shown((mut frame, opened): (ServerFrame, Opened)) -> ServerFrame {
    if let ServerFrame::Message {
        text,
        target,
        media,
        ..
    } = &mut frame
    {
        show(opened, text, target, media);
    }
    frame
}

/// A message's text, reply and attachments as shown, given how it opened:
/// an encrypted one's attachments as its sender described them (the
/// server knows them only as opaque bytes).
fn show(opened: Opened, text: &mut String, target: &mut Option<String>, media: &mut Vec<MediaRef>) {
    match opened {
        Opened::Plain => {}
        Opened::Decrypted {
            text: plaintext,
            reply_to,
            files,
        } => {
            *text = plaintext;
            if reply_to.is_some() {
                *target = reply_to;
            }
            *media = encryption::media_refs(&files);
        }
        Opened::Failed(err) => {
            *text = match err {
                DecryptError::NoKey => UNREADABLE,
                DecryptError::Tampered => TAMPERED,
                DecryptError::WrongSender => WRONG_SENDER,
            }
            .to_owned();
            media.clear();
        }
    }
}
