//! `cargo xtask bench --scale`: how Baton behaves as its history grows. Loopback only,
//! bounded in count and time.
//!
//! - restart to ready after `kill -9` with 1,000, 10,000 and 100,000 finished jobs in the
//!   database, all run by the incarnation that is killed, and a few running;
//! - HTTP submit throughput at concurrency 8 (jobs only queue: one slot, held);
//! - one job's log of 20,000 events replayed over SSE;
//! - 1,000 SSE followers of one running job: every follower gets every event, and the
//!   server's memory meanwhile.
//!
//! The history is written through the store's own API, as the server writes it (insert,
//! claim, an append with the CLI's pid and events, a finish by the attempt's supervisor),
//! under the killed incarnation's id, after its death: the database is then what that
//! incarnation would have left had it run those jobs itself, in a fraction of the time.
//! With `--baton OLD` (another build, whose schema this build's store may not match) the
//! server runs its history itself instead, over HTTP with `fake-claude`: slower, so up to
//! 10,000 jobs, but the same for both builds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{JobId, JobRequest, Limits, ProjectId, Transition};
use baton_store::{AttemptMeta, Finish, NewEvent, NewJob, Store};
use futures_util::StreamExt;
use serde_json::json;

use super::{Server, fresh_schema, get_json, pct, rss_kb, start_server_with};

/// Where the servers keep their jobs.
#[derive(Clone)]
pub enum Backend {
    Sqlite,
    /// A base URL; every measurement takes a fresh schema in it.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

/// A server on a fresh database, with what is needed to open its store and restart it.
struct Fresh {
    server: Server,
    /// The PostgreSQL schema, kept as long as the server uses it.
    database: Option<baton_store::testing::TestDatabase>,
    flags: Vec<String>,
}

impl Fresh {
    async fn start(
        bin: &Path,
        fake: &Path,
        backend: &Backend,
        slots: usize,
    ) -> anyhow::Result<Self> {
        let (database, flags) = match backend {
            Backend::Sqlite => (None, Vec::new()),
            Backend::Postgres(base) => {
                let db = fresh_schema(base).await?;
                let flags = vec!["--database-url".to_string(), db.url.clone()];
                (Some(db), flags)
            }
        };
        let server = start_server_with(bin, fake, slots, &flags)?;
        Ok(Self {
            server,
            database,
            flags,
        })
    }

