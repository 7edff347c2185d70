//! The PostgreSQL implementation, for several nodes sharing one queue.
//!
//! Claims take their rows with `FOR UPDATE SKIP LOCKED`; every state change is the same
//! guarded `UPDATE … AND attempt = $n` as on SQLite, so the attempt number fences a zombie
//! node. Writes that other nodes care about send a hint with `pg_notify` in the same
//! statement, delivered only if it commits: `baton_jobs` (a job became due),
//! `baton_events` (`<job>:<last_seq>`) and `baton_cancel` (`<job>`).

use std::str::FromStr;
use std::time::Duration;

use baton_core::{EventKind, JobId, JobSpec, JobState, ProjectId, Transition};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::decode::{
    JOB_COLUMNS, fenced, idempotency_claim, job_from_row, open_jobs, orphan_from_row, parse_id,
    parse_project, parse_state,
};
use crate::records::*;
use crate::{Notice, Result, StoreError, migrations};

/// Serializes schema migrations across nodes that start at once.
const MIGRATION_LOCK: i64 = 0x6261_746f_6e00_0001;

const CHANNELS: [&str; 3] = ["baton_jobs", "baton_events", "baton_cancel"];

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("baton");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            // A connection that broke while the server restarted is found out before use.
            .test_before_acquire(true)
            .connect_with(options)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        let known = migrations::POSTGRES.len() as i64;
        if current > known {
            return Err(StoreError::Conflict(format!(
                "the database schema is version {current}, newer than this Baton ({known}); upgrade Baton"
            )));
        }
        for (i, sql) in migrations::POSTGRES
            .iter()
            .enumerate()
            .skip(current as usize)
        {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn notices(&self) -> Result<PgNotices> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all(CHANNELS).await?;
        Ok(PgNotices {
            listener,
            lost: false,
        })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn register_incarnation(
        &self,
        id: &str,
        node_id: &str,
        pid: u32,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO incarnations (id, node_id, pid, started_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(node_id)
        .bind(i64::from(pid))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn stop_incarnation(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE incarnations SET stopped_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_job(&self, job: NewJob, now: i64) -> Result<Inserted> {
        let spec =
            serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (key, hash) = job.idempotency.clone().unzip();
        let session = job.spec.session.owned_session().map(|s| s.to_string());
        // One statement: the job, its first event and the wake-up commit together. A
        // concurrent insert with the same key waits for this one, then inserts nothing.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH j AS (INSERT INTO jobs (id, project_id, state, priority, run_at, created_at, \
             updated_at, max_attempts, spec, session_id, last_seq, idempotency_key, request_hash) \
             VALUES ($1, $2, 'queued', $3, $4, $5, $5, $6, $7, $8, 1, $9, $10) \
             ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING {JOB_COLUMNS}), \
             e AS (INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
             SELECT id, 1, project_id, 0, $5, 'job.queued', $11 FROM j) \
             SELECT {JOB_COLUMNS}, pg_notify('baton_jobs', '') FROM j"
        )))
        .bind(job.id.to_string())
        .bind(job.project_id.as_str())
        .bind(i64::from(job.spec.priority))
        .bind(job.run_at)
        .bind(now)
        .bind(i64::from(job.spec.retry.max_attempts))
        .bind(&spec)
        .bind(&session)
        .bind(&key)
        .bind(&hash)
        .bind(json!({"state": "queued"}).to_string())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Inserted::New(job_from_row(&row)?));
        }
        let existing = sqlx::query(
            "SELECT id, request_hash FROM jobs WHERE project_id = $1 AND idempotency_key = $2",
        )
        .bind(job.project_id.as_str())
        .bind(&key)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::Conflict("the job with this idempotency key was just deleted".into())
        })?;
        let stored_hash: Option<String> = existing.get(1);
        if stored_hash != hash {
            return Ok(Inserted::KeyReused);
        }
        let id = parse_id(&existing.get::<String, _>(0))?;
        self.get_job(id).await.map(Inserted::Replayed)
    }

    pub async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        job_from_row(&row)
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1");
        let mut n = 1;
        for (on, condition) in [
            (filter.state.is_some(), "state ="),
            (filter.session_id.is_some(), "session_id ="),
            (filter.error_type.is_some(), "error_type ="),
            (filter.before.is_some(), "id <"),
        ] {
            if on {
                n += 1;
                sql.push_str(&format!(" AND {condition} ${n}"));
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
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
        let rows = q
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

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
        match self.try_claim(incarnation, now, lease_ms, limit).await {
            // Two nodes claimed jobs of one session at the same moment and the unique
            // index refused the second: nothing was taken; the next tick tries again.
            Err(StoreError::Unavailable(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("23505") =>
            {
                tracing::debug!("a claim lost a session race; retrying at the next tick");
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn try_claim(
        &self,
        incarnation: &str,
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>> {
        let mut tx = self.pool.begin().await?;
        // Rows another node is claiming right now are skipped, never waited for.
        let candidates = sqlx::query(
            "SELECT id, session_id FROM jobs j WHERE state = 'queued' AND run_at <= $1 \
             AND (session_id IS NULL OR NOT EXISTS \
                  (SELECT 1 FROM jobs r WHERE r.session_id = j.session_id AND r.state = 'running')) \
             ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(i64::from(limit) * 2)
        .fetch_all(&mut *tx)
        .await?;
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
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let next = JobState::Queued
            .apply(Transition::Claim)
            .map_err(|e| StoreError::Conflict(e.to_string()))?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH c AS (UPDATE jobs SET state = $1, attempt = attempt + 1, lease_owner = $2, \
             lease_expires_at = $3, started_at = COALESCE(started_at, $4), updated_at = $4, \
             last_seq = last_seq + 1 WHERE state = 'queued' AND id = ANY($5) \
             RETURNING {JOB_COLUMNS}), \
             a AS (INSERT INTO attempts (job_id, attempt, project_id, incarnation, started_at) \
             SELECT id, attempt, project_id, $2, $4 FROM c), \
             e AS (INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
             SELECT id, last_seq, project_id, attempt, $4, 'attempt.started', \
             json_build_object('attempt', attempt, 'incarnation', $2::text)::text FROM c) \
             SELECT {JOB_COLUMNS}, pg_notify('baton_events', id || ':' || last_seq) FROM c"
        )))
        .bind(next.as_str())
        .bind(incarnation)
        .bind(now + lease_ms)
        .bind(now)
        .bind(&order)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match job_from_row(row) {
                Ok(job) => claimed.push(Claimed { job }),
                Err(e) => {
                    let id: String = row.get("id");
                    tracing::error!(job = %id, error = %e, "quarantining a corrupt job");
                    sqlx::query(
                        "UPDATE jobs SET state = 'failed', finished_at = $1, error_type = 'corrupt_record', \
                         error_message = $2, lease_owner = NULL, lease_expires_at = NULL WHERE id = $3",
                    )
                    .bind(now)
                    .bind(e.to_string())
                    .bind(&id)
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        claimed.sort_by_key(|c| order.iter().position(|id| *id == c.job.id.to_string()));
        Ok(claimed)
    }

    pub async fn renew_lease(
        &self,
        job: JobId,
        attempt: u32,
        incarnation: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND state = 'running' \
             AND attempt = $3 AND lease_owner = $4 RETURNING cancel_requested",
        )
        .bind(expires_at)
        .bind(job.to_string())
        .bind(i64::from(attempt))
        .bind(incarnation)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(r.get::<i64, _>(0) != 0),
            None => Err(fenced(job, attempt)),
        }
    }

    pub async fn append_events(
        &self,
        job: JobId,
        attempt: u32,
        events: &[NewEvent],
        meta: &AttemptMeta,
        now: i64,
    ) -> Result<i64> {
        let (pid, pid_start) = meta
            .pid
            .map_or((None, None), |(p, s)| (Some(i64::from(p)), Some(s as i64)));
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
        // One statement, so one round trip and atomic without a transaction: the guarded
        // sequence bump, the attempt's process, the events and the hint.
        let last: Option<i64> = sqlx::query_scalar(
            "WITH j AS (UPDATE jobs SET last_seq = last_seq + $1, updated_at = $2, \
             session_id = COALESCE($3, session_id) \
             WHERE id = $4 AND state = 'running' AND attempt = $5 RETURNING last_seq, project_id), \
             a AS (UPDATE attempts SET pid = $6, pid_start = $7, warm = $8 \
             WHERE $6::bigint IS NOT NULL AND job_id = $4 AND attempt = $5 AND EXISTS (SELECT 1 FROM j)), \
             e AS (INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
             SELECT $4, j.last_seq - $1 + t.o, j.project_id, $5, $2, t.k, t.d \
             FROM j, unnest($9::text[], $10::text[]) WITH ORDINALITY AS t(k, d, o)) \
             SELECT last_seq FROM j, LATERAL (SELECT pg_notify('baton_events', $4 || ':' || j.last_seq)) n",
        )
        .bind(events.len() as i64)
        .bind(now)
        .bind(&meta.session_id)
        .bind(job.to_string())
        .bind(i64::from(attempt))
        .bind(pid)
        .bind(pid_start)
        .bind(i64::from(meta.warm))
        .bind(&kinds)
        .bind(&data)
        .fetch_optional(&self.pool)
        .await?;
        last.ok_or_else(|| fenced(job, attempt))
    }

    pub async fn fault_read_only(&self, _on: bool) -> Result<()> {
        Err(unsupported_fault())
    }

    pub async fn fault_disk_full(&self, _on: bool) -> Result<()> {
        Err(unsupported_fault())
    }

    pub async fn fault_set_spec(&self, job: JobId, spec: &str) -> Result<String> {
        let old: String = sqlx::query_scalar(
            "UPDATE jobs SET spec = $1 FROM (SELECT spec AS old FROM jobs WHERE id = $2 FOR UPDATE) o \
             WHERE id = $2 RETURNING o.old",
        )
        .bind(spec)
        .bind(job.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(old)
    }

    pub async fn crash_during_append(
        &self,
        job: JobId,
        attempt: u32,
        events: &[NewEvent],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let last: Option<(i64, String)> = sqlx::query_as(
            "UPDATE jobs SET last_seq = last_seq + $1 WHERE id = $2 AND state = 'running' AND attempt = $3 RETURNING last_seq, project_id",
        )
        .bind(events.len() as i64)
        .bind(job.to_string())
        .bind(i64::from(attempt))
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

    pub async fn crash_between_finish_writes(
        &self,
        job: JobId,
        attempt: u32,
        finish: &Finish,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let _ = move_job(&mut tx, job, attempt, finish, now).await?;
        drop(tx);
        Ok(())
    }

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

    pub async fn finish_attempts(
        &self,
        finishes: &[(JobId, u32, &Finish)],
        now: i64,
    ) -> Result<Vec<Result<JobRecord>>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(finishes.len());
        let mut ended = Ended::default();
        let mut fenced_ids = (Vec::new(), Vec::new(), Vec::new());
        let mut requeued = false;
        let moved = move_jobs(&mut tx, finishes, now).await?;
        for ((job, attempt, finish), moved) in finishes.iter().zip(moved) {
            match moved {
                Ok(record) => {
                    let (t, m) = finish
                        .error
                        .as_ref()
                        .map_or((None, None), |(k, m)| (Some(k.as_str()), Some(m.clone())));
                    ended.ids.push(record.id.to_string());
                    ended.attempts.push(i64::from(*attempt));
                    ended.error_types.push(t);
                    ended.messages.push(m);
                    ended.reaped.push(i64::from(finish.reaped));
                    // The trailing events, then the finish's own, which ends at `last_seq`.
                    let first = record.last_seq - finish.trailing.len() as i64;
                    for (i, e) in finish.trailing.iter().chain([&finish.event]).enumerate() {
                        ended.events.push(&record, first + i as i64, *attempt, e);
                    }
                    if let Some(session) = &finish.session {
                        save_session_in(&mut tx, &record, session, now).await?;
                    }
                    requeued |= record.state == JobState::Queued;
                    out.push(Ok(record));
                }
                Err(e) => {
                    fenced_ids.0.push(job.to_string());
                    fenced_ids.1.push(i64::from(*attempt));
                    fenced_ids.2.push(i64::from(finish.reaped));
                    out.push(Err(e));
                }
            }
        }
        if !ended.ids.is_empty() {
            sqlx::query(
                "UPDATE attempts SET finished_at = $1, error_type = v.t, error_message = v.m, reaped = v.r \
                 FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[]) \
                 AS v(id, a, t, m, r) \
                 WHERE attempts.job_id = v.id AND attempts.attempt = v.a",
            )
            .bind(now)
            .bind(&ended.ids)
            .bind(&ended.attempts)
            .bind(&ended.error_types)
            .bind(&ended.messages)
            .bind(&ended.reaped)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
                 SELECT id, seq, p, a, $1, k, d \
                 FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[]) \
                 AS v(id, seq, p, a, k, d) \
                 RETURNING pg_notify('baton_events', job_id || ':' || seq)",
            )
            .bind(now)
            .bind(&ended.events.ids)
            .bind(&ended.events.seqs)
            .bind(&ended.events.projects)
            .bind(&ended.events.attempts)
            .bind(&ended.events.kinds)
            .bind(&ended.events.data)
            .execute(&mut *tx)
            .await?;
        }
        if !fenced_ids.0.is_empty() {
            sqlx::query(
                "UPDATE attempts SET fenced = 1, reaped = GREATEST(attempts.reaped, v.r) \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v(id, a, r) \
                 WHERE attempts.job_id = v.id AND attempts.attempt = v.a",
            )
            .bind(&fenced_ids.0)
            .bind(&fenced_ids.1)
            .bind(&fenced_ids.2)
            .execute(&mut *tx)
            .await?;
        }
        if requeued {
            sqlx::query("SELECT pg_notify('baton_jobs', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn cancel(&self, job: JobId, now: i64) -> Result<JobRecord> {
        let id = job.to_string();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT state, project_id FROM jobs WHERE id = $1 FOR UPDATE")
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
                    "UPDATE jobs SET state = $1, finished_at = $2, updated_at = $2, error_type = 'cancelled', \
                     error_message = 'cancelled before it started', last_seq = last_seq + 1 \
                     WHERE id = $3 AND state = 'queued' RETURNING last_seq",
                )
                .bind(next.as_str())
                .bind(now)
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                let event =
                    NewEvent::lifecycle(EventKind::JobCancelled, json!({"state": "cancelled"}));
                insert_event(&mut tx, &id, &project, seq, 0, now, &event).await?;
                sqlx::query("SELECT pg_notify('baton_events', $1 || ':' || $2::bigint)")
                    .bind(&id)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
            }
            JobState::Running => {
                sqlx::query("UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT pg_notify('baton_cancel', $1)")
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
            "SELECT id FROM jobs WHERE state = 'running' AND lease_owner = $1 AND cancel_requested != 0",
        )
        .bind(incarnation)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    pub async fn list_events(
        &self,
        job: JobId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT seq, attempt, at, kind, data FROM events WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(job.to_string())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
             FROM attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(job.to_string())
        .fetch_all(&self.pool)
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

    pub async fn orphans_of_node(&self, node_id: &str, current: &str) -> Result<Vec<Orphan>> {
        let rows = sqlx::query(
            "SELECT j.id, j.attempt, j.max_attempts, a.pid, a.pid_start FROM jobs j \
             LEFT JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt \
             WHERE j.state = 'running' AND j.lease_owner != $1 AND j.lease_owner IN \
             (SELECT id FROM incarnations WHERE node_id = $2)",
        )
        .bind(current)
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(orphan_from_row).collect()
    }

    pub async fn abandoned_processes(
        &self,
        node_id: &str,
        current: &str,
    ) -> Result<Vec<(i32, u64)>> {
        let rows = sqlx::query(
            "SELECT a.pid, a.pid_start FROM incarnations i JOIN attempts a ON a.incarnation = i.id \
             WHERE i.node_id = $1 AND i.id != $2 AND i.stopped_at IS NULL AND a.reaped = 0 \
             AND a.pid IS NOT NULL AND a.pid_start IS NOT NULL",
        )
        .bind(node_id)
        .bind(current)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0) as i32, r.get::<i64, _>(1) as u64))
            .collect())
    }

    pub async fn close_incarnations(&self, node_id: &str, current: &str, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE incarnations SET stopped_at = $1 WHERE node_id = $2 AND id != $3 AND stopped_at IS NULL",
        )
        .bind(now)
        .bind(node_id)
        .bind(current)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn expired_leases(&self, now: i64) -> Result<Vec<Orphan>> {
        let rows = sqlx::query(
            "SELECT j.id, j.attempt, j.max_attempts, a.pid, a.pid_start FROM jobs j \
             LEFT JOIN attempts a ON a.job_id = j.id AND a.attempt = j.attempt \
             WHERE j.state = 'running' AND j.lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(orphan_from_row).collect()
    }

    pub async fn next_run_at(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(run_at) FROM jobs WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn count_open(&self, project_id: &ProjectId) -> Result<OpenJobs> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM jobs \
             WHERE project_id = $1 AND state IN ('queued', 'running') GROUP BY state",
        )
        .bind(project_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        open_jobs(&rows)
    }

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
        let mut tx = self.pool.begin().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1 FOR UPDATE")
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
            "UPDATE jobs SET state = $1, spec = $2, priority = $3, max_attempts = attempt + $4, run_at = $5, \
             finished_at = NULL, outcome = NULL, error_type = NULL, error_message = NULL, \
             cancel_requested = 0, updated_at = $5, last_seq = last_seq + 1 \
             WHERE id = $6 AND state = $7 RETURNING {JOB_COLUMNS}"
        )))
        .bind(next.as_str())
        .bind(&spec_json)
        .bind(i64::from(spec.priority))
        .bind(i64::from(extra_attempts))
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
        sqlx::query(
            "SELECT pg_notify('baton_jobs', ''), pg_notify('baton_events', $1 || ':' || $2::bigint)",
        )
        .bind(&id)
        .bind(record.last_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn dead_jobs(
        &self,
        project_id: &ProjectId,
        error_type: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1 AND state = 'dead' \
             AND ($2::text IS NULL OR error_type = $2) ORDER BY id LIMIT $3"
        )))
        .bind(project_id.as_str())
        .bind(error_type)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
             VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (project_id, key) DO UPDATE \
             SET request_hash = excluded.request_hash, created_at = excluded.created_at \
             WHERE idempotency_keys.status = 0 AND idempotency_keys.created_at < $5",
        )
        .bind(project_id.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(now - IDEMPOTENCY_PENDING_MS)
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(IdempotencyClaim::Taken);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE project_id = $1 AND key = $2",
        )
        .bind(project_id.as_str())
        .bind(key)
        .fetch_one(&self.pool)
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
            "UPDATE idempotency_keys SET status = $1, body = $2 \
             WHERE project_id = $3 AND key = $4 AND status = 0",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(project_id.as_str())
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn release_idempotency(&self, project_id: &ProjectId, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE project_id = $1 AND key = $2 AND status = 0",
        )
        .bind(project_id.as_str())
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn prune_idempotency(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn prune(&self, state: JobState, finished_before: i64, limit: u32) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = $1 AND finished_at < $2 \
             ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED)",
        )
        .bind(state.as_str())
        .bind(finished_before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

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
            .bind(job.to_string())
            .execute(&self.pool)
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
             WHERE id = $1 AND project_id = $2",
        )
        .bind(session_id)
        .bind(project_id.as_str())
        .fetch_optional(&self.pool)
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

