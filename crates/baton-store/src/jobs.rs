//! Jobs: the queue. Inserting and claiming differ by backend (`sqlite.rs`, `postgres.rs`);
//! everything else here is written once.

use baton_core::{ErrorKind, EventKind, JobId, JobSpec, JobState, ProjectId, Transition};
use std::collections::HashMap;

use serde_json::{Value, json};

use crate::db::{Db, Row, Stmt, Tx, sql};
use crate::decode::{JOB_COLUMNS, fenced, job_from_row, open_jobs, parse_id, parse_state};
use crate::events::{NewEvent, insert_event};
use crate::{Result, Store, StoreError, postgres, sqlite};

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

/// How many of a project's jobs wait or run: what the queue holds now, counted through
/// the indexes of open jobs, never by reading the finished ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenJobs {
    pub queued: i64,
    pub running: i64,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub project_id: ProjectId,
    pub state: Option<JobState>,
    pub session_id: Option<String>,
    pub error_type: Option<String>,
    /// Only jobs of this conversation (a compatible API's digest of its messages).
    pub conversation: Option<String>,
    /// Only jobs created before this one (ids sort by creation).
    pub before: Option<JobId>,
    pub limit: u32,
}

/// The statement that inserts a job with the rows it brings: its `job.queued` event and,
/// when it names a `callback_url`, its row in the callbacks outbox (on SQLite, triggers
/// write them; on PostgreSQL, the same statement). It returns the job, or no row when
/// its idempotency key is taken.
pub(crate) fn job_insert(postgres: bool, job: &NewJob, now: i64) -> Result<Stmt> {
    let spec = serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let (key, hash) = job.idempotency.clone().unzip();
    let session = job.spec.session.owned_session().map(|s| s.to_string());
    let columns = "INSERT INTO jobs (id, project_id, state, priority, run_at, created_at, \
         updated_at, max_attempts, spec, session_id, last_seq, idempotency_key, request_hash, \
         conversation) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?) \
         ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING";
    let text = if postgres {
        format!(
            "WITH j AS ({columns} RETURNING {JOB_COLUMNS}), \
             e AS (INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
             SELECT id, 1, project_id, 0, created_at, 'job.queued', '{{\"state\":\"queued\"}}' FROM j), \
             c AS (INSERT INTO callbacks (id, job_id, project_id, url, state, attempts, next_at, created_at) \
             SELECT 'dlv_' || replace(id, '-', ''), id, project_id, CAST(? AS TEXT), 'pending', 0, created_at, created_at \
             FROM j WHERE CAST(? AS TEXT) IS NOT NULL) \
             SELECT {JOB_COLUMNS}, pg_notify('baton_jobs', '') FROM j"
        )
    } else {
        format!("{columns} RETURNING {JOB_COLUMNS}")
    };
    let mut q = sql(text)
        .bind(job.id.to_string())
        .bind(job.project_id.as_str())
        .bind(job.spec.schedule.priority)
        .bind(job.run_at)
        .bind(now)
        .bind(now)
        .bind(job.spec.schedule.retry.max_attempts)
        .bind(spec)
        .bind(session)
        .bind(key)
        .bind(hash)
        .bind(job.spec.conversation.clone());
    if postgres {
        q = q
            .bind(job.spec.callback_url.clone())
            .bind(job.spec.callback_url.clone());
    }
    Ok(q)
}

