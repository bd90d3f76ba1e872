//! Client input parsed into types that cannot hold invalid values.

use std::fmt;

/// Why a piece of client input was refused; `code` is the stable wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    pub code: &'static str,
    pub message: String,
}

impl InputError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// 3-32 characters of `[a-z0-9_.]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub const LEN_MIN: usize = 3;
    pub const LEN_MAX: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.';
        if !(Self::LEN_MIN..=Self::LEN_MAX).contains(&raw.len()) || !raw.chars().all(allowed) {
            return Err(InputError::new(
                "invalid_username",
                "username must be 3-32 characters of a-z, 0-9, '_' and '.'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password of 8 to 1024 bytes (the upper bound keeps Argon2 input sane).
pub struct Password(String);

impl Password {
    pub const LEN_MIN: usize = 8;
    pub const LEN_MAX: usize = 1024;

    pub fn parse(raw: &str) -> Result<Self, InputError> {
        if raw.chars().count() < Self::LEN_MIN || raw.len() > Self::LEN_MAX {
            return Err(InputError::new(
                "invalid_password",
                "password must be at least 8 characters (at most 1024 bytes)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The client's idempotency key for a send: 1-64 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub const LEN_MAX: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InputError> {
        if raw.is_empty() || raw.len() > Self::LEN_MAX || !raw.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(InputError::new(
                "invalid_client_msg_id",
                "client_msg_id must be 1-64 printable ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Message text: not blank, at most `len_max` bytes of UTF-8, no NUL
/// (PostgreSQL cannot store it in `text`; both stores refuse it alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: &str, len_max_bytes: usize) -> Result<Self, InputError> {
        if raw.trim().is_empty() {
            return Err(InputError::new("empty_text", "text must not be empty"));
        }
        if raw.len() > len_max_bytes {
            return Err(InputError::new(
                "text_too_long",
                format!("text is {} bytes; the limit is {len_max_bytes}", raw.len()),
            ));
        }
        if raw.contains('\0') {
            return Err(InputError::new(
                "invalid_text",
                "text must not contain NUL characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// No text at all: the caption of a media-only message.
    pub fn empty_caption() -> Self {
        Self(String::new())
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_refuse_nul() {
        // Goal: a NUL anywhere is refused with its own code; other control
        // characters (a newline) are text.
        let refused = MessageText::parse("a\0b", 100).map_err(|err| err.code);
        assert_eq!(refused, Err("invalid_text"));
        assert!(MessageText::parse("line\nnext", 100).is_ok());
    }

    #[test]
    fn usernames() {
        // Goal: exactly the documented alphabet and length range is accepted.
        for good in ["abc", "a.b_c9", &"x".repeat(32)] {
            assert!(Username::parse(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Abc", "a b", "ali-ce", "ü12", &"x".repeat(33), ""] {
            assert_eq!(
                Username::parse(bad).unwrap_err().code,
                "invalid_username",
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_texts_and_ids() {
        // Goal: each boundary refuses with its own stable code.
        assert!(Password::parse("12345678").is_ok());
        assert_eq!(
            Password::parse("1234567").unwrap_err().code,
            "invalid_password"
        );
        assert_eq!(MessageText::parse("  ", 10).unwrap_err().code, "empty_text");
        assert_eq!(
            MessageText::parse("hello", 4).unwrap_err().code,
            "text_too_long"
        );
        assert_eq!(MessageText::parse("héllo", 6).unwrap().as_str(), "héllo");
        assert!(ClientMsgId::parse("c-1").is_ok());
        assert_eq!(
            ClientMsgId::parse("").unwrap_err().code,
            "invalid_client_msg_id"
        );
        assert_eq!(
            ClientMsgId::parse("a b").unwrap_err().code,
            "invalid_client_msg_id"
        );
    }
}
