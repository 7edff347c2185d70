//! What a run will do, derived from the command line and the environment and validated in
//! the order the real CLI validates: the first problem found is the one reported, with the
//! real CLI's text where it was observed (`crates/fake-claude/fixtures`).

use std::ffi::CStr;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cli::{InputFormat, Options, OutputFormat, split_tool_list};
use crate::json::Json;

/// The model when `--model` is absent.
pub const DEFAULT_MODEL: &str = "claude-opus-5-5";

/// The `system/init` tool list of a default run, in the CLI's order.
pub const DEFAULT_TOOLS: [&str; 22] = [
    "Task",
    "Bash",
    "CronCreate",
    "CronDelete",
    "CronList",
    "Edit",
    "EnterWorktree",
    "ExitWorktree",
    "ListAgents",
    "Monitor",
    "NotebookEdit",
    "Read",
    "ReportFindings",
    "ScheduleWakeup",
    "SendMessage",
    "Skill",
    "TaskStop",
    "ToolSearch",
    "WebFetch",
    "WebSearch",
    "Workflow",
    "Write",
];

/// Facts about the process the fake runs in.
#[derive(Debug)]
pub struct Environment {
    /// The current directory as `getcwd` reports it: sessions are keyed by this string.
    pub cwd: String,
    /// `$CLAUDE_CONFIG_DIR`, else `$HOME/.claude`.
    pub config_dir: PathBuf,
    pub home: Option<String>,
    /// The arguments after argv[0], for `FAKE echo_env`.
    pub args: Vec<String>,
    /// `apiKeySource` in `system/init`.
    pub api_key_source: &'static str,
}

impl Environment {
    pub fn detect(args: Vec<String>) -> Result<Environment, String> {
        let cwd = std::env::current_dir()
            .map_err(|e| format!("fake-claude: cannot read the current directory: {e}"))?
            .to_string_lossy()
            .into_owned();
        let home = std::env::var("HOME").ok().filter(|h| !h.is_empty());
        let config_dir = match std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(home.clone().or_else(passwd_home).ok_or(
                "fake-claude: neither CLAUDE_CONFIG_DIR nor HOME is set, and the user has no home directory",
            )?)
            .join(".claude"),
        };
        let api_key_source = if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
            "ANTHROPIC_API_KEY"
        } else {
            "none"
        };
        Ok(Environment {
            cwd,
            config_dir,
            home,
            args,
            api_key_source,
        })
    }
}

/// Node's `os.homedir()` falls back to the password database when `HOME` is unset.
fn passwd_home() -> Option<String> {
    // SAFETY: getpwuid returns null or a pointer to static storage that stays valid until the
    // next getpw* call; this runs before any other thread exists and copies the string out.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            return None;
        }
        Some(
            CStr::from_ptr((*entry).pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// How the session is chosen (see `session::open`).
#[derive(Debug)]
pub struct SessionRequest {
    /// `--session-id`.
    pub session_id: Option<String>,
    /// `--resume ID`.
    pub resume: Option<String>,
    /// `--continue`: resume the newest session of this directory.
    pub continue_latest: bool,
    pub fork: bool,
    /// False with `--no-session-persistence`.
    pub persist: bool,
}

/// An MCP server named in `--mcp-config`, as listed in `system/init`.
#[derive(Debug)]
pub struct McpServer {
    pub name: String,
    /// `connected`, or `failed` when its command is a path that does not exist.
    pub status: &'static str,
    /// A stdio server's command line and environment (for `FAKE mcp <name>`).
    pub command: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A validated run configuration.
#[derive(Debug)]
pub struct Config {
    pub output: OutputFormat,
    pub input: InputFormat,
    pub verbose: bool,
    pub partial_messages: bool,
    pub replay_user_messages: bool,
    /// The name shown in `system/init`, sent to the API and keyed in `modelUsage`, e.g.
    /// `claude-opus-5-5`.
    pub model: String,
    pub permission_mode: String,
    pub tools: Vec<String>,
    pub allowed_tools: Vec<String>,
    pub max_turns: Option<u32>,
    pub max_budget_usd: Option<f64>,
    pub mcp_servers: Vec<McpServer>,
    pub session: SessionRequest,
    /// The positional prompt (text input only).
    pub prompt_arg: Option<String>,
}

impl Config {
    pub fn build(opts: Options, env: &Environment) -> Result<Config, String> {
        if opts.output_format == OutputFormat::StreamJson && !opts.verbose {
            return Err(
                "Error: When using --print, --output-format=stream-json requires --verbose".into(),
            );
        }
        if opts.include_partial_messages && opts.output_format != OutputFormat::StreamJson {
            return Err(
                "Error: --include-partial-messages requires --print and --output-format=stream-json."
                    .into(),
            );
        }
        if opts.input_format == InputFormat::StreamJson
            && opts.output_format != OutputFormat::StreamJson
        {
            return Err(
                "Error: --input-format=stream-json requires output-format=stream-json.".into(),
            );
        }

        let permission_mode = if opts.dangerously_skip_permissions {
            "bypassPermissions".to_string()
        } else {
            opts.permission_mode
                .clone()
                .unwrap_or_else(|| "default".into())
        };
        check_root(&opts, &permission_mode)?;

        if let Some(id) = &opts.session_id {
            if !is_uuid(id) {
                return Err("Error: Invalid session ID. Must be a valid UUID.".into());
            }
            if (opts.resume.is_some() || opts.continue_session) && !opts.fork_session {
                return Err("Error: --session-id can only be used with --continue or --resume if --fork-session is also specified.".into());
            }
        }

        check_prompt_files(&opts, &env.cwd)?;
        if let Some(schema) = &opts.json_schema {
            Json::parse(schema).map_err(|e| format!("Error: Invalid JSON schema: {e}"))?;
        }
        let max_turns = opts
            .max_turns
            .as_deref()
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    format!("error: option '--max-turns <turns>' argument '{v}' is invalid.")
                })
            })
            .transpose()?;
        let max_budget_usd = opts
            .max_budget_usd
            .as_deref()
            .map(|v| match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err("Error: --max-budget-usd must be a positive number".to_string()),
            })
            .transpose()?;
        let mut mcp_servers = Vec::new();
        for value in &opts.mcp_config {
            mcp_servers.extend(load_mcp_config(value, &env.cwd)?);
        }
        if let Some(settings) = &opts.settings {
            check_settings(settings, &env.cwd)?;
        }

        Ok(Config {
            output: opts.output_format,
            input: opts.input_format,
            verbose: opts.verbose,
            partial_messages: opts.include_partial_messages,
            replay_user_messages: opts.replay_user_messages,
            model: resolve_model(opts.model.as_deref()),
            permission_mode,
            tools: tool_list(opts.tools.as_deref(), &opts.disallowed_tools),
            allowed_tools: opts
                .allowed_tools
                .iter()
                .flat_map(|v| split_tool_list(v))
                .collect(),
            max_turns,
            max_budget_usd,
            mcp_servers,
            session: SessionRequest {
                session_id: opts.session_id,
                resume: opts.resume,
                continue_latest: opts.continue_session,
                fork: opts.fork_session,
                persist: !opts.no_session_persistence,
            },
            prompt_arg: opts.prompt,
        })
    }

    /// Whether a Write tool call would run without asking.
    pub fn write_allowed(&self) -> bool {
        matches!(
            self.permission_mode.as_str(),
            "acceptEdits" | "bypassPermissions"
        ) || self
            .allowed_tools
            .iter()
            .any(|t| t == "Write" || t.starts_with("Write("))
    }
}

