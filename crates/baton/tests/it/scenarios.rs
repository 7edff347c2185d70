//! Every fake-claude scenario, end to end over HTTP: the right terminal state, the right
//! error type, the partial transcript kept, and no process of the job's group left alive.

use serde_json::{Value, json};

use crate::support::{Server, assert_no_survivors, prompt};

struct Case {
    name: &'static str,
    body: Value,
    state: &'static str,
    error: Option<&'static str>,
    /// An event kind that must be in the log (the partial transcript).
    must_log: &'static [&'static str],
}

fn case(
    name: &'static str,
    p: &str,
    state: &'static str,
    error: Option<&'static str>,
    must_log: &'static [&'static str],
) -> Case {
    Case {
        name,
        body: prompt(p),
        state,
        error,
        must_log,
    }
}

#[tokio::test]
async fn every_scenario_ends_in_the_right_state() {
    let server = Server::with(&[
        ("runner.max_concurrency", "8"),
        ("runner.max_line_bytes", "1048576"),
    ])
    .await;
    let mut cases = vec![
        case(
            "plain text",
            "FAKE text hello",
            "completed",
            None,
            &["system", "assistant", "result"],
        ),
        case(
            "slow stream",
            "FAKE slow 4 50",
            "completed",
            None,
            &["assistant", "result"],
        ),
        case(
            "tool use",
            "FAKE tool",
            "completed",
            None,
            &["user", "result"],
        ),
        case(
            "permission denial",
            "FAKE deny",
            "completed",
            None,
            &["result"],
        ),
        case(
            "max turns",
            "FAKE error error_max_turns",
            "failed",
            Some("max_turns"),
            &["result"],
        ),
        case(
            "max budget",
            "FAKE error error_max_budget_usd",
            "failed",
            Some("max_budget"),
            &["result"],
        ),
        case(
            "structured retries",
            "FAKE error error_max_structured_output_retries",
            "failed",
            Some("structured_output_invalid"),
            &["result"],
        ),
        case(
            "during execution",
            "FAKE error error_during_execution",
            "failed",
            Some("execution_error"),
            &["result"],
        ),
        case(
            "API 401",
            "FAKE api_error 401",
            "failed",
            Some("authentication_error"),
            &["assistant", "result"],
        ),
        case(
            "API 400",
            "FAKE api_error 400",
            "failed",
            Some("invalid_request"),
            &["result"],
        ),
        case(
            "API 529, out of attempts",
            "FAKE api_error 529",
            "dead",
            Some("api_error"),
            &["result"],
        ),
        case(
            "not logged in",
            "FAKE not_logged_in",
            "failed",
            Some("authentication_error"),
            &["result"],
        ),
        case(
            "missing result",
            "FAKE no_result",
            "dead",
            Some("no_result"),
            &["assistant"],
        ),
        case(
            "hang after result",
            "FAKE hang_after_result",
            "completed",
            None,
            &["result"],
        ),
        case(
            "hang mid-stream",
            "FAKE hang_mid_stream",
            "dead",
            Some("silence_timeout"),
            &["assistant"],
        ),
        case(
            "grandchild holds stdout",
            "FAKE grandchild\nFAKE text done",
            "completed",
            None,
            &["result"],
        ),
        // A line over max_line_bytes (1 MiB here) that is not the result is stored cut
        // short; the run goes on.
        case(
            "a 10 MB assistant line",
            "FAKE big_line 10000000",
            "completed",
            None,
            &["system", "assistant", "result"],
        ),
        case(
            "a 2 MB result line",
            "FAKE big_result 2000000",
            "failed",
            Some("output_too_large"),
            &["system"],
        ),
        case(
            "crash",
            "FAKE crash",
            "dead",
            Some("crashed"),
            &["assistant"],
        ),
        case(
            "garbage",
            "FAKE garbage",
            "failed",
            Some("protocol_error"),
            &["baton.unparsed"],
        ),
        case(
            "silent non-zero exit",
            "FAKE exit 3",
            "dead",
            Some("crashed"),
            &[],
        ),
        case(
            "stderr flood",
            "FAKE stderr_flood 2000000\nFAKE text ok",
            "completed",
            None,
            &["result"],
        ),
    ];
    cases.push(Case {
        name: "structured output",
        body: json!({"prompt": "FAKE structured {\"name\":\"Ada\"}", "json_schema": {"type": "object"}, "max_attempts": 1}),
        state: "completed",
        error: None,
        must_log: &["result"],
    });
    cases.push(Case {
        name: "structured output missing",
        body: json!({"prompt": "FAKE structured_missing", "json_schema": {"type": "object"}, "max_attempts": 1}),
        state: "failed",
        error: Some("structured_output_missing"),
        must_log: &["result"],
    });
    cases.push(Case {
        name: "wall-clock timeout",
        body: json!({"prompt": "FAKE slow 100 100", "timeout_ms": 1000, "max_attempts": 1}),
        state: "failed",
        error: Some("timeout"),
        must_log: &["assistant"],
    });

    // All at once: they run concurrently, as they would in production.
    let mut ids = Vec::new();
    for c in &cases {
        ids.push(
            server.submit(c.body.clone()).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut failures = Vec::new();
    for (c, id) in cases.iter().zip(&ids) {
        let job = server.wait_terminal(id).await;
        let got = (
            job["state"].as_str().unwrap_or(""),
            job["error"]["type"].as_str(),
        );
        if got != (c.state, c.error) {
            failures.push(format!(
                "{}: got {got:?}, want {:?}: {}",
                c.name,
                (c.state, c.error),
                job["error"]
            ));
            continue;
        }
        let kinds: Vec<String> = server
            .events(id)
            .await
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        for k in c.must_log {
            if !kinds.iter().any(|x| x == k) {
                failures.push(format!("{}: no {k:?} event in {kinds:?}", c.name));
            }
        }
        let last = kinds.last().cloned().unwrap_or_default();
        if last != format!("job.{}", c.state) {
            failures.push(format!("{}: the log ends with {last:?}", c.name));
        }
        assert_no_survivors(&job);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Spot checks of what the outcome carries.
    let tool = server.job(&ids[2]).await;
    assert_eq!(tool["num_turns"], 2);
    let deny = server.job(&ids[3]).await;
    assert_eq!(deny["permission_denials"][0]["tool_name"], "Write");
    let structured = server.job(&ids[ids.len() - 3]).await;
    assert_eq!(structured["structured_output"], json!({"name": "Ada"}));
    let plain = server.job(&ids[0]).await;
    assert_eq!(plain["result"], "hello");
    assert!(plain["total_cost_usd"].as_f64().unwrap() > 0.0);
    assert!(plain["session_id"].as_str().is_some());
    server.stop().await;
}

#[tokio::test]
async fn retryable_failures_are_retried_then_dead_lettered() {
    let server = Server::start().await;
    let job = server
        .run(json!({"prompt": "FAKE crash", "max_attempts": 2}))
        .await;
    assert_eq!(job["state"], "dead", "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    for a in attempts {
        assert_eq!(a["error"]["type"], "crashed");
    }
    let kinds: Vec<Value> = server
        .events(job["id"].as_str().unwrap())
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "attempt.failed").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "attempt.started").count(), 2);
    assert_no_survivors(&job);

    // A non-retryable error is not retried, whatever max_attempts says.
    let job = server
        .run(json!({"prompt": "FAKE api_error 401", "max_attempts": 5}))
        .await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// A 429 with no announced reset parks the job for the default minute, refunding the
/// attempt; a parked job is visible as such and can be cancelled.
#[tokio::test]
async fn a_rate_limited_job_is_parked_not_dead_lettered() {
    let server = Server::start().await;
    let job = server.submit(prompt("FAKE api_error 429")).await;
    let id = job["id"].as_str().unwrap().to_string();
    let parked = server
        .wait_until(&id, |j| !j["parked_until"].is_null())
        .await;
    assert_eq!(parked["state"], "queued", "{parked}");
    assert_eq!(parked["error"]["type"], "rate_limited");
    assert_eq!(
        parked["max_attempts"], 2,
        "the attempt was counted: {parked}"
    );
    let until =
        chrono::DateTime::parse_from_rfc3339(parked["parked_until"].as_str().unwrap()).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(
        parked["attempts"][0]["finished_at"].as_str().unwrap(),
    )
    .unwrap();
    assert!(
        (until - finished).num_seconds() >= 59,
        "parked for {}",
        until - finished
    );
    let kinds: Vec<Value> = server
        .events(&id)
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert!(kinds.contains(&json!("job.parked")), "{kinds:?}");
    let (status, cancelled) = server
        .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    server.stop().await;
}

/// A stream-json line over `max_line_bytes` that is not the result (here the assistant's
/// 2 MB text; with the real CLI, most often a tool's large output echoed back) is stored
/// cut short and marked so, and the attempt goes on to its result.
#[tokio::test]
async fn an_over_long_event_is_stored_truncated_and_the_run_goes_on() {
    let server = Server::with(&[("runner.max_line_bytes", "1048576")]).await;
    let job = server.run(prompt("FAKE big_line 2000000")).await;
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str()),
        (Some("completed"), Some("big")),
        "{}",
        job["error"]
    );
    let id = job["id"].as_str().unwrap();
    let events = server.events(id).await;
    let cut: Vec<&Value> = events
        .iter()
        .filter(|e| !e["data"]["baton_truncated"].is_null())
        .collect();
    assert_eq!(cut.len(), 1, "{events:?}");
    assert_eq!(cut[0]["kind"], "assistant");
    let marker = &cut[0]["data"]["baton_truncated"];
    assert!(marker["bytes"].as_u64().unwrap() > 2_000_000, "{marker}");
    assert_eq!(marker["max_line_bytes"], 1_048_576);
    let head = cut[0]["data"]["head"].as_str().unwrap();
    assert!(head.starts_with("{\"type\":\"assistant\""), "{head}");
    assert!(head.len() <= 4096);
    server.stop().await;
}

