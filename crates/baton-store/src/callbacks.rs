//! The callbacks outbox: a row per job that names a `callback_url`, written with the job.
//! Once the job has ended, a delivery loop claims the row (pushing its next try out by a
//! lease, so a node that dies mid-delivery only delays it), POSTs, and records the outcome.

use baton_core::ProjectId;

use crate::db::{Row, sql};
use crate::decode::{parse_id, parse_project};
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRecord {
    /// The delivery id, the same on every try.
    pub id: String,
    pub job_id: baton_core::JobId,
    pub project_id: ProjectId,
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    /// An alert's body, sent as it is; `None` for a job's own callback (its summary is
    /// made at each try).
    pub payload: Option<String>,
}

/// How one try went.
#[derive(Debug, Clone)]
pub enum Delivery {
    Delivered {
        status: u16,
    },
    /// Try again at `retry_at`, or give up (`None`).
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<i64>,
    },
}

const COLUMNS: &str = "id, job_id, project_id, url, state, attempts, next_at, last_status, \
    last_error, created_at, delivered_at, payload";

fn callback_from_row(r: &Row) -> Result<CallbackRecord> {
    Ok(CallbackRecord {
        id: r.text("id"),
        job_id: parse_id(&r.text("job_id"))?,
        project_id: parse_project(r.text("project_id"))?,
        url: r.text("url"),
        state: r.text("state"),
        attempts: u32::try_from(r.int("attempts"))
            .map_err(|_| StoreError::Corrupt("callback attempts".into()))?,
        next_at: r.int("next_at"),
        last_status: r.opt_int("last_status"),
        last_error: r.opt_text("last_error"),
        created_at: r.int("created_at"),
        delivered_at: r.opt_int("delivered_at"),
        payload: r.opt_text("payload"),
    })
}

impl Store {
    /// Claims up to `limit` callbacks of ended jobs that are due: each one's next try is
    /// pushed to `now + lease_ms` and its attempts counted, so no other node takes it
    /// meanwhile.
    pub async fn claim_callbacks(
        &self,
        now: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<CallbackRecord>> {
        let mut tx = self.db.begin().await?;
        let skip = if tx.is_postgres() {
            " FOR UPDATE OF c SKIP LOCKED"
        } else {
            ""
        };
        let due = tx
            .all(
                sql(format!(
                    "SELECT c.id FROM callbacks c JOIN jobs j ON j.id = c.job_id \
                     WHERE c.state = 'pending' AND c.next_at <= ? \
                     AND (c.payload IS NOT NULL OR j.state IN ('completed', 'failed', 'cancelled', 'dead')) \
                     ORDER BY c.next_at LIMIT ?{skip}"
                ))
                .bind(now)
                .bind(limit),
            )
            .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for r in due {
            let row = tx
                .one(
                    sql(format!(
                        "UPDATE callbacks SET next_at = ?, attempts = attempts + 1 WHERE id = ? \
                         RETURNING {COLUMNS}"
                    ))
                    .bind(now + lease_ms)
                    .bind(r.text("id")),
                )
                .await?;
            claimed.push(callback_from_row(&row)?);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records how a claimed try went; `attempts` is the claim's count. A claim that has
    /// lapsed meanwhile (another node claimed the delivery again) records nothing: the
    /// newer try's outcome stands.
    pub async fn record_delivery(
        &self,
        id: &str,
        attempts: u32,
        outcome: &Delivery,
        now: i64,
    ) -> Result<()> {
        let q = match outcome {
            Delivery::Delivered { status } => sql(
                "UPDATE callbacks SET state = 'delivered', last_status = ?, last_error = NULL, \
                 delivered_at = ? WHERE id = ? AND state = 'pending' AND attempts = ?",
            )
            .bind(i64::from(*status))
            .bind(now)
            .bind(id)
            .bind(attempts),
            Delivery::Failed {
                status,
                error,
                retry_at,
            } => sql(
                "UPDATE callbacks SET state = ?, last_status = ?, last_error = ?, \
                 next_at = COALESCE(?, next_at) WHERE id = ? AND state = 'pending' AND attempts = ?",
            )
            .bind(if retry_at.is_some() {
                "pending"
            } else {
                "failed"
            })
            .bind(status.map(i64::from))
            .bind(error.chars().take(1000).collect::<String>())
            .bind(*retry_at)
            .bind(id)
            .bind(attempts),
        };
        self.db.exec(q).await?;
        Ok(())
    }

    /// A job's callback deliveries (at most one).
    pub async fn job_callbacks(&self, job: baton_core::JobId) -> Result<Vec<CallbackRecord>> {
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {COLUMNS} FROM callbacks WHERE job_id = ? AND payload IS NULL"
                ))
                .bind(job.to_string()),
            )
            .await?;
        rows.iter().map(callback_from_row).collect()
    }

    /// The secret a project's callbacks are signed with: `fresh` when it has none yet
    /// (two nodes racing keep the first).
    pub async fn callback_secret(&self, project: &ProjectId, fresh: &str) -> Result<String> {
        self.db
            .exec(
                sql("UPDATE projects SET callback_secret = ? WHERE id = ? AND callback_secret IS NULL")
                    .bind(fresh)
                    .bind(project.as_str()),
            )
            .await?;
        self.db
            .write_opt(
                sql("SELECT callback_secret FROM projects WHERE id = ?").bind(project.as_str()),
            )
            .await?
            .and_then(|r| r.opt_text("callback_secret"))
            .ok_or_else(|| StoreError::NotFound(format!("project {project}")))
    }

    /// Replaces a project's callback secret.
    pub async fn rotate_callback_secret(&self, project: &ProjectId, secret: &str) -> Result<()> {
        let n = self
            .db
            .exec(
                sql("UPDATE projects SET callback_secret = ? WHERE id = ?")
                    .bind(secret)
                    .bind(project.as_str()),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("project {project}")));
        }
        Ok(())
    }
}
