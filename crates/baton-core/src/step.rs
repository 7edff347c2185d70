//! A job is a step: *what runs* apart from *how it is scheduled*. [`ClaudeOptions`] is what
//! fixes a Claude CLI run (what a saved agent stores, and what a warm pool keys on);
//! [`Schedule`] is when and how often it is tried. The runner takes a [`Step`]; the Claude
//! CLI is its only kind today, and later kinds (an HTTP fetch, a local model, a `jq`
//! transform, a human approval) are variants beside it, without touching it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{JobSpec, PermissionMode, RetryPolicy, SessionMode};

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
    /// MCP servers of the admin's catalogue, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_dirs: Vec<String>,
    /// The CLI loads no settings of its working directory (`--setting-sources user`) and
    /// no MCP server but Baton's (`--strict-mcp-config`): its project's policy says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confined: bool,
    /// The CLI prints the model's output as it streams (`--include-partial-messages`):
    /// `stream_event` lines with each text delta.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_partial_messages: bool,
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
    /// Files placed in the run's own workspace before the CLI starts (relative path →
    /// contents), e.g. an agent's `CLAUDE.md`.
    pub files: BTreeMap<String, String>,
    /// A command that checks a successful result (an agent's `verify`).
    pub verify: Option<crate::agent::VerifyRun>,
    /// Git repositories checked out into the run's own workspace before the CLI starts.
    pub repos: Vec<crate::agent::Repo>,
    /// Whether it runs in the sandbox; `None`: as the runner is configured.
    pub sandbox: Option<bool>,
}

/// What a runner executes for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Claude(ClaudeRun),
}

/// A [`JobSpec`] as stored: one flat object, every field at the top.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSpec {
    prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    append_system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allowed_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    disallowed_tools: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission_mode: Option<PermissionMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_turns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mcp_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    add_dirs: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    confined: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    include_partial_messages: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    timeout_ms: u64,
    session: SessionMode,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    metadata: Map<String, Value>,
    priority: i32,
    retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<crate::agent::AgentRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verify: Option<crate::agent::VerifyRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repos: Vec<crate::agent::Repo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    routine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sandbox: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<crate::policy::Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conversation: Option<String>,
}

impl From<StoredSpec> for JobSpec {
    fn from(s: StoredSpec) -> Self {
        Self {
            prompt: s.prompt,
            options: ClaudeOptions {
                model: s.model,
                system_prompt: s.system_prompt,
                append_system_prompt: s.append_system_prompt,
                allowed_tools: s.allowed_tools,
                disallowed_tools: s.disallowed_tools,
                tools: s.tools,
                permission_mode: s.permission_mode,
                max_turns: s.max_turns,
                max_budget_usd: s.max_budget_usd,
                json_schema: s.json_schema,
                mcp_config: s.mcp_config,
                mcp_servers: s.mcp_servers,
                add_dirs: s.add_dirs,
                confined: s.confined,
                include_partial_messages: s.include_partial_messages,
            },
            cwd: s.cwd,
            session: s.session,
            schedule: Schedule {
                timeout_ms: s.timeout_ms,
                metadata: s.metadata,
                priority: s.priority,
                retry: s.retry,
            },
            agent: s.agent,
            files: s.files,
            verify: s.verify,
            callback_url: s.callback_url,
            repos: s.repos,
            charge: crate::spec::Charge {
                key_id: s.key_id,
                routine_id: s.routine_id,
            },
            sandbox: s.sandbox,
            policy: s.policy,
            conversation: s.conversation,
        }
    }
}

impl From<JobSpec> for StoredSpec {
    fn from(j: JobSpec) -> Self {
        let (o, s) = (j.options, j.schedule);
        Self {
            prompt: j.prompt,
            model: o.model,
            system_prompt: o.system_prompt,
            append_system_prompt: o.append_system_prompt,
            allowed_tools: o.allowed_tools,
            disallowed_tools: o.disallowed_tools,
            tools: o.tools,
            permission_mode: o.permission_mode,
            max_turns: o.max_turns,
            max_budget_usd: o.max_budget_usd,
            json_schema: o.json_schema,
            mcp_config: o.mcp_config,
            mcp_servers: o.mcp_servers,
            add_dirs: o.add_dirs,
            confined: o.confined,
            include_partial_messages: o.include_partial_messages,
            cwd: j.cwd,
            timeout_ms: s.timeout_ms,
            session: j.session,
            metadata: s.metadata,
            priority: s.priority,
            retry: s.retry,
            agent: j.agent,
            files: j.files,
            verify: j.verify,
            callback_url: j.callback_url,
            repos: j.repos,
            key_id: j.charge.key_id,
            routine_id: j.charge.routine_id,
            sandbox: j.sandbox,
            policy: j.policy,
            conversation: j.conversation,
        }
    }
}
