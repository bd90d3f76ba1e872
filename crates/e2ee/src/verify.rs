//! Key verification by short authentication strings (vodozemac's SAS):
//! two users compare seven emoji (or three numbers) that both their
//! devices derive from a key exchange; if they match, each device sends a
//! MAC of its Ed25519 identity key under the shared secret, and the other
//! marks that key verified. A server that listed a fake key would make the
//! emoji differ.
//!
//! The exchange travels as to-device messages, `{"v":1,"verify":…,"txn":…}`:
//! 1. `start` (initiator → responder);
//! 2. `accept` with `commitment`: the SHA-256 of the responder's SAS key and
//!    the transaction, so it cannot choose its key after seeing the
//!    initiator's (a man in the middle would otherwise try keys until the
//!    emoji matched);
//! 3. `key` (initiator), then `key` (responder; checked against the
//!    commitment); both show the emoji;
//! 4. `mac` from each side once its user confirms; `cancel` at any time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vodozemac::sas::{EstablishedSas, Mac, Sas};

use crate::Vault;

/// The SAS emoji table (index → emoji and its English name), as Matrix
/// clients show it, so the two sides can say them aloud.
pub const EMOJI: [(&str, &str); 64] = [
    ("🐶", "Dog"),
    ("🐱", "Cat"),
    ("🦁", "Lion"),
    ("🐎", "Horse"),
    ("🦄", "Unicorn"),
    ("🐷", "Pig"),
    ("🐘", "Elephant"),
    ("🐰", "Rabbit"),
    ("🐼", "Panda"),
    ("🐓", "Rooster"),
    ("🐧", "Penguin"),
    ("🐢", "Turtle"),
    ("🐟", "Fish"),
    ("🐙", "Octopus"),
    ("🦋", "Butterfly"),
    ("🌷", "Flower"),
    ("🌳", "Tree"),
    ("🌵", "Cactus"),
    ("🍄", "Mushroom"),
    ("🌏", "Globe"),
    ("🌙", "Moon"),
    ("☁️", "Cloud"),
    ("🔥", "Fire"),
    ("🍌", "Banana"),
    ("🍎", "Apple"),
    ("🍓", "Strawberry"),
    ("🌽", "Corn"),
    ("🍕", "Pizza"),
    ("🎂", "Cake"),
    ("❤️", "Heart"),
    ("😀", "Smiley"),
    ("🤖", "Robot"),
    ("🎩", "Hat"),
    ("👓", "Glasses"),
    ("🔧", "Spanner"),
    ("🎅", "Santa"),
    ("👍", "Thumbs up"),
    ("☂️", "Umbrella"),
    ("⌛", "Hourglass"),
    ("⏰", "Clock"),
    ("🎁", "Gift"),
    ("💡", "Light bulb"),
    ("📕", "Book"),
    ("✏️", "Pencil"),
    ("📎", "Paperclip"),
    ("✂️", "Scissors"),
    ("🔒", "Lock"),
    ("🔑", "Key"),
    ("🔨", "Hammer"),
    ("☎️", "Telephone"),
    ("🏁", "Flag"),
    ("🚂", "Train"),
    ("🚲", "Bicycle"),
    ("✈️", "Aeroplane"),
    ("🚀", "Rocket"),
    ("🏆", "Trophy"),
    ("⚽", "Ball"),
    ("🎸", "Guitar"),
    ("🎺", "Trumpet"),
    ("🔔", "Bell"),
    ("⚓", "Anchor"),
    ("🎧", "Headphones"),
    ("📁", "Folder"),
    ("📌", "Pin"),
];

/// A to-device message of a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyMessage {
    pub v: u8,
    pub verify: Step,
    pub txn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Start,
    Accept,
    Key,
    Mac,
    Cancel,
}

impl VerifyMessage {
    /// The verification message in a to-device body, if it is one.
    pub fn parse(body: &str) -> Option<Self> {
        serde_json::from_str::<Self>(body)
            .ok()
            .filter(|message| message.v == 1)
    }

    fn new(verify: Step, txn: &str) -> Self {
        Self {
            v: 1,
            verify,
            txn: txn.to_owned(),
            commitment: None,
            key: None,
            mac: None,
            reason: None,
        }
    }

    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn cancel(txn: &str, reason: &str) -> Self {
        Self {
            reason: Some(reason.to_owned()),
            ..Self::new(Step::Cancel, txn)
        }
    }
}

