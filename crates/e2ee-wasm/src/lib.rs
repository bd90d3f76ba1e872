//! The browser app's end-to-end encryption: [`missive_e2ee::Vault`]
//! compiled to WebAssembly and exported through wasm-bindgen as the class
//! `Vault` (`web/crypto.js` uses it; `scripts/build_web_e2ee.sh` builds
//! it into `crates/server/web/e2ee/`). Structured values cross as JSON
//! text, so the JavaScript side needs no generated types; device ids and
//! conversation ids cross as numbers (they stay far below 2^53).

use missive_e2ee::{DecryptError, Device, Identity, OneTimeKey, VerifyMessage};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

/// A member device to encrypt for, as `GET /v1/keys/{user}` lists it plus
/// its user.
#[derive(Deserialize)]
struct DeviceJson {
    user: String,
    device_id: i64,
    curve25519: String,
    ed25519: String,
}

#[derive(Serialize)]
struct ShareJson {
    user: String,
    device_id: i64,
    body: String,
}

#[derive(Serialize)]
struct SealedJson {
    ciphertext: String,
    shares: Vec<ShareJson>,
}

/// What `decrypt` answers: the sender's content, or why not.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum OpenedJson {
    Plaintext(String),
    Error(&'static str),
}

fn to_json<T: Serialize>(value: &T) -> Result<String, JsError> {
    serde_json::to_string(value).map_err(|err| JsError::new(&err.to_string()))
}

fn from_json<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, JsError> {
    serde_json::from_str(text).map_err(|err| JsError::new(&format!("bad {what}: {err}")))
}

/// Ids cross as JavaScript numbers; anything else is refused.
fn id(value: f64) -> Result<i64, JsError> {
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        Ok(value as i64)
    } else {
        Err(JsError::new("an id must be a whole number"))
    }
}

/// One device's keys and sessions (see `missive_e2ee::Vault`).
#[wasm_bindgen]
pub struct Vault(missive_e2ee::Vault);

#[wasm_bindgen]
impl Vault {
    /// New keys for device `device_id` of `user`.
    #[wasm_bindgen(constructor)]
    pub fn new(user: &str, device_id: f64) -> Result<Vault, JsError> {
        Ok(Self(missive_e2ee::Vault::new(user, id(device_id)?)))
    }

    /// Keys saved by [`Vault::to_json`].
    #[wasm_bindgen(js_name = fromJson)]
    pub fn from_json(text: &str) -> Result<Vault, JsError> {
        missive_e2ee::Vault::from_json(text)
            .map(Self)
            .map_err(|err| JsError::new(&err.to_string()))
    }

    /// Everything to save (private keys: for this browser's storage only).
    #[wasm_bindgen(js_name = toJson)]
    pub fn to_json(&self) -> Result<String, JsError> {
        self.0
            .to_json()
            .map_err(|err| JsError::new(&err.to_string()))
    }

    /// `{"curve25519","ed25519"}`: the public identity keys to publish.
    pub fn identity(&self) -> Result<String, JsError> {
        to_json(&self.0.identity())
    }

    /// `[{"key_id","key","signature"}…]`: new signed one-time keys to
    /// publish, then [`Vault::mark_published`].
    #[wasm_bindgen(js_name = newOneTimeKeys)]
    pub fn new_one_time_keys(&mut self, count: usize) -> Result<String, JsError> {
        to_json(&self.0.new_one_time_keys(count))
    }

    #[wasm_bindgen(js_name = markPublished)]
    pub fn mark_published(&mut self) {
        self.0.mark_published();
    }

    /// `[[user, device_id]…]`: which of `devices` (JSON
    /// `[{"user","device_id","curve25519","ed25519"}…]`) need a claimed
    /// one-time key first.
    #[wasm_bindgen(js_name = withoutSession)]
    pub fn without_session(&self, devices: &str) -> Result<String, JsError> {
        to_json(&self.0.without_session(&devices_from(devices)?))
    }

    /// Opens an Olm session from a claimed key (JSON identity
    /// `{"curve25519","ed25519"}` and key `{"key_id","key","signature"}`);
    /// throws when the key's signature does not hold.
    #[wasm_bindgen(js_name = startSession)]
    pub fn start_session(&mut self, identity: &str, one_time_key: &str) -> Result<(), JsError> {
        let identity: Identity = from_json(identity, "identity")?;
        let key: OneTimeKey = from_json(one_time_key, "one-time key")?;
        self.0
            .start_session(&identity, &key)
            .map_err(|err| JsError::new(&err.to_string()))
    }

