//! Domain types shared by every layer of missive: identifiers, parsed client
//! input, tokens, the clock and the domain records. Nothing here does I/O.
//!
//! # Layout
//! - [`ids`]: typed identifiers for accounts, devices, conversations, messages.
//! - [`input`]: parse-don't-validate newtypes for what clients send.
//! - [`model`]: the domain records (accounts, messages, events, groups,
//!   keys, media) that cross the Store boundary; no serde: not a wire or
//!   disk format.
//! - [`token`]: opaque device tokens and their stored hashes.
//! - [`clock`]: wall-clock time behind a trait, so expiry is testable.

pub mod clock;
pub mod ids;
pub mod input;
pub mod model;
pub mod token;

pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use ids::{AccountId, ConversationId, DeviceId, MessageId, QueuePos, Seq};
pub use input::{ClientMsgId, InputError, MessageText, Password, Username};
pub use token::{DeviceToken, InviteCode, TokenHash};
