//! A device's end-to-end encryption state (issue 22), for every missive
//! client: Olm sessions with other devices (pairwise, for room keys) and
//! Megolm sessions per conversation (one ratchet per sender, one ciphertext
//! per message for all members), on vodozemac. No I/O: the caller fetches
//! keys from the server, sends what this returns, and saves
//! [`Vault::to_json`] somewhere only the user can read.
//!
//! What travels, all printable ASCII (the server checks no more):
//! - a conversation message: `{"v":1,"session_id":"…","ciphertext":"…"}`,
//!   the Megolm ciphertext of the client's own JSON content;
//! - a to-device room key: `{"v":1,"sender_key":"…","sender_ed25519":"…",
//!   "sender_signature":"…","type":0|1,"body":"…"}` (the signature is the
//!   sending device's Ed25519 key over `sender_key`), the Olm ciphertext of `{"type":"room_key","session_id","session_key",
//!   "sender","sender_device","recipient","recipient_device"}`.
//!
//! A one-time key's `signature` is its device's Ed25519 signature over
//! the key's base64 text; a session is opened only with a key whose
//! signature holds.

mod attachment;
mod forward;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use vodozemac::megolm::{
    GroupSession, GroupSessionPickle, InboundGroupSession, InboundGroupSessionPickle,
    MegolmMessage, SessionConfig as MegolmConfig, SessionKey,
};
use vodozemac::olm::{
    Account, AccountPickle, OlmMessage, Session, SessionConfig as OlmConfig, SessionPickle,
};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};

pub use attachment::{FileError, FileKey, SealedFile, SharedFile, open_file, seal_file};
pub use verify::{EMOJI, ShortCode, Step, Verification, VerifyError, VerifyMessage};

/// A Megolm session is replaced after this many messages, as Matrix does,
/// so one leaked session key opens a bounded stretch of a conversation.
const MESSAGES_PER_SESSION: u32 = 100;

/// A device's public identity keys, as the key directory lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub curve25519: String,
    pub ed25519: String,
}

/// A signed one-time key, as uploaded and claimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimeKey {
    pub key_id: String,
    pub key: String,
    pub signature: String,
}

/// Another device a conversation's messages are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub user: String,
    pub device_id: i64,
    pub identity: Identity,
}

/// A to-device message to send: the room key for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub user: String,
    pub device_id: i64,
    pub body: String,
}

/// What encrypting one message produced: the ciphertext to send into the
/// conversation, and the room-key shares to send (as `to_device`) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: String,
    pub shares: Vec<Share>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum E2eeError {
    /// A key or signature that does not parse or verify.
    #[error("bad key: {0}")]
    BadKey(String),
    /// Recipients with no Olm session yet: claim their keys first
    /// ([`Vault::start_session`]).
    #[error("no session with these devices yet: {0:?}")]
    NoSession(Vec<(String, i64)>),
    /// A to-device message that is not a room key for this device from its
    /// sender, or that does not decrypt.
    #[error("unusable to-device message: {0}")]
    BadShare(String),
    #[error("corrupt saved keys: {0}")]
    Corrupt(String),
}