/// The real check is `getuid()===0 && IS_SANDBOX!=="1" && !CLAUDE_CODE_BUBBLEWRAP`, applied
/// to both spellings of bypass.
fn check_root(opts: &Options, permission_mode: &str) -> Result<(), String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::getuid() } == 0;
    let bypass = opts.dangerously_skip_permissions || permission_mode == "bypassPermissions";
    let sandboxed = std::env::var("IS_SANDBOX").as_deref() == Ok("1")
        || std::env::var("CLAUDE_CODE_BUBBLEWRAP").is_ok_and(|v| !v.is_empty());
    if is_root && bypass && !sandboxed {
        return Err(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
                .into(),
        );
    }
    Ok(())
}

fn check_prompt_files(opts: &Options, cwd: &str) -> Result<(), String> {
    if opts.system_prompt.is_some() && opts.system_prompt_file.is_some() {
        return Err(
            "Error: Cannot use both --system-prompt and --system-prompt-file. Please use only one."
                .into(),
        );
    }
    if opts.append_system_prompt.is_some() && opts.append_system_prompt_file.is_some() {
        return Err("Error: Cannot use both --append-system-prompt and --append-system-prompt-file. Please use only one.".into());
    }
    let files = [
        ("System prompt", &opts.system_prompt_file),
        ("Append system prompt", &opts.append_system_prompt_file),
    ];
    for (what, file) in files {
        if let Some(file) = file {
            let path = resolve(cwd, file);
            if !path.is_file() {
                return Err(format!("Error: {what} file not found: {}", path.display()));
            }
        }
    }
    Ok(())
}

/// `--settings` is a JSON string or a path to a JSON file.
fn check_settings(value: &str, cwd: &str) -> Result<(), String> {
    if value.trim_start().starts_with('{') {
        return Json::parse(value)
            .map(drop)
            .map_err(|e| format!("Error: Invalid JSON provided to --settings: {e}"));
    }
    let path = resolve(cwd, value);
    let text = fs::read_to_string(&path)
        .map_err(|_| format!("Error: Settings file not found: {}", path.display()))?;
    Json::parse(&text).map(drop).map_err(|e| {
        format!(
            "Error: Invalid JSON in settings file {}: {e}",
            path.display()
        )
    })
}

