//! Playing one conversation turn: `system/init`, the scripted assistant messages and tool
//! round trips, then exactly one `result` (unless a directive says otherwise).
//!
//! A "model call" is simulated by `Runner::call` (`model`), which emits one assistant
//! event per content block (as the real CLI does), counts tokens with a fixed formula and
//! enforces `--max-turns` and `--max-budget-usd` at the points the real CLI does: the turn
//! limit before a request is sent, the budget after an answer arrives. Tool round trips
//! are in `tools`, the result line in `ending`, control requests in `control`, and the
//! directives that make the process misbehave in `misbehave`.

mod control;
mod ending;
mod misbehave;
mod model;
mod tools;

use std::time::{Duration, Instant};

use crate::cli::InputFormat;
use crate::config::{Config, Environment};
use crate::events::{self, Usage};
use crate::json::Json;
use crate::script::{Answer, Cut, ErrorKind, Script};
use crate::session::{self, Opened, Transcript, prompt_text};
use crate::stdio::{Input, Output, write_line};

use ending::{Ending, INTERRUPTED_DIAGNOSTIC, Stop, api_error_text};
use model::Block;

/// Runs turns for one session, in one process.
pub struct Runner {
    config: Config,
    env: Environment,
    out: Output,
    /// Present with `--input-format stream-json`.
    input: Option<Input>,
    session_id: String,
    /// User prompts of the session so far, for the "I remember" answer.
    history: Vec<String>,
    transcript: Transcript,
    /// Tokens per model over the whole process: `total_cost_usd` and `modelUsage` are
    /// cumulative across the turns of a warm process, as observed (f1). (2.1.332 also adds
    /// the spend of earlier processes of a resumed session, e2; the fake does not.)
    spent: Vec<(String, Usage)>,
    /// Results printed so far: the next result's `result_index`.
    results: u32,
    memory_dir: String,
}

/// Counters of the turn being played.
struct Turn {
    started: Instant,
    prompt_chars: u64,
    /// Counts model turns begun, including one refused by `--max-turns` (g1: 2 calls, 3).
    num_turns: u32,
    usage: Usage,
    /// Tokens per model in this turn: `model_usage_since_last_result`.
    spent: Vec<(String, Usage)>,
    /// Ids of the messages streamed with `--include-partial-messages`.
    begun_message_ids: Vec<String>,
    api_ms: u64,
    time_to_request_ms: Option<u64>,
    ttft_ms: Option<u64>,
    stop_reason: &'static str,
    denials: Vec<Json>,
}

