//! The wire format of missive: every WebSocket frame and REST body a client
//! sees, and the stable error codes. This is the only crate whose types derive
//! serde for the wire; changing a type here is a protocol change and must be
//! reflected in docs/PROTOCOL.md.

pub mod codes;
pub mod frames;
pub mod rest;
pub mod view;

pub use codes::{CloseCode, ErrorCode};
pub use frames::{
    ClientFrame, DecodeError, MessageKind, ServerFrame, ToDeviceOut, TypingState,
    decode_client_frame,
};
pub use view::FrameView;

/// Path of the WebSocket endpoint; the version is part of the path.
pub const WS_PATH: &str = "/v1/ws";
