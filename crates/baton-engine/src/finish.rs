//! How an attempt's end is decided and recorded: success, a failure under the job's
//! retry policy, a rate limit that parks the job.

use baton_core::{ErrorKind, EventKind, JobState, Transition};
use baton_runner::AttemptReport;
use baton_store::{Finish, JobRecord, NewEvent, SessionSave, StoreError};
use rand::Rng;
use serde_json::{Value, json};

use crate::supervisor::backoff;
use crate::{CrashPoint, Engine};

/// The finish of a failed attempt, decided by the job's retry policy. `unit` is the
/// random draw for the backoff's jitter.
pub(crate) fn failure_finish(
    job: &JobRecord,
    attempt: u32,
    kind: ErrorKind,
    message: String,
    outcome: Option<serde_json::Value>,
    now: i64,
    unit: f64,
) -> Finish {
    // The job's `max_attempts` column is the budget: refunds (parking, drains) and
    // replays move it; the spec keeps the policy's delays.
    let policy = baton_core::RetryPolicy {
        max_attempts: job.max_attempts,
        ..job.spec.schedule.retry
    };
    let transition = policy.decide(kind, attempt);
    let next = JobState::Running
        .apply(transition)
        .unwrap_or(JobState::Failed);
    let error = serde_json::json!({"type": kind.as_str(), "message": message});
    let (run_at, event) = if next == JobState::Queued {
        let at = now + policy.backoff_ms(attempt, unit, 0) as i64;
        (
            Some(at),
            NewEvent::lifecycle(
                EventKind::AttemptFailed,
                serde_json::json!({"attempt": attempt, "error": error, "retry_at": at}),
            ),
        )
    } else {
        (
            None,
            NewEvent::lifecycle(
                EventKind::terminal(next).unwrap_or(EventKind::JobFailed),
                serde_json::json!({"state": next.as_str(), "error": error}),
            ),
        )
    };
    Finish {
        transition,
        run_at,
        outcome,
        error: Some((kind, message)),
        event,
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        // A rescue's view; the supervisor says otherwise for its own finishes.
        reaped: false,
    }
}

pub(crate) fn success_finish(report: &AttemptReport) -> Finish {
    let outcome = report.outcome.clone().unwrap_or(Value::Null);
    Finish {
        transition: Transition::Succeed,
        run_at: None,
        outcome: report.outcome.clone(),
        error: None,
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        reaped: true,
        event: NewEvent::lifecycle(
            EventKind::JobCompleted,
            json!({
                "state": "completed",
                "result": outcome["result"],
                "session_id": outcome["session_id"],
                "total_cost_usd": outcome["total_cost_usd"],
            }),
        ),
    }
}

/// How long to park a rate-limited job when the CLI announced nothing.
const DEFAULT_PARK_MS: i64 = 60_000;

/// A rate-limited attempt parks its job until the limit resets, as announced by the CLI
/// (`retry-after` through its retry delay, or a usage limit's reset time), and the attempt
/// is not counted: the job did nothing wrong.
fn park(job: &JobRecord, report: &AttemptReport, message: &str, now: i64) -> Finish {
    let until = park_until(report, now);
    Finish {
        transition: Transition::Retry,
        run_at: Some(until),
        outcome: report.outcome.clone(),
        error: Some((ErrorKind::RateLimited, message.to_string())),
        event: NewEvent::lifecycle(
            EventKind::JobParked,
            json!({"attempt": job.attempt, "until": until, "reason": message, "error": {"type": "rate_limited", "message": message}}),
        ),
        session: None,
        refund_attempt: true,
        trailing: Vec::new(),
        reaped: true,
    }
}

/// When a rate-limited job may run again: a usage limit's announced reset, unless the API
/// asked for longer; else the API's delay; else a minute.
fn park_until(report: &AttemptReport, now: i64) -> i64 {
    let retry = report.rate_limit_retry_ms.map(|ms| now + ms as i64);
    match (report.rate_limit_resets_at_ms, retry) {
        (Some(reset), retry) => reset.max(retry.unwrap_or(now)),
        (None, Some(retry)) => retry,
        (None, None) => now + DEFAULT_PARK_MS,
    }
}

/// What became of an attempt's process, for its finish.
pub(crate) struct Ran {
    /// The CLI was started.
    pub ran: bool,
    /// No process of the attempt can be alive (the runner killed and reaped the group).
    pub reaped: bool,
}

