//! A history for a server: many short jobs run to the end, as a long-lived server would
//! have run them. Used by chaos (`--history`) and by the scale benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Submits `n` jobs over HTTP (8 clients, spread over the nodes) and waits until the
/// queue is empty again: the history the first kill will cut short. Returns their ids.
pub async fn run(
    http: &reqwest::Client,
    bases: &Arc<Vec<String>>,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let clients = 8;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, bases) = (http.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (c..n).step_by(clients) {
                let base = &bases[i % bases.len()];
                let job: Value = http
                    .post(format!("{base}/v1/jobs"))
                    .header("idempotency-key", format!("history-{i}"))
                    .json(&json!({"prompt": format!("FAKE text history {i}"), "max_attempts": 20}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                ids.push(job["id"].as_str().context("a job id")?.to_string());
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await??);
    }
    // Every node sees the whole queue (one database), so one node's counts will do.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let health: Value = http
            .get(format!("{}/v1/health", bases[0]))
            .send()
            .await?
            .json()
            .await?;
        let open = ["queued", "running"]
            .iter()
            .map(|s| health["jobs"][s].as_u64().unwrap_or(0))
            .sum::<u64>();
        if open == 0 {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            bail!("the history did not finish within 600 s: {open} jobs still open");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