    async fn store(&self) -> anyhow::Result<Store> {
        Ok(match &self.database {
            None => Store::open(&self.server.dir().join("baton.db")).await?,
            Some(db) => Store::connect_postgres(&db.url, 4).await?,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes `n` finished jobs run by `incarnation`, each as the server would have left it:
/// queued, claimed, a pid and three CLI events appended, completed by its supervisor.
async fn seed_history(store: &Store, incarnation: &str, n: usize) -> anyhow::Result<()> {
    let spec = JobRequest::prompt("FAKE text history").parse(&Limits::default())?;
    let events = [
        NewEvent::new(
            "system",
            json!({"type": "system", "subtype": "init", "session_id": "00000000-0000-4000-8000-000000000000", "tools": ["Bash", "Read"], "model": "claude-sonnet-4-5"}),
        ),
        NewEvent::new(
            "assistant",
            json!({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "history"}]}}),
        ),
        NewEvent::new(
            "result",
            json!({"type": "result", "subtype": "success", "is_error": false, "result": "history", "total_cost_usd": 0.001, "num_turns": 1}),
        ),
    ];
    let finish = Finish {
        transition: Transition::Succeed,
        run_at: None,
        outcome: Some(json!({"result": "history"})),
        error: None,
        event: NewEvent::new(
            "job.completed",
            json!({"state": "completed", "result": "history"}),
        ),
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        reaped: true,
    };
    let left = Arc::new(AtomicUsize::new(n));
    let mut writers = Vec::new();
    // A few writers at once, as a busy server's supervisors would be.
    for w in 0..4u32 {
        let (store, spec, events, finish, left) = (
            store.clone(),
            spec.clone(),
            events.clone(),
            finish.clone(),
            left.clone(),
        );
        let incarnation = incarnation.to_string();
        writers.push(tokio::spawn(async move {
            let mut pid = 1_000 + w as i32 * 1_000_000;
            loop {
                let batch = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                        l.checked_sub(64.min(l))
                    })
                    .map(|l| 64.min(l))
                    .unwrap_or(0);
                if batch == 0 {
                    return anyhow::Ok(());
                }
                let now = now_ms();
                let mut ids = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let id = JobId::new();
                    ids.push(id);
                    let job = NewJob {
                        id,
                        project_id: ProjectId::default(),
                        spec: spec.clone(),
                        run_at: now,
                        idempotency: None,
                    };
                    store.insert_job(job, now).await?;
                }
                // Claims take whatever is due, another writer's jobs included, and two
                // writers may race for the same rows: the last sweep below takes the rest.
                let mut claimed = 0;
                while claimed < batch {
                    let got =
                        claim_and_finish(&store, &incarnation, &events, &finish, &mut pid).await?;
                    if got == 0 {
                        break;
                    }
                    claimed += got;
                }
            }
        }));
    }
    for w in writers {
        w.await??;
    }
    let mut pid = 5_000_000;
    while claim_and_finish(store, incarnation, &events, &finish, &mut pid).await? > 0 {}
    let queued = store.count_open(&ProjectId::default()).await?.queued;
    if queued > 0 {
        bail!("the seeding left {queued} jobs queued");
    }
    Ok(())
}

/// Claims due jobs as `incarnation` and runs each as the server would record it: the
/// CLI's pid and events, then the supervisor's finish. Returns how many it claimed.
async fn claim_and_finish(
    store: &Store,
    incarnation: &str,
    events: &[NewEvent],
    finish: &Finish,
    pid: &mut i32,
) -> anyhow::Result<usize> {
    let now = now_ms();
    let got = store.claim(incarnation, now, 600_000, 64).await?;
    for c in &got {
        *pid += 1;
        let meta = AttemptMeta {
            pid: Some((*pid, 1_000 + *pid as u64)),
            ..AttemptMeta::default()
        };
        store
            .append_events(c.job.id, c.job.attempt, events, &meta, now)
            .await?;
    }
    let ends: Vec<_> = got
        .iter()
        .map(|c| (c.job.id, c.job.attempt, finish))
        .collect();
    for r in store.finish_attempts(&ends, now).await? {
        r?;
    }
    Ok(got.len())
}

