//! What only PostgreSQL does, for several nodes sharing one queue: connecting, the writes
//! that bind whole batches as arrays, and LISTEN/NOTIFY.
//!
//! Claims take their rows with `FOR UPDATE SKIP LOCKED`; every state change is the same
//! guarded `UPDATE … AND attempt = ?` as on SQLite, so the attempt number fences a zombie
//! node. Writes that other nodes care about send a hint with `pg_notify` in the same
//! statement, delivered only if it commits: `baton_jobs` (a job became due),
//! `baton_events` (`<job>:<last_seq>`) and `baton_cancel` (`<job>`).

use std::str::FromStr;
use std::time::Duration;

use baton_core::{JobId, JobState};
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

use crate::db::{Db, Row, Tx};
use crate::decode::{JOB_COLUMNS, fenced, job_from_row};
use crate::jobs::{
    PROJECT_CANDIDATES, PROJECT_LOAD, any_quota, claimed_state, fair_order, loads, move_job,
};

/// The advisory lock claims take while a project has a running quota.
const CLAIM_LOCK: i64 = 0x6261_746f_6e00_0001;
use crate::{AttemptMeta, Finish, JobRecord, NewEvent, Notice, Result, StoreError};

const CHANNELS: [&str; 3] = ["baton_jobs", "baton_events", "baton_cancel"];

pub(crate) async fn connect(url: &str, max_connections: u32) -> Result<Db> {
    let options = PgConnectOptions::from_str(url)?.application_name("baton");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        // A connection that broke while the server restarted is found out before use.
        .test_before_acquire(true)
        .connect_with(options)
        .await?;
    Ok(Db::Postgres(pool))
}

/// The connection of a PostgreSQL transaction.
fn pg(tx: &mut Tx) -> &mut PgConnection {
    match tx {
        Tx::Postgres(t) => t,
        Tx::Sqlite(_) => unreachable!("a PostgreSQL statement in a SQLite transaction"),
    }
}

pub(crate) async fn notices(pool: &PgPool) -> Result<PgNotices> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all(CHANNELS).await?;
    Ok(PgNotices {
        listener,
        lost: false,
    })
}

/// One statement: the job, its first event and the wake-up commit together; `None` when a
/// job already holds its idempotency key (a concurrent insert with the same key waits for
/// the first, then inserts nothing).
/// Candidates another node is claiming right now are skipped, never waited for; the
/// claimed rows, their attempts, their `attempt.started` events and the hints are one
/// statement. Two nodes claiming jobs of one session at the same moment: the unique index
/// refuses the second, nothing is taken, and the next tick tries again.
pub(crate) async fn claim(
    pool: &PgPool,
    incarnation: &str,
    now: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<(Vec<String>, Vec<Row>)> {
    match try_claim(pool, incarnation, now, lease_ms, limit).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            tracing::debug!("a claim lost a session race; retrying at the next tick");
            Ok((Vec::new(), Vec::new()))
        }
        other => Ok(other?),
    }
}

async fn project_load(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    now: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(crate::db::numbered(PROJECT_LOAD)))
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().map(Row::Postgres).collect())
}

async fn try_claim(
    pool: &PgPool,
    incarnation: &str,
    now: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<(Vec<String>, Vec<Row>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut projects = project_load(&mut tx, now).await?;
    if any_quota(&loads(&projects)) {
        // Claims take turns while a running quota exists, so the counts they read stay
        // true until they commit: two nodes never both fill a project's last slot.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        projects = project_load(&mut tx, now).await?;
    }
    // Each project's candidates, locked as they are read; another node's are skipped.
    let candidates = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT c.* FROM projects p CROSS JOIN LATERAL ({} FOR UPDATE SKIP LOCKED) c",
        crate::db::numbered(&PROJECT_CANDIDATES.replace("project_id = ?", "project_id = p.id"))
    )))
    .bind(now)
    .bind(i64::from(limit) * 2)
    .fetch_all(&mut *tx)
    .await?;
    let candidates: Vec<Row> = candidates.into_iter().map(Row::Postgres).collect();
    let order = fair_order(&loads(&projects), &candidates, limit);
    if order.is_empty() {
        tx.commit().await?;
        return Ok((order, Vec::new()));
    }
    let next = claimed_state().map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
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
    Ok((order, rows.into_iter().map(Row::Postgres).collect()))
}

/// One statement, so one round trip and atomic without a transaction: the guarded
/// sequence bump, the attempt's process, the events and the hint.
pub(crate) async fn append_events(
    pool: &PgPool,
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
    .fetch_optional(pool)
    .await?;
    last.ok_or_else(|| fenced(job, attempt))
}

/// Ends a batch of attempts in one transaction: the jobs move in one statement, then the
/// attempts, the events (with their hints) and the fences are written set-wise, each
/// column bound as an array.
pub(crate) async fn finish_attempts(
    pool: &PgPool,
    finishes: &[(JobId, u32, &Finish)],
    now: i64,
) -> Result<Vec<Result<JobRecord>>> {
    let mut tx = Tx::Postgres(pool.begin().await?);
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
                if let Some(s) = &finish.session {
                    let save = crate::sessions::save_session(
                        &record.project_id,
                        &s.id,
                        &s.transcript,
                        record.id,
                        now,
                    );
                    tx.exec(save).await?;
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
        .execute(pg(&mut tx))
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
        .execute(pg(&mut tx))
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
        .execute(pg(&mut tx))
        .await?;
    }
    if requeued {
        tx.notify("baton_jobs", String::new()).await?;
    }
    tx.commit().await?;
    Ok(out)
}

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

/// Moves every job of a batch by its finish in one statement, each only if its attempt
/// still owns it; one result per finish, in order. (A batch naming one job twice, which
/// the engine never sends, goes one statement per job, so each sees the other's effect.)
async fn move_jobs(
    tx: &mut Tx,
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
    .fetch_all(pg(tx))
    .await?;
    for row in rows {
        let i = row.get::<i64, _>(0) as usize;
        out[i] = Some(Ok(job_from_row(&Row::Postgres(row))?));
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
