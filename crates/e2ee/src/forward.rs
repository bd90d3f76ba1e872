//! Room keys for a new device of the same account: once the user verified
//! it, another device of theirs forwards the Megolm sessions it holds
//! (each exported at its first known index) over Olm, so the new device
//! reads the history its account may read. Only to a verified device of
//! the same user, and only taken from one: a server that added a device to
//! an account must not collect its keys, nor slip keys in through one.
//!
//! On the wire it is a to-device share like a room key, whose plaintext is
//! `{"type":"forwarded_room_keys","recipient","recipient_device","keys":[…]}`.

use serde::{Deserialize, Serialize};
use vodozemac::megolm::{ExportedSessionKey, InboundGroupSession, SessionConfig as MegolmConfig};

use crate::{Device, E2eeError, InboundSession, Share, Vault};

/// Sessions per to-device message: each is about 400 bytes of JSON, and a
/// to-device body may hold 64 KiB.
const KEYS_PER_SHARE: usize = 60;

#[derive(Serialize, Deserialize)]
pub(crate) struct ForwardedKeys {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) recipient: String,
    pub(crate) recipient_device: i64,
    pub(crate) keys: Vec<ForwardedKey>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ForwardedKey {
    session_id: String,
    session_key: String,
    sender: String,
    sender_device: i64,
    sender_ed25519: String,
    conversation: Option<i64>,
}

pub(crate) const FORWARDED: &str = "forwarded_room_keys";

impl Vault {
    /// How many Megolm sessions (room keys) this device holds.
    pub fn room_key_count(&self) -> usize {
        self.inbound.len()
    }

    /// The shares that hand every Megolm session this device holds to
    /// `device`, another device of this user that the user verified.
    pub fn forward_keys(&mut self, device: &Device) -> Result<Vec<Share>, E2eeError> {
        if device.user != self.user
            || device.device_id == self.device_id
            || !self.is_verified(&device.user, device.device_id, &device.identity.ed25519)
        {
            return Err(E2eeError::BadKey(
                "keys go only to a verified device of the same user".into(),
            ));
        }
        let keys: Vec<ForwardedKey> = self
            .inbound
            .iter()
            .map(|(session_id, inbound)| ForwardedKey {
                session_id: session_id.clone(),
                session_key: inbound.session.export_at_first_known_index().to_base64(),
                sender: inbound.sender.clone(),
                sender_device: inbound.sender_device,
                sender_ed25519: inbound.sender_ed25519.clone(),
                conversation: inbound.conversation,
            })
            .collect();
        let mut shares = Vec::new();
        for chunk in keys.chunks(KEYS_PER_SHARE) {
            let plaintext = serde_json::to_string(&ForwardedKeys {
                kind: FORWARDED.into(),
                recipient: device.user.clone(),
                recipient_device: device.device_id,
                keys: chunk
                    .iter()
                    .map(|key| ForwardedKey {
                        session_id: key.session_id.clone(),
                        session_key: key.session_key.clone(),
                        sender: key.sender.clone(),
                        sender_device: key.sender_device,
                        sender_ed25519: key.sender_ed25519.clone(),
                        conversation: key.conversation,
                    })
                    .collect(),
            })
            .map_err(|err| E2eeError::Corrupt(err.to_string()))?;
            shares.push(self.seal_share(device, &plaintext)?);
        }
        Ok(shares)
    }

    /// Takes forwarded keys from `from`'s device `from_device`, whose share
    /// was signed by `signed_by`: only from a device of this user that the
    /// user verified with that key. Sessions already held stay as they are.
    pub(crate) fn take_forwarded(
        &mut self,
        (from, from_device, signed_by): (&str, i64, &str),
        forwarded: ForwardedKeys,
    ) -> Result<(), E2eeError> {
        let bad = |why: &str| E2eeError::BadShare(why.to_owned());
        if from != self.user || !self.is_verified(from, from_device, signed_by) {
            return Err(bad(
                "forwarded keys from a device this user has not verified",
            ));
        }
        if forwarded.recipient != self.user || forwarded.recipient_device != self.device_id {
            return Err(bad("forwarded keys for another device"));
        }
        for key in forwarded.keys {
            let exported = ExportedSessionKey::from_base64(&key.session_key)
                .map_err(|_| bad("not a session key"))?;
            let session = InboundGroupSession::import(&exported, MegolmConfig::version_1());
            if session.session_id() != key.session_id {
                return Err(bad("a forwarded session id does not match its key"));
            }
            self.inbound
                .entry(key.session_id)
                .or_insert(InboundSession {
                    session,
                    sender: key.sender,
                    sender_device: key.sender_device,
                    sender_ed25519: key.sender_ed25519,
                    conversation: key.conversation,
                });
        }
        Ok(())
    }
}