/// Like the real CLI, a value that is not valid JSON is taken for a file path, so a
/// truncated JSON string is reported as a missing file.
fn load_mcp_config(value: &str, cwd: &str) -> Result<Vec<McpServer>, String> {
    const PREFIX: &str = "Error: Invalid MCP configuration:\n";
    let config = match Json::parse(value) {
        Ok(config) => config,
        Err(_) => {
            let path = resolve(cwd, value);
            let text = fs::read_to_string(&path)
                .map_err(|_| format!("{PREFIX}MCP config file not found: {}", path.display()))?;
            Json::parse(&text).map_err(|e| {
                format!(
                    "{PREFIX}MCP config file is not valid JSON: {}: {e}",
                    path.display()
                )
            })?
        }
    };
    let Some(Json::Obj(servers)) = config.get("mcpServers") else {
        return Err(format!(
            "{PREFIX}mcpServers: Does not adhere to MCP server configuration schema"
        ));
    };
    servers
        .iter()
        .map(|(name, server)| {
            if !matches!(server, Json::Obj(_)) {
                return Err(format!(
                    "{PREFIX}mcpServers.{name}: Does not adhere to MCP server configuration schema"
                ));
            }
            // The real CLI reports a server whose command cannot start as "failed" (j3).
            let command = server.get("command").and_then(Json::as_str);
            let status = match command {
                Some(c) if c.contains('/') && !Path::new(c).exists() => "failed",
                _ => "connected",
            };
            let strings = |v: Option<&Json>| match v {
                Some(Json::Arr(items)) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            let env = match server.get("env") {
                Some(Json::Obj(vars)) => vars
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect(),
                _ => Vec::new(),
            };
            Ok(McpServer {
                name: name.clone(),
                status,
                command: command.map(String::from),
                args: strings(server.get("args")),
                env,
            })
        })
        .collect()
}

fn resolve(cwd: &str, path: &str) -> PathBuf {
    Path::new(cwd).join(path)
}

/// Aliases as observed (fixtures `2.1.332/m_model_*`): `opus`, `sonnet`, `haiku`, `fable`;
/// a `[1m]` context tag is dropped (every model has a 1M window); other names pass through.
pub fn resolve_model(arg: Option<&str>) -> String {
    let Some(name) = arg.filter(|m| !m.is_empty() && *m != "default") else {
        return DEFAULT_MODEL.to_string();
    };
    let base = name.strip_suffix("[1m]").unwrap_or(name);
    match base {
        "opus" => "claude-opus-5-5",
        "sonnet" => "claude-sonnet-5-5",
        "haiku" => "claude-haiku-5-5",
        "fable" => "claude-fable-5-2",
        other => other,
    }
    .to_string()
}

/// The init tool list: `--tools` picks from the built-ins (`""` = none, `default` = all),
/// then `--disallowedTools` removes whole tools (rules with parentheses remove nothing).
fn tool_list(tools: Option<&str>, disallowed: &[String]) -> Vec<String> {
    let defaults = || DEFAULT_TOOLS.iter().map(|t| t.to_string()).collect();
    let mut list: Vec<String> = match tools {
        None => defaults(),
        Some(value) => {
            let names = split_tool_list(value);
            if names.iter().any(|n| n == "default") {
                defaults()
            } else {
                let mut unique: Vec<String> = Vec::new();
                for name in names {
                    if !unique.contains(&name) {
                        unique.push(name);
                    }
                }
                unique
            }
        }
    };
    let removed: Vec<String> = disallowed.iter().flat_map(|v| split_tool_list(v)).collect();
    let had_bash = list.iter().any(|t| t == "Bash");
    list.retain(|t| !removed.contains(t));
    // Observed quirk (d5): without Bash, the CLI drops Monitor (which watches shell
    // commands) and offers its dedicated search tools instead, in name order after Task.
    if had_bash && !list.iter().any(|t| t == "Bash") && tools.is_none() {
        list.retain(|t| t != "Monitor");
        list.extend(["Glob".to_string(), "Grep".to_string()]);
        if let Some((first, rest)) = list.split_first_mut()
            && first == "Task"
        {
            rest.sort();
        }
    }
    list
}

/// The canonical hyphenated form only, as the CLI's validator accepts.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_aliases() {
        assert_eq!(resolve_model(None), "claude-opus-5-5");
        assert_eq!(resolve_model(Some("sonnet")), "claude-sonnet-5-5");
        assert_eq!(resolve_model(Some("opus[1m]")), "claude-opus-5-5");
        assert_eq!(resolve_model(Some("fable")), "claude-fable-5-2");
        assert_eq!(resolve_model(Some("my-model")), "my-model");
    }

    #[test]
    fn tools_follow_flags() {
        assert_eq!(tool_list(None, &[]).len(), 22);
        assert!(tool_list(Some(""), &[]).is_empty());
        assert_eq!(tool_list(Some("Bash,Read"), &[]), ["Bash", "Read"]);
        let without_bash = tool_list(None, &["Bash".into()]);
        assert!(!without_bash.contains(&"Bash".to_string()));
        assert_eq!(without_bash[0], "Task");
        assert!(without_bash.contains(&"Glob".to_string()));
        assert!(!without_bash.contains(&"Monitor".to_string()));
        assert_eq!(tool_list(None, &["Bash(rm *)".into()]).len(), 22);
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("11111111-2222-4333-8444-555555555555"));
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("111111112222433384445555555555550000"));
    }
}
