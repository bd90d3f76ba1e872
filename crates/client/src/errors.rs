//! What a call of this client can fail with.

use missive_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with a typed error.
    #[error("{code}: {message}", code = code.as_str())]
    Refused { code: ErrorCode, message: String },
    /// The server could not be reached or the connection broke.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The server said something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection was closed by the server.
    #[error("connection closed by the server ({code} {reason})")]
    Closed { code: u16, reason: String },
    #[error("timed out waiting for the server")]
    Timeout,
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub(crate) fn transport(err: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(err.to_string())
}