impl Store {
    /// Inserts a job and its `job.queued` event, or finds the job an earlier request with
    /// the same idempotency key created.
    pub async fn insert_job(&self, job: NewJob, now: i64) -> Result<Inserted> {
        let (key, hash) = job.idempotency.clone().unzip();
        let row = self
            .db
            .write_opt(job_insert(self.db.is_postgres(), &job, now)?)
            .await?;
        if let Some(row) = row {
            return Ok(Inserted::New(crate::decode::job_from_row(&row)?));
        }
        // The key was taken: by this request's twin, or by another request.
        let existing = self
            .db
            .write_opt(
                sql("SELECT id, request_hash FROM jobs WHERE project_id = ? AND idempotency_key = ?")
                    .bind(job.project_id.as_str())
                    .bind(key),
            )
            .await?
            .ok_or_else(|| {
                StoreError::Conflict("the job with this idempotency key was just deleted".into())
            })?;
        if existing.opt_text("request_hash") != hash {
            return Ok(Inserted::KeyReused);
        }
        let id = parse_id(&existing.text("id"))?;
        self.get_job(id).await.map(Inserted::Replayed)
    }

    pub async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        let row = self
            .db
            .opt(sql(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?")).bind(id.to_string()))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        job_from_row(&row)
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut text = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = ?");
        for (on, condition) in [
            (filter.state.is_some(), " AND state = ?"),
            (filter.session_id.is_some(), " AND session_id = ?"),
            (filter.error_type.is_some(), " AND error_type = ?"),
            (filter.conversation.is_some(), " AND conversation = ?"),
            (filter.before.is_some(), " AND id < ?"),
        ] {
            if on {
                text.push_str(condition);
            }
        }
        text.push_str(" ORDER BY id DESC LIMIT ?");
        let mut q = sql(text).bind(filter.project_id.as_str());
        if let Some(state) = filter.state {
            q = q.bind(state.as_str());
        }
        if let Some(session) = &filter.session_id {
            q = q.bind(session.clone());
        }
        if let Some(error_type) = &filter.error_type {
            q = q.bind(error_type.clone());
        }
        if let Some(conversation) = &filter.conversation {
            q = q.bind(conversation.clone());
        }
        if let Some(before) = filter.before {
            q = q.bind(before.to_string());
        }
        let rows = self.db.all(q.bind(filter.limit)).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Claims up to `limit` due jobs for `incarnation`, each with a lease until
    /// `now + lease_ms`, in priority then age order. A job whose session already has a
    /// running attempt is skipped, so at most one attempt per session runs at a time, and
    /// no job is ever claimed twice, however many nodes claim at once.
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
        let (order, rows) = match &self.db {
            Db::Sqlite { .. } => sqlite::claim(&self.db, incarnation, now, lease_ms, limit).await?,
            Db::Postgres(pool) => postgres::claim(pool, incarnation, now, lease_ms, limit).await?,
        };
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match job_from_row(row) {
                Ok(job) => claimed.push(Claimed { job }),
                // A row that cannot be decoded cannot be run: set it aside as failed, so it
                // neither blocks the queue nor comes back forever.
                Err(e) => {
                    let id = row.text("id");
                    tracing::error!(job = %id, error = %e, "quarantining a corrupt job");
                    self.db
                        .exec(
                            sql("UPDATE jobs SET state = 'failed', finished_at = ?, \
                                 error_type = 'corrupt_record', error_message = ?, \
                                 lease_owner = NULL, lease_expires_at = NULL WHERE id = ?")
                            .bind(now)
                            .bind(e.to_string())
                            .bind(id),
                        )
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
        let row = self
            .db
            .write_opt(
                sql(
                    "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'running' \
                     AND attempt = ? AND lease_owner = ? RETURNING cancel_requested",
                )
                .bind(expires_at)
                .bind(job.to_string())
                .bind(attempt)
                .bind(incarnation),
            )
            .await?;
        match row {
            Some(r) => Ok(r.int("cancel_requested") != 0),
            None => Err(fenced(job, attempt)),
        }
    }

    /// Cancels a job. A queued job is cancelled at once; a running one is flagged, and its
    /// supervisor kills the process and records the end. Returns the job as it now stands.
    pub async fn cancel(&self, job: JobId, now: i64) -> Result<JobRecord> {
        let id = job.to_string();
        let mut tx = self.db.begin().await?;
        let lock = tx.for_update();
        let row = tx
            .opt(
                sql(format!(
                    "SELECT state, project_id FROM jobs WHERE id = ?{lock}"
                ))
                .bind(&*id),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let state = parse_state(row.text("state"))?;
        match state {
            JobState::Queued => {
                let next = state
                    .apply(Transition::Cancel)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                let seq = tx
                    .one(
                        sql("UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, \
                             error_type = 'cancelled', error_message = 'cancelled before it started', \
                             last_seq = last_seq + 1 WHERE id = ? AND state = 'queued' RETURNING last_seq")
                        .bind(next.as_str())
                        .bind(now)
                        .bind(now)
                        .bind(&*id),
                    )
                    .await?
                    .int("last_seq");
                let event =
                    NewEvent::lifecycle(EventKind::JobCancelled, json!({"state": "cancelled"}));
                insert_event(&mut tx, &id, &row.text("project_id"), seq, 0, now, &event).await?;
                tx.notify("baton_events", format!("{id}:{seq}")).await?;
            }
            JobState::Running => {
                tx.exec(
                    sql("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?")
                        .bind(now)
                        .bind(&*id),
                )
                .await?;
                tx.notify("baton_cancel", id.clone()).await?;
            }
            finished => {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "job {id} is already {finished} and cannot be cancelled"
                )));
            }
        }
        tx.commit().await?;
        self.get_job(job).await
    }

    /// Running jobs leased by `incarnation` whose cancel was requested.
    pub async fn cancels_for(&self, incarnation: &str) -> Result<Vec<JobId>> {
        let rows = self
            .db
            .all(
                sql(
                    "SELECT id FROM jobs WHERE state = 'running' AND lease_owner = ? \
                     AND cancel_requested != 0",
                )
                .bind(incarnation),
            )
            .await?;
        rows.iter().map(|r| parse_id(&r.text("id"))).collect()
    }

    /// The earliest `run_at` of a queued job, so the dispatcher knows when to wake.
    pub async fn next_run_at(&self) -> Result<Option<i64>> {
        let row = self
            .db
            .opt(sql(
                "SELECT MIN(run_at) AS at FROM jobs WHERE state = 'queued'",
            ))
            .await?;
        Ok(row.and_then(|r| r.opt_int("at")))
    }

    /// The project's queued and running jobs. Its cost grows with the queue, not with the
    /// finished jobs kept.
    pub async fn count_open(&self, project_id: &ProjectId) -> Result<OpenJobs> {
        let rows = self
            .db
            .all(
                sql("SELECT state, COUNT(*) AS n FROM jobs \
                     WHERE project_id = ? AND state IN ('queued', 'running') GROUP BY state")
                .bind(project_id.as_str()),
            )
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
        let mut tx = self.db.begin().await?;
        let lock = tx.for_update();
        let state = tx
            .opt(sql(format!("SELECT state FROM jobs WHERE id = ?{lock}")).bind(&*id))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?
            .text("state");
        let from = parse_state(state)?;
        let Ok(next) = from.apply(Transition::Replay) else {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "job {id} is {from}; only failed or dead jobs can be replayed"
            )));
        };
        let row = tx
            .one(
                sql(format!(
                    "UPDATE jobs SET state = ?, spec = ?, priority = ?, max_attempts = attempt + ?, \
                     run_at = ?, finished_at = NULL, outcome = NULL, error_type = NULL, \
                     error_message = NULL, cancel_requested = 0, updated_at = ?, \
                     last_seq = last_seq + 1 WHERE id = ? AND state = ? RETURNING {JOB_COLUMNS}"
                ))
                .bind(next.as_str())
                .bind(spec_json)
                .bind(spec.schedule.priority)
                .bind(extra_attempts)
                .bind(now)
                .bind(now)
                .bind(&*id)
                .bind(from.as_str()),
            )
            .await?;
        let record = job_from_row(&row)?;
        let event = NewEvent::lifecycle(
            EventKind::JobReplayed,
            json!({"from": from.as_str(), "state": next.as_str()}),
        );
        let (project, seq) = (record.project_id.as_str(), record.last_seq);
        insert_event(&mut tx, &id, project, seq, record.attempt, now, &event).await?;
        tx.notify("baton_jobs", String::new()).await?;
        tx.notify("baton_events", format!("{id}:{seq}")).await?;
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
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = ? AND state = 'dead' \
                     AND (? IS NULL OR error_type = ?) ORDER BY id LIMIT ?"
                ))
                .bind(project_id.as_str())
                .bind(error_type)
                .bind(error_type)
                .bind(limit),
            )
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Deletes up to `limit` jobs in `state` that finished before `finished_before`, with
    /// their attempts and events (cascade). Small batches, so the queue never waits long
    /// behind retention. Returns how many were deleted.
    pub async fn prune(&self, state: JobState, finished_before: i64, limit: u32) -> Result<u64> {
        // On PostgreSQL, rows another node is changing are left for the next batch.
        let skip = match self.db {
            Db::Sqlite { .. } => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        self.db
            .exec(
                sql(format!(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = ? \
                     AND finished_at < ? ORDER BY finished_at LIMIT ?{skip})"
                ))
                .bind(state.as_str())
                .bind(finished_before)
                .bind(limit),
            )
            .await
    }
}

