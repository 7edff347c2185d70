//! The one error envelope, and the one table from internal errors to HTTP.

use crate::wire::{ErrorBody, ErrorDetail, ErrorName, ErrorTag};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_engine::EngineError;
use baton_store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    /// The route exists, the method does not (405, with `Allow`).
    MethodNotAllowed,
    Conflict,
    RequestTooLarge,
    RateLimit,
    Api,
    Overloaded,
    /// A synchronous facade's job failed (the seed wrappers answer 502).
    BadGateway,
    /// A synchronous facade's job did not finish in time (504).
    GatewayTimeout,
}

impl ErrorType {
    /// The table: every error Baton returns has exactly one status and one type.
    pub fn status_and_name(self) -> (StatusCode, ErrorName) {
        match self {
            Self::InvalidRequest => (StatusCode::BAD_REQUEST, ErrorName::InvalidRequestError),
            Self::Authentication => (StatusCode::UNAUTHORIZED, ErrorName::AuthenticationError),
            Self::Permission => (StatusCode::FORBIDDEN, ErrorName::PermissionError),
            Self::NotFound => (StatusCode::NOT_FOUND, ErrorName::NotFoundError),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorName::InvalidRequestError,
            ),
            Self::Conflict => (StatusCode::CONFLICT, ErrorName::ConflictError),
            Self::RequestTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorName::RequestTooLarge),
            Self::RateLimit => (StatusCode::TOO_MANY_REQUESTS, ErrorName::RateLimitError),
            Self::Api => (StatusCode::INTERNAL_SERVER_ERROR, ErrorName::ApiError),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, ErrorName::OverloadedError),
            Self::BadGateway => (StatusCode::BAD_GATEWAY, ErrorName::ApiError),
            Self::GatewayTimeout => (StatusCode::GATEWAY_TIMEOUT, ErrorName::TimeoutError),
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
    /// Extra fields merged into the `error` object (e.g. the job a facade ran).
    pub detail: Option<serde_json::Value>,
    /// Seconds for `Retry-After` on a 429 or 503 (1 when not set).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorType::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorType::NotFound, message)
    }

    /// An `Idempotency-Key` seen before with a different request body.
    pub fn key_reused() -> Self {
        Self::new(
            ErrorType::Conflict,
            "this Idempotency-Key was already used with a different request body",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(m) => Self::new(ErrorType::Conflict, m),
            StoreError::Fenced { .. } => Self::new(ErrorType::Conflict, e.to_string()),
            StoreError::Corrupt(what) => {
                tracing::error!(error = %what, "corrupt data");
                Self::new(
                    ErrorType::Overloaded,
                    format!(
                        "a stored record could not be read ({what}); it needs repair, and nothing else is affected"
                    ),
                )
            }
            StoreError::Busy(why) => {
                tracing::error!(error = %why, "database busy");
                Self::new(
                    ErrorType::Overloaded,
                    format!(
                        "the database is busy or locked ({why}); nothing was changed, retry later"
                    ),
                )
            }
            StoreError::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                Self::new(
                    ErrorType::Overloaded,
                    format!(
                        "the database is unavailable ({cause}); nothing was changed, retry later"
                    ),
                )
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::ShuttingDown => Self::new(
                ErrorType::Overloaded,
                "Baton is shutting down and accepts no new jobs; retry on another node or later",
            ),
        }
    }
}

pub fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, name) = self.kind.status_and_name();
        let request_id = new_request_id();
        let detail = match self.detail {
            Some(serde_json::Value::Object(extra)) => extra,
            _ => serde_json::Map::new(),
        };
        let body = ErrorBody {
            tag: ErrorTag::Tag,
            error: ErrorDetail {
                kind: name,
                message: self.message,
                detail,
            },
            request_id: request_id.clone(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("request-id", v);
        }
        if self.kind == ErrorType::Authentication {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"baton\""),
            );
        }
        if self.kind == ErrorType::Overloaded || self.kind == ErrorType::RateLimit {
            resp.headers_mut().insert(
                "retry-after",
                HeaderValue::from(self.retry_after.unwrap_or(1).max(1)),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
