//! Prompt directives: how one mock serves many CLI processes without a queue.
//!
//! A directive is a line of the prompt that starts with `MOCK_`. They are read from the
//! *prompt message* (the newest user message without tool results), so that the answer to
//! a tool round trip is decided by the prompt that started it. When several action
//! directives are present (merged user turns), the last one wins.
//!
//! The directive table is in the crate docs (`lib.rs`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::conversation::Conversation;
use crate::reply::{ApiError, Block, Message, Reply, STALL_DELTAS};

/// The answer when nothing is scripted.
pub const DEFAULT_TEXT: &str = "mock answer";

/// The answer to a non-streaming request whose prompt says `MOCK_STALL`: the CLI's
/// fallback after a stalled stream (README §10.3). Distinct from the partial text, so a
/// test can tell where the result came from.
pub const STALL_FALLBACK_TEXT: &str = "non-streaming fallback answer";

/// The Bash call `MOCK_LOOP` repeats.
fn loop_tool_input() -> Value {
    json!({"command": "echo loop", "description": "loop"})
}

#[derive(Debug, Clone, PartialEq)]
enum Directive {
    Text(String),
    Tool {
        name: String,
        input: Value,
    },
    Structured(Value),
    Loop(usize),
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    ErrorOnce {
        status: u16,
    },
    ErrorForModel {
        needle: String,
        status: u16,
    },
    Stall,
    Hang,
    Slow {
        deltas: usize,
        delay: Duration,
    },
    MaxTokens(String),
    Usage {
        input: u64,
        output: u64,
    },
    /// A directive that did not parse: answered with a text that says so, which is easier
    /// to debug from a CLI transcript than a silent default.
    Invalid(String),
}

/// Parses one line; `None` if it is not a directive.
fn parse_line(line: &str) -> Option<Directive> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    if !word.starts_with("MOCK_") {
        return None;
    }
    let mut args = rest.split_whitespace();
    let invalid = || {
        Some(Directive::Invalid(format!(
            "mock: cannot parse directive `{line}`"
        )))
    };
    let directive = match word {
        "MOCK_TEXT" => Directive::Text(rest.to_owned()),
        "MOCK_TOOL" => {
            let (name, input) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
            match serde_json::from_str(input.trim()) {
                Ok(input) if !name.is_empty() => Directive::Tool {
                    name: name.to_owned(),
                    input,
                },
                _ => return invalid(),
            }
        }
        "MOCK_STRUCTURED" => match serde_json::from_str(rest) {
            Ok(input) => Directive::Structured(input),
            Err(_) => return invalid(),
        },
        "MOCK_LOOP" => match args.next().map(str::parse) {
            Some(Ok(n)) => Directive::Loop(n),
            _ => return invalid(),
        },
        "MOCK_ERROR" => {
            let status = args.next().map(str::parse::<u16>);
            let retry_after = args.next().map(str::parse::<u64>);
            match (status, retry_after) {
                (Some(Ok(status)), None) => Directive::Error {
                    status,
                    retry_after: None,
                },
                (Some(Ok(status)), Some(Ok(secs))) => Directive::Error {
                    status,
                    retry_after: Some(secs),
                },
                _ => return invalid(),
            }
        }
        "MOCK_ERROR_ONCE" => match args.next().map(str::parse) {
            None => Directive::ErrorOnce { status: 529 },
            Some(Ok(status)) => Directive::ErrorOnce { status },
            Some(Err(_)) => return invalid(),
        },
        "MOCK_ERROR_FOR_MODEL" => match (args.next(), args.next().map(str::parse)) {
            (Some(needle), Some(Ok(status))) => Directive::ErrorForModel {
                needle: needle.to_owned(),
                status,
            },
            _ => return invalid(),
        },
        "MOCK_STALL" | "MOCK_HANG_MIDSTREAM" => Directive::Stall,
        "MOCK_HANG" => Directive::Hang,
        "MOCK_SLOW" => match (args.next().map(str::parse), args.next().map(str::parse)) {
            (Some(Ok(deltas)), Some(Ok(ms))) => Directive::Slow {
                deltas,
                delay: Duration::from_millis(ms),
            },
            _ => return invalid(),
        },
        "MOCK_MAX_TOKENS" => Directive::MaxTokens(if rest.is_empty() {
            "truncated answ".to_owned()
        } else {
            rest.to_owned()
        }),
        "MOCK_USAGE" => match (args.next().map(str::parse), args.next().map(str::parse)) {
            (Some(Ok(input)), Some(Ok(output))) => Directive::Usage { input, output },
            _ => return invalid(),
        },
        // Read by the classifier answer, not here.
        "MOCK_CLASSIFIER_BLOCK" => return None,
        _ => return invalid(),
    };
    Some(directive)
}

fn parse(texts: &[&str]) -> Vec<Directive> {
    texts
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(parse_line)
        .collect()
}

/// A directive-driven tool call, with the preamble the fixtures' mock sent (real models
/// usually say something before a tool call, and it gives the CLI two content blocks).
fn tool_reply(name: &str, input: Value) -> Reply {
    Reply::Message(Message::new(vec![
        Block::text(format!("I'll use the {name} tool.")),
        Block::tool_use(name, input),
    ]))
}

