//! Routines: the hosted fire contract (seed 002) with every row of its error table, cron
//! triggers driven by an injected clock (two nodes on PostgreSQL through a day, catch-up,
//! overlap), GitHub and signed webhooks, completion callbacks, the session page, and
//! isolation between projects.

use baton_engine::ManualClock;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::Arc;

use crate::support::{Server, prompt};
use crate::tenancy::{admin_key, key_of, tenant};

const BETA: &str = "experimental-cc-routine-2026-04-01";
const MINUTE: i64 = 60_000;
/// 2026-12-07T00:00:00Z: slots of `*/15` fall on quarter hours from here.
const MIDNIGHT: i64 = 1_796_601_600_000;

async fn routine(s: &Server, body: Value) -> Value {
    let (status, r) = s.post("/v1/routines", body).await;
    assert_eq!(status, 201, "{r}");
    assert!(r["id"].as_str().unwrap().starts_with("rtn_"), "{r}");
    r
}

async fn trigger(s: &Server, routine: &Value, body: Value) -> Value {
    let (status, t) = s
        .post(
            &format!("/v1/routines/{}/triggers", routine["id"].as_str().unwrap()),
            body,
        )
        .await;
    assert_eq!(status, 201, "{t}");
    assert!(t["id"].as_str().unwrap().starts_with("trig_"), "{t}");
    t
}

