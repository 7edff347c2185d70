//! The engine driven step by step: `tick()` and a clock moved by hand, no sleeps.

use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{ErrorKind, JobId, JobRequest, JobState, Limits, ProjectId};
use baton_engine::{Clock, Engine, EngineConfig, ManualClock};
use baton_runner::RunnerConfig;
use baton_store::{AttemptMeta, Finish, Inserted, NewEvent, NewJob, Store, StoreError};

struct Fixture {
    engine: Engine,
    store: Store,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

const START: i64 = 1_700_000_000_000;

async fn fixture(node: &str, max_concurrency: usize, dir: Option<tempfile::TempDir>) -> Fixture {
    fixture_with_grace(node, max_concurrency, dir, Duration::from_millis(200)).await
}

async fn fixture_with_grace(
    node: &str,
    max_concurrency: usize,
    dir: Option<tempfile::TempDir>,
    result_grace: Duration,
) -> Fixture {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let store = Store::open(&dir.path().join("e.db")).await.unwrap();
    let cfg = config(
        node,
        max_concurrency,
        &dir.path().join("attempts"),
        result_grace,
    );
    let clock = Arc::new(ManualClock::new(START));
    let engine = Engine::start(store.clone(), cfg, clock.clone())
        .await
        .unwrap();
    Fixture {
        engine,
        store,
        clock,
        _dir: dir,
    }
}

/// Another node on the same database, with a clock of its own.
async fn fixture_on(node: &str, max_concurrency: usize, f: &Fixture) -> (Engine, Arc<ManualClock>) {
    let attempts = f._dir.path().join(format!("attempts-{node}"));
    let cfg = config(node, max_concurrency, &attempts, Duration::from_millis(200));
    let clock = Arc::new(ManualClock::new(START));
    let engine = Engine::start(f.store.clone(), cfg, clock.clone())
        .await
        .unwrap();
    (engine, clock)
}

fn config(
    node: &str,
    max_concurrency: usize,
    attempts: &std::path::Path,
    result_grace: Duration,
) -> EngineConfig {
    let mut runner = RunnerConfig::new(fake_claude::built_binary(), attempts.to_path_buf());
    runner.kill_grace = Duration::from_millis(200);
    runner.result_grace = result_grace;
    EngineConfig {
        node_id: node.into(),
        max_concurrency,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        drain_timeout: Duration::ZERO,
        runner,
        warm_pools: Vec::new(),
        retention: baton_engine::Retention {
            batch: 2,
            ..baton_engine::Retention::default()
        },
        runs_jobs: true,
    }
}

async fn submit(f: &Fixture, prompt: &str, delay_ms: i64) -> JobId {
    submit_request(f, JobRequest::prompt(prompt), delay_ms).await
}

async fn submit_request(f: &Fixture, request: JobRequest, delay_ms: i64) -> JobId {
    let spec = request.parse(&Limits::default()).unwrap();
    let job = NewJob {
        id: JobId::new(),
        project_id: ProjectId::default(),
        spec,
        run_at: f.clock.now_ms() + delay_ms,
        idempotency: None,
    };
    match f.engine.submit(job).await.unwrap() {
        Inserted::New(r) => r.id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn jobs_wait_for_run_at_and_free_slots() {
    let f = fixture("n", 2, None).await;
    let future = submit(&f, "FAKE text later", 10_000).await;
    assert_eq!(
        f.engine.tick().await.unwrap(),
        0,
        "a job due in 10 s was claimed now"
    );
    f.clock.advance(10_000);
    assert_eq!(f.engine.tick().await.unwrap(), 1);
    let job = f
        .engine
        .wait_for(future, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed);

    // Back-pressure: three due jobs, two slots.
    let ids = [
        submit(&f, "FAKE slow 100 100", 0).await,
        submit(&f, "FAKE slow 100 100", 0).await,
        submit(&f, "FAKE slow 100 100", 0).await,
    ];
    assert_eq!(f.engine.tick().await.unwrap(), 2);
    assert_eq!(
        f.engine.tick().await.unwrap(),
        0,
        "claimed beyond max_concurrency"
    );
    assert_eq!(f.engine.running_here(), 2);
    // Draining with no drain time stops both attempts and requeues their jobs.
    f.engine.drain().await;
    for id in ids {
        let job = f.store.get_job(id).await.unwrap();
        assert_eq!(job.state, JobState::Queued, "{id}");
    }
    let attempts = f.store.list_attempts(ids[0]).await.unwrap();
    assert_eq!(
        attempts[0].error_type.as_deref(),
        Some(ErrorKind::Interrupted.as_str())
    );
    assert_eq!(
        f.engine.tick().await.unwrap(),
        0,
        "a draining engine claims nothing"
    );
}

#[tokio::test]
async fn a_cli_that_exits_ends_its_attempt_though_a_stray_holds_its_output() {
    // An hour of result grace: the attempt must end because the CLI exited, not because
    // the grace ran out, even while its `sleep 3600` keeps stdout and stderr open.
    let f = fixture_with_grace("n", 2, None, Duration::from_secs(3600)).await;
    let done = submit(&f, "FAKE grandchild\nFAKE text done", 0).await;
    let one_try = JobRequest {
        max_attempts: Some(1),
        ..JobRequest::prompt("FAKE grandchild\nFAKE crash")
    };
    let crashed = submit_request(&f, one_try, 0).await;
    assert_eq!(f.engine.tick().await.unwrap(), 2);
    let job = f
        .engine
        .wait_for(done, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed, "{:?}", job.error_message);
    assert_eq!(job.outcome.as_ref().unwrap()["result"], "done");
    // Without a result, the exit status decides: an abort is a crash, at once,
    // rather than a silence timeout five minutes later.
    let job = f
        .engine
        .wait_for(crashed, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.error_type.as_deref(), Some(ErrorKind::Crashed.as_str()));
    for id in [done, crashed] {
        let attempts = f.store.list_attempts(id).await.unwrap();
        let pgid = attempts[0]
            .pid
            .expect("the attempt recorded its process group");
        assert_eq!(
            baton_runner::process::group_members(pgid, 0),
            Vec::<i32>::new(),
            "the stray outlived the attempt of {id}"
        );
    }
}

#[tokio::test]
async fn an_expired_lease_is_rescued_and_the_zombie_fenced() {
    let f = fixture("n", 2, None).await;
    let id = submit(&f, "FAKE text rescued", 0).await;
    // Another node claims the job, then goes silent.
    let ghost = f
        .store
        .claim("ghost", f.clock.now_ms(), 30_000, 1)
        .await
        .unwrap();
    assert_eq!(ghost[0].job.attempt, 1);
    assert_eq!(
        f.engine.tick().await.unwrap(),
        0,
        "the lease is still valid"
    );
    f.clock.advance(30_001);
    assert_eq!(
        f.engine.tick().await.unwrap(),
        1,
        "rescued and claimed again in one step"
    );
    let job = f
        .engine
        .wait_for(id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 2);
    let late = Finish {
        transition: baton_core::Transition::Succeed,
        run_at: None,
        outcome: None,
        error: None,
        event: NewEvent::new("job.completed", serde_json::json!({})),
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        reaped: true,
    };
    let refused = f.store.finish_attempt(id, 1, &late, f.clock.now_ms()).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    let attempts = f.store.list_attempts(id).await.unwrap();
    assert_eq!(attempts[0].error_type.as_deref(), Some("interrupted"));
    assert!(attempts[0].fenced);
    let completed = f
        .store
        .list_events(id, 0, 100)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "job.completed")
        .count();
    assert_eq!(completed, 1, "the job completed exactly once");
}

#[tokio::test]
async fn a_restart_kills_the_previous_incarnations_processes_and_requeues_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("e.db")).await.unwrap();
    store
        .register_incarnation("before-crash", "node-1", 1, START)
        .await
        .unwrap();
    let spec = JobRequest::prompt("FAKE text again")
        .parse(&Limits::default())
        .unwrap();
    let id = JobId::new();
    store
        .insert_job(
            NewJob {
                id,
                project_id: ProjectId::default(),
                spec,
                run_at: START,
                idempotency: None,
            },
            START,
        )
        .await
        .unwrap();
    store.claim("before-crash", START, 30_000, 1).await.unwrap();
    // What the crashed incarnation left: a process group still running.
    let mut orphan = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = orphan.id() as i32;
    let ticks = baton_runner::process::process_start_ticks(pid).unwrap();
    store
        .append_events(
            id,
            1,
            &[],
            &AttemptMeta {
                pid: Some((pid, ticks)),
                ..AttemptMeta::default()
            },
            0,
        )
        .await
        .unwrap();
    drop(store);

