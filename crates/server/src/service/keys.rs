//! End-to-end encryption keys (issue 22): the key directory, where each
//! device publishes its identity keys and signed one-time keys and another
//! device claims one one-time key per device of a user to start an Olm
//! session with each; and to-device messages, which carry what those
//! sessions encrypt (room keys) to one device each, stored until it acks. The server checks the keys' form only: it never holds a
//! private key and cannot verify who owns a public one (that is what key
//! verification between users is for, on the clients).

use std::sync::Arc;

use missive_bus::{Bus, DeviceEvent};
use missive_core::Clock;
use missive_core::model::{
    DeviceAuth, IdentityKeys, KeyUpload, NewToDevice, OneTimeKey, ToDeviceBatch, ToDeviceMessage,
};
use missive_core::{AccountId, DeviceId};
use missive_proto::ToDeviceOut;
use missive_proto::rest::{
    ClaimedDeviceKey, DeviceKeysBody, IdentityKeysBody, KeyClaim, KeyCount, KeyUploadRequest,
    OneTimeKeyBody, UserKeys,
};
use missive_proto::{ErrorCode, ServerFrame};
use missive_store::Store;

use super::account_named;
use super::device_list::DeviceListNotices;
use crate::service::ServiceError;

/// One-time keys in one upload.
pub const ONE_TIME_KEYS_PER_UPLOAD_MAX: usize = 100;
/// One-time keys a device may hold unclaimed.
pub const ONE_TIME_KEYS_HELD_MAX: u64 = 200;
/// A claim that leaves a device fewer one-time keys than this tells it
/// (`keys_low`), so it uploads more before they run out.
pub const ONE_TIME_KEYS_LOW: u64 = 20;

/// Messages in one `to_device` frame.
pub const TO_DEVICE_PER_FRAME_MAX: usize = 256;
/// Bytes of one to-device body.
pub const TO_DEVICE_BODY_BYTES_MAX: usize = 65_536;
/// To-device messages one device may have waiting, unacked.
pub const TO_DEVICE_WAITING_MAX: u64 = 1_000;
/// Of those, from any one sending account: no one account can fill a
/// device's inbox and shut the others out.
pub const TO_DEVICE_WAITING_PER_SENDER_MAX: u64 = 100;
/// To-device messages read for a connection at a time.
pub const TO_DEVICE_PAGE: usize = 100;

/// Unpadded base64 of a 32-byte public key.
const KEY_CHARS: usize = 43;
/// Unpadded base64 of a 64-byte Ed25519 signature.
const SIGNATURE_CHARS: usize = 86;
const KEY_ID_CHARS_MAX: usize = 64;

fn is_base64(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn check(field: &str, text: &str, chars: usize) -> Result<(), ServiceError> {
    if text.len() == chars && is_base64(text) {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::InvalidField,
            format!("{field}: expected {chars} characters of unpadded base64"),
        ))
    }
}

fn identity(body: &IdentityKeysBody) -> Result<IdentityKeys, ServiceError> {
    check("identity.curve25519", &body.curve25519, KEY_CHARS)?;
    check("identity.ed25519", &body.ed25519, KEY_CHARS)?;
    Ok(IdentityKeys {
        curve25519: body.curve25519.clone(),
        ed25519: body.ed25519.clone(),
    })
}

fn one_time_key(body: &OneTimeKeyBody) -> Result<OneTimeKey, ServiceError> {
    let id_ok = !body.key_id.is_empty()
        && body.key_id.len() <= KEY_ID_CHARS_MAX
        && body
            .key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/_-".contains(&b));
    if !id_ok {
        return Err(ServiceError::new(
            ErrorCode::InvalidField,
            format!("one_time_keys.key_id: 1-{KEY_ID_CHARS_MAX} characters of base64"),
        ));
    }
    check("one_time_keys.key", &body.key, KEY_CHARS)?;
    check("one_time_keys.signature", &body.signature, SIGNATURE_CHARS)?;
    Ok(OneTimeKey {
        key_id: body.key_id.clone(),
        key: body.key.clone(),
        signature: body.signature.clone(),
    })
}

