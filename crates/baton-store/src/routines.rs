//! Routines, their triggers and their fires. A fire is one row per (trigger, fire key) —
//! a cron slot, a GitHub delivery, an `Idempotency-Key` — written in the transaction that
//! queues its job, so a fire happens at most once however many nodes try, and never
//! without its job.

use baton_core::{JobState, ProjectId};
use serde_json::Value;

use crate::db::{Row, Tx, sql};
use crate::decode::parse_project;
use crate::jobs::{NewJob, job_insert};
use crate::{JobRecord, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct RoutineRecord {
    pub id: String,
    pub project_id: ProjectId,
    pub name: String,
    /// The definition as the API accepted it.
    pub definition: Value,
    pub paused: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    pub id: String,
    pub project_id: ProjectId,
    pub routine_id: String,
    /// `api`, `cron`, `webhook` or `github`.
    pub kind: String,
    /// The settings as the API accepted them (no secret).
    pub config: Value,
    /// A cron trigger's next slot.
    pub next_fire_at: Option<i64>,
    pub created_at: i64,
}

/// What checking a trigger's credentials needs; never shown.
#[derive(Debug, Clone)]
pub struct TriggerSecrets {
    pub trigger: TriggerRecord,
    pub secret: Option<String>,
    pub token_hash: Option<String>,
}

/// A new trigger.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    pub id: String,
    pub routine_id: String,
    pub kind: String,
    pub config: Value,
    pub secret: Option<String>,
    pub token_hash: Option<String>,
    pub next_fire_at: Option<i64>,
}

/// What happened to one fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// Its job was queued.
    Queued,
    /// It waits for the routine's unfinished run (a cron trigger's `overlap = "queue"`).
    Waiting,
    /// Its slot passed without a run (the previous run was still going).
    Skipped,
    /// Its run could not be made (a template that failed, an agent gone): the error says.
    Failed,
}