impl Turn {
    fn new(prompt: &str) -> Turn {
        Turn {
            started: Instant::now(),
            prompt_chars: prompt.chars().count() as u64,
            num_turns: 1,
            usage: Usage::default(),
            spent: Vec::new(),
            begun_message_ids: Vec::new(),
            api_ms: 0,
            time_to_request_ms: None,
            ttft_ms: None,
            stop_reason: "end_turn",
            denials: Vec::new(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        millis(self.started.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Runner {
    pub fn new(config: Config, env: Environment, opened: Opened) -> Runner {
        let memory_dir = format!("{}/memory/", session::project_dir(&env).display());
        let input = (config.input == InputFormat::StreamJson).then(Input::spawn);
        Runner {
            out: Output::new(config.output, config.verbose),
            input,
            session_id: opened.session_id,
            history: opened.history,
            transcript: opened.transcript,
            spent: Vec::new(),
            results: 0,
            memory_dir,
            config,
            env,
        }
    }

    /// `--input-format stream-json`: one turn per user line until end of input.
    /// Returns the exit code.
    pub fn serve_stream_input(&mut self) -> u8 {
        loop {
            let Some(line) = self.input.as_mut().and_then(Input::next_line) else {
                return 0;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let message = match Json::parse(line) {
                Ok(message) => message,
                Err(_) => {
                    // 2.1.332 no longer echoes the line (f4); its length is in UTF-16 units.
                    let units = line.encode_utf16().count();
                    eprintln!(
                        "Error parsing streaming input line (type=unknown, {units} chars): SyntaxError"
                    );
                    return 1;
                }
            };
            match message.get("type").and_then(Json::as_str) {
                Some("user") => {
                    let inner = message.get("message").cloned().unwrap_or(Json::Null);
                    let role = inner.get("role");
                    if role.and_then(Json::as_str) != Some("user") {
                        let got = match role {
                            None => "undefined".to_string(),
                            Some(Json::Str(s)) => s.clone(),
                            Some(other) => other.to_compact(),
                        };
                        eprintln!("Error: Expected message role 'user', got '{got}'");
                        return 1;
                    }
                    let prompt = inner
                        .get("content")
                        .and_then(prompt_text)
                        .unwrap_or_default();
                    // A failed turn does not end a warm process; only input does.
                    self.run_turn(&prompt, Some(&inner));
                }
                Some("control_request") => {
                    self.answer_control(&message);
                }
                // The real CLI silently ignores other types (f6).
                _ => {}
            }
        }
    }

    /// Plays one turn and prints its result. Returns whether the result is an error.
    /// `stdin_message` is the user message of a stream-json line.
    pub fn run_turn(&mut self, prompt: &str, stdin_message: Option<&Json>) -> bool {
        let script = Script::parse(prompt);
        if let Some(code) = script.exit_code {
            std::process::exit(code);
        }
        if let Some(bytes) = script.stderr_flood {
            misbehave::flood_stderr(bytes);
        }
        if script.grandchild {
            misbehave::spawn_grandchild();
        }

        crate::interrupt::set_turn_active(true);
        let mut turn = Turn::new(prompt);
        let init = events::init(&self.config, &self.env, &self.session_id, &self.memory_dir);
        self.out.event(init);
        if let Some(message) = stdin_message
            && self.config.replay_user_messages
        {
            self.out
                .event(events::replay_event(message, &self.session_id));
        }
        let content = stdin_message
            .and_then(|m| m.get("content"))
            .cloned()
            .unwrap_or_else(|| Json::from(prompt));
        self.transcript
            .user_prompt(content, &self.config.permission_mode);

        if script.garbage {
            for line in [
                "this is not json",
                "{\"type\":\"assistant\",\"message\":",
                "<<< fake-claude garbage >>>",
            ] {
                write_line(line);
            }
            std::process::exit(1);
        }

        let ending = match self.play(&script, &mut turn, prompt) {
            Ok(ending) => ending,
            Err(Stop::MaxTurns) => Ending::max_turns(self.config.max_turns.unwrap_or(1)),
            Err(Stop::Budget) => Ending::max_budget(self.config.max_budget_usd.unwrap_or(1.0)),
            Err(Stop::Interrupted) => {
                self.user_text("[Request interrupted by user]", Vec::new());
                turn.num_turns += 1;
                Ending::interrupted()
            }
        };
        let (result, text) = self.result_event(&turn, &ending);
        self.out.result(result, &text);
        self.results += 1;
        self.transcript.last_prompt(prompt);
        self.history.push(prompt.to_string());
        if crate::interrupt::received() {
            std::process::exit(0); // k2: a SIGINT ends the process, with 0
        }
        crate::interrupt::set_turn_active(false);
        if script.hang_after_result {
            misbehave::hang_forever();
        }
        ending.is_error()
    }

    /// The scripted part of a turn, after `system/init`.
    fn play(&mut self, script: &Script, turn: &mut Turn, prompt: &str) -> Result<Ending, Stop> {
        if let Some(ms) = script.sleep_ms {
            self.pause(ms)?;
        }
        if let Some((status, secs)) = &script.rate_limit {
            self.rate_limit_event(status, *secs);
        }
        if let Some(cut) = script.cut {
            let text = self.plain_answer(&script.answer, prompt);
            self.call(turn, vec![Block::text(text)], "end_turn", 0)?;
            match cut {
                Cut::NoResult => std::process::exit(0),
                Cut::HangMidStream => misbehave::hang_forever(),
                Cut::Crash => std::process::abort(),
            }
        }

        match &script.answer {
            Answer::Default | Answer::Text(_) | Answer::EchoEnv | Answer::Mcp(_) => {
                let text = self.plain_answer(&script.answer, prompt);
                self.final_text(turn, &text)
            }
            Answer::Slow { chunks, gap_ms } => {
                let blocks = (1..=*chunks)
                    .map(|i| Block::text(format!("chunk {i}")))
                    .collect();
                self.call(turn, blocks, "end_turn", *gap_ms)?;
                // The result is the last text block, as with the real CLI.
                Ok(Ending::success(format!("chunk {chunks}")))
            }
            Answer::BigLine(bytes) => {
                let blocks = vec![Block::text("x".repeat(*bytes)), Block::text("big")];
                self.call(turn, blocks, "end_turn", 0)?;
                Ok(Ending::success("big"))
            }
            Answer::BigResult(bytes) => {
                let text = "y".repeat(*bytes);
                self.call(turn, vec![Block::text(text.clone())], "end_turn", 0)?;
                Ok(Ending::success(text))
            }
            Answer::Tool => {
                self.bash_round_trip(turn, "echo hi", "Print hi", "hi")?;
                self.final_text(turn, "done")
            }
            Answer::Loop(steps) => {
                for step in 1..=*steps {
                    let command = format!("echo loop{step}");
                    self.bash_round_trip(turn, &command, "loop step", &format!("loop{step}"))?;
                }
                self.final_text(turn, "done")
            }
            Answer::Deny => self.write_file(turn),
            Answer::ApiCalls {
                calls,
                input,
                output,
            } => {
                for i in 1..=*calls {
                    let (status, body) = match crate::http::post_message(*input, *output) {
                        Ok(answer) => answer,
                        Err(e) => {
                            let text = format!("API Error: Connection error. ({e})");
                            return Ok(self.synthetic_failure(turn, text, "unknown", None, false));
                        }
                    };
                    if status != 200 {
                        let text = format!("API Error: {status} {body}");
                        return Ok(self.synthetic_failure(
                            turn,
                            text,
                            "unknown",
                            Some((status, "invalid_request_error")),
                            true,
                        ));
                    }
                    if i < *calls {
                        self.bash_round_trip(turn, "true", "next call", "")?;
                    }
                }
                self.final_text(turn, &format!("made {calls} calls"))
            }
            Answer::Structured(value) => self.structured_output(turn, value),
            Answer::StructuredMissing => {
                let text = self.default_answer(prompt);
                self.call(turn, vec![Block::text(text.clone())], "end_turn", 0)?;
                // The CLI nudges the model once, then accepts a text answer (i2).
                self.user_text(
                    "[structured-output-enforce] You MUST call the StructuredOutput tool to complete this request. Call this tool now.",
                    vec![("isSynthetic", Json::Bool(true))],
                );
                turn.num_turns += 1;
                self.final_text(turn, &text)
            }
            Answer::ApiError(status) => {
                let failure = api_error_text(*status, &self.config.model);
                Ok(self.synthetic_failure(
                    turn,
                    failure.text,
                    failure.error,
                    Some((*status, failure.kind)),
                    true,
                ))
            }
            Answer::NotLoggedIn => {
                // No request is sent without credentials (o3), hence no request id.
                let text = "Not logged in · Please run /login".to_string();
                Ok(self.synthetic_failure(turn, text, "authentication_failed", None, false))
            }
            Answer::UsageLimit { resets_in_s } => {
                let resets_at = self.rate_limit_event("rejected", *resets_in_s);
                let hour = (resets_at / 3600) % 24;
                let (h12, half) = match hour {
                    0 => (12, "am"),
                    1..=11 => (hour, "am"),
                    12 => (12, "pm"),
                    _ => (hour - 12, "pm"),
                };
                let text = format!("You've hit your session limit · resets {h12}{half} (UTC)");
                // The limit is the subscription's, not an API status: none is reported.
                Ok(self.synthetic_failure(turn, text, "rate_limit", None, true))
            }
            Answer::Error(kind) => {
                self.call(turn, vec![Block::text("Working on it.")], "tool_use", 0)?;
                match kind {
                    ErrorKind::MaxTurns => {
                        turn.num_turns = self.config.max_turns.unwrap_or(1) + 1;
                        Err(Stop::MaxTurns)
                    }
                    ErrorKind::MaxBudget => Err(Stop::Budget),
                    ErrorKind::StructuredOutputRetries => Ok(Ending::failed(
                        "error_max_structured_output_retries",
                        "Failed to provide valid structured output after 5 attempts",
                        Some("tool_use"),
                    )),
                    ErrorKind::DuringExecution => Ok(Ending::failed(
                        "error_during_execution",
                        INTERRUPTED_DIAGNOSTIC,
                        None,
                    )),
                }
            }
        }
    }

    /// The text of answers that are just text.
    fn plain_answer(&self, answer: &Answer, prompt: &str) -> String {
        match answer {
            Answer::Text(text) => text.clone(),
            Answer::EchoEnv => self.echo_env(prompt),
            Answer::Mcp(name) => self.mcp_output(name),
            _ => self.default_answer(prompt),
        }
    }

    fn default_answer(&self, prompt: &str) -> String {
        if self.history.is_empty() {
            let head: String = prompt.trim_end().chars().take(200).collect();
            format!("fake answer to: {head}")
        } else {
            let earlier: Vec<&str> = self.history.iter().map(|p| p.trim()).collect();
            format!("I remember: {}", earlier.join(" | "))
        }
    }

    fn echo_env(&self, prompt: &str) -> String {
        let mut names: Vec<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        let report = crate::obj! {
            "argv" => self.env.args.clone(),
            "env" => names,
            "cwd" => self.env.cwd.clone(),
            "home" => std::env::var("HOME").ok(),
            // What the CLI would call the API with: tests check it is an attempt's token
            // and Baton's proxy, never the credential itself.
            "api_key" => std::env::var("ANTHROPIC_API_KEY").ok(),
            "base_url" => std::env::var("ANTHROPIC_BASE_URL").ok(),
            // SAFETY: getuid cannot fail.
            "uid" => f64::from(unsafe { libc::getuid() }),
            "prompt" => prompt,
        };
        report.to_compact()
    }

    /// Starts the stdio MCP server `name`, sends it `initialize` and closes its stdin;
    /// what it printed within 10 s (at most 64 KiB) is the answer.
    fn mcp_output(&self, name: &str) -> String {
        use std::io::{Read, Write};
        let Some(server) = self.config.mcp_servers.iter().find(|s| s.name == name) else {
            return format!("no MCP server {name}");
        };
        let Some(command) = &server.command else {
            return format!("MCP server {name} has no command");
        };
        let child = std::process::Command::new(command)
            .args(&server.args)
            .envs(server.env.iter().cloned())
            .current_dir(&self.env.cwd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return format!("cannot start MCP server {name}: {e}"),
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(
                b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{}}\n",
            );
        }
        let mut stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(64 * 1024).read_to_end(&mut out);
            }
            let _ = tx.send(out);
        });
        let out = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        String::from_utf8_lossy(&out).trim().to_string()
    }

    fn final_text(&mut self, turn: &mut Turn, text: &str) -> Result<Ending, Stop> {
        self.call(turn, vec![Block::text(text)], "end_turn", 0)?;
        Ok(Ending::success(text))
    }

    /// Counts an answer's tokens for the process and for the turn.
    fn record_spend(&mut self, turn: &mut Turn, usage: Usage) {
        events::record(&mut self.spent, &self.config.model, usage);
        events::record(&mut turn.spent, &self.config.model, usage);
        turn.usage.add(usage);
    }

    fn total_cost(&self) -> f64 {
        events::total_cost(&self.spent)
    }
}