/// Records the end of an attempt with the retry policy's decision, after `trailing`, the
/// attempt's last events not written yet.
pub(crate) async fn finish(
    engine: &Engine,
    job: &JobRecord,
    mut report: AttemptReport,
    Ran { ran, reaped }: Ran,
    trailing: Vec<NewEvent>,
) {
    // With Baton's proxy, the job's cost is the ledger's (each call is recorded before
    // the CLI sees its answer end); the CLI's own figure is kept beside it.
    if engine.inner.credentials.get().is_some()
        && let Some(outcome) = report.outcome.as_mut().and_then(Value::as_object_mut)
        && let Ok(spend) = engine.inner.store.job_spend(job.id).await
    {
        let cli = outcome.remove("total_cost_usd").unwrap_or(Value::Null);
        outcome.insert("cli_total_cost_usd".into(), cli);
        outcome.insert(
            "total_cost_usd".into(),
            json!(spend.cost_micro_usd as f64 / 1_000_000.0),
        );
    }
    let now = engine.now_ms();
    let mut finish = match &report.error {
        None => success_finish(&report),
        // A drain stops the attempt through Baton's own doing: requeue it, due at once,
        // without counting the attempt.
        Some((ErrorKind::Cancelled, _)) if ran && engine.is_draining_cancel() => Finish {
            transition: Transition::Retry,
            run_at: Some(now),
            outcome: report.outcome.clone(),
            error: Some((
                ErrorKind::Interrupted,
                "the node drained while the attempt ran".into(),
            )),
            event: NewEvent::lifecycle(
                EventKind::AttemptFailed,
                json!({"attempt": job.attempt, "error": {"type": "interrupted", "message": "the node drained while the attempt ran"}, "retry_at": now}),
            ),
            session: None,
            refund_attempt: true,
            trailing: Vec::new(),
            reaped: true,
        },
        Some((ErrorKind::RateLimited, message)) => park(job, &report, message, now),
        Some((kind, message)) => {
            let mut message = message.clone();
            if let Some(exit) = &report.exit
                && !message.contains(exit.as_str())
                && *kind != ErrorKind::Cancelled
            {
                message.push_str(&format!(" [{exit}]"));
            }
            failure_finish(
                job,
                job.attempt,
                *kind,
                message,
                report.outcome.clone(),
                now,
                rand::rng().random::<f64>(),
            )
        }
    };
    // The transcript is stored with the end of the attempt, in one transaction, so a
    // resume claimed the moment the job ends finds it.
    if let (Some(id), Some(transcript)) = (&report.session_id, &report.transcript) {
        finish.session = Some(SessionSave {
            id: id.clone(),
            transcript: transcript.clone(),
        });
    }
    finish.trailing = trailing;
    finish.reaped = reaped;
    record(engine, job, finish).await;
}

/// The end of an attempt that never started because a budget is spent: parked until the
/// budget's window resets (the attempt not counted), or failed `budget_exceeded`.
pub(crate) fn refused_finish(job: &JobRecord, refusal: crate::Refusal, now: i64) -> Finish {
    let kind = ErrorKind::BudgetExceeded;
    let Some(until) = refusal.park_until else {
        return Finish {
            reaped: true,
            ..failure_finish(job, job.attempt, kind, refusal.message, None, now, 0.0)
        };
    };
    Finish {
        transition: Transition::Retry,
        run_at: Some(until),
        outcome: None,
        error: Some((kind, refusal.message.clone())),
        event: NewEvent::lifecycle(
            EventKind::JobParked,
            json!({"attempt": job.attempt, "until": until, "reason": refusal.message,
                "error": {"type": kind.as_str(), "message": refusal.message}}),
        ),
        session: None,
        refund_attempt: true,
        trailing: Vec::new(),
        reaped: true,
    }
}

/// Writes an attempt's end, retrying a transient store error; a fenced attempt changes
/// nothing.
pub(crate) async fn record(engine: &Engine, job: &JobRecord, finish: Finish) {
    let inner = &engine.inner;
    let store = &inner.store;
    if engine.crash_now(CrashPoint::BetweenFinishWrites) {
        #[cfg(feature = "testing")]
        let _ = store
            .crash_between_finish_writes(job.id, job.attempt, &finish, engine.now_ms())
            .await;
        return;
    }
    for delay in [0u64, 100, 500, 2000, 5000] {
        backoff(delay).await;
        match store
            .finish_attempt(job.id, job.attempt, &finish, engine.now_ms())
            .await
        {
            Ok(rec) => {
                if rec.state == JobState::Queued {
                    inner.wake.notify_one();
                }
                inner.bus.publish_record(&rec);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_job_waits_for_the_announced_reset_else_a_minute() {
        let now = 1_000_000;
        let report = |usage_limited, reset: Option<i64>, retry: Option<u64>| AttemptReport {
            usage_limited,
            rate_limit_resets_at_ms: reset,
            rate_limit_retry_ms: retry,
            ..AttemptReport::default()
        };
        assert_eq!(
            park_until(&report(true, Some(now + 7_200_000), None), now),
            now + 7_200_000
        );
        // The API asked for longer than the reset.
        assert_eq!(
            park_until(&report(true, Some(now + 1_000), Some(5_000)), now),
            now + 5_000
        );
        // A usage limit that announced no reset, and a bare 429: a minute, never at once.
        assert_eq!(
            park_until(&report(true, None, None), now),
            now + DEFAULT_PARK_MS
        );
        assert_eq!(
            park_until(&report(false, None, None), now),
            now + DEFAULT_PARK_MS
        );
        assert_eq!(
            park_until(&report(false, None, Some(2_000)), now),
            now + 2_000
        );
    }
}
