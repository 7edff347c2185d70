//! A job is a step: *what runs* apart from *how it is scheduled*. [`ClaudeOptions`] is what
//! fixes a Claude CLI run (what a saved agent stores, and what a warm pool keys on);
//! [`Schedule`] is when and how often it is tried. The runner takes a [`Step`]; the Claude
//! CLI is its only kind today, and later kinds (an HTTP fetch, a local model, a `jq`
//! transform, a human approval) are variants beside it, without touching it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{PermissionMode, RetryPolicy, SessionMode};

/// The options of a Claude CLI run, as they become its arguments and files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClaudeOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    /// `Some(vec![])` disables every built-in tool; `None` keeps the CLI's default set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_dirs: Vec<String>,
}

/// How a job is scheduled: its wall-clock limit, its place in the queue, its retries and
/// the caller's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    pub priority: i32,
    pub retry: RetryPolicy,
}

/// One Claude CLI run: a prompt, its options, where it works and in which session.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaudeRun {
    pub prompt: String,
    pub options: ClaudeOptions,
    pub cwd: Option<String>,
    pub session: SessionMode,
    /// The run's wall-clock limit (from its schedule).
    pub timeout_ms: u64,
}

/// What a runner executes for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Claude(ClaudeRun),
}