/// Seconds from the job's last attempt's end to `parked_until`.
fn parked_for_s(job: &Value) -> i64 {
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let attempts = job["attempts"].as_array().unwrap();
    let last = &attempts[attempts.len() - 1];
    (at(&job["parked_until"]) - at(&last["finished_at"])).num_seconds()
}

/// A subscription's usage limit (`rate_limit_event` rejected, then an error result with no
/// API status) parks the job until the announced reset, without spending an attempt; it
/// is not an API error retried at once.
#[tokio::test]
async fn a_usage_limit_parks_the_job_until_its_reset() {
    let server = Server::start().await;
    let job = server.submit(prompt("FAKE usage_limit 7200")).await;
    let id = job["id"].as_str().unwrap().to_string();
    let parked = server
        .wait_until(&id, |j| {
            !j["parked_until"].is_null() || j["state"] != "queued" && j["state"] != "running"
        })
        .await;
    assert_eq!(parked["state"], "queued", "{parked}");
    assert_eq!(parked["error"]["type"], "rate_limited", "{parked}");
    assert!(
        parked["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session limit"),
        "{parked}"
    );
    assert_eq!(parked["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        parked["max_attempts"], 2,
        "the attempt was counted: {parked}"
    );
    let waits = parked_for_s(&parked);
    assert!((7_195..=7_201).contains(&waits), "parked for {waits} s");
    server.stop().await;
}

/// `allowed` and `allowed_warning` rate-limit events come with runs that succeed: they
/// change nothing, and a later 429 parks for its own time, not until their reset.
#[tokio::test]
async fn rate_limit_events_that_allow_change_nothing() {
    let server = Server::start().await;
    let job = server
        .run(prompt(
            "FAKE rate_limit allowed_warning 7200\nFAKE text fine",
        ))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str()),
        (Some("completed"), Some("fine"))
    );
    let job = server
        .submit(prompt("FAKE rate_limit allowed 7200\nFAKE api_error 429"))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let parked = server
        .wait_until(&id, |j| !j["parked_until"].is_null())
        .await;
    let waits = parked_for_s(&parked);
    assert!((59..=61).contains(&waits), "parked for {waits} s: {parked}");
    server.stop().await;
}

