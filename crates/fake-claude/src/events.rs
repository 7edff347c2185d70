//! Builders for the stream-json events, with the key sets and key order of the real CLI's
//! output (fixtures `b_stream_json_verbose`, `d0_*`, `d4_*`, `g1_*`, `h1_*`, `e3_*`, ...).

use crate::config::{Config, Environment};
use crate::json::Json;
use crate::obj;
use crate::session::{new_uuid, now_iso};

/// Token counts of one request, or summed over several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }

    /// Opus 4.8 prices, $5 / $25 per million tokens, which the CLI applies locally.
    pub fn cost_usd(self) -> f64 {
        self.input_tokens as f64 * 5e-6 + self.output_tokens as f64 * 25e-6
    }
}

const SLASH_COMMANDS: [&str; 25] = [
    "deep-research",
    "update-config",
    "verify",
    "debug",
    "code-review",
    "simplify",
    "batch",
    "fewer-permission-prompts",
    "loop",
    "claude-api",
    "run",
    "run-skill-generator",
    "clear",
    "compact",
    "config",
    "context",
    "heapdump",
    "init",
    "reload-skills",
    "review",
    "security-review",
    "usage",
    "insights",
    "goal",
    "team-onboarding",
];
/// The first twelve slash commands are skills.
const SKILL_COUNT: usize = 12;
const AGENTS: [&str; 5] = [
    "claude",
    "Explore",
    "general-purpose",
    "Plan",
    "statusline-setup",
];

fn strings(items: &[&str]) -> Json {
    Json::Arr(items.iter().map(|s| Json::from(*s)).collect())
}

pub fn init(config: &Config, env: &Environment, session_id: &str, memory_dir: &str) -> Json {
    obj! {
        "type" => "system",
        "subtype" => "init",
        "cwd" => env.cwd.clone(),
        "session_id" => session_id,
        "tools" => config.tools.clone(),
        "mcp_servers" => Json::Arr(config.mcp_servers.iter().map(|s| obj! {
            "name" => s.name.clone(),
            "status" => s.status,
        }).collect()),
        "model" => config.model.clone(),
        "permissionMode" => config.permission_mode.clone(),
        "slash_commands" => strings(&SLASH_COMMANDS),
        "apiKeySource" => env.api_key_source,
        "claude_code_version" => crate::VERSION,
        "output_style" => "default",
        "agents" => strings(&AGENTS),
        "skills" => strings(&SLASH_COMMANDS[..SKILL_COUNT]),
        "plugins" => Json::Arr(Vec::new()),
        "analytics_disabled" => true,
        "product_feedback_disabled" => true,
        "uuid" => new_uuid(),
        "memory_paths" => obj! { "auto" => memory_dir },
        "fast_mode_state" => "off",
    }
}

/// The `usage` of an assistant event: the request's input and a placeholder output of 1,
/// because the CLI emits each block before the final usage is known.
pub fn block_usage(input_tokens: u64) -> Json {
    obj! {
        "input_tokens" => input_tokens,
        "output_tokens" => 1,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
    }
}

/// The full `usage` object of a result (and of transcript lines).
pub fn full_usage(usage: Usage) -> Json {
    obj! {
        "input_tokens" => usage.input_tokens,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
        "output_tokens" => usage.output_tokens,
        "server_tool_use" => obj! { "web_search_requests" => 0, "web_fetch_requests" => 0 },
        "service_tier" => "standard",
        "cache_creation" => obj! { "ephemeral_1h_input_tokens" => 0, "ephemeral_5m_input_tokens" => 0 },
        "inference_geo" => "",
        "iterations" => Json::Arr(Vec::new()),
        "speed" => "standard",
    }
}

/// The usage of a synthetic (error) message: zeros, with nulls where a real answer has tiers.
fn synthetic_usage() -> Json {
    obj! {
        "input_tokens" => 0,
        "output_tokens" => 0,
        "cache_creation_input_tokens" => 0,
        "cache_read_input_tokens" => 0,
        "server_tool_use" => obj! { "web_search_requests" => 0, "web_fetch_requests" => 0 },
        "service_tier" => Json::Null,
        "cache_creation" => obj! { "ephemeral_1h_input_tokens" => 0, "ephemeral_5m_input_tokens" => 0 },
        "inference_geo" => Json::Null,
        "iterations" => Json::Null,
        "speed" => Json::Null,
    }
}

