//! A project's policy: what its jobs may ask Baton to run. Keys and projects keep one
//! tenant from another's objects in the API; the policy decides what a tenant's job may
//! make the host do: which built-in tools and permission modes, which models and limits,
//! which directories, which MCP servers (by name, from the admin's catalogue), and whether
//! an agent's `verify` command may run. [`Policy::apply`] checks a job against it and
//! fills in what the job left to it; a refusal names the rule and the value.

use serde::{Deserialize, Serialize};

use crate::spec::{JobSpec, MAX_ITEM_CHARS, PermissionMode};

/// In a list of the policy: anything.
pub const ANY: &str = "*";
/// Items a list of the policy may hold.
pub const MAX_ITEMS: usize = 256;

/// An admin's choice about the sandbox for one project, over the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SandboxChoice {
    /// Always in the sandbox.
    On,
    /// Never in the sandbox (the project's jobs can read whatever Baton's user can).
    Off,
}

/// What a project's jobs may ask for. A field left out of a policy takes the safe
/// default's value ([`Policy::default`]); `"*"` in a list allows anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Built-in tools and tool rules a job may allow (`allowed_tools`) or make available
    /// (`tools`): `Read`, or `Bash(git log:*)`, which allows that rule only. A job that
    /// names no `tools` gets exactly these tools. Default: `Read`, `Glob`, `Grep`.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Vec<crate::openapi::ToolName>))]
    pub tools: Vec<String>,
    /// Permission modes a job may ask for (a job that names none runs in `default`).
    /// Default: `default`.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Vec<crate::openapi::PolicyMode>))]
    pub permission_modes: Vec<String>,
    /// Models a job may name; a job that names none gets the first. Default: `*`.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Vec<crate::openapi::ToolName>))]
    pub models: Vec<String>,
    /// The most `max_turns` a job may ask for, and what a job that names none gets.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_turns: Option<u32>,
    /// The longest `timeout_ms`; a job that names none gets it when it is below the
    /// server's default.
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 86400000))]
    #[serde(default, deserialize_with = "crate::int::opt")]
    pub max_timeout_ms: Option<u64>,
    /// The most `max_budget_usd`, and what a job that names none gets.
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 100000))]
    pub max_budget_usd: Option<f64>,
    /// Directories (inside the server's `workspace_roots`) that a job's `cwd` and
    /// `add_dirs`, and an agent's `repos`, must be in; `*`: every workspace root.
    /// Default: none, so a job works in its own scratch workspace only.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Vec<crate::openapi::PolicyRoot>))]
    pub roots: Vec<String>,
    /// MCP servers of the admin's catalogue (`[[mcp_server]]`) a job may name in
    /// `mcp_servers`. Default: none.
    #[cfg_attr(feature = "openapi", schema(max_items = 256, inline, value_type = Vec<crate::openapi::ServerName>))]
    pub mcp_servers: Vec<String>,
    /// Whether a job may bring its own `mcp_config`: command lines the CLI starts as soon
    /// as it runs. Default: false.
    pub raw_mcp: bool,
    /// Whether an agent may have a `verify` command (run in the attempt's workspace, in
    /// the sandbox when the attempt is). Default: false.
    pub verify: bool,
    /// Whether the CLI loads the settings of the directory it works in
    /// (`.claude/settings.json` and its hooks, which are commands; `.mcp.json`'s servers).
    /// Default: false: the CLI gets `--setting-sources user` (its private home's, which
    /// Baton makes) and `--strict-mcp-config`.
    pub project_settings: bool,
    /// `on` or `off`: the project's attempts always or never run in the sandbox, whatever
    /// the server would choose. Left out: the server's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxChoice>,
}

impl Default for Policy {
    /// The safe default, a new project's: read-only tools, the default permission mode,
    /// no MCP servers, no directory but the job's own scratch workspace.
    fn default() -> Self {
        Self {
            tools: ["Read", "Glob", "Grep"].map(String::from).to_vec(),
            permission_modes: vec![PermissionMode::Default.as_str().into()],
            models: vec![ANY.into()],
            max_turns: None,
            max_timeout_ms: None,
            max_budget_usd: None,
            roots: Vec::new(),
            mcp_servers: Vec::new(),
            raw_mcp: false,
            verify: false,
            project_settings: false,
            sandbox: None,
        }
    }
}

