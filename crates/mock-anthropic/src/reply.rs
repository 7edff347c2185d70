//! What the mock answers to one `POST /v1/messages`.
//!
//! A [`Reply`] describes a whole answer: a model message (streamed or not, depending on the
//! request), an HTTP error, or a request that is never answered. Build one with the
//! constructors on [`Reply`] and queue it with [`crate::MockAnthropic::push`].

use std::time::Duration;

use serde_json::Value;

/// `input_tokens` reported when a reply does not say otherwise. It is the value the real
/// CLI reported for a plain prompt in the recorded fixtures, so costs computed by the CLI
/// (`total_cost_usd`) look like real ones.
pub const DEFAULT_INPUT_TOKENS: u64 = 1667;

/// Text blocks are streamed in `text_delta`s of this many characters, like the mock that
/// recorded the fixtures (`"partial answ"`, `"er that neve"`).
pub(crate) const TEXT_DELTA_CHARS: usize = 12;

/// The first two deltas of a stalled stream: the ones seen in fixture
/// `h9_hang_midstream_defaults`.
pub const STALL_DELTAS: [&str; 2] = ["partial answ", "er that neve"];

/// One scripted answer to a `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A model message: SSE when the request asked for `stream: true`, one JSON object
    /// otherwise.
    Message(Message),
    /// An HTTP error with the Anthropic error envelope.
    Error(ApiError),
    /// Accept the request and never send a status line, until the mock is dropped (then
    /// the connection is cut). This is how the CLI's `API_TIMEOUT_MS` is exercised.
    Hang,
}

impl Reply {
    /// A message with one text block.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Message(Message::new(vec![Block::text(text)]))
    }

    /// A message with one text block per item. The CLI's `result` is only the *last*
    /// text block of the final message, which is what this is for.
    pub fn texts<I, S>(texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Message(Message::new(texts.into_iter().map(Block::text).collect()))
    }

    /// A message with a single `tool_use` block; `stop_reason` is `tool_use`.
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Self::Message(Message::new(vec![Block::tool_use(name, input)]))
    }

    /// A call of the `StructuredOutput` tool that the CLI adds for `--json-schema`.
    pub fn structured_output(input: Value) -> Self {
        Self::tool_use("StructuredOutput", input)
    }

    /// A text answer cut off by the output limit: `stop_reason` is `max_tokens`.
    pub fn max_tokens(text: impl Into<String>) -> Self {
        let mut message = Message::new(vec![Block::text(text)]);
        message.stop_reason = StopReason::MaxTokens;
        Self::Message(message)
    }

    /// An HTTP error; the error type is derived from the status
    /// ([`ApiError::type_for_status`]).
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::Error(ApiError::new(status, message))
    }

    /// The stream starts (`message_start`, a text block and `deltas`) and then goes silent,
    /// with the connection open, until the mock is dropped.
    ///
    /// A non-streaming request given this reply hangs instead (it has no partial state to
    /// show).
    pub fn stall<I, S>(deltas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut message = Message::new(vec![Block::text_deltas(deltas)]);
        message.stall = true;
        Self::Message(message)
    }

    /// Accept the request and never answer; see [`Reply::Hang`].
    pub fn hang() -> Self {
        Self::Hang
    }

    /// A text answer streamed as `deltas` text deltas (`"tick 1"`, `" tick 2"`, …) with
    /// `delay` before each delta after the first. A non-streaming request waits for the
    /// same total time, then gets the whole text.
    pub fn slow(deltas: usize, delay: Duration) -> Self {
        let pieces = (1..=deltas).map(|i| {
            if i == 1 {
                format!("tick {i}")
            } else {
                format!(" tick {i}")
            }
        });
        let mut message = Message::new(vec![Block::text_deltas(pieces)]);
        message.delta_delay = delay;
        Self::Message(message)
    }

    /// Sets the usage reported for a [`Reply::Message`]; other replies are returned
    /// unchanged.
    #[must_use]
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        if let Self::Message(message) = &mut self {
            message.usage = Usage {
                input_tokens,
                output_tokens: Some(output_tokens),
            };
        }
        self
    }

    /// Adds a `retry-after: <seconds>` header to a [`Reply::Error`]; other replies are
    /// returned unchanged.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        if let Self::Error(error) = &mut self {
            error.retry_after = Some(seconds);
        }
        self
    }

    /// Waits `delay` before every delta after the first of a [`Reply::Message`]; other
    /// replies are returned unchanged.
    #[must_use]
    pub fn with_delta_delay(mut self, delay: Duration) -> Self {
        if let Self::Message(message) = &mut self {
            message.delta_delay = delay;
        }
        self
    }

    /// The text the CLI will show as the `result` of this reply, if it is a message: its
    /// last text block.
    pub fn final_text(&self) -> Option<String> {
        match self {
            Self::Message(message) => message.content.iter().rev().find_map(Block::text_content),
            Self::Error(_) | Self::Hang => None,
        }
    }
}

