//! The supervisor of one attempt: runs the CLI through the runner, writes its events in
//! batches (group commit), renews the lease, relays a cancel, and records the end.

use std::time::Duration;

use baton_core::ErrorKind;
use baton_runner::{Attempt, AttemptReport, Progress};
use baton_store::{AttemptMeta, Finish, JobRecord, NewEvent, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::finish::{Ran, finish, success_finish};
use crate::{CrashPoint, Engine};

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
                let ran = Ran {
                    ran: false,
                    reaped: true,
                };
                finish(engine, &job, report, ran, Vec::new()).await;
                return;
            }
        },
    };

    if engine.crash_now(CrashPoint::AfterClaim) {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Progress>(BATCH);
    let runner_token = token.child_token();
    let cfg = inner.cfg.runner.clone();
    let step = job.spec.step();
    let name = format!("{id}-{attempt}");
    // A warm process brings its credential, given to this attempt now; a cold one gets
    // its own. A job whose budget is spent does not start.
    let (warm, credential) = match engine.take_warm(&step) {
        Some(w) => match w.credential {
            Some(c) => match engine.bind_credential(&c, &job, attempt).await {
                Ok(()) => (Some(w.process), Ok(Some(c))),
                Err(refusal) => (None, Err(refusal)),
            },
            None if engine.warm_credential_expected() => {
                (None, engine.credential_for(&job, attempt).await)
            }
            None => (Some(w.process), Ok(None)),
        },
        None => (None, engine.credential_for(&job, attempt).await),
    };
    let credential = match credential {
        Ok(c) => c,
        Err(refusal) => {
            let finish = crate::finish::refused_finish(&job, refusal, engine.now_ms());
            crate::finish::record(engine, &job, finish).await;
            return;
        }
    };
    let ran_warm = warm.is_some();
    let credential_env = credential
        .as_ref()
        .map(|c| c.env.clone())
        .unwrap_or_default();
    let run = tokio::spawn({
        let runner_token = runner_token.clone();
        async move {
            let attempt = Attempt {
                name,
                step: &step,
                restore,
                credential_env,
            };
            // The token lives as long as the attempt runs.
            let mut report = match warm {
                Some(w) => baton_runner::warm::run_warm(&cfg, w, attempt, tx, runner_token).await,
                None => baton_runner::run(&cfg, attempt, tx, runner_token).await,
            };
            if let Some(budget) = credential.and_then(|c| c.guard.budget_exceeded()) {
                let why = match report.error.take() {
                    Some((_, message)) => format!(
                        "{budget} is spent: Baton's proxy refused the run's next API call (the CLI said: {message})"
                    ),
                    None => {
                        format!("{budget} is spent: Baton's proxy refused an API call of the run")
                    }
                };
                report.error = Some((baton_core::ErrorKind::BudgetExceeded, why));
            }
            report
        }
    });
    tokio::pin!(run);

    // The first renewal comes early (200 ms), so the pid reaches the store soon even for
    // a CLI that prints nothing, without a commit of its own on the hot path.
    let mut lease_timer = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(200).min(inner.cfg.lease / 3),
        inner.cfg.lease / 3,
    );
    let mut fenced = false;
    // The runner returns only once no process of the attempt's group is alive.
    let mut reaped = true;
    let mut pending = Pending {
        events: Vec::with_capacity(BATCH),
        meta: AttemptMeta {
            warm: ran_warm,
            ..AttemptMeta::default()
        },
        session_known: job.session_id.is_some(),
    };
    let report = loop {
        tokio::select! {
            joined = &mut run => {
                // The runner has returned, so the channel holds everything it sent. The
                // last events go with the finish, in its transaction, unless there are
                // facts about the attempt to write first.
                while let Ok(p) = rx.try_recv() {
                    pending.take(p);
                }
                if pending.meta != AttemptMeta::default()
                    && flush(engine, &job, &mut pending).await.is_err()
                {
                    fenced = true;
                }
                break match joined {
                    Ok(report) => report,
                    // The runner did not get to kill and reap the group.
                    Err(e) => {
                        reaped = false;
                        AttemptReport {
                            error: Some((ErrorKind::Crashed, format!("the attempt's supervisor failed: {e}"))),
                            ..AttemptReport::default()
                        }
                    }
                };
            }
            Some(p) = rx.recv() => {
                // Once fenced, keep draining (so the runner is never blocked on a full
                // channel and sees its cancel) but write nothing.
                if fenced {
                    continue;
                }
                pending.take(p);
                while pending.events.len() < BATCH {
                    match rx.try_recv() {
                        Ok(p) => pending.take(p),
                        Err(_) => break,
                    }
                }
                if !pending.events.is_empty() && engine.crash_now(CrashPoint::DuringAppend) {
                    #[cfg(feature = "testing")]
                    let _ = store.crash_during_append(id, attempt, &pending.events, engine.now_ms()).await;
                    run.abort();
                    return;
                }
                if flush(engine, &job, &mut pending).await.is_err() {
                    fenced = true;
                    runner_token.cancel();
                }
            }
            _ = lease_timer.tick() => {
                if pending.meta != AttemptMeta::default()
                    && !fenced
                    && store
                        .append_events(id, attempt, &[], &pending.meta, engine.now_ms())
                        .await
                        .is_ok()
                {
                    pending.meta = AttemptMeta::default();
                }
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
    if engine.crash_now(CrashPoint::AfterExit) {
        return;
    }
    if fenced {
        // Another attempt owns the job now; record the refusal (and that this attempt's
        // processes are gone) and change nothing else.
        let refused = Finish {
            reaped,
            ..success_finish(&report)
        };
        let _ = store
            .finish_attempt(id, attempt, &refused, engine.now_ms())
            .await;
        return;
    }
    finish(
        engine,
        &job,
        report,
        Ran { ran: true, reaped },
        std::mem::take(&mut pending.events),
    )
    .await;
}

/// What the supervisor has heard from the runner and not yet written.
struct Pending {
    events: Vec<NewEvent>,
    meta: AttemptMeta,
    session_known: bool,
}

impl Pending {
    fn take(&mut self, p: Progress) {
        match p {
            Progress::Spawned { pid, start_ticks } => self.meta.pid = Some((pid, start_ticks)),
            Progress::Event(event) => {
                if !self.session_known
                    && event["type"] == "system"
                    && event["subtype"] == "init"
                    && let Some(sid) = event["session_id"].as_str()
                {
                    self.session_known = true;
                    self.meta.session_id = Some(sid.to_string());
                }
                let kind = event["type"].as_str().unwrap_or("unknown").to_string();
                self.events.push(NewEvent { kind, data: event });
            }
        }
    }

    /// Whether there is anything worth a commit now. A pid alone waits for the first
    /// events (the CLI prints `system/init` within milliseconds) or the lease renewal,
    /// so it costs no transaction of its own on the hot path.
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Writes the pending events, with the pid and session id when newly known, in one
/// transaction (group commit).
async fn flush(engine: &Engine, job: &JobRecord, pending: &mut Pending) -> Result<(), ()> {
    if pending.is_empty() {
        return Ok(());
    }
    let store = &engine.inner.store;
    // A transient store error (a database restarting takes a few seconds) is retried;
    // events are never dropped silently.
    for delay in [0u64, 50, 200, 1000, 2000, 3000] {
        backoff(delay).await;
        match store
            .append_events(
                job.id,
                job.attempt,
                &pending.events,
                &pending.meta,
                engine.now_ms(),
            )
            .await
        {
            Ok(last) => {
                pending.events.clear();
                pending.meta = AttemptMeta::default();
                engine.inner.bus.publish_running(job.id, last);
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

/// Waits `ms` before a retry of a store write. The first try does not touch the timer:
/// even a zero sleep waits for the timer wheel's next millisecond tick, which on the hot
/// path costs up to a millisecond per write.
pub(crate) async fn backoff(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