const SAVE_SESSION: &str = "INSERT INTO sessions (id, project_id, transcript, created_at, updated_at, last_job_id) \
     VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id) DO UPDATE SET transcript = EXCLUDED.transcript, \
     updated_at = EXCLUDED.updated_at, last_job_id = EXCLUDED.last_job_id";

/// The columns of a batch of ended attempts, bound as arrays.
#[derive(Default)]
struct Ended {
    ids: Vec<String>,
    attempts: Vec<i64>,
    error_types: Vec<Option<&'static str>>,
    messages: Vec<Option<String>>,
    /// 1 where the attempt's own supervisor reaped its processes.
    reaped: Vec<i64>,
    /// The events to write: each ended job's trailing events, then its own.
    events: EventColumns,
}

/// Events as columns, for one `unnest` insert.
#[derive(Default)]
struct EventColumns {
    ids: Vec<String>,
    seqs: Vec<i64>,
    projects: Vec<String>,
    attempts: Vec<i64>,
    kinds: Vec<String>,
    data: Vec<String>,
}

impl EventColumns {
    fn push(&mut self, record: &JobRecord, seq: i64, attempt: u32, event: &NewEvent) {
        self.ids.push(record.id.to_string());
        self.seqs.push(seq);
        self.projects.push(record.project_id.to_string());
        self.attempts.push(i64::from(attempt));
        self.kinds.push(event.kind.clone());
        self.data.push(event.data.to_string());
    }
}