/// Chooses the answer for a request when the queue is empty. `errored_once` remembers the
/// prompts `MOCK_ERROR_ONCE` already failed. Returns the reply and a short label for the
/// request log.
pub(crate) fn choose(
    conv: &Conversation<'_>,
    errored_once: &mut HashSet<String>,
) -> (Reply, &'static str) {
    let directives = parse(&conv.prompt_texts());
    let usage = directives.iter().rev().find_map(|d| match d {
        Directive::Usage { input, output } => Some((*input, *output)),
        _ => None,
    });
    let (reply, label) = choose_action(conv, &directives, errored_once);
    match usage {
        Some((input, output)) => (reply.with_usage(input, output), label),
        None => (reply, label),
    }
}

fn choose_action(
    conv: &Conversation<'_>,
    directives: &[Directive],
    errored_once: &mut HashSet<String>,
) -> (Reply, &'static str) {
    let action = directives.iter().rev().find(|d| {
        !matches!(
            d,
            Directive::Usage { .. } | Directive::ErrorOnce { .. } | Directive::ErrorForModel { .. }
        )
    });

    let tool_turns = conv.tool_turns();
    if tool_turns > 0 {
        // A tool round trip. Prompt-turn directives must not apply again, or the CLI would
        // call the tool forever.
        if let Some(Directive::Loop(n)) = action
            && tool_turns < *n
        {
            return (tool_reply("Bash", loop_tool_input()), "loop-tool_use");
        }
        let result = conv.latest_tool_result().unwrap_or_default();
        return (Reply::text(format!("done: {result}")), "tool-final");
    }

    // Gates: fail this attempt, and let the other directives decide the next one.
    for directive in directives {
        match directive {
            Directive::ErrorForModel { needle, status }
                if conv.model().is_some_and(|m| m.contains(needle.as_str())) =>
            {
                return (Reply::Error(ApiError::mock(*status)), "error-for-model");
            }
            Directive::ErrorOnce { status } => {
                let key = conv.prompt().unwrap_or_default().to_owned();
                if errored_once.insert(key) {
                    return (Reply::Error(ApiError::mock(*status)), "error-once");
                }
            }
            _ => {}
        }
    }

    let Some(action) = action else {
        return (Reply::text(DEFAULT_TEXT), "default");
    };
    match action {
        Directive::Text(text) => (Reply::text(text.as_str()), "text"),
        Directive::Tool { name, input } => (tool_reply(name, input.clone()), "tool_use"),
        Directive::Structured(input) => (
            tool_reply("StructuredOutput", input.clone()),
            "structured-tool_use",
        ),
        Directive::Loop(0) => (Reply::text("done: loop"), "loop-done"),
        Directive::Loop(_) => (tool_reply("Bash", loop_tool_input()), "loop-tool_use"),
        Directive::Error {
            status,
            retry_after,
        } => {
            let mut error = ApiError::mock(*status);
            error.retry_after = *retry_after;
            (Reply::Error(error), "error")
        }
        Directive::Stall if conv.is_streaming() => (Reply::stall(STALL_DELTAS), "stall"),
        Directive::Stall => (Reply::text(STALL_FALLBACK_TEXT), "stall-fallback"),
        Directive::Hang => (Reply::Hang, "hang"),
        Directive::Slow { deltas, delay } => (Reply::slow(*deltas, *delay), "slow"),
        Directive::MaxTokens(text) => (Reply::max_tokens(text.as_str()), "max_tokens"),
        Directive::Invalid(message) => (Reply::text(message.as_str()), "invalid-directive"),
        Directive::Usage { .. } | Directive::ErrorOnce { .. } | Directive::ErrorForModel { .. } => {
            unreachable!("modifiers are filtered out above")
        }
    }
}

/// The auto-mode classifier's answer: allow, unless the transcript carries
/// `MOCK_CLASSIFIER_BLOCK`. The closing tag is included; with the classifier's
/// `stop_sequences: ["</block>"]` the mock cuts it off like the API would.
pub(crate) fn classifier_reply(conv: &Conversation<'_>) -> Reply {
    if conv.all_user_text().contains("MOCK_CLASSIFIER_BLOCK") {
        Reply::text("<block>yes</block><reason>[Mock Rule] MOCK_CLASSIFIER_BLOCK</reason>")
    } else {
        Reply::text("<block>no</block>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives() {
        assert_eq!(
            parse_line(r#"MOCK_TOOL Bash {"command": "echo hi"}"#),
            Some(Directive::Tool {
                name: "Bash".into(),
                input: json!({"command": "echo hi"})
            })
        );
        assert_eq!(
            parse_line("MOCK_ERROR 429 2"),
            Some(Directive::Error {
                status: 429,
                retry_after: Some(2)
            })
        );
        assert_eq!(
            parse_line("  MOCK_TEXT hello there  "),
            Some(Directive::Text("hello there".into()))
        );
        assert_eq!(
            parse_line("MOCK_ERROR_ONCE"),
            Some(Directive::ErrorOnce { status: 529 })
        );
        assert_eq!(parse_line("say MOCK_TEXT hi"), None);
        assert!(matches!(
            parse_line("MOCK_TOOL Bash {not json"),
            Some(Directive::Invalid(_))
        ));
    }

    #[test]
    fn last_action_wins_in_merged_turns() {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "MOCK_HANG\n"},
            {"type": "text", "text": "[Request interrupted by user]\n"},
            {"type": "text", "text": "MOCK_TEXT after interrupt"},
        ]}]});
        let (reply, label) = choose(&Conversation::new(&body), &mut HashSet::new());
        assert_eq!(label, "text");
        assert_eq!(reply.final_text().as_deref(), Some("after interrupt"));
    }
}
