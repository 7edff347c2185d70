//! How a turn ends: the `result` line (and what text mode prints instead), the synthetic
//! assistant message the CLI makes up when no model answered, and `rate_limit_event`.
//!
//! 2.1.332 builds its result from several parts, so `type` is not its first key: the
//! accounting comes first, then the outcome (`is_error`, `num_turns`, `subtype`, the
//! result or errors), then `type`, `duration_ms`, `uuid`, the timings of a success, and
//! the result's place in the process (fixtures `2.1.332/b_*`, `g1_*`, `h15_*`, `i1_*`).

use super::model::random_id;
use super::{Runner, Turn};
use crate::cli::OutputFormat;
use crate::events::{self, ApiFailure};
use crate::json::Json;
use crate::obj;
use crate::session::new_uuid;

pub(super) const INTERRUPTED_DIAGNOSTIC: &str =
    "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null";

/// Why a turn ended before its script did.
pub(super) enum Stop {
    MaxTurns,
    Budget,
    Interrupted,
}

/// How a turn ends: which kind of `result` it prints.
pub(super) enum Ending {
    Success {
        result: String,
        structured: Option<Json>,
    },
    /// `subtype:"success"` with `is_error:true`: how the CLI reports API failures. `status`
    /// is the HTTP status and the API's error type, when there was one.
    ApiError {
        status: Option<(u16, &'static str)>,
        text: String,
    },
    /// An error subtype: no `result` key, an `errors` list instead.
    Failed {
        subtype: &'static str,
        error: String,
        terminal_reason: Option<&'static str>,
        stop_reason: Option<&'static str>,
        /// What text mode prints (without a newline, as observed).
        text: String,
    },
}

impl Ending {
    pub(super) fn success(result: impl Into<String>) -> Ending {
        Ending::Success {
            result: result.into(),
            structured: None,
        }
    }

    pub(super) fn is_error(&self) -> bool {
        !matches!(self, Ending::Success { .. })
    }

    pub(super) fn max_turns(limit: u32) -> Ending {
        Ending::Failed {
            subtype: "error_max_turns",
            error: format!("Reached maximum number of turns ({limit})"),
            terminal_reason: Some("max_turns"),
            stop_reason: Some("tool_use"),
            text: format!("Error: Reached max turns ({limit})"),
        }
    }

    pub(super) fn max_budget(limit: f64) -> Ending {
        let limit = Json::from(limit); // printed as JavaScript prints the number
        Ending::Failed {
            subtype: "error_max_budget_usd",
            error: format!("Reached maximum budget (${limit})"),
            terminal_reason: Some("budget_exhausted"),
            stop_reason: Some("tool_use"),
            text: format!("Error: Exceeded USD budget ({limit})"),
        }
    }

    /// An interrupt, by control request (f5) or SIGINT (k2).
    pub(super) fn interrupted() -> Ending {
        Ending::Failed {
            subtype: "error_during_execution",
            error: INTERRUPTED_DIAGNOSTIC.to_string(),
            terminal_reason: Some("aborted_streaming"),
            stop_reason: None,
            text: format!("Error: {INTERRUPTED_DIAGNOSTIC}"),
        }
    }

    pub(super) fn failed(
        subtype: &'static str,
        error: &str,
        stop_reason: Option<&'static str>,
    ) -> Ending {
        Ending::Failed {
            subtype,
            error: error.to_string(),
            terminal_reason: None,
            stop_reason,
            text: format!("Error: {error}"),
        }
    }
}

/// The wording of an API failure: result text, the synthetic event's `error`, and the
/// API's error type.
pub(super) struct ApiErrorText {
    pub text: String,
    pub error: &'static str,
    pub kind: &'static str,
}

/// An API failure in the real CLI's wording (h1-h4, h12, h13, h15-h17, o1), with the
/// API's message (mock-anthropic's `mock <status> <type>`) replaced by a plausible one.
pub(super) fn api_error_text(status: u16, model: &str) -> ApiErrorText {
    let (text, error, kind) = match status {
        401 => (
            "Failed to authenticate. API Error: 401 authentication_error: invalid x-api-key".into(),
            "authentication_failed",
            "authentication_error",
        ),
        403 => (
            "Failed to authenticate. API Error: 403 permission_error: forbidden".into(),
            "authentication_failed",
            "permission_error",
        ),
        404 => (
            format!(
                "There's an issue with the selected model ({model}). It may not exist or you may not have access to it. Run --model to pick a different model."
            ),
            "unknown",
            "not_found_error",
        ),
        429 => (
            "API Error: Request rejected (429) · rate_limit_error: rate limited".into(),
            "rate_limit",
            "rate_limit_error",
        ),
        500..=599 => {
            let kind = if status == 529 {
                "overloaded_error"
            } else {
                "api_error"
            };
            (
                format!(
                    "API Error: {status} {kind}. This is a server-side issue, usually temporary — try again in a moment."
                ),
                "server_error",
                kind,
            )
        }
        400 => (
            "API Error: 400 invalid_request_error".into(),
            "unknown",
            "invalid_request_error",
        ),
        _ => (format!("API Error: {status} error"), "unknown", "api_error"),
    };
    ApiErrorText { text, error, kind }
}

impl Runner {
    /// A `rate_limit_event` whose limit resets `secs` from now; returns that reset time
    /// in epoch seconds (the event's `resetsAt`). No recording has one: mock-anthropic
    /// cannot send the subscription's rate-limit headers that make the CLI print it.
    pub(super) fn rate_limit_event(&mut self, status: &str, secs: u64) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resets_at = now + secs;
        let info = obj! {
            "status" => status,
            "resetsAt" => resets_at,
            "rateLimitType" => "five_hour",
            "overageStatus" => "rejected",
            "overageDisabledReason" => "org_level_disabled",
            "isUsingOverage" => false,
        };
        self.out.event(obj! {
            "type" => "rate_limit_event",
            "rate_limit_info" => info,
            "uuid" => new_uuid(),
            "session_id" => self.session_id.clone(),
        });
        resets_at
    }

