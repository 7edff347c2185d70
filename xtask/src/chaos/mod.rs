//! `cargo xtask chaos [--kills N] [--history N] [--release] [--postgres --nodes N] [--prebuilt]`:
//! runs Baton with
//! `fake-claude` under a steady load, SIGKILLs the server (or, with `--nodes`, a random
//! node of several sharing one PostgreSQL) at random moments and restarts it, then checks
//! from the store and the clients' own records that:
//!
//! 1. every acknowledged job reached exactly one terminal state;
//! 2. no job completed twice;
//! 3. no two attempts of a job overlapped;
//! 4. every SSE stream a client saw is a gap-free, duplicate-free prefix of the stored log;
//! 5. no process of an attempt outlived it (none is left once the server is gone), and the
//!    jobs a killed server was running were requeued before its successor was ready;
//! 6. with several nodes: a killed node's attempts were ended (rescued) within the lease,
//!    by another node or by its own successor;
//! 7. a routine's cron trigger (every second) fired each slot from its first to its last
//!    exactly once, through the kills;
//! 8. every webhook delivery a node acknowledged fired its routine once, and one sent
//!    again never started a second run.
//!
//! With `--postgres`, the database is a private PostgreSQL cluster that is also restarted
//! once mid-run: the nodes must reconnect on their own and lose nothing acknowledged.
//! Clients fail over between nodes; SSE clients resume on another node with
//! `Last-Event-ID`. With `--history N`, the first incarnations run N jobs to the end
//! before the first kill, so the first restarts recover a node with a long past (and the
//! checks cover those jobs too). Loopback only, bounded in kills and time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{JobId, JobState};
use baton_store::Store;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{Value, json};

use crate::{cargo, root, run};

struct Options {
    kills: usize,
    release: bool,
    postgres: bool,
    nodes: usize,
    /// Run the binaries already in `target/` (the test run just built them) rather than
    /// building first: a plain build unifies features differently and would rebuild.
    prebuilt: bool,
    /// Jobs run to the end before the first kill.
    history: usize,
}

/// The lease the nodes run with under `--postgres`: short, so rescues happen often.
const NODE_LEASE_MS: u64 = 3_000;

fn number(value: Option<&String>, usage: &str) -> anyhow::Result<usize> {
    value
        .context(usage.to_string())?
        .parse()
        .context(usage.to_string())
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        kills: 20,
        release: false,
        postgres: false,
        nodes: 1,
        prebuilt: false,
        history: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kills" => o.kills = number(it.next(), "--kills N")?,
            "--history" => o.history = number(it.next(), "--history N")?,
            "--release" => o.release = true,
            "--postgres" => o.postgres = true,
            "--prebuilt" => o.prebuilt = true,
            "--nodes" => o.nodes = number(it.next(), "--nodes N")?,
            other => bail!("unknown chaos option {other}"),
        }
    }
    if o.kills == 0 || o.kills > 10_000 {
        bail!("--kills must be between 1 and 10000");
    }
    if o.history > 200_000 {
        bail!("--history must be at most 200000");
    }
    if o.nodes == 0 || o.nodes > 8 {
        bail!("--nodes must be between 1 and 8");
    }
    if o.nodes > 1 && !o.postgres {
        bail!("several nodes share a PostgreSQL database: add --postgres");
    }
    Ok(o)
}

mod load;
mod nodes;
mod routines;

use load::*;
use nodes::*;

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let (bin, fake) = binaries(opts.release, opts.prebuilt)?;
    let cluster = if opts.postgres {
        let c = baton_store::testing::PrivateCluster::start()
            .map_err(|e| anyhow::anyhow!("--postgres needs a PostgreSQL to start: {e}"))?;
        Some(c)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(chaos(&bin, &fake, &opts, cluster.as_ref()))
}

