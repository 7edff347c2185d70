//! Projects: the tenant boundary. Every job, event, session, idempotency key, API key and
//! audit record belongs to one; `default` always exists.

use baton_core::ProjectId;
use serde_json::Value;

use crate::db::{Row, sql};
use crate::decode::parse_project;
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRecord {
    pub id: ProjectId,
    pub name: String,
    /// Quotas and job defaults, as the API accepts them.
    pub settings: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

const PROJECT_COLUMNS: &str = "id, name, settings, created_at, updated_at";

fn project_from_row(r: &Row) -> Result<ProjectRecord> {
    Ok(ProjectRecord {
        id: parse_project(r.text("id"))?,
        name: r.text("name"),
        settings: serde_json::from_str(&r.text("settings"))
            .map_err(|e| StoreError::Corrupt(format!("project settings: {e}")))?,
        created_at: r.int("created_at"),
        updated_at: r.int("updated_at"),
    })
}

impl Store {
    /// Creates a project; `Conflict` when the id is taken.
    pub async fn create_project(
        &self,
        id: &ProjectId,
        name: &str,
        settings: &Value,
        now: i64,
    ) -> Result<ProjectRecord> {
        let row = self
            .db
            .write_opt(
                sql(format!(
                    "INSERT INTO projects (id, name, settings, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING {PROJECT_COLUMNS}"
                ))
                .bind(id.as_str())
                .bind(name)
                .bind(settings.to_string())
                .bind(now)
                .bind(now),
            )
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("project {id} already exists")))?;
        project_from_row(&row)
    }

    pub async fn get_project(&self, id: &ProjectId) -> Result<ProjectRecord> {
        let row = self
            .db
            .opt(
                sql(format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?"
                ))
                .bind(id.as_str()),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("project {id}")))?;
        project_from_row(&row)
    }

    /// Every project, by id.
    pub async fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let rows = self
            .db
            .all(sql(format!(
                "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id"
            )))
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    /// Changes a project's name and settings (each when given).
    pub async fn update_project(
        &self,
        id: &ProjectId,
        name: Option<&str>,
        settings: Option<&Value>,
        now: i64,
    ) -> Result<ProjectRecord> {
        let row = self
            .db
            .write_opt(
                sql(format!(
                    "UPDATE projects SET name = COALESCE(?, name), settings = COALESCE(?, settings), \
                     updated_at = ? WHERE id = ? RETURNING {PROJECT_COLUMNS}"
                ))
                .bind(name)
                .bind(settings.map(Value::to_string))
                .bind(now)
                .bind(id.as_str()),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("project {id}")))?;
        project_from_row(&row)
    }

    /// Deletes a project. One that still has jobs is refused (`Conflict`) unless `purge`,
    /// which deletes its jobs (with their attempts and events), sessions, idempotency keys,
    /// API keys and audit records with it, in one transaction. `default` cannot be deleted.
    pub async fn delete_project(&self, id: &ProjectId, purge: bool) -> Result<()> {
        if *id == ProjectId::default() {
            return Err(StoreError::Conflict(
                "the default project cannot be deleted".into(),
            ));
        }
        let mut tx = self.db.begin().await?;
        let lock = tx.for_update();
        tx.opt(sql(format!("SELECT id FROM projects WHERE id = ?{lock}")).bind(id.as_str()))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("project {id}")))?;
        let has_jobs = tx
            .opt(sql("SELECT id FROM jobs WHERE project_id = ? LIMIT 1").bind(id.as_str()))
            .await?
            .is_some();
        if has_jobs && !purge {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "project {id} still has jobs; delete it with purge to delete them too"
            )));
        }
        for table in [
            "jobs",
            "sessions",
            "idempotency_keys",
            "api_keys",
            "audit_log",
            "agents",
            "routine_fires",
            "triggers",
            "routines",
            "callbacks",
            "alerts",
            "api_calls",
        ] {
            tx.exec(sql(format!("DELETE FROM {table} WHERE project_id = ?")).bind(id.as_str()))
                .await?;
        }
        tx.exec(sql("DELETE FROM projects WHERE id = ?").bind(id.as_str()))
            .await?;
        tx.commit().await
    }
}