impl From<Message> for Reply {
    fn from(message: Message) -> Self {
        Self::Message(message)
    }
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Self {
        Self::Error(error)
    }
}

/// An assistant message, before ids and the model name are filled in per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub content: Vec<Block>,
    pub stop_reason: StopReason,
    pub usage: Usage,
    /// Pause before every content delta after the first (streaming only; a non-streaming
    /// answer waits for the sum).
    pub delta_delay: Duration,
    /// Stop after the last delta and keep the connection open and silent until the mock is
    /// dropped: no `content_block_stop`, `message_delta` or `message_stop`.
    pub stall: bool,
}

impl Message {
    /// A complete message; `stop_reason` is `tool_use` if any block is a tool call and
    /// `end_turn` otherwise.
    pub fn new(content: Vec<Block>) -> Self {
        let stop_reason = if content.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        Self {
            content,
            stop_reason,
            usage: Usage::default(),
            delta_delay: Duration::ZERO,
            stall: false,
        }
    }
}

/// One content block of a [`Message`].
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A text block, streamed as one `text_delta` per element of `deltas`.
    Text { deltas: Vec<String> },
    /// A tool call; its id (`toolu_…`) is generated per response. Streamed as
    /// `input_json_delta` pieces of the serialised input.
    ToolUse { name: String, input: Value },
    /// An extended-thinking block, streamed as `thinking_delta`s then one
    /// `signature_delta`.
    Thinking { thinking: String, signature: String },
}

impl Block {
    /// A text block split into the usual 12-character deltas.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            deltas: split_chars(&text.into(), TEXT_DELTA_CHARS),
        }
    }

    /// A text block streamed exactly as the given deltas.
    pub fn text_deltas<I, S>(deltas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Text {
            deltas: deltas.into_iter().map(Into::into).collect(),
        }
    }

    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Self::ToolUse {
            name: name.into(),
            input,
        }
    }

    /// A thinking block with a fixed, opaque signature (the CLI only echoes it back).
    pub fn thinking(thinking: impl Into<String>) -> Self {
        Self::Thinking {
            thinking: thinking.into(),
            signature: "bW9jay1zaWduYXR1cmU=".to_owned(),
        }
    }

    /// The whole text of a text block.
    pub fn text_content(&self) -> Option<String> {
        match self {
            Self::Text { deltas } => Some(deltas.concat()),
            Self::ToolUse { .. } | Self::Thinking { .. } => None,
        }
    }
}

/// Why the message ended (`message_delta.delta.stop_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    /// One of the request's `stop_sequences` was hit (the mock applies them to text, as
    /// the API does; the auto-mode classifier relies on it).
    StopSequence(String),
}

impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::EndTurn => "end_turn",
            Self::ToolUse => "tool_use",
            Self::MaxTokens => "max_tokens",
            Self::StopSequence(_) => "stop_sequence",
        }
    }
}

/// Token counts reported for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    /// `None` derives a plausible count from the content size.
    pub output_tokens: Option<u64>,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            input_tokens: DEFAULT_INPUT_TOKENS,
            output_tokens: None,
        }
    }
}

/// An HTTP error answer: `{"type":"error","error":{"type":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// E.g. `authentication_error`, `rate_limit_error`, `overloaded_error`.
    pub error_type: String,
    pub message: String,
    /// Sent as the `retry-after` header; the CLI treats it as a floor for its backoff.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error whose type is derived from the status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type: Self::type_for_status(status).to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The error the `MOCK_ERROR <status>` directive sends: message
    /// `mock <status> <type>`, as in the recorded fixtures.
    pub fn mock(status: u16) -> Self {
        let error_type = Self::type_for_status(status);
        Self::new(status, format!("mock {status} {error_type}"))
    }

    #[must_use]
    pub fn with_type(mut self, error_type: impl Into<String>) -> Self {
        self.error_type = error_type.into();
        self
    }

    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The Anthropic error type the API uses for an HTTP status.
    pub fn type_for_status(status: u16) -> &'static str {
        match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            _ => "api_error",
        }
    }
}

/// Splits `text` into pieces of at most `size` characters (never inside a UTF-8 sequence).
/// Empty text gives no pieces.
pub(crate) fn split_chars(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|chunk| chunk.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_char_boundaries() {
        assert_eq!(split_chars("héllo wörld", 4), ["héll", "o wö", "rld"]);
        assert!(split_chars("", 4).is_empty());
    }

    #[test]
    fn stop_reason_follows_content() {
        assert_eq!(
            Message::new(vec![Block::text("a")]).stop_reason,
            StopReason::EndTurn
        );
        assert_eq!(
            Message::new(vec![Block::text("a"), Block::tool_use("Bash", Value::Null)]).stop_reason,
            StopReason::ToolUse
        );
    }

    #[test]
    fn final_text_is_the_last_text_block() {
        assert_eq!(
            Reply::texts(["part A.", "part B."]).final_text().as_deref(),
            Some("part B.")
        );
        assert_eq!(Reply::hang().final_text(), None);
    }
}
