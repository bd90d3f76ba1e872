//! The Store boundary, one trait per concern, so that a caller names the part
//! it uses; [`Store`](crate::Store) is all of them together.

mod accounts;
mod groups;
mod history;
mod keys;
mod media;
mod messaging;
mod sessions;
mod social;

pub use accounts::AccountStore;
pub use groups::GroupStore;
pub use history::HistoryStore;
pub use keys::KeyStore;
pub use media::MediaStore;
pub use messaging::MessageStore;
pub use sessions::SessionStore;
pub use social::SocialStore;
