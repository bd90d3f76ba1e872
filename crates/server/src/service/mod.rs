//! Domain services: what the gateway calls. They speak domain types and
//! `ApiError`, never HTTP or WebSocket types, and reach storage only through
//! the Store boundary and other nodes only through the Bus.

pub mod accounts;
pub mod login_limit;
pub mod messaging;

pub use accounts::Accounts;
pub use messaging::{Messaging, Recipient};
