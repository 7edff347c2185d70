//! The seed clients' requests, as their documents write them.

use baton::client::Client;
use serde_json::{Value, json};

use crate::support::Server;

/// Seed 000: submit with `POST /execute`, poll `GET /sessions/{id}` until completed or
/// failed, read `response`.
#[tokio::test]
async fn pipeline_worker_submit_and_poll() {
    let server = Server::start().await;
    let (status, resp) = server
        .post(
            "/execute",
            json!({"prompt": "FAKE text Analysis of error logs: 1. timeouts", "allowed_tools": ["Read", "Glob", "Grep"], "timeout": 120000}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["status"], "running");
    let session_id = resp["session_id"].as_str().unwrap().to_string();
    let status = loop {
        let (code, status) = server.get(&format!("/sessions/{session_id}")).await;
        assert_eq!(code, 200, "{status}");
        if matches!(status["status"].as_str(), Some("completed" | "failed")) {
            break status;
        }
        assert_eq!(status["status"], "running");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["session_id"], session_id.as_str());
    assert_eq!(status["response"], "Analysis of error logs: 1. timeouts");
    assert!(status["result"].is_object());
    // The session id is the real Claude session: it can be resumed natively.
    assert_eq!(status["result"]["session_id"], session_id.as_str());
    assert_eq!(
        status["result"]["options"]["allowed_tools"],
        json!(["Read", "Glob", "Grep"])
    );
    assert_eq!(status["result"]["options"]["timeout_ms"], 120000);

    let (_, failed) = server
        .post("/execute", json!({"prompt": "FAKE api_error 401"}))
        .await;
    let sid = failed["session_id"].as_str().unwrap();
    let status = loop {
        let (_, s) = server.get(&format!("/sessions/{sid}")).await;
        if s["status"] != "running" {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status["status"], "failed");
    server.stop().await;
}

/// Seed 003: health, chat, chat/stream and session continuity by `session_id`.
#[tokio::test]
async fn cli_wrapper_health_chat_stream_and_continuity() {
    let server = Server::start().await;
    let (status, health) = server.get("/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["claude_version"], "2.1.332 (Claude Code)");

    let (status, chat) = server
        .post("/v1/chat", json!({"prompt": "What is 2+2?"}))
        .await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["result"], "fake answer to: What is 2+2?");
    for key in ["session_id", "cost_usd", "usage", "model"] {
        assert!(!chat[key].is_null(), "{key} missing: {chat}");
    }
    let (status, again) = server
        .post(
            "/v1/chat",
            json!({"prompt": "What did I just ask?", "session_id": chat["session_id"]}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["session_id"], chat["session_id"]);
    assert!(
        again["result"].as_str().unwrap().contains("What is 2+2?"),
        "{again}"
    );

    let (status, err) = server.post("/v1/chat", json!({"model": "sonnet"})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["message"], "prompt is required");
    let (status, err) = server
        .post("/v1/chat", json!({"prompt": "FAKE api_error 401"}))
        .await;
    assert_eq!(status, 502, "{err}");
    assert_eq!(err["error"]["job_error"]["type"], "authentication_error");

    // The stream: data-only events, start, deltas, done.
    let resp = server
        .http
        .post(format!("{}/v1/chat/stream", server.base))
        .json(&json!({"prompt": "FAKE slow 3 20"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["start", "delta", "delta", "delta", "done"],
        "{text}"
    );
    assert!(
        !text.contains("event:"),
        "the seed's client expects data-only events"
    );
    assert_eq!(events[1]["text"], "chunk 1");
    assert_eq!(events[4]["result"], "chunk 3");
    assert!(events[4]["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(events[0]["session_id"], events[4]["session_id"]);
    let _ = Client::new(&server.base, None).unwrap();
    server.stop().await;
}

/// Every route that creates a job honours Idempotency-Key.
#[tokio::test]
async fn compatibility_routes_are_idempotent() {
    let server = Server::start().await;
    let post = |path: &'static str, key: &'static str, body: Value| {
        server
            .http
            .post(format!("{}{path}", server.base))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let a: Value = post("/execute", "e-1", json!({"prompt": "FAKE text once"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = post("/execute", "e-1", json!({"prompt": "FAKE text once"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["session_id"], b["session_id"]);
    assert_eq!(a["job_id"], b["job_id"]);
    let c = post("/execute", "e-1", json!({"prompt": "FAKE text other"}))
        .await
        .unwrap();
    assert_eq!(c.status(), 409);
    let a: Value = post("/v1/chat", "c-1", json!({"prompt": "FAKE text hi"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = post("/v1/chat", "c-1", json!({"prompt": "FAKE text hi"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["job_id"], b["job_id"]);
    assert_eq!(server.job_count().await, 2, "one job per key");
    server.stop().await;
}

/// Requests racing with one Idempotency-Key on a route that creates a job make one job,
/// and every one of them answers with it: the key is taken by one statement (the job's own
/// unique key), never checked and then written.
#[tokio::test]
async fn racing_duplicates_on_every_creating_route_make_one_job() {
    let server = Server::start().await;
    for (path, body, id_field) in [
        ("/v1/jobs", json!({"prompt": "FAKE text raced"}), "id"),
        ("/execute", json!({"prompt": "FAKE text raced"}), "job_id"),
        ("/v1/chat", json!({"prompt": "FAKE text raced"}), "job_id"),
    ] {
        let before = server.job_count().await;
        let key = format!("race-{}", path.replace('/', "-"));
        let requests = (0..12).map(|_| {
            server
                .http
                .post(format!("{}{path}", server.base))
                .header("idempotency-key", &key)
                .json(&body)
                .send()
        });
        let answers = futures_util::future::join_all(requests).await;
        let mut ids = std::collections::HashSet::new();
        for answer in answers {
            let answer = answer.unwrap();
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
            let v: Value = answer.json().await.unwrap();
            ids.insert(v[id_field].as_str().unwrap().to_string());
        }
        assert_eq!(ids.len(), 1, "{path}: every racer answers with the one job");
        assert_eq!(server.job_count().await, before + 1, "{path}: one job");
    }
    server.stop().await;
}

/// The newest job's id.
async fn newest_job(server: &Server) -> String {
    let (_, page) = server.get("/v1/jobs?limit=1").await;
    page["data"][0]["id"].as_str().unwrap().to_string()
}

/// A caller of a synchronous route that hangs up before the answer stops paying: its job
/// is cancelled, its CLI gone, long before the 10 s it would have run. With
/// `Baton-Detach: true` the job goes on, and its id came first, in a header.
#[tokio::test]
async fn a_caller_that_hangs_up_stops_paying_unless_it_detached() {
    let server = Server::start().await;
    let (status, agent) = server
        .post(
            "/v1/agents",
            json!({"name": "slow", "prompt_template": "FAKE sleep 10000\nFAKE text late"}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let slow = json!({"prompt": "FAKE sleep 10000\nFAKE text late"});
    let conversation = |stream: bool| {
        json!({"model": "sonnet", "max_tokens": 100, "stream": stream,
               "messages": [{"role": "user", "content": "FAKE sleep 10000\nFAKE text late"}]})
    };
    let routes = [
        ("/v1/chat", slow.clone(), false),
        ("/v1/chat/stream", slow.clone(), true),
        ("/claude/stream", slow.clone(), true),
        ("/", json!({}), false),
        ("/v1/chat/completions", conversation(false), false),
        ("/v1/chat/completions", conversation(true), true),
        ("/v1/messages", conversation(false), false),
        ("/v1/messages", conversation(true), true),
    ];
    for (route, body, streams) in routes {
        let mut req = server.http.post(format!("{}{route}", server.base));
        req = match route {
            "/" => req.header("x-baton-agent", "default/slow").json(&body),
            _ => req.json(&body),
        };
        let started = std::time::Instant::now();
        if streams {
            // The stream's head arrives; the client reads nothing more and leaves.
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{route}");
            assert!(resp.headers().contains_key("baton-job-id"), "{route}");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            drop(resp);
        } else {
            let gone =
                tokio::time::timeout(std::time::Duration::from_millis(500), req.send()).await;
            assert!(gone.is_err(), "{route} answered before its job ended");
        }
        let left = started.elapsed();
        let id = newest_job(&server).await;
        let job = server.wait_terminal(&id).await;
        assert_eq!(job["state"], "cancelled", "{route}: {job}");
        assert!(job["result"].is_null(), "{route}: {job}");
        crate::support::assert_no_survivors(&job);
        eprintln!(
            "{route}: cancelled {:?} after the caller left",
            started.elapsed() - left
        );
    }
    // Each hang-up is in the audit log, with its job and the outcome 499.
    let (_, audit) = server.get("/v1/audit?limit=100").await;
    let closed: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "499")
        .collect();
    assert_eq!(closed.len(), 8, "{audit}");
    for (route, action) in [
        ("/v1/chat", "job.create"),
        ("/v1/chat/stream", "job.cancel"),
        ("/claude/stream", "job.cancel"),
        ("/", "job.create"),
        ("/v1/chat/completions", "job.create"),
        ("/v1/chat/completions", "job.cancel"),
        ("/v1/messages", "job.create"),
        ("/v1/messages", "job.cancel"),
    ] {
        assert!(
            closed
                .iter()
                .any(|r| r["route"] == route && r["action"] == action && r["target"].is_string()),
            "{route}: {audit}"
        );
    }
    // Detached: the id at once, the job runs on after the caller leaves.
    let resp = server
        .http
        .post(format!("{}/v1/chat", server.base))
        .header("baton-detach", "true")
        .json(&json!({"prompt": "FAKE sleep 1500\nFAKE text kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.headers()["baton-job-id"].to_str().unwrap().to_string();
    drop(resp);
    let job = server.wait_terminal(&id).await;
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str()),
        (Some("completed"), Some("kept")),
        "{job}"
    );
    // A detached caller that stays gets the answer's body after the head.
    let resp = server
        .http
        .post(format!("{}/v1/chat", server.base))
        .header("baton-detach", "true")
        .json(&json!({"prompt": "FAKE text stayed"}))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["baton-job-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["result"].as_str(), body["job_id"].as_str()),
        (Some("stayed"), Some(id.as_str())),
        "{body}"
    );
    server.stop().await;
}
