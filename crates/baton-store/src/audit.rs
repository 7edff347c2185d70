//! The audit log: every authenticated change, durably, with who (the key's id, never its
//! secret), where, what and how it ended.

use baton_core::ProjectId;

use crate::db::{Row, sql};
use crate::decode::parse_project;
use crate::{Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Sortable by time (a UUIDv7): the cursor of a listing.
    pub id: String,
    pub at: i64,
    pub project_id: ProjectId,
    pub key_id: Option<String>,
    /// What was done, e.g. `job.create`, `key.revoke`.
    pub action: String,
    pub route: String,
    /// The object changed, e.g. a job id.
    pub target: Option<String>,
    /// How it ended: an HTTP status, or an error type.
    pub outcome: String,
    pub request_id: String,
}

/// Which audit records to list: newest first, before a cursor.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub project_id: Option<ProjectId>,
    pub key_id: Option<String>,
    pub action: Option<String>,
    pub before: Option<String>,
    pub limit: u32,
}

const AUDIT_COLUMNS: &str =
    "id, at, project_id, key_id, action, route, target, outcome, request_id";

fn audit_from_row(r: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.text("id"),
        at: r.int("at"),
        project_id: parse_project(r.text("project_id"))?,
        key_id: r.opt_text("key_id"),
        action: r.text("action"),
        route: r.text("route"),
        target: r.opt_text("target"),
        outcome: r.text("outcome"),
        request_id: r.text("request_id"),
    })
}

impl Store {
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        self.db
            .exec(
                sql(format!(
                    "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .bind(record.id.as_str())
                .bind(record.at)
                .bind(record.project_id.as_str())
                .bind(record.key_id.as_deref())
                .bind(record.action.as_str())
                .bind(record.route.as_str())
                .bind(record.target.as_deref())
                .bind(record.outcome.as_str())
                .bind(record.request_id.as_str()),
            )
            .await?;
        Ok(())
    }

    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut text = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut values: Vec<&str> = Vec::new();
        for (value, condition) in [
            (
                filter.project_id.as_ref().map(ProjectId::as_str),
                " AND project_id = ?",
            ),
            (filter.key_id.as_deref(), " AND key_id = ?"),
            (filter.action.as_deref(), " AND action = ?"),
            (filter.before.as_deref(), " AND id < ?"),
        ] {
            if let Some(v) = value {
                text.push_str(condition);
                values.push(v);
            }
        }
        text.push_str(" ORDER BY id DESC LIMIT ?");
        let q = values.into_iter().fold(sql(text), |q, v| q.bind(v));
        let rows = self.db.all(q.bind(filter.limit)).await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// Forgets audit records older than `before`.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        self.db
            .exec(sql("DELETE FROM audit_log WHERE at < ?").bind(before))
            .await
    }
}