    let f = fixture("node-1", 1, Some(dir)).await;
    // No lease expiry was waited for: the clock has not moved.
    let status = orphan.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the orphaned process was not killed: {status}"
    );
    let job = f.store.get_job(id).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert!(job.run_at <= f.clock.now_ms());
    assert_eq!(f.engine.tick().await.unwrap(), 1);
    let job = f
        .engine
        .wait_for(id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed);
}

/// A process that stands for what an attempt left: the leader of its own group, as every
/// CLI is, recorded as the attempt's pid.
async fn survivor_of(store: &Store, job: JobId, attempt: u32) -> std::process::Child {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let meta = AttemptMeta {
        pid: Some((
            pid,
            baton_runner::process::process_start_ticks(pid).unwrap(),
        )),
        ..AttemptMeta::default()
    };
    store
        .append_events(job, attempt, &[], &meta, START)
        .await
        .unwrap();
    child
}

#[tokio::test]
async fn recovery_looks_only_at_what_was_running_however_long_the_history() {
    const HISTORY: usize = 150;
    let f = fixture("node-1", 8, None).await;
    let crashed = f.engine.incarnation().to_string();
    // A long life: every job ran a real CLI, whose pid the attempt recorded.
    let mut history = Vec::new();
    for i in 0..HISTORY {
        history.push(submit(&f, &format!("FAKE text history {i}"), 0).await);
    }
    let mut done = 0;
    while done < HISTORY {
        f.engine.tick().await.unwrap();
        let job = f
            .engine
            .wait_for(history[done], Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Completed);
        done += 1;
    }
    for id in &history {
        let attempts = f.store.list_attempts(*id).await.unwrap();
        assert!(attempts[0].pid.is_some(), "{id} recorded no pid");
        assert_eq!(attempts[0].incarnation, crashed);
    }

    // An attempt of the same incarnation that another node rescued after its lease ran
    // out: its supervisor never reaped it, and a grandchild lives on.
    let request = JobRequest {
        max_attempts: Some(1),
        ..JobRequest::prompt("FAKE text rescued")
    };
    let rescued = submit_request(&f, request, 0).await;
    let claimed = f.store.claim(&crashed, START, 1_000, 1).await.unwrap();
    assert_eq!(claimed[0].job.id, rescued);
    let mut rescued_survivor = survivor_of(&f.store, rescued, 1).await;
    let other = fixture_on("node-2", 1, &f).await;
    other.1.advance(5_000);
    assert_eq!(other.0.tick().await.unwrap(), 0);
    assert_eq!(
        f.store.get_job(rescued).await.unwrap().state,
        JobState::Dead,
        "node-2 did not rescue the expired attempt"
    );
    // And one running when the incarnation died.
    let running = submit(&f, "FAKE text interrupted", 0).await;
    f.store.claim(&crashed, START, 60_000, 1).await.unwrap();
    let mut running_survivor = survivor_of(&f.store, running, 1).await;

    // The incarnation dies (nothing drains, nothing closes it), and the node restarts.
    let Fixture { engine, _dir, .. } = f;
    drop(engine);
    let f = fixture("node-1", 1, Some(_dir)).await;
    assert_eq!(
        f.engine.recovery(),
        baton_engine::Recovery {
            groups: 2,
            killed: 2,
            strays: 0,
            requeued: 1,
        },
        "recovery looked at more than the running and the rescued attempt"
    );
    for (name, child) in [
        ("rescued", &mut rescued_survivor),
        ("running", &mut running_survivor),
    ] {
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "the {name} attempt's survivor was not killed: {status}"
        );
    }
    assert_eq!(
        f.store.get_job(running).await.unwrap().state,
        JobState::Queued
    );
    // A second restart finds nothing left to do.
    let Fixture { engine, _dir, .. } = f;
    drop(engine);
    let f = fixture("node-1", 1, Some(_dir)).await;
    assert_eq!(f.engine.recovery(), baton_engine::Recovery::default());
}

