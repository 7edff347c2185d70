//! The native API's contract: bad input, idempotency, cancel, pagination, OpenAPI.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, assert_no_survivors, prompt};

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let server = Server::with(&[
        ("limits.max_prompt_chars", "1000"),
        ("server.max_body_bytes", "65536"),
    ])
    .await;
    let outside = tempfile::tempdir().unwrap();
    let outside = outside.path().display().to_string();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("wrong type", json!({"prompt": 5}), 400, "invalid type"),
        (
            "unknown field",
            json!({"prompt": "x", "colour": "red"}),
            400,
            "unknown field `colour`",
        ),
        (
            "empty prompt",
            json!({"prompt": "   "}),
            400,
            "prompt: is required",
        ),
        (
            "missing prompt",
            json!({"model": "sonnet"}),
            400,
            "missing field `prompt`",
        ),
        (
            "oversized prompt",
            json!({"prompt": "x".repeat(1001)}),
            400,
            "the limit is 1000",
        ),
        (
            "cwd outside the roots",
            json!({"prompt": "x", "cwd": outside}),
            400,
            "outside the configured workspace roots",
        ),
        (
            "relative cwd",
            json!({"prompt": "x", "cwd": "src"}),
            400,
            "must be an absolute path",
        ),
        (
            "session not a UUID",
            json!({"prompt": "x", "session": {"resume": "abc"}}),
            400,
            "is not a valid UUID",
        ),
        (
            "negative timeout",
            json!({"prompt": "x", "timeout_ms": -1}),
            400,
            "timeout_ms",
        ),
        (
            "absurd timeout",
            json!({"prompt": "x", "timeout_ms": 10_000_000_000i64}),
            400,
            "timeout_ms",
        ),
        (
            "zero attempts",
            json!({"prompt": "x", "max_attempts": 0}),
            400,
            "max_attempts",
        ),
        (
            "bad permission mode",
            json!({"prompt": "x", "permission_mode": "yolo"}),
            400,
            "unknown variant",
        ),
    ];
    for (name, body, status, needle) in cases {
        let (got, resp) = server.post("/v1/jobs", body).await;
        assert_eq!(got.as_u16(), status, "{name}: {resp}");
        assert_eq!(resp["type"], "error", "{name}: {resp}");
        assert_eq!(resp["error"]["type"], "invalid_request_error", "{name}");
        let message = resp["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{name}: {message:?} lacks {needle:?}"
        );
        assert!(resp["request_id"].as_str().unwrap().starts_with("req_"));
    }
    // Malformed JSON and an oversized body, sent raw.
    let raw = |body: Vec<u8>| {
        server
            .http
            .post(format!("{}/v1/jobs", server.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw(b"{\"prompt\": ".to_vec()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{body}"
    );
    let resp = raw(vec![b' '; 70_000]).await.unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    assert_eq!(server.job_count().await, 0, "a refused request wrote a job");

    let (status, body) = server.get("/v1/jobs/not-a-job").await;
    assert_eq!(
        (status.as_u16(), body["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    let (status, _) = server.get("/v1/jobs?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = server.get("/v1/jobs?state=sleeping").await;
    assert_eq!(status, 400);
    let (status, _) = server.post("/v1/jobs?wait=100000", prompt("x")).await;
    assert_eq!(status, 400);
    let (status, body) = server.get("/no/such/route").await;
    assert_eq!(
        (status.as_u16(), body["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    assert_eq!(server.job_count().await, 0);
    server.stop().await;
}

#[tokio::test]
async fn idempotency_key_makes_submission_exactly_once() {
    let server = Server::start().await;
    let send = |key: &'static str, body: Value| {
        server
            .http
            .post(format!("{}/v1/jobs", server.base))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("k-1", prompt("FAKE text one")).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send("k-1", prompt("FAKE text one")).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let other = send("k-1", prompt("FAKE text two")).await.unwrap();
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["type"], "conflict_error");
    assert_eq!(server.job_count().await, 1);
    server.stop().await;
}

#[tokio::test]
async fn wait_returns_the_finished_job() {
    let server = Server::start().await;
    let (status, job) = server
        .post("/v1/jobs?wait=30", prompt("FAKE text waited"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "waited");
    // A wait shorter than the job answers with the job as it stands.
    let (status, job) = server
        .post("/v1/jobs?wait=0.2", prompt("FAKE sleep 3000"))
        .await;
    assert_eq!(status, 201);
    assert!(
        matches!(job["state"].as_str(), Some("queued" | "running")),
        "{job}"
    );
    server.stop().await;
}

#[tokio::test]
async fn attempts_run_in_the_configured_workspace_directory() {
    let workspaces = tempfile::tempdir().unwrap();
    let server = Server::with(&[
        (
            "runner.workspace_dir",
            &workspaces.path().display().to_string(),
        ),
        ("runner.keep_workspaces", "true"),
    ])
    .await;
    let (status, job) = server
        .post("/v1/jobs?wait=30", prompt("FAKE text elsewhere"))
        .await;
    assert_eq!(
        (status.as_u16(), job["state"].as_str()),
        (201, Some("completed")),
        "{job}"
    );
    // This node's own directory in it, named for its node id, holds the attempt.
    let node_dirs: Vec<_> = std::fs::read_dir(workspaces.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(node_dirs.len(), 1, "{node_dirs:?}");
    assert!(node_dirs[0].starts_with("baton-node-"), "{node_dirs:?}");
    let attempt = workspaces
        .path()
        .join(&node_dirs[0])
        .join(format!("{}-1", job["id"].as_str().unwrap()));
    assert!(attempt.join("home").is_dir() && attempt.join("work").is_dir());
    assert!(!server.dir.path().join("attempts").exists());
    server.stop().await;
}

#[tokio::test]
async fn cancel_kills_a_running_job_and_refuses_a_finished_one() {
    let server = Server::with(&[("runner.max_concurrency", "1")]).await;
    let running = server
        .submit(prompt("FAKE grandchild\nFAKE sleep 60000"))
        .await;
    let id = running["id"].as_str().unwrap().to_string();
    let job = server
        .wait_until(&id, |j| j["attempts"][0]["pid"].is_i64())
        .await;
    let _guard = crate::support::GroupGuard(job["attempts"][0]["pid"].as_i64().unwrap());
    assert_eq!(job["state"], "running");
    // With one slot busy, a second job waits in the queue; cancelling it is immediate.
    let queued = server.submit(prompt("FAKE text never")).await;
    let qid = queued["id"].as_str().unwrap();
    let (status, cancelled) = server
        .post(&format!("/v1/jobs/{qid}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["state"], "cancelled");

    let (status, body) = server
        .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let job = server.wait_terminal(&id).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["error"]["type"], "cancelled");
    assert_no_survivors(&job);

    let (status, body) = server
        .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["type"], "conflict_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already cancelled")
    );
    server.stop().await;
}

#[tokio::test]
async fn lists_paginate_with_cursors_and_filter() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            server.run(prompt(&format!("FAKE text {i}"))).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let failed = server.run(prompt("FAKE api_error 401")).await;
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2".to_string();
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200);
        for j in page["data"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/jobs?limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut want = ids.clone();
    want.push(failed["id"].as_str().unwrap().to_string());
    want.reverse();
    assert_eq!(seen, want, "newest first, each once");
    let (_, page) = server.get("/v1/jobs?state=failed").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn openapi_documents_every_route_and_every_documented_route_is_served() {
    let server = Server::start().await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 47, "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "00000000-0000-7000-8000-000000000000");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = server
                .http
                .request(m, format!("{}{concrete}", server.base))
                .timeout(Duration::from_secs(5))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            // A documented route may refuse the dummy request, but must exist.
            assert!(
                !(status == 404 && body["error"]["message"] == "no such route")
                    && body["error"]["message"] != "method not allowed on this route",
                "{method} {path} is documented but not served ({status})"
            );
        }
    }
    server.stop().await;
}

/// With a credential, each CLI gets its attempt's token and Baton's proxy, never the
/// credential (the proxy's own tests cover the calls).
#[tokio::test]
async fn a_cli_gets_a_token_of_its_own_and_never_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let canary = "sk-ant-api03-canary-0a1b2c3d4e5f";
    let file = dir.path().join("credential");
    crate::support::secret_file(&file, canary);
    let file = file.display().to_string();
    let server = Server::with(&[
        ("proxy.credential_file", file.as_str()),
        ("proxy.upstream", "http://127.0.0.1:9"),
        ("runner.env", r#"{ANTHROPIC_API_KEY = "sk-from-config"}"#),
    ])
    .await;
    let job = server.run(prompt("FAKE echo_env\nhello")).await;
    assert_eq!(job["state"], "completed", "{job}");
    let seen: Value = serde_json::from_str(job["result"].as_str().unwrap()).unwrap();
    assert!(
        seen["api_key"].as_str().unwrap().starts_with("btk-"),
        "{seen}"
    );
    assert!(
        seen["base_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{seen}"
    );
    assert!(!seen.to_string().contains(canary), "{seen}");
    assert!(
        !seen.to_string().contains("sk-from-config"),
        "configuration cannot undo it: {seen}"
    );
    server.stop().await;
}
