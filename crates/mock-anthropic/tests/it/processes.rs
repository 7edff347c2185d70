//! The `mock-anthropic` binary, and one round trip with the real `claude` CLI.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mock_anthropic::MockAnthropic;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

use crate::support::*;

#[tokio::test]
async fn binary_writes_port_file_serves_directives_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-anthropic"))
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The "listening" line comes after the port file is in place.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = timeout(QUICK, stderr.next_line())
        .await
        .expect("listening line")
        .unwrap()
        .expect("stderr open");
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(line.ends_with(&base), "{line}");

    let events = stream_events(
        &base,
        &body(prompt_messages("MOCK_TEXT from the binary"), true),
    )
    .await;
    assert_eq!(streamed_text(&events), "from the binary");

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = timeout(QUICK, child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

fn claude_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.build/claude/node_modules/.bin/claude")
}

#[tokio::test]
async fn real_claude_cli_round_trip() {
    let claude = claude_binary();
    if !claude.exists() {
        let required = std::env::var_os("BATON_REQUIRE_ALL").is_some_and(|v| v == "1");
        assert!(
            !required,
            "BATON_REQUIRE_ALL=1 but the claude CLI is missing at {}",
            claude.display()
        );
        eprintln!(
            "notice: skipping real_claude_cli_round_trip: no claude CLI at {}",
            claude.display()
        );
        return;
    }

    let mock = MockAnthropic::start().await;
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(&claude)
        .args(["-p", "--output-format", "stream-json", "--verbose"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", mock.base_url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .current_dir(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timeout drops the child, which kills it.
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"MOCK_TEXT hello from mock").await.unwrap();
    drop(stdin);

    let output = timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("claude finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let result: Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["type"] == "result")
        .unwrap_or_else(|| panic!("no result event in:\n{stdout}"));
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], "hello from mock", "{result}");

    // 2.1.197 sent a `HEAD /` preflight first; 2.1.332 sends none.
    let requests = mock.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.is_messages() || (r.method == "HEAD" && r.path == "/")),
        "{requests:#?}"
    );
    let messages = mock.messages_requests();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(
        messages[0].header("x-api-key"),
        Some(
            format!(
                "<redacted len=7 fp={}>",
                mock_anthropic::fingerprint("sk-test")
            )
            .as_str()
        )
    );
    assert!(
        messages[0]
            .prompt()
            .is_some_and(|p| p.contains("MOCK_TEXT hello from mock"))
    );
}
