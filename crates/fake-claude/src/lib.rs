//! `fake-claude`: a protocol-faithful stand-in for the `claude` CLI (2.1.332) in `-p` mode,
//! scripted per test by directive lines in the prompt. Baton's tests spawn it exactly as
//! they would spawn the real CLI. Test support only.
//!
//! Faithful: flag names and validation errors, stream-json/json/text output with the real
//! key sets and key order, `system/init`, one assistant event per content block, tool round
//! trips, permission denials, `--max-turns`/`--max-budget-usd`, API-error results,
//! structured output, sessions stored where the real CLI stores them (resume, fork,
//! `--continue`, portability by copying one `.jsonl`), warm processes
//! (`--input-format stream-json`, `initialize`/`interrupt` control requests) and exit codes.
//!
//! Scripted: prompt lines `FAKE <directive> [args]` (see `script`). Without an
//! answer-shaping directive the answer is `fake answer to: <prompt>` in a new session and
//! `I remember: <earlier prompts joined by " | ">` once the session has history.
//!
//! Numbers: per simulated request, `input_tokens = 100 + prompt_chars / 4` and
//! `output_tokens = 1 + answer_chars / 4`; cost at the model's list price, for the default
//! `claude-opus-5-5` `= in * 4e-6 + out * 20e-6`. `total_cost_usd` and `modelUsage` add up
//! the turns of one process; unlike 2.1.332 they leave out what earlier processes of a
//! resumed session spent (the real CLI restores that from the transcript), and
//! `model_usage_since_last_result` is the turn's own spend in both.

pub mod cli;
pub mod config;
pub mod events;
mod http;
mod interrupt;
pub mod json;
pub mod script;
pub mod session;
mod stdio;
mod turn;

use crate::cli::{InputFormat, OutputFormat};
use crate::config::{Config, Environment};
use crate::session::OpenError;

/// The CLI version this fake imitates.
pub const VERSION: &str = "2.1.332";

const HELP: &str = "\
Usage: fake-claude -p [options] [prompt]

A protocol-faithful stand-in for the claude CLI (2.1.332), for tests. Only print mode.
Prompt lines starting with `FAKE ` script the run:
  text <words...>       answer with <words...>
  cat <path>            answer with the file's contents (relative to the cwd)
  sleep <ms>            wait after system/init
  slow <n> <ms>         n text blocks `chunk i`, ms apart
  tool | loop <n>       one / n Bash round trips, then `done`
  deny                  a Write that needs permission
  api_error <status>    an API failure result      not_logged_in
  usage_limit <secs>    a usage limit (rejected), reset in secs
  rate_limit <status> <secs>  a rate_limit_event (allowed, allowed_warning) first
  error <subtype>       error_max_turns | error_max_budget_usd |
                        error_max_structured_output_retries | error_during_execution
  structured <json>     structured_output          structured_missing
  no_result | hang_mid_stream | crash | hang_after_result | grandchild
  exit <code> | garbage | big_line <bytes> | big_result <bytes> | stderr_flood <bytes> | echo_env
  print_log <path>      append when each text delta is printed (microseconds since the epoch)
";

/// Runs the CLI with the arguments after argv[0]; returns the exit code.
pub fn run(args: Vec<String>) -> u8 {
    let opts = match cli::parse(&args) {
        Ok(opts) => opts,
        Err(message) => return refuse(&message),
    };
    if opts.version {
        stdio::write_line(&format!("{VERSION} (Claude Code)"));
        return 0;
    }
    if opts.help {
        print!("{HELP}");
        return 0;
    }
    if !opts.print {
        return refuse("fake-claude: only print mode (-p) is supported");
    }
    let env = match Environment::detect(args) {
        Ok(env) => env,
        Err(message) => return refuse(&message),
    };
    let config = match Config::build(opts, &env) {
        Ok(config) => config,
        Err(message) => return refuse(&message),
    };

    let prompt = match config.input {
        InputFormat::Text => match read_prompt(config.prompt_arg.as_deref()) {
            Some(prompt) => Some(prompt),
            None => {
                return refuse(
                    "Error: Input must be provided either through stdin or as a prompt argument when using --print",
                );
            }
        },
        // Warm processes take their prompts from stdin lines, one turn each.
        InputFormat::StreamJson => None,
    };

    let opened = match session::open(&config.session, &env) {
        Ok(opened) => opened,
        Err(OpenError::NotFound(id)) => {
            // stderr always; stdout only has a result line in stream-json (e3b, e4).
            let message = format!("No conversation found with session ID: {id}");
            eprintln!("{message}");
            if config.output == OutputFormat::StreamJson {
                stdio::write_line(&events::resume_failure(&id, &message).to_compact());
            }
            return 1;
        }
        Err(OpenError::Refused(message)) => return refuse(&message),
    };

    interrupt::install();
    let mut runner = turn::Runner::new(config, env, opened);
    match prompt {
        Some(prompt) => u8::from(runner.run_turn(&prompt, None)),
        None => runner.serve_stream_input(),
    }
}

fn refuse(message: &str) -> u8 {
    eprintln!("{message}");
    1
}

/// The prompt argument and piped stdin; both present means `<arg>\n<stdin>` (a5).
fn read_prompt(arg: Option<&str>) -> Option<String> {
    let piped = stdio::read_piped_prompt().filter(|s| !s.is_empty());
    let prompt = match (arg, piped) {
        (Some(arg), Some(piped)) => format!("{arg}\n{piped}"),
        (Some(arg), None) => arg.to_string(),
        (None, piped) => piped.unwrap_or_default(),
    };
    (!prompt.trim().is_empty()).then_some(prompt)
}

/// The `fake-claude` executable of this workspace's build, for other crates' tests: next to
/// the running test binary's directory (`target/<profile>/`), built on demand when a
/// filtered test run did not build it.
pub fn built_binary() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("a test binary lives in target/<profile>/deps");
        let bin = profile_dir.join("fake-claude");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "-p", "fake-claude"]);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("running cargo build -p fake-claude");
            assert!(status.success(), "could not build fake-claude");
        }
        bin
    })
    .clone()
}
