//! `cargo xtask bench --stream`: how soon a streamed answer of the compatible APIs
//! reaches its client. The fake CLI streams 20 text deltas 20 ms apart and appends, as it
//! prints each one, the time (`FAKE print_log`); the client notes when each arrives. The
//! delay is the difference, on one machine's clock (target: the first delta within 5 ms
//! p50 of its printing, and every delta printed arrives).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::start_server_with;

const DELTAS: usize = 20;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The text deltas of one frame of either API's stream (the gap between blocks that the
/// OpenAI shape writes is Baton's, not a delta the CLI printed).
fn is_delta(openai: bool, data: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    if openai {
        v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty() && t != "\n\n")
    } else {
        v["type"] == "content_block_delta"
    }
}

/// One streamed request: when each delta arrived, and when the CLI printed each.
async fn one(
    http: &reqwest::Client,
    base: &str,
    openai: bool,
    log: &Path,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let _ = std::fs::remove_file(log);
    let prompt = format!("FAKE print_log {}\nFAKE slow {DELTAS} 20", log.display());
    let (path, body) = if openai {
        (
            "/v1/chat/completions",
            json!({"model": "sonnet", "stream": true,
            "messages": [{"role": "user", "content": prompt}]}),
        )
    } else {
        (
            "/v1/messages",
            json!({"model": "sonnet", "stream": true, "max_tokens": 1024,
            "messages": [{"role": "user", "content": prompt}]}),
        )
    };
    let resp = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
    let mut arrived = Vec::new();
    let mut buf = String::new();
    let mut bytes = resp.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        let at = now_us();
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ")
                    && is_delta(openai, data)
                {
                    arrived.push(at);
                }
            }
        }
    }
    let printed = std::fs::read_to_string(log)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    Ok((arrived, printed))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn main(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    fake: &Path,
    quick: bool,
) -> anyhow::Result<()> {
    let runs = if quick { 10 } else { 30 };
    let server = start_server_with(bin, fake, 4, &[])?;
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("printed.log");
    rt.block_on(async {
        // Warm up: the first job pays for opening the database pages and the binary.
        one(&http, &server.base, true, &log).await?;
        for (openai, name) in [(true, "OpenAI /v1/chat/completions"), (false, "Anthropic /v1/messages")] {
            let (mut first, mut all) = (Vec::new(), Vec::new());
            let mut missing = 0usize;
            for _ in 0..runs {
                let (arrived, printed) = one(&http, &server.base, openai, &log).await?;
                missing += printed.len().abs_diff(arrived.len());
                anyhow::ensure!(printed.len() == DELTAS, "the CLI printed {} deltas", printed.len());
                for (i, (a, p)) in arrived.iter().zip(&printed).enumerate() {
                    let ms = (*a as f64 - *p as f64) / 1000.0;
                    if i == 0 {
                        first.push(ms);
                    }
                    all.push(ms);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "(f) {name}, {runs} streams of {DELTAS} deltas: first delta after the CLI printed it p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; every delta p50 {:.2} ms, p99 {:.2} ms; deltas printed but not received: {missing}",
                percentile(&mut first, 0.5),
                percentile(&mut first, 0.99),
                percentile(&mut first, 1.0),
                percentile(&mut all, 0.5),
                percentile(&mut all, 0.99),
            );
        }
        Ok(())
    })
}
