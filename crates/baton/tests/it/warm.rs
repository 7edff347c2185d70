//! Warm pools: pre-started CLIs serve matching jobs, one job each.

use serde_json::{Value, json};

use crate::support::{Server, assert_no_survivors, prompt};

async fn pool(server: &Server) -> Value {
    let (_, health) = server.get("/v1/health").await;
    health["warm_pools"][0].clone()
}

async fn wait_pool(server: &Server, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let p = pool(server).await;
        if done(&p) {
            return p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "the warm pool never reached the expected state: {}",
        pool(server).await
    );
}

/// Processes whose working directory is inside `dir`: what a server left running there.
fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
        .collect()
}

#[tokio::test]
async fn matching_jobs_run_warm_others_cold_and_the_pool_refills() {
    let server = Server::with(&[(
        "warm_pool",
        r#"[{size = 1, options = {allowed_tools = ["Read"]}}]"#,
    )])
    .await;
    wait_pool(&server, |p| p["ready"] == 1).await;

    let job = server
        .run(json!({"prompt": "FAKE echo_env\nhello warm", "allowed_tools": ["Read"], "max_attempts": 1}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["attempts"][0]["warm"], true, "{job}");
    let seen: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    assert!(seen["argv"].to_string().contains("stream-json"), "{seen}");
    assert!(
        seen["prompt"].as_str().unwrap().contains("hello warm"),
        "the prompt reached it: {seen}"
    );
    assert_no_survivors(&job);

    // Different options: cold. The pool refills behind the warm job.
    let cold = server
        .run(json!({"prompt": "FAKE text cold", "allowed_tools": ["Bash"], "max_attempts": 1}))
        .await;
    assert_eq!(cold["state"], "completed");
    assert_eq!(cold["attempts"][0]["warm"], false);
    let p = wait_pool(&server, |p| p["ready"] == 1 && p["started"] == 2).await;
    assert_eq!(p["used"], 1, "{p}");

    // A resume never runs warm: the process would start without the session.
    let session = job["session_id"].as_str().unwrap();
    let resumed = server
        .run(json!({"prompt": "again", "allowed_tools": ["Read"], "session": {"resume": session}, "max_attempts": 1}))
        .await;
    assert_eq!(resumed["attempts"][0]["warm"], false);
    assert!(
        resumed["result"].as_str().unwrap().contains("hello warm"),
        "{resumed}"
    );

    let dir = server.dir.path().to_path_buf();
    let (dir_guard, _roots) = server.stop_keeping_data().await;
    assert!(
        processes_in(&dir).is_empty(),
        "warm processes survived the shutdown: {:?}",
        processes_in(&dir)
    );
    drop(dir_guard);
}

#[tokio::test]
async fn idle_warm_processes_are_retired_and_replaced() {
    let server = Server::with(&[(
        "warm_pool",
        r#"[{size = 1, idle_seconds = 1, options = {}}]"#,
    )])
    .await;
    let p = wait_pool(&server, |p| {
        p["retired"].as_u64() >= Some(1) && p["ready"] == 1
    })
    .await;
    assert!(p["started"].as_u64().unwrap() >= 2, "{p}");
    let job = server.run(prompt("FAKE text still fine")).await;
    assert_eq!(
        (job["state"].as_str(), job["attempts"][0]["warm"].as_bool()),
        (Some("completed"), Some(true)),
        "{job}"
    );
    server.stop().await;
}

#[tokio::test]
async fn warm_pool_configuration_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    for (value, needle) in [
        (r#"[{size = 0}]"#, "size must be between 1 and 64"),
        (
            r#"[{size = 1, options = {cwd = "/tmp"}}]"#,
            "cannot name a session or a cwd",
        ),
        (
            r#"[{size = 1, options = {colour = "red"}}]"#,
            "unknown field `colour`",
        ),
        (
            r#"[{size = 1, options = {prompt = "x"}}]"#,
            "must not contain a prompt",
        ),
    ] {
        let mut flags = crate::support::test_flags(dir.path(), roots.path());
        flags.push(("warm_pool".into(), value.into()));
        let err = baton::Config::load(None, &[], &flags).unwrap_err();
        assert!(format!("{err:#}").contains(needle), "{value}: {err:#}");
    }
}

async fn agent_pool(server: &Server) -> Option<Value> {
    let (_, health) = server.get("/v1/health").await;
    health["warm_pools"]
        .as_array()?
        .iter()
        .find(|p| p["agent"] == "default/warmy")
        .cloned()
}

#[tokio::test]
async fn an_agent_with_a_warm_pool_runs_warm_and_its_pool_goes_with_it() {
    let server = Server::start().await;
    let (status, e) = server
        .post(
            "/v1/agents",
            json!({"name": "nope", "prompt_template": "x", "warm_pool": 1, "claude_md": "# ctx"}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("warm_pool"),
        "{e}"
    );
    let (status, a) = server
        .post(
            "/v1/agents",
            json!({"name": "warmy", "prompt_template": "FAKE echo_env\n{{ input.q }}",
                   "options": {"allowed_tools": ["Read"], "max_attempts": 1}, "warm_pool": 1}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), a["warm_pool"].as_u64()),
        (201, Some(1)),
        "{a}"
    );
    let mut ready = false;
    for _ in 0..400 {
        if agent_pool(&server).await.is_some_and(|p| p["ready"] == 1) {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        ready,
        "the agent's pool never filled: {:?}",
        agent_pool(&server).await
    );
    let (status, job) = server
        .post(
            "/v1/agents/warmy/runs?wait=30",
            json!({"input": {"q": "hello warm agent"}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let (_, job) = server
        .get(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["attempts"][0]["warm"], true, "{job}");
    assert!(job["result"].as_str().unwrap().contains("hello warm agent"));
    assert_no_survivors(&job);
    // Deleted, its pool goes (its processes with it).
    let (status, _) = server
        .request(reqwest::Method::DELETE, "/v1/agents/warmy", None)
        .await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..400 {
        if agent_pool(&server).await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(gone);
    server.stop().await;
}
