//! Device tokens: 32 random bytes shown to the client once, as hex. The store
//! keeps only the SHA-256, so a leaked database does not leak sessions.

use rand::Rng;
use sha2::{Digest, Sha256};

/// A secret of `BYTES` random bytes shown once, as hex; the store keeps
/// only its SHA-256.
pub struct Secret<const BYTES: usize>(String);

/// The secret a device presents. Only ever held by the client and in transit.
pub type DeviceToken = Secret<32>;

/// A single-use registration invite an operator hands out.
pub type InviteCode = Secret<16>;

impl<const BYTES: usize> Secret<BYTES> {
    pub fn generate() -> Self {
        let mut bytes = [0u8; BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

/// SHA-256 of a presented token, the only form the store sees.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes whatever the client presented; a malformed token simply hashes
    /// to something no device has.
    pub fn of(presented: &str) -> Self {
        Self(Sha256::digest(presented.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_chars_and_distinct() {
        // Goal: tokens carry 32 bytes of entropy and hash deterministically.
        let a = DeviceToken::generate();
        let b = DeviceToken::generate();
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.hash(), TokenHash::of(a.as_str()));
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn invite_codes_are_32_hex_chars_and_distinct() {
        // Goal: invites carry 16 bytes of entropy and hash like what a
        // registration presents.
        let a = InviteCode::generate();
        let b = InviteCode::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.hash(), TokenHash::of(a.as_str()));
    }
}
