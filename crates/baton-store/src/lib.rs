//! Baton's persistence. One [`Store`] API over two backends: SQLite (WAL, embedded, the
//! default) and PostgreSQL (several nodes sharing one queue).
//!
//! Concurrency model. On SQLite every write goes through a single writer connection, so
//! SQLite never sees two writers race for its lock and never answers `SQLITE_BUSY` to
//! Baton itself; reads use a separate pool and see the last committed state (WAL). On
//! PostgreSQL claims lock their rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming at
//! once never wait on, or take, each other's jobs; a unique index allows one running
//! attempt per session. On both, every change of a
//! job's state is a guarded `UPDATE … WHERE id = ? AND state = ? AND attempt = ?`: the
//! attempt number is the fencing token, so a stale attempt's write matches no row and is
//! refused ([`StoreError::Fenced`]), never applied.
//!
//! **Architecture invariant:** this is the only crate that contains SQL.

mod decode;
mod migrations;
mod postgres;
mod records;
mod sqlite;
#[doc(hidden)]
pub mod testing;

use std::path::Path;

use baton_core::{JobId, JobSpec, JobState, ProjectId};

pub use records::{
    AttemptMeta, AttemptRecord, Claimed, EventRecord, Finish, IDEMPOTENCY_PENDING_MS,
    IdempotencyClaim, Inserted, JobFilter, JobRecord, NewEvent, NewJob, OpenJobs, Orphan,
    SessionRecord, SessionSave,
};

/// The handle every other crate uses: one API over either backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// A hint from another node, carried by PostgreSQL's LISTEN/NOTIFY. Hints can be lost
/// (while the connection is re-established), so every consumer also polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A job became due (submitted, replayed or put back in the queue).
    JobsDue,
    /// A job's event log now ends at `last_seq`.
    Events { job: JobId, last_seq: i64 },
    /// A cancel was requested for a running job.
    Cancel(JobId),
    /// The listening connection was lost and is back: hints in between are gone.
    Reconnected,
}

/// A stream of [`Notice`]s from the shared database.
pub struct Notices(postgres::PgNotices);

impl Notices {
    /// The next notice; reconnects on its own after a lost connection and then says
    /// [`Notice::Reconnected`]. Errors only when the database cannot be reached at all.
    pub async fn next(&mut self) -> Result<Notice> {
        self.0.next().await
    }
}

impl Store {
    /// Opens (creating if needed) an embedded SQLite database file and brings its schema
    /// up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
        })
    }

    /// Connects to PostgreSQL at `url` (`postgres://…`; a password may also come from
    /// `PGPASSWORD` or `~/.pgpass`) with a pool of up to `max_connections`, and brings the
    /// schema up to date. Safe when several nodes start at once.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self> {
        Ok(Self {
            backend: Backend::Postgres(postgres::PgStore::connect(url, max_connections).await?),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether several Baton processes may share this database.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Hints from other nodes, for a shared database; `None` for SQLite, where every
    /// writer is in this process.
    pub async fn notices(&self) -> Result<Option<Notices>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(p) => Ok(Some(Notices(p.notices().await?))),
        }
    }

    /// Test support: another connection holding SQLite's write lock, as another process
    /// would.
    #[doc(hidden)]
    pub async fn fault_hold_write_lock(path: &Path) -> Result<sqlx::SqliteConnection> {
        sqlite::SqliteStore::fault_hold_write_lock(path).await
    }
}

