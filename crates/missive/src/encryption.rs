//! The CLI's end-to-end encryption on `missive-e2ee`: the device's keys
//! live beside its profile (`profiles/<name>.keys.json`, mode 0600),
//! published at login; an encrypted send claims keys for devices it has no
//! session with, shares the conversation's room key with every member
//! device that lacks it (`to_device`), then sends the ciphertext; `listen`
//! takes room keys and prints messages decrypted.
//!
//! A message's plaintext is the JSON `{"text": "…"}`, with `"reply_to"`
//! and `"files"` (each attachment's id, name, type, size and key:
//! [`SharedFile`]) when it has them.

use missive_client::{Api, ClientError, Connection};
use missive_e2ee::{DecryptError, Device, Identity, OneTimeKey, SharedFile, Vault};
use missive_proto::rest::{IdentityKeysBody, KeyUploadRequest, MediaRef, OneTimeKeyBody};
use missive_proto::{ClientFrame, ServerFrame, ToDeviceOut};

use crate::file_keys::FileKeys;
use crate::profile::{self, Profile};

/// One-time keys a device publishes at login (the server keeps at most
/// 200; a claim that leaves fewer than 20 asks for more).
const ONE_TIME_KEYS_AT_LOGIN: usize = 50;

/// The device's keys; new ones (not yet published) when it has none.
pub(crate) fn load(profile_name: &str, saved: &Profile) -> Result<Vault, String> {
    match profile::load_keys(profile_name) {
        Ok(Some(text)) => Vault::from_json(&text).map_err(|err| err.to_string()),
        Ok(None) => Ok(Vault::new(&saved.username, saved.device_id)),
        Err(err) => Err(format!("cannot read the device's keys: {err}")),
    }
}

pub(crate) fn save(profile_name: &str, vault: &Vault) -> Result<(), String> {
    let text = vault
        .to_json()
        .map_err(|err| format!("cannot save the device's keys: {err}"))?;
    profile::save_keys(profile_name, &text)
        .map_err(|err| format!("cannot save the device's keys: {err}"))
}

/// Publishes the device's identity and a stock of one-time keys.
pub(crate) async fn publish(api: &Api, token: &str, vault: &mut Vault) -> Result<(), ClientError> {
    let Identity {
        curve25519,
        ed25519,
    } = vault.identity();
    let request = KeyUploadRequest {
        identity: Some(IdentityKeysBody {
            curve25519,
            ed25519,
        }),
        one_time_keys: one_time_key_bodies(vault),
    };
    api.upload_keys(token, &request).await?;
    vault.mark_published();
    Ok(())
}

/// Publishes more one-time keys, when the server said few are left.
pub(crate) async fn top_up(api: &Api, token: &str, vault: &mut Vault) -> Result<(), ClientError> {
    let request = KeyUploadRequest {
        identity: None,
        one_time_keys: one_time_key_bodies(vault),
    };
    api.upload_keys(token, &request).await?;
    vault.mark_published();
    Ok(())
}

fn one_time_key_bodies(vault: &mut Vault) -> Vec<OneTimeKeyBody> {
    vault
        .new_one_time_keys(ONE_TIME_KEYS_AT_LOGIN)
        .into_iter()
        .map(|key| OneTimeKeyBody {
            key_id: key.key_id,
            key: key.key,
            signature: key.signature,
        })
        .collect()
}

/// The profile's keys; a device that has none (logged in before it had
/// any) makes them, publishes them and saves them.
pub(crate) async fn load_or_publish(
    api: &Api,
    profile_name: &str,
    saved: &Profile,
) -> Result<Vault, String> {
    if profile::load_keys(profile_name).is_ok_and(|keys| keys.is_some()) {
        return load(profile_name, saved);
    }
    let mut vault = Vault::new(&saved.username, saved.device_id);
    publish(api, &saved.token, &mut vault)
        .await
        .map_err(|err| format!("cannot publish the device's keys: {err}"))?;
    save(profile_name, &vault)?;
    Ok(vault)
}

/// Every device of `members` that published keys, but this one.
pub(crate) async fn member_devices(
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
pub(crate) async fn open_sessions(
    api: &Api,
    saved: &Profile,
    vault: &mut Vault,
    devices: &mut Vec<Device>,
    warn: &(dyn Fn(String) + Sync),
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
                warn(format!("{user}'s device {}: {err}", claimed.device_id));
            }
        }
    }
    let still = vault.without_session(devices);
    for (user, device) in &still {
        warn(format!(
            "{user}'s device {device} has no keys left; it will not read this message"
        ));
    }
    devices.retain(|device| !still.contains(&(device.user.clone(), device.device_id)));
    Ok(())
}