async fn runs(s: &Server, routine: &Value) -> Vec<Value> {
    let (status, r) = s
        .get(&format!(
            "/v1/routines/{}/runs?limit=500",
            routine["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{r}");
    r["data"].as_array().unwrap().clone()
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

/// A fire as the seed's callers make it; `headers` replace or drop (empty value) the
/// seed's own.
async fn fire(
    s: &Server,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut all: Vec<(String, String)> = vec![
        ("anthropic-version".into(), "2023-06-01".into()),
        ("anthropic-beta".into(), BETA.into()),
    ];
    if let Some(t) = token {
        all.push(("authorization".into(), format!("Bearer {t}")));
    }
    for (k, v) in headers {
        all.retain(|(name, _)| name != k);
        if !v.is_empty() {
            all.push((k.to_string(), v.to_string()));
        }
    }
    let mut req = s.http.post(url);
    for (k, v) in all {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

fn error_type(a: &Answer) -> &str {
    a.body["error"]["type"].as_str().unwrap_or_default()
}

async fn job_prompt(s: &Server, id: &str) -> String {
    let job = s
        .store
        .get_job(baton_core::JobId::parse(id).unwrap())
        .await
        .unwrap();
    job.spec.prompt
}

/// Runs `script` with `sh -c` and `env`, off the runtime's thread (which serves it).
async fn sh(script: &str, env: Vec<(&'static str, String)>) -> String {
    let script = script.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_seed_fire_contract_and_every_row_of_its_error_table() {
    let s = Server::start().await;
    let r = routine(
        &s,
        json!({"name": "triage", "prompt": "Triage this alert.\nFAKE text triaged", "daily_allowance": 50}),
    )
    .await;
    let t = trigger(&s, &r, json!({"type": "api"})).await;
    let token = t["token"].as_str().unwrap().to_string();
    let url = t["fire_url"].as_str().unwrap().to_string();
    assert_eq!(
        url,
        format!(
            "{}/v1/claude_code/routines/{}/fire",
            s.base,
            t["id"].as_str().unwrap()
        )
    );
    // The token is shown once: the routine lists its trigger without it.
    let (_, shown) = s
        .get(&format!("/v1/routines/{}", r["id"].as_str().unwrap()))
        .await;
    assert_eq!(shown["triggers"][0]["id"], t["id"]);
    assert!(!shown.to_string().contains(&token), "{shown}");

    // The seed's curl call and its GitHub Actions step, with Baton's URL and the token.
    if crate::support::have("curl", "the seed's own curl calls") {
        let first = sh(
            r#"curl -sS -X POST "$ROUTINE_URL" \
  -H "Authorization: Bearer $ROUTINE_TOKEN" \
  -H "anthropic-version: 2023-06-01" \
  -H "anthropic-beta: experimental-cc-routine-2026-04-01" \
  -H "Content-Type: application/json" \
  -d '{"text": "Sentry alert SEN-4521 fired in prod. Stack trace attached."}'"#,
            vec![
                ("ROUTINE_URL", url.clone()),
                ("ROUTINE_TOKEN", token.clone()),
            ],
        )
        .await;
        let first: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(first["type"], "routine_fire", "{first}");
        let ci = sh(
            r#"curl -X POST "$ROUTINE_FIRE_URL" \
  -H "Authorization: Bearer $ROUTINE_FIRE_TOKEN" \
  -H "anthropic-version: 2023-06-01" \
  -H "anthropic-beta: experimental-cc-routine-2026-04-01" \
  -H "Content-Type: application/json" \
  -d "{\"text\": \"CI failed: $GITHUB_WORKFLOW run $GITHUB_RUN_ID on $GITHUB_REF\"}""#,
            vec![
                ("ROUTINE_FIRE_URL", url.clone()),
                ("ROUTINE_FIRE_TOKEN", token.clone()),
                ("GITHUB_WORKFLOW", "build".into()),
                ("GITHUB_RUN_ID", "4242".into()),
                ("GITHUB_REF", "refs/heads/main".into()),
            ],
        )
        .await;
        let ci: Value = serde_json::from_str(&ci).unwrap();
        let session = ci["claude_code_session_id"].as_str().unwrap();
        assert!(session.starts_with("session_"), "{ci}");
        assert_eq!(
            ci["claude_code_session_url"],
            format!("{}/ui/sessions/{session}", s.base)
        );
        let run = runs(&s, &r)
            .await
            .into_iter()
            .find(|x| x["claude_code_session_id"] == session)
            .unwrap();
        let job = s.wait_terminal(run["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["result"], "triaged");
        let text = job_prompt(&s, run["job_id"].as_str().unwrap()).await;
        assert_eq!(
            text,
            "Triage this alert.\nFAKE text triaged\n\nCI failed: build run 4242 on refs/heads/main"
        );
    }

    // A fire answers once the run is queued, before it ends.
    let ok = fire(
        &s,
        &url,
        Some(&token),
        Some(json!({"text": "{{ not a template }}", "ignored": 1})),
        &[],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ok_keys: Vec<&String> = ok.body.as_object().unwrap().keys().collect();
    assert_eq!(
        ok_keys,
        ["claude_code_session_id", "claude_code_session_url", "type"]
    );
    let run = runs(&s, &r)
        .await
        .into_iter()
        .find(|x| x["claude_code_session_id"] == ok.body["claude_code_session_id"])
        .unwrap();
    assert!(
        job_prompt(&s, run["job_id"].as_str().unwrap())
            .await
            .ends_with("\n\n{{ not a template }}"),
        "the text is a literal string"
    );
    // No body at all is a fire too; so is exactly 65,536 characters.
    assert_eq!(fire(&s, &url, Some(&token), None, &[]).await.status, 200);
    let most = "x".repeat(65_536);
    assert_eq!(
        fire(&s, &url, Some(&token), Some(json!({"text": most})), &[])
            .await
            .status,
        200
    );

    // 400: the beta header missing, wrong, or the version missing; text too long.
    for headers in [
        vec![("anthropic-beta", "")],
        vec![("anthropic-beta", "some-other-beta-2025-01-01")],
        vec![("anthropic-version", "")],
    ] {
        let a = fire(&s, &url, Some(&token), Some(json!({"text": "x"})), &headers).await;
        assert_eq!(
            (a.status, error_type(&a)),
            (400, "invalid_request_error"),
            "{headers:?}: {}",
            a.body
        );
    }
    let both = fire(
        &s,
        &url,
        Some(&token),
        None,
        &[("anthropic-beta", &format!("other-beta, {BETA}"))],
    )
    .await;
    assert_eq!(
        both.status, 200,
        "a list that includes the beta: {}",
        both.body
    );
    let long = fire(
        &s,
        &url,
        Some(&token),
        Some(json!({"text": "x".repeat(65_537)})),
        &[],
    )
    .await;
    assert_eq!(
        (long.status, error_type(&long)),
        (400, "invalid_request_error")
    );
    assert!(
        long.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536")
    );
    // 401: no token, or another routine's token.
    let none = fire(&s, &url, None, None, &[]).await;
    assert_eq!(
        (none.status, error_type(&none)),
        (401, "authentication_error")
    );
    let other = routine(&s, json!({"name": "other", "prompt": "FAKE text other"})).await;
    let other_t = trigger(&s, &other, json!({"type": "api"})).await;
    let wrong = fire(
        &s,
        &url,
        Some(other_t["token"].as_str().unwrap()),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (wrong.status, error_type(&wrong)),
        (401, "authentication_error")
    );
    // 404: no such routine.
    let missing = fire(
        &s,
        &format!("{}/v1/claude_code/routines/trig_nope/fire", s.base),
        Some(&token),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (missing.status, error_type(&missing)),
        (404, "not_found_error")
    );
    // 400: paused.
    let rid = r["id"].as_str().unwrap();
    let (status, paused) = s
        .post(&format!("/v1/routines/{rid}/pause"), json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), paused["paused"].as_bool()),
        (200, Some(true))
    );
    let p = fire(&s, &url, Some(&token), None, &[]).await;
    assert_eq!((p.status, error_type(&p)), (400, "invalid_request_error"));
    assert!(
        p.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("paused")
    );
    s.post(&format!("/v1/routines/{rid}/resume"), json!({}))
        .await;
    // 503: the database unavailable; nothing is queued.
    let before = runs(&s, &r).await.len();
    s.store.fault_read_only(true).await.unwrap();
    let down = fire(&s, &url, Some(&token), None, &[]).await;
    assert_eq!(
        (down.status, error_type(&down)),
        (503, "overloaded_error"),
        "{}",
        down.body
    );
    s.store.fault_read_only(false).await.unwrap();
    assert_eq!(runs(&s, &r).await.len(), before);
    // Idempotency-Key: a retried fire answers with the first one's session.
    let k1 = fire(
        &s,
        &url,
        Some(&token),
        None,
        &[("idempotency-key", "alert-77")],
    )
    .await;
    let k2 = fire(
        &s,
        &url,
        Some(&token),
        None,
        &[("idempotency-key", "alert-77")],
    )
    .await;
    assert_eq!((k1.status, k2.status), (200, 200));
    assert_eq!(k1.body, k2.body);
    assert_eq!(runs(&s, &r).await.len(), before + 1);
    // A new token revokes the old one.
    let (status, rotated) = s
        .post(
            &format!("/v1/triggers/{}/token", t["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_token = rotated["token"].as_str().unwrap();
    assert_eq!(fire(&s, &url, Some(&token), None, &[]).await.status, 401);
    assert_eq!(fire(&s, &url, Some(new_token), None, &[]).await.status, 200);
    // 429 with Retry-After: the daily allowance used.
    let used = runs(&s, &r).await.len();
    let (status, _) = s
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/routines/{rid}"),
            Some(json!({"daily_allowance": used})),
        )
        .await;
    assert_eq!(status, 200);
    let limited = fire(&s, &url, Some(new_token), None, &[]).await;
    assert_eq!(
        (limited.status, error_type(&limited)),
        (429, "rate_limit_error"),
        "{}",
        limited.body
    );
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(
        runs(&s, &r).await.len(),
        used,
        "a refused fire queues nothing"
    );
    // A removed trigger fires nothing.
    let (status, _) = s
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/triggers/{}", t["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fire(&s, &url, Some(new_token), None, &[]).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn routines_are_checked_when_saved_and_changed_by_patch() {
    let s = Server::start().await;
    for (body, needle) in [
        (json!({"prompt": "x"}), "name is required"),
        (json!({"name": "a", "prompt": "{{ input.x }}"}), "\"input\""),
        (json!({"name": "a", "prompt": "line\n{% if %}"}), "line 2"),
        (
            json!({"name": "a", "prompt": "x", "agent": "nobody"}),
            "does not exist",
        ),
        (
            json!({"name": "a", "prompt": "x", "options": {"max_turns": 0}}),
            "max_turns",
        ),
        (
            json!({"name": "a", "prompt": "x", "daily_allowance": 0}),
            "daily_allowance",
        ),
        (
            json!({"name": "a", "prompt": "x", "callback_url": "ftp://x"}),
            "http",
        ),
        (
            json!({"name": "a", "prompt": "x", "callback_url": "http://10.0.0.1/x"}),
            "not a public address",
        ),
        (
            json!({"name": "a", "prompt": "x", "surprise": 1}),
            "unknown field",
        ),
    ] {
        let (status, e) = s.post("/v1/routines", body.clone()).await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    let r = routine(&s, json!({"name": "nightly", "prompt": "FAKE text n"})).await;
    let rid = r["id"].as_str().unwrap();
    let (status, dup) = s
        .post("/v1/routines", json!({"name": "nightly", "prompt": "x"}))
        .await;
    assert_eq!(status, 409, "{dup}");
    for (body, needle) in [
        (json!({"type": "cron", "schedule": "* * *"}), "3 fields"),
        (
            json!({"type": "cron", "schedule": "0 0 31 2 *"}),
            "never fires",
        ),
        (
            json!({"type": "cron", "schedule": "*/10 * * * * *"}),
            "min_cron_interval",
        ),
        (
            json!({"type": "cron", "schedule": "0 * * * *", "timezone": "Mars/Base"}),
            "time zone",
        ),
        (json!({"type": "webhook", "secret": "short"}), "16 to 256"),
        (
            json!({"type": "github", "secret": "0123456789abcdef", "events": ["Pull Request"]}),
            "event name",
        ),
        (json!({"type": "email"}), "unknown variant"),
    ] {
        let (status, e) = s
            .post(&format!("/v1/routines/{rid}/triggers"), body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    let (_, after) = s.get(&format!("/v1/routines/{rid}")).await;
    assert_eq!(after["triggers"], json!([]), "every refusal wrote nothing");
    // A cron trigger shows its next fire times.
    let t = trigger(
        &s,
        &r,
        json!({"type": "cron", "schedule": "0 9 * * 1-5", "timezone": "Europe/Berlin"}),
    )
    .await;
    assert_eq!(t["upcoming"].as_array().unwrap().len(), 5, "{t}");
    assert!(
        t["upcoming"][0].as_str().unwrap().contains("T08:00:00")
            || t["upcoming"][0].as_str().unwrap().contains("T07:00:00"),
        "{t}"
    );
    // PATCH changes the fields given; null clears one.
    let (status, changed) = s
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/routines/{rid}"),
            Some(json!({"description": "d", "daily_allowance": 5})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            changed["description"].as_str(),
            changed["daily_allowance"].as_u64(),
            changed["prompt"].as_str()
        ),
        (Some("d"), Some(5), Some("FAKE text n"))
    );
    let (_, cleared) = s
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/routines/{rid}"),
            Some(json!({"daily_allowance": null})),
        )
        .await;
    assert_eq!(cleared["daily_allowance"], 1000);
    let (status, _) = s
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/routines/{rid}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.get(&format!("/v1/routines/{rid}")).await;
    assert_eq!(status, 404);
    s.stop().await;
}

/// Two nodes on one PostgreSQL database, one clock driven through a day of `*/15`: each
/// of the 96 slots fires exactly once, whichever node's step gets there first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_fire_each_slot_of_a_day_exactly_once() {
    let Some(db) = baton_store::testing::postgres_or_skip("cron_two_nodes").await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(MIDNIGHT));
    let overrides = [("store.database_url", db.url.as_str())];
    let a = Server::with_clock(&overrides, clock.clone()).await;
    let b = Server::with_clock(&overrides, clock.clone()).await;
    let r = routine(&a, json!({"name": "quarterly", "prompt": "FAKE text tick"})).await;
    trigger(
        &a,
        &r,
        json!({"type": "cron", "schedule": "*/15 * * * *", "overlap": "allow"}),
    )
    .await;
    for _ in 0..96 {
        clock.advance(15 * MINUTE);
        let (x, y) = tokio::join!(
            baton_api::routines::cron_step(&a.state),
            baton_api::routines::cron_step(&b.state)
        );
        x.unwrap();
        y.unwrap();
    }
    let fired = runs(&b, &r).await;
    let mut slots: Vec<String> = fired
        .iter()
        .map(|f| f["scheduled_at"].as_str().unwrap().to_string())
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!((fired.len(), slots.len()), (96, 96), "each slot once");
    assert_eq!(slots[0], "2026-12-07T00:15:00.000Z");
    assert_eq!(slots[95], "2026-12-08T00:00:00.000Z");
    assert!(
        fired
            .iter()
            .all(|f| f["outcome"] == "queued" && f["job_id"].is_string())
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn after_downtime_a_missed_slot_fires_once_with_catch_up_and_never_without() {
    let clock = Arc::new(ManualClock::new(MIDNIGHT));
    let s = Server::with_clock(
        &[
            ("runner.lease_seconds", "36000"),
            ("limits.min_cron_interval_seconds", "1"),
        ],
        clock.clone(),
    )
    .await;
    // A short outage (within the grace): every slot it passed still fires, once.
    let every_second = routine(&s, json!({"name": "every-second", "prompt": "FAKE text s"})).await;
    trigger(
        &s,
        &every_second,
        json!({"type": "cron", "schedule": "* * * * * *", "overlap": "allow"}),
    )
    .await;
    clock.advance(5_000);
    baton_api::routines::cron_step(&s.state).await.unwrap();
    let mut slots: Vec<String> = runs(&s, &every_second)
        .await
        .iter()
        .map(|r| r["scheduled_at"].as_str().unwrap().to_string())
        .collect();
    slots.sort();
    assert_eq!(
        slots,
        (1..=5)
            .map(|k| format!("2026-12-07T00:00:0{k}.000Z"))
            .collect::<Vec<_>>()
    );
    s.request(
        reqwest::Method::DELETE,
        &format!("/v1/routines/{}", every_second["id"].as_str().unwrap()),
        None,
    )
    .await;
    let skip = routine(&s, json!({"name": "no-catch-up", "prompt": "FAKE text a"})).await;
    trigger(
        &s,
        &skip,
        json!({"type": "cron", "schedule": "*/15 * * * *"}),
    )
    .await;
    let catch = routine(&s, json!({"name": "catch-up", "prompt": "FAKE text b"})).await;
    trigger(
        &s,
        &catch,
        json!({"type": "cron", "schedule": "*/15 * * * *", "catch_up": true}),
    )
    .await;
    // Down for two hours: eight slots missed.
    clock.advance(2 * 60 * MINUTE + 5 * MINUTE);
    baton_api::routines::cron_step(&s.state).await.unwrap();
    assert_eq!(runs(&s, &skip).await.len(), 0, "missed slots do not fire");
    let caught = runs(&s, &catch).await;
    assert_eq!(caught.len(), 1, "{caught:?}");
    assert_eq!(
        caught[0]["scheduled_at"], "2026-12-07T02:00:00.000Z",
        "the latest missed slot"
    );
    // Both go on from the next slot, once each.
    clock.advance(10 * MINUTE);
    baton_api::routines::cron_step(&s.state).await.unwrap();
    baton_api::routines::cron_step(&s.state).await.unwrap();
    assert_eq!(runs(&s, &skip).await.len(), 1);
    assert_eq!(runs(&s, &catch).await.len(), 2);
    assert_eq!(
        runs(&s, &skip).await[0]["scheduled_at"],
        "2026-12-07T02:15:00.000Z"
    );
    s.stop().await;
}

#[tokio::test]
async fn overlap_skip_passes_a_slot_and_queue_waits_for_the_previous_run() {
    let clock = Arc::new(ManualClock::new(MIDNIGHT));
    let s = Server::with_clock(&[("runner.lease_seconds", "36000")], clock.clone()).await;
    let slow = "FAKE sleep 60000\nFAKE text slow";
    let skip = routine(&s, json!({"name": "skipper", "prompt": slow})).await;
    trigger(
        &s,
        &skip,
        json!({"type": "cron", "schedule": "* * * * *", "overlap": "skip"}),
    )
    .await;
    let queue = routine(&s, json!({"name": "queuer", "prompt": slow})).await;
    trigger(
        &s,
        &queue,
        json!({"type": "cron", "schedule": "* * * * *", "overlap": "queue"}),
    )
    .await;
    let step = || baton_api::routines::cron_step(&s.state);
    clock.advance(MINUTE);
    step().await.unwrap();
    clock.advance(MINUTE);
    step().await.unwrap();
    let skipped = runs(&s, &skip).await;
    assert_eq!(
        skipped
            .iter()
            .map(|r| r["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["skipped", "queued"],
        "newest first: {skipped:?}"
    );
    let queued = runs(&s, &queue).await;
    assert_eq!(
        queued
            .iter()
            .map(|r| r["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["waiting", "queued"]
    );
    assert!(queued[0]["job_id"].is_null());
    // The first run ends: the waiting one is queued, and only then.
    let first = queued[1]["job_id"].as_str().unwrap().to_string();
    step().await.unwrap();
    assert_eq!(runs(&s, &queue).await[0]["outcome"], "waiting");
    s.post(&format!("/v1/jobs/{first}/cancel"), json!({})).await;
    s.wait_terminal(&first).await;
    step().await.unwrap();
    let released = runs(&s, &queue).await;
    assert_eq!(released[0]["outcome"], "queued", "{released:?}");
    assert!(released[0]["job_id"].is_string());
    for r in runs(&s, &skip)
        .await
        .into_iter()
        .chain(runs(&s, &queue).await)
    {
        if let Some(id) = r["job_id"].as_str() {
            s.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
        }
    }
    s.stop().await;
}

fn sign(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn hook(s: &Server, url: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = s
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_github_delivery_signed_as_github_signs_starts_one_run_with_the_pr_in_its_prompt() {
    let s = Server::with(&[("limits.max_webhook_bytes", "4096")]).await;
    let secret = "gh-webhook-secret-0123456789";
    let r = routine(
        &s,
        json!({"name": "pr-review", "prompt": "Review PR #{{ event.pull_request.number }}: {{ event.pull_request.title }}\nFAKE text reviewed"}),
    )
    .await;
    let t = trigger(
        &s,
        &r,
        json!({"type": "github", "secret": secret, "events": ["pull_request.opened"]}),
    )
    .await;
    assert!(
        !t.to_string().contains(secret),
        "the secret is never shown: {t}"
    );
    let url = t["hook_url"].as_str().unwrap().to_string();
    let payload = json!({"action": "opened", "number": 7,
        "pull_request": {"number": 7, "title": "Fix the flux capacitor"},
        "repository": {"full_name": "acme/app"}})
    .to_string();
    let gh = |event: &str, delivery: &str, body: &str| {
        vec![
            ("x-github-event", event.to_string()),
            ("x-github-delivery", delivery.to_string()),
            ("x-hub-signature-256", sign(secret, &[body.as_bytes()])),
            ("user-agent", "GitHub-Hookshot/abc123".to_string()),
        ]
    };
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let (status, first) = hook(
        &s,
        &url,
        payload.as_bytes(),
        &gh("pull_request", delivery, &payload),
    )
    .await;
    assert_eq!(
        (status, first["status"].as_str()),
        (202, Some("queued")),
        "{first}"
    );
    let job_id = first["job_id"].as_str().unwrap().to_string();
    let job = s.wait_terminal(&job_id).await;
    assert_eq!(job["result"], "reviewed");
    assert!(
        job_prompt(&s, &job_id)
            .await
            .starts_with("Review PR #7: Fix the flux capacitor")
    );
    // The same delivery again (GitHub's redeliver) starts nothing.
    let (status, again) = hook(
        &s,
        &url,
        payload.as_bytes(),
        &gh("pull_request", delivery, &payload),
    )
    .await;
    assert_eq!(
        (status, again["status"].as_str(), again["job_id"].as_str()),
        (202, Some("duplicate"), Some(job_id.as_str()))
    );
    // Filtered events, ping, bad or missing signatures, a payload over the limit.
    let closed = payload.replace("opened", "closed");
    let (status, ignored) = hook(
        &s,
        &url,
        closed.as_bytes(),
        &gh("pull_request", "d-2", &closed),
    )
    .await;
    assert_eq!((status, ignored["status"].as_str()), (202, Some("ignored")));
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string();
    let (status, pong) = hook(&s, &url, ping.as_bytes(), &gh("ping", "d-3", &ping)).await;
    assert_eq!((status, pong["status"].as_str()), (202, Some("pong")));
    let mut forged = gh("pull_request", "d-4", &payload);
    forged[2].1 = sign("not-the-secret-at-all", &[payload.as_bytes()]);
    let (status, e) = hook(&s, &url, payload.as_bytes(), &forged).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (401, Some("authentication_error"))
    );
    let mut unsigned = gh("pull_request", "d-5", &payload);
    unsigned.remove(2);
    assert_eq!(hook(&s, &url, payload.as_bytes(), &unsigned).await.0, 401);
    let big = json!({"action": "opened", "pull_request": {"title": "x".repeat(5000), "number": 1}})
        .to_string();
    assert_eq!(
        hook(&s, &url, big.as_bytes(), &gh("pull_request", "d-6", &big))
            .await
            .0,
        413
    );
    // The same bytes under another delivery id and event name: a replay, nothing starts.
    let (status, replayed) = hook(
        &s,
        &url,
        payload.as_bytes(),
        &gh("pull_request", "someone-elses-id", &payload),
    )
    .await;
    assert_eq!(
        (status, replayed["status"].as_str()),
        (202, Some("duplicate"))
    );
    assert_eq!(runs(&s, &r).await.len(), 1, "only the first delivery ran");
    let (status, _) = hook(&s, &format!("{}/v1/hooks/trig_nope", s.base), b"{}", &[]).await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_signed_webhook_fires_once_within_its_time_tolerance() {
    let s = Server::start().await;
    let secret = "webhook-secret-abcdefghijkl";
    let r = routine(
        &s,
        json!({"name": "alerts", "prompt": "Alert {{ event.alert }}\nFAKE text ok"}),
    )
    .await;
    let t = trigger(
        &s,
        &r,
        json!({"type": "webhook", "secret": secret, "tolerance_seconds": 60}),
    )
    .await;
    let url = t["hook_url"].as_str().unwrap().to_string();
    let body = json!({"alert": "disk full"}).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = |ts: u64| {
        vec![
            ("x-baton-timestamp", ts.to_string()),
            (
                "x-baton-signature",
                sign(secret, &[ts.to_string().as_bytes(), b".", body.as_bytes()]),
            ),
        ]
    };
    let (status, stale) = hook(&s, &url, body.as_bytes(), &signed(now - 600)).await;
    assert_eq!(status, 401, "{stale}");
    let (status, ok) = hook(&s, &url, body.as_bytes(), &signed(now)).await;
    assert_eq!(
        (status, ok["status"].as_str()),
        (202, Some("queued")),
        "{ok}"
    );
    let job = s.wait_terminal(ok["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "completed");
    assert!(
        job_prompt(&s, ok["job_id"].as_str().unwrap())
            .await
            .starts_with("Alert disk full")
    );
    let (status, replay) = hook(&s, &url, body.as_bytes(), &signed(now)).await;
    assert_eq!(
        (status, replay["status"].as_str()),
        (202, Some("duplicate")),
        "a replayed request starts nothing"
    );
    assert_eq!(runs(&s, &r).await.len(), 1);
    // A sender that names its deliveries signs the id with the rest: a retry re-signed
    // later starts nothing, and an id changed by a replayer breaks the signature.
    let body2 = json!({"alert": "cpu hot"}).to_string();
    let with_id = |ts: u64, id: &str| {
        vec![
            ("x-baton-timestamp", ts.to_string()),
            ("x-baton-delivery", id.to_string()),
            (
                "x-baton-signature",
                sign(
                    secret,
                    &[
                        ts.to_string().as_bytes(),
                        b".",
                        id.as_bytes(),
                        b".",
                        body2.as_bytes(),
                    ],
                ),
            ),
        ]
    };
    let (status, first) = hook(&s, &url, body2.as_bytes(), &with_id(now, "alert-9")).await;
    assert_eq!(
        (status, first["status"].as_str()),
        (202, Some("queued")),
        "{first}"
    );
    let (status, retry) = hook(&s, &url, body2.as_bytes(), &with_id(now + 1, "alert-9")).await;
    assert_eq!((status, retry["status"].as_str()), (202, Some("duplicate")));
    let mut forged = with_id(now, "alert-9");
    forged[1].1 = "alert-10".into();
    assert_eq!(hook(&s, &url, body2.as_bytes(), &forged).await.0, 401);
    assert_eq!(runs(&s, &r).await.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn callbacks_reach_a_receiver_that_was_down_signed_and_private_addresses_are_refused() {
    let clock = Arc::new(ManualClock::new(MIDNIGHT));
    let s = Server::with_clock(&[("outbound.allow", "[\"127.0.0.1/32\"]")], clock.clone()).await;
    // A port nobody listens on yet: the receiver is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("http://127.0.0.1:{port}/hook");
    for refused in [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "http://[::1]:9/x",
        "http://192.168.0.1/",
    ] {
        let (status, e) = s
            .post("/v1/jobs", json!({"prompt": "x", "callback_url": refused}))
            .await;
        assert_eq!(status, 400, "{refused}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a public address"),
            "{e}"
        );
    }
    let (status, secret) = s.post("/v1/callbacks/secret", json!({})).await;
    assert_eq!(status, 200, "{secret}");
    let secret = secret["secret"].as_str().unwrap().to_string();
    let mut body = prompt("FAKE text called back");
    body["callback_url"] = json!(target);
    let job = s.run(body).await;
    assert_eq!(job["callback_url"], json!(target));
    let id = job["id"].as_str().unwrap().to_string();
    let step = || baton_api::callbacks::deliver_step(&s.state);
    step().await.unwrap();
    let (_, cbs) = s.get(&format!("/v1/jobs/{id}/callbacks")).await;
    let cb = &cbs["data"][0];
    assert_eq!(
        (cb["state"].as_str(), cb["attempts"].as_u64()),
        (Some("pending"), Some(1)),
        "{cbs}"
    );
    assert!(
        cb["last_error"].as_str().unwrap().contains("connect"),
        "{cb}"
    );
    // Down for a while: each try fails and the wait grows.
    clock.advance(11_000);
    step().await.unwrap();
    clock.advance(25_000);
    step().await.unwrap();
    let (_, cbs) = s.get(&format!("/v1/jobs/{id}/callbacks")).await;
    assert_eq!(cbs["data"][0]["attempts"], 3, "{cbs}");
    // Up again: the next try gets through, once.
    let got: crate::support::Received = Arc::default();
    let server = crate::support::receiver(port, "/hook", got.clone()).await;
    step().await.unwrap();
    assert!(got.lock().unwrap().is_empty(), "not before its time");
    clock.advance(60_000);
    step().await.unwrap();
    step().await.unwrap();
    let deliveries = got.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let (headers, body) = &deliveries[0];
    let delivery = headers["baton-delivery"].to_str().unwrap();
    assert_eq!(delivery, cb["id"].as_str().unwrap());
    let sig = headers["baton-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    assert_eq!(
        format!("sha256={v1}"),
        sign(&secret, &[t.as_bytes(), b".", body.as_bytes()]),
        "the receiver can verify the signature"
    );
    let summary: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (
            summary["type"].as_str(),
            summary["job"]["id"].as_str(),
            summary["job"]["result"].as_str()
        ),
        (Some("job.ended"), Some(id.as_str()), Some("called back"))
    );
    let (_, cbs) = s.get(&format!("/v1/jobs/{id}/callbacks")).await;
    assert_eq!(
        (
            cbs["data"][0]["state"].as_str(),
            cbs["data"][0]["last_status"].as_i64()
        ),
        (Some("delivered"), Some(200))
    );
    server.abort();
    s.stop().await;
}

#[tokio::test]
async fn the_session_page_follows_a_fire_behind_a_cookie_sign_in() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let ka = tenant(&s, &admin, "team-a").await;
    let kb = tenant(&s, &admin, "team-b").await;
    let writer = key_of(&s, &admin, "team-a", &["routines:write", "jobs:write"]).await;
    let w = s.as_key(&writer);
    let (status, r) = w
        .post(
            "/v1/routines",
            json!({"name": "r", "prompt": "<b>bold</b>\nFAKE text page"}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (_, t) = w
        .post(
            &format!("/v1/routines/{}/triggers", r["id"].as_str().unwrap()),
            json!({"type": "api"}),
        )
        .await;
    let fired = fire(
        &s,
        t["fire_url"].as_str().unwrap(),
        t["token"].as_str(),
        None,
        &[],
    )
    .await;
    assert_eq!(fired.status, 200, "{}", fired.body);
    let page_url = fired.body["claude_code_session_url"]
        .as_str()
        .unwrap()
        .to_string();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Not signed in: to the sign-in form.
    let resp = browser.get(&page_url).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login?next=/ui/sessions/")
    );
    // The form sets its CSRF cookie; a post without it is refused.
    let form = browser
        .get(format!("{}/ui/login", s.base))
        .send()
        .await
        .unwrap();
    let csrf_cookie = form.headers()["set-cookie"].to_str().unwrap().to_string();
    let csrf = csrf_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let html = form.text().await.unwrap();
    assert!(html.contains(&csrf));
    let login = |key: String, cookie: Option<String>, token: String| {
        let mut req = browser
            .post(format!("{}/ui/login", s.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "key={key}&csrf={token}&next=/ui/sessions/{}",
                fired.body["claude_code_session_id"].as_str().unwrap()
            ));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let refused = login(ka.clone(), None, csrf.clone()).await.unwrap();
    assert_eq!(refused.status(), 403, "no CSRF cookie");
    let bad = login(
        "bk_nope_nope".into(),
        Some(format!("baton_csrf={csrf}")),
        csrf.clone(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    let ok = login(ka.clone(), Some(format!("baton_csrf={csrf}")), csrf.clone())
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session_cookie = set.split(';').next().unwrap().to_string();
    let secret_part = ka.rsplit('_').next().unwrap();
    assert!(
        !session_cookie.contains(secret_part),
        "the cookie holds no secret"
    );
    let page = browser
        .get(&page_url)
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("nonce-")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("&lt;b&gt;bold&lt;/b&gt;"),
        "the prompt is escaped"
    );
    assert!(!html.contains("<b>bold</b>"));
    // A running fire's page follows it and offers a cancel, which needs the page's token.
    let (_, slow) = w
        .post(
            "/v1/routines",
            json!({"name": "slow", "prompt": "FAKE sleep 60000"}),
        )
        .await;
    let (_, st) = w
        .post(
            &format!("/v1/routines/{}/triggers", slow["id"].as_str().unwrap()),
            json!({"type": "api"}),
        )
        .await;
    let slow_fire = fire(
        &s,
        st["fire_url"].as_str().unwrap(),
        st["token"].as_str(),
        None,
        &[],
    )
    .await;
    let slow_url = slow_fire.body["claude_code_session_url"].as_str().unwrap();
    let html = browser
        .get(slow_url)
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("new EventSource('/ui/jobs/"), "{html}");
    let action = html
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert!(
        action.starts_with("/ui/jobs/") && action.ends_with("/cancel"),
        "{action}"
    );
    let token = html
        .split("name=csrf value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let cancel = |csrf: String| {
        browser
            .post(format!("{}{action}", s.base))
            .header("cookie", &session_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
    };
    assert_eq!(cancel("forged".into()).await.unwrap().status(), 403);
    assert_eq!(cancel(token).await.unwrap().status(), 303);
    let job_id = action
        .trim_start_matches("/ui/jobs/")
        .trim_end_matches("/cancel");
    let cancelled = s.as_key(&ka).wait_terminal(job_id).await;
    assert_eq!(cancelled["state"], "cancelled");
    let (_, audit) = s
        .as_key(&admin)
        .get("/v1/audit?project=team-a&action=job.cancel")
        .await;
    assert_eq!(audit["data"][0]["route"], "/ui/jobs/{id}/cancel", "{audit}");

    // Another project's browser sees no such session.
    let form = browser
        .get(format!("{}/ui/login", s.base))
        .send()
        .await
        .unwrap();
    let csrf_b = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let b_login = login(
        kb.clone(),
        Some(format!("baton_csrf={csrf_b}")),
        csrf_b.clone(),
    )
    .await
    .unwrap();
    let b_cookie = b_login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let other = browser
        .get(&page_url)
        .header("cookie", &b_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    // Signing out needs the page's CSRF token.
    let out = browser
        .post(format!("{}/ui/logout", s.base))
        .header("cookie", &session_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 403);
    // A revoked key's browser session ends with it.
    let key_id = ka.strip_prefix("bk_").unwrap().split('_').next().unwrap();
    let (status, _) = s
        .as_key(&admin)
        .request(reqwest::Method::DELETE, &format!("/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(baton_api::auth::KEY_TTL).await;
    let gone = browser
        .get(&page_url)
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 303);
    s.stop().await;
}

/// Routines, triggers, runs, fires, hooks and callbacks of project A are not B's: every
/// route answers B as if they did not exist, and a trigger's token is no key.
#[tokio::test]
async fn routines_of_one_project_are_invisible_to_another_and_need_their_scope() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let writer_a = key_of(&s, &admin, "default", &["routines:write", "jobs:write"]).await;
    let ka = tenant(&s, &admin, "team-a").await;
    let kb = tenant(&s, &admin, "team-b").await;
    let ra = key_of(&s, &admin, "team-a", &["routines:write"]).await;
    let (a, b) = (s.as_key(&ra), s.as_key(&kb));
    // Scopes: jobs:write cannot make routines; routines:write can.
    let (status, _) = s
        .as_key(&ka)
        .post("/v1/routines", json!({"name": "x", "prompt": "p"}))
        .await;
    assert_eq!(status, 403);
    let (status, r) = a
        .post(
            "/v1/routines",
            json!({"name": "mine", "prompt": "FAKE text a"}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let rid = r["id"].as_str().unwrap();
    let (_, t) = a
        .post(
            &format!("/v1/routines/{rid}/triggers"),
            json!({"type": "api"}),
        )
        .await;
    let tid = t["id"].as_str().unwrap();
    let token = t["token"].as_str().unwrap();
    let fired = fire(&s, t["fire_url"].as_str().unwrap(), Some(token), None, &[]).await;
    assert_eq!(fired.status, 200);
    let job_id = s
        .as_key(&ka)
        .get(&format!("/v1/routines/{rid}/runs"))
        .await
        .1["data"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // B: every routine route is a 404, as for an id that does not exist.
    for (method, path) in [
        ("GET", format!("/v1/routines/{rid}")),
        ("PATCH", format!("/v1/routines/{rid}")),
        ("DELETE", format!("/v1/routines/{rid}")),
        ("POST", format!("/v1/routines/{rid}/pause")),
        ("POST", format!("/v1/routines/{rid}/resume")),
        ("GET", format!("/v1/routines/{rid}/runs")),
        ("POST", format!("/v1/routines/{rid}/triggers")),
        ("DELETE", format!("/v1/triggers/{tid}")),
        ("POST", format!("/v1/triggers/{tid}/token")),
        ("GET", format!("/v1/jobs/{job_id}/callbacks")),
    ] {
        let body = match (method, path.ends_with("triggers")) {
            ("PATCH", _) => Some(json!({"description": "b"})),
            (_, true) => Some(json!({"type": "api"})),
            _ => None,
        };
        let (status, e) = s
            .request_as(
                Some(&kb),
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                body.clone(),
            )
            .await;
        // B's key has jobs:write only: routine changes are refused by scope first.
        assert!(
            matches!(status.as_u16(), 403 | 404),
            "{method} {path}: {status} {e}"
        );
        let (status, e) = s
            .request_as(
                Some(&writer_a),
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &path,
                body,
            )
            .await;
        assert_eq!(
            status, 404,
            "another project's routines:write key, {method} {path}: {e}"
        );
    }
    let (_, list) = b.get("/v1/routines").await;
    assert_eq!(list["data"], json!([]));
    // The trigger's token is not an API key, and fires nothing but its routine.
    let (status, _) = s.as_key(token).get("/v1/jobs").await;
    assert_eq!(status, 401);
    let (status, _) = s.as_key(token).get(&format!("/v1/routines/{rid}")).await;
    assert_eq!(status, 401);
    // The fire is in A's audit log, under its trigger.
    let (_, audit) = s
        .as_key(&admin)
        .get("/v1/audit?project=team-a&action=routine.fire")
        .await;
    assert_eq!(audit["data"][0]["key_id"], tid, "{audit}");
    let (_, audit) = s
        .as_key(&admin)
        .get("/v1/audit?project=team-a&action=routine.create")
        .await;
    let outcomes: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["201", "403"], "the refusal too: {audit}");
    s.stop().await;
}

/// `baton apply DIR` with `env`, against `s`.
async fn apply(
    s: &Server,
    dir: &std::path::Path,
    env: Vec<(&'static str, String)>,
) -> (bool, String) {
    let (base, dir) = (s.base.clone(), dir.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::baton_bin())
            .arg("apply")
            .arg(&dir)
            .args(["--server", &base])
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env_remove("BATON_API_KEY")
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn baton_apply_makes_routines_and_their_triggers_idempotently() {
    let s = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routines")).unwrap();
    let file = dir.path().join("routines/nightly.toml");
    let declared = r#"
description = "Every weekday morning"
prompt = "Summarize yesterday. FAKE text summary"
daily_allowance = 10

[[triggers]]
type = "cron"
schedule = "0 9 * * 1-5"
timezone = "Europe/Berlin"

[[triggers]]
type = "api"

[[triggers]]
type = "github"
secret_env = "NIGHTLY_HOOK_SECRET"
events = ["pull_request.opened"]
"#;
    std::fs::write(&file, declared).unwrap();
    let env = || {
        vec![(
            "NIGHTLY_HOOK_SECRET",
            "a-secret-from-the-environment".to_string(),
        )]
    };
    let (ok, out) = apply(&s, dir.path(), env()).await;
    assert!(ok, "{out}");
    assert!(out.contains("created   routine nightly"), "{out}");
    assert_eq!(out.matches("  added").count(), 3, "{out}");
    assert!(
        out.contains("token    trt_") && out.contains("(shown once)"),
        "{out}"
    );
    assert!(!out.contains("a-secret-from-the-environment"), "{out}");
    let (ok, out) = apply(&s, dir.path(), env()).await;
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        "unchanged routine nightly",
        "a second apply changes nothing"
    );
    std::fs::write(
        &file,
        declared.replace("Summarize yesterday", "Summarize today"),
    )
    .unwrap();
    let (ok, out) = apply(&s, dir.path(), env()).await;
    assert!(
        ok && out.contains("updated   routine nightly") && !out.contains("added"),
        "{out}"
    );
    let (_, list) = s.get("/v1/routines").await;
    let r = &list["data"][0];
    assert_eq!(
        (
            r["prompt"].as_str().unwrap(),
            r["triggers"].as_array().unwrap().len()
        ),
        ("Summarize today. FAKE text summary", 3)
    );
    // A secret written in the file is refused; a missing variable is named.
    std::fs::write(
        &file,
        declared.replace(
            "secret_env = \"NIGHTLY_HOOK_SECRET\"",
            "secret = \"in-the-file-0123456789\"",
        ),
    )
    .unwrap();
    let (ok, out) = apply(&s, dir.path(), env()).await;
    assert!(!ok && out.contains("secret_env"), "{out}");
    std::fs::write(&file, declared).unwrap();
    let (ok, out) = apply(&s, dir.path(), vec![]).await;
    assert!(!ok && out.contains("NIGHTLY_HOOK_SECRET"), "{out}");
    s.stop().await;
}

#[tokio::test]
async fn a_slot_whose_run_cannot_be_made_is_recorded_failed_with_its_reason() {
    let clock = Arc::new(ManualClock::new(MIDNIGHT));
    let s = Server::with_clock(&[], clock.clone()).await;
    // Parses (so it is saved), but runs out of fuel when rendered.
    let endless = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
    let r = routine(&s, json!({"name": "endless", "prompt": endless})).await;
    trigger(&s, &r, json!({"type": "cron", "schedule": "*/15 * * * *"})).await;
    clock.advance(15 * MINUTE);
    baton_api::routines::cron_step(&s.state).await.unwrap();
    let fired = runs(&s, &r).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(
        (fired[0]["outcome"].as_str(), fired[0]["job_id"].as_str()),
        (Some("failed"), None)
    );
    assert!(
        fired[0]["error"]
            .as_str()
            .unwrap()
            .contains("template_error"),
        "{fired:?}"
    );
    // The next slot is tried again, and fails the same way, once.
    baton_api::routines::cron_step(&s.state).await.unwrap();
    assert_eq!(runs(&s, &r).await.len(), 1);
    clock.advance(15 * MINUTE);
    baton_api::routines::cron_step(&s.state).await.unwrap();
    assert_eq!(runs(&s, &r).await.len(), 2);
    // A fire through the API is refused instead: 400, template_error, nothing queued.
    let t = trigger(&s, &r, json!({"type": "api"})).await;
    let a = fire(
        &s,
        t["fire_url"].as_str().unwrap(),
        t["token"].as_str(),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (a.status, error_type(&a)),
        (400, "invalid_request_error"),
        "{}",
        a.body
    );
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("template_error")
    );
    assert_eq!(runs(&s, &r).await.len(), 2);
    s.stop().await;
}