fn unsupported_fault() -> StoreError {
    StoreError::Conflict("this storage fault can only be injected on SQLite".into())
}

/// Moves every job of a batch by its finish in one statement, each only if its attempt
/// still owns it; one result per finish, in order. (A batch naming one job twice, which
/// the engine never sends, goes one statement per job, so each sees the other's effect.)
async fn move_jobs(
    tx: &mut Transaction<'_, Postgres>,
    finishes: &[(JobId, u32, &Finish)],
    now: i64,
) -> Result<Vec<Result<JobRecord>>> {
    let ids: Vec<String> = finishes.iter().map(|(j, _, _)| j.to_string()).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    if unique.len() != ids.len() || finishes.len() == 1 {
        let mut out = Vec::with_capacity(finishes.len());
        for (job, attempt, finish) in finishes {
            out.push(move_job(tx, *job, *attempt, finish, now).await?);
        }
        return Ok(out);
    }
    let mut out: Vec<Option<Result<JobRecord>>> = Vec::with_capacity(finishes.len());
    let mut cols = MoveColumns::default();
    for (i, (_, attempt, finish)) in finishes.iter().enumerate() {
        match JobState::Running.apply(finish.transition) {
            Ok(next) => {
                out.push(None);
                cols.index.push(i as i64);
                cols.ids.push(ids[i].clone());
                cols.attempts.push(i64::from(*attempt));
                cols.states.push(next.as_str());
                cols.run_at.push(finish.run_at);
                cols.finished_at.push(next.is_terminal().then_some(now));
                cols.outcomes
                    .push(finish.outcome.as_ref().map(Value::to_string));
                let (t, m) = finish
                    .error
                    .as_ref()
                    .map_or((None, None), |(k, m)| (Some(k.as_str()), Some(m.clone())));
                cols.error_types.push(t);
                cols.messages.push(m);
                cols.refunds.push(i64::from(finish.refund_attempt));
                cols.trailing.push(finish.trailing.len() as i64);
            }
            Err(e) => out.push(Some(Err(StoreError::Conflict(e.to_string())))),
        }
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET state = v.state, run_at = COALESCE(v.run_at, jobs.run_at), \
         finished_at = v.finished_at, outcome = COALESCE(v.outcome, jobs.outcome), \
         error_type = v.t, error_message = v.m, lease_owner = NULL, lease_expires_at = NULL, \
         updated_at = $1, last_seq = jobs.last_seq + 1 + v.tail, \
         max_attempts = jobs.max_attempts + v.refund \
         FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], \
         $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[]) \
         AS v(i, id, a, state, run_at, finished_at, outcome, t, m, refund, tail) \
         WHERE jobs.id = v.id AND jobs.state = 'running' AND jobs.attempt = v.a \
         RETURNING v.i, {}",
        JOB_COLUMNS
            .split(", ")
            .map(|c| format!("jobs.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
    .bind(now)
    .bind(&cols.index)
    .bind(&cols.ids)
    .bind(&cols.attempts)
    .bind(&cols.states)
    .bind(&cols.run_at)
    .bind(&cols.finished_at)
    .bind(&cols.outcomes)
    .bind(&cols.error_types)
    .bind(&cols.messages)
    .bind(&cols.refunds)
    .bind(&cols.trailing)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let i = row.get::<i64, _>(0) as usize;
        out[i] = Some(Ok(job_from_row(row)?));
    }
    Ok(out
        .into_iter()
        .zip(finishes)
        .map(|(r, (job, attempt, _))| r.unwrap_or_else(|| Err(fenced(*job, *attempt))))
        .collect())
}