/// A synchronous route answers a usage limit with 429 and when to come back, and cancels
/// the job rather than run it later for nobody.
#[tokio::test]
async fn chat_answers_a_usage_limit_with_429_and_retry_after() {
    let server = Server::start().await;
    let resp = server
        .http
        .post(format!("{}/v1/chat", server.base))
        .json(&json!({"prompt": "FAKE usage_limit 120"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (110..=120).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let id = body["error"]["job_id"].as_str().unwrap();
    assert_eq!(server.job(id).await["state"], "cancelled");
    server.stop().await;
}

/// The streaming chat route ends with a `rate_limit_error` event saying when to come
/// back, and cancels the job, instead of holding the stream open until the reset.
#[tokio::test]
async fn chat_stream_ends_a_usage_limit_with_a_rate_limit_error() {
    let server = Server::start().await;
    let text = server
        .http
        .post(format!("{}/v1/chat/stream", server.base))
        .json(&json!({"prompt": "FAKE usage_limit 120"}))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{text}");
    assert_eq!(last["error"]["type"], "rate_limit_error", "{text}");
    let retry_after = last["error"]["retry_after"].as_u64().unwrap();
    assert!((110..=120).contains(&retry_after), "{text}");
    assert_eq!(
        events.iter().filter(|e| e["type"] == "error").count(),
        1,
        "{text}"
    );
    let (_, list) = server.get("/v1/jobs?limit=1").await;
    assert_eq!(list["data"][0]["state"], "cancelled", "{list}");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_cli_fails_jobs_precisely_and_health_says_so() {
    let server = Server::with(&[("runner.claude_bin", "/nonexistent/claude")]).await;
    let (status, health) = server.get("/v1/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "error");
    assert!(
        health["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/claude"),
        "{health}"
    );
    let job = server.run(prompt("hello")).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"]["type"], "cli_not_found");
    server.stop().await;
}

#[tokio::test]
async fn the_cli_sees_an_allow_listed_environment_and_no_prompt_in_argv() {
    let server = Server::start().await;
    let job = server
        .run(json!({
            "prompt": "FAKE echo_env\nthe secret prompt",
            "system_prompt": "a secret system prompt",
            "allowed_tools": ["Bash(git *)", "Read"],
            "max_attempts": 1
        }))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let seen: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let argv = seen["argv"].to_string();
    assert!(!argv.contains("secret"), "prompt material in argv: {argv}");
    assert!(argv.contains("--system-prompt-file"), "{argv}");
    assert!(argv.contains("Bash(git *)"), "{argv}");
    let env: Vec<&str> = seen["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"),
        "{env:?}"
    );
    assert!(!env.contains(&"CLAUDECODE"), "{env:?}");
    assert!(
        !env.iter().any(|k| k.starts_with("CARGO")),
        "the test harness's environment leaked: {env:?}"
    );
    let home = seen["home"].as_str().unwrap();
    assert!(
        home.starts_with(
            &server
                .dir
                .path()
                .canonicalize()
                .unwrap()
                .display()
                .to_string()
        ),
        "{home}"
    );
    assert!(
        seen["prompt"]
            .as_str()
            .unwrap()
            .contains("the secret prompt")
    );
    server.stop().await;
}
