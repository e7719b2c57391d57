//! The one error type of the OAuth endpoints: RFC 6749 §5.2 error codes (plus the RFC 7591,
//! RFC 8707 and RFC 6750 ones) as an enum, rendered as JSON with `Cache-Control: no-store`.
//! Internal failures answer with a generic body; the cause goes into the response extensions
//! where the logging middleware picks it up, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keys::KeyRingError;
use crate::store::StoreError;

/// An OAuth error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// RFC 6749 §5.2.
    InvalidRequest,
    /// RFC 6749 §5.2: client authentication failed.
    InvalidClient,
    /// RFC 6749 §5.2: bad code, refresh token, verifier or redirect URI.
    InvalidGrant,
    /// RFC 6749 §5.2.
    UnauthorizedClient,
    /// RFC 6749 §5.2.
    UnsupportedGrantType,
    /// RFC 6749 §4.1.2.1: `/authorize` with a `response_type` other than `code`.
    UnsupportedResponseType,
    /// RFC 6749 §5.2.
    InvalidScope,
    /// RFC 8707 §2.
    InvalidTarget,
    /// RFC 7591 §3.2.2.
    InvalidRedirectUri,
    /// RFC 7591 §3.2.2.
    InvalidClientMetadata,
    /// RFC 6750 §3.1 (registration management, initial access token).
    InvalidToken,
    /// RFC 6749 §4.1.2.1.
    AccessDenied,
    /// RFC 7009 §2.2.1.
    UnsupportedTokenType,
    /// Too many requests (a rate limit; 429 with `Retry-After`).
    SlowDown,
    /// RFC 6749 §5.2 (as in §4.1.2.1): an internal failure.
    ServerError,
    /// Redis unreachable.
    TemporarilyUnavailable,
}

/// An error response.
#[derive(Debug)]
pub struct OAuthError {
    /// The code.
    pub code: ErrorCode,
    /// A human-readable description (never echoes secrets; may be empty).
    pub description: String,
    /// Internal cause, for the log only.
    cause: Option<String>,
    /// Seconds after which a rate-limited client may try again (`Retry-After`).
    retry_after: Option<u64>,
    /// A body over the size limit: 413 instead of the code's status.
    too_large: bool,
}

/// The internal cause of a 5xx, put into the response extensions for the logging middleware.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

impl OAuthError {
    /// An error with a description.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            cause: None,
            retry_after: None,
            too_large: false,
        }
    }

    /// A request body over the limit: 413 `invalid_request`.
    pub fn too_large() -> OAuthError {
        OAuthError {
            too_large: true,
            ..OAuthError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the request body is larger than {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            )
        }
    }

    /// A rate limit reached: 429 `slow_down` with `Retry-After: retry_after` (seconds).
    pub fn rate_limited(description: impl Into<String>, retry_after: u64) -> OAuthError {
        OAuthError {
            retry_after: Some(retry_after.max(1)),
            ..OAuthError::new(ErrorCode::SlowDown, description)
        }
    }

    /// The HTTP status for the code.
    pub fn status(&self) -> StatusCode {
        if self.too_large {
            return StatusCode::PAYLOAD_TOO_LARGE;
        }
        match self.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::SlowDown => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> OAuthError {
        let code = match e {
            StoreError::Redis(_) => ErrorCode::TemporarilyUnavailable,
            StoreError::Corrupt(_) => ErrorCode::ServerError,
        };
        OAuthError {
            code,
            description: String::new(),
            cause: Some(e.to_string()),
            retry_after: None,
            too_large: false,
        }
    }
}

impl From<KeyRingError> for OAuthError {
    fn from(e: KeyRingError) -> OAuthError {
        OAuthError {
            code: ErrorCode::ServerError,
            description: String::new(),
            cause: Some(e.to_string()),
            retry_after: None,
            too_large: false,
        }
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` on a response (RFC 6749 §5.1).
pub fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: ErrorCode,
            #[serde(skip_serializing_if = "str::is_empty")]
            error_description: &'a str,
        }
        let status = self.status();
        let description = if status.is_server_error() {
            "the server could not complete the request"
        } else {
            &self.description
        };
        let mut response = (
            status,
            axum::Json(Body {
                error: self.code,
                error_description: description,
            }),
        )
            .into_response();
        match self.code {
            ErrorCode::InvalidClient => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mcpgw\""),
                );
            }
            ErrorCode::InvalidToken => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(InternalCause(cause));
        }
        no_store(response)
    }
}