/// The short authentication string both users compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShortCode {
    /// Seven emoji with their names.
    pub emoji: Vec<(String, String)>,
    /// The same secret as three four-digit numbers.
    pub decimals: (u16, u16, u16),
}

impl ShortCode {
    /// "🐶 Dog, 🔑 Key, …" and the numbers, on one line.
    pub fn describe(&self) -> String {
        let emoji: Vec<String> = self
            .emoji
            .iter()
            .map(|(symbol, name)| format!("{symbol} {name}"))
            .collect();
        let (a, b, c) = self.decimals;
        format!("{} ({a} {b} {c})", emoji.join(", "))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("that message does not belong to this verification at this point")]
    Unexpected,
    #[error("the other device's key does not match its commitment")]
    Commitment,
    #[error("the other device's key is not a valid key")]
    BadKey,
    #[error("the other device's MAC does not match its identity key: do not trust it")]
    Mismatch,
    #[error("the other device cancelled: {0}")]
    Cancelled(String),
}

/// One device's side of a verification with one device of another user
/// (or of the same user).
pub struct Verification {
    txn: String,
    initiator: bool,
    me: (String, i64),
    them: (String, i64),
    sas: Option<Sas>,
    our_key: String,
    their_key: Option<String>,
    their_commitment: Option<String>,
    established: Option<EstablishedSas>,
    confirmed: bool,
    their_mac: Option<String>,
}

fn commitment(key: &str, txn: &str) -> String {
    let digest = Sha256::digest(format!("{key}|{txn}").as_bytes());
    vodozemac::base64_encode(digest)
}

impl Verification {
    /// Starts a verification of `them`'s device: the `start` to send it.
    pub fn start(me: (&str, i64), them: (&str, i64), txn: &str) -> (Self, VerifyMessage) {
        (
            Self::new(true, me, them, txn),
            VerifyMessage::new(Step::Start, txn),
        )
    }

    /// Answers a `start` from `them`: the `accept` to send back.
    pub fn accept(
        me: (&str, i64),
        them: (&str, i64),
        start: &VerifyMessage,
    ) -> (Self, VerifyMessage) {
        let verification = Self::new(false, me, them, &start.txn);
        let accept = VerifyMessage {
            commitment: Some(commitment(&verification.our_key, &start.txn)),
            ..VerifyMessage::new(Step::Accept, &start.txn)
        };
        (verification, accept)
    }

    fn new(initiator: bool, me: (&str, i64), them: (&str, i64), txn: &str) -> Self {
        let sas = Sas::new();
        Self {
            txn: txn.to_owned(),
            initiator,
            me: (me.0.to_owned(), me.1),
            them: (them.0.to_owned(), them.1),
            our_key: sas.public_key().to_base64(),
            sas: Some(sas),
            their_key: None,
            their_commitment: None,
            established: None,
            confirmed: false,
            their_mac: None,
        }
    }

    pub fn txn(&self) -> &str {
        &self.txn
    }

    /// The other device: (user, device id).
    pub fn them(&self) -> (&str, i64) {
        (&self.them.0, self.them.1)
    }

    /// Takes the other device's next message; returns what to send back.
    /// A `mac` is only kept (checked by [`Verification::finish`]).
    pub fn receive(&mut self, message: &VerifyMessage) -> Result<Vec<VerifyMessage>, VerifyError> {
        if message.txn != self.txn {
            return Err(VerifyError::Unexpected);
        }
        match (message.verify, self.initiator) {
            (Step::Cancel, _) => Err(VerifyError::Cancelled(
                message.reason.clone().unwrap_or_default(),
            )),
            (Step::Accept, true) if self.their_commitment.is_none() => {
                self.their_commitment =
                    Some(message.commitment.clone().ok_or(VerifyError::Unexpected)?);
                Ok(vec![self.key_message()])
            }
            (Step::Key, true) if self.their_commitment.is_some() && self.their_key.is_none() => {
                let key = message.key.clone().ok_or(VerifyError::Unexpected)?;
                if self.their_commitment.as_deref() != Some(commitment(&key, &self.txn).as_str()) {
                    return Err(VerifyError::Commitment);
                }
                self.establish(key)?;
                Ok(Vec::new())
            }
            (Step::Key, false) if self.their_key.is_none() => {
                let key = message.key.clone().ok_or(VerifyError::Unexpected)?;
                self.establish(key)?;
                Ok(vec![self.key_message()])
            }
            (Step::Mac, _) if self.established.is_some() && self.their_mac.is_none() => {
                self.their_mac = Some(message.mac.clone().ok_or(VerifyError::Unexpected)?);
                Ok(Vec::new())
            }
            _ => Err(VerifyError::Unexpected),
        }
    }