    /// The synthetic assistant message the CLI shows when no model answered.
    pub(super) fn synthetic_failure(
        &mut self,
        turn: &mut Turn,
        text: String,
        error: &str,
        status: Option<(u16, &'static str)>,
        sent_request: bool,
    ) -> Ending {
        let message = events::synthetic_message(&text);
        let uuid = new_uuid();
        let request_id = sent_request.then(|| format!("req_011{}", random_id(21)));
        let failure = ApiFailure {
            error,
            request_id: request_id.as_deref(),
            status,
        };
        self.out.event(events::synthetic_event(
            message.clone(),
            &self.session_id,
            &uuid,
            &failure,
        ));
        self.transcript
            .assistant(&uuid, message, request_id.as_deref());
        turn.stop_reason = "stop_sequence";
        Ending::ApiError { status, text }
    }

    /// The result event and what text mode prints instead.
    pub(super) fn result_event(&self, turn: &Turn, ending: &Ending) -> (Json, String) {
        let (terminal_reason, stop_reason) = match ending {
            Ending::Success { .. } => (Some("completed"), Some(turn.stop_reason)),
            Ending::ApiError { .. } => (Some("api_error"), Some(turn.stop_reason)),
            Ending::Failed {
                terminal_reason,
                stop_reason,
                ..
            } => (*terminal_reason, *stop_reason),
        };
        let api_ms = match ending {
            Ending::ApiError { .. } => 0,
            _ => turn.api_ms,
        };
        let mut event = obj! {
            "duration_api_ms" => api_ms,
            "stop_reason" => stop_reason,
            "session_id" => self.session_id.clone(),
            "total_cost_usd" => self.total_cost(),
            "usage" => events::result_usage(turn.usage),
            "modelUsage" => events::model_usage(&self.spent),
            "permission_denials" => Json::Arr(turn.denials.clone()),
        };
        if let Some(reason) = terminal_reason {
            event.set("terminal_reason", reason);
        }
        event.set("fast_mode_state", "off");
        event.set("fast_mode_disabled_reason", "sdk_opt_in_required");
        event.set("subagent_stats", events::subagent_stats());
        event.set("safety_stops", 0);
        event.set("is_error", ending.is_error());
        event.set("num_turns", turn.num_turns);

        let to_request = turn.time_to_request_ms.unwrap_or(0);
        let ttft = turn.ttft_ms.unwrap_or(to_request);
        let text = match ending {
            Ending::Success { result, structured } => {
                event.set("subtype", "success");
                event.set("api_error_status", Json::Null);
                event.set("result", result.as_str());
                if let Some(value) = structured {
                    event.set("structured_output", value.clone());
                }
                event.set("ttft_ms", ttft);
                format!("{result}\n")
            }
            Ending::ApiError { status, text } => {
                event.set("subtype", "success");
                event.set("api_error_status", status.map(|(code, _)| code));
                if let Some((_, kind)) = status {
                    event.set("api_error_type", *kind);
                }
                event.set("result", text.as_str());
                format!("{text}\n")
            }
            Ending::Failed {
                subtype,
                error,
                text,
                ..
            } => {
                event.set("subtype", *subtype);
                event.set("errors", vec![error.clone()]);
                text.clone()
            }
        };
        event.set("type", "result");
        event.set("duration_ms", turn.elapsed_ms());
        event.set("uuid", new_uuid());
        // With partial messages (c, c4: recorded on successes).
        if self.config.partial_messages {
            event.set("begun_message_ids", turn.begun_message_ids.clone());
        }
        if let Ending::Success { .. } = ending {
            event.set("ttft_stream_ms", ttft);
            event.set("time_to_request_ms", to_request);
            event.set("first_content_frame_ms", ttft);
        }
        event.set("queued_turn_count", 0);
        event.set("result_index", self.results);
        // Only stream-json readers get the turn's own spend (a_json_text has none).
        if self.config.output == OutputFormat::StreamJson {
            event.set(
                "model_usage_since_last_result",
                events::model_usage(&turn.spent),
            );
        }
        (event, text)
    }
}