#[tokio::test]
async fn a_restart_kills_what_an_unrecorded_attempt_left_in_the_attempts_directory() {
    // The server died between a spawn and the write of its pid: no record names the
    // group, but the CLI's children still run with their HOME in its workspace.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("attempts")).unwrap();
    let attempts = dir.path().join("attempts").canonicalize().unwrap();
    let work = attempts.join("job-1/work");
    std::fs::create_dir_all(&work).unwrap();
    let sleep = |cwd: &std::path::Path, home: &std::path::Path| {
        std::process::Command::new("sleep")
            .arg("30")
            .current_dir(cwd)
            .env("HOME", home)
            .spawn()
            .unwrap()
    };
    let elsewhere = dir.path().canonicalize().unwrap();
    let mut stray = sleep(&elsewhere, &attempts.join("job-1/home"));
    let mut stray_inside = sleep(&work, &attempts.join("job-2/home"));
    // Someone's shell looking at a kept workspace, and an unrelated process.
    let mut visitor = sleep(&work, &elsewhere);
    let mut unrelated = sleep(&elsewhere, &elsewhere);

    let _f = fixture("node-1", 1, Some(dir)).await;
    for child in [&mut stray, &mut stray_inside] {
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "a stray was not killed: {status}");
    }
    for (name, child) in [("visitor", &mut visitor), ("unrelated", &mut unrelated)] {
        assert!(child.try_wait().unwrap().is_none(), "the {name} was killed");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test]