    /// Seals `plaintext` for `recipients` (JSON as for `withoutSession`):
    /// `{"ciphertext", "shares": [{"user","device_id","body"}…]}`; send the
    /// shares (`to_device`) before the ciphertext, and save first.
    pub fn encrypt(
        &mut self,
        conversation: f64,
        recipients: &str,
        plaintext: &str,
    ) -> Result<String, JsError> {
        let sealed = self
            .0
            .encrypt(id(conversation)?, &devices_from(recipients)?, plaintext)
            .map_err(|err| JsError::new(&err.to_string()))?;
        to_json(&SealedJson {
            ciphertext: sealed.ciphertext,
            shares: sealed
                .shares
                .into_iter()
                .map(|share| ShareJson {
                    user: share.user,
                    device_id: share.device_id,
                    body: share.body,
                })
                .collect(),
        })
    }

    /// The shares `encrypt` returned (its JSON `shares`) were delivered:
    /// later encrypts need not share the key with those devices again.
    #[wasm_bindgen(js_name = markShared)]
    pub fn mark_shared(&mut self, conversation: f64, shares: &str) -> Result<(), JsError> {
        #[derive(Deserialize)]
        struct Delivered {
            user: String,
            device_id: i64,
        }
        let delivered: Vec<Delivered> = from_json(shares, "shares")?;
        let shares: Vec<missive_e2ee::Share> = delivered
            .into_iter()
            .map(|share| missive_e2ee::Share {
                user: share.user,
                device_id: share.device_id,
                body: String::new(),
            })
            .collect();
        self.0.mark_shared(id(conversation)?, &shares);
        Ok(())
    }

    /// Takes a to-device message (a room key); throws when it is not one
    /// for this device from its sender.
    #[wasm_bindgen(js_name = receiveShare)]
    pub fn receive_share(
        &mut self,
        from: &str,
        from_device: f64,
        body: &str,
    ) -> Result<(), JsError> {
        self.0
            .receive_share(from, id(from_device)?, body)
            .map_err(|err| JsError::new(&err.to_string()))
    }

    /// `{"plaintext": "…"}`, or `{"error": "no_key" | "tampered" |
    /// "wrong_sender"}`.
    pub fn decrypt(
        &mut self,
        conversation: f64,
        from: &str,
        from_device: f64,
        ciphertext: &str,
    ) -> Result<String, JsError> {
        let opened = match self
            .0
            .decrypt(id(conversation)?, from, id(from_device)?, ciphertext)
        {
            Ok(plaintext) => OpenedJson::Plaintext(plaintext),
            Err(DecryptError::NoKey) => OpenedJson::Error("no_key"),
            Err(DecryptError::Tampered) => OpenedJson::Error("tampered"),
            Err(DecryptError::WrongSender) => OpenedJson::Error("wrong_sender"),
        };
        to_json(&opened)
    }

    /// Whether `user`'s device `device_id` was verified with this Ed25519
    /// key (by comparing short codes).
    #[wasm_bindgen(js_name = isVerified)]
    pub fn is_verified(&self, user: &str, device_id: f64, ed25519: &str) -> Result<bool, JsError> {
        Ok(self.0.is_verified(user, id(device_id)?, ed25519))
    }

    /// Every room key this device holds, sealed for `device` (JSON as one
    /// entry of `withoutSession`'s list), another device of this user that
    /// the user verified and that this device has a session with:
    /// `[{"user","device_id","body"}…]` to send as `to_device` (throws for
    /// any other device). A new device reads the history this way.
    #[wasm_bindgen(js_name = forwardKeys)]
    pub fn forward_keys(&mut self, device: &str) -> Result<String, JsError> {
        let listed = devices_from(&format!("[{device}]"))?;
        let [device] = listed.as_slice() else {
            return Err(JsError::new("forwardKeys takes one device"));
        };
        let shares = self
            .0
            .forward_keys(device)
            .map_err(|err| JsError::new(&err.to_string()))?;
        to_json(
            &shares
                .into_iter()
                .map(|share| ShareJson {
                    user: share.user,
                    device_id: share.device_id,
                    body: share.body,
                })
                .collect::<Vec<_>>(),
        )
    }

    /// How many room keys (Megolm sessions) this device holds.
    #[wasm_bindgen(js_name = roomKeyCount)]
    pub fn room_key_count(&self) -> usize {
        self.0.room_key_count()
    }