/// Submits `n` jobs that run until the server dies, and waits until all run.
async fn hold_slots(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        http.post(format!("{base}/v1/jobs"))
            .json(&json!({"prompt": "FAKE slow 600 1000", "max_attempts": 3}))
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = get_json(http, format!("{base}/v1/health")).await?;
        if h["running_here"].as_u64() == Some(n as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} jobs started: {h}", h["running_here"]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long from spawning the server until `/v1/health` answers 200.
async fn until_ready(http: &reqwest::Client, server: &Server) -> anyhow::Result<Duration> {
    let t = server.spawned;
    let deadline = t + Duration::from_secs(120);
    loop {
        if let Ok(r) = http
            .get(format!("{}/v1/health", server.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(t.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the server was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How the killed incarnation's history comes to be.
#[derive(Clone, Copy, PartialEq)]
pub enum History {
    /// Written through this build's store after the kill.
    Seeded,
    /// Run by the server itself before the kill.
    Run,
}

/// Restart to ready after `kill -9`, `samples` times, with `history` finished jobs of the
/// killed incarnation and `running` attempts it was running.
async fn restart(
    bin: &Path,
    fake: &Path,
    backend: &Backend,
    (history, by): (usize, History),
    running: usize,
    samples: usize,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for _ in 0..samples {
        let mut fresh = Fresh::start(bin, fake, backend, running).await?;
        let health = get_json(&http, format!("{}/v1/health", fresh.server.base)).await?;
        let incarnation = health["incarnation"]
            .as_str()
            .context("health names no incarnation")?
            .to_string();
        if by == History::Run {
            let bases = Arc::new(vec![fresh.server.base.clone()]);
            crate::history::run(&http, &bases, history).await?;
        }
        hold_slots(&http, &fresh.server.base, running).await?;
        fresh.server.kill()?;
        if by == History::Seeded {
            let store = fresh.store().await?;
            seed_history(&store, &incarnation, history).await?;
        }
        fresh.server.respawn(fake, running, &fresh.flags)?;
        let ready = until_ready(&http, &fresh.server).await?;
        // The restart requeued what was running, and those jobs run again.
        let h = get_json(&http, format!("{}/v1/health", fresh.server.base)).await?;
        let open = ["queued", "running"]
            .iter()
            .map(|s| h["jobs"][s].as_u64().unwrap_or(0) as usize)
            .sum::<usize>();
        if open != running {
            bail!("the restart did not requeue the {running} jobs that were running: {h}");
        }
        // What one health answer costs with this history, once ready.
        let mut health = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            get_json(&http, format!("{}/v1/health", fresh.server.base)).await?;
            health.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        out.push((ready.as_secs_f64() * 1000.0, pct(health, 0.5)));
    }
    Ok(out)
}

/// HTTP submissions at concurrency `clients`, `total` in all; the jobs only queue (one
/// slot, held by a job that runs all along). Jobs per second.
async fn submit_rate(bin: &Path, fake: &Path, clients: usize, total: usize) -> anyhow::Result<f64> {
    let server = start_server_with(bin, fake, 1, &[])?;
    let http = reqwest::Client::new();
    hold_slots(&http, &server.base, 1).await?;
    let per = total / clients;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url) = (http.clone(), format!("{}/v1/jobs", server.base));
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                http.post(&url)
                    .json(&json!({"prompt": "FAKE text queued"}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per * clients) as f64 / t.elapsed().as_secs_f64())
}

/// Reads an SSE response to its end: how many events it carried.
async fn count_events(resp: reqwest::Response) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut stream = resp.bytes_stream();
    let mut at_line_start = true;
    while let Some(chunk) = stream.next().await {
        for &b in chunk?.iter() {
            // An event's `id:` line: count those that start a line.
            if at_line_start && b == b'i' {
                n += 1;
            }
            at_line_start = b == b'\n';
        }
    }
    Ok(n)
}

/// One job's log of about `events` events, replayed over SSE after the job ended:
/// (events received, milliseconds to the stream's end).
async fn replay(bin: &Path, fake: &Path, events: usize) -> anyhow::Result<(usize, u64, f64)> {
    let server = start_server_with(bin, fake, 1, &[])?;
    let http = reqwest::Client::new();
    let job: serde_json::Value = http
        .post(format!("{}/v1/jobs?wait=300", server.base))
        .json(&json!({"prompt": format!("FAKE slow {events} 0"), "max_attempts": 1}))
        .send()
        .await?
        .json()
        .await?;
    if job["state"] != "completed" {
        bail!("the long job did not complete: {job}");
    }
    let id = job["id"].as_str().context("job id")?;
    let stored = job["last_event_seq"].as_u64().unwrap_or(0);
    let mut times = Vec::new();
    let mut got = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let resp = http
            .get(format!("{}/v1/jobs/{id}/events", server.base))
            .send()
            .await?;
        got = count_events(resp).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((got, stored, pct(times, 0.5)))
}

/// `followers` SSE streams of one job of `chunks` events 100 ms apart: (followers that got
/// every event, events stored, server RSS before and at its peak in KB, ms from the job's
/// end to the last stream's close).
async fn fan_out(
    bin: &Path,
    fake: &Path,
    followers: usize,
    chunks: usize,
) -> anyhow::Result<(usize, u64, u64, u64, f64)> {
    let server = start_server_with(bin, fake, 1, &[])?;
    let pid = server.child.id();
    let http = reqwest::Client::new();
    let idle = rss_kb(pid)?;
    let job: serde_json::Value = http
        .post(format!("{}/v1/jobs", server.base))
        .json(&json!({"prompt": format!("FAKE slow {chunks} 100"), "max_attempts": 1}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().context("job id")?.to_string();
    // Each follower its own connection, as separate clients would be.
    let streams = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let ended = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..followers {
        let (streams, url, ended) = (
            streams.clone(),
            format!("{}/v1/jobs/{id}/events", server.base),
            ended.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let n = count_events(streams.get(url).send().await?).await?;
            ended.lock().unwrap().push(Instant::now());
            anyhow::Ok(n)
        }));
    }
    let mut peak = idle;
    while !tasks.iter().all(|t| t.is_finished()) {
        peak = peak.max(rss_kb(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await??);
    }
    let done = get_json(&http, format!("{}/v1/jobs/{id}", server.base)).await?;
    let stored = done["last_event_seq"].as_u64().unwrap_or(0);
    let finished = done["finished_at"].as_str().map(super::millis).unwrap_or(0);
    let ended = ended.lock().unwrap().clone();
    let last_close = ended.iter().max().copied().unwrap_or_else(Instant::now);
    // The job's end is a wall-clock stamp: compare it with the last close on that clock.
    let last_close_ms = now_ms() - last_close.elapsed().as_millis() as i64;
    let complete = counts.iter().filter(|&&n| n as u64 == stored).count();
    Ok((
        complete,
        stored,
        idle,
        peak,
        (last_close_ms - finished) as f64,
    ))
}

pub fn main(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    fake: &Path,
    backend: &Backend,
    quick: bool,
    by: History,
) -> anyhow::Result<()> {
    let (sizes, samples): (&[usize], usize) = match (quick, by) {
        (true, _) => (&[1_000, 10_000], 1),
        (false, History::Seeded) => (&[1_000, 10_000, 100_000], 3),
        (false, History::Run) => (&[1_000, 10_000], 3),
    };
    for &n in sizes {
        let t = Instant::now();
        let (ms, health): (Vec<f64>, Vec<f64>) = rt
            .block_on(restart(bin, fake, backend, (n, by), 4, samples))?
            .into_iter()
            .unzip();
        println!(
            "(scale) {} restart to ready after kill -9, {n} finished jobs of the killed incarnation ({}) + 4 running: p50 {:.0} ms, max {:.0} ms ({samples} restarts; {:.0} s in all); one health answer then takes {:.1} ms",
            backend.name(),
            match by {
                History::Seeded => "written through the store",
                History::Run => "run by the server",
            },
            pct(ms.clone(), 0.5),
            pct(ms, 1.0),
            t.elapsed().as_secs_f64(),
            pct(health, 0.5)
        );
    }
    if matches!(backend, Backend::Postgres(_)) {
        return Ok(());
    }
    let rate = rt.block_on(submit_rate(bin, fake, 8, if quick { 2_000 } else { 8_000 }))?;
    println!("(scale) HTTP submit at concurrency 8 (jobs only queue): {rate:.0} jobs/s");
    let (got, stored, ms) = rt.block_on(replay(bin, fake, 20_000))?;
    println!(
        "(scale) replay over SSE of one job's {stored} events: {got} received in {ms:.0} ms (p50 of 3)"
    );
    let (complete, stored, idle, peak, lag) = rt.block_on(fan_out(bin, fake, 1_000, 50))?;
    println!(
        "(scale) 1000 SSE followers of one job ({stored} events, 100 ms apart): {complete} got every event; server RSS {:.1} MB idle, {:.1} MB peak; last stream closed {lag:.0} ms after the job ended",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    Ok(())
}