/// Each project, its settings, its attempts running now and whether it has a job due
/// (bound: `now`): how a claim shares the slots, and which projects it looks at.
pub(crate) const PROJECT_LOAD: &str = "SELECT p.id, p.settings, \
    (SELECT COUNT(*) FROM jobs r WHERE r.project_id = p.id AND r.state = 'running') AS running, \
    (SELECT COUNT(*) FROM (SELECT 1 FROM jobs d WHERE d.project_id = p.id AND d.state = 'queued' \
     AND d.run_at <= ? LIMIT 1) x) AS due \
    FROM projects p ORDER BY p.id";

/// A project's due jobs, in queue order, not of a session that already runs: the
/// candidates of a claim (`project_id`, `now`, `limit`; twice the claim's limit, as some
/// may share a session).
pub(crate) const PROJECT_CANDIDATES: &str = "SELECT id, session_id, project_id, priority, run_at \
    FROM jobs j WHERE project_id = ? AND state = 'queued' AND run_at <= ? \
    AND (session_id IS NULL OR NOT EXISTS \
         (SELECT 1 FROM jobs r WHERE r.project_id = j.project_id AND r.session_id = j.session_id \
          AND r.state = 'running')) \
    ORDER BY priority DESC, run_at, id LIMIT ?";

/// A project's share of the slots.
pub(crate) struct Load {
    running: i64,
    max_running: Option<i64>,
}

