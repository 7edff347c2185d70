//! A JSON body extractor whose every refusal uses the error envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorType};

/// The parsed body, and its raw bytes (hashed for idempotency).
pub struct Body<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorType::RequestTooLarge,
                    "the request body is larger than the server's limit (server.max_body_bytes)",
                )
            } else {
                ApiError::invalid(format!("could not read the request body: {e}"))
            }
        })?;
        if raw.is_empty() {
            return Err(ApiError::invalid("a JSON body is required"));
        }
        let value = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        Ok(Self { value, raw })
    }
}
