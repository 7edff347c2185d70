//! The dead-letter queue: listed with every attempt's error, replayed singly or in bulk,
//! optionally with changed options, exactly once per Idempotency-Key.

use serde_json::{Value, json};

use crate::support::Server;

async fn dead_job(server: &Server, prompt: &str, attempts: u32) -> String {
    let job = server
        .run(json!({"prompt": prompt, "max_attempts": attempts}))
        .await;
    assert_eq!(job["state"], "dead", "{job}");
    job["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn dead_jobs_are_listed_with_their_errors_and_replayed_with_changes() {
    let server = Server::start().await;
    let id = dead_job(&server, "FAKE crash", 2).await;
    let (status, dead) = server.get("/v1/dead").await;
    assert_eq!(status, 200);
    let listed = &dead["data"][0];
    assert_eq!(listed["id"], id.as_str());
    let errors: Vec<&str> = listed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        ["crashed", "crashed"],
        "every attempt's error: {listed}"
    );

    // Replay with a changed prompt: it runs again, attempt numbers continue.
    let (status, replayed) = server
        .post(
            &format!("/v1/jobs/{id}/retry"),
            json!({"options": {"prompt": "FAKE text fixed"}}),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["state"], "queued");
    let job = server.wait_terminal(&id).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], "fixed");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(job["attempts"][2]["attempt"], 3);
    let kinds: Vec<Value> = server
        .events(&id)
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "job.dead").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "job.replayed").count(), 1);
    assert_eq!(kinds.last().unwrap(), "job.completed");
    let (_, dead) = server.get("/v1/dead").await;
    assert!(dead["data"].as_array().unwrap().is_empty());

    // Only failed or dead jobs can be replayed; bad changes are refused and change nothing.
    let (status, body) = server
        .post(&format!("/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["type"].as_str()),
        (409, Some("conflict_error")),
        "{body}"
    );
    let other = dead_job(&server, "FAKE crash", 1).await;
    let (status, body) = server
        .post(
            &format!("/v1/jobs/{other}/retry"),
            json!({"options": {"timeout_ms": -1}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post(
            &format!("/v1/jobs/{other}/retry"),
            json!({"options": {"colour": "red"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.job(&other).await["state"], "dead");
    server.stop().await;
}

#[tokio::test]
async fn bulk_replay_by_error_type_and_idempotency() {
    let server = Server::start().await;
    let crashed: Vec<String> = [
        dead_job(&server, "FAKE crash", 1).await,
        dead_job(&server, "FAKE crash", 1).await,
    ]
    .into();
    let overloaded = dead_job(&server, "FAKE api_error 529", 1).await;

    let send = |key: &'static str, body: Value| {
        server
            .http
            .post(format!("{}/v1/dead/replay", server.base))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"error_type": "crashed", "options": {"prompt": "FAKE text back"}});
    let first = send("replay-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["count"], 2, "{first}");
    // The same key and body: the stored answer, and nothing replayed twice.
    let again = send("replay-1", body.clone()).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    let conflict = send("replay-1", json!({"error_type": "api_error"}))
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);

    for id in &crashed {
        let job = server.wait_terminal(id).await;
        assert_eq!(
            (job["state"].as_str(), job["result"].as_str()),
            (Some("completed"), Some("back")),
            "{job}"
        );
        let replays = server
            .events(id)
            .await
            .iter()
            .filter(|e| e["kind"] == "job.replayed")
            .count();
        assert_eq!(replays, 1);
    }
    assert_eq!(
        server.job(&overloaded).await["state"],
        "dead",
        "the filter left it alone"
    );
    let (_, dead) = server.get("/v1/dead?error_type=api_error").await;
    assert_eq!(dead["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// Requests racing with one Idempotency-Key replay once: one takes the key and runs, the
/// others get its answer (or a 409 while it is being made), never a second run.
#[tokio::test]
async fn racing_replays_with_one_key_replay_once() {
    let server = Server::start().await;
    let mut dead = Vec::new();
    for _ in 0..4 {
        dead.push(dead_job(&server, "FAKE crash", 1).await);
    }
    let body =
        json!({"error_type": "crashed", "limit": 1, "options": {"prompt": "FAKE text back"}});
    let requests = (0..8).map(|_| {
        server
            .http
            .post(format!("{}/v1/dead/replay", server.base))
            .header("idempotency-key", "race-1")
            .json(&body)
            .send()
    });
    let mut answers = Vec::new();
    for resp in futures_util::future::join_all(requests).await {
        let resp = resp.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert!(
            status == 200 && body["count"] == 1 || status == 409,
            "{status}: {body}"
        );
        answers.push((status, body));
    }
    let ran: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert!(!ran.is_empty());
    assert!(ran.iter().all(|b| *b == ran[0]), "{ran:?}");
    let mut replayed = 0;
    for id in &dead {
        replayed += server
            .events(id)
            .await
            .iter()
            .filter(|e| e["kind"] == "job.replayed")
            .count();
    }
    assert_eq!(replayed, 1, "one key, one replay");
    server.stop().await;
}