/// The load of each project, from [`PROJECT_LOAD`] rows. Settings that cannot be read
/// set no quota (and say so), rather than stopping every project's claims.
pub(crate) fn loads(rows: &[Row]) -> HashMap<String, Load> {
    rows.iter()
        .map(|r| {
            let id = r.text("id");
            let settings: baton_core::ProjectSettings = serde_json::from_str(&r.text("settings"))
                .unwrap_or_else(|e| {
                    tracing::error!(project = %id, error = %e, "unreadable project settings: no running quota applies");
                    baton_core::ProjectSettings::default()
                });
            let load = Load {
                running: r.int("running"),
                max_running: settings.quotas.max_running.map(i64::from),
            };
            (id, load)
        })
        .collect()
}

/// Whether any project has a running quota (on PostgreSQL, claims then take turns, so
/// that two nodes never both fill a project's last slot).
pub(crate) fn any_quota(loads: &HashMap<String, Load>) -> bool {
    loads.values().any(|l| l.max_running.is_some())
}

/// The jobs a claim takes, from each project's candidates in queue order. Slots go to
/// the project with the fewest attempts running (counting those taken in this claim),
/// ties to the job first in queue order; a project at its `max_running` gets none. So a
/// project with 10,000 queued jobs delays another project's first job by one free slot
/// at most, and within a project priority and `run_at` keep their order. At most one job
/// per session, at most `limit`.
pub(crate) fn fair_order(
    loads: &HashMap<String, Load>,
    candidates: &[Row],
    limit: u32,
) -> Vec<String> {
    let mut queue: Vec<(i64, i64, String, Option<String>, String)> = candidates
        .iter()
        .map(|r| {
            (
                -r.int("priority"),
                r.int("run_at"),
                r.text("id"),
                r.opt_text("session_id"),
                r.text("project_id"),
            )
        })
        .collect();
    queue.sort();
    let mut by_project: HashMap<&str, std::collections::VecDeque<usize>> = HashMap::new();
    for (i, c) in queue.iter().enumerate() {
        by_project.entry(c.4.as_str()).or_default().push_back(i);
    }
    let mut running: HashMap<&str, i64> = by_project
        .keys()
        .map(|p| (*p, loads.get(*p).map_or(0, |l| l.running)))
        .collect();
    let mut sessions = std::collections::HashSet::new();
    let mut order = Vec::new();
    while (order.len() as u32) < limit {
        let next = by_project
            .iter()
            .filter(|(p, q)| {
                !q.is_empty()
                    && loads
                        .get(**p)
                        .and_then(|l| l.max_running)
                        .is_none_or(|max| running[**p] < max)
            })
            .min_by_key(|(p, q)| (running[**p], q[0]))
            .map(|(p, _)| *p);
        let Some(project) = next else { break };
        let Some(i) = by_project.get_mut(project).and_then(|q| q.pop_front()) else {
            break;
        };
        let (_, _, id, session, _) = &queue[i];
        // Candidates come from one project at a time, but the set spans projects: a
        // session is known by its project and its id.
        if session
            .as_ref()
            .is_none_or(|s| sessions.insert((project, s.clone())))
        {
            order.push(id.clone());
            *running.entry(project).or_default() += 1;
        }
    }
    order
}

