//! What only SQLite does: opening the file, and the writes that take their shape from
//! SQLite's single writer (a claim, an append and a batch of finishes each go to it as one
//! statement list; triggers add the rows that come with a new job or a claim).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use baton_core::JobId;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::db::{Db, Row, sql};
use crate::decode::{JOB_COLUMNS, fenced};
use crate::jobs::{PROJECT_CANDIDATES, PROJECT_LOAD, claimed_state, fair_order, loads, move_job};
use crate::{AttemptMeta, Finish, JobRecord, NewEvent, Result};

/// Opens (creating if needed) the database file: one writer connection, every write of
/// the process in order, so SQLite never sees two writers race for its lock; and a pool
/// of readers that see the last commit (WAL).
pub(crate) async fn open(path: &Path) -> Result<Db> {
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
    // The readers are opened after the writer, so the file and its WAL exist.
    let read = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.read_only(true))
        .await?;
    Ok(Db::Sqlite { write, read })
}

/// Inserts a job in one statement, which commits alone (its trigger adds the `job.queued`
/// event); `None` when a job already holds its idempotency key.
/// A claim's candidates (each project's due jobs) come from a reader, so an empty queue
/// never takes the write lock; [`fair_order`] shares the slots between projects.
/// Only this process claims (one server per data directory), and the guarded `UPDATE`
/// skips any candidate cancelled meanwhile. The batch is one statement, which commits
/// alone: the ids travel as one JSON array, and a trigger adds each attempt's row and
/// `attempt.started` event. Returns the order taken and the rows claimed.
pub(crate) async fn claim(
    db: &Db,
    incarnation: &str,
    now: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<(Vec<String>, Vec<Row>)> {
    // One dispatcher claims for this database, so the counts cannot race.
    let projects = db.all(sql(PROJECT_LOAD).bind(now)).await?;
    let mut candidates = Vec::new();
    for p in projects.iter().filter(|p| p.int("due") > 0) {
        candidates.extend(
            db.all(
                sql(PROJECT_CANDIDATES)
                    .bind(p.text("id"))
                    .bind(now)
                    .bind(limit * 2),
            )
            .await?,
        );
    }
    let order = fair_order(&loads(&projects), &candidates, limit);
    if order.is_empty() {
        return Ok((order, Vec::new()));
    }
    let rows = db
        .write_all(
            sql(format!(
                "UPDATE jobs SET state = ?, attempt = attempt + 1, lease_owner = ?, \
                 lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?, \
                 last_seq = last_seq + 1 \
                 WHERE state = 'queued' AND id IN (SELECT value FROM json_each(?)) \
                 RETURNING {JOB_COLUMNS}"
            ))
            .bind(claimed_state()?.as_str())
            .bind(incarnation)
            .bind(now + lease_ms)
            .bind(now)
            .bind(now)
            .bind(Value::from(order.clone()).to_string()),
        )
        .await?;
    Ok((order, rows))
}

/// One round trip in one transaction: the pid and session id when newly known, the
/// guarded move of `last_seq` (the fence), and the events numbered after it, from one
/// JSON array.
pub(crate) async fn append_events(
    db: &Db,
    job: JobId,
    attempt: u32,
    events: &[NewEvent],
    meta: &AttemptMeta,
    now: i64,
) -> Result<i64> {
    let id = job.to_string();
    let mut list = sql("");
    if let Some((pid, start)) = meta.pid {
        list = list.and(
            sql("UPDATE attempts SET pid = ?, pid_start = ?, warm = ? WHERE job_id = ? AND attempt = ?")
                .bind(pid)
                .bind(start as i64)
                .bind(meta.warm)
                .bind(&*id)
                .bind(attempt),
        );
    }
    if let Some(session) = &meta.session_id {
        list = list.and(
            sql(
                "UPDATE jobs SET session_id = ? WHERE id = ? AND state = 'running' AND attempt = ?",
            )
            .bind(session.as_str())
            .bind(&*id)
            .bind(attempt),
        );
    }
    list = list.and(
        sql(
            "UPDATE jobs SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? \
             AND state = 'running' AND attempt = ? RETURNING last_seq",
        )
        .bind(events.len() as i64)
        .bind(now)
        .bind(&*id)
        .bind(attempt),
    );
    if !events.is_empty() {
        let batch: Vec<Value> = events
            .iter()
            .map(|e| json!({"k": e.kind, "d": e.data.to_string()}))
            .collect();
        list = list.and(
            sql(
                "INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
                 SELECT j.id, j.last_seq - ? + 1 + e.key, j.project_id, ?, ?, \
                 json_extract(e.value, '$.k'), json_extract(e.value, '$.d') \
                 FROM jobs j, json_each(?) AS e \
                 WHERE j.id = ? AND j.state = 'running' AND j.attempt = ?",
            )
            .bind(events.len() as i64)
            .bind(attempt)
            .bind(now)
            .bind(Value::from(batch).to_string())
            .bind(&*id)
            .bind(attempt),
        );
    }
    let mut tx = db.begin().await?;
    let rows = tx.all(list).await?;
    // Only the fence's `RETURNING` yields a row; none means another attempt owns the job.
    let last = rows
        .first()
        .ok_or_else(|| fenced(job, attempt))?
        .int("last_seq");
    tx.commit().await?;
    Ok(last)
}

/// Ends a batch of attempts in one transaction. Each job moves by its own guarded
/// `UPDATE`; the attempts, events, sessions and fences of the batch are then written
/// set-wise, as one statement list.
pub(crate) async fn finish_attempts(
    db: &Db,
    finishes: &[(JobId, u32, &Finish)],
    now: i64,
) -> Result<Vec<Result<JobRecord>>> {
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(finishes.len());
    let (mut ended, mut events, mut fenced_ids) = (Vec::new(), Vec::new(), Vec::new());
    // Everything after the guarded moves goes to the writer as one statement list.
    let mut list = sql("");
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
                if let Some(s) = &finish.session {
                    list = list.and(crate::sessions::save_session(
                        &record.project_id,
                        &s.id,
                        &s.transcript,
                        record.id,
                        now,
                    ));
                }
                out.push(Ok(record));
            }
            Err(e) => {
                fenced_ids.push(json!({"id": job.to_string(), "a": attempt, "r": finish.reaped}));
                out.push(Err(e));
            }
        }
    }
    if !ended.is_empty() {
        list = list.and(
            sql("UPDATE attempts SET finished_at = ?, error_type = json_extract(v.value, '$.t'), \
                 error_message = json_extract(v.value, '$.m'), reaped = json_extract(v.value, '$.r') \
                 FROM json_each(?) AS v \
                 WHERE attempts.job_id = json_extract(v.value, '$.id') \
                 AND attempts.attempt = json_extract(v.value, '$.a'); \
                 INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
                 SELECT json_extract(value, '$.id'), json_extract(value, '$.seq'), \
                 json_extract(value, '$.p'), json_extract(value, '$.a'), ?, \
                 json_extract(value, '$.k'), json_extract(value, '$.d') FROM json_each(?)")
            .bind(now)
            .bind(Value::from(ended).to_string())
            .bind(now)
            .bind(Value::from(events).to_string()),
        );
    }
    if !fenced_ids.is_empty() {
        list = list.and(
            sql("UPDATE attempts SET fenced = 1, reaped = max(reaped, json_extract(v.value, '$.r')) \
                 FROM json_each(?) AS v \
                 WHERE attempts.job_id = json_extract(v.value, '$.id') \
                 AND attempts.attempt = json_extract(v.value, '$.a')")
            .bind(Value::from(fenced_ids).to_string()),
        );
    }
    if !list.is_empty() {
        tx.exec(list).await?;
    }
    tx.commit().await?;
    Ok(out)
}
