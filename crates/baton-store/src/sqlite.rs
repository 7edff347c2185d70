//! The SQLite implementation.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use baton_core::{EventKind, JobId, JobSpec, JobState, ProjectId, Transition};
use serde_json::{Value, json};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::decode::{
    JOB_COLUMNS, fenced, idempotency_claim, job_from_row, open_jobs, orphan_from_row,
    parse_project, parse_state,
};
use crate::migrations;
use crate::records::*;
use crate::{Result, StoreError};

/// The SQLite backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// One connection: all writes are serialized here, in process. Its transactions begin
    /// `IMMEDIATE`, taking the file's write lock first: a transaction that reads, then
    /// writes, would otherwise fail at once with `SQLITE_BUSY` when another process (a
    /// command-line tool on the same file) wrote in between, instead of waiting its turn.
    write: SqlitePool,
    read: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a commit survives a process crash; only an OS crash can
            // lose the last transactions, and never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        // The read pool is opened after the writer, so the file and its WAL exist.
        let store = Self { write, read };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        let known = migrations::SQLITE.len() as i64;
        if current > known {
            return Err(StoreError::Conflict(format!(
                "the database schema is version {current}, newer than this Baton ({known}); upgrade Baton"
            )));
        }
        for (i, sql) in migrations::SQLITE.iter().enumerate().skip(current as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn register_incarnation(
        &self,
        id: &str,
        node_id: &str,
        pid: u32,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO incarnations (id, node_id, pid, started_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(node_id)
            .bind(pid as i64)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn stop_incarnation(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE incarnations SET stopped_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Inserts a job and its `job.queued` event, or finds the job an earlier request with
    /// the same idempotency key created.
    pub async fn insert_job(&self, job: NewJob, now: i64) -> Result<Inserted> {
        let spec =
            serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (key, hash) = job.idempotency.clone().unzip();
        let insert = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, project_id, state, priority, run_at, created_at, updated_at, \
             max_attempts, spec, session_id, last_seq, idempotency_key, request_hash) \
             VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING {JOB_COLUMNS}"
        )))
        .bind(job.id.to_string())
        .bind(job.project_id.to_string())
        .bind(job.spec.priority)
        .bind(job.run_at)
        .bind(now)
        .bind(now)
        .bind(job.spec.retry.max_attempts as i64)
        .bind(spec)
        .bind(job.spec.session.owned_session().map(|s| s.to_string()))
        .bind(key.clone())
        .bind(hash.clone());
        // Without a key, one statement: its trigger adds the `job.queued` event, and it
        // commits alone.
        let Some(key) = key else {
            let row = insert.fetch_one(&self.write).await?;
            return Ok(Inserted::New(job_from_row(&row)?));
        };
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query(
            "SELECT id, request_hash FROM jobs WHERE project_id = ? AND idempotency_key = ?",
        )
        .bind(job.project_id.as_str())
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let id: String = row.get(0);
            let stored_hash: Option<String> = row.get(1);
            drop(tx);
            if stored_hash != hash {
                return Ok(Inserted::KeyReused);
            }
            let id = JobId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            return self.get_job(id).await.map(Inserted::Replayed);
        }
        let row = insert.fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Inserted::New(job_from_row(&row)?))
    }

    pub async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        job_from_row(&row)
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = ?");
        if filter.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if filter.session_id.is_some() {
            sql.push_str(" AND session_id = ?");
        }
        if filter.error_type.is_some() {
            sql.push_str(" AND error_type = ?");
        }
        if filter.before.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.project_id.as_str());
        if let Some(state) = filter.state {
            q = q.bind(state.as_str());
        }
        if let Some(session) = &filter.session_id {
            q = q.bind(session.clone());
        }
        if let Some(error_type) = &filter.error_type {
            q = q.bind(error_type.clone());
        }
        if let Some(before) = filter.before {
            q = q.bind(before.to_string());
        }
        let rows = q.bind(filter.limit as i64).fetch_all(&self.read).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Claims up to `limit` due jobs for `incarnation`, each with a lease until
    /// `now + lease_ms`. A job whose session already has a running attempt is skipped, so
    /// at most one attempt per session runs at a time.
    pub async fn claim(
        &self,
        incarnation: &str,
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Candidates come from a reader, so an empty queue never takes the write lock. Only
        // this process claims (one server per data directory), and the guarded `UPDATE`
        // below skips any candidate cancelled meanwhile.
        let candidates = sqlx::query(
            "SELECT id, session_id FROM jobs j WHERE state = 'queued' AND run_at <= ? \
             AND (session_id IS NULL OR NOT EXISTS \
                  (SELECT 1 FROM jobs r WHERE r.session_id = j.session_id AND r.state = 'running')) \
             ORDER BY priority DESC, run_at, id LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64 * 2)
        .fetch_all(&self.read)
        .await?;
        // At most one job per session in a batch, in queue order.
        let mut sessions = std::collections::HashSet::new();
        let mut order: Vec<String> = Vec::new();
        for row in candidates {
            if order.len() as u32 >= limit {
                break;
            }
            let session: Option<String> = row.get(1);
            if session.is_none_or(|s| sessions.insert(s)) {
                order.push(row.get(0));
            }
        }
        if order.is_empty() {
            return Ok(Vec::new());
        }
        let next = JobState::Queued
            .apply(Transition::Claim)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        // The whole batch in one statement, which commits alone: the claimed ids travel as
        // one JSON array, and a trigger adds each attempt's row and `attempt.started` event.
        let ids = serde_json::Value::from(order.clone()).to_string();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = ?, attempt = attempt + 1, lease_owner = ?, \
             lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?, \
             last_seq = last_seq + 1 WHERE state = 'queued' AND id IN (SELECT value FROM json_each(?)) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(next.as_str())
        .bind(incarnation)
        .bind(now + lease_ms)
        .bind(now)
        .bind(now)
        .bind(&ids)
        .fetch_all(&self.write)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match job_from_row(row) {
                Ok(job) => claimed.push(Claimed { job }),
                // A row that cannot be decoded cannot be run: set it aside as failed, so it
                // neither blocks the queue nor comes back forever.
                Err(e) => {
                    let id: String = row.get("id");
                    tracing::error!(job = %id, error = %e, "quarantining a corrupt job");
                    sqlx::query(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, error_type = 'corrupt_record', \
                         error_message = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
                    )
                    .bind(now)
                    .bind(e.to_string())
                    .bind(&id)
                    .execute(&self.write)
                    .await?;
                }
            }
        }
        claimed.sort_by_key(|c| order.iter().position(|id| *id == c.job.id.to_string()));
        Ok(claimed)
    }

    /// Extends an attempt's lease. Returns whether a cancel was requested, or `Fenced` if
    /// the attempt lost the job.
    pub async fn renew_lease(
        &self,
        job: JobId,
        attempt: u32,
        incarnation: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'running' \
             AND attempt = ? AND lease_owner = ? RETURNING cancel_requested",
        )
        .bind(expires_at)
        .bind(job.to_string())
        .bind(attempt as i64)
        .bind(incarnation)
        .fetch_optional(&self.write)
        .await?;
        match row {
            Some(r) => Ok(r.get::<i64, _>(0) != 0),
            None => Err(fenced(job, attempt)),
        }
    }

    /// Appends events for a running attempt, in one transaction (group commit). Refused
    /// with `Fenced` when the attempt no longer owns the job, so a zombie cannot write.
    pub async fn append_events(
        &self,
        job: JobId,
        attempt: u32,
        events: &[NewEvent],
        meta: &AttemptMeta,
        now: i64,
    ) -> Result<i64> {
        let id = job.to_string();
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        // One round trip: the pid and session id when newly known, the guarded move of
        // `last_seq` (the fence), and the events numbered after it, from one JSON array.
        let mut sql = String::new();
        let mut args = SqliteArguments::default();
        if let Some((pid, start)) = meta.pid {
            sql.push_str(
                "UPDATE attempts SET pid = ?, pid_start = ?, warm = ? WHERE job_id = ? AND attempt = ?; ",
            );
            add(&mut args, pid as i64)?;
            add(&mut args, start as i64)?;
            add(&mut args, meta.warm)?;
            add(&mut args, id.clone())?;
            add(&mut args, attempt as i64)?;
        }
        if let Some(session) = &meta.session_id {
            sql.push_str(
                "UPDATE jobs SET session_id = ? WHERE id = ? AND state = 'running' AND attempt = ?; ",
            );
            add(&mut args, session.clone())?;
            add(&mut args, id.clone())?;
            add(&mut args, attempt as i64)?;
        }
        sql.push_str(
            "UPDATE jobs SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? \
             AND state = 'running' AND attempt = ? RETURNING last_seq; ",
        );
        add(&mut args, events.len() as i64)?;
        add(&mut args, now)?;
        add(&mut args, id.clone())?;
        add(&mut args, attempt as i64)?;
        if !events.is_empty() {
            sql.push_str(
                "INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
                 SELECT j.id, j.last_seq - ? + 1 + e.key, j.project_id, ?, ?, \
                 json_extract(e.value, '$.k'), json_extract(e.value, '$.d') \
                 FROM jobs j, json_each(?) AS e \
                 WHERE j.id = ? AND j.state = 'running' AND j.attempt = ?",
            );
            let batch: Vec<Value> = events
                .iter()
                .map(|e| json!({"k": e.kind, "d": e.data.to_string()}))
                .collect();
            add(&mut args, events.len() as i64)?;
            add(&mut args, attempt as i64)?;
            add(&mut args, now)?;
            add(&mut args, Value::from(batch).to_string())?;
            add(&mut args, id.clone())?;
            add(&mut args, attempt as i64)?;
        }
        let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .fetch_all(&mut *tx)
            .await?;
        // Only the fence's `RETURNING` yields a row; none means another attempt owns the job.
        let last: i64 = rows.first().ok_or_else(|| fenced(job, attempt))?.get(0);
        tx.commit().await?;
        Ok(last)
    }

    /// Test support for storage faults: makes the writer refuse every write, as a database
    /// on a read-only file system does (`SQLITE_READONLY`).
    #[doc(hidden)]
    pub async fn fault_read_only(&self, on: bool) -> Result<()> {
        let pragma = if on {
            "PRAGMA query_only = 1"
        } else {
            "PRAGMA query_only = 0"
        };
        sqlx::query(pragma).execute(&self.write).await?;
        Ok(())
    }

    /// Test support: caps the database at its current size, so any write that needs a new
    /// page fails as on a full disk (`SQLITE_FULL`).
    #[doc(hidden)]
    pub async fn fault_disk_full(&self, on: bool) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        let pages: i64 = if on {
            sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&mut *conn)
                .await?
        } else {
            1_073_741_823
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Test support: another connection holding the write lock, as another process would.
    #[doc(hidden)]
    pub async fn fault_hold_write_lock(path: &Path) -> Result<sqlx::SqliteConnection> {
        use sqlx::Connection;
        let options = SqliteConnectOptions::from_str("sqlite://")?.filename(path);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await?;
        Ok(conn)
    }

    /// Test support: overwrites a job's stored options; returns what was there.
    #[doc(hidden)]
    pub async fn fault_set_spec(&self, job: JobId, spec: &str) -> Result<String> {
        let old: String = sqlx::query_scalar("SELECT spec FROM jobs WHERE id = ?")
            .bind(job.to_string())
            .fetch_one(&self.write)
            .await?;
        sqlx::query("UPDATE jobs SET spec = ? WHERE id = ?")
            .bind(spec)
            .bind(job.to_string())
            .execute(&self.write)
            .await?;
        Ok(old)
    }

    /// Test support: runs an event append's statements, then drops the transaction
    /// without committing: what a crash in the middle of an append leaves behind.
    #[doc(hidden)]
    pub async fn crash_during_append(
        &self,
        job: JobId,
        attempt: u32,
        events: &[NewEvent],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let last: Option<(i64, String)> = sqlx::query_as(
            "UPDATE jobs SET last_seq = last_seq + ? WHERE id = ? AND state = 'running' AND attempt = ? RETURNING last_seq, project_id",
        )
        .bind(events.len() as i64)
        .bind(job.to_string())
        .bind(attempt as i64)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((last, project)) = last {
            let first = last - events.len() as i64 + 1;
            for (i, e) in events.iter().enumerate() {
                insert_event(
                    &mut tx,
                    &job.to_string(),
                    &project,
                    first + i as i64,
                    attempt,
                    now,
                    e,
                )
                .await?;
            }
        }
        drop(tx);
        Ok(())
    }

    /// Test support: moves the job as a finish would, then drops the transaction before
    /// the attempt and the event are written: a crash between two writes of one transition.
    #[doc(hidden)]
    pub async fn crash_between_finish_writes(
        &self,
        job: JobId,
        attempt: u32,
        finish: &Finish,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let _ = move_job(&mut tx, job, attempt, finish, now).await?;
        drop(tx);
        Ok(())
    }

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
    /// in order. Only a database failure fails the whole call. Each job moves by its own
    /// guarded `UPDATE`; the attempts, events and fences of the batch are then written
    /// set-wise, one statement each.
    pub async fn finish_attempts(
        &self,
        finishes: &[(JobId, u32, &Finish)],
        now: i64,
    ) -> Result<Vec<Result<JobRecord>>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(finishes.len());
        let mut ended = Vec::new();
        let mut events = Vec::new();
        let mut fenced_ids = Vec::new();
        // Everything after the guarded moves goes to the writer as one statement list.
        let mut sql = String::new();
        let mut args = SqliteArguments::default();
        for (job, attempt, finish) in finishes {
            match move_job(&mut tx, *job, *attempt, finish, now).await? {
                Ok(record) => {
                    let (t, m) = finish
                        .error
                        .as_ref()
                        .map_or((None, None), |(k, m)| (Some(k.as_str()), Some(m.as_str())));
                    ended.push(json!({
                        "id": record.id.to_string(), "a": attempt, "t": t, "m": m, "r": finish.reaped,
                    }));
                    // The trailing events, then the finish's own, which ends at `last_seq`.
                    let first = record.last_seq - finish.trailing.len() as i64;
                    for (i, e) in finish.trailing.iter().chain([&finish.event]).enumerate() {
                        events.push(json!({
                            "id": record.id.to_string(), "seq": first + i as i64, "p": record.project_id,
                            "a": attempt, "k": e.kind, "d": e.data.to_string(),
                        }));
                    }
                    if let Some(session) = &finish.session {
                        sql.push_str(SAVE_SESSION);
                        sql.push_str("; ");
                        add(&mut args, session.id.clone())?;
                        add(&mut args, record.project_id.to_string())?;
                        add(&mut args, session.transcript.clone())?;
                        add(&mut args, now)?;
                        add(&mut args, now)?;
                        add(&mut args, record.id.to_string())?;
                    }
                    out.push(Ok(record));
                }
                Err(e) => {
                    fenced_ids
                        .push(json!({"id": job.to_string(), "a": attempt, "r": finish.reaped}));
                    out.push(Err(e));
                }
            }
        }
        if !ended.is_empty() {
            sql.push_str(
                "UPDATE attempts SET finished_at = ?, error_type = json_extract(v.value, '$.t'), \
                 error_message = json_extract(v.value, '$.m'), reaped = json_extract(v.value, '$.r') \
                 FROM json_each(?) AS v \
                 WHERE attempts.job_id = json_extract(v.value, '$.id') \
                 AND attempts.attempt = json_extract(v.value, '$.a'); \
                 INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
                 SELECT json_extract(value, '$.id'), json_extract(value, '$.seq'), \
                 json_extract(value, '$.p'), json_extract(value, '$.a'), ?, \
                 json_extract(value, '$.k'), json_extract(value, '$.d') FROM json_each(?); ",
            );
            add(&mut args, now)?;
            add(&mut args, Value::from(ended).to_string())?;
            add(&mut args, now)?;
            add(&mut args, Value::from(events).to_string())?;
        }
        if !fenced_ids.is_empty() {
            sql.push_str(
                "UPDATE attempts SET fenced = 1, reaped = max(reaped, json_extract(v.value, '$.r')) \
                 FROM json_each(?) AS v \
                 WHERE attempts.job_id = json_extract(v.value, '$.id') \
                 AND attempts.attempt = json_extract(v.value, '$.a')",
            );
            add(&mut args, Value::from(fenced_ids).to_string())?;
        }
        if !sql.is_empty() {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Cancels a job. A queued job is cancelled at once; a running one is flagged, and its
    /// supervisor kills the process and records the end. Returns the job as it now stands.
    pub async fn cancel(&self, job: JobId, now: i64) -> Result<JobRecord> {
        let id = job.to_string();
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT state, project_id FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let state = parse_state(row.get(0))?;
        let project: String = row.get(1);
        match state {
            JobState::Queued => {
                let next = state
                    .apply(Transition::Cancel)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                let seq: i64 = sqlx::query_scalar(
                    "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, error_type = 'cancelled', \
                     error_message = 'cancelled before it started', last_seq = last_seq + 1 \
                     WHERE id = ? AND state = 'queued' RETURNING last_seq",
                )
                .bind(next.as_str())
                .bind(now)
                .bind(now)
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                let event = NewEvent::lifecycle(
                    EventKind::JobCancelled,
                    serde_json::json!({"state": "cancelled"}),
                );
                insert_event(&mut tx, &id, &project, seq, 0, now, &event).await?;
            }
            JobState::Running => {
                sqlx::query("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
            finished => {
                return Err(StoreError::Conflict(format!(
                    "job {id} is already {finished} and cannot be cancelled"
                )));
            }
        }
        tx.commit().await?;
        self.get_job(job).await
    }

    pub async fn cancels_for(&self, incarnation: &str) -> Result<Vec<JobId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND lease_owner = ? AND cancel_requested != 0",
        )
        .bind(incarnation)
        .fetch_all(&self.read)
        .await?;
        ids.iter().map(|id| crate::decode::parse_id(id)).collect()
    }

    pub async fn list_events(
        &self,
        job: JobId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT seq, attempt, at, kind, data FROM events WHERE job_id = ? AND seq > ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(job.to_string())
        .bind(after_seq)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.get(4);
                Ok(EventRecord {
                    seq: r.get(0),
                    attempt: r.get::<i64, _>(1) as u32,
                    at: r.get(2),
                    kind: r.get(3),
                    data: serde_json::from_str(&data)
                        .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
                })
            })
            .collect()
    }

    pub async fn list_attempts(&self, job: JobId) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT attempt, incarnation, started_at, finished_at, pid, error_type, error_message, fenced, warm \
             FROM attempts WHERE job_id = ? ORDER BY attempt",
        )
        .bind(job.to_string())
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AttemptRecord {
                attempt: r.get::<i64, _>(0) as u32,
                incarnation: r.get(1),
                started_at: r.get(2),
                finished_at: r.get(3),
                pid: r.get::<Option<i64>, _>(4).map(|p| p as i32),
                error_type: r.get(5),
                error_message: r.get(6),
                fenced: r.get::<i64, _>(7) != 0,
                warm: r.get::<i64, _>(8) != 0,
            })
            .collect())
    }

    /// Running attempts owned by earlier incarnations of `node_id`: their process died
    /// with it (or must be killed), and they can be rescued at once.
    pub async fn orphans_of_node(&self, node_id: &str, current: &str) -> Result<Vec<Orphan>> {
        let rows = sqlx::query(
            "SELECT j.id, j.attempt, j.max_attempts, a.pid, a.pid_start FROM jobs j \
             LEFT JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt \
             WHERE j.state = 'running' AND j.lease_owner != ? AND j.lease_owner IN \
             (SELECT id FROM incarnations WHERE node_id = ?)",
        )
        .bind(current)
        .bind(node_id)
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(orphan_from_row).collect()
    }

    /// Running attempts whose lease ran out before `now`.
    pub async fn abandoned_processes(
        &self,
        node_id: &str,
        current: &str,
    ) -> Result<Vec<(i32, u64)>> {
        let rows = sqlx::query(
            "SELECT a.pid, a.pid_start FROM incarnations i JOIN attempts a ON a.incarnation = i.id \
             WHERE i.node_id = ? AND i.id != ? AND i.stopped_at IS NULL AND a.reaped = 0 \
             AND a.pid IS NOT NULL AND a.pid_start IS NOT NULL",
        )
        .bind(node_id)
        .bind(current)
        .fetch_all(&self.write)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0) as i32, r.get::<i64, _>(1) as u64))
            .collect())
    }

    pub async fn close_incarnations(&self, node_id: &str, current: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE incarnations SET stopped_at = ? WHERE node_id = ? AND id != ? AND stopped_at IS NULL",
        )
        .bind(now)
        .bind(node_id)
        .bind(current)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn expired_leases(&self, now: i64) -> Result<Vec<Orphan>> {
        let rows = sqlx::query(
            "SELECT j.id, j.attempt, j.max_attempts, a.pid, a.pid_start FROM jobs j \
             LEFT JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt \
             WHERE j.state = 'running' AND j.lease_expires_at < ?",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(orphan_from_row).collect()
    }

    /// The earliest `run_at` of a queued job, so the dispatcher knows when to wake.
    pub async fn next_run_at(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(run_at) FROM jobs WHERE state = 'queued'")
                .fetch_one(&self.read)
                .await?,
        )
    }

    pub async fn count_open(&self, project_id: &ProjectId) -> Result<OpenJobs> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM jobs \
             WHERE project_id = ? AND state IN ('queued', 'running') GROUP BY state",
        )
        .bind(project_id.as_str())
        .fetch_all(&self.read)
        .await?;
        open_jobs(&rows)
    }

    /// Starts a failed or dead job again with `spec`, `extra_attempts` more attempts and
    /// attempt numbers that continue (so fencing still holds). `Conflict` for any other
    /// state.
    pub async fn replay(
        &self,
        job: JobId,
        spec: &JobSpec,
        extra_attempts: u32,
        now: i64,
    ) -> Result<JobRecord> {
        let id = job.to_string();
        let spec_json =
            serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        let from = parse_state(state.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?)?;
        let next = from.apply(Transition::Replay).map_err(|_| {
            StoreError::Conflict(format!(
                "job {id} is {from}; only failed or dead jobs can be replayed"
            ))
        })?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = ?, spec = ?, priority = ?, max_attempts = attempt + ?, run_at = ?, \
             finished_at = NULL, outcome = NULL, error_type = NULL, error_message = NULL, \
             cancel_requested = 0, updated_at = ?, last_seq = last_seq + 1 \
             WHERE id = ? AND state = ? RETURNING {JOB_COLUMNS}"
        )))
        .bind(next.as_str())
        .bind(&spec_json)
        .bind(spec.priority)
        .bind(extra_attempts as i64)
        .bind(now)
        .bind(now)
        .bind(&id)
        .bind(from.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let record = job_from_row(&row)?;
        let event = NewEvent::lifecycle(
            EventKind::JobReplayed,
            json!({"from": from.as_str(), "state": next.as_str()}),
        );
        insert_event(
            &mut tx,
            &id,
            record.project_id.as_str(),
            record.last_seq,
            record.attempt,
            now,
            &event,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Dead jobs, oldest first, optionally only those with one error type: what a bulk
    /// replay takes.
    pub async fn dead_jobs(
        &self,
        project_id: &ProjectId,
        error_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = ? AND state = 'dead' \
             AND (? IS NULL OR error_type = ?) ORDER BY id LIMIT ?"
        )))
        .bind(project_id.as_str())
        .bind(error_type)
        .bind(error_type)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn claim_idempotency(
        &self,
        project_id: &ProjectId,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> Result<IdempotencyClaim> {
        // A new key is taken; so is one whose request was left unanswered for too long
        // (its server died with the request in flight).
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (project_id, key, request_hash, status, body, created_at) \
             VALUES (?, ?, ?, 0, '', ?) ON CONFLICT (project_id, key) DO UPDATE \
             SET request_hash = excluded.request_hash, created_at = excluded.created_at \
             WHERE idempotency_keys.status = 0 AND idempotency_keys.created_at < ?",
        )
        .bind(project_id.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(now - IDEMPOTENCY_PENDING_MS)
        .execute(&self.write)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(IdempotencyClaim::Taken);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE project_id = ? AND key = ?",
        )
        .bind(project_id.as_str())
        .bind(key)
        .fetch_one(&self.write)
        .await?;
        Ok(idempotency_claim(row.get(0), row.get(1), row.get(2)))
    }

    pub async fn complete_idempotency(
        &self,
        project_id: &ProjectId,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = ?, body = ? \
             WHERE project_id = ? AND key = ? AND status = 0",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(project_id.as_str())
        .bind(key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn release_idempotency(&self, project_id: &ProjectId, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE project_id = ? AND key = ? AND status = 0")
            .bind(project_id.as_str())
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Forgets idempotency keys stored before `before`.
    pub async fn prune_idempotency(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(before)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` jobs in `state` that finished before `finished_before`, with
    /// their attempts and events (cascade). Small batches, so the queue never waits long
    /// behind retention. Returns how many were deleted.
    pub async fn prune(&self, state: JobState, finished_before: i64, limit: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = ? AND finished_at < ? \
             ORDER BY finished_at LIMIT ?)",
        )
        .bind(state.as_str())
        .bind(finished_before)
        .bind(limit as i64)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// Stores a session's transcript after an attempt, so any later job can resume it.
    pub async fn save_session(
        &self,
        project_id: &ProjectId,
        session_id: &str,
        transcript: &[u8],
        job: JobId,
        now: i64,
    ) -> Result<()> {
        sqlx::query(SAVE_SESSION)
            .bind(session_id)
            .bind(project_id.as_str())
            .bind(transcript)
            .bind(now)
            .bind(now)
            .bind(job.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn get_session(
        &self,
        project_id: &ProjectId,
        session_id: &str,
    ) -> Result<SessionRecord> {
        let row = sqlx::query(
            "SELECT id, project_id, transcript, created_at, updated_at, last_job_id FROM sessions \
             WHERE id = ? AND project_id = ?",
        )
        .bind(session_id)
        .bind(project_id.as_str())
        .fetch_optional(&self.write)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("session {session_id}")))?;
        Ok(SessionRecord {
            id: row.get(0),
            project_id: parse_project(row.get(1))?,
            transcript: row.get(2),
            created_at: row.get(3),
            updated_at: row.get(4),
            last_job_id: row.get(5),
        })
    }
}

/// Moves one job by a finish, inside a transaction, if this attempt still owns it. The
/// outer `Result` is a database failure; the inner one is this attempt's fate.
async fn move_job(
    tx: &mut Transaction<'_, Sqlite>,
    job: JobId,
    attempt: u32,
    finish: &Finish,
    now: i64,
) -> Result<Result<JobRecord>> {
    let next = match JobState::Running.apply(finish.transition) {
        Ok(next) => next,
        Err(e) => return Ok(Err(StoreError::Conflict(e.to_string()))),
    };
    let finished_at = next.is_terminal().then_some(now);
    let outcome = finish.outcome.as_ref().map(Value::to_string);
    let (error_type, error_message) = match &finish.error {
        Some((kind, message)) => (Some(kind.as_str()), Some(message.as_str())),
        None => (None, None),
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET state = ?, run_at = COALESCE(?, run_at), finished_at = ?, \
         outcome = COALESCE(?, outcome), error_type = ?, error_message = ?, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = ?, last_seq = last_seq + 1 + ?, \
         max_attempts = max_attempts + ? \
         WHERE id = ? AND state = 'running' AND attempt = ? RETURNING {JOB_COLUMNS}"
    )))
    .bind(next.as_str())
    .bind(finish.run_at)
    .bind(finished_at)
    .bind(&outcome)
    .bind(error_type)
    .bind(error_message)
    .bind(now)
    .bind(finish.trailing.len() as i64)
    .bind(i64::from(finish.refund_attempt))
    .bind(job.to_string())
    .bind(attempt as i64)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => Ok(Ok(job_from_row(&row)?)),
        None => Ok(Err(fenced(job, attempt))),
    }
}

/// Stores (or replaces) a session's transcript: id, project, transcript, created_at,
/// updated_at, last_job_id.
const SAVE_SESSION: &str = "INSERT INTO sessions (id, project_id, transcript, created_at, updated_at, last_job_id) \
     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET transcript = excluded.transcript, \
     updated_at = excluded.updated_at, last_job_id = excluded.last_job_id";

/// Binds one more argument of a statement list built piece by piece.
fn add<'q, T>(args: &mut SqliteArguments, value: T) -> Result<()>
where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    use sqlx::Arguments;
    args.add(value)
        .map_err(|e| StoreError::from(sqlx::Error::Encode(e)))
}

async fn insert_event(
    tx: &mut Transaction<'_, Sqlite>,
    job: &str,
    project: &str,
    seq: i64,
    attempt: u32,
    now: i64,
    event: &NewEvent,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job)
    .bind(seq)
    .bind(project)
    .bind(attempt as i64)
    .bind(now)
    .bind(&event.kind)
    .bind(event.data.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
