//! `cargo xtask bench --spend`: what the credential proxy and the sandbox cost.
//!
//! (p) The proxy: time to first byte of a streamed answer and the gaps between its
//! chunks, from `mock-anthropic` directly and through the proxy, in one run (target: the
//! proxy adds at most 1 ms p50 to the first byte; gaps equal the upstream's).
//! (s) The sandbox: bench (b) at concurrency 1 (a job submitted with `?wait=` until it
//! completes, fake CLI), with the proxy and without a sandbox, then with both, on the same
//! build (target: the sandbox adds at most 20 ms p50 to a cold attempt).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{end_to_end, start_server_with};

struct NoLedger;

impl baton_proxy::Sink for NoLedger {
    fn record(
        &self,
        _: baton_proxy::Call,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
    fn refused(
        &self,
        _: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` streamed answers of 5 chunks 20 ms apart from `base`: the time to each one's first
/// byte and every gap between chunks, in milliseconds.
async fn stream_timings(base: &str, key: &str, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let http = reqwest::Client::new();
    let (mut first, mut gaps) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let started = Instant::now();
        let resp = http
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&serde_json::json!({
                "model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                "messages": [{"role": "user", "content": "MOCK_SLOW 5 20"}]
            }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
        let mut body = resp.bytes_stream();
        let mut last: Option<Instant> = None;
        while let Some(chunk) = body.next().await {
            chunk?;
            let now = Instant::now();
            match last {
                None => first.push(now.duration_since(started).as_secs_f64() * 1000.0),
                Some(l) => gaps.push(now.duration_since(l).as_secs_f64() * 1000.0),
            }
            last = Some(now);
        }
    }
    Ok((first, gaps))
}

/// Gaps of the 20 ms kind only (a chunk split by the network shows up as a near-0 gap).
fn slow_gaps(gaps: Vec<f64>) -> Vec<f64> {
    gaps.into_iter().filter(|g| *g > 5.0).collect()
}

pub fn main(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    fake: &Path,
    quick: bool,
) -> anyhow::Result<()> {
    let n = if quick { 50 } else { 300 };
    rt.block_on(async {
        let mock = mock_anthropic::MockAnthropic::start().await;
        let proxy = baton_proxy::Proxy::start(
            baton_proxy::Config {
                upstream: mock.base_url(),
                credential: baton_proxy::Credential::ApiKey("sk-ant-bench".into()),
                prices: baton_proxy::Prices::default(),
                connect_timeout: Duration::from_secs(5),
                socket: None,
            },
            Arc::new(NoLedger),
        )
        .await?;
        let token = proxy.grant(baton_proxy::Grant {
            project: "default".into(),
            job: "bench".into(),
            attempt: 1,
            key_id: None,
            agent: None,
            routine: None,
            limits: Vec::new(),
        });
        // Warm both paths, then alternate so both see the same machine.
        stream_timings(&mock.base_url(), "sk-ant-bench", 5).await?;
        stream_timings(&proxy.base_url(), token.value(), 5).await?;
        let (mut d_first, mut d_gaps, mut p_first, mut p_gaps) = (vec![], vec![], vec![], vec![]);
        for _ in 0..n / 10 {
            let (f, g) = stream_timings(&mock.base_url(), "sk-ant-bench", 10).await?;
            d_first.extend(f);
            d_gaps.extend(g);
            let (f, g) = stream_timings(&proxy.base_url(), token.value(), 10).await?;
            p_first.extend(f);
            p_gaps.extend(g);
        }
        let (df, pf) = (median(d_first), median(p_first));
        let (dg, pg) = (median(slow_gaps(d_gaps)), median(slow_gaps(p_gaps)));
        println!("(p) streamed answers, {n} each way, 5 chunks 20 ms apart:");
        println!("    direct: first byte p50 {df:.3} ms, chunk gap p50 {dg:.3} ms");
        println!("    proxied: first byte p50 {pf:.3} ms, chunk gap p50 {pg:.3} ms");
        println!(
            "    the proxy adds {:.3} ms p50 to the first byte (target <= 1 ms); gaps differ by {:.3} ms",
            pf - df,
            pg - dg
        );
        anyhow::Ok(())
    })?;

    // (s) cold attempts, at concurrency 1, without and with the sandbox.
    let dir = tempfile::tempdir()?;
    let credential = dir.path().join("credential");
    std::fs::write(&credential, "sk-ant-bench")?;
    // Only Baton may read it (a root Baton runs the sandbox as another user).
    std::fs::set_permissions(
        &credential,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let proxied = vec![
        "--set".to_string(),
        format!("proxy.credential_file={}", credential.display()),
        "--set".to_string(),
        "proxy.upstream=http://127.0.0.1:9".to_string(),
    ];
    let mut sandboxed = proxied.clone();
    sandboxed.extend(["--set".to_string(), "runner.sandbox=bwrap".to_string()]);
    let total = if quick { 50 } else { 200 };
    let mut p50 = Vec::new();
    for (name, flags) in [
        ("proxy, no sandbox", &proxied),
        ("proxy and sandbox", &sandboxed),
    ] {
        let server = start_server_with(bin, fake, 4, flags)?;
        rt.block_on(end_to_end(&server.base, 1, 5))?;
        let s = rt.block_on(end_to_end(&server.base, 1, total))?;
        println!(
            "(s) HTTP end to end at concurrency 1, {name}: submit->complete p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
            s.p50_ms, s.p99_ms, s.n
        );
        p50.push(s.p50_ms);
    }
    println!(
        "    the sandbox adds {:.2} ms p50 to a cold attempt (target <= 20 ms)",
        p50[1] - p50[0]
    );
    Ok(())
}
