//! Rows into records, the one decoder for every backend: both store the same columns with the
//! same meaning (times in milliseconds, flags as 0/1 integers, JSON as text).

use baton_core::{ErrorKind, JobId, JobSpec, JobState, ProjectId};
use serde_json::Value;

use crate::db::Row;
use crate::{JobRecord, OpenJobs, Orphan};
use crate::{Result, StoreError};

pub(crate) const JOB_COLUMNS: &str = "id, project_id, state, priority, run_at, created_at, updated_at, \
    started_at, finished_at, attempt, max_attempts, spec, session_id, lease_owner, \
    lease_expires_at, cancel_requested, last_seq, outcome, error_type, error_message";

pub(crate) fn fenced(job: JobId, attempt: u32) -> StoreError {
    StoreError::Fenced {
        job: job.to_string(),
        attempt,
    }
}

pub(crate) fn parse_state(s: String) -> Result<JobState> {
    JobState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown job state {s:?}")))
}

pub(crate) fn parse_project(id: String) -> Result<ProjectId> {
    ProjectId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse_id(id: &str) -> Result<JobId> {
    JobId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The counts of `SELECT state, COUNT(*) AS n … GROUP BY state` over open jobs.
pub(crate) fn open_jobs(rows: &[Row]) -> Result<OpenJobs> {
    let mut open = OpenJobs::default();
    for r in rows {
        match parse_state(r.text("state"))? {
            JobState::Queued => open.queued = r.int("n"),
            JobState::Running => open.running = r.int("n"),
            other => return Err(StoreError::Corrupt(format!("{other} is not open"))),
        }
    }
    Ok(open)
}

/// An orphan from the columns `id, attempt, max_attempts, pid, pid_start`.
pub(crate) fn orphan_from_row(r: &Row) -> Result<Orphan> {
    Ok(Orphan {
        job_id: parse_id(&r.text("id"))?,
        attempt: r.int("attempt") as u32,
        max_attempts: r.int("max_attempts") as u32,
        pid: r.opt_int("pid").map(|p| p as i32),
        pid_start: r.opt_int("pid_start").map(|p| p as u64),
    })
}

pub(crate) fn job_from_row(r: &Row) -> Result<JobRecord> {
    let id = r.text("id");
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("job {id}: {what}: {e}"))
    };
    let spec: JobSpec = serde_json::from_str(&r.text("spec")).map_err(|e| corrupt("spec", &e))?;
    let outcome = r
        .opt_text("outcome")
        .map(|o| serde_json::from_str::<Value>(&o))
        .transpose()
        .map_err(|e| corrupt("outcome", &e))?;
    let error_type = r.opt_text("error_type");
    if let Some(t) = &error_type
        && ErrorKind::parse(t).is_none()
    {
        return Err(corrupt("error_type", t));
    }
    Ok(JobRecord {
        id: JobId::parse(&id).map_err(|e| corrupt("id", &e))?,
        project_id: parse_project(r.text("project_id"))?,
        state: parse_state(r.text("state"))?,
        priority: r.int("priority") as i32,
        run_at: r.int("run_at"),
        created_at: r.int("created_at"),
        updated_at: r.int("updated_at"),
        started_at: r.opt_int("started_at"),
        finished_at: r.opt_int("finished_at"),
        attempt: r.int("attempt") as u32,
        max_attempts: r.int("max_attempts") as u32,
        spec,
        session_id: r.opt_text("session_id"),
        lease_owner: r.opt_text("lease_owner"),
        lease_expires_at: r.opt_int("lease_expires_at"),
        cancel_requested: r.int("cancel_requested") != 0,
        last_seq: r.int("last_seq"),
        outcome,
        error_type,
        error_message: r.opt_text("error_message"),
    })
}
