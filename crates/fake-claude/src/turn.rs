//! Playing one conversation turn: `system/init`, the scripted assistant messages and tool
//! round trips, then exactly one `result` (unless a directive says otherwise).
//!
//! A "model call" is simulated by [`Runner::call`], which emits one assistant event per
//! content block (as the real CLI does), counts tokens with a fixed formula and enforces
//! `--max-turns` and `--max-budget-usd` at the points the real CLI does:
//! the turn limit before a request is sent, the budget after an answer arrives.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::InputFormat;
use crate::config::{Config, Environment, resolve_model};
use crate::events::{self, AssistantBlock, Usage};
use crate::json::Json;
use crate::obj;
use crate::script::{Answer, Cut, ErrorKind, Script};
use crate::session::{self, Opened, Transcript, new_uuid, prompt_text};
use crate::stdio::{Input, Output, write_line};

const INTERRUPTED_DIAGNOSTIC: &str =
    "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null";

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
    /// cumulative across the turns of a warm process, as observed (f1).
    spent: Vec<(String, Usage)>,
    memory_dir: String,
}

/// Counters of the turn being played.
struct Turn {
    started: Instant,
    prompt_chars: u64,
    /// Counts model turns begun, including one refused by `--max-turns` (g1: 2 calls, 3).
    num_turns: u32,
    usage: Usage,
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

/// A content block of an assistant message.
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: &'static str,
        input: Json,
    },
}

impl Block {
    fn text(text: impl Into<String>) -> Block {
        Block::Text(text.into())
    }

    fn to_json(&self) -> Json {
        match self {
            Block::Text(text) => obj! { "type" => "text", "text" => text },
            Block::ToolUse { id, name, input } => obj! {
                "type" => "tool_use",
                "id" => id,
                "name" => *name,
                "input" => input.clone(),
            },
        }
    }

    fn chars(&self) -> u64 {
        match self {
            Block::Text(text) => text.chars().count() as u64,
            Block::ToolUse { input, .. } => input.to_compact().chars().count() as u64,
        }
    }
}

/// Why a turn ended before its script did.
enum Stop {
    MaxTurns,
    Budget,
    Interrupted,
}

/// How a turn ends: which kind of `result` it prints.
enum Ending {
    Success {
        result: String,
        structured: Option<Json>,
    },
    /// `subtype:"success"` with `is_error:true`: how the CLI reports API failures.
    ApiError { status: Option<u16>, text: String },
    /// An error subtype: no `result` key, an `errors` list instead.
    Failed {
        subtype: &'static str,
        error: String,
        terminal_reason: Option<&'static str>,
        stop_reason: Option<&'static str>,
        /// What text mode prints (without a newline, as observed).
        text: String,
    },
}

impl Ending {
    fn success(result: impl Into<String>) -> Ending {
        Ending::Success {
            result: result.into(),
            structured: None,
        }
    }

    fn is_error(&self) -> bool {
        !matches!(self, Ending::Success { .. })
    }

    fn max_turns(limit: u32) -> Ending {
        Ending::Failed {
            subtype: "error_max_turns",
            error: format!("Reached maximum number of turns ({limit})"),
            terminal_reason: Some("max_turns"),
            stop_reason: Some("tool_use"),
            text: format!("Error: Reached max turns ({limit})"),
        }
    }

    fn max_budget(limit: f64) -> Ending {
        let limit = Json::from(limit); // printed as JavaScript prints the number
        Ending::Failed {
            subtype: "error_max_budget_usd",
            error: format!("Reached maximum budget (${limit})"),
            terminal_reason: None,
            stop_reason: Some("tool_use"),
            text: format!("Error: Exceeded USD budget ({limit})"),
        }
    }