fn one_time_key_body(key: OneTimeKey) -> OneTimeKeyBody {
    OneTimeKeyBody {
        key_id: key.key_id,
        key: key.key,
        signature: key.signature,
    }
}

pub struct Keys {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
    device_list: DeviceListNotices,
}

impl Keys {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, clock: Arc<dyn Clock>) -> Self {
        let device_list = DeviceListNotices::new(store.clone(), bus.clone(), clock.clone());
        Self {
            store,
            bus,
            clock,
            device_list,
        }
    }

    /// Stores the calling device's identity keys (the first time) and more
    /// one-time keys; how many it now holds. The first time, the devices
    /// that may encrypt to the account are told (`devices_changed`); a
    /// top-up of one-time keys changes nothing they list.
    pub async fn upload(
        &self,
        auth: &DeviceAuth,
        request: &KeyUploadRequest,
    ) -> Result<KeyCount, ServiceError> {
        if request.one_time_keys.len() > ONE_TIME_KEYS_PER_UPLOAD_MAX {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                format!("one_time_keys: at most {ONE_TIME_KEYS_PER_UPLOAD_MAX} in one upload"),
            ));
        }
        let identity = request.identity.as_ref().map(identity).transpose()?;
        let one_time_keys = request
            .one_time_keys
            .iter()
            .map(one_time_key)
            .collect::<Result<Vec<_>, _>>()?;
        // One id twice in one upload would make its count ambiguous.
        let mut ids: Vec<&str> = one_time_keys.iter().map(|k| k.key_id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "one_time_keys.key_id: each id at most once in an upload",
            ));
        }
        let stored = self
            .store
            .put_device_keys(KeyUpload {
                device: auth.device,
                account: auth.account,
                identity,
                one_time_keys,
                one_time_keys_max: ONE_TIME_KEYS_HELD_MAX,
                now_ms: self.clock.now_ms(),
            })
            .await?;
        if stored.identity_added {
            self.device_list
                .changed(auth.account, auth.username.as_str(), &[auth.device])
                .await;
        }
        Ok(KeyCount {
            one_time_keys: stored.one_time_keys,
        })
    }

    /// The account named `username`, unless it and the caller's blocked
    /// each other: claims and to-device messages use up or fill the other
    /// side's resources.
    async fn reachable(
        &self,
        auth: &DeviceAuth,
        username: &str,
    ) -> Result<AccountId, ServiceError> {
        let account = account_named(&*self.store, username).await?;
        if account != auth.account && self.store.blocked_either_way(auth.account, account).await? {
            return Err(ServiceError::new(
                ErrorCode::Blocked,
                format!("{username}: one of you has blocked the other"),
            ));
        }
        Ok(account)
    }

    /// How many one-time keys the calling device holds.
    pub async fn count(&self, auth: &DeviceAuth) -> Result<KeyCount, ServiceError> {
        Ok(KeyCount {
            one_time_keys: self.store.one_time_key_count(auth.device).await?,
        })
    }

    /// The identity keys of `username`'s devices. Public keys: any
    /// authenticated user may read them.
    pub async fn of_user(&self, username: &str) -> Result<UserKeys, ServiceError> {
        let account = account_named(&*self.store, username).await?;
        let devices = self.store.device_keys(account).await?;
        Ok(UserKeys {
            user: username.to_owned(),
            devices: devices
                .into_iter()
                .map(|keys| DeviceKeysBody {
                    device_id: keys.device.0,
                    curve25519: keys.identity.curve25519,
                    ed25519: keys.identity.ed25519,
                })
                .collect(),
        })
    }

    /// A one-time key of each of `username`'s devices, each handed out
    /// once. Refused between users where either blocked the other: a claim
    /// uses up the other side's keys.
    pub async fn claim(&self, auth: &DeviceAuth, username: &str) -> Result<KeyClaim, ServiceError> {
        let account = self.reachable(auth, username).await?;
        let claimed = self.store.claim_one_time_keys(account).await?;
        for key in &claimed {
            if key.one_time_key.is_some() && key.remaining < ONE_TIME_KEYS_LOW {
                let frame = ServerFrame::KeysLow {
                    one_time_keys: key.remaining,
                };
                // The bus reaches the device only while it is live; a
                // device checks `GET /v1/keys` when it connects.
                self.bus
                    .publish(key.device, DeviceEvent::Ephemeral(frame.to_json().into()))
                    .await;
            }
        }
        Ok(KeyClaim {
            user: username.to_owned(),
            devices: claimed
                .into_iter()
                .map(|key| ClaimedDeviceKey {
                    device_id: key.device.0,
                    curve25519: key.identity.curve25519,
                    ed25519: key.identity.ed25519,
                    one_time_key: key.one_time_key.map(one_time_key_body),
                })
                .collect(),
        })
    }

    /// Stores each message for its device, all or none, and wakes the
    /// devices. Refused (nothing stored) for a malformed frame, an unknown
    /// user or device, a recipient who blocked the sender or was blocked,
    /// and a recipient with too many messages waiting.
    pub async fn send_to_devices(
        &self,
        auth: &DeviceAuth,
        messages: Vec<ToDeviceOut>,
    ) -> Result<(), ServiceError> {
        if messages.is_empty() || messages.len() > TO_DEVICE_PER_FRAME_MAX {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                format!("messages: 1 to {TO_DEVICE_PER_FRAME_MAX}"),
            ));
        }
        if let Some(bad) = messages
            .iter()
            .find(|m| m.body.is_empty() || m.body.len() > TO_DEVICE_BODY_BYTES_MAX)
        {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                format!(
                    "messages.body: 1 to {TO_DEVICE_BODY_BYTES_MAX} bytes (device {} of {})",
                    bad.device_id, bad.user
                ),
            ));
        }
        // Each user resolved (and checked for a block) once per frame.
        let mut accounts: std::collections::BTreeMap<String, AccountId> = Default::default();
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            let recipient_account = match accounts.get(&message.user) {
                Some(account) => *account,
                None => {
                    let account = self.reachable(auth, &message.user).await?;
                    accounts.insert(message.user, account);
                    account
                }
            };
            stored.push(NewToDevice {
                recipient_account,
                recipient: DeviceId(message.device_id),
                body: message.body,
            });
        }
        let mut woken: Vec<DeviceId> = stored.iter().map(|m| m.recipient).collect();
        let batch = ToDeviceBatch {
            sender_account: auth.account,
            sender_device: auth.device,
            messages: stored,
            waiting_max: TO_DEVICE_WAITING_MAX,
            waiting_per_sender_max: TO_DEVICE_WAITING_PER_SENDER_MAX,
            now_ms: self.clock.now_ms(),
        };
        self.store.send_to_devices(batch).await?;
        woken.sort_unstable();
        woken.dedup();
        for device in woken {
            self.bus.publish(device, DeviceEvent::QueueChanged).await;
        }
        Ok(())
    }

    /// The calling device's to-device messages above seq `after`.
    pub async fn to_device_waiting(
        &self,
        device: DeviceId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceMessage>, ServiceError> {
        Ok(self.store.to_device_waiting(device, after, limit).await?)
    }

    /// Removes the calling device's to-device messages up to `up_to`.
    pub async fn ack_to_device(&self, auth: &DeviceAuth, up_to: i64) -> Result<(), ServiceError> {
        if up_to < 0 {
            return Err(ServiceError::new(
                ErrorCode::InvalidField,
                "up_to: 0 or more",
            ));
        }
        self.store.ack_to_device(auth.device, up_to).await?;
        Ok(())
    }
}

/// The frame a waiting to-device message is delivered as.
pub fn to_device_frame(message: ToDeviceMessage) -> ServerFrame {
    ServerFrame::ToDevice {
        seq: message.seq,
        from: message.from,
        from_device: message.from_device.0,
        body: message.body,
        ts_ms: message.created_ms,
    }
}
