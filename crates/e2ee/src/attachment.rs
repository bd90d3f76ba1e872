//! Attachments of encrypted messages: each file is sealed with a key of
//! its own (AES-256-GCM, a random 12-byte IV, the 16-byte tag appended,
//! as WebCrypto does it, so the browser seals and opens the same bytes
//! natively) before it is uploaded; the key, the IV and the SHA-256 of the
//! ciphertext travel inside the Megolm-encrypted message, never to the
//! server.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What opens one uploaded file: unpadded base64 of the 32-byte key and
/// the 12-byte IV, and lowercase hex of the SHA-256 of the ciphertext (as
/// the server's upload answer reports it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    pub key: String,
    pub iv: String,
    pub sha256: String,
}

/// An attachment as an encrypted message lists it (`"files"` in its
/// content): the upload's id, what the file is, and its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    pub media_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sender's MIME type for it (the server never sees the bytes).
    pub content_type: String,
    /// The plaintext's size.
    pub size_bytes: u64,
    #[serde(flatten)]
    pub key: FileKey,
}

/// A file sealed for upload, and what opens it.
pub struct SealedFile {
    pub ciphertext: Vec<u8>,
    pub key: FileKey,
}

/// Why a downloaded file does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The key or IV in the message is not one (a sender's bug or a forgery).
    #[error("the message's key for this file is malformed")]
    BadKey,
    /// The bytes are not the ones the message names.
    #[error("the file is not the one the message names (hash mismatch)")]
    WrongFile,
    /// The bytes fail authentication.
    #[error("the file was tampered with")]
    Tampered,
}

/// Seals `plaintext` under a fresh key and IV.
pub fn seal_file(plaintext: &[u8]) -> Result<SealedFile, getrandom::Error> {
    let mut key = [0u8; 32];
    let mut iv = [0u8; 12];
    getrandom::fill(&mut key)?;
    getrandom::fill(&mut iv)?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key));
    let ciphertext = cipher
        .encrypt(&Nonce::from(iv), plaintext)
        // Only a plaintext over 64 GiB fails; uploads stop at megabytes.
        .map_err(|_| getrandom::Error::UNEXPECTED)?;
    Ok(SealedFile {
        key: FileKey {
            key: vodozemac::base64_encode(key),
            iv: vodozemac::base64_encode(iv),
            sha256: hex(&Sha256::digest(&ciphertext)),
        },
        ciphertext,
    })
}

/// Opens a downloaded file: its hash first (the message names exactly
/// these bytes), then the tag.
pub fn open_file(ciphertext: &[u8], key: &FileKey) -> Result<Vec<u8>, FileError> {
    if !hex(&Sha256::digest(ciphertext)).eq_ignore_ascii_case(&key.sha256) {
        return Err(FileError::WrongFile);
    }
    let raw_key: [u8; 32] = decode_exact(&key.key)?;
    let iv: [u8; 12] = decode_exact(&key.iv)?;
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(raw_key))
        .decrypt(&Nonce::from(iv), ciphertext)
        .map_err(|_| FileError::Tampered)
}

fn decode_exact<const N: usize>(text: &str) -> Result<[u8; N], FileError> {
    // Padding is tolerated: browsers' btoa adds it.
    vodozemac::base64_decode(text.trim_end_matches('='))
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(FileError::BadKey)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_opens_with_its_key_and_only_as_sent() {
        let plain = b"quarterly numbers".repeat(100);
        let sealed = seal_file(&plain).unwrap();
        assert_eq!(sealed.ciphertext.len(), plain.len() + 16);
        assert_ne!(&sealed.ciphertext[..plain.len()], &plain[..]);
        assert_eq!(open_file(&sealed.ciphertext, &sealed.key).unwrap(), plain);

        let mut flipped = sealed.ciphertext.clone();
        flipped[3] ^= 1;
        assert_eq!(open_file(&flipped, &sealed.key), Err(FileError::WrongFile));
        // A forger who also rewrote the hash still fails the tag.
        let forged_key = FileKey {
            sha256: hex(&Sha256::digest(&flipped)),
            ..sealed.key.clone()
        };
        assert_eq!(open_file(&flipped, &forged_key), Err(FileError::Tampered));
        let short_key = FileKey {
            key: "AAAA".into(),
            ..sealed.key.clone()
        };
        assert_eq!(
            open_file(&sealed.ciphertext, &short_key),
            Err(FileError::BadKey)
        );
        // Two seals of one file share nothing.
        let again = seal_file(&plain).unwrap();
        assert_ne!(again.key.key, sealed.key.key);
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn a_file_sealed_by_webcrypto_opens() {
        // Node's WebCrypto (the browser's API): crypto.subtle.encrypt({name:
        // "AES-GCM", iv: 12 × 0x02}, 32 × 0x01 raw key, "hello"); btoa pads.
        let ciphertext = unhex("6fb3a5252502630b59edf03e770c9c03868bf73aed");
        let key = FileKey {
            key: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
            iv: "AgICAgICAgICAgIC".into(),
            sha256: "b25ba9b7827fc5a8d777792dd97eb6e53b2fe349d5fac367bea37d22663d2b7d".into(),
        };
        assert_eq!(open_file(&ciphertext, &key).unwrap(), b"hello");
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_shared_file_entry_is_flat_json() {
        let entry = SharedFile {
            media_id: "m1".into(),
            name: Some("a.pdf".into()),
            content_type: "application/pdf".into(),
            size_bytes: 5,
            key: FileKey {
                key: "k".into(),
                iv: "i".into(),
                sha256: "h".into(),
            },
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"media_id": "m1", "name": "a.pdf", "content_type": "application/pdf",
                "size_bytes": 5, "key": "k", "iv": "i", "sha256": "h"})
        );
        assert_eq!(serde_json::from_value::<SharedFile>(json).unwrap(), entry);
    }
}
