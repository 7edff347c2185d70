//! Several nodes on one PostgreSQL database: API and worker roles, cross-node streaming and
//! cancel, rescue of a dead node's attempts, and fencing of a zombie node. Each test has a
//! fresh schema of its own; without PostgreSQL the tests skip loudly (and fail under
//! `BATON_REQUIRE_ALL=1`).

use std::time::{Duration, Instant};

use baton::client::Client;
use baton_store::testing::TestDatabase;
use serde_json::json;

use crate::process::{free_port, spawn_server_with, wait_job, wait_ready};
use crate::support::{Server, assert_no_survivors, prompt, survivors};

async fn database(test: &str) -> Option<TestDatabase> {
    baton_store::testing::postgres_or_skip(test).await
}

/// An in-process node on the shared database.
async fn node(db: &TestDatabase, role: &str, extra: &[(&str, &str)]) -> Server {
    let mut overrides = vec![
        ("store.database_url", db.url.as_str()),
        ("server.role", role),
    ];
    overrides.extend_from_slice(extra);
    Server::with(&overrides).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_queues_a_worker_runs_and_the_stream_follows_across_nodes() {
    let Some(db) = database("an_api_node_queues_a_worker_runs").await else {
        return;
    };
    let api = node(&db, "api", &[]).await;
    let worker = node(&db, "worker", &[]).await;
    let health = worker.get("/v1/health").await.1;
    assert_eq!(
        (
            health["runs_jobs"].as_bool(),
            health["database_backend"].as_str()
        ),
        (Some(true), Some("postgres"))
    );
    let (status, body) = worker.get("/v1/jobs").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("role = worker")
    );
    let api_health = api.get("/v1/health").await.1;
    assert_eq!(api_health["runs_jobs"], false);
    assert_eq!(api_health["status"], "ok", "an API node needs no CLI");

    let job = api.submit(prompt("FAKE slow 8 150")).await;
    let id = job["id"].as_str().unwrap().to_string();
    // Join mid-job on the API node: the events are written by the worker.
    let joined = api
        .wait_until(&id, |j| j["last_event_seq"].as_i64() >= Some(4))
        .await;
    assert_eq!(
        joined["state"], "running",
        "the job ended before the client joined"
    );
    let client = Client::new(&api.base, None).unwrap();
    let mut first = Vec::new();
    client
        .follow(&id, None, |e| {
            first.push(e.clone());
            first.len() < 6
        })
        .await
        .unwrap();
    let mut rest = Vec::new();
    client
        .follow(&id, Some(6), |e| {
            rest.push(e.clone());
            true
        })
        .await
        .unwrap();
    let seqs: Vec<i64> = first
        .iter()
        .chain(&rest)
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    let want: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(
        seqs, want,
        "a gap or a duplicate across nodes and a reconnect"
    );
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("job.completed"));
    let done = api.job(&id).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(
        done["attempts"][0]["node_incarnation"],
        worker.get("/v1/health").await.1["incarnation"],
        "the worker ran it"
    );
    // The stored log and what streamed are the same events.
    assert_eq!(api.events(&id).await.len(), seqs.len());
    api.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_node_stops_the_attempt_on_another_before_any_lease_renewal() {
    let Some(db) = database("a_cancel_on_one_node_stops_the_attempt").await else {
        return;
    };
    // A long lease: renewals (every 10 s) cannot be what carries the cancel.
    let api = node(&db, "api", &[("runner.lease_seconds", "30")]).await;
    let worker = node(&db, "worker", &[("runner.lease_seconds", "30")]).await;
    let job = api
        .submit(prompt("FAKE grandchild\nFAKE sleep 60000\nFAKE text never"))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let running = api
        .wait_until(&id, |j| j["attempts"][0]["pid"].is_i64())
        .await;
    let pgid = running["attempts"][0]["pid"].as_i64().unwrap();
    let asked = Instant::now();
    let (status, _) = api.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(
        status, 202,
        "a running job's cancel is accepted, then carried out"
    );
    let done = api.wait_terminal(&id).await;
    let took = asked.elapsed();
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(
        took < Duration::from_secs(10),
        "the cancel took {took:?}: it waited for a lease renewal"
    );
    eprintln!("cross-node cancel: requested to cancelled in {took:?}");
    assert!(survivors(pgid).is_empty(), "{:?}", survivors(pgid));
    assert_no_survivors(&done);
    api.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_attempt_is_rescued_by_another_after_its_lease() {
    let Some(db) = database("a_killed_nodes_attempt_is_rescued").await else {
        return;
    };
    let api = node(&db, "api", &[]).await;
    let (dir, roots) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = [
        ("store.database_url", db.url.as_str()),
        ("server.role", "worker"),
        ("runner.lease_seconds", "3"),
    ];
    let mut doomed = spawn_server_with(dir.path(), roots.path(), free_port(), &extra);
    wait_ready(&doomed).await;
    let job = api
        .submit(json!({"prompt": "FAKE sleep 1500\nFAKE text rescued", "max_attempts": 3}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_job(&api.base, &id, |j| j["attempts"][0]["pid"].is_i64()).await;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    // Another worker, started after the death: it must wait out the lease, then rescue.
    let rescuer = node(&db, "worker", &[("runner.lease_seconds", "3")]).await;
    let done = api.wait_terminal(&id).await;
    let took = killed.elapsed();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["result"], "rescued");
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{done}");
    assert_eq!(attempts[0]["error"]["type"], "interrupted");
    assert_ne!(
        attempts[0]["node_incarnation"],
        attempts[1]["node_incarnation"]
    );
    eprintln!("rescue: killed to completed in {took:?} (lease 3 s, the rest 1.5 s of work)");
    assert_no_survivors(&done);
    api.stop().await;
    rescuer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_node_that_wakes_after_losing_its_lease_changes_nothing() {
    let Some(db) = database("a_zombie_node_changes_nothing").await else {
        return;
    };
    let api = node(&db, "api", &[]).await;
    let (dir, roots) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let extra = [
        ("store.database_url", db.url.as_str()),
        ("server.role", "worker"),
        ("runner.lease_seconds", "3"),
    ];
    let zombie = spawn_server_with(
        dir.path(),
        roots.path(),
        free_port(),
        &[
            extra.as_slice(),
            &[("runner.silence_timeout_seconds", "30")],
        ]
        .concat(),
    );
    wait_ready(&zombie).await;
    let job = api
        .submit(
            json!({"prompt": "FAKE sleep 2000\nFAKE text from whoever owns it", "max_attempts": 3}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_job(&api.base, &id, |j| j["attempts"][0]["pid"].is_i64()).await;
    // Freeze the node (a long GC pause, a hung VM): its child runs on, it does not.
    let pid = nix::unistd::Pid::from_raw(zombie.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let rescuer = node(
        &db,
        "worker",
        &[
            ("runner.lease_seconds", "3"),
            ("runner.silence_timeout_seconds", "30"),
        ],
    )
    .await;
    let done = api.wait_terminal(&id).await;
    assert_eq!(done["state"], "completed", "{done}");
    let winner = done["attempts"][1]["node_incarnation"].clone();
    // Wake the zombie: it reads its child's result and tries to record it.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let after = wait_job(&api.base, &id, |j| j["attempts"][0]["fenced"] == true).await;
    let attempts = after["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{after}");
    assert_eq!(after["state"], "completed");
    assert_eq!(attempts[1]["node_incarnation"], winner);
    assert_eq!(
        after["last_event_seq"], done["last_event_seq"],
        "the zombie wrote events after losing the job"
    );
    drop(zombie);
    api.stop().await;
    rescuer.stop().await;
}
