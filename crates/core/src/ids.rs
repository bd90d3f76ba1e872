//! Typed identifiers. Numeric ids are allocated by the store; message ids are
//! UUIDv7 strings so that they are unique across nodes and sort by time.

use std::fmt;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

numeric_id!(
    /// A registered user.
    AccountId
);
numeric_id!(
    /// One login of an account; owns a token and a delivery queue.
    DeviceId
);
numeric_id!(
    /// A 1:1 chat (and, later, a group).
    ConversationId
);

/// Position of a message within its conversation: 1, 2, 3… with no gaps.
pub type Seq = i64;

/// Position of an entry in a device's queue: strictly increasing in commit
/// order for one device, not contiguous.
pub type QueuePos = i64;

/// Globally unique, time-ordered message id (UUIDv7, hyphenated text).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh id; ids made later on one node compare greater.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    /// A message id a client sent: the hyphenated UUID form ids are
    /// stored in (any case), or `None` for anything else, which names no
    /// message.
    pub fn parse(raw: &str) -> Option<Self> {
        let id = uuid::Uuid::try_parse(raw).ok()?;
        (raw.len() == uuid::fmt::Hyphenated::LENGTH).then(|| Self(id.hyphenated().to_string()))
    }

    /// Wraps an id read back from the store.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_message_ids_parse_to_the_stored_form() {
        // Goal: a generated id round-trips, in either case; anything that is
        // not a hyphenated UUID names no message.
        let id = MessageId::generate();
        assert_eq!(MessageId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(
            MessageId::parse(&id.as_str().to_uppercase()),
            Some(id.clone())
        );
        let simple = id.as_str().replace('-', "");
        for bad in ["", "x", "x\0", simple.as_str(), &format!("{{{id}}}")] {
            assert_eq!(MessageId::parse(bad), None, "{bad:?}");
        }
    }
}
