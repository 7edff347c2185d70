//! `system/init`, printed at the start of every turn, and the answer to an `initialize`
//! control request: what the session offers (tools, commands, agents, plugins), with the
//! lists and key order of the real CLI (fixture `2.1.332/b_stream_json_verbose`).

use crate::config::{Config, Environment};
use crate::json::Json;
use crate::obj;
use crate::session::new_uuid;

const SLASH_COMMANDS: [&str; 44] = [
    "deep-research",
    "dataviz",
    "update-config",
    "verify",
    "debug",
    "code-review",
    "simplify",
    "batch",
    "fewer-permission-prompts",
    "doctor",
    "loop",
    "claude-api",
    "workflow-authoring",
    "run",
    "run-skill-generator",
    "plugin-authoring",
    "agents",
    "auto-mode-setup",
    "autocompact",
    "clear",
    "color",
    "compact",
    "config",
    "output-style",
    "context",
    "effort",
    "fast",
    "focus",
    "heapdump",
    "init",
    "mcp",
    "model",
    "__remote-workflow",
    "workflow-launch-exec",
    "reload-plugins",
    "reload-skills",
    "rename",
    "security-review",
    "usage",
    "insights",
    "recap",
    "goal",
    "list-agents",
    "team-onboarding",
];
/// The first sixteen slash commands are skills.
const SKILL_COUNT: usize = 16;
const TERMINAL_SLASH_COMMANDS: [&str; 4] = ["doctor", "color", "focus", "reload-plugins"];
const AGENTS: [&str; 5] = [
    "claude",
    "Explore",
    "general-purpose",
    "Plan",
    "statusline-setup",
];
/// The built-in plugins, listed as `{name, path: "builtin", source: "<name>@builtin"}`.
const PLUGINS: [&str; 3] = [
    "cc-plugin-agents-md",
    "cc-plugin-privacy",
    "cc-plugin-plugin-authoring",
];
const CAPABILITIES: [&str; 23] = [
    "interrupt_receipt_v1",
    "interrupt_cancel_queued_v1",
    "interrupt_send_now_v1",
    "interrupt_requeue_taken_v1",
    "msg_lifecycle_v1",
    "request_marker_lists_v1",
    "ask_user_question_unanswered_v1",
    "lifecycle_wakeup_source_v1",
    "sdk_mcp_tools_list_changed",
    "sdk_mcp_manifests",
    "mcp_read_resource_v1",
    "mcp_tool_ui_meta_v1",
    "ui_surface_v1",
    "mcp_call_result_not_for_model_v1",
    "mcp_call_soft_error_result_v1",
    "mcp_call_check_permissions_v1",
    "voice_call_talk_line_v1",
    "withdrawn_files_note_v2",
    "withdrawn_tools_v1",
    "ui_pane_widget_v1",
    "reload_plugins_refuse_if_busy_v1",
    "get_usage_detached_v1",
    "silent_resend_files_v1",
];

fn strings(items: &[&str]) -> Json {
    Json::Arr(items.iter().map(|s| Json::from(*s)).collect())
}

pub fn init(config: &Config, env: &Environment, session_id: &str, memory_dir: &str) -> Json {
    let plugins = PLUGINS
        .iter()
        .map(|name| obj! { "name" => *name, "path" => "builtin", "source" => format!("{name}@builtin") })
        .collect::<Vec<_>>();
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
        "terminal_slash_commands" => strings(&TERMINAL_SLASH_COMMANDS),
        "apiKeySource" => env.api_key_source,
        "claude_code_version" => crate::VERSION,
        "output_style" => "default",
        "agents" => strings(&AGENTS),
        "skills" => strings(&SLASH_COMMANDS[..SKILL_COUNT]),
        "plugins" => plugins,
        "capabilities" => strings(&CAPABILITIES),
        "analytics_disabled" => true,
        "product_feedback_disabled" => true,
        // False whenever ANTHROPIC_BASE_URL points elsewhere, as in every test.
        "served_by_anthropic" => false,
        "uuid" => new_uuid(),
        "sandbox_enabled" => false,
        "memory_paths" => obj! { "auto" => memory_dir },
        "original_cwd" => env.cwd.clone(),
        "additional_directories" => Json::Arr(Vec::new()),
        // The real CLI names a socket by its pid; the fake only names it.
        "messaging_socket_path" => format!("/tmp/cc-socks/{}.sock", std::process::id()),
        "fast_mode_state" => "off",
        "fast_mode_disabled_reason" => "sdk_opt_in_required",
        "per_turn_effort_active" => true,
        "ultrathink_available" => false,
        "ultrathink_typed_raises" => false,
        "view_mode" => "default",
    }
}

/// The models an `initialize` answer offers, by alias.
const MODEL_ALIASES: [&str; 5] = ["default", "opus", "fable", "sonnet", "haiku"];
const CONTROL_CAPABILITIES: [&str; 8] = [
    "ui_surface_v1",
    "mcp_call_result_not_for_model_v1",
    "mcp_call_soft_error_result_v1",
    "mcp_call_check_permissions_v1",
    "voice_call_talk_line_v1",
    "ui_pane_widget_v1",
    "reload_plugins_refuse_if_busy_v1",
    "get_usage_detached_v1",
];

/// The answer to a `control_request` with subtype `initialize`, with the keys of 2.1.332's
/// (f5) but abridged: no descriptions, and models with only their names.
pub fn initialize_response(config: &Config, env: &Environment) -> Json {
    let commands: Vec<Json> = SLASH_COMMANDS
        .iter()
        .map(|name| obj! { "name" => *name, "description" => "", "argumentHint" => "", "builtin" => true })
        .collect();
    let agents: Vec<Json> = AGENTS
        .iter()
        .map(|name| obj! { "name" => *name, "description" => "" })
        .collect();
    let models: Vec<Json> = MODEL_ALIASES
        .iter()
        .map(|alias| {
            let resolved = match *alias {
                "default" => config.model.clone(),
                alias => crate::config::resolve_model(Some(alias)),
            };
            obj! { "value" => *alias, "resolvedModel" => resolved, "displayName" => *alias }
        })
        .collect();
    obj! {
        "commands" => commands,
        "agents" => agents,
        "output_style" => "default",
        "available_output_styles" => strings(&["default", "Proactive", "Concise", "Explanatory", "Learning"]),
        "user_output_styles_dir" => env.config_dir.join("output-styles").to_string_lossy().into_owned(),
        "models" => models,
        "account" => obj! {
            "tokenSource" => "none",
            "apiKeySource" => env.api_key_source,
            "apiProvider" => "firstParty",
        },
        "pid" => std::process::id(),
        "claude_code_version" => crate::VERSION,
        "current_permission_mode" => config.permission_mode.clone(),
        "hook_on_failure_supported" => true,
        "hooks_when_unanswered_kept" => 0,
        "other_hook_ask_outranks_host" => true,
        "feedback_mode" => obj! { "kind" => "disabled" },
        "analytics_disabled" => true,
        "sandbox_enabled" => false,
        "remote_control_auto_enable" => false,
        "remote_control_auto_connect_default" => false,
        "remote_control_available" => false,
        "remote_control_auto_on_by_default" => false,
        "ide_rc_auto_enable_gate" => false,
        "fast_mode_state" => "off",
        "fast_mode_disabled_reason" => "sdk_opt_in_required",
        "session_state" => "idle",
        "capabilities" => strings(&CONTROL_CAPABILITIES),
    }
}
