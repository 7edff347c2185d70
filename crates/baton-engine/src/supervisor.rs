//! The supervisor of one attempt: runs the CLI through the runner, writes its events in
//! batches (group commit), renews the lease, relays a cancel, and records the end.

use std::time::Duration;

use baton_core::{ErrorKind, JobState, Transition};
use baton_runner::{Attempt, AttemptReport, Progress};
use baton_store::{Finish, JobRecord, NewEvent, StoreError};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Engine, failure_finish};

const BATCH: usize = 256;

pub(crate) async fn supervise(engine: &Engine, job: JobRecord, token: CancellationToken) {
    let inner = &engine.inner;
    let store = &inner.store;
    let attempt = job.attempt;
    let id = job.id;

    let restore = match job.spec.session.restores() {
        None => None,
        Some(session) => match store
            .get_session(&job.project_id, &session.to_string())
            .await
        {
            Ok(s) => Some(s.transcript),
            // Not stored here: let the CLI look for it and say so precisely.
            Err(StoreError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not load the session transcript");
                let report = AttemptReport {
                    error: Some((
                        ErrorKind::SpawnFailed,
                        format!("could not load session {session}: {e}"),
                    )),
                    ..AttemptReport::default()
                };
                finish(engine, &job, report, false).await;
                return;
            }
        },
    };

    let (tx, mut rx) = mpsc::channel::<Progress>(BATCH);
    let runner_token = token.child_token();
    let cfg = inner.cfg.runner.clone();
    let spec = job.spec.clone();
    let name = format!("{id}-{attempt}");
    let run = tokio::spawn({
        let runner_token = runner_token.clone();
        async move {
            let attempt = Attempt {
                name,
                spec: &spec,
                restore,
            };
            baton_runner::run(&cfg, attempt, tx, runner_token).await
        }
    });
    tokio::pin!(run);

    // The first tick fires at once: a cancel that raced the claim is seen immediately.
    let mut lease_timer = tokio::time::interval(inner.cfg.lease / 3);
    let mut fenced = false;
    let mut learned_session = job.session_id.is_some();
    let mut batch: Vec<NewEvent> = Vec::with_capacity(BATCH);
    let report = loop {
        tokio::select! {
            joined = &mut run => {
                // The runner has returned, so the channel holds everything it sent.
                while let Ok(p) = rx.try_recv() {
                    handle(engine, &job, p, &mut batch, &mut learned_session).await;
                }
                if flush(engine, &job, &mut batch).await.is_err() {
                    fenced = true;
                }
                break joined.unwrap_or_else(|e| AttemptReport {
                    error: Some((ErrorKind::Crashed, format!("the attempt's supervisor failed: {e}"))),
                    ..AttemptReport::default()
                });
            }
            Some(p) = rx.recv() => {
                // Once fenced, keep draining (so the runner is never blocked on a full
                // channel and sees its cancel) but write nothing.
                if fenced {
                    continue;
                }
                handle(engine, &job, p, &mut batch, &mut learned_session).await;
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(p) => handle(engine, &job, p, &mut batch, &mut learned_session).await,
                        Err(_) => break,
                    }
                }
                if flush(engine, &job, &mut batch).await.is_err() {
                    fenced = true;
                    runner_token.cancel();
                }
            }
            _ = lease_timer.tick() => {
                let expires = engine.now_ms() + inner.cfg.lease.as_millis() as i64;
                match store.renew_lease(id, attempt, &inner.incarnation, expires).await {
                    Ok(true) => runner_token.cancel(),
                    Ok(false) => {}
                    Err(StoreError::Fenced { .. }) => {
                        tracing::warn!(job = %id, attempt, "lost the job's lease; stopping the attempt");
                        fenced = true;
                        runner_token.cancel();
                    }
                    Err(e) => tracing::warn!(job = %id, error = %e, "could not renew the lease"),
                }
            }
        }
    };
    if fenced {
        // Another attempt owns the job now; record the refusal and change nothing else.
        let _ = store
            .finish_attempt(id, attempt, &success_finish(&report), engine.now_ms())
            .await;
        return;
    }
    finish(engine, &job, report, true).await;
}

