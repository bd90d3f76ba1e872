//! How a refusal ([`ServiceError`]) looks over HTTP: its status, a JSON
//! `{"error": {code, message}}` body and, for rate limits, `Retry-After`.
//! The WebSocket and long-poll paths send the same code and message in an
//! `error` frame.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use missive_proto::ErrorCode;
use missive_proto::rest::{ErrorBody, ErrorDetail};

use crate::service::ServiceError;

impl ServiceError {
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadFrame
            | ErrorCode::UnknownType
            | ErrorCode::InvalidField
            | ErrorCode::InvalidUsername
            | ErrorCode::InvalidPassword
            | ErrorCode::InvalidClientMsgId
            | ErrorCode::EmptyText
            | ErrorCode::TextTooLong => StatusCode::BAD_REQUEST,
            ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnknownRoute => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NotAuthenticated | ErrorCode::TokenInvalid | ErrorCode::WrongCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::NotMember
            | ErrorCode::NotAuthor
            | ErrorCode::NotAdmin
            | ErrorCode::Blocked
            | ErrorCode::OriginNotAllowed
            | ErrorCode::AccountSuspended
            | ErrorCode::RegistrationClosed
            | ErrorCode::InviteRequired
            | ErrorCode::InviteInvalid
            | ErrorCode::EncryptionRequired
            | ErrorCode::EncryptionDisabled => StatusCode::FORBIDDEN,
            ErrorCode::ConversationEncrypted | ErrorCode::ConversationNotEncrypted => {
                StatusCode::CONFLICT
            }
            ErrorCode::EditWindowClosed | ErrorCode::MessageDeleted | ErrorCode::GroupFull => {
                StatusCode::CONFLICT
            }
            ErrorCode::AlreadyMember
            | ErrorCode::ClientMsgIdReused
            | ErrorCode::IdentityKeyMismatch => StatusCode::CONFLICT,
            ErrorCode::NotAGroup => StatusCode::BAD_REQUEST,
            ErrorCode::UnknownMessage | ErrorCode::UnknownMedia => StatusCode::NOT_FOUND,
            ErrorCode::MediaTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MediaTypeNotAllowed => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnknownUser
            | ErrorCode::UnknownDevice
            | ErrorCode::UnknownConversation
            | ErrorCode::UnknownMember => StatusCode::NOT_FOUND,
            ErrorCode::UsernameTaken
            | ErrorCode::TooManyDevices
            | ErrorCode::LimitExceeded
            | ErrorCode::AlreadyAuthenticated => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ShuttingDown | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after.map(retry_after_secs);
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        });
        let mut response = (status, body).into_response();
        if let Some(secs) = retry_after {
            if let Ok(value) = secs.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
        }
        response
    }
}

/// A `Retry-After` header's whole seconds: rounded up, so a client that
/// obeys it is not refused again.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}