    fn failed(subtype: &'static str, error: &str, stop_reason: Option<&'static str>) -> Ending {
        Ending::Failed {
            subtype,
            error: error.to_string(),
            terminal_reason: None,
            stop_reason,
            text: format!("Error: {error}"),
        }
    }
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
                Err(e) => {
                    eprintln!(
                        "Error parsing streaming input line: {line}: SyntaxError: JSON Parse error: {e}"
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
            flood_stderr(bytes);
        }
        if script.grandchild {
            spawn_grandchild();
        }

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
                Ending::Failed {
                    subtype: "error_during_execution",
                    error: INTERRUPTED_DIAGNOSTIC.to_string(),
                    terminal_reason: Some("aborted_streaming"),
                    stop_reason: None,
                    text: format!("Error: {INTERRUPTED_DIAGNOSTIC}"),
                }
            }
        };
        let (result, text) = self.result_event(&turn, &ending);
        self.out.result(result, &text);
        self.transcript.last_prompt(prompt);
        self.history.push(prompt.to_string());
        if script.hang_after_result {
            hang_forever();
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
                Cut::HangMidStream => hang_forever(),
                Cut::Crash => std::process::abort(),
            }
        }

        match &script.answer {
            Answer::Default | Answer::Text(_) | Answer::EchoEnv => {
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
            Answer::Structured(value) => {
                let id = tool_use_id();
                let block = Block::ToolUse {
                    id: id.clone(),
                    name: "StructuredOutput",
                    input: value.clone(),
                };
                self.call(turn, vec![block], "tool_use", 0)?;
                let message = "Structured output provided successfully";
                // The CLI ends the turn here, without asking the model again (i1).
                let result_block = obj! {
                    "tool_use_id" => id,
                    "type" => "tool_result",
                    "content" => message,
                };
                self.tool_result(result_block, Json::from(message));
                turn.num_turns += 1;
                Ok(Ending::Success {
                    result: value.to_compact(),
                    structured: Some(value.clone()),
                })
            }
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
                let (text, error) = api_error_text(*status, &self.config.model);
                Ok(self.synthetic_failure(turn, text, error, Some(*status), true))
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
        let report = obj! {
            "argv" => self.env.args.clone(),
            "env" => names,
            "cwd" => self.env.cwd.clone(),
            "home" => std::env::var("HOME").ok(),
            "prompt" => prompt,
        };
        report.to_compact()
    }

    fn final_text(&mut self, turn: &mut Turn, text: &str) -> Result<Ending, Stop> {
        self.call(turn, vec![Block::text(text)], "end_turn", 0)?;
        Ok(Ending::success(text))
    }

    /// One simulated model request answered with `blocks`, `gap_ms` apart.
    fn call(
        &mut self,
        turn: &mut Turn,
        blocks: Vec<Block>,
        stop_reason: &'static str,
        gap_ms: u64,
    ) -> Result<(), Stop> {
        if let Some(max) = self.config.max_turns
            && turn.num_turns > max
        {
            return Err(Stop::MaxTurns);
        }
        let started = Instant::now();
        turn.time_to_request_ms.get_or_insert(turn.elapsed_ms());
        let message_id = format!("msg_01{}", random_id(22));
        let request_id = format!("req_011{}", random_id(21));
        let usage = Usage {
            input_tokens: 100 + turn.prompt_chars / 4,
            output_tokens: 1 + blocks.iter().map(Block::chars).sum::<u64>() / 4,
        };
        let model = self.config.api_model().to_string();
        let partial = self.config.partial_messages;
        if partial {
            self.out.event(events::status_requesting(&self.session_id));
            let start = obj! {
                "type" => "message_start",
                "message" => obj! {
                    "id" => message_id.clone(),
                    "type" => "message",
                    "role" => "assistant",
                    "model" => model.clone(),
                    "content" => Json::Arr(Vec::new()),
                    "stop_reason" => Json::Null,
                    "stop_sequence" => Json::Null,
                    "usage" => events::block_usage(usage.input_tokens),
                },
            };
            let mut event = events::stream_event(start, &self.session_id);
            event.set("ttft_ms", millis(started.elapsed()) + 1);
            self.out.event(event);
        }

        let count = blocks.len();
        for (index, block) in blocks.iter().enumerate() {
            if index > 0 && gap_ms > 0 {
                self.pause(gap_ms)?;
            }
            if partial {
                self.stream_block_deltas(index, block);
            }
            let uuid = new_uuid();
            let assistant = AssistantBlock {
                message_id: &message_id,
                request_id: &request_id,
                model: &model,
                session_id: &self.session_id,
                uuid: &uuid,
                block: block.to_json(),
                input_tokens: usage.input_tokens,
            };
            self.out.event(assistant.event());
            turn.ttft_ms.get_or_insert(turn.elapsed_ms());
            let last = index + 1 == count;
            let stored = assistant.stored_message(last.then_some(stop_reason), usage);
            self.transcript.assistant(&uuid, stored, Some(&request_id));
            if partial {
                let stop = obj! { "type" => "content_block_stop", "index" => index };
                self.out.event(events::stream_event(stop, &self.session_id));
            }
        }
        if partial {
            let delta = obj! {
                "type" => "message_delta",
                "delta" => obj! { "stop_reason" => stop_reason, "stop_sequence" => Json::Null },
                "usage" => obj! { "output_tokens" => usage.output_tokens },
            };
            self.out
                .event(events::stream_event(delta, &self.session_id));
            let stop = obj! { "type" => "message_stop" };
            self.out.event(events::stream_event(stop, &self.session_id));
        }

        turn.usage.add(usage);
        self.record_spend(usage);
        turn.api_ms += millis(started.elapsed());
        turn.stop_reason = stop_reason;
        if let Some(budget) = self.config.max_budget_usd
            && self.total_cost() > budget
        {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    /// `--include-partial-messages`: `content_block_start` and the deltas of one block.
    fn stream_block_deltas(&mut self, index: usize, block: &Block) {
        let (start, deltas) = match block {
            Block::Text(text) => {
                let deltas = chunks(text)
                    .map(|piece| obj! { "type" => "text_delta", "text" => piece })
                    .collect::<Vec<_>>();
                (obj! { "type" => "text", "text" => "" }, deltas)
            }
            Block::ToolUse { id, name, input } => {
                let deltas = chunks(&input.to_compact())
                    .map(|piece| obj! { "type" => "input_json_delta", "partial_json" => piece })
                    .collect::<Vec<_>>();
                let start = obj! {
                    "type" => "tool_use",
                    "id" => id,
                    "name" => *name,
                    "input" => Json::Obj(Vec::new()),
                };
                (start, deltas)
            }
        };
        let start =
            obj! { "type" => "content_block_start", "index" => index, "content_block" => start };
        self.out
            .event(events::stream_event(start, &self.session_id));
        for delta in deltas {
            let delta =
                obj! { "type" => "content_block_delta", "index" => index, "delta" => delta };
            self.out
                .event(events::stream_event(delta, &self.session_id));
        }
    }

    /// A Bash tool call and its result. `echo` needs no permission (d0); without the Bash
    /// tool (`--tools`, `--disallowedTools`) the call fails as in d5/d14.
    fn bash_round_trip(
        &mut self,
        turn: &mut Turn,
        command: &str,
        description: &str,
        stdout: &str,
    ) -> Result<(), Stop> {
        let id = tool_use_id();
        let input = obj! { "command" => command, "description" => description };
        let block = Block::ToolUse {
            id: id.clone(),
            name: "Bash",
            input,
        };
        self.call(turn, vec![block], "tool_use", 0)?;
        if self.has_tool("Bash") {
            let result = obj! {
                "stdout" => stdout,
                "stderr" => "",
                "interrupted" => false,
                "isImage" => false,
                "noOutputExpected" => false,
            };
            self.tool_result(events::tool_result_ok(&id, stdout), result);
        } else {
            self.no_such_tool(&id, "Bash");
        }
        turn.num_turns += 1;
        Ok(())
    }

    /// `FAKE deny`: a Write into the cwd. Denied unless the permission mode or
    /// `--allowedTools` allows it, in which case the file really is written (d4, d10).
    fn write_file(&mut self, turn: &mut Turn) -> Result<Ending, Stop> {
        let path = Path::new(&self.env.cwd)
            .join("w.txt")
            .to_string_lossy()
            .into_owned();
        let id = tool_use_id();
        let input = obj! { "file_path" => path.clone(), "content" => "x" };
        let block = Block::ToolUse {
            id: id.clone(),
            name: "Write",
            input: input.clone(),
        };
        self.call(turn, vec![block], "tool_use", 0)?;

        let answer = if !self.has_tool("Write") {
            self.no_such_tool(&id, "Write");
            "I could not write the file."
        } else if self.config.write_allowed() {
            match fs::write(&path, "x") {
                Ok(()) => {
                    let message = format!("File created successfully at: {path}");
                    let result = obj! {
                        "type" => "create",
                        "filePath" => path.clone(),
                        "content" => "x",
                        "structuredPatch" => Json::Arr(Vec::new()),
                        "originalFile" => Json::Null,
                        "userModified" => false,
                    };
                    self.tool_result(events::tool_result_ok(&id, &message), result);
                    "I wrote the file."
                }
                Err(e) => {
                    let message = format!("Error writing file {path}: {e}");
                    let result = Json::from(format!("Error: {message}"));
                    self.tool_result(events::tool_result_error(&id, &message), result);
                    "I could not write the file."
                }
            }
        } else {
            let message = format!(
                "Claude requested permissions to write to {path}, but you haven't granted it yet."
            );
            let result = Json::from(format!("Error: {message}"));
            self.tool_result(events::tool_result_error(&id, &message), result);
            turn.denials.push(obj! {
                "tool_name" => "Write",
                "tool_use_id" => id,
                "tool_input" => input,
            });
            "I could not write the file."
        };
        turn.num_turns += 1;
        self.final_text(turn, answer)
    }

    fn has_tool(&self, name: &str) -> bool {
        self.config.tools.iter().any(|t| t == name)
    }

    fn no_such_tool(&mut self, id: &str, name: &str) {
        let message = format!(
            "No such tool available: {name}. {name} exists but is not enabled in this context. Use one of the available tools instead."
        );
        let block = events::tool_result_error(
            id,
            &format!("<tool_use_error>Error: {message}</tool_use_error>"),
        );
        self.tool_result(block, Json::from(format!("Error: {message}")));
    }

    /// A user event carrying one tool result, also written to the transcript.
    fn tool_result(&mut self, block: Json, tool_use_result: Json) {
        let uuid = new_uuid();
        let content = Json::Arr(vec![block]);
        let extra = vec![("tool_use_result", tool_use_result.clone())];
        self.out.event(events::user_event(
            &self.session_id,
            &uuid,
            content.clone(),
            extra,
        ));
        self.transcript
            .user_message(&uuid, content, Some(tool_use_result));
    }

    /// A user event with one text block (interruptions, synthetic nudges).
    fn user_text(&mut self, text: &str, extra: Vec<(&str, Json)>) {
        let uuid = new_uuid();
        let content = Json::Arr(vec![obj! { "type" => "text", "text" => text }]);
        self.out.event(events::user_event(
            &self.session_id,
            &uuid,
            content.clone(),
            extra,
        ));
        self.transcript.user_message(&uuid, content, None);
    }

    /// The synthetic assistant message the CLI shows when no model answered.
    /// A `rate_limit_event` whose limit resets `secs` from now; returns that reset time
    /// in epoch seconds (the event's `resetsAt`).
    fn rate_limit_event(&mut self, status: &str, secs: u64) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resets_at = now + secs;
        let info = obj! {
            "status" => status,
            "resetsAt" => resets_at,
            "rateLimitType" => "five_hour",
            "overageStatus" => "rejected",
            "overageDisabledReason" => "org_level_disabled",
            "isUsingOverage" => false,
        };
        self.out.event(obj! {
            "type" => "rate_limit_event",
            "rate_limit_info" => info,
            "uuid" => new_uuid(),
            "session_id" => self.session_id.clone(),
        });
        resets_at
    }

    fn synthetic_failure(
        &mut self,
        turn: &mut Turn,
        text: String,
        error: &str,
        status: Option<u16>,
        sent_request: bool,
    ) -> Ending {
        let message = events::synthetic_message(&text);
        let uuid = new_uuid();
        let request_id = sent_request.then(|| format!("req_011{}", random_id(21)));
        self.out.event(events::synthetic_event(
            message.clone(),
            &self.session_id,
            &uuid,
            error,
            request_id.as_deref(),
        ));
        self.transcript
            .assistant(&uuid, message, request_id.as_deref());
        turn.stop_reason = "stop_sequence";
        Ending::ApiError { status, text }
    }

    /// The result event and what text mode prints instead.
    fn result_event(&self, turn: &Turn, ending: &Ending) -> (Json, String) {
        let total_cost = self.total_cost();
        let model_usage = events::model_usage(&self.spent, self.config.context_window());
        let denials = Json::Arr(turn.denials.clone());
        match ending {
            Ending::Success { result, structured } => {
                let to_request = turn.time_to_request_ms.unwrap_or(0);
                let ttft = turn.ttft_ms.unwrap_or(to_request);
                let mut event = obj! {
                    "type" => "result",
                    "subtype" => "success",
                    "is_error" => false,
                    "api_error_status" => Json::Null,
                    "duration_ms" => turn.elapsed_ms(),
                    "duration_api_ms" => turn.api_ms,
                    "ttft_ms" => ttft,
                    "ttft_stream_ms" => ttft,
                    "time_to_request_ms" => to_request,
                    "num_turns" => turn.num_turns,
                    "result" => result,
                    "stop_reason" => turn.stop_reason,
                    "session_id" => self.session_id.clone(),
                    "total_cost_usd" => total_cost,
                    "usage" => events::full_usage(turn.usage),
                    "modelUsage" => model_usage,
                    "permission_denials" => denials,
                };
                if let Some(value) = structured {
                    event.set("structured_output", value.clone());
                }
                event.set("terminal_reason", "completed");
                event.set("fast_mode_state", "off");
                event.set("uuid", new_uuid());
                (event, format!("{result}\n"))
            }
            Ending::ApiError { status, text } => {
                let event = obj! {
                    "type" => "result",
                    "subtype" => "success",
                    "is_error" => true,
                    "api_error_status" => *status,
                    "duration_ms" => turn.elapsed_ms(),
                    "duration_api_ms" => 0,
                    "num_turns" => turn.num_turns,
                    "result" => text,
                    "stop_reason" => turn.stop_reason,
                    "session_id" => self.session_id.clone(),
                    "total_cost_usd" => total_cost,
                    "usage" => events::full_usage(turn.usage),
                    "modelUsage" => model_usage,
                    "permission_denials" => denials,
                    "terminal_reason" => "completed",
                    "fast_mode_state" => "off",
                    "uuid" => new_uuid(),
                };
                (event, format!("{text}\n"))
            }
            Ending::Failed {
                subtype,
                error,
                terminal_reason,
                stop_reason,
                text,
            } => {
                let mut event = obj! {
                    "type" => "result",
                    "subtype" => *subtype,
                    "duration_ms" => turn.elapsed_ms(),
                    "duration_api_ms" => turn.api_ms,
                    "is_error" => true,
                    "num_turns" => turn.num_turns,
                    "stop_reason" => *stop_reason,
                    "session_id" => self.session_id.clone(),
                    "total_cost_usd" => total_cost,
                    "usage" => events::full_usage(turn.usage),
                    "modelUsage" => model_usage,
                    "permission_denials" => denials,
                };
                if let Some(reason) = terminal_reason {
                    event.set("terminal_reason", *reason);
                }
                event.set("fast_mode_state", "off");
                event.set("uuid", new_uuid());
                event.set("errors", vec![error.clone()]);
                (event, text.clone())
            }
        }
    }

    fn record_spend(&mut self, usage: Usage) {
        match self.spent.iter_mut().find(|(m, _)| *m == self.config.model) {
            Some((_, total)) => total.add(usage),
            None => self.spent.push((self.config.model.clone(), usage)),
        }
    }

    fn total_cost(&self) -> f64 {
        self.spent.iter().map(|(_, u)| u.cost_usd()).sum()
    }

    /// Waits `ms`. In a warm process, control requests arriving meanwhile are answered at
    /// once (an interrupt ends the turn), and user lines wait for their own turn.
    fn pause(&mut self, ms: u64) -> Result<(), Stop> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        if self.input.is_none() {
            thread::sleep(Duration::from_millis(ms));
            return Ok(());
        }
        while let Some(line) = self.input.as_mut().and_then(|i| i.wait_until(deadline)) {
            let request = Json::parse(line.trim())
                .ok()
                .filter(|m| m.get("type").and_then(Json::as_str) == Some("control_request"));
            match request {
                Some(request) => {
                    if self.answer_control(&request) {
                        return Err(Stop::Interrupted);
                    }
                }
                None => {
                    if let Some(input) = self.input.as_mut() {
                        input.defer(line);
                    }
                }
            }
        }
        Ok(())
    }

    /// Answers a `control_request`; returns whether it was an interrupt.
    fn answer_control(&mut self, message: &Json) -> bool {
        let request_id = message.get("request_id").cloned().unwrap_or(Json::Null);
        let request = message.get("request").cloned().unwrap_or(Json::Null);
        let subtype = request
            .get("subtype")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let success = |response: Option<Json>| {
            let mut body = obj! { "subtype" => "success", "request_id" => request_id.clone() };
            if let Some(response) = response {
                body.set("response", response);
            }
            body
        };
        let response = match subtype {
            "initialize" => success(Some(events::initialize_response(&self.config, &self.env))),
            "interrupt" => success(None),
            "set_model" => {
                let model = request.get("model").and_then(Json::as_str);
                self.config.model = resolve_model(model);
                success(None)
            }
            "set_permission_mode" => {
                if let Some(mode) = request.get("mode").and_then(Json::as_str) {
                    self.config.permission_mode = mode.to_string();
                }
                success(None)
            }
            other => obj! {
                "subtype" => "error",
                "request_id" => request_id.clone(),
                "error" => format!("Unsupported control request subtype: {other}"),
            },
        };
        self.out
            .event(obj! { "type" => "control_response", "response" => response });
        subtype == "interrupt"
    }
}

