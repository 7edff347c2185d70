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
//! **Architecture invariant:** this is the only crate that contains SQL, and no type of
//! its database driver appears in its public API.

mod agents;
mod attempts;
mod audit;
mod callbacks;
mod db;
mod decode;
mod events;
#[cfg(feature = "testing")]
mod faults;
mod idempotency;
mod incarnations;
mod jobs;
mod keys;
mod ledger;
mod migrations;
mod postgres;
mod projects;
mod routines;
mod sessions;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path;

use db::{Db, sql};

pub use agents::{AgentRecord, AgentSave};
pub use attempts::{AttemptMeta, AttemptRecord, Finish, Orphan};
pub use audit::{AuditFilter, AuditRecord};
pub use callbacks::{CallbackRecord, Delivery};
pub use events::{EventRecord, NewEvent};
#[cfg(feature = "testing")]
pub use faults::WriteLock;
pub use idempotency::{IDEMPOTENCY_PENDING_MS, IdempotencyClaim};
pub use jobs::{Claimed, Inserted, JobFilter, JobRecord, NewJob, OpenJobs};
pub use keys::{KeyRecord, NewKey};
pub use ledger::{AlertRecord, NewAlert, NewCall, Spend, SpendScope, UsageGroup, UsageRow};
pub use projects::ProjectRecord;
pub use routines::{
    Fire, FireOutcome, FireRecord, Fired, NewTrigger, RoutineRecord, TriggerRecord, TriggerSecrets,
};
pub use sessions::{SessionRecord, SessionSave};

/// The handle every other crate uses: one API over either backend, one module per
/// aggregate (jobs, events, attempts, sessions, incarnations, idempotency keys, projects,
/// API keys, the audit log). Each
/// method means the same on both backends; the conformance suite (`tests/it`) holds them
/// to it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

/// A hint from another node, carried by PostgreSQL's LISTEN/NOTIFY. Hints can be lost
/// (while the connection is re-established), so every consumer also polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A job became due (submitted, replayed or put back in the queue).
    JobsDue,
    /// A job's event log now ends at `last_seq`.
    Events {
        job: baton_core::JobId,
        last_seq: i64,
    },
    /// A cancel was requested for a running job.
    Cancel(baton_core::JobId),
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
        let db = sqlite::open(path).await?;
        migrations::run(&db).await?;
        Ok(Self { db })
    }

    /// Connects to PostgreSQL at `url` (`postgres://…`; a password may also come from
    /// `PGPASSWORD` or `~/.pgpass`) with a pool of up to `max_connections`, and brings the
    /// schema up to date. Safe when several nodes start at once.
    pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self> {
        let db = postgres::connect(url, max_connections).await?;
        migrations::run(&db).await?;
        Ok(Self { db })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.db {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Whether several Baton processes may share this database.
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Hints from other nodes, for a shared database; `None` for SQLite, where every
    /// writer is in this process.
    pub async fn notices(&self) -> Result<Option<Notices>> {
        match &self.db {
            Db::Sqlite { .. } => Ok(None),
            Db::Postgres(pool) => Ok(Some(Notices(postgres::notices(pool).await?))),
        }
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        self.db.all(sql("SELECT 1 AS one")).await?;
        Ok(())
    }
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
    Unavailable(String),
    /// No connection became free in time: the database is busy, or another process holds
    /// a lock on it.
    #[error("the database is busy or locked: {0}")]
    Busy(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