    fn key_message(&self) -> VerifyMessage {
        VerifyMessage {
            key: Some(self.our_key.clone()),
            ..VerifyMessage::new(Step::Key, &self.txn)
        }
    }

    fn establish(&mut self, their_key: String) -> Result<(), VerifyError> {
        let sas = self.sas.take().ok_or(VerifyError::Unexpected)?;
        let established = sas
            .diffie_hellman_with_raw(&their_key)
            .map_err(|_| VerifyError::BadKey)?;
        self.their_key = Some(their_key);
        self.established = Some(established);
        Ok(())
    }

    /// Both sides' identities and keys in one order (the initiator's
    /// first), so both derive the same string.
    fn info(&self, prefix: &str) -> String {
        let their_key = self.their_key.as_deref().unwrap_or_default();
        let (first, first_key, second, second_key) = if self.initiator {
            (&self.me, self.our_key.as_str(), &self.them, their_key)
        } else {
            (&self.them, their_key, &self.me, self.our_key.as_str())
        };
        format!(
            "{prefix}|{}|{}|{first_key}|{}|{}|{second_key}|{}",
            first.0, first.1, second.0, second.1, self.txn
        )
    }

    /// The emoji and numbers to compare, once the keys are exchanged.
    pub fn short_code(&self) -> Option<ShortCode> {
        let established = self.established.as_ref()?;
        let bytes = established.bytes(&self.info("MISSIVE_SAS_V1"));
        Some(ShortCode {
            emoji: bytes
                .emoji_indices()
                .iter()
                .map(|&index| {
                    let (symbol, name) = EMOJI[usize::from(index) % EMOJI.len()];
                    (symbol.to_owned(), name.to_owned())
                })
                .collect(),
            decimals: bytes.decimals(),
        })
    }

    /// The user said the codes match: the `mac` of this device's identity
    /// key to send.
    pub fn confirm(&mut self, vault: &Vault) -> Result<VerifyMessage, VerifyError> {
        let established = self.established.as_ref().ok_or(VerifyError::Unexpected)?;
        self.confirmed = true;
        let mac = established.calculate_mac(&vault.identity().ed25519, &self.mac_info(true));
        Ok(VerifyMessage {
            mac: Some(mac.to_base64()),
            ..VerifyMessage::new(Step::Mac, &self.txn)
        })
    }

    /// What a MAC covers: whose key it is, for whom, in which exchange.
    fn mac_info(&self, ours: bool) -> String {
        let (from, to) = if ours {
            (&self.me, &self.them)
        } else {
            (&self.them, &self.me)
        };
        format!(
            "MISSIVE_MAC_V1|{}|{}|{}|{}|{}",
            from.0, from.1, to.0, to.1, self.txn
        )
    }

    /// Whether both sides are done: this user confirmed and the other
    /// device's MAC came.
    pub fn ready_to_finish(&self) -> bool {
        self.confirmed && self.their_mac.is_some()
    }

    /// Checks the other device's MAC against `their_ed25519` (its identity
    /// key as the key directory lists it) and, if it holds, records that
    /// key as verified in `vault`.
    pub fn finish(&self, vault: &mut Vault, their_ed25519: &str) -> Result<(), VerifyError> {
        let established = self.established.as_ref().ok_or(VerifyError::Unexpected)?;
        if !self.confirmed {
            return Err(VerifyError::Unexpected);
        }
        let mac = self
            .their_mac
            .as_deref()
            .and_then(|mac| Mac::from_base64(mac).ok())
            .ok_or(VerifyError::Mismatch)?;
        established
            .verify_mac(their_ed25519, &self.mac_info(false), &mac)
            .map_err(|_| VerifyError::Mismatch)?;
        vault.mark_verified(&self.them.0, self.them.1, their_ed25519);
        Ok(())
    }
}

impl Vault {
    /// Records `user`'s device `device_id` as verified with this Ed25519
    /// key.
    pub fn mark_verified(&mut self, user: &str, device_id: i64, ed25519: &str) {
        self.verified
            .entry(user.to_owned())
            .or_default()
            .insert(device_id, ed25519.to_owned());
    }

