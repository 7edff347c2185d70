//! The rows the store hands out and takes in.

use baton_core::{ErrorKind, EventKind, JobId, JobSpec, JobState, ProjectId, Transition};
use serde_json::Value;

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub project_id: ProjectId,
    pub spec: JobSpec,
    pub run_at: i64,
    /// `(Idempotency-Key, hash of the request body)`.
    pub idempotency: Option<(String, String)>,
}

/// What an insert did.
#[derive(Debug, Clone)]
pub enum Inserted {
    New(JobRecord),
    /// The same key with the same body was seen before: this is the original job.
    Replayed(JobRecord),
    /// The same key was used with a different body.
    KeyReused,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub project_id: ProjectId,
    pub state: JobState,
    pub priority: i32,
    pub run_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Attempts claimed so far; the current attempt's number, and its fencing token.
    pub attempt: u32,
    pub max_attempts: u32,
    pub spec: JobSpec,
    /// The Claude session the job runs in, once known.
    pub session_id: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    pub last_seq: i64,
    pub outcome: Option<Value>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
}

impl JobRecord {
    /// When a job that a rate limit parked may run again: it is queued, and its last
    /// attempt ended `rate_limited` (without counting against its attempts).
    pub fn parked_until(&self) -> Option<i64> {
        (self.state == JobState::Queued
            && self.error_type.as_deref() == Some(ErrorKind::RateLimited.as_str()))
        .then_some(self.run_at)
    }
}

/// A claimed job: its attempt number is the fencing token every later write must carry.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: JobRecord,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub seq: i64,
    pub attempt: u32,
    pub at: i64,
    pub kind: String,
    pub data: Value,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub data: Value,
}

impl NewEvent {
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        Self {
            kind: kind.into(),
            data,
        }
    }

    /// One of Baton's own lifecycle events.
    pub fn lifecycle(kind: EventKind, data: Value) -> Self {
        Self::new(kind.as_str(), data)
    }
}

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

#[derive(Debug, Clone)]
pub struct SessionSave {
    pub id: String,
    pub transcript: Vec<u8>,
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

/// How many of a project's jobs wait or run: what the queue holds now, counted through
/// the indexes of open jobs, never by reading the finished ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenJobs {
    pub queued: i64,
    pub running: i64,
}

/// What became of an attempt to take an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is this request's: run it, then complete (or release) the key.
    Taken,
    /// Another request with this key is still being answered.
    Pending { request_hash: String },
    /// The key was answered before: this is the answer.
    Answered {
        request_hash: String,
        status: u16,
        body: String,
    },
}

/// How long a key may stay taken without an answer before another request may take it
/// over (its server died with the request in flight).
pub const IDEMPOTENCY_PENDING_MS: i64 = 5 * 60 * 1000;

/// A running attempt whose owner is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub job_id: JobId,
    pub attempt: u32,
    pub max_attempts: u32,
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub project_id: ProjectId,
    pub state: Option<JobState>,
    pub session_id: Option<String>,
    pub error_type: Option<String>,
    /// Only jobs created before this one (ids sort by creation).
    pub before: Option<JobId>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub project_id: ProjectId,
    pub transcript: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_job_id: Option<String>,
}
