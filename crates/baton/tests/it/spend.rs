//! Spend: budgets checked before a job starts and enforced at every API call by Baton's
//! proxy, the cost ledger's usage API, and cost alerts. The CLI is the fake, making real
//! HTTP calls (`FAKE api_calls`) through the proxy to `mock-anthropic`, each priced at
//! 1,050 millionths of a dollar (100 input and 50 output tokens of Sonnet).

use std::sync::Arc;
use std::time::Duration;

use baton_engine::ManualClock;
use mock_anthropic::MockAnthropic;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Received, Server};

const CALL: f64 = 0.00105;

/// A server whose CLIs reach `mock` through the proxy, with a credential file.
async fn proxied(
    mock: &MockAnthropic,
    clock: Arc<ManualClock>,
    extra: &[(&str, &str)],
) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    crate::support::secret_file(&file, "sk-ant-api03-spend-canary");
    let file = file.display().to_string();
    let upstream = mock.base_url();
    let mut flags = vec![
        ("proxy.credential_file", file.as_str()),
        ("proxy.upstream", upstream.as_str()),
        ("outbound.allow", r#"["127.0.0.1/32"]"#),
    ];
    flags.extend_from_slice(extra);
    (Server::with_clock(&flags, clock).await, dir)
}

fn calls(n: u32) -> Value {
    json!({"prompt": format!("FAKE api_calls {n} 100 50\nspend")})
}

async fn ledger_calls(s: &Server) -> i64 {
    let (status, usage) = s
        .get("/v1/usage?group_by=project&from=2000-01-01&to=2100-01-01")
        .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    usage["total"]["calls"].as_i64().unwrap()
}

/// A receiver of alert webhooks on a free port: its URL, what it got, its task.
async fn receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let port = crate::process::free_port();
    let got: Received = Arc::default();
    let task = crate::support::receiver(port, "/alerts", got.clone()).await;
    (format!("http://127.0.0.1:{port}/alerts"), got, task)
}

