//! Storage faults: the API answers 503 with a clear message, nothing acknowledged is lost,
//! and Baton recovers by itself once the fault is gone. Faults are injected at the SQLite
//! layer (the same errors a read-only file system, a full disk, another process's lock or
//! a damaged row produce), since the tests run as root, which file permissions do not stop.

use serde_json::json;

use crate::support::{Server, prompt};

async fn refused(server: &Server, body: serde_json::Value, needle: &str) {
    let (status, resp) = server.post("/v1/jobs", body).await;
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["error"]["type"], "overloaded_error", "{resp}");
    let message = resp["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(needle) && message.contains("nothing was changed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_read_only_database_refuses_writes_then_recovers() {
    let server = Server::start().await;
    let before = server.run(prompt("FAKE text before")).await;
    server.store.fault_read_only(true).await.unwrap();
    refused(&server, prompt("FAKE text during"), "readonly").await;
    // Reads still work, and what was acknowledged is intact.
    assert_eq!(
        server.job(before["id"].as_str().unwrap()).await["result"],
        "before"
    );
    server.store.fault_read_only(false).await.unwrap();
    let after = server.run(prompt("FAKE text after")).await;
    assert_eq!(after["state"], "completed");
    assert_eq!(
        server.job_count().await,
        2,
        "the refused request wrote nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_disk_refuses_writes_then_recovers() {
    let server = Server::start().await;
    let before = server.run(prompt("FAKE text before")).await;
    server.store.fault_disk_full(true).await.unwrap();
    // A large prompt needs new pages: on a full disk it cannot be stored.
    let big = format!("FAKE text big\n{}", "x".repeat(200_000));
    refused(&server, prompt(&big), "full").await;
    server.store.fault_disk_full(false).await.unwrap();
    let after = server.run(prompt(&big)).await;
    assert_eq!(after["state"], "completed", "{after}");
    assert_eq!(
        server.job(before["id"].as_str().unwrap()).await["state"],
        "completed"
    );
    assert_eq!(server.job_count().await, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_locked_database_times_out_clearly_then_recovers() {
    let server = Server::start().await;
    let lock = baton_store::Store::fault_hold_write_lock(&server.dir.path().join("baton.db"))
        .await
        .unwrap();
    // The writer waits for the lock (5 s), then gives up with a clear answer.
    refused(&server, prompt("FAKE text during"), "locked").await;
    drop(lock);
    let after = server.run(prompt("FAKE text after")).await;
    assert_eq!(after["state"], "completed");
    assert_eq!(server.job_count().await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_corrupted_row_is_reported_and_set_aside_without_stopping_the_queue() {
    let server = Server::with(&[("runner.max_concurrency", "1")]).await;
    let done = server.run(prompt("FAKE text fine")).await;
    let done_id: baton_core::JobId =
        baton_core::JobId::parse(done["id"].as_str().unwrap()).unwrap();
    let original = server
        .store
        .fault_set_spec(done_id, "{not json")
        .await
        .unwrap();
    let (status, resp) = server.get(&format!("/v1/jobs/{done_id}")).await;
    assert_eq!(status, 503, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{resp}"
    );

    // A queued job whose row is damaged is set aside; the jobs behind it run.
    let blocker = server.submit(prompt("FAKE slow 20 50")).await;
    let damaged = server.submit(prompt("FAKE text damaged")).await;
    let behind = server.submit(prompt("FAKE text behind")).await;
    let damaged_id = baton_core::JobId::parse(damaged["id"].as_str().unwrap()).unwrap();
    let damaged_spec = server
        .store
        .fault_set_spec(damaged_id, "{not json")
        .await
        .unwrap();
    server.wait_terminal(blocker["id"].as_str().unwrap()).await;
    let behind = server.wait_terminal(behind["id"].as_str().unwrap()).await;
    assert_eq!(behind["state"], "completed", "{behind}");

    // Repaired, both read again; the damaged one says what happened to it.
    server
        .store
        .fault_set_spec(done_id, &original)
        .await
        .unwrap();
    server
        .store
        .fault_set_spec(damaged_id, &damaged_spec)
        .await
        .unwrap();
    assert_eq!(server.job(&done_id.to_string()).await["result"], "fine");
    let damaged = server.job(&damaged_id.to_string()).await;
    assert_eq!(
        (damaged["state"].as_str(), damaged["error"]["type"].as_str()),
        (Some("failed"), Some("corrupt_record")),
        "{damaged}"
    );
    let (status, _) = server
        .post(&format!("/v1/jobs/{damaged_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "a repaired job can be replayed");
    assert_eq!(
        server.wait_terminal(&damaged_id.to_string()).await["state"],
        "completed"
    );
    server.stop().await;
}
