//! Domain services: what the gateway calls. They speak domain types and
//! `ApiError`, never HTTP or WebSocket types, and reach storage only through
//! the Store boundary and other nodes only through the Bus.

pub mod accounts;
pub mod groups;
pub mod login_limit;
pub mod messaging;
pub mod push;
pub mod social;

pub use accounts::Accounts;
pub use groups::Groups;
pub use messaging::{Draft, Messaging, Recipient};
pub use push::Push;
pub use social::Social;
