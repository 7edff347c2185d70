//! Builders for the stream-json events, with the key sets and key order of the real CLI's
//! output (fixtures `2.1.332/b_stream_json_verbose`, `d0_*`, `d4_*`, `g1_*`, `h15_*`,
//! `e3b_*`, ...). `system/init` is in `init`, token counts in `usage`.

mod init;
mod usage;

pub use init::{init, initialize_response};
pub use usage::{
    Usage, block_usage, empty_usage, full_usage, model_usage, record, result_usage, total_cost,
};

use crate::json::Json;
use crate::obj;
use crate::session::{new_uuid, now_iso};

/// An assistant event carrying one content block of a message.
pub struct AssistantBlock<'a> {
    pub message_id: &'a str,
    pub request_id: &'a str,
    pub model: &'a str,
    pub session_id: &'a str,
    pub uuid: &'a str,
    pub block: Json,
    pub input_tokens: u64,
}

impl AssistantBlock<'_> {
    pub fn event(&self) -> Json {
        obj! {
            "type" => "assistant",
            "message" => obj! {
                "id" => self.message_id,
                "type" => "message",
                "role" => "assistant",
                "model" => self.model,
                "content" => Json::Arr(vec![self.block.clone()]),
                "stop_reason" => Json::Null,
                "stop_sequence" => Json::Null,
                "usage" => block_usage(self.input_tokens),
                "context_management" => Json::Null,
            },
            "parent_tool_use_id" => Json::Null,
            "session_id" => self.session_id,
            "uuid" => self.uuid,
            "timestamp" => now_iso(),
            "request_id" => self.request_id,
        }
    }

    /// The message as the transcript stores it: final stop reason and usage.
    pub fn stored_message(&self, stop_reason: Option<&str>, usage: Usage) -> Json {
        obj! {
            "id" => self.message_id,
            "type" => "message",
            "role" => "assistant",
            "model" => self.model,
            "content" => Json::Arr(vec![self.block.clone()]),
            "stop_reason" => stop_reason,
            "stop_sequence" => Json::Null,
            "usage" => full_usage(usage),
            "stop_details" => Json::Null,
        }
    }
}

/// The message the CLI makes up when no model answered (API errors, not logged in).
pub fn synthetic_message(text: &str) -> Json {
    obj! {
        "diagnostics" => Json::Null,
        "id" => new_uuid(),
        "container" => Json::Null,
        "model" => "<synthetic>",
        "role" => "assistant",
        "stop_details" => Json::Null,
        "stop_reason" => "stop_sequence",
        "stop_sequence" => "",
        "type" => "message",
        "usage" => usage::synthetic_usage(),
        "content" => Json::Arr(vec![obj! { "type" => "text", "text" => text }]),
        "context_management" => Json::Null,
    }
}

/// What a synthetic assistant event says about the failed request.
pub struct ApiFailure<'a> {
    /// The event's `error`, e.g. `authentication_failed`, `rate_limit`, `server_error`.
    pub error: &'a str,
    /// Present when a request was answered (with an error status).
    pub request_id: Option<&'a str>,
    /// The HTTP status and the API's error type, when the API answered one (h15, h16, h17).
    pub status: Option<(u16, &'a str)>,
}

pub fn synthetic_event(message: Json, session_id: &str, uuid: &str, failure: &ApiFailure) -> Json {
    let mut event = obj! {
        "type" => "assistant",
        "message" => message,
        "parent_tool_use_id" => Json::Null,
        "session_id" => session_id,
        "uuid" => uuid,
        "timestamp" => now_iso(),
        "error" => failure.error,
    };
    if let Some(id) = failure.request_id {
        event.set("request_id", id);
    }
    event.set("is_api_error_message", true);
    if let Some((status, kind)) = failure.status {
        event.set("api_error_status", status);
        event.set("api_error_type", kind);
    }
    event
}

/// A user event (tool results, interruptions, synthetic nudges); `extra` keys go last.
pub fn user_event(session_id: &str, uuid: &str, content: Json, extra: Vec<(&str, Json)>) -> Json {
    let mut event = obj! {
        "type" => "user",
        "message" => obj! { "role" => "user", "content" => content },
        "parent_tool_use_id" => Json::Null,
        "session_id" => session_id,
        "uuid" => uuid,
        "timestamp" => now_iso(),
    };
    for (key, value) in extra {
        event.set(key, value);
    }
    event
}

/// `--replay-user-messages`: the stdin message echoed back (key order differs from other
/// user events, as observed in f2).
pub fn replay_event(message: &Json, session_id: &str) -> Json {
    obj! {
        "type" => "user",
        "message" => message.clone(),
        "session_id" => session_id,
        "parent_tool_use_id" => Json::Null,
        "uuid" => new_uuid(),
        "timestamp" => now_iso(),
        "isReplay" => true,
    }
}

