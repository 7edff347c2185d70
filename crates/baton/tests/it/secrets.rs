//! The credential stays Baton's: with a canary credential in Baton's environment, a suite
//! of jobs that go looking for it (the CLI's environment, `/proc/self/environ`, Baton's own
//! `/proc/<pid>/environ`, the database file) finds it nowhere: not in a response, an
//! event, a log line, the ledger, the database or a workspace file; while every API call
//! reaches `mock-anthropic` with it (the proxy injects it).

use serde_json::Value;

use crate::process::{free_port, spawn_server_env, submit, wait_job, wait_ready};
use mock_anthropic::MockAnthropic;

const CANARY: &str = "sk-ant-api03-CANARY-5e1f0c9d7a3b";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| contains(&b, needle)) {
            found.push(path.display().to_string());
        }
    }
    found
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Runs the suite against a server started with `extra` settings (`sandboxed` when they
/// make a sandbox, inside which Baton's process and database do not exist); returns the
/// jobs' views.
pub(crate) async fn canary_suite(extra: &[(&str, &str)], sandboxed: bool) -> Vec<Value> {
    let mock = MockAnthropic::start().await;
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let upstream = mock.base_url();
    let mut settings = vec![
        ("proxy.upstream", upstream.as_str()),
        ("runner.keep_workspaces", "true"),
        ("server.log", "debug"),
    ];
    settings.extend_from_slice(extra);
    let server = spawn_server_env(
        dir.path(),
        roots.path(),
        free_port(),
        &settings,
        &[("ANTHROPIC_API_KEY", CANARY)],
    );
    wait_ready(&server).await;
    let pid = server.child.id();
    let db = dir.path().join("baton.db");
    let prompts = [
        "FAKE echo_env".to_string(),
        "FAKE cat /proc/self/environ".to_string(),
        format!("FAKE cat /proc/{pid}/environ"),
        format!("FAKE cat {}", db.display()),
        "FAKE api_calls 2 100 50".to_string(),
    ];
    let mut jobs = Vec::new();
    for p in &prompts {
        let id = submit(
            &server.base,
            serde_json::json!({"prompt": format!("{p}\nlook")}),
        )
        .await;
        let job = wait_job(&server.base, &id, |j| {
            matches!(j["state"].as_str(), Some("completed" | "failed" | "dead"))
        })
        .await;
        let events = get_json(&format!(
            "{}/v1/jobs/{id}/events?format=json&limit=1000",
            server.base
        ))
        .await;
        jobs.push(serde_json::json!({"job": job, "events": events}));
    }
    let usage = get_json(&format!(
        "{}/v1/usage?group_by=model&from=2000-01-01&to=2100-01-01",
        server.base
    ))
    .await;
    let audit = get_json(&format!("{}/v1/audit", server.base)).await;
    drop(server);

    // The jobs looked where they were asked to.
    let result = |i: usize| jobs[i]["job"]["result"].as_str().unwrap_or("").to_string();
    for (i, job) in jobs.iter().enumerate().take(4) {
        assert_eq!(job["job"]["state"], "completed", "{}: {job}", prompts[i]);
    }
    assert!(
        result(0).contains("btk-"),
        "the CLI has a token: {}",
        result(0)
    );
    if sandboxed {
        for i in [2, 3] {
            assert!(
                result(i).starts_with("cannot read"),
                "{}: {}",
                prompts[i],
                result(i)
            );
        }
    } else {
        assert!(
            result(3).contains("SQLite format 3"),
            "the database was read"
        );
    }
    assert_eq!(jobs[4]["job"]["state"], "completed", "{}", jobs[4]);
    // The injection works: mock-anthropic saw the canary on every call.
    let calls = mock.messages_requests();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        let key = c.headers.get("x-api-key").cloned().unwrap_or_default();
        assert!(key.contains(&mock_anthropic::fingerprint(CANARY)), "{key}");
    }
    assert_eq!(usage["total"]["calls"], 2, "{usage}");
    // And it is nowhere else.
    for (what, text) in [
        ("a job or its events", serde_json::to_string(&jobs).unwrap()),
        ("the usage", usage.to_string()),
        ("the audit log", audit.to_string()),
    ] {
        assert!(!text.contains(CANARY), "the canary is in {what}");
    }
    let log = std::fs::read(dir.path().join("stderr.log")).unwrap();
    assert!(!log.is_empty());
    assert!(!contains(&log, CANARY), "the canary is in Baton's log");
    let holding = files_holding(dir.path(), CANARY);
    assert!(
        holding.is_empty(),
        "the database, a workspace or another file holds the canary: {holding:?}"
    );
    jobs
}

#[tokio::test]
async fn a_canary_credential_reaches_the_api_and_nothing_else() {
    let jobs = canary_suite(&[], false).await;
    // Baton's own initial environment keeps the name, not the value.
    let baton_env = jobs[2]["job"]["result"].as_str().unwrap();
    assert!(baton_env.contains("ANTHROPIC_API_KEY="), "{baton_env}");
}

/// `proxy.mode = "direct"`: the credential Baton took out of its own environment still
/// reaches each CLI, as before there was a proxy.
#[tokio::test]
async fn in_direct_mode_the_cli_gets_the_credential_baton_took_from_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let server = spawn_server_env(
        dir.path(),
        roots.path(),
        free_port(),
        &[("proxy.mode", "direct")],
        &[("ANTHROPIC_API_KEY", CANARY)],
    );
    wait_ready(&server).await;
    let id = submit(
        &server.base,
        serde_json::json!({"prompt": "FAKE echo_env\nkey"}),
    )
    .await;
    let job = wait_job(&server.base, &id, |j| j["state"] == "completed").await;
    let seen: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    assert_eq!(seen["api_key"], CANARY);
    assert!(seen["base_url"].is_null(), "no proxy: {seen}");
}
