//! `claude --version`, asked in one place: health reports it, doctor checks it against the
//! oldest version Baton supports.

use std::path::Path;
use std::time::Duration;

/// The oldest CLI whose protocol Baton relies on (stream-json events, `--json-schema`,
/// `--max-budget-usd`, `--fork-session`).
pub const MIN_CLI_VERSION: (u32, u32, u32) = (2, 0, 0);

/// Why `claude --version` gave no version.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("{bin} --version did not answer within {} s", .timeout.as_secs())]
    Timeout { bin: String, timeout: Duration },
    #[error("{bin} cannot be run: {source}")]
    NotRunnable { bin: String, source: std::io::Error },
    #[error("{bin} --version failed ({status}): {stderr}")]
    Failed {
        bin: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// What `bin --version` prints (e.g. `2.1.197 (Claude Code)`), trimmed. The CLI runs with
/// an environment of `PATH` only and no network beyond what the version needs.
pub async fn cli_version(bin: &Path, timeout: Duration) -> Result<String, VersionError> {
    let name = || bin.display().to_string();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--version")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => Err(VersionError::Timeout {
            bin: name(),
            timeout,
        }),
        Ok(Err(source)) => Err(VersionError::NotRunnable {
            bin: name(),
            source,
        }),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(Ok(out)) => Err(VersionError::Failed {
            bin: name(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// `2.1.197 (Claude Code)` → (2, 1, 197).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split_whitespace().next()?.split('.');
    let mut next = || parts.next()?.parse::<u32>().ok();
    Some((next()?, next()?, next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.1.197 (Claude Code)"), Some((2, 1, 197)));
        assert_eq!(parse_version("1.0"), None);
        assert!(parse_version("2.0.0").unwrap() >= MIN_CLI_VERSION);
    }

    #[tokio::test]
    async fn a_missing_binary_is_named() {
        let err = cli_version(Path::new("/nonexistent/claude"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, VersionError::NotRunnable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/claude"), "{err}");
    }
}
