//! `cargo xtask bench --auth`: what authentication costs. Two servers of one build, side
//! by side: one open (no key exists), one with keys, where every request presents a
//! `jobs:write` key that has a rate limit of its own and whose project has one too (both
//! high enough never to refuse). Each round measures, on both, one request at a time
//! (`GET /v1/jobs/{id}`: the key check and rate limit against a read that costs little
//! else), eight at a time, and whole jobs (`POST /v1/jobs?wait=`) at concurrency 1 and 8.
//! Rounds alternate the servers, and the medians of the rounds are reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Server, end_to_end_with, process_cpu, start_server_with, stats};

/// Requests per measurement of the read, per round.
const READS: usize = 8_000;
const ROUNDS: usize = 7;

async fn client(key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {k}").parse()?,
        );
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// `READS` reads of one job by `clients` loops: (p50 µs, requests a second).
async fn reads(http: &reqwest::Client, url: &str, clients: usize) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url) = (http.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(READS / clients);
            for _ in 0..READS / clients {
                let t = Instant::now();
                let resp = http.get(&url).send().await?;
                if !resp.status().is_success() {
                    bail!("a read was refused: {}", resp.status());
                }
                resp.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let s = stats(lat, start.elapsed());
    Ok((s.p50_ms * 1000.0, s.n as f64 / s.secs))
}

/// A server with keys: an admin key made offline, then a `jobs:write` key with its own
/// limit in a project with one. Returns the `jobs:write` key.
async fn keyed(bin: &Path, server: &Server) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin)
        .args([
            "keys",
            "create",
            "--admin",
            "--name",
            "bench",
            "--json",
            "--data-dir",
        ])
        .arg(server.dir())
        .output()?;
    if !out.status.success() {
        bail!("keys create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let admin: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let admin = client(admin["key"].as_str()).await?;
    // The server notices the first key within a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h: serde_json::Value = reqwest::get(format!("{}/v1/health", server.base))
            .await?
            .json()
            .await?;
        if h["auth"] == "keys" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the server never required keys");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = admin
        .post(format!("{}/v1/projects", server.base))
        .json(&serde_json::json!({"id": "bench", "quotas": {"requests_per_minute": 100_000_000}}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("making the project: {}", resp.text().await?);
    }
    let key: serde_json::Value = admin
        .post(format!("{}/v1/keys", server.base))
        .json(
            &serde_json::json!({"project": "bench", "name": "bench", "scopes": ["jobs:write"],
            "requests_per_minute": 100_000_000}),
        )
        .send()
        .await?
        .json()
        .await?;
    key["key"]
        .as_str()
        .map(str::to_string)
        .context("no key in the answer")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub async fn main(bin: &Path, fake: &Path) -> anyhow::Result<()> {
    let open = start_server_with(bin, fake, 32, &[])?;
    let with_keys = start_server_with(bin, fake, 32, &[])?;
    // Both servers up, and one job each to read.
    let open_http = client(None).await?;
    let key = keyed(bin, &with_keys).await?;
    let keyed_http = client(Some(&key)).await?;
    let mut targets = Vec::new();
    for (server, http) in [(&open, &open_http), (&with_keys, &keyed_http)] {
        let job: serde_json::Value = http
            .post(format!("{}/v1/jobs?wait=30", server.base))
            .json(&serde_json::json!({"prompt": "FAKE text bench"}))
            .send()
            .await?
            .json()
            .await?;
        let id = job["id"].as_str().context("no job")?.to_string();
        targets.push(format!("{}/v1/jobs/{id}", server.base));
    }
    let mut results: [[Vec<f64>; 8]; 2] = Default::default();
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (server, http) = if i == 0 {
                (&open, &open_http)
            } else {
                (&with_keys, &keyed_http)
            };
            let pid = server.child.id();
            let cpu0 = process_cpu(pid)?.0;
            let (p50_1, _) = reads(http, &targets[i], 1).await?;
            let (_, rps_8) = reads(http, &targets[i], 8).await?;
            let cpu1 = process_cpu(pid)?.0;
            let j1 = end_to_end_with(http, &server.base, 1, 100).await?;
            let j8 = end_to_end_with(http, &server.base, 8, 400).await?;
            let cpu2 = process_cpu(pid)?.0;
            for (slot, v) in [
                p50_1,
                rps_8,
                j1.p50_ms * 1000.0,
                j1.n as f64 / j1.secs,
                j8.p50_ms * 1000.0,
                j8.n as f64 / j8.secs,
                (cpu1 - cpu0) * 1e6 / (2 * READS) as f64,
                (cpu2 - cpu1) * 1e6 / (j1.n + j8.n) as f64,
            ]
            .into_iter()
            .enumerate()
            {
                results[i][slot].push(v);
            }
        }
    }
    let m: Vec<Vec<f64>> = results
        .iter()
        .map(|r| r.iter().map(|v| median(v.clone())).collect())
        .collect();
    let (off, on) = (&m[0], &m[1]);
    println!(
        "authentication off (open) vs on (a key with its own and its project's rate limit); medians of {ROUNDS} rounds"
    );
    println!(
        "  GET /v1/jobs/{{id}}, one at a time: p50 {:.0} µs vs {:.0} µs ({:+.0} µs)",
        off[0],
        on[0],
        on[0] - off[0]
    );
    println!(
        "  GET /v1/jobs/{{id}}, 8 at a time: {:.0} vs {:.0} requests/s ({:+.1} %)",
        off[1],
        on[1],
        (on[1] / off[1] - 1.0) * 100.0
    );
    println!(
        "  jobs, concurrency 1: p50 {:.0} µs vs {:.0} µs ({:+.0} µs); {:.0} vs {:.0} jobs/s",
        off[2],
        on[2],
        on[2] - off[2],
        off[3],
        on[3]
    );
    println!(
        "  jobs, concurrency 8: {:.0} vs {:.0} jobs/s ({:+.1} %)",
        off[5],
        on[5],
        (on[5] / off[5] - 1.0) * 100.0
    );
    println!(
        "  server CPU: {:.1} vs {:.1} µs a read ({:+.1} µs); {:.0} vs {:.0} µs a job ({:+.1} %)",
        off[6],
        on[6],
        on[6] - off[6],
        off[7],
        on[7],
        (on[7] / off[7] - 1.0) * 100.0
    );
    Ok(())
}
