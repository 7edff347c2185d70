//! Portable sessions: Baton stores the transcript after each attempt and restores it
//! before a resume, so a session continues from any workspace.

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn a_job_resumes_another_jobs_session_from_a_different_workspace() {
    let server = Server::start().await;
    let first = server
        .run(json!({"prompt": "remember the word banana", "max_attempts": 1}))
        .await;
    assert_eq!(first["state"], "completed", "{first}");
    let session = first["session_id"].as_str().unwrap().to_string();

    // The second job runs in a directory of its own inside a workspace root; the first
    // ran in its attempt's scratch directory, long since removed.
    let elsewhere = server.roots.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let second = server
        .run(json!({
            "prompt": "what was the word?",
            "cwd": elsewhere.display().to_string(),
            "session": {"resume": session},
            "max_attempts": 1
        }))
        .await;
    assert_eq!(second["state"], "completed", "{second}");
    assert_eq!(second["session_id"], session.as_str());
    assert!(
        second["result"]
            .as_str()
            .unwrap()
            .contains("remember the word banana"),
        "the resumed job did not see the first transcript: {}",
        second["result"]
    );

    // A fork copies the history into a new session with the id asked for.
    let fork_id = "3f1c8f1e-0b8e-4d39-9d4c-5c3f3a0f9a11";
    let fork = server
        .run(json!({"prompt": "and now?", "session": {"resume": session, "fork": true, "id": fork_id}, "max_attempts": 1}))
        .await;
    assert_eq!(fork["state"], "completed", "{fork}");
    assert_eq!(fork["session_id"], fork_id);
    assert!(
        fork["result"]
            .as_str()
            .unwrap()
            .contains("what was the word?"),
        "{}",
        fork["result"]
    );

    let (status, s) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["transcript_stored"], true);
    assert_eq!(s["job_ids"].as_array().unwrap().len(), 2);

    // Resuming a session the project does not have is refused at once, and queues nothing.
    let (status, missing) = server
        .post(
            "/v1/jobs",
            json!({"prompt": "x", "session": {"resume": "00000000-0000-4000-8000-000000000000"}}),
        )
        .await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["type"], "not_found_error");
    let (status, _) = server
        .get("/v1/sessions/00000000-0000-4000-8000-000000000001")
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn resumes_of_one_session_never_run_at_once() {
    let server = Server::with(&[("runner.max_concurrency", "4")]).await;
    let first = server
        .run(json!({"prompt": "start", "max_attempts": 1}))
        .await;
    let session = first["session_id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..3 {
        let job = server
            .submit(json!({"prompt": format!("FAKE sleep 300\nturn {i}"), "session": {"resume": session}, "max_attempts": 1}))
            .await;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // Each job's CLI output spans from its first CLI event to its terminal event. A CLI
    // event is written only after the process started, which is only after the previous
    // attempt of the session ended, so these spans are ordered by construction.
    let mut spans = Vec::new();
    for id in &ids {
        let job = server.wait_terminal(id).await;
        assert_eq!(job["state"], "completed", "{job}");
        let events = server.events(id).await;
        let first_cli = events.iter().find(|e| e["kind"] == "system").unwrap()["at"]
            .as_str()
            .unwrap()
            .to_string();
        let end = events.last().unwrap()["at"].as_str().unwrap().to_string();
        spans.push((first_cli, end));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two attempts of one session overlapped: {pair:?}"
        );
    }
    // Each turn saw all the earlier ones: the transcript grew through every job.
    let last = server.job(ids.last().unwrap()).await;
    let (_, s) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(s["job_ids"].as_array().unwrap().len(), 4, "{s} {last}");
    server.stop().await;
}