/// Sends the room-key shares, if any, as one `to_device` frame.
pub(crate) async fn send_shares(
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

/// What a stored event reads as on this device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Opened {
    /// Not an encrypted message (or a deleted one): as it came.
    Plain,
    /// Decrypted: the sender's content.
    Decrypted {
        text: String,
        reply_to: Option<String>,
        files: Vec<SharedFile>,
    },
    /// Undecryptable, for good: shown as such, never as ciphertext.
    Failed(DecryptError),
}

/// The stable name of a decrypt failure, as `listen` prints it.
pub(crate) fn error_code(err: &DecryptError) -> &'static str {
    match err {
        DecryptError::NoKey => "no_key",
        DecryptError::Tampered => "tampered",
        DecryptError::WrongSender => "wrong_sender",
    }
}

/// Opens an encrypted message's `ciphertext` sent by `from`'s device
/// `from_device` into `conversation`. `None` while its key may still come
/// (`final_try` false and no key yet).
pub(crate) fn open_text(
    vault: Option<&mut Vault>,
    conversation: i64,
    from: &str,
    from_device: i64,
    ciphertext: &str,
    final_try: bool,
) -> Option<Opened> {
    let Some(vault) = vault else {
        return Some(Opened::Failed(DecryptError::NoKey));
    };
    match vault.decrypt(conversation, from, from_device, ciphertext) {
        Ok(plaintext) => {
            let content: serde_json::Value = serde_json::from_str(&plaintext).unwrap_or_default();
            Some(Opened::Decrypted {
                text: content["text"].as_str().unwrap_or_default().to_owned(),
                reply_to: content["reply_to"].as_str().map(str::to_owned),
                files: shared_files(&content["files"]),
            })
        }
        Err(DecryptError::NoKey) if !final_try => None,
        Err(err) => Some(Opened::Failed(err)),
    }
}

/// The attachments a decrypted content lists; an entry that is not one is
/// left out (the sender's bug, or a forgery: its file would not open).
fn shared_files(files: &serde_json::Value) -> Vec<SharedFile> {
    files
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|file| serde_json::from_value(file.clone()).ok())
        .take(MAX_FILES)
        .collect()
}

/// As many as a plain message carries (the server checks the upload ids).
const MAX_FILES: usize = 10;

/// Attachments as a plain message describes them, for display: the
/// sender's name, type and size, which the server cannot know.
pub(crate) fn media_refs(files: &[SharedFile]) -> Vec<MediaRef> {
    files
        .iter()
        .map(|file| MediaRef {
            media_id: file.media_id.clone(),
            content_type: file.content_type.clone(),
            size_bytes: file.size_bytes,
            width: None,
            height: None,
            thumbnail: false,
            filename: file.name.clone(),
        })
        .collect()
}

/// A stored event as this device reads it (see [`open_text`]).
pub(crate) fn open(
    vault: Option<&mut Vault>,
    frame: &ServerFrame,
    final_try: bool,
) -> Option<Opened> {
    match frame {
        ServerFrame::Message {
            kind: missive_proto::MessageKind::Encrypted,
            conversation,
            from,
            from_device,
            text,
            deleted: false,
            ..
        } => open_text(vault, *conversation, from, *from_device, text, final_try),
        _ => Some(Opened::Plain),
    }
}

/// A stored event as `listen` prints it: an encrypted one with its
/// decrypted text and `"decrypted": true`, or with empty text and
/// `"decrypt_error"` (`no_key`, `tampered`, `wrong_sender`), never the
/// ciphertext. Its `media` are the attachments as the sender described
/// them (name, type, size; `missive download` opens them).
pub(crate) fn printable(frame: &ServerFrame, opened: &Opened) -> serde_json::Value {
    let mut value = serde_json::to_value(frame).unwrap_or_default();
    mark_opened(&mut value, opened);
    value
}

/// A printed event (a frame or a history entry) rewritten as it opened.
pub(crate) fn mark_opened(value: &mut serde_json::Value, opened: &Opened) {
    match opened {
        Opened::Plain => {}
        Opened::Decrypted { text, files, .. } => {
            value["text"] = text.as_str().into();
            value["decrypted"] = true.into();
            if !files.is_empty() || value.get("media").is_some() {
                value["media"] = serde_json::to_value(media_refs(files)).unwrap_or_default();
            }
        }
        Opened::Failed(err) => {
            value["text"] = "".into();
            value["decrypt_error"] = error_code(err).into();
            if let Some(media) = value.get_mut("media") {
                *media = serde_json::Value::Array(Vec::new());
            }
        }
    }
}

/// Where warnings about keys go: standard error for the CLI, the status
/// line for the terminal app.
pub(crate) type Warn = Box<dyn Fn(String) + Send + Sync>;

