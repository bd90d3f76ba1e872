//! The missive protocol client used by the CLI, the tests and (later) the
//! terminal app and load generator: REST calls and a WebSocket connection
//! speaking the frames of `missive-proto`.

mod api;
mod connection;
mod errors;

pub use api::{Api, Download, ws_url};
pub use connection::{Connection, Recipient};
pub use errors::ClientError;
/// A text frame as it arrived, undecoded (shares the read buffer's bytes).
pub use tokio_tungstenite::tungstenite::Utf8Bytes as FrameText;