/// Each method exists on both backends with the same signature and meaning; the
/// conformance suite (`tests/it`) holds them to it.
macro_rules! delegate {
    ($( $(#[$m:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$m])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                        Backend::Postgres(p) => p.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    /// A cheap round trip, for health checks.
    fn ping(&self) -> Result<()>;
    fn register_incarnation(&self, id: &str, node_id: &str, pid: u32, now: i64) -> Result<()>;
    fn stop_incarnation(&self, id: &str, now: i64) -> Result<()>;
    /// Inserts a job and its `job.queued` event, or finds the job an earlier request with
    /// the same idempotency key created.
    fn insert_job(&self, job: NewJob, now: i64) -> Result<Inserted>;
    fn get_job(&self, id: JobId) -> Result<JobRecord>;
    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;
    /// Claims up to `limit` due jobs for `incarnation`, each with a lease until
    /// `now + lease_ms`, in priority then age order. A job whose session already has a
    /// running attempt is skipped, so at most one attempt per session runs at a time, and
    /// no job is ever claimed twice, however many nodes claim at once.
    fn claim(&self, incarnation: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<Claimed>>;
    /// Extends an attempt's lease. Returns whether a cancel was requested, or `Fenced` if
    /// the attempt lost the job.
    fn renew_lease(&self, job: JobId, attempt: u32, incarnation: &str, expires_at: i64) -> Result<bool>;
    /// Appends events for a running attempt, in one transaction (group commit). Refused
    /// with `Fenced` when the attempt no longer owns the job, so a zombie cannot write.
    fn append_events(&self, job: JobId, attempt: u32, events: &[NewEvent], meta: &AttemptMeta, now: i64) -> Result<i64>;
    /// Ends an attempt: moves the job by `finish.transition` if, and only if, this attempt
    /// still owns it, and stores the session transcript it left in the same transaction.
    /// A refused completion is recorded on the attempt and reported as `Fenced`.
    fn finish_attempt(&self, job: JobId, attempt: u32, finish: &Finish, now: i64) -> Result<JobRecord>;
    /// Ends several attempts in one transaction (group commit); one result per attempt,
    /// in order. Only a database failure fails the whole call.
    fn finish_attempts(&self, finishes: &[(JobId, u32, &Finish)], now: i64) -> Result<Vec<Result<JobRecord>>>;
    /// Cancels a job. A queued job is cancelled at once; a running one is flagged, and its
    /// supervisor kills the process and records the end. Returns the job as it now stands.
    fn cancel(&self, job: JobId, now: i64) -> Result<JobRecord>;
    /// Running jobs leased by `incarnation` whose cancel was requested.
    fn cancels_for(&self, incarnation: &str) -> Result<Vec<JobId>>;
    fn list_events(&self, job: JobId, after_seq: i64, limit: u32) -> Result<Vec<EventRecord>>;
    fn list_attempts(&self, job: JobId) -> Result<Vec<AttemptRecord>>;
    /// Running attempts owned by earlier incarnations of `node_id`: their process died
    /// with it (or must be killed), and they can be rescued at once.
    fn orphans_of_node(&self, node_id: &str, current: &str) -> Result<Vec<Orphan>>;
    /// `(pid, start ticks)` of the attempts of earlier incarnations of `node_id` that died
    /// without stopping cleanly and whose processes may still be alive on this machine:
    /// those still running, and those someone else ended (rescued after the lease), whose
    /// supervisor never reaped them. An attempt its own supervisor ended
    /// ([`Finish::reaped`]) has no survivors and is not named, so this grows with what
    /// was running when the node died, not with everything it ever ran.
    fn abandoned_processes(&self, node_id: &str, current: &str) -> Result<Vec<(i32, u64)>>;
    /// Marks the earlier incarnations of `node_id` as stopped, once dealt with.
    fn close_incarnations(&self, node_id: &str, current: &str, now: i64) -> Result<u64>;
    /// Running attempts whose lease ran out before `now`.
    fn expired_leases(&self, now: i64) -> Result<Vec<Orphan>>;
    /// The earliest `run_at` of a queued job, so the dispatcher knows when to wake.
    fn next_run_at(&self) -> Result<Option<i64>>;
    /// The project's queued and running jobs. Its cost grows with the queue, not with the
    /// finished jobs kept.
    fn count_open(&self, project_id: &ProjectId) -> Result<OpenJobs>;
    /// Starts a failed or dead job again with `spec`, `extra_attempts` more attempts and
    /// attempt numbers that continue (so fencing still holds). `Conflict` for any other
    /// state.
    fn replay(&self, job: JobId, spec: &JobSpec, extra_attempts: u32, now: i64) -> Result<JobRecord>;
    /// Dead jobs, oldest first, optionally only those with one error type: what a bulk
    /// replay takes.
    fn dead_jobs(&self, project_id: &ProjectId, error_type: Option<&str>, limit: u32) -> Result<Vec<JobRecord>>;
    /// Takes an `Idempotency-Key` for a request (one statement: of requests racing with
    /// one key, exactly one takes it), or says who has it: a request still being
    /// answered, or the stored answer.
    fn claim_idempotency(&self, project_id: &ProjectId, key: &str, request_hash: &str, now: i64) -> Result<IdempotencyClaim>;
    /// Stores the answer to the request that took the key.
    fn complete_idempotency(&self, project_id: &ProjectId, key: &str, status: u16, body: &str) -> Result<()>;
    /// Gives a taken key back unanswered (the request failed), so a retry may take it.
    fn release_idempotency(&self, project_id: &ProjectId, key: &str) -> Result<()>;
    /// Forgets idempotency keys stored before `before`.
    fn prune_idempotency(&self, before: i64) -> Result<u64>;
    /// Deletes up to `limit` jobs in `state` that finished before `finished_before`, with
    /// their attempts and events. Small batches, so the queue never waits long behind
    /// retention. Returns how many were deleted.
    fn prune(&self, state: JobState, finished_before: i64, limit: u32) -> Result<u64>;
    /// Stores a session's transcript after an attempt, so any later job can resume it.
    fn save_session(&self, project_id: &ProjectId, session_id: &str, transcript: &[u8], job: JobId, now: i64) -> Result<()>;
    fn get_session(&self, project_id: &ProjectId, session_id: &str) -> Result<SessionRecord>;
    /// Test support for storage faults: makes the writer refuse every write, as a
    /// read-only database does.
    #[doc(hidden)]
    fn fault_read_only(&self, on: bool) -> Result<()>;
    /// Test support: any write that needs more space fails, as on a full disk.
    #[doc(hidden)]
    fn fault_disk_full(&self, on: bool) -> Result<()>;
    /// Test support: overwrites a job's stored options; returns what was there.
    #[doc(hidden)]
    fn fault_set_spec(&self, job: JobId, spec: &str) -> Result<String>;
    /// Test support: runs an event append's statements, then drops the transaction
    /// without committing: what a crash in the middle of an append leaves behind.
    #[doc(hidden)]
    fn crash_during_append(&self, job: JobId, attempt: u32, events: &[NewEvent], now: i64) -> Result<()>;
    /// Test support: moves the job as a finish would, then drops the transaction before
    /// the attempt and the event are written: a crash between two writes of one
    /// transition.
    #[doc(hidden)]
    fn crash_between_finish_writes(&self, job: JobId, attempt: u32, finish: &Finish, now: i64) -> Result<()>;
}

/// Why a store call failed, split by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The attempt no longer owns the job (another attempt was claimed, or the job ended).
    #[error("attempt {attempt} of job {job} no longer owns the job")]
    Fenced { job: String, attempt: u32 },
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts the stored state (e.g. cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// A stored row could not be decoded: the database was changed behind Baton's back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database could not be reached or written (locked, read-only, full disk).
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// No connection became free in time: the database is busy, or another process holds
    /// a lock on it.
    #[error("the database is busy or locked: {0}")]
    Busy(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::Busy(
                "no connection became free in time; another process may hold a lock on it".into(),
            ),
            other => Self::Unavailable(other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
