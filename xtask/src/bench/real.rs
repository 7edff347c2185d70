//! `--real`: the real CLI against a local mock API, cold and warm.

use super::*;

pub(super) fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(0, |t| t.timestamp_millis())
}

pub(super) async fn get_json(
    http: &reqwest::Client,
    url: String,
) -> anyhow::Result<serde_json::Value> {
    Ok(http.get(url).send().await?.json().await?)
}

/// One job with the real CLI: (time to its first CLI event, total), in milliseconds.
pub(super) async fn real_job(http: &reqwest::Client, base: &str) -> anyhow::Result<(f64, f64)> {
    let t = Instant::now();
    let job: serde_json::Value = http
        .post(format!("{base}/v1/jobs?wait=60"))
        .json(&serde_json::json!({"prompt": "MOCK_TEXT bench", "max_attempts": 1}))
        .send()
        .await?
        .json()
        .await?;
    let total = t.elapsed().as_secs_f64() * 1000.0;
    if job["state"] != "completed" {
        bail!("a real-CLI bench job failed: {job}");
    }
    let id = job["id"].as_str().context("job id")?;
    let events = get_json(http, format!("{base}/v1/jobs/{id}/events?format=json")).await?;
    let first = events["data"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "system"))
        .context("no CLI event")?;
    let ttfe = (millis(first["at"].as_str().unwrap_or(""))
        - millis(job["created_at"].as_str().unwrap_or(""))) as f64;
    Ok((ttfe, total))
}

pub(super) fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// (e) The real CLI, cold and warm.
pub(super) async fn real_cli(bin: &Path, mock_bin: &Path, jobs: usize) -> anyhow::Result<()> {
    let claude = root().join(".build/claude/node_modules/.bin/claude");
    if !claude.exists() {
        bail!("the real CLI is not installed: run `cargo xtask install-claude`");
    }
    let dir = tempfile::tempdir()?;
    let port_file = dir.path().join("mock.port");
    let mut mock = Command::new(mock_bin)
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && let Ok(p) = p.trim().parse::<u16>()
        {
            break p;
        }
        if Instant::now() > deadline {
            let _ = mock.kill();
            bail!("mock-anthropic did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let env = format!(
        r#"runner.env={{ANTHROPIC_BASE_URL = "http://127.0.0.1:{port}", ANTHROPIC_API_KEY = "sk-bench"}}"#
    );
    let http = reqwest::Client::new();
    let mut results = Vec::new();
    for warm in [false, true] {
        let mut extra = vec!["--set".to_string(), env.clone()];
        if warm {
            extra.extend([
                "--set".to_string(),
                "warm_pool=[{size = 2, options = {}}]".to_string(),
            ]);
        }
        let server = start_server_with(bin, &claude, 2, &extra)?;
        let (mut ttfe, mut total) = (Vec::new(), Vec::new());
        real_job(&http, &server.base).await?; // warm-up: page cache, database
        for _ in 0..jobs {
            if warm {
                // Measure warm starts: give the pool its time to refill between jobs.
                for _ in 0..200 {
                    let h = get_json(&http, format!("{}/v1/health", server.base)).await?;
                    if h["warm_pools"][0]["ready"].as_u64() >= Some(1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            let (f, t) = real_job(&http, &server.base).await?;
            ttfe.push(f);
            total.push(t);
        }
        println!(
            "(e) real CLI {}: time to first event p50 {:.0} ms, p99 {:.0} ms; total p50 {:.0} ms, p99 {:.0} ms ({jobs} jobs)",
            if warm { "warm" } else { "cold" },
            pct(ttfe.clone(), 0.5),
            pct(ttfe.clone(), 0.99),
            pct(total.clone(), 0.5),
            pct(total.clone(), 0.99)
        );
        results.push(pct(ttfe, 0.5));
        if !warm {
            // Memory of a running CLI: a job that streams for a few seconds.
            let job: serde_json::Value = http
                .post(format!("{}/v1/jobs", server.base))
                .json(&serde_json::json!({"prompt": "MOCK_SLOW 40 100", "max_attempts": 1}))
                .send()
                .await?
                .json()
                .await?;
            let id = job["id"].as_str().context("job id")?.to_string();
            let mut peak = 0;
            for _ in 0..80 {
                let j = get_json(&http, format!("{}/v1/jobs/{id}", server.base)).await?;
                if let Some(pid) = j["attempts"][0]["pid"].as_u64()
                    && let Ok(kb) = rss_kb(pid as u32)
                {
                    peak = peak.max(kb);
                }
                if j["state"] != "running" && j["state"] != "queued" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!(
                "(e) real CLI resident memory while answering: {:.0} MB",
                peak as f64 / 1024.0
            );
        }
    }
    let _ = mock.kill();
    let _ = mock.wait();
    println!(
        "  warm time to first event <= 0.2 x cold: {:.0} vs {:.0} ms -> {:.2}x",
        results[1],
        results[0],
        results[1] / results[0]
    );
    Ok(())
}