/// The state a claimed job moves to.
pub(crate) fn claimed_state() -> Result<JobState> {
    JobState::Queued
        .apply(Transition::Claim)
        .map_err(|e| StoreError::Conflict(e.to_string()))
}

/// Moves one job by a finish, inside a transaction, if this attempt still owns it. The
/// outer `Result` is a database failure; the inner one is this attempt's fate.
pub(crate) async fn move_job(
    tx: &mut Tx,
    job: JobId,
    attempt: u32,
    finish: &crate::Finish,
    now: i64,
) -> Result<Result<JobRecord>> {
    let next = match JobState::Running.apply(finish.transition) {
        Ok(next) => next,
        Err(e) => return Ok(Err(StoreError::Conflict(e.to_string()))),
    };
    let (error_type, error_message) = match &finish.error {
        Some((kind, message)) => (Some(kind.as_str()), Some(message.as_str())),
        None => (None, None),
    };
    let row = tx
        .opt(
            sql(format!(
                "UPDATE jobs SET state = ?, run_at = COALESCE(?, run_at), finished_at = ?, \
                 outcome = COALESCE(?, outcome), error_type = ?, error_message = ?, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = ?, \
                 last_seq = last_seq + 1 + ?, max_attempts = max_attempts + ? \
                 WHERE id = ? AND state = 'running' AND attempt = ? RETURNING {JOB_COLUMNS}"
            ))
            .bind(next.as_str())
            .bind(finish.run_at)
            .bind(next.is_terminal().then_some(now))
            .bind(finish.outcome.as_ref().map(Value::to_string))
            .bind(error_type)
            .bind(error_message)
            .bind(now)
            .bind(finish.trailing.len() as i64)
            .bind(finish.refund_attempt)
            .bind(job.to_string())
            .bind(attempt),
        )
        .await?;
    match row {
        Some(row) => Ok(Ok(job_from_row(&row)?)),
        None => Ok(Err(fenced(job, attempt))),
    }
}
