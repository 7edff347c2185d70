//! What a caller asks for. [`JobRequest`] is the wire shape, accepted as sent (unknown
//! fields refused); [`JobRequest::parse`] turns it into a [`JobSpec`], and nothing downstream
//! ever sees an unchecked value. Paths are checked against the filesystem elsewhere
//! (the runner knows the workspace roots); here they are only required to be absolute.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(feature = "openapi")]
pub use crate::openapi::{AbsolutePath, CatalogueName, McpConfig, ToolName};
use crate::session::session_mode;
pub use crate::session::{SessionMode, SessionRequest};
use crate::{ClaudeOptions, ClaudeRun, RetryPolicy, Schedule, Step};

/// Bounds on a request, set by the server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_prompt_chars: usize,
    pub max_timeout_ms: u64,
    pub default_timeout_ms: u64,
    pub max_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_prompt_chars: 500_000,
            max_timeout_ms: 24 * 3600 * 1000,
            default_timeout_ms: 30 * 60 * 1000,
            max_attempts: 20,
        }
    }
}

/// The smallest timeout accepted: below a second the CLI cannot even start.
pub const MIN_TIMEOUT_MS: u64 = 1_000;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_LIST_ITEMS: usize = 256;
/// Catalogue MCP servers a job may name.
const MAX_MCP_SERVERS: usize = 64;
pub(crate) const MAX_ITEM_CHARS: usize = 4_096;
const MAX_SYSTEM_PROMPT_CHARS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PermissionMode {
    #[serde(rename = "default")]
    Default,
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "bypassPermissions")]
    BypassPermissions,
    #[serde(rename = "dontAsk")]
    DontAsk,
    #[serde(rename = "plan")]
    Plan,
}

impl PermissionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::Auto => "auto",
            Self::BypassPermissions => "bypassPermissions",
            Self::DontAsk => "dontAsk",
            Self::Plan => "plan",
        }
    }
}

/// A job as submitted over the wire.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// What to ask: at least one character that is not white space, no NUL.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
        )
    )]
    pub prompt: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"^[^\x00]+$")
    )]
    pub model: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200000, pattern = r"^[^\x00]+$")
    )]
    pub system_prompt: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200000, pattern = r"^[^\x00]+$")
    )]
    pub append_system_prompt: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Option<Vec<ToolName>>))]
    pub allowed_tools: Option<Vec<String>>,
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Option<Vec<ToolName>>))]
    pub disallowed_tools: Option<Vec<String>>,
    /// Built-in tools available; `[]` disables them all.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Option<Vec<ToolName>>))]
    pub tools: Option<Vec<String>>,
    pub permission_mode: Option<PermissionMode>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_turns: Option<u32>,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 100000))]
    pub max_budget_usd: Option<f64>,
    /// A JSON Schema the result must follow (structured output).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub json_schema: Option<Value>,
    /// `{"mcpServers": {...}}`, as the CLI's `--mcp-config`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<McpConfig>))]
    pub mcp_config: Option<Value>,
    /// MCP servers of the admin's catalogue (`[[mcp_server]]`), by name, that the CLI
    /// gets beside any of `mcp_config`.
    #[cfg_attr(feature = "openapi", schema(max_items = 64, inline, value_type = Option<Vec<CatalogueName>>))]
    pub mcp_servers: Option<Vec<String>>,
    /// Absolute directories inside a configured workspace root.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Option<Vec<AbsolutePath>>))]
    pub add_dirs: Option<Vec<String>>,
    /// An absolute path inside a configured workspace root.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<AbsolutePath>))]
    pub cwd: Option<String>,
    /// The job's wall-clock limit, in milliseconds (at most the server's
    /// `limits.max_timeout_ms`, 24 h by default).
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 86400000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub timeout_ms: Option<i64>,
    pub session: Option<SessionRequest>,
    /// The caller's own data, kept with the job (at most 16 KiB of JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Map<String, Value>>,
    #[cfg_attr(feature = "openapi", schema(minimum = -1000, maximum = 1000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub priority: Option<i32>,
    /// At most the server's `limits.max_attempts_limit` (20 by default).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_attempts: Option<u32>,
    /// An `http(s)` URL the job's summary is POSTed to, signed, when it ends.
    #[cfg_attr(feature = "openapi", schema(max_length = 2048, pattern = "^https?://"))]
    pub callback_url: Option<String>,
    /// The CLI's partial messages: `stream_event` lines in the job's log, one per text
    /// delta as the model writes it (`--include-partial-messages`).
    pub include_partial_messages: Option<bool>,
}