/// An MCP server of the admin's catalogue (`[[mcp_server]]`): a command the CLI starts, or
/// a URL it calls. Jobs name it; they never see its command line or environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// How jobs and policies name it.
    pub name: String,
    /// A stdio server: the program (on `PATH`, or an absolute path) …
    #[serde(default)]
    pub command: Option<String>,
    /// … and its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set for the server (a stdio server's environment, e.g. its own token).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// An HTTP (streamable) server's URL, instead of a command.
    #[serde(default)]
    pub url: Option<String>,
    /// Headers sent to an HTTP server.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Whether a stdio server runs inside the attempt's sandbox, with the CLI (true, the
    /// default), or outside it as Baton's user, joined to the CLI through a socket.
    #[serde(default = "yes")]
    pub sandbox: bool,
}

fn yes() -> bool {
    true
}

impl McpServer {
    /// Its form: a catalogue name, exactly one of `command` and `url`.
    pub fn check(&self) -> Result<(), String> {
        let at = format!("mcp_server {:?}", self.name);
        if !valid_server_name(&self.name) {
            return Err(format!(
                "{at}: name must be letters, digits, _ and -, at most 64"
            ));
        }
        match (&self.command, &self.url) {
            (Some(c), None) if !c.trim().is_empty() => Ok(()),
            (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {
                if !self.sandbox {
                    return Err(format!(
                        "{at}: sandbox = false is for a command; an HTTP server is called by the CLI"
                    ));
                }
                Ok(())
            }
            (None, Some(_)) => Err(format!("{at}: url must be an http(s) URL")),
            _ => Err(format!("{at}: give exactly one of command and url")),
        }
    }
}

/// Why a job may not run as asked: the rule and the value that breaks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The policy's field: `tools`, `permission_modes`, `roots`, `raw_mcp`, ….
    pub rule: &'static str,
    /// What the job asked for.
    pub value: String,
    pub message: String,
}

fn refuse(rule: &'static str, value: impl Into<String>, why: impl std::fmt::Display) -> Refusal {
    let value = value.into();
    Refusal {
        message: format!("the project's policy ({rule}) does not allow {value:?}: {why}"),
        rule,
        value,
    }
}

/// What [`Policy::apply`] needs from the server.
pub struct Context<'a> {
    /// The timeout a job that names none gets.
    pub default_timeout_ms: u64,
    /// Whether `path` is inside one of `roots` (after resolving symbolic links).
    pub inside: &'a (dyn Fn(&str, &[String]) -> bool + Sync),
}

/// A tool item's name: `Bash` of `Bash(git log:*)`.
fn tool_name(item: &str) -> &str {
    item.split('(').next().unwrap_or(item).trim()
}

/// The tools one item names, split as the CLI splits a list: on commas and white space
/// outside a rule's parentheses (`"Read(x) Bash"` is `Read(x)` and `Bash`).
pub fn split_tools(item: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in item.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if start < i {
                    out.push(&item[start..i]);
                }
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if start < item.len() {
        out.push(&item[start..]);
    }
    out
}

fn any(list: &[String]) -> bool {
    list.iter().any(|i| i == ANY)
}

fn listed(list: &[String]) -> String {
    if list.is_empty() {
        "it allows none".into()
    } else {
        format!("it allows {}", list.join(", "))
    }
}

