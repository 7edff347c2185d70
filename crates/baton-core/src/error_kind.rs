//! Why a job attempt failed, classified once so that the API, the retry policy and the
//! dashboard all agree. The wire name (`as_str`) is what users see as the job's
//! `error.type`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The API refused the credentials (401/403, or no credentials at all).
    AuthenticationError,
    /// The API or the CLI refused the request itself (400, unknown model, bad flags).
    InvalidRequest,
    /// The API answered 429; retried after the announced time.
    RateLimited,
    /// A server-side API failure (5xx, 529 overloaded, connection refused, API timeout).
    ApiError,
    /// `max_turns` was reached.
    MaxTurns,
    /// `max_budget_usd` was reached.
    MaxBudget,
    /// The model failed to produce schema-valid structured output.
    StructuredOutputInvalid,
    /// The CLI reported success for a `json_schema` job but gave no `structured_output`.
    StructuredOutputMissing,
    /// The CLI reported `error_during_execution`.
    ExecutionError,
    /// A resume named a session the CLI could not find.
    SessionNotFound,
    /// The job's wall-clock `timeout_ms` ran out.
    Timeout,
    /// The CLI printed nothing for longer than the silence timeout (a stalled stream).
    SilenceTimeout,
    /// The CLI printed a line longer than the configured maximum.
    OutputTooLarge,
    /// The CLI printed something that is not stream-json.
    ProtocolError,
    /// The CLI died (signal or non-zero exit) without a `result` event.
    Crashed,
    /// The CLI exited cleanly without a `result` event.
    NoResult,
    /// The CLI binary could not be found or executed.
    CliNotFound,
    /// The process could not be started for a transient reason, or its workspace could
    /// not be prepared.
    SpawnFailed,
    /// The attempt was cut short by Baton itself: its node died or drained.
    Interrupted,
    /// The job was cancelled.
    Cancelled,
    /// Its stored record could not be decoded; it was set aside so the queue goes on.
    CorruptRecord,
    /// An agent's `verify` command refused the run's output (it exited non-zero); another
    /// attempt may propose better.
    VerificationFailed,
    /// A hard budget was spent: Baton's proxy refused the run's next API call. Not
    /// retried (another attempt would spend more).
    BudgetExceeded,
    /// The sandbox could not be made (bubblewrap missing or refused): the CLI never ran,
    /// and never runs without it. Not retried: the node's set-up must change.
    SandboxFailed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 24] = [
        Self::AuthenticationError,
        Self::InvalidRequest,
        Self::RateLimited,
        Self::ApiError,
        Self::MaxTurns,
        Self::MaxBudget,
        Self::StructuredOutputInvalid,
        Self::StructuredOutputMissing,
        Self::ExecutionError,
        Self::SessionNotFound,
        Self::Timeout,
        Self::SilenceTimeout,
        Self::OutputTooLarge,
        Self::ProtocolError,
        Self::Crashed,
        Self::NoResult,
        Self::CliNotFound,
        Self::SpawnFailed,
        Self::Interrupted,
        Self::Cancelled,
        Self::CorruptRecord,
        Self::VerificationFailed,
        Self::BudgetExceeded,
        Self::SandboxFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthenticationError => "authentication_error",
            Self::InvalidRequest => "invalid_request",
            Self::RateLimited => "rate_limited",
            Self::ApiError => "api_error",
            Self::MaxTurns => "max_turns",
            Self::MaxBudget => "max_budget",
            Self::StructuredOutputInvalid => "structured_output_invalid",
            Self::StructuredOutputMissing => "structured_output_missing",
            Self::ExecutionError => "execution_error",
            Self::SessionNotFound => "session_not_found",
            Self::Timeout => "timeout",
            Self::SilenceTimeout => "silence_timeout",
            Self::OutputTooLarge => "output_too_large",
            Self::ProtocolError => "protocol_error",
            Self::Crashed => "crashed",
            Self::NoResult => "no_result",
            Self::CliNotFound => "cli_not_found",
            Self::SpawnFailed => "spawn_failed",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
            Self::CorruptRecord => "corrupt_record",
            Self::VerificationFailed => "verification_failed",
            Self::BudgetExceeded => "budget_exceeded",
            Self::SandboxFailed => "sandbox_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether another attempt could plausibly succeed. A refused key, an invalid request,
    /// an exhausted limit or a job-level timeout will fail the same way again; a crash, a
    /// stall or an overloaded API may not.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::ApiError
                | Self::SilenceTimeout
                | Self::Crashed
                | Self::NoResult
                | Self::SpawnFailed
                | Self::Interrupted
                | Self::VerificationFailed
        )
    }

    /// Classifies an `is_error` result by the HTTP status the CLI reports in
    /// `api_error_status` (`None` for connection failures and timeouts).
    pub fn from_api_status(status: Option<u16>) -> Self {
        match status {
            Some(401 | 403) => Self::AuthenticationError,
            Some(429) => Self::RateLimited,
            Some(400 | 404 | 413 | 422) => Self::InvalidRequest,
            _ => Self::ApiError,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_match_serde() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn api_statuses_classify() {
        assert_eq!(
            ErrorKind::from_api_status(Some(401)),
            ErrorKind::AuthenticationError
        );
        assert_eq!(ErrorKind::from_api_status(Some(529)), ErrorKind::ApiError);
        assert_eq!(ErrorKind::from_api_status(None), ErrorKind::ApiError);
        assert!(!ErrorKind::AuthenticationError.is_retryable());
        assert!(ErrorKind::ApiError.is_retryable());
    }
}