/// A validated job: everything the runner needs, nothing it must check again. Stored as
/// one flat JSON object ([`crate::step::StoredSpec`]: the options and the schedule side by
/// side, as before they were apart), read without serde's `flatten`, which buffers every
/// value and made each claim's decoding measurably slower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "crate::step::StoredSpec", into = "crate::step::StoredSpec")]
pub struct JobSpec {
    pub prompt: String,
    /// What runs.
    pub options: ClaudeOptions,
    pub cwd: Option<String>,
    pub session: SessionMode,
    /// How it is scheduled.
    pub schedule: Schedule,
    /// The agent (and its version) the job is a run of, if any.
    pub agent: Option<crate::agent::AgentRef>,
    /// Files placed in the run's workspace before the CLI starts (an agent's `CLAUDE.md`
    /// and `files`).
    pub files: std::collections::BTreeMap<String, String>,
    /// The agent's check of a successful result, with the run's input.
    pub verify: Option<crate::agent::VerifyRun>,
    /// Where the job's summary is POSTed when it ends.
    pub callback_url: Option<String>,
    /// Git repositories checked out into the run's workspace (an agent's `repos`).
    pub repos: Vec<crate::agent::Repo>,
    /// Who the job's API calls are charged to, beside its project: the key that submitted
    /// it and the routine that fired it.
    pub charge: Charge,
    /// Whether its attempts run in the sandbox, as decided when it was queued (the
    /// project's policy, the server's configuration); `None`: the server's setting.
    pub sandbox: Option<bool>,
    /// The project's policy the job was admitted under.
    pub policy: Option<crate::policy::Policy>,
    /// The conversation a compatible API's request continued (a digest of its messages
    /// before the answer), so the next request of it can find the job's session.
    pub conversation: Option<String>,
}

/// Who a job's spend counts against, beside its project (and its agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub key_id: Option<String>,
    pub routine_id: Option<String>,
}

/// The most characters a callback URL may have.
pub const MAX_CALLBACK_URL_CHARS: usize = 2048;