/// The columns of a batch of job moves, bound as arrays.
#[derive(Default)]
struct MoveColumns {
    index: Vec<i64>,
    ids: Vec<String>,
    attempts: Vec<i64>,
    states: Vec<&'static str>,
    run_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    outcomes: Vec<Option<String>>,
    error_types: Vec<Option<&'static str>>,
    messages: Vec<Option<String>>,
    refunds: Vec<i64>,
    trailing: Vec<i64>,
}

/// Moves one job by a finish, inside a transaction, if this attempt still owns it. The
/// outer `Result` is a database failure; the inner one is this attempt's fate.
async fn move_job(
    tx: &mut Transaction<'_, Postgres>,
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
        "UPDATE jobs SET state = $1, run_at = COALESCE($2, run_at), finished_at = $3, \
         outcome = COALESCE($4, outcome), error_type = $5, error_message = $6, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = $7, last_seq = last_seq + 1 + $11, \
         max_attempts = max_attempts + $8 \
         WHERE id = $9 AND state = 'running' AND attempt = $10 RETURNING {JOB_COLUMNS}"
    )))
    .bind(next.as_str())
    .bind(finish.run_at)
    .bind(finished_at)
    .bind(&outcome)
    .bind(error_type)
    .bind(error_message)
    .bind(now)
    .bind(i64::from(finish.refund_attempt))
    .bind(job.to_string())
    .bind(i64::from(attempt))
    .bind(finish.trailing.len() as i64)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => Ok(Ok(job_from_row(&row)?)),
        None => Ok(Err(fenced(job, attempt))),
    }
}

