//! `cargo xtask bench`: the numbers in `docs/benchmarks.md`. Everything runs on loopback,
//! bounded in count and time, against release builds of `baton` and `fake-claude`.
//!
//! (a) raw spawn-and-reap of fake-claude, the ceiling for any wrapper on this machine;
//! (b) end-to-end jobs over HTTP at concurrency 1, 8 and 32;
//! (c) queue-only claim+complete throughput on SQLite (no process at all);
//! (d) the server's resident memory with 200 attempts running;
//! (e) with `--real`: the pinned real CLI against `mock-anthropic`, cold versus warm: time to
//!     first event and total latency over 50 jobs each, and the CLI's memory;
//! with `--auth` (`auth.rs`): the cost of the key check and the rate limits;
//! with `--scale` (`scale.rs`): restart after `kill -9` under a long history, submit
//!     throughput, a long log replayed over SSE, 1,000 followers of one job.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{JobId, JobRequest, Limits, ProjectId, Transition};
use baton_store::{Finish, NewEvent, NewJob, Store};

use crate::{cargo, root, run};

mod auth;
mod pg;
mod real;
mod scale;
mod spend;
mod stream;

use pg::{fresh_schema, postgres};
use real::{get_json, millis, pct, real_cli};

struct Stats {
    n: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    Stats {
        n: lat.len(),
        secs: wall.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn spawn_once(fake: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new(fake)
        .args(["-p", "--output-format", "stream-json", "--verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .env("HOME", std::env::temp_dir())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"FAKE text bench")?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_string(&mut out)?;
    let status = child.wait()?;
    if !status.success() || !out.contains("\"type\":\"result\"") {
        bail!("fake-claude failed: {status}");
    }
    Ok(start.elapsed())
}

/// CPU seconds used by this process's reaped children so far.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// CPU seconds of process `pid`: (its own, its reaped children's), from `/proc`.
fn process_cpu(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Linux reports these in USER_HZ, 100 per second on every architecture it runs on.
    let hz = 100.0;
    anyhow::ensure!(f.len() == 4, "malformed stat");
    Ok(((f[0] + f[1]) / hz, (f[2] + f[3]) / hz))
}

/// (a) Spawns, feeds, drains and reaps `total` fake-claude processes, `threads` at a time.
/// Also returns the CPU each run cost (ms), all of it the CLI's and the kernel's.
fn raw_spawn(fake: &Path, threads: usize, total: usize) -> anyhow::Result<(Stats, f64)> {
    let cpu = children_cpu();
    let start = Instant::now();
    let per = total / threads;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let fake = fake.to_path_buf();
            std::thread::spawn(move || {
                (0..per)
                    .map(|_| spawn_once(&fake))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
    }
    let wall = start.elapsed();
    let per_run_ms = (children_cpu() - cpu) * 1000.0 / lat.len() as f64;
    Ok((stats(lat, wall), per_run_ms))
}

pub(crate) struct Server {
    child: std::process::Child,
    base: String,
    port: u16,
    bin: PathBuf,
    /// When the current process was spawned.
    spawned: Instant,
    dir: tempfile::TempDir,
}

impl Server {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the server again on the same data directory and port; does not wait.
    fn respawn(&mut self, fake: &Path, concurrency: usize, extra: &[String]) -> anyhow::Result<()> {
        self.spawned = Instant::now();
        self.child = spawn_server(
            &self.bin,
            fake,
            self.dir.path(),
            self.port,
            concurrency,
            extra,
        )?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &Path, fake: &Path, concurrency: usize) -> anyhow::Result<Server> {
    start_server_with(bin, fake, concurrency, &[])
}

fn spawn_server(
    bin: &Path,
    fake: &Path,
    dir: &Path,
    port: u16,
    concurrency: usize,
    extra: &[String],
) -> anyhow::Result<std::process::Child> {
    Ok(Command::new(bin)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .arg("--claude-bin")
        .arg(fake)
        .args(["--max-concurrency", &concurrency.to_string()])
        .args([
            "--set",
            "runner.silence_timeout_seconds=600",
            "--set",
            "server.log=warn",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn start_server_with(
    bin: &Path,
    fake: &Path,
    concurrency: usize,
    extra: &[String],
) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spawned = Instant::now();
    let child = spawn_server(bin, fake, dir.path(), port, concurrency, extra)?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server {
        child,
        base,
        port,
        bin: bin.to_path_buf(),
        spawned,
        dir,
    })
}

/// (b) `clients` loops each submitting with `?wait=` until `total` jobs have completed,
/// client `i` to `bases[i % len]`. Also returns each job's enqueue->start time (ms), from
/// its own timestamps.
async fn end_to_end_on(
    bases: &[String],
    clients: usize,
    total: usize,
) -> anyhow::Result<(Stats, Vec<f64>)> {
    end_to_end_by(&reqwest::Client::new(), bases, clients, total).await
}

/// As [`end_to_end`], with the given client (which may carry an API key).
async fn end_to_end_with(
    http: &reqwest::Client,
    base: &str,
    clients: usize,
    total: usize,
) -> anyhow::Result<Stats> {
    Ok(end_to_end_by(http, &[base.to_string()], clients, total)
        .await?
        .0)
}

async fn end_to_end_by(
    http: &reqwest::Client,
    bases: &[String],
    clients: usize,
    total: usize,
) -> anyhow::Result<(Stats, Vec<f64>)> {
    let start = Instant::now();
    let per = total / clients;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let http = http.clone();
        let url = format!("{}/v1/jobs?wait=60", bases[i % bases.len()]);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut to_start = Vec::new();
            for _ in 0..per {
                let t = Instant::now();
                let job: serde_json::Value = http
                    .post(&url)
                    .json(&serde_json::json!({"prompt": "FAKE text bench", "max_attempts": 1}))
                    .send()
                    .await?
                    .json()
                    .await?;
                if job["state"] != "completed" {
                    bail!("a bench job did not complete: {job}");
                }
                lat.push(t.elapsed());
                if let (Some(c), Some(s)) = (job["created_at"].as_str(), job["started_at"].as_str())
                {
                    to_start.push((millis(s) - millis(c)) as f64);
                }
            }
            Ok((lat, to_start))
        }));
    }
    let (mut lat, mut to_start) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, s) = t.await??;
        lat.extend(l);
        to_start.extend(s);
    }
    Ok((stats(lat, start.elapsed()), to_start))
}

async fn end_to_end(base: &str, clients: usize, total: usize) -> anyhow::Result<Stats> {
    Ok(end_to_end_on(&[base.to_string()], clients, total).await?.0)
}

/// (c) Claim and complete `total` jobs straight through the store, `batch` per claim.
async fn queue_only(total: usize, batch: u32) -> anyhow::Result<Stats> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.db")).await?;
    queue_only_on(&[store], total, batch).await
}

/// Queue-only throughput with one claiming loop per store handle (one per node), all on
/// the same queue.
async fn queue_only_on(stores: &[Store], total: usize, batch: u32) -> anyhow::Result<Stats> {
    let store = &stores[0];
    let spec = JobRequest::prompt("noop").parse(&Limits::default())?;
    for _ in 0..total {
        let job = NewJob {
            id: JobId::new(),
            project_id: ProjectId::default(),
            spec: spec.clone(),
            run_at: 0,
            idempotency: None,
        };
        store.insert_job(job, 0).await?;
    }
    let finish = Finish {
        transition: Transition::Succeed,
        run_at: None,
        outcome: None,
        error: None,
        event: NewEvent::new("job.completed", serde_json::json!({"state": "completed"})),
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        reaped: true,
    };
    let finish = Arc::new(finish);
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loops = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let (store, finish, done) = (store.clone(), finish.clone(), done.clone());
        loops.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let node = format!("bench-{n}");
            while done.load(std::sync::atomic::Ordering::SeqCst) < total {
                let t = Instant::now();
                let claimed = store.claim(&node, 1, 60_000, batch).await?;
                if claimed.is_empty() {
                    break;
                }
                // A no-op executor finishes its whole batch at once: one group commit.
                let batch: Vec<_> = claimed
                    .iter()
                    .map(|c| (c.job.id, c.job.attempt, &*finish))
                    .collect();
                for result in store.finish_attempts(&batch, 2).await? {
                    result?;
                }
                done.fetch_add(claimed.len(), std::sync::atomic::Ordering::SeqCst);
                let per_job = t.elapsed() / claimed.len() as u32;
                lat.extend(std::iter::repeat_n(per_job, claimed.len()));
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for l in loops {
        lat.extend(l.await??);
    }
    let done = done.load(std::sync::atomic::Ordering::SeqCst);
    if done < total {
        bail!("the queue ran dry after {done} jobs");
    }
    Ok(stats(lat, start.elapsed()))
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// (d) The server's RSS (children excluded) with `n` attempts running at once.
async fn memory(bin: &Path, fake: &Path, n: usize) -> anyhow::Result<(u64, u64)> {
    let server = start_server(bin, fake, n)?;
    let idle = rss_kb(server.child.id())?;
    let http = reqwest::Client::new();
    for _ in 0..n {
        http.post(format!("{}/v1/jobs", server.base))
            .json(&serde_json::json!({"prompt": "FAKE slow 120 500", "max_attempts": 1}))
            .send()
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = get_json(&http, format!("{}/v1/health", server.base)).await?;
        if h["running_here"].as_u64() == Some(n as u64) {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} attempts started: {h}", h["running_here"]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let every attempt stream for a while, then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let busy = rss_kb(server.child.id())?;
    Ok((idle, busy))
}

fn release_bins() -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "baton",
        "-p",
        "fake-claude",
        "-p",
        "mock-anthropic",
    ]);
    run(build)?;
    let dir = root().join("target/release");
    Ok((dir.join("baton"), dir.join("fake-claude")))
}

/// The release server (or `--baton PATH`), the fake CLI, and a runtime to drive them.
fn server_under_test(
    args: &[String],
) -> anyhow::Result<(PathBuf, PathBuf, tokio::runtime::Runtime)> {
    let (mut bin, fake) = release_bins()?;
    if let Some(path) = option(args, "--baton")? {
        bin = PathBuf::from(path);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok((bin, fake, rt))
}

/// The value after `name` in `args`, if `name` is there.
fn option<'a>(args: &'a [String], name: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .map(|v| Some(v.as_str()))
            .with_context(|| format!("{name} needs a value")),
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    // The queue benchmark runs the store in this process: measure optimized code.
    if cfg!(debug_assertions) {
        let mut release = cargo();
        release
            .args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
            .args(args);
        return run(release);
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--real") {
        let (bin, _) = release_bins()?;
        let mock = root().join("target/release/mock-anthropic");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(real_cli(&bin, &mock, if quick { 10 } else { 50 }));
    }
    if args.iter().any(|a| a == "--auth") {
        let (bin, fake, rt) = server_under_test(args)?;
        return rt.block_on(auth::main(&bin, &fake));
    }
    if args.iter().any(|a| a == "--stream") {
        let (bin, fake, rt) = server_under_test(args)?;
        return stream::main(&rt, &bin, &fake, quick);
    }
    if args.iter().any(|a| a == "--spend") {
        let (bin, fake, rt) = server_under_test(args)?;
        return spend::main(&rt, &bin, &fake, quick);
    }
    if args.iter().any(|a| a == "--queue-only") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let c = rt.block_on(queue_only(5_000, 64))?;
        println!(
            "(c) queue only: {:.0} jobs/s over {} jobs",
            c.n as f64 / c.secs,
            c.n
        );
        return Ok(());
    }
    if args.iter().any(|a| a == "--scale") {
        let (mut bin, fake) = release_bins()?;
        let other = option(args, "--baton")?;
        if let Some(path) = other {
            bin = PathBuf::from(path);
            println!("server: {}", bin.display());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let cluster;
        let backend = if args.iter().any(|a| a == "--postgres") {
            match option(args, "--database-url")? {
                Some(url) => scale::Backend::Postgres(url.to_string()),
                None => {
                    cluster = baton_store::testing::PrivateCluster::start()
                        .map_err(|e| anyhow::anyhow!(e))?;
                    scale::Backend::Postgres(cluster.url())
                }
            }
        } else {
            scale::Backend::Sqlite
        };
        // Another build may not read this build's schema: it runs its history itself.
        let by = if other.is_some() || args.iter().any(|a| a == "--run-history") {
            scale::History::Run
        } else {
            scale::History::Seeded
        };
        return scale::main(&rt, &bin, &fake, &backend, quick, by);
    }
    let scale = if quick { 4 } else { 1 };
    if args.iter().any(|a| a == "--postgres") {
        let url = option(args, "--database-url")?.map(str::to_string);
        return postgres(scale, url);
    }
    let (mut bin, fake) = release_bins()?;
    // `--baton PATH`: measure another build of the server (a baseline to compare a change
    // with) against the same fake CLI and harness.
    if let Some(path) = option(args, "--baton")? {
        bin = PathBuf::from(path);
        println!("server: {}", bin.display());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );

    let (a1, a1_cpu) = raw_spawn(&fake, 1, 200 / scale)?;
    let (a8, a8_cpu) = raw_spawn(&fake, 8, 800 / scale)?;
    println!(
        "(a) raw spawn+reap, 1 at a time: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; CPU per run {a1_cpu:.2} ms",
        a1.n as f64 / a1.secs,
        a1.p50_ms,
        a1.p99_ms
    );
    println!(
        "(a) raw spawn+reap, 8 at a time: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; CPU per run {a8_cpu:.2} ms",
        a8.n as f64 / a8.secs,
        a8.p50_ms,
        a8.p99_ms
    );

    // `--workspace-dir DIR`: attempt workspaces there (say a tmpfs), the database still in
    // the server's data directory.
    let mut server_flags = Vec::new();
    if let Some(dir) = option(args, "--workspace-dir")? {
        println!("workspaces: {dir}");
        server_flags = vec!["--set".to_string(), format!("runner.workspace_dir={dir}")];
    }
    let mut e2e = Vec::new();
    for (c, total) in [(1, 200 / scale), (8, 800 / scale), (32, 1600 / scale)] {
        let server = start_server_with(&bin, &fake, 32, &server_flags)?;
        // Warm up: the first job pays for opening the database pages and the binary.
        rt.block_on(end_to_end(&server.base, 1, 5))?;
        let (own, cli) = process_cpu(server.child.id())?;
        let s = rt.block_on(end_to_end(&server.base, c, total))?;
        let (own2, cli2) = process_cpu(server.child.id())?;
        println!(
            "(b) HTTP end to end, concurrency {c}: {:.0} jobs/s, submit->complete p50 {:.2} ms, p99 {:.2} ms ({} jobs); CPU per job: Baton {:.2} ms, CLI {:.2} ms",
            s.n as f64 / s.secs,
            s.p50_ms,
            s.p99_ms,
            s.n,
            (own2 - own) * 1000.0 / s.n as f64,
            (cli2 - cli) * 1000.0 / s.n as f64,
        );
        e2e.push((c, s));
    }
    let c = rt.block_on(queue_only(20_000 / scale, 64))?;
    println!(
        "(c) queue only (SQLite, claim 64 + complete each): {:.0} jobs/s over {} jobs",
        c.n as f64 / c.secs,
        c.n
    );
    let (idle, busy) = rt.block_on(memory(&bin, &fake, 200))?;
    println!(
        "(d) server RSS: idle {:.1} MB, 200 attempts running {:.1} MB (children excluded)",
        idle as f64 / 1024.0,
        busy as f64 / 1024.0
    );

    let b8 = &e2e[1].1;
    let b1 = &e2e[0].1;
    println!("targets:");
    println!(
        "  (b) at 8 >= 0.8 x (a) at 8: {:.0} vs {:.0} -> {:.2}x",
        b8.n as f64 / b8.secs,
        a8.n as f64 / a8.secs,
        (b8.n as f64 / b8.secs) / (a8.n as f64 / a8.secs)
    );
    println!(
        "  added latency at 1, p50: {:.2} ms (target <= 3 ms)",
        b1.p50_ms - a1.p50_ms
    );
    println!("  (c) >= 5000 jobs/s: {:.0}", c.n as f64 / c.secs);
    println!("  (d) <= 50 MB: {:.1} MB", busy as f64 / 1024.0);
    Ok(())
}
