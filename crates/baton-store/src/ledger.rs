//! The cost ledger: every API call Baton's proxy passed, with the project, key, agent,
//! routine, job and attempt that made it, its tokens and its price.

use baton_core::{JobId, ProjectId};

use crate::db::{Row, sql};
use crate::{Result, Store};

/// One call to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    pub at: i64,
    pub project_id: ProjectId,
    pub key_id: Option<String>,
    pub agent: Option<String>,
    pub routine_id: Option<String>,
    pub job_id: JobId,
    pub attempt: u32,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_micro_usd: i64,
    /// Whether the price table knew the model.
    pub priced: bool,
    pub status: u16,
    pub duration_ms: i64,
}

/// What a set of calls adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

fn spend_of(r: &Row) -> Spend {
    Spend {
        calls: r.int("calls"),
        input_tokens: r.opt_int("input_tokens").unwrap_or(0),
        output_tokens: r.opt_int("output_tokens").unwrap_or(0),
        cost_micro_usd: r.opt_int("cost").unwrap_or(0),
    }
}

/// Sums as integers on both backends (PostgreSQL sums BIGINTs as NUMERIC).
const SUMS: &str = "COUNT(*) AS calls, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
    CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
    CAST(SUM(cost_micro_usd) AS BIGINT) AS cost";

impl Store {
    pub async fn record_call(&self, c: &NewCall) -> Result<()> {
        self.db
            .exec(
                sql(
                    "INSERT INTO api_calls (id, at, project_id, key_id, agent, routine_id, job_id, \
                     attempt, model, input_tokens, output_tokens, cache_write_tokens, \
                     cache_read_tokens, cost_micro_usd, priced, status, duration_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(c.at)
                .bind(c.project_id.as_str())
                .bind(c.key_id.clone())
                .bind(c.agent.clone())
                .bind(c.routine_id.clone())
                .bind(c.job_id.to_string())
                .bind(c.attempt)
                .bind(c.model.clone())
                .bind(c.input_tokens)
                .bind(c.output_tokens)
                .bind(c.cache_write_tokens)
                .bind(c.cache_read_tokens)
                .bind(c.cost_micro_usd)
                .bind(c.priced)
                .bind(i64::from(c.status))
                .bind(c.duration_ms),
            )
            .await?;
        Ok(())
    }

    /// What a job's calls cost, over all its attempts.
    pub async fn job_spend(&self, job: JobId) -> Result<Spend> {
        let row = self
            .db
            .opt(
                sql(format!("SELECT {SUMS} FROM api_calls WHERE job_id = ?")).bind(job.to_string()),
            )
            .await?;
        Ok(row.as_ref().map(spend_of).unwrap_or_default())
    }
}

/// Whose calls a sum covers, within one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendScope {
    Project,
    Key(String),
    Agent(String),
    Routine(String),
}

impl SpendScope {
    fn column(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Project => None,
            Self::Key(id) => Some(("key_id", id)),
            Self::Agent(name) => Some(("agent", name)),
            Self::Routine(id) => Some(("routine_id", id)),
        }
    }
}

pub use baton_core::budget::UsageGroup;

/// One group's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    /// The group's value: a day's start in milliseconds (as text), a project, key, agent,
    /// routine id or model; `None` for calls without one (a job of no agent).
    pub group: Option<String>,
    pub calls: i64,
    pub jobs: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_micro_usd: i64,
}

/// An alert to raise once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub project_id: ProjectId,
    /// What makes it once: e.g. `job:<id>` or `budget:project:day:2026-12-06:80`.
    pub key: String,
    pub kind: String,
    pub job_id: Option<JobId>,
    pub detail: serde_json::Value,
    pub at: i64,
    /// Where it is delivered (through the callbacks outbox): the URL, and the body.
    pub webhook: Option<(String, String)>,
}

/// An alert as raised.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub key: String,
    pub kind: String,
    pub job_id: Option<String>,
    pub detail: serde_json::Value,
    pub at: i64,
}

