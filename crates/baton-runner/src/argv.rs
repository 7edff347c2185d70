//! The CLI's argument vector and environment, built as data (never through a shell).
//! Nothing the caller wrote goes into argv except tool names, model names and paths:
//! the prompt goes through stdin, and system prompts and MCP configuration (which may hold
//! credentials) go through files only the attempt can read.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use baton_core::{ClaudeRun, SessionMode};

/// Files written for one attempt, named in argv by path.
#[derive(Debug, Default, Clone)]
pub struct ArgFiles {
    pub system_prompt: Option<PathBuf>,
    pub append_system_prompt: Option<PathBuf>,
    pub mcp_config: Option<PathBuf>,
}

pub fn build_args(spec: &ClaudeRun, files: &ArgFiles) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-p", "--output-format", "stream-json", "--verbose"]
        .into_iter()
        .map(OsString::from)
        .collect();
    if spec.options.include_partial_messages {
        args.push("--include-partial-messages".into());
    }
    let mut push = |flag: &str, value: &str| {
        args.push(flag.into());
        args.push(value.into());
    };
    if let Some(m) = &spec.options.model {
        push("--model", m);
    }
    if let Some(f) = &files.system_prompt {
        push("--system-prompt-file", &f.to_string_lossy());
    }
    if let Some(f) = &files.append_system_prompt {
        push("--append-system-prompt-file", &f.to_string_lossy());
    }
    // One flag per tool: a rule such as `Bash(git *)` contains a space, which the CLI
    // would otherwise take as a separator.
    for t in &spec.options.allowed_tools {
        push("--allowedTools", t);
    }
    for t in &spec.options.disallowed_tools {
        push("--disallowedTools", t);
    }
    if let Some(tools) = &spec.options.tools {
        push("--tools", &tools.join(","));
    }
    if let Some(mode) = spec.options.permission_mode {
        push("--permission-mode", mode.as_str());
    }
    if let Some(n) = spec.options.max_turns {
        push("--max-turns", &n.to_string());
    }
    if let Some(b) = spec.options.max_budget_usd {
        push("--max-budget-usd", &b.to_string());
    }
    if let Some(schema) = &spec.options.json_schema {
        push("--json-schema", &schema.to_string());
    }
    if let Some(f) = &files.mcp_config {
        push("--mcp-config", &f.to_string_lossy());
    }
    // Its working directory's settings (hooks are commands) are not the job's to bring.
    if spec.options.confined {
        push("--setting-sources", "user");
    }
    if files.mcp_config.is_some() || spec.options.confined {
        args.push("--strict-mcp-config".into());
    }
    for d in &spec.options.add_dirs {
        args.push("--add-dir".into());
        args.push(d.into());
    }
    match spec.session {
        SessionMode::New => {}
        SessionMode::Start { id } => {
            args.push("--session-id".into());
            args.push(id.to_string().into());
        }
        SessionMode::Resume { id } => {
            args.push("--resume".into());
            args.push(id.to_string().into());
        }
        SessionMode::Fork { from, id } => {
            args.push("--resume".into());
            args.push(from.to_string().into());
            args.push("--fork-session".into());
            if let Some(id) = id {
                args.push("--session-id".into());
                args.push(id.to_string().into());
            }
        }
    }
    args
}

/// Variables always taken from Baton's own environment when set: credentials and endpoint
/// for the CLI, proxies and locale. Anything else must be named in configuration.
pub const DEFAULT_PASSTHROUGH: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_MAX_RETRIES",
    "API_TIMEOUT_MS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "NODE_EXTRA_CA_CERTS",
    "LANG",
    "LC_ALL",
    "TZ",
];

