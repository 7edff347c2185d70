//! Command-line syntax, mirroring the real CLI (a commander.js program) for the flags Baton
//! uses: the same names and aliases, `--flag value` and `--flag=value`, and the same error
//! texts for unknown options, missing values and invalid choices.
//!
//! This module only reads the syntax. What the values mean (file paths exist, JSON parses,
//! numbers are numbers) is checked in `config`, in the order the real CLI checks them.

/// `--output-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
    StreamJson,
}

/// `--input-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputFormat {
    #[default]
    Text,
    StreamJson,
}

/// Everything the command line said, unvalidated beyond syntax and choice lists.
#[derive(Debug, Default)]
pub struct Options {
    pub print: bool,
    pub version: bool,
    pub help: bool,
    pub verbose: bool,
    pub output_format: OutputFormat,
    pub input_format: InputFormat,
    pub model: Option<String>,
    pub permission_mode: Option<String>,
    /// One entry per occurrence; each may itself be a comma/space-separated list.
    pub allowed_tools: Vec<String>,
    pub disallowed_tools: Vec<String>,
    pub tools: Option<String>,
    pub system_prompt: Option<String>,
    pub system_prompt_file: Option<String>,
    pub append_system_prompt: Option<String>,
    pub append_system_prompt_file: Option<String>,
    pub max_turns: Option<String>,
    pub max_budget_usd: Option<String>,
    pub json_schema: Option<String>,
    pub mcp_config: Vec<String>,
    pub strict_mcp_config: bool,
    pub add_dir: Vec<String>,
    pub session_id: Option<String>,
    pub resume: Option<String>,
    pub continue_session: bool,
    pub fork_session: bool,
    pub include_partial_messages: bool,
    pub no_session_persistence: bool,
    pub dangerously_skip_permissions: bool,
    pub permission_prompt_tool: Option<String>,
    pub replay_user_messages: bool,
    pub fallback_model: Option<String>,
    pub setting_sources: Option<String>,
    pub settings: Option<String>,
    /// The positional `[prompt]` argument.
    pub prompt: Option<String>,
}

const OUTPUT_FORMATS: [&str; 3] = ["text", "json", "stream-json"];
const INPUT_FORMATS: [&str; 2] = ["text", "stream-json"];
const PERMISSION_MODES: [&str; 6] = [
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "plan",
];

/// Parses the arguments after argv[0]. The error is the exact stderr text.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut positionals: Vec<String> = Vec::new();
    let mut rest = args.iter();
    let mut only_positionals = false;

    while let Some(arg) = rest.next() {
        if only_positionals || arg == "-" || !arg.starts_with('-') {
            positionals.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positionals = true;
            continue;
        }
        let (name, inline) = flag_name(arg)?;
        match value_placeholder(&name) {
            Some(placeholder) => {
                let value = match inline {
                    Some(v) => v,
                    None => rest.next().cloned().ok_or_else(|| {
                        format!("error: option '--{name} {placeholder}' argument missing")
                    })?,
                };
                set_value(&mut opts, &name, placeholder, value)?;
            }
            None => {
                if inline.is_some() || !set_switch(&mut opts, &name) {
                    return Err(format!("error: unknown option '{arg}'"));
                }
            }
        }
    }

    let mut positionals = positionals.into_iter();
    opts.prompt = positionals.next();
    let extra = positionals.count();
    if extra > 0 {
        return Err(format!(
            "error: too many arguments. Expected 1 argument but got {}.",
            extra + 1
        ));
    }
    Ok(opts)
}

/// Splits `--name=value` and maps short options to their long names.
fn flag_name(arg: &str) -> Result<(String, Option<String>), String> {
    if let Some(long) = arg.strip_prefix("--") {
        return Ok(match long.split_once('=') {
            Some((name, value)) => (canonical(name).to_string(), Some(value.to_string())),
            None => (canonical(long).to_string(), None),
        });
    }
    let long = match arg {
        "-p" => "print",
        "-v" => "version",
        "-h" => "help",
        "-r" => "resume",
        "-c" => "continue",
        _ => return Err(format!("error: unknown option '{arg}'")),
    };
    Ok((long.to_string(), None))
}

/// The real CLI accepts both camelCase and kebab-case spellings of these two.
fn canonical(name: &str) -> &str {
    match name {
        "allowedTools" => "allowed-tools",
        "disallowedTools" => "disallowed-tools",
        other => other,
    }
}

/// `Some(placeholder)` for options that take a value (the placeholder appears in errors).
fn value_placeholder(name: &str) -> Option<&'static str> {
    Some(match name {
        "output-format" | "input-format" => "<format>",
        "model" | "fallback-model" => "<model>",
        "permission-mode" => "<mode>",
        "allowed-tools" | "disallowed-tools" | "tools" => "<tools...>",
        "system-prompt" | "append-system-prompt" => "<prompt>",
        "system-prompt-file" | "append-system-prompt-file" => "<file>",
        "max-turns" => "<turns>",
        "max-budget-usd" => "<amount>",
        "json-schema" => "<schema>",
        "mcp-config" => "<configs...>",
        "add-dir" => "<directories...>",
        "session-id" => "<uuid>",
        "resume" => "[value]",
        "permission-prompt-tool" => "<tool>",
        "setting-sources" => "<sources>",
        "settings" => "<file-or-json>",
        // Accepted so that argv Baton might add does not fail, but otherwise ignored.
        "max-thinking-tokens" => "<tokens>",
        "effort" => "<level>",
        "name" => "<name>",
        "agent" => "<agent>",
        _ => return None,
    })
}