async fn retention_prunes_old_finished_jobs_in_batches_and_keeps_the_rest() {
    let f = fixture("n", 4, None).await;
    let mut old = Vec::new();
    for i in 0..5 {
        let id = submit(&f, &format!("FAKE text old {i}"), 0).await;
        old.push(id);
    }
    assert_eq!(f.engine.tick().await.unwrap(), 4);
    for id in &old[..4] {
        f.engine
            .wait_for(*id, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let cancelled = old[4];
    f.engine.cancel(cancelled).await.unwrap();
    // Eight days later, a new job finishes; a queued one waits.
    f.clock.advance(8 * 86_400_000);
    let recent = submit(&f, "FAKE text recent", 0).await;
    assert_eq!(f.engine.tick().await.unwrap(), 1);
    f.engine
        .wait_for(recent, Duration::from_secs(20))
        .await
        .unwrap();
    let waiting = submit(&f, "FAKE text later", 3_600_000).await;
    // Audit records: one past its 90 days, one within them.
    let record = |id: &str, at: i64| baton_store::AuditRecord {
        id: id.into(),
        at,
        project_id: ProjectId::default(),
        key_id: None,
        action: "job.create".into(),
        route: "/v1/jobs".into(),
        target: None,
        outcome: "201".into(),
        request_id: "req_1".into(),
    };
    let now = f.clock.now_ms();
    f.store
        .append_audit(&record("a-old", now - 91 * 86_400_000))
        .await
        .unwrap();
    f.store
        .append_audit(&record("b-new", now - 89 * 86_400_000))
        .await
        .unwrap();

    let pruned = f.engine.prune().await.unwrap();
    assert_eq!(
        pruned, 5,
        "four completed and one cancelled, all older than 7 days"
    );
    for id in &old {
        assert!(matches!(
            f.store.get_job(*id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            f.store.list_events(*id, 0, 10).await.unwrap().is_empty(),
            "events went with the job"
        );
    }
    assert_eq!(
        f.store.get_job(recent).await.unwrap().state,
        JobState::Completed
    );
    assert_eq!(
        f.store.get_job(waiting).await.unwrap().state,
        JobState::Queued
    );
    assert_eq!(f.engine.prune().await.unwrap(), 0);
    let kept = f
        .store
        .list_audit(&baton_store::AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        kept.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["b-new"]
    );
}

/// Stops an attempt dead at `point` (as if the server were killed there), restarts the
/// node on the same database, and checks that the job still ends exactly once, with a log
/// that has no gap and no duplicate.
async fn crash_and_recover(point: baton_engine::CrashPoint) {
    let first = fixture("node-crash", 2, None).await;
    first.engine.plan_crash(point);
    let id = submit(&first, "FAKE slow 4 20\nFAKE text survived", 0).await;
    assert_eq!(first.engine.tick().await.unwrap(), 1);
    // The supervisor stops at the crash point and leaves the job as a dead process would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while first.engine.running_here() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the planned crash never happened"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let crashed = first.store.get_job(id).await.unwrap();
    assert_eq!(
        crashed.state,
        JobState::Running,
        "{point:?}: the crash must leave the job running"
    );
    let attempts = first.store.list_attempts(id).await.unwrap();
    assert!(
        attempts[0].finished_at.is_none(),
        "{point:?}: a half-written end survived the crash"
    );

    // The next incarnation of the node rescues the job at once and runs it to the end.
    let dir = first._dir;
    let second = fixture("node-crash", 2, Some(dir)).await;
    assert_eq!(
        second.store.get_job(id).await.unwrap().state,
        JobState::Queued,
        "{point:?}"
    );
    assert_eq!(second.engine.tick().await.unwrap(), 1);
    let job = second
        .engine
        .wait_for(id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed, "{point:?}");
    assert_eq!(job.outcome.as_ref().unwrap()["result"], "survived");

    let events = second.store.list_events(id, 0, 1000).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let want: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, want, "{point:?}: a gap or a duplicate in the log");
    assert_eq!(job.last_seq, events.len() as i64);
    let terminal: Vec<&str> = events
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| {
            matches!(
                *k,
                "job.completed" | "job.failed" | "job.dead" | "job.cancelled"
            )
        })
        .collect();
    assert_eq!(
        terminal,
        ["job.completed"],
        "{point:?}: exactly one terminal state"
    );
    // Every attempt's output is kept, each at most once; the completing one has its result.
    for attempt in [1, 2] {
        let results = events
            .iter()
            .filter(|e| e.kind == "result" && e.attempt == attempt)
            .count();
        assert!(
            results <= 1,
            "{point:?}: attempt {attempt} logged {results} results"
        );
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "result" && e.attempt == 2)
            .count(),
        1,
        "{point:?}"
    );
    let attempts = second.store.list_attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].error_type.as_deref(), Some("interrupted"));
}