    /// Whether `user`'s device `device_id` was verified with exactly this
    /// key (a device whose key changed is no longer verified).
    pub fn is_verified(&self, user: &str, device_id: i64, ed25519: &str) -> bool {
        self.verified
            .get(user)
            .and_then(|devices| devices.get(&device_id))
            .is_some_and(|key| key == ed25519)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vaults() -> (Vault, Vault) {
        (Vault::new("alice", 1), Vault::new("bob", 2))
    }

    /// Runs the exchange up to both sides showing a code.
    fn exchange() -> (Verification, Verification) {
        let (mut alice, start) = Verification::start(("alice", 1), ("bob", 2), "t1");
        let (mut bob, accept) = Verification::accept(("bob", 2), ("alice", 1), &start);
        let to_bob = alice.receive(&accept).expect("accept");
        let to_alice = bob.receive(&to_bob[0]).expect("alice's key");
        assert!(alice.receive(&to_alice[0]).expect("bob's key").is_empty());
        (alice, bob)
    }

    #[test]
    fn both_sides_see_the_same_code_and_verify_each_other() {
        let (mut alice_keys, mut bob_keys) = vaults();
        let (mut alice, mut bob) = exchange();
        let code = alice.short_code().expect("alice's code");
        assert_eq!(Some(code.clone()), bob.short_code());
        assert_eq!(code.emoji.len(), 7);
        let from_alice = alice.confirm(&alice_keys).expect("alice confirms");
        let from_bob = bob.confirm(&bob_keys).expect("bob confirms");
        bob.receive(&VerifyMessage::parse(&from_alice.to_json()).expect("parses"))
            .expect("mac");
        alice.receive(&from_bob).expect("mac");
        let bob_key = bob_keys.identity().ed25519;
        let alice_key = alice_keys.identity().ed25519;
        alice
            .finish(&mut alice_keys, &bob_key)
            .expect("bob's key holds");
        bob.finish(&mut bob_keys, &alice_key)
            .expect("alice's key holds");
        assert!(alice_keys.is_verified("bob", 2, &bob_key));
        assert!(
            !alice_keys.is_verified("bob", 2, &alice_key),
            "only that key"
        );
        assert!(
            !alice_keys.is_verified("bob", 3, &bob_key),
            "only that device"
        );
        let saved = Vault::from_json(&alice_keys.to_json().expect("saves")).expect("loads");
        assert!(saved.is_verified("bob", 2, &bob_key), "kept across a save");
    }

    #[test]
    fn a_key_the_directory_lies_about_is_not_verified() {
        // Goal: the MAC binds the real device's key; the server's fake
        // key (what a man in the middle would list) fails.
        let (mut alice_keys, bob_keys) = vaults();
        let fake = Vault::new("bob", 2).identity().ed25519;
        let (mut alice, mut bob) = exchange();
        alice.confirm(&alice_keys).expect("confirm");
        let from_bob = bob.confirm(&bob_keys).expect("confirm");
        alice.receive(&from_bob).expect("mac");
        assert_eq!(
            alice.finish(&mut alice_keys, &fake),
            Err(VerifyError::Mismatch)
        );
        assert!(!alice_keys.is_verified("bob", 2, &fake));
    }

    #[test]
    fn a_key_that_breaks_its_commitment_is_refused() {
        // Goal: the responder cannot swap its key after seeing the
        // initiator's; a man in the middle cannot grind for equal codes.
        let (mut alice, start) = Verification::start(("alice", 1), ("bob", 2), "t2");
        let (_bob, accept) = Verification::accept(("bob", 2), ("alice", 1), &start);
        alice.receive(&accept).expect("accept");
        let other = Verification::accept(("bob", 2), ("alice", 1), &start).0;
        let swapped = other.key_message();
        assert_eq!(alice.receive(&swapped), Err(VerifyError::Commitment));
        assert!(alice.short_code().is_none());
    }

    #[test]
    fn out_of_order_or_foreign_messages_are_refused() {
        let (mut alice, start) = Verification::start(("alice", 1), ("bob", 2), "t3");
        let mac = VerifyMessage {
            mac: Some("AAAA".into()),
            ..VerifyMessage::new(Step::Mac, "t3")
        };
        assert_eq!(alice.receive(&mac), Err(VerifyError::Unexpected));
        let (_bob, mut accept) = Verification::accept(("bob", 2), ("alice", 1), &start);
        accept.txn = "another".into();
        assert_eq!(alice.receive(&accept), Err(VerifyError::Unexpected));
        let cancel = VerifyMessage::cancel("t3", "mismatch");
        assert_eq!(
            alice.receive(&cancel),
            Err(VerifyError::Cancelled("mismatch".into()))
        );
        assert!(VerifyMessage::parse(r#"{"v":1,"sender_key":"x","type":0,"body":"y"}"#).is_none());
    }
}