async fn save_session_in(
    tx: &mut Transaction<'_, Postgres>,
    record: &JobRecord,
    session: &SessionSave,
    now: i64,
) -> Result<()> {
    sqlx::query(SAVE_SESSION)
        .bind(&session.id)
        .bind(record.project_id.as_str())
        .bind(&session.transcript)
        .bind(now)
        .bind(record.id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    job: &str,
    project: &str,
    seq: i64,
    attempt: u32,
    now: i64,
    event: &NewEvent,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(job)
    .bind(seq)
    .bind(project)
    .bind(i64::from(attempt))
    .bind(now)
    .bind(&event.kind)
    .bind(event.data.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// LISTEN on Baton's channels, turning notifications into [`Notice`]s.
pub struct PgNotices {
    listener: PgListener,
    /// The connection was lost; the next notice received says so first.
    lost: bool,
}

impl PgNotices {
    pub async fn next(&mut self) -> Result<Notice> {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(n)) => {
                    if std::mem::take(&mut self.lost) {
                        // Hints sent while the connection was down are gone: say so (this
                        // makes every consumer look again, which covers `n` too).
                        return Ok(Notice::Reconnected);
                    }
                    if let Some(notice) = parse_notice(n.channel(), n.payload()) {
                        return Ok(notice);
                    }
                }
                // Lost, and already reconnected and listening again (eager reconnect).
                Ok(None) => return Ok(Notice::Reconnected),
                Err(e) => {
                    self.lost = true;
                    return Err(e.into());
                }
            }
        }
    }
}

fn parse_notice(channel: &str, payload: &str) -> Option<Notice> {
    match channel {
        "baton_jobs" => Some(Notice::JobsDue),
        "baton_events" => {
            let (job, seq) = payload.rsplit_once(':')?;
            Some(Notice::Events {
                job: JobId::parse(job).ok()?,
                last_seq: seq.parse().ok()?,
            })
        }
        "baton_cancel" => Some(Notice::Cancel(JobId::parse(payload).ok()?)),
        _ => None,
    }
}