/// Why a conversation message could not be read; a client shows which,
/// never the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// No room key for its session (yet): it may still arrive.
    #[error("no key for this message yet")]
    NoKey,
    /// The ciphertext was altered, or was not made with the key its
    /// session claims: rejected.
    #[error("the message was tampered with and is rejected")]
    Tampered,
    /// A session shared by one device, used by another or in another
    /// conversation: rejected.
    #[error("the message's key belongs to another sender or conversation")]
    WrongSender,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u8,
    session_id: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct ShareEnvelope {
    v: u8,
    sender_key: String,
    /// The sending device's Ed25519 key, and its signature over
    /// `sender_key`: binds the Olm session to the key users verify.
    sender_ed25519: String,
    sender_signature: String,
    #[serde(rename = "type")]
    kind: usize,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct RoomKey {
    #[serde(rename = "type")]
    kind: String,
    session_id: String,
    session_key: String,
    sender: String,
    sender_device: i64,
    recipient: String,
    recipient_device: i64,
}

#[derive(Serialize, Deserialize)]
struct Outbound {
    session: GroupSessionPickle,
    /// The devices this session's key went to.
    shared_with: BTreeSet<(String, i64)>,
    sent: u32,
}

#[derive(Serialize, Deserialize)]
struct Inbound {
    session: InboundGroupSessionPickle,
    sender: String,
    sender_device: i64,
    #[serde(default)]
    sender_ed25519: String,
    /// Pinned on first use: the conversation the session's messages are in.
    conversation: Option<i64>,
}

/// Everything a device keeps, as saved.
#[derive(Serialize, Deserialize)]
struct Saved {
    user: String,
    device_id: i64,
    account: AccountPickle,
    /// Olm sessions by the other device's Curve25519 key.
    olm: BTreeMap<String, Vec<SessionPickle>>,
    outbound: BTreeMap<i64, Outbound>,
    inbound: BTreeMap<String, Inbound>,
    /// Devices whose Ed25519 key the user verified: user → device → key.
    #[serde(default)]
    verified: BTreeMap<String, BTreeMap<i64, String>>,
}

/// One device's keys and sessions.
pub struct Vault {
    user: String,
    device_id: i64,
    account: Account,
    olm: HashMap<String, Vec<Session>>,
    outbound: HashMap<i64, OutboundSession>,
    inbound: HashMap<String, InboundSession>,
    verified: BTreeMap<String, BTreeMap<i64, String>>,
}

/// This device's Megolm session in one conversation.
struct OutboundSession {
    session: GroupSession,
    /// The devices its key went to.
    shared_with: BTreeSet<(String, i64)>,
    sent: u32,
}

/// Another device's (or this one's) Megolm session, from a room key.
struct InboundSession {
    session: InboundGroupSession,
    sender: String,
    sender_device: i64,
    /// The Ed25519 key that signed the Olm session its key came through.
    sender_ed25519: String,
    /// Pinned on first use: the conversation its messages are in.
    conversation: Option<i64>,
}

fn curve(key: &str) -> Result<Curve25519PublicKey, E2eeError> {
    Curve25519PublicKey::from_base64(key).map_err(|err| E2eeError::BadKey(err.to_string()))
}

impl Vault {
    /// New keys for the device `device_id` of `user`.
    pub fn new(user: &str, device_id: i64) -> Self {
        Self {
            user: user.to_owned(),
            device_id,
            account: Account::new(),
            olm: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            verified: BTreeMap::new(),
        }
    }

    pub fn identity(&self) -> Identity {
        let keys = self.account.identity_keys();
        Identity {
            curve25519: keys.curve25519.to_base64(),
            ed25519: keys.ed25519.to_base64(),
        }
    }

    /// `count` new signed one-time keys to upload; call
    /// [`mark_published`](Self::mark_published) once the server has them.
    pub fn new_one_time_keys(&mut self, count: usize) -> Vec<OneTimeKey> {
        self.account.generate_one_time_keys(count);
        let mut keys: Vec<OneTimeKey> = self
            .account
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| {
                let key = key.to_base64();
                OneTimeKey {
                    key_id: id.to_base64(),
                    signature: self.account.sign(key.as_bytes()).to_base64(),
                    key,
                }
            })
            .collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        keys
    }

    pub fn mark_published(&mut self) {
        self.account.mark_keys_as_published();
    }

    /// The devices among `devices` this one has no Olm session with.
    pub fn without_session(&self, devices: &[Device]) -> Vec<(String, i64)> {
        devices
            .iter()
            .filter(|device| !self.olm.contains_key(&device.identity.curve25519))
            .map(|device| (device.user.clone(), device.device_id))
            .collect()
    }

    /// Opens an Olm session with a device from a one-time key claimed for
    /// it, after checking the key's signature against the device's
    /// Ed25519 identity.
    pub fn start_session(
        &mut self,
        identity: &Identity,
        one_time_key: &OneTimeKey,
    ) -> Result<(), E2eeError> {
        let signer = Ed25519PublicKey::from_base64(&identity.ed25519)
            .map_err(|err| E2eeError::BadKey(err.to_string()))?;
        let signature = Ed25519Signature::from_base64(&one_time_key.signature)
            .map_err(|err| E2eeError::BadKey(err.to_string()))?;
        signer
            .verify(one_time_key.key.as_bytes(), &signature)
            .map_err(|_| {
                E2eeError::BadKey("the one-time key's signature does not verify".into())
            })?;
        let session = self
            .account
            .create_outbound_session(
                OlmConfig::version_1(),
                curve(&identity.curve25519)?,
                curve(&one_time_key.key)?,
            )
            .map_err(|err| E2eeError::BadKey(err.to_string()))?;
        self.olm
            .entry(identity.curve25519.clone())
            .or_default()
            .insert(0, session);
        Ok(())
    }

    /// Encrypts `plaintext` for `conversation`, whose other member devices
    /// are `recipients` (this device's own other devices included). A new
    /// Megolm session replaces the current one when a device it was shared
    /// with is no longer a recipient (a member left or was removed, a
    /// device revoked) or after 100 messages; its key is shared with every
    /// recipient that lacks it. Every recipient needs an Olm session.
    pub fn encrypt(
        &mut self,
        conversation: i64,
        recipients: &[Device],
        plaintext: &str,
    ) -> Result<Sealed, E2eeError> {
        let missing = self.without_session(recipients);
        if !missing.is_empty() {
            return Err(E2eeError::NoSession(missing));
        }
        self.rotate_if_stale(conversation, recipients);
        let (session_id, shares) = self.share_key(conversation, recipients)?;
        let Some(outbound) = self.outbound.get_mut(&conversation) else {
            return Err(E2eeError::Corrupt("no outbound session".into()));
        };
        let envelope = Envelope {
            v: 1,
            session_id,
            ciphertext: outbound.session.encrypt(plaintext).to_base64(),
        };
        outbound.sent += 1;
        Ok(Sealed {
            ciphertext: serde_json::to_string(&envelope)
                .map_err(|err| E2eeError::Corrupt(err.to_string()))?,
            shares,
        })
    }

    /// Starts a new Megolm session for `conversation` when there is none,
    /// it has sent its 100 messages, or a device it was shared with is no
    /// longer among `recipients` (who must not read what follows).
    fn rotate_if_stale(&mut self, conversation: i64, recipients: &[Device]) {
        let current: BTreeSet<(String, i64)> = recipients
            .iter()
            .map(|device| (device.user.clone(), device.device_id))
            .collect();
        let stale = self.outbound.get(&conversation).is_none_or(|outbound| {
            outbound.sent >= MESSAGES_PER_SESSION || !outbound.shared_with.is_subset(&current)
        });
        if stale {
            let session = GroupSession::new(MegolmConfig::version_1());
            // This device reads its own messages back (history, its other
            // sessions) with the same key.
            let own = InboundGroupSession::new(&session.session_key(), MegolmConfig::version_1());
            self.inbound.insert(
                session.session_id(),
                InboundSession {
                    session: own,
                    sender: self.user.clone(),
                    sender_device: self.device_id,
                    sender_ed25519: self.identity().ed25519,
                    conversation: Some(conversation),
                },
            );
            self.outbound.insert(
                conversation,
                OutboundSession {
                    session,
                    shared_with: BTreeSet::new(),
                    sent: 0,
                },
            );
        }
    }

    /// Seals the current session's key for every recipient that does not
    /// hold it yet; returns the session's id and those shares.
    fn share_key(
        &mut self,
        conversation: i64,
        recipients: &[Device],
    ) -> Result<(String, Vec<Share>), E2eeError> {
        let Some(outbound) = self.outbound.get(&conversation) else {
            return Err(E2eeError::Corrupt("no outbound session".into()));
        };
        let (session_id, session_key) = (
            outbound.session.session_id(),
            outbound.session.session_key().to_base64(),
        );
        let lacking: Vec<&Device> = recipients
            .iter()
            .filter(|device| {
                !outbound
                    .shared_with
                    .contains(&(device.user.clone(), device.device_id))
            })
            .collect();
        let mut shares = Vec::new();
        for device in &lacking {
            let room_key = RoomKey {
                kind: "room_key".into(),
                session_id: session_id.clone(),
                session_key: session_key.clone(),
                sender: self.user.clone(),
                sender_device: self.device_id,
                recipient: device.user.clone(),
                recipient_device: device.device_id,
            };
            let text = serde_json::to_string(&room_key)
                .map_err(|err| E2eeError::Corrupt(err.to_string()))?;
            shares.push(self.seal_share(device, &text)?);
        }
        Ok((session_id, shares))
    }

    /// The shares `encrypt` returned for `conversation` were delivered (the
    /// server answered `ok` to their `to_device`): those devices hold the
    /// key. Until then every `encrypt` shares it again, so a share lost
    /// with its connection is sent again with the next try.
    pub fn mark_shared(&mut self, conversation: i64, shares: &[Share]) {
        if let Some(outbound) = self.outbound.get_mut(&conversation) {
            outbound.shared_with.extend(
                shares
                    .iter()
                    .map(|share| (share.user.clone(), share.device_id)),
            );
        }
    }

    /// A to-device message carrying `plaintext` to `device` over its Olm
    /// session, with this device's Ed25519 signature over the session's
    /// key.
    fn seal_share(&mut self, device: &Device, plaintext: &str) -> Result<Share, E2eeError> {
        let Identity {
            curve25519: sender_key,
            ed25519: sender_ed25519,
        } = self.identity();
        let sender_signature = self.account.sign(sender_key.as_bytes()).to_base64();
        let olm = self
            .olm
            .get_mut(&device.identity.curve25519)
            .and_then(|sessions| sessions.first_mut())
            .ok_or_else(|| E2eeError::NoSession(vec![(device.user.clone(), device.device_id)]))?;
        let message = olm
            .encrypt(plaintext)
            .map_err(|err| E2eeError::BadShare(err.to_string()))?;
        let (kind, bytes) = message.to_parts();
        let body = ShareEnvelope {
            v: 1,
            sender_key,
            sender_ed25519,
            sender_signature,
            kind,
            body: vodozemac::base64_encode(bytes),
        };
        Ok(Share {
            user: device.user.clone(),
            device_id: device.device_id,
            body: serde_json::to_string(&body)
                .map_err(|err| E2eeError::Corrupt(err.to_string()))?,
        })
    }

    /// Takes a to-device message `from` the device `from_device`: a room
    /// key for this device, kept for the conversation messages it opens.
    pub fn receive_share(
        &mut self,
        from: &str,
        from_device: i64,
        body: &str,
    ) -> Result<(), E2eeError> {
        let bad = |why: &str| E2eeError::BadShare(why.to_owned());
        let envelope: ShareEnvelope =
            serde_json::from_str(body).map_err(|_| bad("not a share envelope"))?;
        let signed_by = Ed25519PublicKey::from_base64(&envelope.sender_ed25519)
            .map_err(|_| bad("not an Ed25519 key"))?;
        let signature = Ed25519Signature::from_base64(&envelope.sender_signature)
            .map_err(|_| bad("not a signature"))?;
        signed_by
            .verify(envelope.sender_key.as_bytes(), &signature)
            .map_err(|_| bad("its session key is not signed by its device's key"))?;
        let bytes = vodozemac::base64_decode(&envelope.body).map_err(|_| bad("not base64"))?;
        let message =
            OlmMessage::from_parts(envelope.kind, &bytes).map_err(|_| bad("not an Olm message"))?;
        let plaintext = self.olm_decrypt(&envelope.sender_key, &message)?;
        if let Ok(forwarded) = serde_json::from_slice::<forward::ForwardedKeys>(&plaintext)
            && forwarded.kind == forward::FORWARDED
        {
            return self.take_forwarded((from, from_device, &envelope.sender_ed25519), forwarded);
        }
        let room_key: RoomKey =
            serde_json::from_slice(&plaintext).map_err(|_| bad("not a room key"))?;
        if room_key.kind != "room_key"
            || room_key.sender != from
            || room_key.sender_device != from_device
            || room_key.recipient != self.user
            || room_key.recipient_device != self.device_id
        {
            return Err(bad("a room key not from its sender or not for this device"));
        }
        let key =
            SessionKey::from_base64(&room_key.session_key).map_err(|_| bad("not a session key"))?;
        let session = InboundGroupSession::new(&key, MegolmConfig::version_1());
        if session.session_id() != room_key.session_id {
            return Err(bad("the session id does not match its key"));
        }
        // A key already held is kept as it was (its pinned conversation
        // with it): a replay changes nothing.
        self.inbound
            .entry(room_key.session_id)
            .or_insert(InboundSession {
                session,
                sender: from.to_owned(),
                sender_device: from_device,
                sender_ed25519: envelope.sender_ed25519,
                conversation: None,
            });
        Ok(())
    }

    fn olm_decrypt(
        &mut self,
        sender_key: &str,
        message: &OlmMessage,
    ) -> Result<Vec<u8>, E2eeError> {
        let bad = |why: String| E2eeError::BadShare(why);
        if let Some(sessions) = self.olm.get_mut(sender_key) {
            for session in sessions.iter_mut() {
                if let Ok(plaintext) = session.decrypt(message) {
                    return Ok(plaintext);
                }
            }
        }
        let OlmMessage::PreKey(pre_key) = message else {
            return Err(bad("no session decrypts it".into()));
        };
        let created = self
            .account
            .create_inbound_session(OlmConfig::version_1(), curve(sender_key)?, pre_key)
            .map_err(|err| bad(err.to_string()))?;
        self.olm
            .entry(sender_key.to_owned())
            .or_default()
            .insert(0, created.session);
        Ok(created.plaintext)
    }

    /// Decrypts a conversation message sent by `from`'s device
    /// `from_device` in `conversation`.
    pub fn decrypt(
        &mut self,
        conversation: i64,
        from: &str,
        from_device: i64,
        ciphertext: &str,
    ) -> Result<String, DecryptError> {
        let envelope: Envelope =
            serde_json::from_str(ciphertext).map_err(|_| DecryptError::Tampered)?;
        let message =
            MegolmMessage::from_base64(&envelope.ciphertext).map_err(|_| DecryptError::Tampered)?;
        let Some(inbound) = self.inbound.get_mut(&envelope.session_id) else {
            return Err(DecryptError::NoKey);
        };
        if inbound.sender != from || inbound.sender_device != from_device {
            return Err(DecryptError::WrongSender);
        }
        // A device the user verified speaks only through its verified key:
        // a key shared through anyone else's session is not its.
        let verified = self
            .verified
            .get(from)
            .and_then(|devices| devices.get(&from_device));
        if verified.is_some_and(|key| *key != inbound.sender_ed25519) {
            return Err(DecryptError::WrongSender);
        }
        if inbound
            .conversation
            .is_some_and(|pinned| pinned != conversation)
        {
            return Err(DecryptError::WrongSender);
        }
        let decrypted = inbound
            .session
            .decrypt(&message)
            .map_err(|_| DecryptError::Tampered)?;
        inbound.conversation = Some(conversation);
        String::from_utf8(decrypted.plaintext).map_err(|_| DecryptError::Tampered)
    }

    /// Moves an outbound session made before its conversation had an id
    /// (a first message to a user) under the id the server gave it.
    pub fn rename_conversation(&mut self, from: i64, to: i64) {
        if let Some(outbound) = self.outbound.remove(&from) {
            let session_id = outbound.session.session_id();
            if let Some(inbound) = self.inbound.get_mut(&session_id) {
                inbound.conversation = Some(to);
            }
            self.outbound.insert(to, outbound);
        }
    }

    /// The state to save (contains private keys: keep it from everyone
    /// but the user).
    pub fn to_json(&self) -> Result<String, E2eeError> {
        let saved = Saved {
            user: self.user.clone(),
            device_id: self.device_id,
            account: self.account.pickle(),
            olm: self
                .olm
                .iter()
                .map(|(key, sessions)| {
                    (key.clone(), sessions.iter().map(Session::pickle).collect())
                })
                .collect(),
            outbound: self
                .outbound
                .iter()
                .map(|(conversation, outbound)| {
                    (
                        *conversation,
                        Outbound {
                            session: outbound.session.pickle(),
                            shared_with: outbound.shared_with.clone(),
                            sent: outbound.sent,
                        },
                    )
                })
                .collect(),
            inbound: self
                .inbound
                .iter()
                .map(|(id, inbound)| {
                    (
                        id.clone(),
                        Inbound {
                            session: inbound.session.pickle(),
                            sender: inbound.sender.clone(),
                            sender_device: inbound.sender_device,
                            sender_ed25519: inbound.sender_ed25519.clone(),
                            conversation: inbound.conversation,
                        },
                    )
                })
                .collect(),
            verified: self.verified.clone(),
        };
        // Never an empty file in place of the keys: a failure is told.
        serde_json::to_string(&saved).map_err(|err| E2eeError::Corrupt(err.to_string()))
    }

    pub fn from_json(text: &str) -> Result<Self, E2eeError> {
        let saved: Saved =
            serde_json::from_str(text).map_err(|err| E2eeError::Corrupt(err.to_string()))?;
        Ok(Self {
            user: saved.user,
            device_id: saved.device_id,
            account: Account::from_pickle(saved.account),
            olm: saved
                .olm
                .into_iter()
                .map(|(key, sessions)| {
                    (
                        key,
                        sessions.into_iter().map(Session::from_pickle).collect(),
                    )
                })
                .collect(),
            outbound: saved
                .outbound
                .into_iter()
                .map(|(conversation, outbound)| {
                    (
                        conversation,
                        OutboundSession {
                            session: GroupSession::from_pickle(outbound.session),
                            shared_with: outbound.shared_with,
                            sent: outbound.sent,
                        },
                    )
                })
                .collect(),
            inbound: saved
                .inbound
                .into_iter()
                .map(|(id, inbound)| {
                    (
                        id,
                        InboundSession {
                            session: InboundGroupSession::from_pickle(inbound.session),
                            sender: inbound.sender,
                            sender_device: inbound.sender_device,
                            sender_ed25519: inbound.sender_ed25519,
                            conversation: inbound.conversation,
                        },
                    )
                })
                .collect(),
            verified: saved.verified,
        })
    }
}

#[cfg(test)]
mod tests;