/// Variables that carry a credential, or say where the API is: with Baton's proxy, none
/// of them comes from Baton's environment or configuration, only from the attempt's own.
pub const CREDENTIAL_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// The child's whole environment: an allow-list, never an inherited copy. `credential`,
/// when given (an attempt's proxy token and base URL), replaces every credential variable.
pub fn build_env(
    home: &Path,
    tmp: &Path,
    passthrough: &[String],
    extra: &[(String, String)],
    credential: &[(String, String)],
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| {
        env.retain(|(name, _)| name != k);
        env.push((k.into(), v));
    };
    set(
        "PATH",
        lookup("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    set("HOME", home.into());
    set("TMPDIR", tmp.into());
    // The CLI retries a failing API ten times over about three minutes, 401s included.
    // Baton retries jobs itself, with its own backoff and dead-letter queue, so one quick
    // retry inside the CLI is enough; configuration may still set another value.
    set("CLAUDE_CODE_MAX_RETRIES", "1".into());
    for name in DEFAULT_PASSTHROUGH
        .iter()
        .copied()
        .chain(passthrough.iter().map(String::as_str))
    {
        if let Some(v) = lookup(name) {
            set(name, v);
        }
    }
    for (k, v) in extra {
        set(k, v.into());
    }
    // The attempt's own credential (Baton's proxy) replaces every credential variable,
    // whatever Baton's environment or configuration said.
    for (k, v) in credential {
        set(k, v.into());
    }
    // Last, so that configuration cannot undo them: no traffic beyond the API, no
    // self-update, and never the variable that makes the CLI think it runs inside itself.
    set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into());
    set("DISABLE_AUTOUPDATER", "1".into());
    env.retain(|(k, _)| {
        k != "CLAUDECODE"
            && (credential.is_empty()
                || !CREDENTIAL_VARS.iter().any(|c| k == c)
                || credential.iter().any(|(name, _)| k == name.as_str()))
    });
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{JobRequest, Limits, SessionId};

    #[test]
    fn prompt_never_reaches_argv() {
        let mut req = JobRequest::prompt("SECRET PROMPT");
        req.system_prompt = Some("SECRET SYSTEM".into());
        req.allowed_tools = Some(vec!["Bash(git *)".into(), "Read".into()]);
        let spec = req.parse(&Limits::default()).unwrap().claude_run();
        let files = ArgFiles {
            system_prompt: Some("/a/system.txt".into()),
            ..ArgFiles::default()
        };
        let args: Vec<String> = build_args(&spec, &files)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(!args.iter().any(|a| a.contains("SECRET")), "{args:?}");
        assert_eq!(
            &args[..4],
            ["-p", "--output-format", "stream-json", "--verbose"]
        );
        let tools: Vec<_> = args
            .windows(2)
            .filter(|w| w[0] == "--allowedTools")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(tools, ["Bash(git *)", "Read"]);
    }

    #[test]
    fn fork_with_chosen_id() {
        let mut spec = JobRequest::prompt("x")
            .parse(&Limits::default())
            .unwrap()
            .claude_run();
        let (from, id) = (SessionId::new(), SessionId::new());
        spec.session = SessionMode::Fork { from, id: Some(id) };
        let args: Vec<String> = build_args(&spec, &ArgFiles::default())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let tail = &args[args.len() - 5..];
        assert_eq!(
            tail,
            [
                "--resume",
                &from.to_string(),
                "--fork-session",
                "--session-id",
                &id.to_string()
            ]
        );
    }

    #[test]
    fn environment_is_an_allow_list() {
        let parent = |k: &str| match k {
            "PATH" => Some("/bin".into()),
            "ANTHROPIC_API_KEY" => Some("sk-test".into()),
            "AWS_SECRET_ACCESS_KEY" | "CLAUDECODE" => Some("leak".into()),
            _ => None,
        };
        let extra = vec![("CLAUDECODE".to_string(), "1".to_string())];
        let env = build_env(Path::new("/h"), Path::new("/t"), &[], &extra, &[], parent);
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert!(names.contains(&"ANTHROPIC_API_KEY"));
        assert!(!names.contains(&"AWS_SECRET_ACCESS_KEY"));
        assert!(!names.contains(&"CLAUDECODE"));
        assert!(env.contains(&(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into()
        )));
        assert!(env.contains(&("HOME".into(), "/h".into())));
    }
}