fn set_value(
    opts: &mut Options,
    name: &str,
    placeholder: &str,
    value: String,
) -> Result<(), String> {
    let invalid_choice = |value: &str, choices: &[&str]| {
        format!(
            "error: option '--{name} {placeholder}' argument '{value}' is invalid. Allowed choices are {}.",
            choices.join(", ")
        )
    };
    match name {
        "output-format" => {
            opts.output_format = match value.as_str() {
                "text" => OutputFormat::Text,
                "json" => OutputFormat::Json,
                "stream-json" => OutputFormat::StreamJson,
                _ => return Err(invalid_choice(&value, &OUTPUT_FORMATS)),
            }
        }
        "input-format" => {
            opts.input_format = match value.as_str() {
                "text" => InputFormat::Text,
                "stream-json" => InputFormat::StreamJson,
                _ => return Err(invalid_choice(&value, &INPUT_FORMATS)),
            }
        }
        "permission-mode" => {
            if !PERMISSION_MODES.contains(&value.as_str()) {
                return Err(invalid_choice(&value, &PERMISSION_MODES));
            }
            opts.permission_mode = Some(value);
        }
        "model" => opts.model = Some(value),
        "fallback-model" => opts.fallback_model = Some(value),
        "allowed-tools" => opts.allowed_tools.push(value),
        "disallowed-tools" => opts.disallowed_tools.push(value),
        "tools" => opts.tools = Some(value),
        "system-prompt" => opts.system_prompt = Some(value),
        "system-prompt-file" => opts.system_prompt_file = Some(value),
        "append-system-prompt" => opts.append_system_prompt = Some(value),
        "append-system-prompt-file" => opts.append_system_prompt_file = Some(value),
        "max-turns" => opts.max_turns = Some(value),
        "max-budget-usd" => opts.max_budget_usd = Some(value),
        "json-schema" => opts.json_schema = Some(value),
        "mcp-config" => opts.mcp_config.push(value),
        "add-dir" => opts.add_dir.push(value),
        "session-id" => opts.session_id = Some(value),
        "resume" => opts.resume = Some(value),
        "permission-prompt-tool" => opts.permission_prompt_tool = Some(value),
        "setting-sources" => opts.setting_sources = Some(value),
        "settings" => opts.settings = Some(value),
        _ => {} // Accepted and ignored (see `value_placeholder`).
    }
    Ok(())
}

/// Sets a boolean switch; `false` when `name` is not a known switch.
fn set_switch(opts: &mut Options, name: &str) -> bool {
    let slot = match name {
        "print" => &mut opts.print,
        "version" => &mut opts.version,
        "help" => &mut opts.help,
        "verbose" => &mut opts.verbose,
        "strict-mcp-config" => &mut opts.strict_mcp_config,
        "continue" => &mut opts.continue_session,
        "fork-session" => &mut opts.fork_session,
        "include-partial-messages" => &mut opts.include_partial_messages,
        "no-session-persistence" => &mut opts.no_session_persistence,
        "dangerously-skip-permissions" => &mut opts.dangerously_skip_permissions,
        "replay-user-messages" => &mut opts.replay_user_messages,
        // Accepted and ignored: they change nothing a fake can show.
        "bare"
        | "allow-dangerously-skip-permissions"
        | "disable-slash-commands"
        | "include-hook-events"
        | "debug-to-stderr" => return true,
        _ => return false,
    };
    *slot = true;
    true
}

/// Splits a tool list the way the CLI does: on commas and whitespace, but not inside the
/// parentheses of a rule such as `Bash(git log *)`.
pub fn split_tool_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' | ' ' | '\t' | '\n' if depth == 0 => {
                if !current.is_empty() {
                    items.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        items.push(current);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_values_switches_and_prompt() {
        let opts = parse(&args(&[
            "-p",
            "hello",
            "--output-format=stream-json",
            "--verbose",
            "--allowedTools",
            "Bash,Read",
            "--tools",
            "",
            "-r",
            "abc",
        ]))
        .unwrap();
        assert!(opts.print && opts.verbose);
        assert_eq!(opts.output_format, OutputFormat::StreamJson);
        assert_eq!(opts.allowed_tools, ["Bash,Read"]);
        assert_eq!(opts.tools.as_deref(), Some(""));
        assert_eq!(opts.resume.as_deref(), Some("abc"));
        assert_eq!(opts.prompt.as_deref(), Some("hello"));
    }

    #[test]
    fn reports_errors_like_commander() {
        assert_eq!(
            parse(&args(&["-p", "--nope"])).unwrap_err(),
            "error: unknown option '--nope'"
        );
        assert_eq!(
            parse(&args(&["-p", "--model"])).unwrap_err(),
            "error: option '--model <model>' argument missing"
        );
        assert!(
            parse(&args(&["--output-format", "xml"]))
                .unwrap_err()
                .contains(
                    "argument 'xml' is invalid. Allowed choices are text, json, stream-json."
                )
        );
    }

    #[test]
    fn splits_tool_lists_outside_parentheses() {
        assert_eq!(
            split_tool_list("Bash(git log *), Edit Read"),
            ["Bash(git log *)", "Edit", "Read"]
        );
        assert!(split_tool_list("").is_empty());
    }
}
