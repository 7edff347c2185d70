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

    /// What a project's calls cost in `[from, to)`.
    pub async fn project_spend(&self, project: &ProjectId, from: i64, to: i64) -> Result<Spend> {
        let row = self
            .db
            .opt(
                sql(format!(
                    "SELECT {SUMS} FROM api_calls WHERE project_id = ? AND at >= ? AND at < ?"
                ))
                .bind(project.as_str())
                .bind(from)
                .bind(to),
            )
            .await?;
        Ok(row.as_ref().map(spend_of).unwrap_or_default())
    }
}
