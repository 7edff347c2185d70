//! The request log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::Conversation;

/// Headers whose values are credentials: logged only as their length, so a log can be
/// printed or saved by a failing test without leaking a key.
const SECRET_HEADERS: [&str; 4] = [
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "cookie",
];

/// One request the mock received (control requests to `/__mock/…` are not logged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Milliseconds since the mock started; shows the CLI's retry spacing.
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    /// The raw query string without `?`; empty if none (the CLI sends `beta=true`).
    pub query: String,
    /// Lower-case header names; repeated headers joined with `, `. Credential values are
    /// redacted to `<redacted len=N>` (`Bearer <redacted len=N>` for bearer tokens).
    pub headers: BTreeMap<String, String>,
    /// The parsed JSON body; `None` if there was no body or it was not JSON.
    pub body: Option<Value>,
    /// What the mock answered, e.g. `text`, `queue`, `error`, `tool-final`, `classifier`.
    pub reply: String,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// `POST …/v1/messages` (any query).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }

    /// The body asked for SSE (`"stream": true`). The CLI's fallback and classifier
    /// requests are non-streaming.
    pub fn is_streaming(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(|body| Conversation::new(body).is_streaming())
    }

    /// The `model` of the body.
    pub fn model(&self) -> Option<&str> {
        self.body
            .as_ref()
            .and_then(|body| Conversation::new(body).model())
    }

    /// The prompt of the turn: the last text block of the newest user message that holds
    /// no tool results.
    pub fn prompt(&self) -> Option<&str> {
        self.body
            .as_ref()
            .and_then(|body| Conversation::new(body).prompt())
    }

    /// The text of the tool results in the newest user message, if it has any.
    pub fn tool_result(&self) -> Option<String> {
        self.body
            .as_ref()
            .and_then(|body| Conversation::new(body).latest_tool_result())
    }
}

/// Redacts a header value if the header carries credentials: its length and a fingerprint
/// (the first 16 hex digits of its SHA-256) stay, so a test can tell which credential came
/// without the log holding it.
pub(crate) fn redact(name: &str, value: &str) -> String {
    if !SECRET_HEADERS.contains(&name) {
        return value.to_owned();
    }
    match value.split_once(' ') {
        // Keep the scheme: tests check whether the CLI sent an API key or a bearer token.
        Some((scheme, secret)) if name.ends_with("authorization") => {
            format!(
                "{scheme} <redacted len={} fp={}>",
                secret.len(),
                fingerprint(secret)
            )
        }
        _ => format!("<redacted len={} fp={}>", value.len(), fingerprint(value)),
    }
}

/// The first 16 hex digits of a credential's SHA-256: what [`redact`] keeps of it.
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("x-api-key", "sk-test"),
            format!("<redacted len=7 fp={}>", fingerprint("sk-test"))
        );
        assert_eq!(
            redact("authorization", "Bearer tok123"),
            format!("Bearer <redacted len=6 fp={}>", fingerprint("tok123"))
        );
        assert_eq!(redact("x-app", "cli"), "cli");
    }
}
