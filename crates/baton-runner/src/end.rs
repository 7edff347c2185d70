//! How an attempt ended: from why supervision stopped, the `result` event, the exit
//! status and stderr, to success or one classified error.

use std::process::ExitStatus;

use baton_core::{ClaudeRun, ErrorKind};
use serde_json::Value;

use crate::{RunnerConfig, outcome};

/// Why the supervision loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Eof,
    Cancelled,
    WallTimeout,
    Silence,
    TooLong,
    ResultGrace,
    Garbage,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(
    stop: Stop,
    result: Option<&Value>,
    spec: &ClaudeRun,
    status: Option<ExitStatus>,
    parsed_any: bool,
    unparsed: u32,
    stderr: &str,
    cfg: &RunnerConfig,
) -> Option<(ErrorKind, String)> {
    let stderr_excerpt = || {
        let t = stderr.trim();
        let start = t.len().saturating_sub(2000);
        let start = (start..=t.len())
            .find(|&i| t.is_char_boundary(i))
            .unwrap_or(t.len());
        t[start..].to_string()
    };
    match stop {
        Stop::Cancelled => return Some((ErrorKind::Cancelled, "cancelled while running".into())),
        Stop::WallTimeout if result.is_none() => {
            return Some((
                ErrorKind::Timeout,
                format!(
                    "the job ran longer than its timeout of {} ms",
                    spec.timeout_ms
                ),
            ));
        }
        Stop::Silence if result.is_none() => {
            return Some((
                ErrorKind::SilenceTimeout,
                format!(
                    "the CLI printed nothing for {} s",
                    cfg.silence_timeout.as_secs()
                ),
            ));
        }
        Stop::TooLong => {
            return Some((
                ErrorKind::OutputTooLarge,
                format!(
                    "the CLI printed its result (or a line that is not stream-json) longer than {} bytes",
                    cfg.max_line_bytes
                ),
            ));
        }
        Stop::Garbage => {
            return Some((
                ErrorKind::ProtocolError,
                format!("the CLI printed {unparsed} lines that are not stream-json"),
            ));
        }
        _ => {}
    }
    if let Some(result) = result {
        return outcome::classify_result(result, spec.options.json_schema.is_some()).err();
    }
    let exit = status.map_or("no exit status".to_string(), describe_exit);
    if cfg.sandbox.is_some() && !parsed_any && crate::sandbox::failed_to_start(stderr) {
        return Some((
            ErrorKind::SandboxFailed,
            with_stderr(
                format!("the sandbox could not start ({exit}); the CLI did not run"),
                &stderr_excerpt(),
            ),
        ));
    }
    if stderr.contains("No conversation found") {
        return Some((ErrorKind::SessionNotFound, stderr_excerpt()));
    }
    // Lines that are not stream-json and no result: whatever runs there does not speak
    // the protocol (a wrong binary, a wrapper printing banners).
    if unparsed > 0 {
        let message = format!(
            "the CLI printed {unparsed} lines that are not stream-json and no result ({exit})"
        );
        return Some((
            ErrorKind::ProtocolError,
            with_stderr(message, &stderr_excerpt()),
        ));
    }
    let (kind, message) = match status {
        Some(s) if s.code().is_none() => (
            ErrorKind::Crashed,
            format!("the CLI died ({exit}) before its result"),
        ),
        Some(s) if s.success() => (
            ErrorKind::NoResult,
            "the CLI exited without a result event".into(),
        ),
        // Exit 1 before any event, with an explanation on stderr: the CLI refused its
        // arguments or environment (unknown flag, root bypass, bad MCP config).
        Some(_) if !parsed_any && !stderr.trim().is_empty() => (
            ErrorKind::InvalidRequest,
            format!("the CLI refused to start ({exit})"),
        ),
        _ => (
            ErrorKind::Crashed,
            format!("the CLI exited ({exit}) without a result"),
        ),
    };
    Some((kind, with_stderr(message, &stderr_excerpt())))
}

fn with_stderr(message: String, stderr: &str) -> String {
    if stderr.is_empty() {
        message
    } else {
        format!("{message}; stderr: {stderr}")
    }
}

pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown exit".into(),
    }
}