/// The result text and `error` value of an API failure, in the real CLI's wording where
/// it was observed (h1, h12, h13, h2, h3, h4, o1).
fn api_error_text(status: u16, model: &str) -> (String, &'static str) {
    match status {
        401 => (
            "Failed to authenticate. API Error: 401 authentication_error: invalid x-api-key".into(),
            "authentication_failed",
        ),
        403 => (
            "Failed to authenticate. API Error: 403 permission_error: forbidden".into(),
            "authentication_failed",
        ),
        404 => (
            format!(
                "There's an issue with the selected model ({model}). It may not exist or you may not have access to it. Run --model to pick a different model."
            ),
            "unknown",
        ),
        429 => (
            "API Error: Request rejected (429) · rate_limit_error: rate limited".into(),
            "rate_limit",
        ),
        500..=599 => {
            let kind = if status == 529 {
                "overloaded_error"
            } else {
                "api_error"
            };
            (
                format!(
                    "API Error: {status} {kind}. This is a server-side issue, usually temporary — try again in a moment."
                ),
                "server_error",
            )
        }
        400 => ("API Error: 400 invalid_request_error".into(), "unknown"),
        _ => (format!("API Error: {status} error"), "unknown"),
    }
}

/// Splits text into stream deltas: 12 characters like the recorded streams, but never more
/// than about 64 deltas, so that `big_line` with partial messages stays reasonable.
fn chunks(text: &str) -> impl Iterator<Item = String> {
    let chars: Vec<char> = text.chars().collect();
    let size = (chars.len() / 64).max(12);
    let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    pieces.into_iter()
}