async fn chaos(
    bin: &Path,
    fake: &Path,
    opts: &Options,
    cluster: Option<&baton_store::testing::PrivateCluster>,
) -> anyhow::Result<()> {
    let kills = opts.kills;
    let database_url = cluster.map(|c| c.url());
    let mut nodes = Nodes {
        bin,
        fake,
        database_url: database_url.clone(),
        dirs: (0..opts.nodes)
            .map(|_| tempfile::tempdir())
            .collect::<Result<_, _>>()?,
        ports: (0..opts.nodes)
            .map(|_| {
                Ok::<_, std::io::Error>(
                    std::net::TcpListener::bind("127.0.0.1:0")?
                        .local_addr()?
                        .port(),
                )
            })
            .collect::<Result<_, _>>()?,
        servers: (0..opts.nodes).map(|_| None).collect(),
        incarnations: vec![String::new(); opts.nodes],
    };
    let bases = Arc::new((0..opts.nodes).map(|k| nodes.base(k)).collect::<Vec<_>>());
    // Every request of the run is bounded: a pooled connection that died with its server
    // can leave a request waiting forever (hyperium/hyper#2312), which would stop the run
    // itself rather than fail it.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .build()?;
    // The streams get their own client that keeps no idle connection: each stream is a
    // connection of its own anyway, and hyper's pool can leave a request waiting forever
    // for a connection that died with its server (hyperium/hyper#2312), which would pass
    // for a stream that never closes.
    let sse = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();

    for k in 0..opts.nodes {
        nodes.start(&http, k).await?;
    }
    if opts.history > 0 {
        let t = Instant::now();
        let ids = crate::history::run(&http, &bases, opts.history).await?;
        println!(
            "chaos: {} jobs of history ran in {:.1} s before the first kill",
            ids.len(),
            t.elapsed().as_secs_f64()
        );
        seen.lock().unwrap().acknowledged.extend(ids);
    }
    let routines = Arc::new(routines::setup(&http, &bases[0]).await?);
    let deliveries = Arc::new(Mutex::new(routines::Deliveries::default()));
    let hook_sender = tokio::spawn(routines::hook_sender(
        http.clone(),
        bases.clone(),
        routines.clone(),
        deliveries.clone(),
        stop.clone(),
    ));
    let submitters: Vec<_> = (0..6)
        .map(|n| {
            tokio::spawn(submitter(
                http.clone(),
                bases.clone(),
                seen.clone(),
                stop.clone(),
                n,
            ))
        })
        .collect();
    let mut followers = Vec::new();
    let mut followed = 0;
    let mut not_requeued = Vec::new();
    let mut restart_ms = Vec::new();
    let mut first_restart_ms = None;
    // (incarnation, when it was killed in ms since the epoch) for invariant 6.
    let mut killed: Vec<(String, i64)> = Vec::new();
    let mut postgres_restarted = None;
    for kill in 0..kills {
        let wait = rand::rng().random_range(200..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if let Some(c) = cluster
            && kill == kills / 2
        {
            // Once, mid-run: the database itself goes down and comes back.
            let t = Instant::now();
            c.restart().map_err(|e| anyhow::anyhow!(e))?;
            postgres_restarted = Some(t.elapsed());
        }
        let k = rand::rng().random_range(0..opts.nodes);
        let base = nodes.base(k);
        // Follow a few running jobs live, through the coming kill.
        let newest: Vec<String> = match http
            .get(format!("{base}/v1/jobs?state=running&limit=2"))
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|l| {
                    l["data"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|j| j["id"].as_str().map(str::to_string))
                            .collect()
                    })
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for id in newest {
            if followed < 4 * kills.min(50) {
                followed += 1;
                followers.push(tokio::spawn(follower(
                    sse.clone(),
                    bases.clone(),
                    k,
                    id,
                    seen.clone(),
                    followed,
                )));
            }
        }
        nodes.kill(k)?;
        killed.push((nodes.incarnations[k].clone(), now_ms()));
        if opts.nodes > 1 {
            // The others rescue the node's attempts once its lease runs out, or its
            // successor does at once if it comes back first.
            let down = rand::rng().random_range(0..NODE_LEASE_MS + 1_000);
            tokio::time::sleep(Duration::from_millis(down)).await;
        }
        restart_ms.push(nodes.start(&http, k).await?);
        first_restart_ms.get_or_insert(restart_ms[0]);
        // Invariant 5b: what the killed server was running was requeued before its
        // successor answered: nothing runs under a dead incarnation.
        let dead: std::collections::HashSet<&str> =
            killed.iter().map(|(i, _)| i.as_str()).collect();
        if let Ok(resp) = http
            .get(format!("{base}/v1/jobs?state=running&limit=200"))
            .send()
            .await
            && let Ok(list) = resp.json::<Value>().await
        {
            for job in list["data"].as_array().into_iter().flatten() {
                let id = job["id"].as_str().unwrap_or_default();
                if let Ok(r) = http.get(format!("{base}/v1/jobs/{id}")).send().await
                    && let Ok(j) = r.json::<Value>().await
                    && let Some(last) = j["attempts"].as_array().and_then(|a| a.last())
                    && j["state"] == "running"
                    && last["node_incarnation"]
                        .as_str()
                        .is_some_and(|i| dead.contains(i))
                {
                    not_requeued.push(format!(
                        "kill {kill}: job {id} still ran under a dead incarnation"
                    ));
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in submitters {
        let _ = s.await;
    }
    let _ = hook_sender.await;
    routines::pause(&http, &bases, &routines).await;
    // Let everything acknowledged finish, bounded.
    let acknowledged = seen.lock().unwrap().acknowledged.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &acknowledged {
        loop {
            let done = job_state(&http, &bases[0], id)
                .await
                .is_some_and(JobState::is_terminal);
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The routines' runs too: nothing queued or running is left (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let open = match http.get(format!("{}/v1/health", bases[0])).send().await {
            Ok(r) => r.json::<Value>().await.ok().map(|h| {
                h["jobs"]["queued"].as_i64().unwrap_or(1)
                    + h["jobs"]["running"].as_i64().unwrap_or(1)
            }),
            Err(_) => None,
        };
        if open == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let followers_ended = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(followers),
    )
    .await
    .is_ok();
    for server in nodes.servers.iter_mut().flatten() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let _ = server.child.wait();
    }
    nodes.servers.clear();
    let leftovers: Vec<i32> = nodes
        .dirs
        .iter()
        .flat_map(|d| processes_in(d.path()))
        .collect();

    // Check everything from the store itself.
    let store = match &database_url {
        Some(url) => Store::connect_postgres(url, 4).await?,
        None => Store::open(&nodes.dirs[0].path().join("baton.db")).await?,
    };
    let killed_at: HashMap<&str, i64> = killed.iter().map(|(i, t)| (i.as_str(), *t)).collect();
    let mut rescue_ms = Vec::new();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    let routine_jobs = routines::jobs(&store, &routines).await?;
    let routine_job_count = routine_jobs.len();
    seen.acknowledged.extend(routine_jobs);
    let mut violations: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts_total = 0;
    for id in &seen.acknowledged {
        let job_id = JobId::parse(id)?;
        let Ok(job) = store.get_job(job_id).await else {
            violations
                .entry("1 acknowledged job lost")
                .or_default()
                .push(id.clone());
            continue;
        };
        *states.entry(job.state.to_string()).or_default() += 1;
        let events = store.list_events(job_id, 0, 100_000).await?;
        let terminal = events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind.as_str(),
                    "job.completed" | "job.failed" | "job.dead" | "job.cancelled"
                )
            })
            .count();
        if !job.state.is_terminal() || terminal != 1 {
            violations
                .entry("1 exactly one terminal state")
                .or_default()
                .push(format!(
                    "{id}: {} with {terminal} terminal events",
                    job.state
                ));
        }
        let completed = events.iter().filter(|e| e.kind == "job.completed").count();
        if completed > 1 {
            violations
                .entry("2 completed at most once")
                .or_default()
                .push(format!("{id}: {completed}"));
        }
        let attempts = store.list_attempts(job_id).await?;
        attempts_total += attempts.len();
        if opts.nodes > 1 {
            for a in &attempts {
                let Some(&at) = killed_at.get(a.incarnation.as_str()) else {
                    continue;
                };
                match a.finished_at {
                    // Ended before its node died: not a rescue.
                    Some(end) if end < at => {}
                    Some(end) => {
                        rescue_ms.push(end - at);
                        if end - at > NODE_LEASE_MS as i64 + 1_500 {
                            violations
                                .entry("6 a killed node's attempts end within the lease")
                                .or_default()
                                .push(format!(
                                    "{id}: attempt {} ended {} ms after its node died",
                                    a.attempt,
                                    end - at
                                ));
                        }
                    }
                    None => violations
                        .entry("6 a killed node's attempts end within the lease")
                        .or_default()
                        .push(format!("{id}: attempt {} never ended", a.attempt)),
                }
            }
        }
        for pair in attempts.windows(2) {
            let end = pair[0].finished_at.unwrap_or(i64::MAX);
            if end > pair[1].started_at {
                violations
                    .entry("3 attempts never overlap")
                    .or_default()
                    .push(format!(
                        "{id}: attempt {} ended after {} began",
                        pair[0].attempt, pair[1].attempt
                    ));
            }
        }
        if let Some(stream) = seen.streams.get(id) {
            let stored: HashMap<i64, &baton_store::EventRecord> =
                events.iter().map(|e| (e.seq, e)).collect();
            for (seq, (kind, data)) in stream {
                let same = stored.get(seq).is_some_and(|e| {
                    e.kind == *kind
                        && serde_json::from_str::<Value>(data).ok().as_ref() == Some(&e.data)
                });
                if !same {
                    violations
                        .entry("4 streams match the stored log")
                        .or_default()
                        .push(format!("{id}: seq {seq}"));
                }
            }
        }
    }
    if !followers_ended {
        for (id, last, what) in seen.open.values() {
            let job = store.get_job(JobId::parse(id)?).await?;
            let events = store.list_events(job.id, 0, 100_000).await?;
            violations
                .entry("4 streams have no gap or duplicate")
                .or_default()
                .push(format!(
                    "the stream of {id} did not close after its job ended: the follower had seq {last} and was {what}; \
                     the job is {} with last_seq {}, {} events stored, the last {:?}",
                    job.state,
                    job.last_seq,
                    events.len(),
                    events.last().map(|e| (e.seq, e.kind.as_str()))
                ));
        }
    }
    for v in &seen.stream_violations {
        violations
            .entry("4 streams have no gap or duplicate")
            .or_default()
            .push(v.clone());
    }
    if !leftovers.is_empty() {
        violations
            .entry("5 no process outlives its attempt")
            .or_default()
            .push(format!("{leftovers:?}"));
    }
    for v in not_requeued {
        violations
            .entry("5 requeued before the successor is ready")
            .or_default()
            .push(v);
    }

    let deliveries = std::mem::take(&mut *deliveries.lock().unwrap());
    let routines_line = routines::check(&store, &routines, &deliveries, &mut violations).await?;
    restart_ms.sort();
    rescue_ms.sort();
    println!(
        "chaos: {kills} kills of {} node(s) on {} in {:.0} s",
        opts.nodes,
        if opts.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        started.elapsed().as_secs_f64()
    );
    if let Some(t) = postgres_restarted {
        println!(
            "  PostgreSQL restarted once mid-run ({} ms down)",
            t.as_millis()
        );
    }
    if !rescue_ms.is_empty() {
        println!(
            "  killed node's attempts ended after its death: {} attempts, p50 {} ms, max {} ms (lease {} ms)",
            rescue_ms.len(),
            rescue_ms[rescue_ms.len() / 2],
            rescue_ms.last().copied().unwrap_or(0),
            NODE_LEASE_MS
        );
    }
    println!("  jobs acknowledged   {}", seen.acknowledged.len());
    for (state, n) in &states {
        println!("    {state:<18}{n}");
    }
    println!("  attempts            {attempts_total}");
    println!("{routines_line}");
    println!("  routine jobs        {routine_job_count} (checked with the acknowledged ones)");
    println!(
        "  SSE streams checked {} ({} events)",
        seen.streams.len(),
        seen.streams.values().map(BTreeMap::len).sum::<usize>()
    );
    if opts.history > 0 {
        println!(
            "  first restart after the history: {} ms",
            first_restart_ms.unwrap_or_default()
        );
    }
    println!(
        "  restart to ready    p50 {} ms, max {} ms (orphans are requeued before the listener opens)",
        restart_ms[restart_ms.len() / 2],
        restart_ms.last().copied().unwrap_or(0)
    );
    let names = [
        "1 acknowledged job lost",
        "1 exactly one terminal state",
        "2 completed at most once",
        "3 attempts never overlap",
        "4 streams match the stored log",
        "4 streams have no gap or duplicate",
        "5 no process outlives its attempt",
        "5 requeued before the successor is ready",
        "6 a killed node's attempts end within the lease",
        "7 every cron slot fires once",
        "8 every acknowledged webhook fires once",
    ];
    println!("  {:<42} violations", "invariant");
    for name in names {
        println!(
            "  {:<42} {}",
            name,
            violations.get(name).map_or(0, Vec::len)
        );
    }
    if violations.is_empty() {
        println!("chaos: 0 violations");
        Ok(())
    } else {
        for (name, list) in &violations {
            for v in list.iter().take(10) {
                eprintln!("violation [{name}]: {v}");
            }
        }
        bail!("chaos: {} invariants violated", violations.len())
    }
}