/// 2026-12-30T12:00:00Z: two days before a new month.
const START_MS: i64 = 1_798_632_000_000;
const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn day_and_month_budgets_hold_before_and_during_runs_and_alert_once() {
    let mock = MockAnthropic::start().await;
    let clock = Arc::new(ManualClock::new(START_MS));
    let (s, _cred) = proxied(&mock, clock.clone(), &[]).await;
    let (url, got, hook) = receiver().await;
    // Five calls a day, eight a month; alerts at 50, 80 and 100 % and for a job above
    // two calls.
    let (status, p) = s
        .request_as(
            None,
            reqwest::Method::PATCH,
            "/v1/projects/default",
            Some(json!({
                "budget": {"day_usd": 5.0 * CALL, "month_usd": 8.0 * CALL},
                "alerts": {"webhook_url": url, "job_usd": 2.0 * CALL, "thresholds": [50, 80, 100]},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");

    // Day 1: three calls, then a job refused at its third call (the fifth of the day).
    let a = s.run(calls(3)).await;
    assert_eq!(a["state"], "completed", "{a}");
    let b = s.run(calls(3)).await;
    assert_eq!(
        (b["state"].as_str(), b["error"]["type"].as_str()),
        (Some("failed"), Some("budget_exceeded")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the project's daily budget"),
        "{b}"
    );
    assert_eq!(
        ledger_calls(&s).await,
        5,
        "the refused call never reached the API: {b}"
    );
    assert_eq!(mock.messages_requests().len(), 5);
    // The day is spent: the next job is not started at all.
    let c = s.run(calls(1)).await;
    assert_eq!(c["error"]["type"], "budget_exceeded", "{c}");
    assert!(
        c["error"]["message"]
            .as_str()
            .unwrap()
            .contains("was not started"),
        "{c}"
    );
    assert_eq!(mock.messages_requests().len(), 5);

    // Day 2: the day's budget is new, the month's has three calls left.
    clock.advance(DAY_MS);
    let d = s.run(calls(3)).await;
    assert_eq!(d["state"], "completed", "{d}");
    assert_eq!(ledger_calls(&s).await, 8);
    // The month is spent; with on_exceed = "park" a job waits for the next month.
    let (status, p) = s
        .request_as(
            None,
            reqwest::Method::PATCH,
            "/v1/projects/default",
            Some(json!({"budget": {"day_usd": 5.0 * CALL, "month_usd": 8.0 * CALL, "on_exceed": "park"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let e = s.submit(calls(1)).await;
    let e_id = e["id"].as_str().unwrap().to_string();
    let parked = s
        .wait_until(&e_id, |j| {
            j["state"] == "queued" && j["error"]["type"] == "budget_exceeded"
        })
        .await;
    let next_month = START_MS + 2 * DAY_MS;
    assert_eq!(
        parked["run_at"].as_str(),
        Some("2027-01-01T00:00:00.000Z"),
        "{parked}"
    );
    let events = s.events(&e_id).await;
    assert!(
        events.iter().any(|e| e["kind"] == "job.parked"),
        "{events:?}"
    );
    clock.advance(next_month - clock_now(&clock));
    let e = s.wait_terminal(&e_id).await;
    assert_eq!(e["state"], "completed", "{e}");
    assert_eq!(ledger_calls(&s).await, 9);

    // Usage, by day and by model.
    let (_, by_day) = s
        .get("/v1/usage?group_by=day&from=2026-12-01&to=2027-02-01")
        .await;
    let days: Vec<(&str, i64)> = by_day["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["group"].as_str().unwrap(), d["calls"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        days,
        [("2026-12-30", 5), ("2026-12-31", 3), ("2027-01-01", 1)]
    );
    assert_eq!(by_day["total"]["jobs"], 4, "{by_day}");
    let cost = by_day["total"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 9.0 * CALL).abs() < 1e-9, "{by_day}");
    let (_, by_model) = s
        .get("/v1/usage?group_by=model&from=2026-12-01&to=2100-01-01")
        .await;
    assert_eq!(by_model["data"].as_array().unwrap().len(), 1, "{by_model}");
    let (status, bad) = s.get("/v1/usage?group_by=hour").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // Alerts: once each. Day 1: job a above two calls (its 3rd call), 50 % (3rd), 80 %
    // (4th) and 100 % (5th) of the day, 50 % of the month (4th: 4,200); job b made only
    // two. Day 2: 80 % (7th) and 100 % (8th) of the month, 50 % of the day (8th), job d
    // above two calls (8th). Day 3 (a new month): nothing.
    let (_, alerts) = s.get("/v1/alerts").await;
    let mut keys: Vec<String> = alerts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    let mut want = vec![
        format!("job:{}", a["id"].as_str().unwrap()),
        format!("job:{}", d["id"].as_str().unwrap()),
        "budget:project:day:2026-12-30:50".into(),
        "budget:project:day:2026-12-30:80".into(),
        "budget:project:day:2026-12-30:100".into(),
        "budget:project:month:2026-12:50".into(),
        "budget:project:day:2026-12-31:50".into(),
        "budget:project:month:2026-12:80".into(),
        "budget:project:month:2026-12:100".into(),
    ];
    want.sort();
    assert_eq!(keys, want, "{alerts}");
    let a_events = s.events(a["id"].as_str().unwrap()).await;
    assert!(
        a_events.iter().any(|e| e["kind"] == "cost.alert"),
        "the alert is in the job's log: {a_events:?}"
    );
    // Each is delivered to the webhook once, signed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < want.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alerts not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = got.lock().unwrap().clone();
    let mut ids: Vec<String> = deliveries
        .iter()
        .map(|(h, body)| {
            assert!(h["baton-signature"].to_str().unwrap().starts_with("t="));
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["type"], "cost.alert", "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), want.len(), "once each");
    hook.abort();
    s.stop().await;
}

fn clock_now(clock: &ManualClock) -> i64 {
    baton_engine::Clock::now_ms(clock)
}

#[tokio::test]
async fn eight_concurrent_jobs_overshoot_the_projects_budget_by_at_most_a_call_each() {
    let mock = MockAnthropic::start().await;
    let clock = Arc::new(ManualClock::new(START_MS));
    let (s, _cred) = proxied(&mock, clock, &[("runner.max_concurrency", "8")]).await;
    let (status, p) = s
        .request_as(
            None,
            reqwest::Method::PATCH,
            "/v1/projects/default",
            Some(json!({"budget": {"day_usd": 10.0 * CALL}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(
            s.submit(calls(20)).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        let job = s.wait_terminal(id).await;
        assert_eq!(job["error"]["type"], "budget_exceeded", "{job}");
    }
    let made = ledger_calls(&s).await;
    println!("8 jobs against a budget of 10 calls made {made}");
    assert!((10..=18).contains(&made), "{made} calls");
    assert_eq!(mock.messages_requests().len() as i64, made);
    s.stop().await;
}

#[tokio::test]
async fn a_keys_and_an_agents_budgets_count_only_their_own_calls() {
    let mock = MockAnthropic::start().await;
    let clock = Arc::new(ManualClock::new(START_MS));
    let (s, _cred) = proxied(&mock, clock, &[]).await;
    let admin = crate::tenancy::admin_key(&s).await;
    let a = s.as_key(&admin);
    let (status, k) = a
        .post(
            "/v1/keys",
            json!({"project": "default", "name": "thrifty", "scopes": ["jobs:write", "usage:read"],
                "budget": {"day_usd": 2.0 * CALL}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{k}");
    assert_eq!(k["budget"]["day_usd"], 2.0 * CALL, "{k}");
    let thrifty = k["key"].as_str().unwrap().to_string();
    let key_id = k["id"].as_str().unwrap().to_string();
    let t = s.as_key(&thrifty);
    let job = t.run(calls(3)).await;
    assert_eq!(job["error"]["type"], "budget_exceeded", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("key {key_id}'s daily budget")),
        "{job}"
    );
    // The key's day is spent; another key of the project is not held back.
    assert_eq!(t.run(calls(1)).await["error"]["type"], "budget_exceeded");
    assert_eq!(a.run(calls(2)).await["state"], "completed");
    // An agent's budget.
    let (status, agent) = a
        .post(
            "/v1/agents",
            json!({"name": "spender", "prompt_template": "FAKE api_calls 3 100 50\n{{ input.x }}",
                "budget": {"day_usd": 1.5 * CALL}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, run) = a
        .post("/v1/agents/spender/runs", json!({"input": {"x": "go"}}))
        .await;
    assert!(status.is_success(), "{run}");
    let run = a.wait_terminal(run["id"].as_str().unwrap()).await;
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent spender's daily budget"),
        "{run}"
    );
    // Usage by key and by agent; the thrifty key sees its project's.
    let (status, by_key) = t
        .get("/v1/usage?group_by=key&from=2026-12-30&to=2026-12-31")
        .await;
    assert_eq!(status, StatusCode::OK, "{by_key}");
    let of = |v: &Value, group: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["group"] == group)
            .map(|d| d["calls"].as_i64().unwrap())
    };
    assert_eq!(of(&by_key, &key_id), Some(2), "{by_key}");
    let (_, by_agent) = a
        .get("/v1/usage?group_by=agent&from=2026-12-30&to=2026-12-31")
        .await;
    assert_eq!(of(&by_agent, "spender"), Some(1), "{by_agent}");
    // Another project's usage is not the key's to read; an admin's is.
    let (status, _) = t.get("/v1/usage?project=other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A key without usage:read cannot read usage.
    let (_, k) = a
        .post(
            "/v1/keys",
            json!({"project": "default", "name": "runner", "scopes": ["jobs:write"]}),
        )
        .await;
    let (status, _) = s.as_key(k["key"].as_str().unwrap()).get("/v1/usage").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.stop().await;
}

/// A token that is no attempt's gets the API's 401 from the proxy, nothing goes upstream,
/// and the refusal is in the audit log.
#[tokio::test]
async fn a_forged_token_at_the_proxy_is_refused_and_audited() {
    let mock = MockAnthropic::start().await;
    let clock = Arc::new(ManualClock::new(START_MS));
    let (s, _cred) = proxied(&mock, clock, &[]).await;
    let job = s.run(json!({"prompt": "FAKE echo_env\nwhere"})).await;
    let seen: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    let base = seen["base_url"].as_str().unwrap().to_string();
    let old = seen["api_key"].as_str().unwrap().to_string();
    for token in ["btk-forged", old.as_str()] {
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", token)
            .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "a dead attempt's token too"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    }
    assert!(mock.messages_requests().is_empty(), "nothing went upstream");
    let (_, audit) = s.get("/v1/audit?action=proxy.refuse").await;
    let records = audit["data"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{audit}");
    assert_eq!(records[0]["outcome"], "authentication_error");
    assert!(
        !audit.to_string().contains(&old),
        "the token is not in the record"
    );
    s.stop().await;
}
