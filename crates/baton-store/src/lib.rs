//! Baton's persistence. One [`Store`] API over SQLite (WAL, embedded, the default).
//!
//! Concurrency model: every write goes through a single writer connection, so SQLite never
//! sees two writers race for its lock and never answers `SQLITE_BUSY` to Baton itself;
//! reads use a separate pool and see the last committed state (WAL). Every change of a
//! job's state is a guarded `UPDATE … WHERE id = ? AND state = ? AND attempt = ?`: the
//! attempt number is the fencing token, so a stale attempt's write matches no row and is
//! refused ([`StoreError::Fenced`]), never applied.
//!
//! **Architecture invariant:** this is the only crate that contains SQL.

mod migrations;
mod records;
mod sqlite;

pub use records::{
    AttemptMeta, AttemptRecord, Claimed, EventRecord, Finish, Inserted, JobFilter, JobRecord,
    NewEvent, NewJob, Orphan, SessionRecord, SessionSave,
};
pub use sqlite::Store;

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