#[tokio::test]
async fn crash_after_claim_before_spawn() {
    crash_and_recover(baton_engine::CrashPoint::AfterClaim).await;
}

#[tokio::test]
async fn crash_during_an_event_append() {
    crash_and_recover(baton_engine::CrashPoint::DuringAppend).await;
}

#[tokio::test]
async fn crash_after_the_child_exits_before_the_completion_commits() {
    crash_and_recover(baton_engine::CrashPoint::AfterExit).await;
}

#[tokio::test]
async fn crash_between_two_writes_of_the_finishing_transition() {
    crash_and_recover(baton_engine::CrashPoint::BetweenFinishWrites).await;
}

fn new_id(i: Inserted) -> JobId {
    match i {
        Inserted::New(r) => r.id,
        other => panic!("{other:?}"),
    }
}

/// Fair dispatch: a project that floods the queue delays another project's first job by
/// one turn of the slots at most.
#[tokio::test]
async fn a_flooding_project_delays_anothers_first_job_by_one_turn_of_the_slots_at_most() {
    let f = fixture("n", 2, None).await;
    let (a, b) = (
        ProjectId::parse("a").unwrap(),
        ProjectId::parse("b").unwrap(),
    );
    for p in [&a, &b] {
        f.store
            .create_project(p, p.as_str(), &serde_json::json!({}), START)
            .await
            .unwrap();
    }
    let spec = JobRequest::prompt("FAKE sleep 60000")
        .parse(&Limits::default())
        .unwrap();
    let mut flood = Vec::new();
    for _ in 0..1000 {
        let job = NewJob {
            id: JobId::new(),
            project_id: a.clone(),
            spec: spec.clone(),
            run_at: f.clock.now_ms(),
            idempotency: None,
        };
        flood.push(new_id(f.engine.submit(job).await.unwrap()));
    }
    assert_eq!(f.engine.tick().await.unwrap(), 2, "A fills both slots");
    f.clock.advance(1);
    let b_job = NewJob {
        id: JobId::new(),
        project_id: b.clone(),
        spec: JobRequest::prompt("FAKE text b")
            .parse(&Limits::default())
            .unwrap(),
        run_at: f.clock.now_ms(),
        idempotency: None,
    };
    let b_job = new_id(f.engine.submit(b_job).await.unwrap());
    assert_eq!(f.engine.tick().await.unwrap(), 0, "no slot is free");
    // One of A's attempts ends: the slot it frees is B's, ahead of A's 998 waiting jobs.
    f.engine.cancel(flood[0]).await.unwrap();
    f.engine
        .wait_for(flood[0], Duration::from_secs(20))
        .await
        .unwrap();
    while f.engine.running_here() > 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(f.engine.tick().await.unwrap(), 1);
    let job = f
        .engine
        .wait_for(b_job, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Completed);
    let waiting = f.store.count_open(&a).await.unwrap();
    assert_eq!((waiting.queued, waiting.running), (998, 1));
    f.engine.cancel(flood[1]).await.unwrap();
}
