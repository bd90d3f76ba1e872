//! Domain services: what the gateway calls. They speak domain types and
//! `ServiceError`, never HTTP or WebSocket types, and reach storage only through
//! the Store boundary and other nodes only through the Bus.

pub mod accounts;
pub mod device_list;
pub mod error;
pub mod groups;
pub mod keys;
pub mod login_limit;
pub mod media;
pub mod messaging;
pub mod password;
pub mod push;
pub mod send_limit;
pub mod social;

pub use accounts::Accounts;
pub use error::ServiceError;
pub use groups::Groups;
pub use keys::Keys;
pub use media::Media;
pub use messaging::{CheckedSend, Draft, Messaging, QueuedSend, Recipient};
pub use push::Push;
pub use social::Social;

use missive_core::{AccountId, Username};
use missive_proto::ErrorCode;
use missive_store::Store;

use crate::config::E2eePolicy;

/// Refuses what the operator's policy forbids: ciphertext (or turning
/// encryption on) under `off`, plaintext under `required`.
pub fn check_e2ee(policy: E2eePolicy, encrypted: bool) -> Result<(), ServiceError> {
    match (policy, encrypted) {
        (E2eePolicy::Off, true) => Err(ServiceError::new(
            ErrorCode::EncryptionDisabled,
            "end-to-end encrypted conversations are turned off on this server",
        )),
        (E2eePolicy::Required, false) => Err(ServiceError::new(
            ErrorCode::EncryptionRequired,
            "this server accepts only end-to-end encrypted messages",
        )),
        _ => Ok(()),
    }
}

/// The account named `username`; `unknown_user` when there is none (or the
/// name is not even valid, which the client need not distinguish).
pub async fn account_named(store: &dyn Store, username: &str) -> Result<AccountId, ServiceError> {
    let unknown = || ServiceError::new(ErrorCode::UnknownUser, format!("no user {username:?}"));
    let parsed = Username::parse(username).map_err(|_| unknown())?;
    Ok(store
        .account_by_username(&parsed)
        .await?
        .ok_or_else(unknown)?
        .id)
}