/// A name of the MCP catalogue: letters, digits, `_` and `-`, 1 to 64 of them.
pub fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Policy {
    /// Everything allowed: what the default project of a Baton that sets no `[policy]`
    /// has (a single user's Baton, as before there were policies).
    pub fn open() -> Self {
        Self {
            tools: vec![ANY.into()],
            permission_modes: vec![ANY.into()],
            models: vec![ANY.into()],
            roots: vec![ANY.into()],
            mcp_servers: vec![ANY.into()],
            raw_mcp: true,
            verify: true,
            project_settings: true,
            ..Self::default()
        }
    }

    /// The policy's own form: bounded lists of non-empty items, known permission modes,
    /// absolute roots, catalogue names, limits in range. (Whether roots are inside the
    /// workspace roots is the server's to check.)
    pub fn check(&self) -> Result<(), String> {
        for (field, list) in [
            ("tools", &self.tools),
            ("permission_modes", &self.permission_modes),
            ("models", &self.models),
            ("roots", &self.roots),
            ("mcp_servers", &self.mcp_servers),
        ] {
            if list.len() > MAX_ITEMS {
                return Err(format!("policy.{field} has more than {MAX_ITEMS} items"));
            }
            for item in list {
                if item.trim().is_empty()
                    || item.contains('\0')
                    || item.chars().count() > MAX_ITEM_CHARS
                {
                    return Err(format!(
                        "policy.{field} items must be 1 to {MAX_ITEM_CHARS} characters, not blank, no NUL"
                    ));
                }
            }
        }
        for mode in &self.permission_modes {
            let known = [
                PermissionMode::Default,
                PermissionMode::AcceptEdits,
                PermissionMode::Auto,
                PermissionMode::BypassPermissions,
                PermissionMode::DontAsk,
                PermissionMode::Plan,
            ]
            .iter()
            .any(|m| m.as_str() == mode);
            if mode != ANY && !known {
                return Err(format!(
                    "policy.permission_modes: {mode:?} is not a permission mode (default, acceptEdits, auto, bypassPermissions, dontAsk, plan or *)"
                ));
            }
        }
        for root in &self.roots {
            if root != ANY && (!root.starts_with('/') || root.split('/').any(|c| c == "..")) {
                return Err(format!(
                    "policy.roots: {root:?} must be an absolute path without '..', or *"
                ));
            }
        }
        for name in &self.mcp_servers {
            if name != ANY && !valid_server_name(name) {
                return Err(format!(
                    "policy.mcp_servers: {name:?} is not a catalogue name (letters, digits, _ and -, at most 64)"
                ));
            }
        }
        if let Some(n) = self.max_turns
            && !(1..=10_000).contains(&n)
        {
            return Err("policy.max_turns must be between 1 and 10000".into());
        }
        if let Some(t) = self.max_timeout_ms
            && !(crate::spec::MIN_TIMEOUT_MS..=24 * 3600 * 1000).contains(&t)
        {
            return Err("policy.max_timeout_ms must be between 1000 and 86400000".into());
        }
        if let Some(b) = self.max_budget_usd
            && !(b.is_finite() && b > 0.0 && b <= 100_000.0)
        {
            return Err("policy.max_budget_usd must be a positive number of dollars".into());
        }
        Ok(())
    }

    /// Whether a job may allow `item` (a tool, or a tool rule).
    fn allows(&self, item: &str) -> bool {
        any(&self.tools)
            || self.tools.iter().any(|t| t == item)
            || self
                .tools
                .iter()
                .any(|t| !t.contains('(') && t.trim() == tool_name(item))
    }

    /// Whether a job may make tool `name` available (some rule of it is allowed).
    fn offers(&self, name: &str) -> bool {
        any(&self.tools) || self.tools.iter().any(|t| tool_name(t) == name)
    }

    /// Checks `spec` against the policy and fills in what it left to it: the tools a job
    /// that names none gets, the first model, the limits. Records the policy with it.
    pub fn apply(&self, spec: &mut JobSpec, ctx: &Context<'_>) -> Result<(), Refusal> {
        let o = &mut spec.options;
        // MCP: catalogue servers by name; a command line only where the policy says so.
        if o.mcp_config.is_some() && !self.raw_mcp {
            return Err(refuse(
                "raw_mcp",
                "mcp_config",
                "a job may name MCP servers of the catalogue (mcp_servers), not bring its own command lines",
            ));
        }
        for name in &o.mcp_servers {
            if !any(&self.mcp_servers) && !self.mcp_servers.contains(name) {
                return Err(refuse("mcp_servers", name, listed(&self.mcp_servers)));
            }
        }
        let raw_names: Vec<String> = o
            .mcp_config
            .as_ref()
            .and_then(|c| c.get("mcpServers"))
            .and_then(|s| s.as_object())
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        for item in o.allowed_tools.iter().flat_map(|i| split_tools(i)) {
            // An MCP tool (`mcp__server__tool`) is the job's if its server is.
            if let Some(rest) = item.strip_prefix("mcp__") {
                let server = rest.split("__").next().unwrap_or_default();
                if o.mcp_servers.iter().chain(&raw_names).any(|s| s == server) {
                    continue;
                }
                return Err(refuse(
                    "mcp_servers",
                    item,
                    "the job names no MCP server of that name",
                ));
            }
            if !self.allows(item) {
                return Err(refuse("tools", item, listed(&self.tools)));
            }
        }
        match &o.tools {
            Some(tools) => {
                for t in tools.iter().flat_map(|i| split_tools(i)) {
                    let name = tool_name(t);
                    if (name == "default" && !any(&self.tools)) || !self.offers(name) {
                        return Err(refuse("tools", t, listed(&self.tools)));
                    }
                }
            }
            None if !any(&self.tools) => {
                let mut names: Vec<String> = Vec::new();
                for t in &self.tools {
                    let name = tool_name(t).to_string();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                o.tools = Some(names);
            }
            None => {}
        }
        let mode = o
            .permission_mode
            .unwrap_or(PermissionMode::Default)
            .as_str();
        if !any(&self.permission_modes) && !self.permission_modes.iter().any(|m| m == mode) {
            return Err(refuse(
                "permission_modes",
                mode,
                listed(&self.permission_modes),
            ));
        }
        if !any(&self.models) {
            match &o.model {
                Some(m) if !self.models.contains(m) => {
                    return Err(refuse("models", m, listed(&self.models)));
                }
                Some(_) => {}
                None => o.model = self.models.first().cloned(),
            }
        }
        if let Some(max) = self.max_turns {
            match o.max_turns {
                Some(n) if n > max => {
                    return Err(refuse("max_turns", n.to_string(), format!("at most {max}")));
                }
                Some(_) => {}
                None => o.max_turns = Some(max),
            }
        }
        if let Some(max) = self.max_budget_usd {
            match o.max_budget_usd {
                Some(b) if b > max => {
                    return Err(refuse(
                        "max_budget_usd",
                        b.to_string(),
                        format!("at most {max}"),
                    ));
                }
                Some(_) => {}
                None => o.max_budget_usd = Some(max),
            }
        }
        if let Some(max) = self.max_timeout_ms {
            let t = &mut spec.schedule.timeout_ms;
            if *t > max {
                // The server's default (a job that named none) is lowered to the policy's.
                if *t != ctx.default_timeout_ms {
                    return Err(refuse(
                        "max_timeout_ms",
                        t.to_string(),
                        format!("at most {max}"),
                    ));
                }
                *t = max;
            }
        }
        if !any(&self.roots) {
            let paths = spec
                .cwd
                .iter()
                .chain(&spec.options.add_dirs)
                .chain(spec.repos.iter().map(|r| &r.path));
            for p in paths {
                if !(ctx.inside)(p, &self.roots) {
                    return Err(refuse("roots", p, listed(&self.roots)));
                }
            }
        }
        if spec.verify.is_some() && !self.verify {
            return Err(refuse(
                "verify",
                "verify",
                "an agent's verify command may not run in this project",
            ));
        }
        spec.options.confined = !self.project_settings;
        spec.policy = Some(self.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobRequest, Limits};
    use serde_json::json;

    fn spec(v: serde_json::Value) -> JobSpec {
        serde_json::from_value::<JobRequest>(v)
            .unwrap()
            .parse(&Limits::default())
            .unwrap()
    }

    fn ctx() -> Context<'static> {
        Context {
            default_timeout_ms: Limits::default().default_timeout_ms,
            inside: &|p, roots| roots.iter().any(|r| p.starts_with(r.as_str())),
        }
    }

    fn apply(policy: &Policy, v: serde_json::Value) -> Result<JobSpec, Refusal> {
        let mut s = spec(v);
        policy.apply(&mut s, &ctx()).map(|()| s)
    }

    #[test]
    fn the_safe_default_gives_read_only_tools_and_refuses_the_rest_naming_the_rule() {
        let p = Policy::default();
        let s = apply(&p, json!({"prompt": "x"})).unwrap();
        assert_eq!(
            s.options.tools,
            Some(vec!["Read".into(), "Glob".into(), "Grep".into()])
        );
        assert_eq!(s.policy.as_ref(), Some(&p));
        for (req, rule, value) in [
            (json!({"allowed_tools": ["Bash"]}), "tools", "Bash"),
            (json!({"tools": ["Read", "Write"]}), "tools", "Write"),
            (json!({"tools": ["default"]}), "tools", "default"),
            (
                json!({"permission_mode": "bypassPermissions"}),
                "permission_modes",
                "bypassPermissions",
            ),
            (
                json!({"mcp_config": {"mcpServers": {"x": {"command": "sh"}}}}),
                "raw_mcp",
                "mcp_config",
            ),
            (json!({"mcp_servers": ["github"]}), "mcp_servers", "github"),
            (json!({"cwd": "/srv/repo"}), "roots", "/srv/repo"),
            (json!({"add_dirs": ["/srv/x"]}), "roots", "/srv/x"),
            (
                json!({"allowed_tools": ["mcp__evil__run"]}),
                "mcp_servers",
                "mcp__evil__run",
            ),
            // Lists inside one item, as the CLI splits them.
            (json!({"allowed_tools": ["Read(x) Bash"]}), "tools", "Bash"),
            (json!({"tools": ["Grep(x),Bash"]}), "tools", "Bash"),
            (json!({"tools": ["Read(x) default"]}), "tools", "default"),
            (
                json!({"allowed_tools": ["mcp__docs__q\tWrite"]}),
                "mcp_servers",
                "mcp__docs__q",
            ),
        ] {
            let mut req = req.as_object().unwrap().clone();
            req.insert("prompt".into(), json!("x"));
            let e = apply(&p, req.into()).unwrap_err();
            assert_eq!((e.rule, e.value.as_str()), (rule, value), "{e}");
            assert!(e.message.contains(rule) && e.message.contains(value), "{e}");
        }
    }

    #[test]
    fn rules_limits_models_and_roots_are_enforced_and_filled_in() {
        let p = Policy {
            tools: vec!["Read".into(), "Bash(git log:*)".into()],
            permission_modes: vec!["default".into(), "dontAsk".into()],
            models: vec!["sonnet".into(), "haiku".into()],
            max_turns: Some(5),
            max_timeout_ms: Some(60_000),
            max_budget_usd: Some(1.5),
            roots: vec!["/srv/a".into()],
            mcp_servers: vec!["docs".into()],
            ..Policy::default()
        };
        let s = apply(
            &p,
            json!({"prompt": "x", "allowed_tools": ["Bash(git log:*)", "Read(/srv/a/**)", "mcp__docs__search"],
                   "permission_mode": "dontAsk", "cwd": "/srv/a/repo", "mcp_servers": ["docs"]}),
        )
        .unwrap();
        assert_eq!(s.options.tools, Some(vec!["Read".into(), "Bash".into()]));
        assert_eq!(s.options.model.as_deref(), Some("sonnet"));
        assert_eq!(
            (
                s.options.max_turns,
                s.options.max_budget_usd,
                s.schedule.timeout_ms
            ),
            (Some(5), Some(1.5), 60_000)
        );
        for (req, rule) in [
            (json!({"allowed_tools": ["Bash(rm:*)"]}), "tools"),
            (json!({"allowed_tools": ["Bash"]}), "tools"),
            (json!({"model": "opus"}), "models"),
            (json!({"max_turns": 6}), "max_turns"),
            (json!({"max_budget_usd": 2}), "max_budget_usd"),
            (json!({"timeout_ms": 120000}), "max_timeout_ms"),
            (json!({"cwd": "/srv/b"}), "roots"),
        ] {
            let mut req = req.as_object().unwrap().clone();
            req.insert("prompt".into(), json!("x"));
            assert_eq!(apply(&p, req.into()).unwrap_err().rule, rule);
        }
        assert!(
            apply(
                &p,
                json!({"prompt": "x", "max_turns": 5, "timeout_ms": 60000})
            )
            .is_ok()
        );
    }

    #[test]
    fn the_open_policy_changes_nothing_but_records_itself() {
        let req = json!({"prompt": "x", "allowed_tools": ["Bash"], "permission_mode": "bypassPermissions",
                         "mcp_config": {"mcpServers": {"x": {"command": "sh"}}}, "cwd": "/anywhere"});
        let mut expected = spec(req.clone());
        let s = apply(&Policy::open(), req).unwrap();
        expected.policy = Some(Policy::open());
        assert_eq!(s, expected);
    }

    #[test]
    fn a_policy_is_checked_and_fields_left_out_are_the_safe_defaults() {
        let p: Policy = serde_json::from_value(json!({"tools": ["*"]})).unwrap();
        assert_eq!(p.permission_modes, vec!["default".to_string()]);
        assert!(!p.raw_mcp && p.roots.is_empty());
        assert!(Policy::open().check().is_ok() && Policy::default().check().is_ok());
        for bad in [
            json!({"permission_modes": ["yolo"]}),
            json!({"roots": ["relative"]}),
            json!({"roots": ["/a/../b"]}),
            json!({"mcp_servers": ["has space"]}),
            json!({"max_turns": 0}),
            json!({"tools": [" "]}),
        ] {
            let p: Policy = serde_json::from_value(bad.clone()).unwrap();
            assert!(p.check().is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<Policy>(json!({"nope": 1})).is_err());
    }
}
