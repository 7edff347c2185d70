//! Attempts: one run of a job, owned by one incarnation, fenced by its number. Ending
//! attempts differs by backend (set-wise writes of a batch); the rest is written once.

use baton_core::{ErrorKind, JobId, Transition};
use serde_json::Value;

use crate::db::{Db, sql};
use crate::decode::orphan_from_row;
use crate::{JobRecord, NewEvent, Result, SessionSave, Store, postgres, sqlite};

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub incarnation: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub pid: Option<i32>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// A completion arrived from this attempt after it had lost the job, and was refused.
    pub fenced: bool,
    /// It ran on a pre-started process from a warm pool.
    pub warm: bool,
}

/// The end of an attempt, as decided by the engine.
#[derive(Debug, Clone)]
pub struct Finish {
    pub transition: Transition,
    /// For a retry: when the next attempt is due.
    pub run_at: Option<i64>,
    pub outcome: Option<Value>,
    pub error: Option<(ErrorKind, String)>,
    /// The lifecycle event recorded with the change.
    pub event: NewEvent,
    /// Events the attempt printed last and that are not written yet: stored before
    /// `event`, in the same transaction (one commit for the tail of a run and its end).
    /// Dropped, like everything else, when the attempt is fenced.
    pub trailing: Vec<NewEvent>,
    /// The session transcript the attempt left, stored in the same transaction.
    pub session: Option<SessionSave>,
    /// The attempt does not count against `max_attempts` (a parked rate limit, a drain).
    pub refund_attempt: bool,
    /// The attempt's own supervisor ended it and reaped its process group: nothing of it
    /// can still be alive, so a restart need not look for survivors. False when someone
    /// else ends it (a rescue after a lease ran out, or after its node died): its
    /// processes may live on, on the machine that ran them.
    pub reaped: bool,
}

/// Facts about a running attempt, written with its next batch of events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptMeta {
    /// `(pid, start time in ticks)` of the attempt's process-group leader.
    pub pid: Option<(i32, u64)>,
    /// The session id the CLI announced.
    pub session_id: Option<String>,
    /// The attempt ran on a pre-started (warm) process; written with the pid.
    pub warm: bool,
}

/// A running attempt whose owner is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub job_id: JobId,
    pub attempt: u32,
    pub max_attempts: u32,
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
}

/// Running attempts with the process their attempt row names; the condition follows.
const ORPHANS: &str = "SELECT j.id, j.attempt, j.max_attempts, a.pid, a.pid_start FROM jobs j \
    LEFT JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt WHERE j.state = 'running'";

impl Store {
    /// Ends an attempt: moves the job by `finish.transition` if, and only if, this attempt
    /// still owns it, and stores the session transcript it left in the same transaction.
    /// A refused completion is recorded on the attempt and reported as `Fenced`.
    pub async fn finish_attempt(
        &self,
        job: JobId,
        attempt: u32,
        finish: &Finish,
        now: i64,
    ) -> Result<JobRecord> {
        let mut out = self.finish_attempts(&[(job, attempt, finish)], now).await?;
        out.pop().expect("one result per finish")
    }

    /// Ends several attempts in one transaction (group commit); one result per attempt,
    /// in order. Only a database failure fails the whole call.
    pub async fn finish_attempts(
        &self,
        finishes: &[(JobId, u32, &Finish)],
        now: i64,
    ) -> Result<Vec<Result<JobRecord>>> {
        match &self.db {
            Db::Sqlite { .. } => sqlite::finish_attempts(&self.db, finishes, now).await,
            Db::Postgres(pool) => postgres::finish_attempts(pool, finishes, now).await,
        }
    }

    pub async fn list_attempts(&self, job: JobId) -> Result<Vec<AttemptRecord>> {
        let rows = self
            .db
            .all(
                sql(
                    "SELECT attempt, incarnation, started_at, finished_at, pid, error_type, \
                     error_message, fenced, warm FROM attempts WHERE job_id = ? ORDER BY attempt",
                )
                .bind(job.to_string()),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AttemptRecord {
                attempt: r.int("attempt") as u32,
                incarnation: r.text("incarnation"),
                started_at: r.int("started_at"),
                finished_at: r.opt_int("finished_at"),
                pid: r.opt_int("pid").map(|p| p as i32),
                error_type: r.opt_text("error_type"),
                error_message: r.opt_text("error_message"),
                fenced: r.int("fenced") != 0,
                warm: r.int("warm") != 0,
            })
            .collect())
    }

    /// Running attempts owned by earlier incarnations of `node_id`: their process died
    /// with it (or must be killed), and they can be rescued at once.
    pub async fn orphans_of_node(&self, node_id: &str, current: &str) -> Result<Vec<Orphan>> {
        let rows = self
            .db
            .write_all(
                sql(format!(
                    "{ORPHANS} AND j.lease_owner != ? AND j.lease_owner IN \
                     (SELECT id FROM incarnations WHERE node_id = ?)"
                ))
                .bind(current)
                .bind(node_id),
            )
            .await?;
        rows.iter().map(orphan_from_row).collect()
    }

    /// Running attempts whose lease ran out before `now`.
    pub async fn expired_leases(&self, now: i64) -> Result<Vec<Orphan>> {
        let rows = self
            .db
            .all(sql(format!("{ORPHANS} AND j.lease_expires_at < ?")).bind(now))
            .await?;
        rows.iter().map(orphan_from_row).collect()
    }

    /// `(pid, start ticks)` of the attempts of earlier incarnations of `node_id` that died
    /// without stopping cleanly and whose processes may still be alive on this machine:
    /// those still running, and those someone else ended (rescued after the lease), whose
    /// supervisor never reaped them. An attempt its own supervisor ended
    /// ([`Finish::reaped`]) has no survivors and is not named, so this grows with what
    /// was running when the node died, not with everything it ever ran.
    pub async fn abandoned_processes(
        &self,
        node_id: &str,
        current: &str,
    ) -> Result<Vec<(i32, u64)>> {
        let rows = self
            .db
            .write_all(
                sql("SELECT a.pid, a.pid_start FROM incarnations i \
                     JOIN attempts a ON a.incarnation = i.id \
                     WHERE i.node_id = ? AND i.id != ? AND i.stopped_at IS NULL AND a.reaped = 0 \
                     AND a.pid IS NOT NULL AND a.pid_start IS NOT NULL")
                .bind(node_id)
                .bind(current),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.int("pid") as i32, r.int("pid_start") as u64))
            .collect())
    }
}