fn random_id(len: usize) -> String {
    let mut id = String::with_capacity(len + 32);
    while id.len() < len {
        id.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    id.truncate(len);
    id
}

fn tool_use_id() -> String {
    format!("toolu_01{}", random_id(22))
}

/// `FAKE stderr_flood`: exactly `bytes` bytes, in large writes (stderr is unbuffered).
fn flood_stderr(bytes: usize) {
    use std::io::Write;
    const LINE: &[u8] = b"fake-claude: stderr flood, as a noisy CLI would produce it ..........\n";
    let block: Vec<u8> = LINE.iter().copied().cycle().take(64 * 1024).collect();
    let mut stderr = std::io::stderr().lock();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len());
        if stderr.write_all(&block[..n]).is_err() {
            return; // Nobody reads stderr any more; the flood has made its point.
        }
        left -= n;
    }
}

/// `FAKE grandchild`: a `sleep 3600` that inherits stdout and stderr and stays in our
/// process group, so the pipes stay open after this process exits.
#[allow(
    clippy::zombie_processes,
    reason = "the grandchild must outlive this process; it is never waited for by design"
)]
fn spawn_grandchild() {
    if let Err(e) = Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
    {
        eprintln!("fake-claude: cannot start the grandchild `sleep 3600`: {e}");
    }
}

fn hang_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
