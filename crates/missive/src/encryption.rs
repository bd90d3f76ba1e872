//! The CLI's end-to-end encryption on `missive-e2ee`: the device's keys
//! live beside its profile (`profiles/<name>.keys.json`, mode 0600),
//! published at login; an encrypted send claims keys for devices it has no
//! session with, shares the conversation's room key with every member
//! device that lacks it (`to_device`), then sends the ciphertext; `listen`
//! takes room keys and prints messages decrypted.
//!
//! A message's plaintext is the JSON `{"text": "…"}`.

use missive_client::{Api, ClientError, Connection};
use missive_e2ee::{DecryptError, Device, Identity, OneTimeKey, Vault};
use missive_proto::rest::{IdentityKeysBody, KeyUploadRequest, OneTimeKeyBody};
use missive_proto::{ClientFrame, ServerFrame, ToDeviceOut};

use crate::profile::{self, Profile};

/// One-time keys a device publishes at login (the server keeps at most
/// 200; a claim that leaves fewer than 20 asks for more).
const ONE_TIME_KEYS_AT_LOGIN: usize = 50;

/// The device's keys; new ones (not yet published) when it has none.
pub fn load(profile_name: &str, saved: &Profile) -> Result<Vault, String> {
    match profile::load_keys(profile_name) {
        Ok(Some(text)) => Vault::from_json(&text).map_err(|err| err.to_string()),
        Ok(None) => Ok(Vault::new(&saved.username, saved.device_id)),
        Err(err) => Err(format!("cannot read the device's keys: {err}")),
    }
}

pub fn save(profile_name: &str, vault: &Vault) -> Result<(), String> {
    let text = vault
        .to_json()
        .map_err(|err| format!("cannot save the device's keys: {err}"))?;
    profile::save_keys(profile_name, &text)
        .map_err(|err| format!("cannot save the device's keys: {err}"))
}

/// Publishes the device's identity and a stock of one-time keys.
pub async fn publish(api: &Api, token: &str, vault: &mut Vault) -> Result<(), ClientError> {
    let Identity {
        curve25519,
        ed25519,
    } = vault.identity();
    let request = KeyUploadRequest {
        identity: Some(IdentityKeysBody {
            curve25519,
            ed25519,
        }),
        one_time_keys: vault
            .new_one_time_keys(ONE_TIME_KEYS_AT_LOGIN)
            .into_iter()
            .map(|key| OneTimeKeyBody {
                key_id: key.key_id,
                key: key.key,
                signature: key.signature,
            })
            .collect(),
    };
    api.upload_keys(token, &request).await?;
    vault.mark_published();
    Ok(())
}

/// Every device of `members` that published keys, but this one.
pub async fn member_devices(
    api: &Api,
    saved: &Profile,
    members: &[String],
) -> Result<Vec<Device>, ClientError> {
    let mut devices = Vec::new();
    for member in members {
        let listed = api.user_keys(&saved.token, member).await?;
        devices.extend(
            listed
                .devices
                .into_iter()
                .filter(|device| {
                    !(member == &saved.username && device.device_id == saved.device_id)
                })
                .map(|device| Device {
                    user: member.clone(),
                    device_id: device.device_id,
                    identity: Identity {
                        curve25519: device.curve25519,
                        ed25519: device.ed25519,
                    },
                }),
        );
    }
    Ok(devices)
}

/// Opens Olm sessions with the devices among `devices` that have none,
/// claiming one-time keys per user. A device with no key left, or whose
/// key does not verify, is left out of `devices` (it cannot read what is
/// sent now), with a warning.
pub async fn open_sessions(
    api: &Api,
    saved: &Profile,
    vault: &mut Vault,
    devices: &mut Vec<Device>,
) -> Result<(), ClientError> {
    let missing = vault.without_session(devices);
    let mut users: Vec<&String> = missing.iter().map(|(user, _)| user).collect();
    users.sort();
    users.dedup();
    for user in users {
        let claim = api.claim_keys(&saved.token, user).await?;
        for claimed in claim.devices {
            let wanted = missing
                .iter()
                .any(|(u, device)| u == user && *device == claimed.device_id);
            let Some(key) = claimed.one_time_key.filter(|_| wanted) else {
                continue;
            };
            let identity = Identity {
                curve25519: claimed.curve25519,
                ed25519: claimed.ed25519,
            };
            let key = OneTimeKey {
                key_id: key.key_id,
                key: key.key,
                signature: key.signature,
            };
            if let Err(err) = vault.start_session(&identity, &key) {
                eprintln!("warning: {user}'s device {}: {err}", claimed.device_id);
            }
        }
    }
    let still = vault.without_session(devices);
    for (user, device) in &still {
        eprintln!(
            "warning: {user}'s device {device} has no keys left; it will not read this message"
        );
    }
    devices.retain(|device| !still.contains(&(device.user.clone(), device.device_id)));
    Ok(())
}

/// Sends the room-key shares, if any, as one `to_device` frame.
pub async fn send_shares(
    connection: &mut Connection,
    shares: Vec<missive_e2ee::Share>,
) -> Result<(), ClientError> {
    if shares.is_empty() {
        return Ok(());
    }
    let messages = shares
        .into_iter()
        .map(|share| ToDeviceOut {
            user: share.user,
            device_id: share.device_id,
            body: share.body,
        })
        .collect();
    connection
        .call(|id| ClientFrame::ToDevice { id, messages })
        .await
        .map(drop)
}

