//! Directives: prompt lines starting with `FAKE ` that script what the fake does for one
//! turn. A line whose directive is unknown or whose arguments do not parse is plain prompt
//! text, so a typo shows up as a wrong answer rather than as a silently different scenario.

use crate::json::Json;

/// What the model "answers". The last answer-shaping directive wins.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Answer {
    /// `fake answer to: <prompt>`, or `I remember: ...` when the session has history.
    #[default]
    Default,
    /// `FAKE text <words...>`
    Text(String),
    /// `FAKE slow <n> <ms>`: n text blocks `chunk 1..n`, ms apart.
    Slow { chunks: u32, gap_ms: u64 },
    /// `FAKE tool`: one Bash round trip, then `done`.
    Tool,
    /// `FAKE loop <n>`: n Bash round trips, then `done`.
    Loop(u32),
    /// `FAKE deny`: a Write that needs permission.
    Deny,
    /// `FAKE api_error <status>`
    ApiError(u16),
    /// `FAKE not_logged_in`
    NotLoggedIn,
    /// `FAKE usage_limit <seconds>`: a subscription's usage limit, reset in `seconds`: a
    /// `rate_limit_event` with status `rejected`, then an error result with no API status.
    UsageLimit { resets_in_s: u64 },
    /// `FAKE error <subtype>`
    Error(ErrorKind),
    /// `FAKE structured <json>`
    Structured(Json),
    /// `FAKE structured_missing`
    StructuredMissing,
    /// `FAKE big_line <bytes>`: an assistant message with a text of that many bytes.
    BigLine(usize),
    /// `FAKE big_result <bytes>`: a result text of that many bytes.
    BigResult(usize),
    /// `FAKE echo_env`
    EchoEnv,
    /// `FAKE mcp <name>`: starts the stdio MCP server `name` of `--mcp-config` as the CLI
    /// would, sends it `initialize`, and answers with what it printed.
    Mcp(String),
    /// `FAKE api_calls <n> <in> <out>`: n calls to `$ANTHROPIC_BASE_URL/v1/messages`
    /// with `$ANTHROPIC_API_KEY`, each asking `mock-anthropic` for that usage; the first
    /// refused call ends the turn with the API's error.
    ApiCalls { calls: u32, input: u64, output: u64 },
}

/// The error result subtypes `FAKE error` can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    MaxTurns,
    MaxBudget,
    StructuredOutputRetries,
    DuringExecution,
}

impl ErrorKind {
    fn parse(subtype: &str) -> Option<ErrorKind> {
        Some(match subtype {
            "error_max_turns" => ErrorKind::MaxTurns,
            "error_max_budget_usd" => ErrorKind::MaxBudget,
            "error_max_structured_output_retries" => ErrorKind::StructuredOutputRetries,
            "error_during_execution" => ErrorKind::DuringExecution,
            _ => return None,
        })
    }
}

/// How a turn is cut short after its first assistant message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `FAKE no_result`: exit 0 without a result line.
    NoResult,
    /// `FAKE hang_mid_stream`: sleep forever with stdout open.
    HangMidStream,
    /// `FAKE crash`: abort (SIGABRT).
    Crash,
}

/// Everything the directives of one prompt ask for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    pub answer: Answer,
    pub cut: Option<Cut>,
    /// `FAKE sleep <ms>`: pause after `system/init`.
    pub sleep_ms: Option<u64>,
    /// `FAKE exit <code>`: exit at once, printing nothing.
    pub exit_code: Option<i32>,
    /// `FAKE garbage`: non-JSON lines, then exit 1.
    pub garbage: bool,
    /// `FAKE hang_after_result`
    pub hang_after_result: bool,
    /// `FAKE grandchild`: leave a `sleep 3600` holding stdout and stderr open.
    pub grandchild: bool,
    /// `FAKE stderr_flood <bytes>`
    pub stderr_flood: Option<usize>,
    /// `FAKE rate_limit <status> <seconds>`: a `rate_limit_event` with that status
    /// (`allowed`, `allowed_warning`) and a reset that far ahead, before the answer, as
    /// the CLI prints for a subscription nearing its limit.
    pub rate_limit: Option<(String, u64)>,
}

impl Script {
    pub fn parse(prompt: &str) -> Script {
        let mut script = Script::default();
        for line in prompt.lines() {
            if let Some(directive) = line.trim_start().strip_prefix("FAKE ") {
                script.apply(directive.trim());
            }
        }
        script
    }