impl FireOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Waiting => "waiting",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "queued" => Ok(Self::Queued),
            "waiting" => Ok(Self::Waiting),
            "skipped" => Ok(Self::Skipped),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Corrupt(format!("fire outcome {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FireRecord {
    pub trigger_id: String,
    pub fire_key: String,
    pub routine_id: String,
    pub project_id: ProjectId,
    pub outcome: FireOutcome,
    pub job_id: Option<String>,
    /// Why a `failed` fire made no run.
    pub error: Option<String>,
    pub fired_at: i64,
}

/// One fire to record.
#[derive(Debug, Clone)]
pub struct Fire {
    pub project_id: ProjectId,
    pub routine_id: String,
    pub trigger_id: String,
    pub fire_key: String,
    /// The job to queue (none for a skipped slot).
    pub job: Option<NewJob>,
    pub outcome: FireOutcome,
    /// `(runs allowed, since)`: fires that queue (or wait) counted from `since`.
    pub allowance: (u32, i64),
    /// Why a `failed` fire made no run.
    pub error: Option<String>,
}

/// What a fire did.
#[derive(Debug, Clone)]
pub enum Fired {
    /// Recorded now, with its job when one was queued.
    New(FireRecord, Option<Box<JobRecord>>),
    /// This (trigger, key) fired before: that fire.
    Duplicate(FireRecord),
    /// The routine is paused: nothing written.
    Paused,
    /// The routine's runs since the allowance's start reached it: nothing written.
    OverAllowance,
}

const ROUTINE_COLUMNS: &str = "id, project_id, name, definition, paused, created_at, updated_at";
const TRIGGER_COLUMNS: &str = "id, project_id, routine_id, kind, config, next_fire_at, created_at";
const FIRE_COLUMNS: &str =
    "trigger_id, fire_key, routine_id, project_id, outcome, job_id, error, fired_at";
const UNFINISHED: &str = "('queued', 'running')";

fn json(r: &Row, c: &str) -> Result<Value> {
    serde_json::from_str(&r.text(c)).map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
}

fn routine_from_row(r: &Row) -> Result<RoutineRecord> {
    Ok(RoutineRecord {
        id: r.text("id"),
        project_id: parse_project(r.text("project_id"))?,
        name: r.text("name"),
        definition: json(r, "definition")?,
        paused: r.int("paused") != 0,
        created_at: r.int("created_at"),
        updated_at: r.int("updated_at"),
    })
}

fn trigger_from_row(r: &Row) -> Result<TriggerRecord> {
    Ok(TriggerRecord {
        id: r.text("id"),
        project_id: parse_project(r.text("project_id"))?,
        routine_id: r.text("routine_id"),
        kind: r.text("kind"),
        config: json(r, "config")?,
        next_fire_at: r.opt_int("next_fire_at"),
        created_at: r.int("created_at"),
    })
}

fn fire_from_row(r: &Row) -> Result<FireRecord> {
    Ok(FireRecord {
        trigger_id: r.text("trigger_id"),
        fire_key: r.text("fire_key"),
        routine_id: r.text("routine_id"),
        project_id: parse_project(r.text("project_id"))?,
        outcome: FireOutcome::parse(&r.text("outcome"))?,
        job_id: r.opt_text("job_id"),
        error: r.opt_text("error"),
        fired_at: r.int("fired_at"),
    })
}

impl Store {
    pub async fn create_routine(
        &self,
        project: &ProjectId,
        id: &str,
        name: &str,
        definition: &Value,
        now: i64,
    ) -> Result<RoutineRecord> {
        let row = self
            .db
            .write_opt(
                sql(format!(
                    "INSERT INTO routines (id, project_id, name, definition, paused, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT DO NOTHING RETURNING {ROUTINE_COLUMNS}"
                ))
                .bind(id)
                .bind(project.as_str())
                .bind(name)
                .bind(definition.to_string())
                .bind(now)
                .bind(now),
            )
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("a routine named {name} already exists")))?;
        routine_from_row(&row)
    }

    pub async fn get_routine(&self, project: &ProjectId, id: &str) -> Result<RoutineRecord> {
        let row = self
            .db
            .opt(
                sql(format!(
                    "SELECT {ROUTINE_COLUMNS} FROM routines WHERE project_id = ? AND id = ?"
                ))
                .bind(project.as_str())
                .bind(id),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("routine {id}")))?;
        routine_from_row(&row)
    }

    /// The project's routines, oldest first.
    pub async fn list_routines(&self, project: &ProjectId) -> Result<Vec<RoutineRecord>> {
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {ROUTINE_COLUMNS} FROM routines WHERE project_id = ? ORDER BY created_at, id"
                ))
                .bind(project.as_str()),
            )
            .await?;
        rows.iter().map(routine_from_row).collect()
    }

    /// Replaces a routine's definition (and name), and/or pauses or resumes it.
    pub async fn update_routine(
        &self,
        project: &ProjectId,
        id: &str,
        change: Option<(&str, &Value)>,
        paused: Option<bool>,
        now: i64,
    ) -> Result<RoutineRecord> {
        let (name, definition) = change.unzip();
        let mut tx = self.db.begin().await?;
        if let Some(name) = name {
            let taken = tx
                .opt(
                    sql("SELECT id FROM routines WHERE project_id = ? AND name = ? AND id <> ?")
                        .bind(project.as_str())
                        .bind(name)
                        .bind(id),
                )
                .await?;
            if taken.is_some() {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "a routine named {name} already exists"
                )));
            }
        }
        let row = tx
            .opt(
                sql(format!(
                    "UPDATE routines SET name = COALESCE(?, name), definition = COALESCE(?, definition), \
                     paused = COALESCE(?, paused), updated_at = ? WHERE project_id = ? AND id = ? \
                     RETURNING {ROUTINE_COLUMNS}"
                ))
                .bind(name)
                .bind(definition.map(Value::to_string))
                .bind(paused.map(i64::from))
                .bind(now)
                .bind(project.as_str())
                .bind(id),
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("routine {id}")));
        };
        tx.commit().await?;
        routine_from_row(&row)
    }

    /// Deletes a routine with its triggers; its fires and runs stay.
    pub async fn delete_routine(&self, project: &ProjectId, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        tx.exec(
            sql("DELETE FROM triggers WHERE project_id = ? AND routine_id = ?")
                .bind(project.as_str())
                .bind(id),
        )
        .await?;
        let n = tx
            .exec(
                sql("DELETE FROM routines WHERE project_id = ? AND id = ?")
                    .bind(project.as_str())
                    .bind(id),
            )
            .await?;
        if n == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("routine {id}")));
        }
        tx.commit().await
    }

    /// Adds a trigger to a routine of `project`; `max` triggers at most per routine.
    pub async fn add_trigger(
        &self,
        project: &ProjectId,
        t: NewTrigger,
        max: usize,
        now: i64,
    ) -> Result<TriggerRecord> {
        let mut tx = self.db.begin().await?;
        let lock = tx.for_update();
        tx.opt(
            sql(format!(
                "SELECT id FROM routines WHERE project_id = ? AND id = ?{lock}"
            ))
            .bind(project.as_str())
            .bind(t.routine_id.as_str()),
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("routine {}", t.routine_id)))?;
        let count = tx
            .one(
                sql("SELECT COUNT(*) AS n FROM triggers WHERE routine_id = ?")
                    .bind(t.routine_id.as_str()),
            )
            .await?
            .int("n");
        if count >= max as i64 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "routine {} has {max} triggers, the most it may have",
                t.routine_id
            )));
        }
        let row = tx
            .one(
                sql(format!(
                    "INSERT INTO triggers (id, project_id, routine_id, kind, config, secret, token_hash, \
                     next_fire_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {TRIGGER_COLUMNS}"
                ))
                .bind(t.id.as_str())
                .bind(project.as_str())
                .bind(t.routine_id.as_str())
                .bind(t.kind.as_str())
                .bind(t.config.to_string())
                .bind(t.secret)
                .bind(t.token_hash)
                .bind(t.next_fire_at)
                .bind(now),
            )
            .await?;
        tx.commit().await?;
        trigger_from_row(&row)
    }

    /// A routine's triggers, oldest first.
    pub async fn list_triggers(
        &self,
        project: &ProjectId,
        routine: &str,
    ) -> Result<Vec<TriggerRecord>> {
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE project_id = ? AND routine_id = ? \
                     ORDER BY created_at, id"
                ))
                .bind(project.as_str())
                .bind(routine),
            )
            .await?;
        rows.iter().map(trigger_from_row).collect()
    }

    /// A trigger found by its id alone, with what checks its callers (a fire or a hook
    /// knows nothing else).
    pub async fn trigger_secrets(&self, id: &str) -> Result<TriggerSecrets> {
        let row = self
            .db
            .opt(
                sql(format!(
                    "SELECT {TRIGGER_COLUMNS}, secret, token_hash FROM triggers WHERE id = ?"
                ))
                .bind(id),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("trigger {id}")))?;
        Ok(TriggerSecrets {
            trigger: trigger_from_row(&row)?,
            secret: row.opt_text("secret"),
            token_hash: row.opt_text("token_hash"),
        })
    }

    pub async fn delete_trigger(&self, project: &ProjectId, id: &str) -> Result<()> {
        let n = self
            .db
            .exec(
                sql("DELETE FROM triggers WHERE project_id = ? AND id = ?")
                    .bind(project.as_str())
                    .bind(id),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("trigger {id}")));
        }
        Ok(())
    }

    /// Replaces an API trigger's token (the old one stops working at once).
    pub async fn set_trigger_token(&self, project: &ProjectId, id: &str, hash: &str) -> Result<()> {
        let n = self
            .db
            .exec(
                sql("UPDATE triggers SET token_hash = ? WHERE project_id = ? AND id = ? AND kind = 'api'")
                    .bind(hash)
                    .bind(project.as_str())
                    .bind(id),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("API trigger {id}")));
        }
        Ok(())
    }

    /// Cron triggers whose next slot is due at `now`, oldest slot first.
    pub async fn due_triggers(&self, now: i64, limit: u32) -> Result<Vec<TriggerRecord>> {
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE next_fire_at IS NOT NULL \
                     AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?"
                ))
                .bind(now)
                .bind(limit),
            )
            .await?;
        rows.iter().map(trigger_from_row).collect()
    }

    /// Moves a cron trigger's next slot from `from` to `to`; false when another node (or
    /// a change) moved it first.
    pub async fn advance_trigger(&self, id: &str, from: i64, to: Option<i64>) -> Result<bool> {
        let n = self
            .db
            .exec(
                sql("UPDATE triggers SET next_fire_at = ? WHERE id = ? AND next_fire_at = ?")
                    .bind(to)
                    .bind(id)
                    .bind(from),
            )
            .await?;
        Ok(n == 1)
    }

    /// Sets a cron trigger's next slot (after its routine resumes).
    pub async fn reschedule_trigger(&self, id: &str, next: Option<i64>) -> Result<()> {
        self.db
            .exec(
                sql("UPDATE triggers SET next_fire_at = ? WHERE id = ?")
                    .bind(next)
                    .bind(id),
            )
            .await?;
        Ok(())
    }

    /// Records a fire and queues its job, in one transaction: a paused routine or a used
    /// allowance writes nothing; a (trigger, key) seen before answers with that fire.
    pub async fn fire(&self, fire: Fire, now: i64) -> Result<Fired> {
        let mut tx = self.db.begin().await?;
        let lock = tx.for_update();
        let routine = tx
            .opt(
                sql(format!(
                    "SELECT paused FROM routines WHERE project_id = ? AND id = ?{lock}"
                ))
                .bind(fire.project_id.as_str())
                .bind(fire.routine_id.as_str()),
            )
            .await?;
        let Some(routine) = routine else {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("routine {}", fire.routine_id)));
        };
        if let Some(existing) = find_fire(&mut tx, &fire.trigger_id, &fire.fire_key).await? {
            tx.rollback().await?;
            return Ok(Fired::Duplicate(existing));
        }
        if routine.int("paused") != 0 {
            tx.rollback().await?;
            return Ok(Fired::Paused);
        }
        if matches!(fire.outcome, FireOutcome::Queued | FireOutcome::Waiting) {
            let (allowed, since) = fire.allowance;
            let used = tx
                .one(
                    sql(
                        "SELECT COUNT(*) AS n FROM routine_fires WHERE routine_id = ? \
                         AND fired_at >= ? AND outcome IN ('queued', 'waiting')",
                    )
                    .bind(fire.routine_id.as_str())
                    .bind(since),
                )
                .await?
                .int("n");
            if used >= i64::from(allowed) {
                tx.rollback().await?;
                return Ok(Fired::OverAllowance);
            }
        }
        let queued = fire.outcome == FireOutcome::Queued;
        let job = match (&fire.job, queued) {
            (Some(job), true) => Some(insert_job_tx(&mut tx, job, now).await?),
            _ => None,
        };
        let input = match (&fire.job, fire.outcome) {
            (Some(job), FireOutcome::Waiting) => Some(
                serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            _ => None,
        };
        let row = tx
            .opt(
                sql(format!(
                    "INSERT INTO routine_fires (trigger_id, fire_key, routine_id, project_id, outcome, \
                     job_id, input, error, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING \
                     RETURNING {FIRE_COLUMNS}"
                ))
                .bind(fire.trigger_id.as_str())
                .bind(fire.fire_key.as_str())
                .bind(fire.routine_id.as_str())
                .bind(fire.project_id.as_str())
                .bind(fire.outcome.as_str())
                .bind(job.as_ref().map(|j| j.id.to_string()))
                .bind(input)
                .bind(fire.error.clone())
                .bind(now),
            )
            .await?;
        let Some(row) = row else {
            // Another node recorded this fire since the look above.
            tx.rollback().await?;
            let mut tx = self.db.begin().await?;
            let existing = find_fire(&mut tx, &fire.trigger_id, &fire.fire_key).await?;
            tx.rollback().await?;
            return existing
                .map(Fired::Duplicate)
                .ok_or_else(|| StoreError::Conflict("a fire raced and vanished; retry".into()));
        };
        tx.commit().await?;
        Ok(Fired::New(fire_from_row(&row)?, job.map(Box::new)))
    }

    /// A fire recorded before under (trigger, key), if any.
    pub async fn find_fire(&self, trigger: &str, key: &str) -> Result<Option<FireRecord>> {
        let row = self.db.opt(fire_by_key(trigger, key)).await?;
        row.as_ref().map(fire_from_row).transpose()
    }

    /// Whether a routine has a run that has not ended (queued or running), or a fire
    /// waiting for one.
    pub async fn routine_busy(&self, routine: &str) -> Result<bool> {
        let row = self
            .db
            .opt(
                sql(format!(
                    "SELECT f.trigger_id FROM routine_fires f JOIN jobs j ON j.id = f.job_id \
                     WHERE f.routine_id = ? AND j.state IN {UNFINISHED} \
                     UNION ALL SELECT trigger_id FROM routine_fires WHERE routine_id = ? AND outcome = 'waiting' \
                     LIMIT 1"
                ))
                .bind(routine)
                .bind(routine),
            )
            .await?;
        Ok(row.is_some())
    }

    /// Queues the oldest waiting fire of each routine that has no unfinished run; how
    /// many were queued.
    pub async fn release_waiting(&self, now: i64) -> Result<u32> {
        let routines = self
            .db
            .all(sql(
                "SELECT DISTINCT routine_id FROM routine_fires WHERE outcome = 'waiting'",
            ))
            .await?;
        let mut released = 0;
        for r in routines {
            let routine = r.text("routine_id");
            let mut tx = self.db.begin().await?;
            let lock = tx.for_update();
            // The routine's row first, locked: two nodes releasing at once take turns, and
            // a paused or deleted routine releases nothing.
            let active = tx
                .opt(
                    sql(format!("SELECT paused FROM routines WHERE id = ?{lock}"))
                        .bind(routine.as_str()),
                )
                .await?
                .is_some_and(|r| r.int("paused") == 0);
            let running = !active
                || tx
                    .opt(
                        sql(format!(
                            "SELECT f.job_id FROM routine_fires f JOIN jobs j ON j.id = f.job_id \
                             WHERE f.routine_id = ? AND j.state IN {UNFINISHED} LIMIT 1"
                        ))
                        .bind(routine.as_str()),
                    )
                    .await?
                    .is_some();
            let next = if !running {
                tx.opt(
                    sql(format!(
                        "SELECT trigger_id, fire_key, project_id, input FROM routine_fires \
                         WHERE routine_id = ? AND outcome = 'waiting' ORDER BY fired_at, fire_key LIMIT 1{lock}"
                    ))
                    .bind(routine.as_str()),
                )
                .await?
            } else {
                None
            };
            let Some(next) = next else {
                tx.rollback().await?;
                continue;
            };
            let spec: baton_core::JobSpec = serde_json::from_str(&next.text("input"))
                .map_err(|e| StoreError::Corrupt(format!("a waiting fire's job: {e}")))?;
            let job = NewJob {
                id: baton_core::JobId::new(),
                project_id: parse_project(next.text("project_id"))?,
                spec,
                run_at: now,
                idempotency: None,
            };
            let record = insert_job_tx(&mut tx, &job, now).await?;
            tx.exec(
                sql(
                    "UPDATE routine_fires SET outcome = 'queued', job_id = ?, input = NULL \
                     WHERE trigger_id = ? AND fire_key = ? AND outcome = 'waiting'",
                )
                .bind(record.id.to_string())
                .bind(next.text("trigger_id"))
                .bind(next.text("fire_key")),
            )
            .await?;
            tx.commit().await?;
            released += 1;
        }
        Ok(released)
    }

    /// A routine's fires, newest first, with their jobs' states.
    pub async fn routine_fires(
        &self,
        project: &ProjectId,
        routine: &str,
        limit: u32,
    ) -> Result<Vec<(FireRecord, Option<JobState>)>> {
        let rows = self
            .db
            .all(
                sql(
                    "SELECT f.trigger_id, f.fire_key, f.routine_id, f.project_id, f.outcome, f.job_id, \
                     f.error, f.fired_at, j.state FROM routine_fires f LEFT JOIN jobs j ON j.id = f.job_id \
                     WHERE f.project_id = ? AND f.routine_id = ? ORDER BY f.fired_at DESC, f.fire_key LIMIT ?",
                )
                .bind(project.as_str())
                .bind(routine)
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let state = r
                    .opt_text("state")
                    .map(crate::decode::parse_state)
                    .transpose()?;
                Ok((fire_from_row(r)?, state))
            })
            .collect()
    }
}

/// The fire recorded under (trigger, key).
fn fire_by_key(trigger: &str, key: &str) -> crate::db::Stmt {
    sql(format!(
        "SELECT {FIRE_COLUMNS} FROM routine_fires WHERE trigger_id = ? AND fire_key = ?"
    ))
    .bind(trigger)
    .bind(key)
}

async fn find_fire(tx: &mut Tx, trigger: &str, key: &str) -> Result<Option<FireRecord>> {
    let row = tx.opt(fire_by_key(trigger, key)).await?;
    row.as_ref().map(fire_from_row).transpose()
}

/// Inserts a job inside a transaction (no idempotency key: the fire is the key).
async fn insert_job_tx(tx: &mut Tx, job: &NewJob, now: i64) -> Result<JobRecord> {
    let row = tx.one(job_insert(tx.is_postgres(), job, now)?).await?;
    crate::decode::job_from_row(&row)
}