/// A callback URL's form: `http://` or `https://`, a host, no white space or credentials.
/// (Where it may point is the API's to decide.)
pub fn check_callback_url(url: &str) -> Result<(), SpecError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| err("callback_url", "must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if url.chars().count() > MAX_CALLBACK_URL_CHARS
        || authority.is_empty()
        || authority.contains('@')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(
            "callback_url",
            format!(
                "must be an http(s) URL with a host, no credentials or white space, at most {MAX_CALLBACK_URL_CHARS} characters"
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn err(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

/// Strings that end up as CLI arguments or file contents: no NUL (exec would fail), bounded.
fn text(field: &'static str, s: &str, max_chars: usize) -> Result<(), SpecError> {
    if s.contains('\0') {
        return Err(err(field, "must not contain NUL characters"));
    }
    if s.chars().count() > max_chars {
        return Err(err(field, format!("is longer than {max_chars} characters")));
    }
    Ok(())
}

fn list(field: &'static str, items: Option<Vec<String>>) -> Result<Vec<String>, SpecError> {
    let items = items.unwrap_or_default();
    if items.len() > MAX_LIST_ITEMS {
        return Err(err(field, format!("has more than {MAX_LIST_ITEMS} items")));
    }
    for item in &items {
        text(field, item, MAX_ITEM_CHARS)?;
        if item.trim().is_empty() {
            return Err(err(field, "items must not be empty"));
        }
    }
    Ok(items)
}

fn optional_text(
    field: &'static str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, SpecError> {
    match value {
        Some(v) if v.is_empty() => Err(err(field, "must not be empty when given")),
        Some(v) => text(field, &v, max_chars).map(|()| Some(v)),
        None => Ok(None),
    }
}

fn absolute_path(field: &'static str, p: &str) -> Result<(), SpecError> {
    text(field, p, MAX_ITEM_CHARS)?;
    if !p.starts_with('/') {
        return Err(err(field, format!("{p:?} must be an absolute path")));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(err(field, format!("{p:?} must not contain '..'")));
    }
    Ok(())
}

impl JobRequest {
    pub fn parse(self, limits: &Limits) -> Result<JobSpec, SpecError> {
        if self.prompt.trim().is_empty() {
            return Err(err("prompt", "is required and must not be empty"));
        }
        if self.prompt.contains('\0') {
            return Err(err("prompt", "must not contain NUL characters"));
        }
        let chars = self.prompt.chars().count();
        if chars > limits.max_prompt_chars {
            return Err(err(
                "prompt",
                format!(
                    "has {chars} characters; the limit is {}",
                    limits.max_prompt_chars
                ),
            ));
        }
        let model = optional_text("model", self.model, 200)?;
        let system_prompt =
            optional_text("system_prompt", self.system_prompt, MAX_SYSTEM_PROMPT_CHARS)?;
        let append_system_prompt = optional_text(
            "append_system_prompt",
            self.append_system_prompt,
            MAX_SYSTEM_PROMPT_CHARS,
        )?;
        let allowed_tools = list("allowed_tools", self.allowed_tools)?;
        let disallowed_tools = list("disallowed_tools", self.disallowed_tools)?;
        let tools = match self.tools {
            Some(t) => Some(list("tools", Some(t))?),
            None => None,
        };
        if let Some(n) = self.max_turns
            && !(1..=10_000).contains(&n)
        {
            return Err(err("max_turns", "must be between 1 and 10000"));
        }
        if let Some(b) = self.max_budget_usd
            && !(b.is_finite() && b > 0.0 && b <= 100_000.0)
        {
            return Err(err(
                "max_budget_usd",
                "must be a positive number of dollars",
            ));
        }
        if let Some(schema) = &self.json_schema
            && !schema.is_object()
        {
            return Err(err("json_schema", "must be a JSON Schema object"));
        }
        if let Some(mcp) = &self.mcp_config
            && !mcp.get("mcpServers").is_some_and(Value::is_object)
        {
            return Err(err(
                "mcp_config",
                "must be an object with an \"mcpServers\" object",
            ));
        }
        let mcp_servers = list("mcp_servers", self.mcp_servers)?;
        if mcp_servers.len() > MAX_MCP_SERVERS {
            return Err(err(
                "mcp_servers",
                format!("has more than {MAX_MCP_SERVERS} items"),
            ));
        }
        for (i, name) in mcp_servers.iter().enumerate() {
            if !crate::policy::valid_server_name(name) {
                return Err(err(
                    "mcp_servers",
                    format!(
                        "{name:?} is not a catalogue name (letters, digits, _ and -, at most 64)"
                    ),
                ));
            }
            if mcp_servers[..i].contains(name) {
                return Err(err("mcp_servers", format!("{name:?} is named twice")));
            }
        }
        let add_dirs = list("add_dirs", self.add_dirs)?;
        for d in &add_dirs {
            absolute_path("add_dirs", d)?;
        }
        if let Some(cwd) = &self.cwd {
            absolute_path("cwd", cwd)?;
        }
        let timeout_ms = match self.timeout_ms {
            None => limits.default_timeout_ms,
            Some(t) if t < MIN_TIMEOUT_MS as i64 || t as u64 > limits.max_timeout_ms => {
                return Err(err(
                    "timeout_ms",
                    format!(
                        "must be between {MIN_TIMEOUT_MS} and {} milliseconds",
                        limits.max_timeout_ms
                    ),
                ));
            }
            Some(t) => t as u64,
        };
        let session = session_mode(self.session)?;
        let metadata = self.metadata.unwrap_or_default();
        let metadata_len = serde_json::to_string(&metadata).map_or(usize::MAX, |s| s.len());
        if metadata_len > MAX_METADATA_BYTES {
            return Err(err(
                "metadata",
                format!("is larger than {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
        let priority = self.priority.unwrap_or(0);
        if !(-1000..=1000).contains(&priority) {
            return Err(err("priority", "must be between -1000 and 1000"));
        }
        let mut retry = RetryPolicy::default();
        if let Some(n) = self.max_attempts {
            if n == 0 || n > limits.max_attempts {
                return Err(err(
                    "max_attempts",
                    format!("must be between 1 and {}", limits.max_attempts),
                ));
            }
            retry.max_attempts = n;
        }
        if let Some(url) = &self.callback_url {
            check_callback_url(url)?;
        }
        Ok(JobSpec {
            callback_url: self.callback_url,
            repos: Vec::new(),
            charge: Charge::default(),
            sandbox: None,
            policy: None,
            conversation: None,
            prompt: self.prompt,
            options: ClaudeOptions {
                model,
                system_prompt,
                append_system_prompt,
                allowed_tools,
                disallowed_tools,
                tools,
                permission_mode: self.permission_mode,
                max_turns: self.max_turns,
                max_budget_usd: self.max_budget_usd,
                json_schema: self.json_schema,
                mcp_config: self.mcp_config,
                mcp_servers,
                add_dirs,
                confined: false,
                include_partial_messages: self.include_partial_messages.unwrap_or(false),
            },
            cwd: self.cwd,
            session,
            agent: None,
            files: Default::default(),
            verify: None,
            schedule: Schedule {
                timeout_ms,
                metadata,
                priority,
                retry,
            },
        })
    }
}

impl JobSpec {
    /// What an attempt of this job runs.
    pub fn step(&self) -> Step {
        Step::Claude(self.claude_run())
    }

    /// The Claude CLI run this job is.
    pub fn claude_run(&self) -> ClaudeRun {
        ClaudeRun {
            prompt: self.prompt.clone(),
            options: self.options.clone(),
            cwd: self.cwd.clone(),
            session: self.session,
            timeout_ms: self.schedule.timeout_ms,
            files: self.files.clone(),
            verify: self.verify.clone(),
            repos: self.repos.clone(),
            sandbox: self.sandbox,
        }
    }

    /// The request this spec would be parsed from: how a replay changes some options and
    /// has the result checked like a new request.
    pub fn to_request(&self) -> JobRequest {
        let session = match self.session {
            SessionMode::New => None,
            SessionMode::Start { id } => Some(SessionRequest {
                id: Some(id.to_string()),
                ..SessionRequest::default()
            }),
            SessionMode::Resume { id } => Some(SessionRequest {
                resume: Some(id.to_string()),
                ..SessionRequest::default()
            }),
            SessionMode::Fork { from, id } => Some(SessionRequest {
                resume: Some(from.to_string()),
                fork: true,
                id: id.map(|i| i.to_string()),
            }),
        };
        let (o, s) = (&self.options, &self.schedule);
        JobRequest {
            prompt: self.prompt.clone(),
            model: o.model.clone(),
            system_prompt: o.system_prompt.clone(),
            append_system_prompt: o.append_system_prompt.clone(),
            allowed_tools: Some(o.allowed_tools.clone()),
            disallowed_tools: Some(o.disallowed_tools.clone()),
            tools: o.tools.clone(),
            permission_mode: o.permission_mode,
            max_turns: o.max_turns,
            max_budget_usd: o.max_budget_usd,
            json_schema: o.json_schema.clone(),
            mcp_config: o.mcp_config.clone(),
            mcp_servers: Some(o.mcp_servers.clone()),
            add_dirs: Some(o.add_dirs.clone()),
            cwd: self.cwd.clone(),
            timeout_ms: Some(s.timeout_ms as i64),
            callback_url: self.callback_url.clone(),
            session,
            metadata: Some(s.metadata.clone()),
            priority: Some(s.priority),
            max_attempts: Some(s.retry.max_attempts),
            include_partial_messages: o.include_partial_messages.then_some(true),
        }
    }
}

impl JobRequest {
    /// A request with only a prompt, for compatibility routes and tests.
    pub fn prompt(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<JobSpec, String> {
        let req: JobRequest = serde_json::from_value(v).map_err(|e| e.to_string())?;
        req.parse(&Limits::default()).map_err(|e| e.to_string())
    }

    /// A spec is stored as one flat JSON object, as before options and schedule were
    /// apart: rows written by earlier versions read back unchanged.
    #[test]
    fn a_spec_is_stored_flat_and_earlier_rows_read_back() {
        let spec = parse(serde_json::json!({
            "prompt": "hi", "model": "sonnet", "priority": 3, "metadata": {"k": 1}
        }))
        .unwrap();
        let stored = serde_json::to_value(&spec).unwrap();
        for key in [
            "prompt",
            "model",
            "timeout_ms",
            "priority",
            "retry",
            "session",
            "metadata",
        ] {
            assert!(stored.get(key).is_some(), "{key} in {stored}");
        }
        let earlier = serde_json::json!({
            "prompt": "hi", "model": "sonnet", "allowed_tools": ["Read"], "timeout_ms": 60000,
            "session": {"mode": "new"}, "priority": 3,
            "retry": serde_json::to_value(RetryPolicy::default()).unwrap()
        });
        let back: JobSpec = serde_json::from_value(earlier).unwrap();
        assert_eq!(back.options.model.as_deref(), Some("sonnet"));
        assert_eq!(back.options.allowed_tools, ["Read"]);
        assert_eq!(
            (back.schedule.timeout_ms, back.schedule.priority),
            (60_000, 3)
        );
        let crate::Step::Claude(run) = back.step();
        assert_eq!((run.prompt.as_str(), run.timeout_ms), ("hi", 60_000));
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let spec = parse(serde_json::json!({"prompt": "hi"})).unwrap();
        assert_eq!(
            spec.schedule.timeout_ms,
            Limits::default().default_timeout_ms
        );
        assert_eq!(spec.session, SessionMode::New);
        assert_eq!(spec.schedule.retry.max_attempts, 3);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (serde_json::json!({"prompt": "  "}), "prompt: is required"),
            (
                serde_json::json!({"prompt": "x", "timeout_ms": -5}),
                "timeout_ms: must be between",
            ),
            (
                serde_json::json!({"prompt": "x", "cwd": "relative/dir"}),
                "cwd: \"relative/dir\" must be an absolute path",
            ),
            (
                serde_json::json!({"prompt": "x", "session": {"resume": "nope"}}),
                "session: session id \"nope\" is not a valid UUID",
            ),
            (
                serde_json::json!({"prompt": "x", "frobnicate": 1}),
                "unknown field `frobnicate`",
            ),
            (
                serde_json::json!({"prompt": "x", "max_budget_usd": 0.0}),
                "max_budget_usd",
            ),
            (
                serde_json::json!({"prompt": "x", "mcp_config": {"servers": {}}}),
                "mcp_config",
            ),
        ];
        for (input, want) in cases {
            let got = parse(input.clone()).unwrap_err();
            assert!(got.contains(want), "{input} gave {got:?}, wanted {want:?}");
        }
    }

    #[test]
    fn oversized_prompt_is_refused() {
        let limits = Limits {
            max_prompt_chars: 10,
            ..Limits::default()
        };
        let err = JobRequest::prompt("x".repeat(11))
            .parse(&limits)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "prompt: has 11 characters; the limit is 10"
        );
    }

    #[test]
    fn a_spec_round_trips_through_its_request() {
        let a = "11111111-1111-4111-8111-111111111111";
        let spec = parse(serde_json::json!({
            "prompt": "x", "model": "sonnet", "allowed_tools": ["Read"], "tools": [],
            "session": {"resume": a, "fork": true}, "metadata": {"k": 1}, "priority": 5, "max_attempts": 2
        }))
        .unwrap();
        assert_eq!(spec.to_request().parse(&Limits::default()).unwrap(), spec);
    }

    #[test]
    fn session_forms() {
        let a = "11111111-1111-4111-8111-111111111111";
        let b = "22222222-2222-4222-8222-222222222222";
        let resume = parse(serde_json::json!({"prompt": "x", "session": {"resume": a}}));
        assert!(matches!(
            resume.unwrap().session,
            SessionMode::Resume { .. }
        ));
        let fork = parse(
            serde_json::json!({"prompt": "x", "session": {"resume": a, "fork": true, "id": b}}),
        );
        assert!(matches!(
            fork.unwrap().session,
            SessionMode::Fork { id: Some(_), .. }
        ));
        assert!(
            parse(serde_json::json!({"prompt": "x", "session": {"resume": a, "id": b}})).is_err()
        );
        assert!(parse(serde_json::json!({"prompt": "x", "session": {"fork": true}})).is_err());
    }
}
