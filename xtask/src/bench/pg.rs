//! `--postgres`: the queue on PostgreSQL.

use super::*;

/// The PostgreSQL benchmarks: queue-only throughput, and end to end over HTTP with
/// enqueue->start latency, with 1 and 3 nodes. On the server at `url` (each run in a fresh
/// schema), else on a private cluster started here.
pub(super) fn postgres(scale: usize, url: Option<String>) -> anyhow::Result<()> {
    let cluster = match &url {
        Some(_) => None,
        None => {
            Some(baton_store::testing::PrivateCluster::start().map_err(|e| anyhow::anyhow!(e))?)
        }
    };
    let base = match (&url, &cluster) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => c.url(),
        (None, None) => unreachable!("a cluster was started"),
    };
    let (bin, fake) = release_bins()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "machine: {} cores, {}; PostgreSQL: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH,
        if url.is_some() {
            "the server named by --database-url, with its own settings"
        } else {
            "a private cluster (fsync off, synchronous_commit off), Unix socket"
        }
    );
    for nodes in [1usize, 3] {
        let db = rt.block_on(fresh_schema(&base))?;
        let stores = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..nodes {
                v.push(Store::connect_postgres(&db.url, 4).await?);
            }
            anyhow::Ok(v)
        })?;
        let c = rt.block_on(queue_only_on(&stores, 20_000 / scale, 64))?;
        println!(
            "(c) PostgreSQL queue only, {nodes} node(s) (claim 64 + complete each): {:.0} jobs/s over {} jobs",
            c.n as f64 / c.secs,
            c.n
        );
    }
    for nodes in [1usize, 3] {
        let db = rt.block_on(fresh_schema(&base))?;
        let flags = vec!["--database-url".to_string(), db.url.clone()];
        let servers = (0..nodes)
            .map(|_| start_server_with(&bin, &fake, 32, &flags))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        rt.block_on(end_to_end_on(&bases, nodes, 5 * nodes))?;
        for (c, total) in [(8, 800 / scale), (32, 1600 / scale)] {
            let (s, to_start) = rt.block_on(end_to_end_on(&bases, c, total))?;
            println!(
                "(b) PostgreSQL HTTP end to end, {nodes} node(s), concurrency {c}: {:.0} jobs/s, submit->complete p50 {:.2} ms, p99 {:.2} ms; enqueue->start p50 {:.0} ms, p99 {:.0} ms ({} jobs)",
                s.n as f64 / s.secs,
                s.p50_ms,
                s.p99_ms,
                pct(to_start.clone(), 0.50),
                pct(to_start, 0.99),
                s.n
            );
        }
    }
    Ok(())
}

pub(super) async fn fresh_schema(base: &str) -> anyhow::Result<baton_store::testing::TestDatabase> {
    baton_store::testing::schema_in(base)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