    /// Applies one directive (the text after `FAKE `); ignores it when it does not parse.
    fn apply(&mut self, directive: &str) {
        let (name, args) = match directive.split_once(char::is_whitespace) {
            Some((name, args)) => (name, args.trim()),
            None => (directive, ""),
        };
        let numbers: Vec<&str> = args.split_whitespace().collect();
        let one = |n: usize| numbers.len() == n;
        match name {
            "text" => self.answer = Answer::Text(args.to_string()),
            // What a file in the working directory holds (as the real CLI would read its
            // CLAUDE.md): the answer is its contents, trimmed.
            "cat" => {
                // Any file, text or not (a database, /proc/<pid>/environ).
                self.answer = Answer::Text(match std::fs::read(args.trim()) {
                    Ok(contents) => String::from_utf8_lossy(&contents).trim().to_string(),
                    Err(e) => format!("cannot read {}: {e}", args.trim()),
                })
            }
            "sleep" if one(1) => self.sleep_ms = numbers[0].parse().ok().or(self.sleep_ms),
            "slow" if one(2) => {
                if let (Ok(chunks @ 1..), Ok(gap_ms)) = (numbers[0].parse(), numbers[1].parse()) {
                    self.answer = Answer::Slow { chunks, gap_ms };
                }
            }
            "tool" if one(0) => self.answer = Answer::Tool,
            "loop" if one(1) => {
                if let Ok(n) = numbers[0].parse() {
                    self.answer = Answer::Loop(n);
                }
            }
            "deny" if one(0) => self.answer = Answer::Deny,
            "api_error" if one(1) => {
                if let Ok(status) = numbers[0].parse() {
                    self.answer = Answer::ApiError(status);
                }
            }
            "not_logged_in" if one(0) => self.answer = Answer::NotLoggedIn,
            "usage_limit" if one(1) => {
                if let Ok(resets_in_s) = numbers[0].parse() {
                    self.answer = Answer::UsageLimit { resets_in_s };
                }
            }
            "rate_limit" if one(2) => {
                if let Ok(secs) = numbers[1].parse() {
                    self.rate_limit = Some((numbers[0].to_string(), secs));
                }
            }
            "error" if one(1) => {
                if let Some(kind) = ErrorKind::parse(numbers[0]) {
                    self.answer = Answer::Error(kind);
                }
            }
            "structured" => {
                if let Ok(value) = Json::parse(args) {
                    self.answer = Answer::Structured(value);
                }
            }
            "structured_missing" if one(0) => self.answer = Answer::StructuredMissing,
            "big_line" if one(1) => {
                if let Ok(bytes) = numbers[0].parse() {
                    self.answer = Answer::BigLine(bytes);
                }
            }
            "big_result" if one(1) => {
                if let Ok(bytes) = numbers[0].parse() {
                    self.answer = Answer::BigResult(bytes);
                }
            }
            "echo_env" if one(0) => self.answer = Answer::EchoEnv,
            // When each text delta is printed: a line of microseconds since the epoch per
            // delta, appended to a file (for a benchmark of how soon a client sees it).
            "print_log" if one(1) => crate::stdio::log_deltas_to(numbers[0]),
            "mcp" if one(1) => self.answer = Answer::Mcp(numbers[0].to_string()),
            // Whether a TCP address can be reached from here: the answer says.
            "connect" if one(1) => {
                self.answer = Answer::Text(
                    match std::net::TcpStream::connect_timeout(
                        &match numbers[0].parse() {
                            Ok(a) => a,
                            Err(_) => return,
                        },
                        std::time::Duration::from_secs(2),
                    ) {
                        Ok(_) => format!("connected to {}", numbers[0]),
                        Err(e) => format!("cannot connect to {}: {e}", numbers[0]),
                    },
                )
            }
            // A process that leaves the CLI's process group and session (`setsid sleep
            // <seconds>`, the seconds a marker to find it by): only a PID namespace ends it.
            "escape" if one(1) => {
                let spawned = std::process::Command::new("setsid")
                    .args(["sleep", numbers[0]])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                self.answer = Answer::Text(match spawned {
                    Ok(_) => "escaped".into(),
                    Err(e) => format!("cannot start setsid: {e}"),
                });
            }
            "api_calls" if one(3) => {
                if let (Ok(calls), Ok(input), Ok(output)) =
                    (numbers[0].parse(), numbers[1].parse(), numbers[2].parse())
                {
                    self.answer = Answer::ApiCalls {
                        calls,
                        input,
                        output,
                    };
                }
            }
            "no_result" if one(0) => self.cut = Some(Cut::NoResult),
            "hang_mid_stream" if one(0) => self.cut = Some(Cut::HangMidStream),
            "crash" if one(0) => self.cut = Some(Cut::Crash),
            "hang_after_result" if one(0) => self.hang_after_result = true,
            "grandchild" if one(0) => self.grandchild = true,
            "garbage" if one(0) => self.garbage = true,
            "exit" if one(1) => self.exit_code = numbers[0].parse().ok().or(self.exit_code),
            "stderr_flood" if one(1) => {
                self.stderr_flood = numbers[0].parse().ok().or(self.stderr_flood);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_directives() {
        let script =
            Script::parse("hello\nFAKE sleep 500\n  FAKE text hi there\nFAKE grandchild\n");
        assert_eq!(script.sleep_ms, Some(500));
        assert_eq!(script.answer, Answer::Text("hi there".into()));
        assert!(script.grandchild);
    }

    #[test]
    fn malformed_or_unknown_directives_are_plain_text() {
        let script = Script::parse("FAKE sleep soon\nFAKE fly\nFAKE error error_bogus\nFAKE loop");
        assert_eq!(script, Script::default());
        assert_eq!(
            Script::parse("FAKE structured {oops").answer,
            Answer::Default
        );
    }

    #[test]
    fn parses_arguments() {
        assert_eq!(
            Script::parse("FAKE slow 3 20").answer,
            Answer::Slow {
                chunks: 3,
                gap_ms: 20
            }
        );
        assert_eq!(
            Script::parse(r#"FAKE structured {"b":1,"a":[2]}"#).answer,
            Answer::Structured(Json::parse(r#"{"b":1,"a":[2]}"#).unwrap())
        );
        assert_eq!(Script::parse("FAKE exit 7").exit_code, Some(7));
        assert_eq!(
            Script::parse("FAKE error error_max_turns").answer,
            Answer::Error(ErrorKind::MaxTurns)
        );
    }
}
