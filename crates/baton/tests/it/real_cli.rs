//! Baton driving the real, pinned `claude` CLI (installed by `cargo xtask install-claude`).
//! Skipped with a notice when it is not installed, failed under `BATON_REQUIRE_ALL=1`.

use std::path::PathBuf;

use serde_json::json;

use crate::support::{Server, assert_no_survivors};

pub fn real_claude() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.build/claude/node_modules/.bin/claude");
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        std::env::var("BATON_REQUIRE_ALL").as_deref() != Ok("1"),
        "the real claude CLI is not installed at {}; run `cargo xtask install-claude`",
        bin.display()
    );
    eprintln!(
        "NOTICE: skipping a real-CLI test: run `cargo xtask install-claude` to install the pinned claude CLI"
    );
    None
}

/// Every flag Baton builds is accepted by the real CLI, and an unreachable API is a
/// precise, fast failure (no minutes of silent retries), with no process left behind.
#[tokio::test]
async fn the_real_cli_accepts_batons_arguments_and_fails_fast_without_an_api() {
    let Some(claude) = real_claude() else { return };
    let claude = claude.display().to_string();
    let server = Server::with(&[
        ("claude_bin", claude.as_str()),
        // Port 9 (discard) on loopback: connection refused at once.
        ("env", r#"{ANTHROPIC_BASE_URL = "http://127.0.0.1:9", ANTHROPIC_API_KEY = "sk-test", CLAUDE_CODE_MAX_RETRIES = "0"}"#),
        ("silence_timeout_seconds", "60"),
    ])
    .await;
    let (status, health) = server.get("/v1/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(
        health["claude_version"]
            .as_str()
            .unwrap()
            .starts_with("2.1.197"),
        "{health}"
    );
    let job = server
        .run(json!({
            "prompt": "hello",
            "system_prompt": "be brief",
            "append_system_prompt": "really",
            "allowed_tools": ["Read", "Bash(git *)"],
            "disallowed_tools": ["WebFetch"],
            "permission_mode": "acceptEdits",
            "max_turns": 3,
            "max_budget_usd": 1.5,
            "json_schema": {"type": "object"},
            "mcp_config": {"mcpServers": {}},
            "session": {"id": "6a1f0c9e-4f1e-4c55-9d0b-1f6f2c7c9a10"},
            "max_attempts": 1
        }))
        .await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["error"]["type"], "api_error", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unable to connect"),
        "{job}"
    );
    assert_eq!(job["session_id"], "6a1f0c9e-4f1e-4c55-9d0b-1f6f2c7c9a10");
    let kinds: Vec<String> = server
        .events(job["id"].as_str().unwrap())
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"system".to_string()) && kinds.contains(&"result".to_string()),
        "{kinds:?}"
    );
    assert_no_survivors(&job);
    server.stop().await;
}