/// `modelUsage`: cumulative per model over the process, as the CLI reports it.
pub fn model_usage(spent: &[(String, Usage)], context_window: u64) -> Json {
    Json::Obj(
        spent
            .iter()
            .map(|(model, usage)| {
                let entry = obj! {
                    "inputTokens" => usage.input_tokens,
                    "outputTokens" => usage.output_tokens,
                    "cacheReadInputTokens" => 0,
                    "cacheCreationInputTokens" => 0,
                    "webSearchRequests" => 0,
                    "costUSD" => usage.cost_usd(),
                    "contextWindow" => context_window,
                    "maxOutputTokens" => 64000,
                };
                (model.clone(), entry)
            })
            .collect(),
    )
}

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
        "id" => new_uuid(),
        "container" => Json::Null,
        "model" => "<synthetic>",
        "role" => "assistant",
        "stop_details" => Json::Null,
        "stop_reason" => "stop_sequence",
        "stop_sequence" => "",
        "type" => "message",
        "usage" => synthetic_usage(),
        "content" => Json::Arr(vec![obj! { "type" => "text", "text" => text }]),
        "context_management" => Json::Null,
    }
}

pub fn synthetic_event(
    message: Json,
    session_id: &str,
    uuid: &str,
    error: &str,
    request_id: Option<&str>,
) -> Json {
    let mut event = obj! {
        "type" => "assistant",
        "message" => message,
        "parent_tool_use_id" => Json::Null,
        "session_id" => session_id,
        "uuid" => uuid,
        "error" => error,
    };
    if let Some(id) = request_id {
        event.set("request_id", id);
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
/// user events, as observed in f3).
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

/// A failed or denied `tool_result` block; the CLI orders these keys differently.
pub fn tool_result_error(tool_use_id: &str, content: &str) -> Json {
    obj! {
        "type" => "tool_result",
        "content" => content,
        "is_error" => true,
        "tool_use_id" => tool_use_id,
    }
}

pub fn stream_event(event: Json, session_id: &str) -> Json {
    obj! {
        "type" => "stream_event",
        "event" => event,
        "session_id" => session_id,
        "parent_tool_use_id" => Json::Null,
        "uuid" => new_uuid(),
    }
}

pub fn status_requesting(session_id: &str) -> Json {
    obj! {
        "type" => "system",
        "subtype" => "status",
        "status" => "requesting",
        "uuid" => new_uuid(),
        "session_id" => session_id,
    }
}

/// The result line when `--resume` names an unknown session (e3): no `terminal_reason`,
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
        "usage" => full_usage(Usage::default()),
        "modelUsage" => Json::Obj(Vec::new()),
        "permission_denials" => Json::Arr(Vec::new()),
        "uuid" => new_uuid(),
        "errors" => Json::Arr(vec![Json::from(message)]),
    }
}

/// The answer to a `control_request` with subtype `initialize` (f5), abridged.
pub fn initialize_response(config: &Config, env: &Environment) -> Json {
    let commands: Vec<Json> = SLASH_COMMANDS
        .iter()
        .map(|name| obj! { "name" => *name, "description" => "", "argumentHint" => "" })
        .collect();
    let agents: Vec<Json> = AGENTS
        .iter()
        .map(|name| obj! { "name" => *name, "description" => "" })
        .collect();
    obj! {
        "commands" => commands,
        "agents" => agents,
        "output_style" => "default",
        "available_output_styles" => strings(&["default"]),
        "models" => vec![obj! {
            "value" => "default",
            "resolvedModel" => config.model.clone(),
            "displayName" => "Default (recommended)",
        }],
        "account" => obj! {
            "tokenSource" => "none",
            "apiKeySource" => env.api_key_source,
            "apiProvider" => "firstParty",
        },
        "pid" => std::process::id(),
    }
}