impl Store {
    /// What the calls of `scope` in `project` cost in `[from, to)`.
    pub async fn spend(
        &self,
        project: &ProjectId,
        scope: &SpendScope,
        from: i64,
        to: i64,
    ) -> Result<Spend> {
        let mut q =
            format!("SELECT {SUMS} FROM api_calls WHERE project_id = ? AND at >= ? AND at < ?");
        if let Some((column, _)) = scope.column() {
            q.push_str(&format!(" AND {column} = ?"));
        }
        let mut q = sql(q).bind(project.as_str()).bind(from).bind(to);
        if let Some((_, value)) = scope.column() {
            q = q.bind(value.to_string());
        }
        let row = self.db.opt(q).await?;
        Ok(row.as_ref().map(spend_of).unwrap_or_default())
    }

    /// Usage in `[from, to)`, one project's or every project's, grouped, ordered by group.
    pub async fn usage(
        &self,
        project: Option<&ProjectId>,
        from: i64,
        to: i64,
        group: UsageGroup,
    ) -> Result<Vec<UsageRow>> {
        // A day is the integer part of `at / 86400000` on both backends.
        let g = match group {
            UsageGroup::Day => "CAST((at / 86400000) * 86400000 AS TEXT)",
            UsageGroup::Project => "project_id",
            UsageGroup::Key => "key_id",
            UsageGroup::Agent => "agent",
            UsageGroup::Routine => "routine_id",
            UsageGroup::Model => "model",
        };
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {g} AS g, COUNT(*) AS calls, COUNT(DISTINCT job_id) AS jobs, \
                     CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
                     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
                     CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
                     CAST(SUM(cache_read_tokens) AS BIGINT) AS cache_read_tokens, \
                     CAST(SUM(cost_micro_usd) AS BIGINT) AS cost \
                     FROM api_calls WHERE (? IS NULL OR project_id = ?) AND at >= ? AND at < ? \
                     GROUP BY {g} ORDER BY {g}"
                ))
                .bind(project.map(ProjectId::as_str))
                .bind(project.map(ProjectId::as_str))
                .bind(from)
                .bind(to),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| UsageRow {
                group: r.opt_text("g"),
                calls: r.int("calls"),
                jobs: r.int("jobs"),
                input_tokens: r.opt_int("input_tokens").unwrap_or(0),
                output_tokens: r.opt_int("output_tokens").unwrap_or(0),
                cache_write_tokens: r.opt_int("cache_write_tokens").unwrap_or(0),
                cache_read_tokens: r.opt_int("cache_read_tokens").unwrap_or(0),
                cost_micro_usd: r.opt_int("cost").unwrap_or(0),
            })
            .collect())
    }

    /// Raises an alert unless it was raised already (by any node): its record, and its
    /// delivery in the callbacks outbox, in one transaction. Whether it is new.
    pub async fn raise_alert(&self, a: &NewAlert) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let detail = a.detail.to_string();
        let n = tx
            .exec(
                sql(
                    "INSERT INTO alerts (project_id, alert_key, kind, job_id, detail, at) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, alert_key) DO NOTHING",
                )
                .bind(a.project_id.as_str())
                .bind(a.key.as_str())
                .bind(a.kind.as_str())
                .bind(a.job_id.map(|j| j.to_string()))
                .bind(detail)
                .bind(a.at),
            )
            .await?;
        if n == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let (Some((url, body)), Some(job)) = (&a.webhook, a.job_id) {
            tx.exec(
                sql(
                    "INSERT INTO callbacks (id, job_id, project_id, url, state, attempts, next_at, \
                     created_at, payload) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                )
                .bind(format!("dlv_{}", uuid::Uuid::now_v7().simple()))
                .bind(job.to_string())
                .bind(a.project_id.as_str())
                .bind(url.as_str())
                .bind(a.at)
                .bind(a.at)
                .bind(body.as_str()),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A project's alerts, newest first.
    pub async fn list_alerts(&self, project: &ProjectId, limit: u32) -> Result<Vec<AlertRecord>> {
        let rows = self
            .db
            .all(
                sql(
                    "SELECT alert_key, kind, job_id, detail, at FROM alerts WHERE project_id = ? \
                     ORDER BY at DESC, alert_key LIMIT ?",
                )
                .bind(project.as_str())
                .bind(limit),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AlertRecord {
                key: r.text("alert_key"),
                kind: r.text("kind"),
                job_id: r.opt_text("job_id"),
                detail: serde_json::from_str(&r.text("detail")).unwrap_or_default(),
                at: r.int("at"),
            })
            .collect())
    }
}