/// A `message` frame as `listen` prints it: an encrypted one with its
/// decrypted text and `"decrypted": true`, or with empty text and
/// `"decrypt_error"` (`no_key`, `tampered`, `wrong_sender`), never the
/// ciphertext. `None` while the key may still come.
pub fn readable(
    vault: &mut Vault,
    frame: &ServerFrame,
    final_try: bool,
) -> Option<serde_json::Value> {
    let mut value = serde_json::to_value(frame).ok()?;
    let ServerFrame::Message {
        kind: missive_proto::MessageKind::Encrypted,
        conversation,
        from,
        from_device,
        text,
        deleted: false,
        ..
    } = frame
    else {
        return Some(value);
    };
    match vault.decrypt(*conversation, from, *from_device, text) {
        Ok(plaintext) => {
            let parsed: serde_json::Value = serde_json::from_str(&plaintext).unwrap_or_default();
            value["text"] = parsed["text"].as_str().unwrap_or_default().into();
            value["decrypted"] = true.into();
        }
        Err(DecryptError::NoKey) if !final_try => return None,
        Err(err) => {
            value["text"] = "".into();
            value["decrypt_error"] = match err {
                DecryptError::NoKey => "no_key",
                DecryptError::Tampered => "tampered",
                DecryptError::WrongSender => "wrong_sender",
            }
            .into();
        }
    }
    Some(value)
}

/// `listen`'s side of decryption: the device's keys (if it has any), and
/// the stored events held back until a room key they need arrives, in
/// order per conversation.
pub struct Reader {
    profile: String,
    vault: Option<Vault>,
    waiting: Vec<ServerFrame>,
    changed: bool,
}

impl Reader {
    pub fn open(profile_name: &str, saved: &Profile) -> Self {
        let vault = match profile::load_keys(profile_name) {
            Ok(Some(_)) => load(profile_name, saved)
                .map_err(|err| eprintln!("warning: {err}; encrypted messages stay unread"))
                .ok(),
            _ => None,
        };
        Self {
            profile: profile_name.to_owned(),
            vault,
            waiting: Vec::new(),
            changed: false,
        }
    }

    /// A stored event to print: it and any held-back events it no longer
    /// waits behind, ready in order (nothing while it waits for a key).
    pub fn offer(&mut self, frame: ServerFrame) -> Vec<(ServerFrame, serde_json::Value)> {
        self.waiting.push(frame);
        self.release(false)
    }

    /// Takes a to-device room key; returns the events it made readable.
    pub fn take_share(
        &mut self,
        from: &str,
        from_device: i64,
        body: &str,
    ) -> Vec<(ServerFrame, serde_json::Value)> {
        let Some(vault) = self.vault.as_mut() else {
            eprintln!(
                "warning: a room key from {from}'s device {from_device}, but this device has no keys"
            );
            return Vec::new();
        };
        match vault.receive_share(from, from_device, body) {
            Ok(()) => self.changed = true,
            Err(err) => {
                eprintln!("warning: a to-device message from {from}'s device {from_device}: {err}")
            }
        }
        self.release(false)
    }

    /// Everything still held, as undecryptable.
    pub fn give_up(&mut self) -> Vec<(ServerFrame, serde_json::Value)> {
        self.release(true)
    }

    fn release(&mut self, final_try: bool) -> Vec<(ServerFrame, serde_json::Value)> {
        let mut ready = Vec::new();
        let mut blocked: Vec<i64> = Vec::new();
        let mut kept = Vec::new();
        for frame in std::mem::take(&mut self.waiting) {
            let conversation = frame.ack_point().map(|(conversation, _)| conversation);
            if conversation.is_some_and(|c| blocked.contains(&c)) {
                kept.push(frame);
                continue;
            }
            let shown = match self.vault.as_mut() {
                Some(vault) => readable(vault, &frame, final_try),
                None => readable_without_keys(&frame),
            };
            match shown {
                Some(shown) => {
                    self.changed = true;
                    ready.push((frame, shown));
                }
                None => {
                    blocked.extend(conversation);
                    kept.push(frame);
                }
            }
        }
        self.waiting = kept;
        ready
    }

    /// Saves the keys if a room key or a first use changed them.
    pub fn save(&mut self) {
        if let (true, Some(vault)) = (self.changed, &self.vault)
            && let Err(err) = save(&self.profile, vault)
        {
            eprintln!("warning: {err}");
        }
        self.changed = false;
    }
}

/// A frame as a device with no keys shows it: an encrypted message with
/// empty text and `"decrypt_error": "no_key"`.
fn readable_without_keys(frame: &ServerFrame) -> Option<serde_json::Value> {
    let mut value = serde_json::to_value(frame).ok()?;
    if let ServerFrame::Message {
        kind: missive_proto::MessageKind::Encrypted,
        deleted: false,
        ..
    } = frame
    {
        value["text"] = "".into();
        value["decrypt_error"] = "no_key".into();
    }
    Some(value)
}