/// A device's keys as a reader of stored events uses them, and the events
/// held back until a room key they need arrives, in order per
/// conversation.
pub(crate) struct DeviceKeys {
    profile: String,
    vault: Option<Vault>,
    waiting: Vec<ServerFrame>,
    changed: bool,
    files: FileKeys,
    warn: Warn,
}

impl DeviceKeys {
    /// The profile's saved keys; none (every encrypted message then reads
    /// as `no_key`) when it has none or they cannot be read.
    pub(crate) fn open(profile_name: &str, saved: &Profile, warn: Warn) -> Self {
        let vault = match profile::load_keys(profile_name) {
            Ok(Some(_)) => load(profile_name, saved)
                .map_err(|err| warn(format!("{err}; encrypted messages stay unread")))
                .ok(),
            _ => None,
        };
        Self::with(profile_name, vault, warn)
    }

    pub(crate) fn with(profile_name: &str, vault: Option<Vault>, warn: Warn) -> Self {
        Self {
            profile: profile_name.to_owned(),
            vault,
            waiting: Vec::new(),
            changed: false,
            files: FileKeys::load(profile_name),
            warn,
        }
    }

    pub(crate) fn vault_mut(&mut self) -> Option<&mut Vault> {
        self.vault.as_mut()
    }

    /// The profile whose keys these are.
    pub(crate) fn profile(&self) -> &str {
        &self.profile
    }

    pub(crate) fn warn(&self, text: String) {
        (self.warn)(text);
    }

    /// The key of an attachment this device has read.
    pub(crate) fn file(&self, media_id: &str) -> Option<SharedFile> {
        self.files.get(media_id).cloned()
    }

    /// Whether events wait for a room key.
    pub(crate) fn holding(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// A stored event to show: it and any held-back events it no longer
    /// waits behind, ready in order (nothing while it waits for a key).
    pub(crate) fn offer(&mut self, frame: ServerFrame) -> Vec<(ServerFrame, Opened)> {
        self.waiting.push(frame);
        self.release(false)
    }

    /// Takes a to-device room key; returns the events it made readable.
    pub(crate) fn take_share(
        &mut self,
        from: &str,
        from_device: i64,
        body: &str,
    ) -> Vec<(ServerFrame, Opened)> {
        let Some(vault) = self.vault.as_mut() else {
            (self.warn)(format!(
                "a room key from {from}'s device {from_device}, but this device has no keys"
            ));
            return Vec::new();
        };
        match vault.receive_share(from, from_device, body) {
            Ok(()) => self.changed = true,
            Err(err) => (self.warn)(format!(
                "a to-device message from {from}'s device {from_device}: {err}"
            )),
        }
        self.release(false)
    }

    /// Everything still held, as undecryptable.
    pub(crate) fn give_up(&mut self) -> Vec<(ServerFrame, Opened)> {
        self.release(true)
    }

    /// Opens one event of history (never held: history is read whole).
    pub(crate) fn open_text(
        &mut self,
        conversation: i64,
        from: &str,
        from_device: i64,
        ciphertext: &str,
    ) -> Opened {
        self.changed = true;
        let opened = open_text(
            self.vault.as_mut(),
            conversation,
            from,
            from_device,
            ciphertext,
            true,
        )
        .unwrap_or(Opened::Failed(DecryptError::NoKey));
        self.remember_files(&opened);
        opened
    }

    fn remember_files(&mut self, opened: &Opened) {
        if let Opened::Decrypted { files, .. } = opened {
            self.files.remember(files);
        }
    }

    fn release(&mut self, final_try: bool) -> Vec<(ServerFrame, Opened)> {
        let mut ready = Vec::new();
        let mut blocked: Vec<i64> = Vec::new();
        let mut kept = Vec::new();
        for frame in std::mem::take(&mut self.waiting) {
            let conversation = frame.ack_point().map(|(conversation, _)| conversation);
            if conversation.is_some_and(|c| blocked.contains(&c)) {
                kept.push(frame);
                continue;
            }
            match open(self.vault.as_mut(), &frame, final_try) {
                Some(opened) => {
                    self.changed |= opened != Opened::Plain;
                    self.remember_files(&opened);
                    ready.push((frame, opened));
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

    /// Saves the keys if a room key or a first use changed them, and the
    /// keys of attachments read since the last save.
    pub(crate) fn save(&mut self) {
        if let (true, Some(vault)) = (self.changed, &self.vault)
            && let Err(err) = save(&self.profile, vault)
        {
            (self.warn)(err);
        }
        self.changed = false;
        if let Err(err) = self.files.save() {
            (self.warn)(err);
        }
    }
}