    /// Moves the session of a first message to a user (sent under
    /// conversation `from`, e.g. -1) to the id the server gave it.
    #[wasm_bindgen(js_name = renameConversation)]
    pub fn rename_conversation(&mut self, from: f64, to: f64) -> Result<(), JsError> {
        self.0.rename_conversation(id(from)?, id(to)?);
        Ok(())
    }
}

fn devices_from(text: &str) -> Result<Vec<Device>, JsError> {
    let listed: Vec<DeviceJson> = from_json(text, "devices")?;
    Ok(listed
        .into_iter()
        .map(|device| Device {
            user: device.user,
            device_id: device.device_id,
            identity: Identity {
                curve25519: device.curve25519,
                ed25519: device.ed25519,
            },
        })
        .collect())
}

/// One side of a key verification by short codes (see
/// `missive_e2ee::Verification`). Messages to send pile up in an outbox the
/// page empties with [`Verification::take_outgoing`] after each step.
#[wasm_bindgen]
pub struct Verification {
    inner: missive_e2ee::Verification,
    outgoing: Vec<String>,
}

fn verify_error(err: missive_e2ee::VerifyError) -> JsError {
    JsError::new(&err.to_string())
}

#[wasm_bindgen]
impl Verification {
    /// Starts verifying `them_user`'s device `them_device`.
    pub fn start(
        me_user: &str,
        me_device: f64,
        them_user: &str,
        them_device: f64,
        txn: &str,
    ) -> Result<Verification, JsError> {
        let (inner, start) = missive_e2ee::Verification::start(
            (me_user, id(me_device)?),
            (them_user, id(them_device)?),
            txn,
        );
        Ok(Self {
            inner,
            outgoing: vec![start.to_json()],
        })
    }

    /// Answers a `start` (the to-device body) from `them_user`'s device.
    pub fn accept(
        me_user: &str,
        me_device: f64,
        them_user: &str,
        them_device: f64,
        start: &str,
    ) -> Result<Verification, JsError> {
        let start = VerifyMessage::parse(start)
            .ok_or_else(|| JsError::new("not a verification message"))?;
        let (inner, accept) = missive_e2ee::Verification::accept(
            (me_user, id(me_device)?),
            (them_user, id(them_device)?),
            &start,
        );
        Ok(Self {
            inner,
            outgoing: vec![accept.to_json()],
        })
    }

    pub fn txn(&self) -> String {
        self.inner.txn().to_owned()
    }

    /// Takes the other device's next message (a to-device body); throws
    /// on a cancel, a broken commitment or a message out of turn.
    pub fn receive(&mut self, body: &str) -> Result<(), JsError> {
        let message =
            VerifyMessage::parse(body).ok_or_else(|| JsError::new("not a verification message"))?;
        let replies = self.inner.receive(&message).map_err(verify_error)?;
        self.outgoing
            .extend(replies.iter().map(VerifyMessage::to_json));
        Ok(())
    }

    /// `{"emoji": [[symbol, name]…7], "decimals": [a, b, c]}` once the
    /// keys are exchanged, else undefined.
    #[wasm_bindgen(js_name = shortCode)]
    pub fn short_code(&self) -> Result<Option<String>, JsError> {
        self.inner
            .short_code()
            .map(|code| to_json(&code))
            .transpose()
    }

    /// The user said the codes match: queues this device's MAC.
    pub fn confirm(&mut self, vault: &Vault) -> Result<(), JsError> {
        let mac = self.inner.confirm(&vault.0).map_err(verify_error)?;
        self.outgoing.push(mac.to_json());
        Ok(())
    }

    /// Queues a cancel (the codes differ, or the user declined).
    pub fn cancel(&mut self, reason: &str) {
        self.outgoing
            .push(VerifyMessage::cancel(self.inner.txn(), reason).to_json());
    }

    #[wasm_bindgen(js_name = readyToFinish)]
    pub fn ready_to_finish(&self) -> bool {
        self.inner.ready_to_finish()
    }

    /// Checks the other device's MAC against its listed Ed25519 key and
    /// records it verified in `vault`; throws when it does not hold.
    pub fn finish(&self, vault: &mut Vault, their_ed25519: &str) -> Result<(), JsError> {
        self.inner
            .finish(&mut vault.0, their_ed25519)
            .map_err(verify_error)
    }

    /// `["body"…]`: the to-device bodies to send now, in order.
    #[wasm_bindgen(js_name = takeOutgoing)]
    pub fn take_outgoing(&mut self) -> Result<String, JsError> {
        to_json(&std::mem::take(&mut self.outgoing))
    }
}