async fn handle(
    engine: &Engine,
    job: &JobRecord,
    p: Progress,
    batch: &mut Vec<NewEvent>,
    learned_session: &mut bool,
) {
    match p {
        Progress::Spawned { pid, start_ticks } => {
            if let Err(e) = engine
                .inner
                .store
                .record_pid(job.id, job.attempt, pid, start_ticks)
                .await
            {
                tracing::warn!(job = %job.id, error = %e, "could not record the attempt's pid");
            }
        }
        Progress::Event(event) => {
            if !*learned_session
                && event["type"] == "system"
                && event["subtype"] == "init"
                && let Some(sid) = event["session_id"].as_str()
            {
                *learned_session = true;
                let _ = engine
                    .inner
                    .store
                    .set_session_id(job.id, job.attempt, sid)
                    .await;
            }
            let kind = event["type"].as_str().unwrap_or("unknown").to_string();
            batch.push(NewEvent { kind, data: event });
        }
    }
}

async fn flush(engine: &Engine, job: &JobRecord, batch: &mut Vec<NewEvent>) -> Result<(), ()> {
    if batch.is_empty() {
        return Ok(());
    }
    let store = &engine.inner.store;
    // A transient store error is retried a few times; events are never dropped silently.
    for delay in [0u64, 50, 200, 1000] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match store
            .append_events(job.id, job.attempt, batch, engine.now_ms())
            .await
        {
            Ok(last) => {
                batch.clear();
                engine.inner.bus.publish(job.id, last);
                return Ok(());
            }
            Err(StoreError::Fenced { .. }) => return Err(()),
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not append events; retrying")
            }
        }
    }
    tracing::error!(job = %job.id, "giving up on appending events; the attempt is stopped");
    Err(())
}

fn success_finish(report: &AttemptReport) -> Finish {
    let outcome = report.outcome.clone().unwrap_or(Value::Null);
    Finish {
        transition: Transition::Succeed,
        run_at: None,
        outcome: report.outcome.clone(),
        error: None,
        event: NewEvent::new(
            "job.completed",
            json!({
                "state": "completed",
                "result": outcome["result"],
                "session_id": outcome["session_id"],
                "total_cost_usd": outcome["total_cost_usd"],
            }),
        ),
    }
}

/// Records the end of an attempt, keeping its session transcript first so that a resume
/// claimed the moment the job ends finds it.
async fn finish(engine: &Engine, job: &JobRecord, report: AttemptReport, ran: bool) {
    let inner = &engine.inner;
    let store = &inner.store;
    let now = engine.now_ms();
    if let (Some(sid), Some(transcript)) = (&report.session_id, &report.transcript)
        && let Err(e) = store
            .save_session(&job.project_id, sid, transcript, job.id, now)
            .await
    {
        tracing::warn!(job = %job.id, error = %e, "could not store the session transcript");
    }
    let finish = match &report.error {
        None => success_finish(&report),
        // A drain stops the attempt through Baton's own doing: requeue it, due at once.
        Some((ErrorKind::Cancelled, _)) if ran && engine.is_draining_cancel() => failure_finish(
            &job.spec,
            job.attempt,
            ErrorKind::Interrupted,
            "the node drained while the attempt ran".into(),
            report.outcome.clone(),
            now,
            0.0,
        ),
        Some((kind, message)) => {
            let mut message = message.clone();
            if let Some(exit) = &report.exit
                && !message.contains(exit.as_str())
                && *kind != ErrorKind::Cancelled
            {
                message.push_str(&format!(" [{exit}]"));
            }
            failure_finish(
                &job.spec,
                job.attempt,
                *kind,
                message,
                report.outcome.clone(),
                now,
                rand::rng().random::<f64>(),
            )
        }
    };
    for delay in [0u64, 100, 500, 2000, 5000] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match store
            .finish_attempt(job.id, job.attempt, &finish, engine.now_ms())
            .await
        {
            Ok(rec) => {
                if rec.state == JobState::Queued {
                    inner.wake.notify_one();
                }
                inner.bus.publish(job.id, rec.last_seq);
                return;
            }
            Err(StoreError::Fenced { .. }) => {
                tracing::warn!(job = %job.id, attempt = job.attempt, "completion refused: the attempt was fenced");
                return;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not record the attempt's end; retrying")
            }
        }
    }
    tracing::error!(job = %job.id, "could not record the attempt's end; its lease will expire and it will be rescued");
}
