//! Baton driving the real, pinned `claude` CLI (installed by `cargo xtask install-claude`)
//! against `mock-anthropic` on loopback. Skipped with a notice when the CLI is not
//! installed, failed under `BATON_REQUIRE_ALL=1`. Nothing leaves the machine: the CLI's
//! base URL is the mock and non-essential traffic is disabled by the runner.

use std::path::PathBuf;

use mock_anthropic::{MockAnthropic, Reply};
use serde_json::{Value, json};

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

/// The test MCP server binary, built on demand when a filtered run did not build it.
fn mock_mcp() -> PathBuf {
    let bin = fake_claude::built_binary().with_file_name("mock-mcp");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "mock-anthropic", "--bin", "mock-mcp"])
            .status()
            .unwrap();
        assert!(status.success(), "could not build mock-mcp");
    }
    bin
}

/// A Baton server whose CLI is the real one, talking to `mock`. Baton holds the key its
/// configuration gives the CLIs, so by default they reach `mock` through its proxy; with
/// `BATON_TEST_REAL_CLI_VIA=sandbox` also from a sandbox (how `.ci/run` runs the suite a second
/// time), with `=direct` without the proxy.
async fn server(claude: &std::path::Path, mock: &MockAnthropic, extra: &[(&str, &str)]) -> Server {
    let via = std::env::var("BATON_TEST_REAL_CLI_VIA").unwrap_or_default();
    let helper = crate::support::baton_bin().display().to_string();
    let mut extra = extra.to_vec();
    match via.as_str() {
        "sandbox" if crate::sandbox::have_bwrap() => {
            extra.push(("runner.sandbox", "bwrap"));
            extra.push(("runner.sandbox_helper", helper.as_str()));
        }
        "direct" => extra.push(("proxy.mode", "direct")),
        _ => {}
    }
    let extra = &extra[..];
    let env = format!(
        r#"{{ANTHROPIC_BASE_URL = "{}", ANTHROPIC_API_KEY = "sk-test"}}"#,
        mock.base_url()
    );
    let claude = claude.display().to_string();
    let mut overrides = vec![
        ("runner.claude_bin", claude.as_str()),
        ("runner.env", env.as_str()),
        ("runner.silence_timeout_seconds", "60"),
    ];
    overrides.extend_from_slice(extra);
    Server::with(&overrides).await
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn text_tools_and_denials_on_the_real_protocol() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;

    let job = server
        .run(json!({"prompt": "MOCK_TEXT hello from the real cli", "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "hello from the real cli");
    assert!(job["total_cost_usd"].as_f64().unwrap() > 0.0);
    assert!(job["session_id"].as_str().is_some());
    let k = kinds(&server.events(job["id"].as_str().unwrap()).await);
    assert_eq!(
        &k[..3],
        ["job.queued", "attempt.started", "system"],
        "{k:?}"
    );
    assert_eq!(&k[k.len() - 2..], ["result", "job.completed"], "{k:?}");
    // The prompt reached the API through stdin, and the key only as a header.
    let request = mock.messages_requests().pop().unwrap();
    assert!(
        request
            .prompt()
            .unwrap_or_default()
            .contains("hello from the real cli")
    );

    let tool = r#"MOCK_TOOL Bash {"command":"echo hi from bash","description":"say hi"}"#;
    let job = server
        .run(json!({"prompt": tool, "allowed_tools": ["Bash"], "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(
        job["result"], "done: hi from bash",
        "the tool's output did not reach the model"
    );
    let events = server.events(job["id"].as_str().unwrap()).await;
    let tool_result = events
        .iter()
        .find(|e| e["kind"] == "user")
        .expect("a tool_result event");
    assert!(tool_result["data"].to_string().contains("hi from bash"));
    assert_no_survivors(&job);

    let deny = r#"MOCK_TOOL Write {"file_path":"/tmp/baton-denied.txt","content":"x"}"#;
    let job = server.run(json!({"prompt": deny, "max_attempts": 1})).await;
    assert_eq!(
        job["state"], "completed",
        "a denial does not fail the run: {job}"
    );
    assert_eq!(job["permission_denials"][0]["tool_name"], "Write", "{job}");
    assert!(!std::path::Path::new("/tmp/baton-denied.txt").exists());
    server.stop().await;
}

#[tokio::test]
async fn limits_and_api_errors_get_distinct_types() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;

    let job = server.run(json!({"prompt": "MOCK_LOOP 5", "allowed_tools": ["Bash"], "max_turns": 2, "max_attempts": 1})).await;
    assert_eq!(
        (job["state"].as_str(), job["error"]["type"].as_str()),
        (Some("failed"), Some("max_turns")),
        "{job}"
    );

    let job = server.run(json!({"prompt": "MOCK_USAGE 1000000 10\nMOCK_TEXT expensive", "max_budget_usd": 0.01, "max_attempts": 1})).await;
    assert_eq!(
        (job["state"].as_str(), job["error"]["type"].as_str()),
        (Some("failed"), Some("max_budget")),
        "{job}"
    );
    assert!(
        job["total_cost_usd"].as_f64().unwrap() > 0.01,
        "the spend is recorded: {job}"
    );

    // A refused key fails fast: Baton limits the CLI's own retries (one), instead of ten
    // over three minutes, and does not retry an authentication error itself.
    let before = mock.messages_requests().len();
    let started = std::time::Instant::now();
    let job = server
        .run(json!({"prompt": "MOCK_ERROR 401", "max_attempts": 3}))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["error"]["type"].as_str()),
        (Some("failed"), Some("authentication_error")),
        "{job}"
    );
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        mock.messages_requests().len() - before,
        2,
        "one request and one CLI retry"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    // Overloaded once, then fine: the CLI's single retry absorbs it.
    let job = server
        .run(json!({"prompt": "MOCK_ERROR_ONCE 529\nMOCK_TEXT after overload", "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "after overload");
    let retried = server
        .events(job["id"].as_str().unwrap())
        .await
        .iter()
        .any(|e| e["kind"] == "system" && e["data"]["subtype"] == "api_retry");
    assert!(retried, "the CLI's api_retry event is in the log");
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_stream_is_cut_by_the_silence_watchdog_and_retried() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    mock.push(Reply::stall(["partial answ", "er that neve"]));
    mock.push(Reply::text("recovered"));
    let server = server(&claude, &mock, &[("runner.silence_timeout_seconds", "3")]).await;
    let job = server
        .run(json!({"prompt": "tell me", "max_attempts": 2}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "recovered");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["error"]["type"], "silence_timeout");
    assert_no_survivors(&job);
    server.stop().await;
}

#[tokio::test]
async fn structured_output_present_or_missing() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let job = server
        .run(json!({"prompt": r#"MOCK_STRUCTURED {"name":"Ada"}"#, "json_schema": schema, "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["structured_output"], json!({"name": "Ada"}));
    // The model never calls StructuredOutput: the CLI reports success without it, and
    // Baton does not call that a success.
    let job = server
        .run(json!({"prompt": "MOCK_TEXT just prose", "json_schema": schema, "max_attempts": 1}))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["error"]["type"].as_str()),
        (Some("failed"), Some("structured_output_missing")),
        "{job}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_mcp_server_from_mcp_config_is_used() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;
    let mcp = json!({"mcpServers": {"t": {"type": "stdio", "command": mock_mcp().display().to_string(), "args": []}}});
    let job = server
        .run(json!({
            "prompt": r#"MOCK_TOOL mcp__t__upper {"text":"abc"}"#,
            "mcp_config": mcp,
            "allowed_tools": ["mcp__t__upper"],
            "max_attempts": 1
        }))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "done: ABC", "{job}");
    let events = server.events(job["id"].as_str().unwrap()).await;
    let init = events
        .iter()
        .find(|e| e["kind"] == "system" && e["data"]["subtype"] == "init")
        .unwrap();
    assert_eq!(
        init["data"]["mcp_servers"][0]["status"], "connected",
        "{init}"
    );
    assert_no_survivors(&job);
    server.stop().await;
}

#[tokio::test]
async fn a_session_resumes_after_a_restart_from_another_workspace() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;
    let session = "5b0c4f6e-7d3a-4d1e-9a4b-8c2f1e0d9b7a";
    let first = server
        .run(json!({"prompt": "MOCK_TEXT noted\nthe secret word is banana", "session": {"id": session}, "max_attempts": 1}))
        .await;
    assert_eq!(first["state"], "completed", "{first}");
    let (dir, roots) = server.stop_keeping_data().await;

    let env = format!(
        r#"{{ANTHROPIC_BASE_URL = "{}", ANTHROPIC_API_KEY = "sk-test"}}"#,
        mock.base_url()
    );
    let claude = claude.display().to_string();
    let elsewhere = roots.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let server = Server::start_in(
        dir,
        roots,
        &[
            ("runner.claude_bin", claude.as_str()),
            ("runner.env", env.as_str()),
        ],
    )
    .await;
    let second = server
        .run(json!({
            "prompt": "MOCK_TEXT it was banana\nwhat was the secret word?",
            "session": {"resume": session},
            "cwd": elsewhere.display().to_string(),
            "max_attempts": 1
        }))
        .await;
    assert_eq!(second["state"], "completed", "{second}");
    assert_eq!(second["session_id"], session);
    // The API saw the first turn's history: the transcript travelled through Baton's store.
    let request = mock.messages_requests().pop().unwrap();
    let history = request.body.unwrap()["messages"].to_string();
    assert!(
        history.contains("the secret word is banana"),
        "no history in the resumed request"
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_mid_tool_call_leaves_no_process_behind() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;
    let job = server
        .submit(json!({
            "prompt": r#"MOCK_TOOL Bash {"command":"sleep 120","description":"wait"}"#,
            "allowed_tools": ["Bash"],
            "max_attempts": 1
        }))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    // Wait until the tool call is in the log and its process is running.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let events = server.events(&id).await;
        if events
            .iter()
            .any(|e| e["kind"] == "assistant" && e["data"].to_string().contains("sleep 120"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tool call never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let running = server.job(&id).await;
    let pgid = running["attempts"][0]["pid"].as_i64().unwrap();
    let _guard = crate::support::GroupGuard(pgid);
    let (status, _) = server
        .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);
    let job = server.wait_terminal(&id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        crate::support::survivors(pgid).is_empty(),
        "the CLI or its `sleep` survived the cancel"
    );
    server.stop().await;
}

/// Every flag Baton builds is accepted by the real CLI, and an unreachable API is a
/// precise, fast failure, with no process left behind.
#[tokio::test]
async fn the_real_cli_accepts_batons_arguments_and_fails_fast_without_an_api() {
    let Some(claude) = real_claude() else { return };
    let claude = claude.display().to_string();
    let server = Server::with(&[
        ("runner.claude_bin", claude.as_str()),
        // Port 9 (discard) on loopback: connection refused at once.
        ("runner.env", r#"{ANTHROPIC_BASE_URL = "http://127.0.0.1:9", ANTHROPIC_API_KEY = "sk-test", CLAUDE_CODE_MAX_RETRIES = "0"}"#),
        ("runner.silence_timeout_seconds", "60"),
        // A policy that allows all this but the project's own settings: the CLI also gets
        // `--setting-sources user` and `--strict-mcp-config`.
        ("policy", r#"{tools = ["*"], permission_modes = ["*"], raw_mcp = true}"#),
    ])
    .await;
    let (status, health) = server.get("/v1/health").await;
    assert_eq!(status, 200, "{health}");
    // Health reports the binary's own answer (the pinned version, or the one
    // `cargo xtask install-claude --version V` put there).
    let own = std::process::Command::new(&claude)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        health["claude_version"].as_str(),
        Some(String::from_utf8_lossy(&own.stdout).trim()),
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
    // Baton holds the key, so the CLI reaches the (unreachable) API through its proxy,
    // which answers 502 as the API's own gateway would. (Directly, 2.1.197 says "Unable
    // to connect"; 2.1.3xx "Connection refused … (ECONNREFUSED)".)
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the API could not be reached")
            || message.contains("Unable to connect")
            || message.contains("Connection refused"),
        "{job}"
    );
    assert_eq!(job["session_id"], "6a1f0c9e-4f1e-4c55-9d0b-1f6f2c7c9a10");
    assert_no_survivors(&job);
    server.stop().await;
}

/// A 429 parks the job until the announced time and does not spend an attempt: with
/// `max_attempts: 1` the job still completes on its second run.
#[tokio::test]
async fn a_rate_limited_job_is_parked_until_the_announced_time() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    // The request and the CLI's one retry are both refused with `retry-after: 2`.
    for _ in 0..2 {
        mock.push(Reply::error(429, "slow down").with_retry_after(2));
    }
    mock.push(Reply::text("after the limit"));
    let server = server(&claude, &mock, &[]).await;
    let job = server
        .submit(json!({"prompt": "hello", "max_attempts": 1}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let parked = server
        .wait_until(&id, |j| {
            !j["parked_until"].is_null() || j["state"] != "running" && j["state"] != "queued"
        })
        .await;
    assert_eq!(parked["state"], "queued", "{parked}");
    assert_eq!(parked["error"]["type"], "rate_limited", "{parked}");
    assert_eq!(
        parked["max_attempts"], 2,
        "the parked attempt is refunded: {parked}"
    );
    let job = server.wait_terminal(&id).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "after the limit");
    let events = server.events(&id).await;
    let park = events
        .iter()
        .find(|e| e["kind"] == "job.parked")
        .expect("a job.parked event");
    let failed_at = park["at"].as_str().unwrap().to_string();
    let started_again = events
        .iter()
        .filter(|e| e["kind"] == "attempt.started")
        .nth(1)
        .unwrap();
    // Parked for at least the announced two seconds.
    let ms = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    let waited = ms(started_again["at"].as_str().unwrap()) - ms(&failed_at);
    assert!(waited >= 1_900, "retried after only {waited} ms");
    server.stop().await;
}

/// `baton doctor` makes one real round trip and names exactly what is wrong.
#[tokio::test]
async fn doctor_diagnoses_each_failure_precisely() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let dir = tempfile::tempdir().unwrap();
    let doctor = |claude: PathBuf, base: String, key: Option<&'static str>| {
        let mut cmd = tokio::process::Command::new(crate::support::baton_bin());
        cmd.args(["doctor", "--data-dir"])
            .arg(dir.path())
            .arg("--claude-bin")
            .arg(claude);
        cmd.arg("--set")
            .arg(format!(r#"runner.env={{ANTHROPIC_BASE_URL = "{base}"}}"#));
        cmd.env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN");
        if let Some(k) = key {
            cmd.env("ANTHROPIC_API_KEY", k);
        }
        async move {
            let out = cmd.output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (code, out) = doctor(claude.clone(), mock.base_url(), Some("sk-test-secret")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok   round trip") && out.contains("answered"),
        "{out}"
    );
    assert!(
        !out.contains("sk-test-secret"),
        "the key was printed: {out}"
    );

    mock.push(Reply::error(401, "invalid x-api-key"));
    mock.push(Reply::error(401, "invalid x-api-key"));
    let (code, out) = doctor(claude.clone(), mock.base_url(), Some("sk-wrong")).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("refused the credentials"), "{out}");

    let (code, out) = doctor(claude.clone(), "http://127.0.0.1:9".into(), Some("sk-test")).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("127.0.0.1:9 is unreachable"), "{out}");

    let (code, out) = doctor(claude.clone(), mock.base_url(), None).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("FAIL credentials") && out.contains("no credentials reached the CLI"),
        "{out}"
    );

    let old = dir.path().join("old-claude");
    std::fs::write(&old, "#!/bin/sh\necho '1.0.3 (Claude Code)'\n").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, out) = doctor(old, mock.base_url(), Some("sk-test")).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("version 1.0.3, older than the 2.0.0"), "{out}");

    let (code, out) = doctor(
        "/nonexistent/claude".into(),
        mock.base_url(),
        Some("sk-test"),
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("FAIL claude CLI") && out.contains("/nonexistent/claude cannot be run"),
        "{out}"
    );
}

/// The real CLI in stream-json input mode, pre-started, answers a job's prompt.
#[tokio::test]
async fn a_warm_real_cli_serves_a_job() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let server = server(
        &claude,
        &mock,
        &[("warm_pool", "[{size = 1, options = {}}]")],
    )
    .await;
    for _ in 0..400 {
        let (_, health) = server.get("/v1/health").await;
        if health["warm_pools"][0]["ready"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let job = server
        .run(json!({"prompt": "MOCK_TEXT hello from a warm cli", "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["attempts"][0]["warm"], true, "{job}");
    assert_eq!(job["result"], "hello from a warm cli");
    assert_no_survivors(&job);
    server.stop().await;
}

/// Seed 001's jq-bot, applied from its folder with `baton apply`, answers the seed's call
/// through the real CLI: the structured output the CLI returns is the filter, and the
/// agent's `verify` script runs it with jq.
#[tokio::test]
async fn seed_001s_jq_bot_answers_through_the_real_cli() {
    let Some(claude) = real_claude() else { return };
    if !crate::support::have_jq() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let server = server(&claude, &mock, &[]).await;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents");
    let out = server
        .cli(&["apply", &fixtures.display().to_string()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = server
        .http
        .post(format!("{}/", server.base))
        .header("X-Clrk-TaskAgent", "default/jq-bot")
        .json(
            &json!({"input": [{"name": "alice", "age": 30, "role": "eng"},
                                {"name": "bob", "age": 42, "role": "pm"},
                                {"name": "carol", "age": 25, "role": "eng"}],
                      "want": "names of engineers, ascending by age"}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["output"], json!(["carol", "alice"]), "{answer}");
    assert_eq!(
        answer["filter"],
        "[.[] | select(.role == \"eng\")] | sort_by(.age) | map(.name)"
    );
    server.stop().await;
}

/// A Baton whose real CLI reaches `mock` only through the proxy, which holds `credential`
/// (in a file, in the returned directory).
async fn proxied(
    claude: &std::path::Path,
    mock: &MockAnthropic,
    credential: &str,
    extra: &[(&str, &str)],
) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    crate::support::secret_file(&file, &format!("{credential}\n"));
    let (file, upstream, claude) = (
        file.display().to_string(),
        mock.base_url(),
        claude.display().to_string(),
    );
    let mut flags = vec![
        ("runner.claude_bin", claude.as_str()),
        ("runner.silence_timeout_seconds", "60"),
        ("proxy.credential_file", file.as_str()),
        ("proxy.upstream", upstream.as_str()),
    ];
    flags.extend_from_slice(extra);
    let server = Server::with(&flags).await;
    (server, dir)
}

/// The real CLI through Baton's credential proxy: it holds only its attempt's token, the
/// mock sees the real credential on every call, and each call is in the ledger.
#[tokio::test]
async fn the_real_cli_reaches_the_api_through_the_proxy_with_a_token_of_its_own() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let canary = "sk-ant-api03-canary-9f8e7d6c5b4a";
    let (server, _dir) = proxied(&claude, &mock, canary, &[]).await;
    let job = server
        .run(json!({"prompt": "MOCK_USAGE 1000 200\nMOCK_TEXT metered", "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "metered");
    let calls = mock.messages_requests();
    assert!(!calls.is_empty());
    for c in &calls {
        let key = c.header("x-api-key").unwrap_or_default();
        assert!(
            key.contains(&mock_anthropic::fingerprint(canary)),
            "every call upstream carries the real credential: {key}"
        );
    }
    let id = baton_core::JobId::parse(job["id"].as_str().unwrap()).unwrap();
    let spend = server.store.job_spend(id).await.unwrap();
    assert_eq!(spend.calls as usize, calls.len(), "each call in the ledger");
    assert!(
        spend.input_tokens >= 1000 && spend.cost_micro_usd > 0,
        "{spend:?}"
    );
    // The canary is in no answer or event.
    let events = server.events(job["id"].as_str().unwrap()).await;
    assert!(!job.to_string().contains(canary));
    assert!(!serde_json::to_string(&events).unwrap().contains(canary));
    server.stop().await;
}

/// A job cap of two and a half calls: the proxy refuses the third, the job ends
/// `budget_exceeded` (not retried), and the ledger holds the calls made.
#[tokio::test]
async fn the_proxy_refuses_the_call_that_would_cross_a_jobs_budget() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let (server, _dir) = proxied(&claude, &mock, "sk-ant-api03-budget-canary", &[]).await;
    // Each call: 100 tokens in, 50 out, on sonnet: 1,050 micro-dollars.
    let job = server
        .run(json!({
            "prompt": "MOCK_USAGE 100 50\nMOCK_LOOP 6",
            "model": "claude-sonnet-4-5",
            "allowed_tools": ["Bash"],
            "max_budget_usd": 0.002625,
            "max_attempts": 3
        }))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["error"]["type"].as_str()),
        (Some("failed"), Some("budget_exceeded")),
        "{job}"
    );
    assert_eq!(job["attempt"], 1, "not retried: {job}");
    let id = baton_core::JobId::parse(job["id"].as_str().unwrap()).unwrap();
    let spend = server.store.job_spend(id).await.unwrap();
    assert!(
        spend.calls <= 3 && spend.cost_micro_usd <= 2_625 + 1_050,
        "within one call of the cap: {spend:?}"
    );
    assert!(mock.messages_requests().len() <= 3);
    server.stop().await;
}

/// The real CLI in the sandbox, through the proxy's socket: a text answer, a Bash tool, a
/// Write inside its workspace under bypassPermissions (the CLI sees a non-root uid), a
/// Write outside it refused by the read-only system, and nothing left running.
#[tokio::test]
async fn the_real_cli_works_in_the_sandbox_through_the_proxy() {
    let Some(claude) = real_claude() else { return };
    if !crate::sandbox::have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let helper = crate::support::baton_bin().display().to_string();
    let (server, _dir) = proxied(
        &claude,
        &mock,
        "sk-ant-api03-sandboxed-canary",
        &[
            ("runner.sandbox", "bwrap"),
            ("runner.sandbox_helper", helper.as_str()),
            ("runner.keep_workspaces", "true"),
        ],
    )
    .await;
    let job = server
        .run(json!({"prompt": "MOCK_TEXT boxed", "max_attempts": 1}))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str()),
        (Some("completed"), Some("boxed")),
        "{job}"
    );
    let tool = r#"MOCK_TOOL Bash {"command":"id -u","description":"who"}"#;
    let job = server
        .run(json!({"prompt": tool, "allowed_tools": ["Bash"], "max_attempts": 1}))
        .await;
    assert_eq!(job["result"], "done: 1000", "{job}");
    assert_no_survivors(&job);
    let write = r#"MOCK_TOOL Write {"file_path":"written.txt","content":"inside"}"#;
    let job = server
        .run(json!({"prompt": write, "permission_mode": "bypassPermissions", "max_attempts": 1}))
        .await;
    assert_eq!(
        job["state"], "completed",
        "bypassPermissions runs unattended: {job}"
    );
    let attempts = server.dir.path().join("attempts");
    let written = std::fs::read_dir(&attempts)
        .unwrap()
        .flatten()
        .map(|d| d.path().join("work/written.txt"))
        .find(|p| p.exists());
    assert_eq!(
        written.map(|p| std::fs::read_to_string(p).unwrap()),
        Some("inside".to_string()),
        "the Write landed in the workspace"
    );
    let outside =
        r#"MOCK_TOOL Bash {"command":"touch /usr/baton-escape; echo $?","description":"escape"}"#;
    let job = server
        .run(json!({"prompt": outside, "allowed_tools": ["Bash"], "permission_mode": "bypassPermissions", "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert!(!std::path::Path::new("/usr/baton-escape").exists());
    assert_ne!(job["result"], "done: 0", "{job}");
    server.stop().await;
}

/// Under a policy that keeps the CLI from its working directory's settings
/// (`--setting-sources user`), an agent's `CLAUDE.md` still reaches the model (from the
/// private home), and a catalogue MCP server named by the agent is started and used.
#[tokio::test]
async fn a_confined_agent_gets_its_claude_md_and_a_catalogue_mcp_server() {
    let Some(claude) = real_claude() else { return };
    let mock = MockAnthropic::start().await;
    let catalogue = format!(r#"[{{name = "t", command = "{}"}}]"#, mock_mcp().display());
    let server = server(
        &claude,
        &mock,
        &[
            ("mcp_server", catalogue.as_str()),
            ("policy", r#"{tools = ["*"], mcp_servers = ["t"]}"#),
        ],
    )
    .await;
    let (status, agent) = server
        .post(
            "/v1/agents",
            json!({"name": "upper", "prompt_template": r#"MOCK_TOOL mcp__t__upper {"text":"abc"}"#,
                   "claude_md": "The secret word is HERON-42.",
                   "options": {"mcp_servers": ["t"], "allowed_tools": ["mcp__t__upper"], "max_attempts": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (status, job) = server
        .post("/v1/agents/upper/runs?wait=60", json!({"input": {}}))
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "done: ABC", "{job}");
    assert_eq!(job["options"]["confined"], true, "{job}");
    let bodies: Vec<String> = mock
        .messages_requests()
        .iter()
        .filter_map(|r| r.body.as_ref().map(Value::to_string))
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("HERON-42")),
        "the agent's CLAUDE.md reached the model"
    );
    assert_no_survivors(&job);
    server.stop().await;
}