/// A `tool_result` block that succeeded.
pub fn tool_result_ok(tool_use_id: &str, content: &str) -> Json {
    obj! {
        "tool_use_id" => tool_use_id,
        "type" => "tool_result",
        "content" => content,
        "is_error" => false,
    }
}

/// A `tool_result` block without `is_error` (a Write that created its file, d10;
/// structured output, i3).
pub fn tool_result_plain(tool_use_id: &str, content: &str) -> Json {
    obj! {
        "tool_use_id" => tool_use_id,
        "type" => "tool_result",
        "content" => content,
    }
}

/// A failed or denied `tool_result` block; the CLI orders these keys differently.
pub fn tool_result_error(tool_use_id: &str, content: &str) -> Json {
    obj! {
        "type" => "tool_result",
        "content" => content,
        "is_error" => true,
        "tool_use_id" => tool_use_id,
    }
}

/// Why a tool call ran or did not: the `tool_result_meta` of its user event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Accepted; the reason is `subcommandResults` (a read-only Bash command, d0), `rule`
    /// (`--allowedTools`, d1) or `mode` (the permission mode, d10). `None` for tools that
    /// need no permission (StructuredOutput, i3).
    Accepted(Option<&'static str>),
    /// Refused for want of a permission (d4).
    Rejected,
}

pub fn tool_result_meta(tool_use_id: &str, permission: Permission) -> Json {
    let entry = match permission {
        Permission::Accepted(reason) => {
            let mut decision = obj! { "decision" => "accept", "source" => "config" };
            if let Some(reason) = reason {
                decision.set("reason_type", reason);
            }
            obj! { "id" => tool_use_id, "permission_decision" => decision }
        }
        Permission::Rejected => obj! {
            "id" => tool_use_id,
            "non_execution_kind" => "user-rejected",
            "permission_decision" => obj! { "decision" => "reject", "source" => "config" },
        },
    };
    Json::Arr(vec![entry])
}

/// The `system/permission_denied` event that precedes a refused call's result (d4).
pub fn permission_denied(
    tool_name: &str,
    tool_use_id: &str,
    message: &str,
    session_id: &str,
) -> Json {
    obj! {
        "type" => "system",
        "subtype" => "permission_denied",
        "tool_name" => tool_name,
        "tool_use_id" => tool_use_id,
        "message" => message,
        "uuid" => new_uuid(),
        "session_id" => session_id,
    }
}

/// A `stream_event` of `--include-partial-messages`. `extra` keys (the `ttft_ms` and
/// `thinking_display` of `message_start`) go before `api_message_id`, which is last.
pub fn stream_event(
    event: Json,
    session_id: &str,
    message_id: &str,
    extra: Vec<(&str, Json)>,
) -> Json {
    let mut out = obj! {
        "type" => "stream_event",
        "event" => event,
        "session_id" => session_id,
        "parent_tool_use_id" => Json::Null,
        "uuid" => new_uuid(),
    };
    for (key, value) in extra {
        out.set(key, value);
    }
    out.set("api_message_id", message_id);
    out
}

pub fn status_requesting(session_id: &str) -> Json {
    obj! {
        "type" => "system",
        "subtype" => "status",
        "status" => "requesting",
        "session_id" => session_id,
        "uuid" => new_uuid(),
    }
}

/// The result line when `--resume` names an unknown session (e3b): no `terminal_reason`,
/// no `fast_mode_state`.
pub fn resume_failure(session_id: &str, message: &str) -> Json {
    obj! {
        "type" => "result",
        "subtype" => "error_during_execution",
        "duration_ms" => 0,
        "duration_api_ms" => 0,
        "is_error" => true,
        "num_turns" => 0,
        "stop_reason" => Json::Null,
        "session_id" => session_id,
        "total_cost_usd" => 0,
        "usage" => empty_usage(),
        "modelUsage" => Json::Obj(Vec::new()),
        "permission_denials" => Json::Arr(Vec::new()),
        "uuid" => new_uuid(),
        "errors" => Json::Arr(vec![Json::from(message)]),
        "result_index" => 0,
    }
}

/// `subagent_stats` of a result: the fake never starts subagents.
pub fn subagent_stats() -> Json {
    obj! {
        "spawned" => 0,
        "requested" => obj! { "background" => 0, "foreground" => 0, "unset" => 0 },
        "started_in_background" => 0,
        "max_depth" => 0,
        "spawned_by_subagents" => 0,
        "completed" => 0,
        "failed" => 0,
        "killed" => obj! { "parent" => 0, "user" => 0, "system" => 0 },
        "refused" => obj! { "depth_limit" => 0, "concurrency_limit" => 0, "budget" => 0 },
        "by_type" => Json::Obj(Vec::new()),
    }
}
