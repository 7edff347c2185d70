//! Agents: named job configurations of a project, each change a new immutable version.
//! A deletion is a version too (a tombstone), so a run's recorded version stays readable
//! while the agent itself is gone; saving the name again starts after the tombstone.

use baton_core::ProjectId;
use serde_json::Value;

use crate::db::{Row, sql};
use crate::decode::parse_project;
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub project_id: ProjectId,
    pub name: String,
    pub version: u32,
    /// The definition as the API accepted it.
    pub definition: Value,
    /// When this version was saved.
    pub created_at: i64,
}

/// Whether a save makes the agent or changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSave {
    Create,
    Update,
}

const AGENT_COLUMNS: &str = "project_id, name, version, definition, created_at";

fn agent_from_row(r: &Row) -> Result<AgentRecord> {
    Ok(AgentRecord {
        project_id: parse_project(r.text("project_id"))?,
        name: r.text("name"),
        version: u32::try_from(r.int("version"))
            .map_err(|_| StoreError::Corrupt("agent version".into()))?,
        definition: serde_json::from_str(&r.text("definition"))
            .map_err(|e| StoreError::Corrupt(format!("agent definition: {e}")))?,
        created_at: r.int("created_at"),
    })
}

/// The newest version of each live agent, or of one (`name` bound twice, or NULL).
const LIVE: &str = "SELECT project_id, name, version, definition, created_at FROM agents a \
    WHERE project_id = ? AND (? IS NULL OR name = ?) AND deleted = 0 \
    AND version = (SELECT MAX(version) FROM agents b \
                   WHERE b.project_id = a.project_id AND b.name = a.name) \
    ORDER BY name";

impl Store {
    /// Saves a new version: `Create` refuses a live agent of that name (`Conflict`),
    /// `Update` one that does not exist (`NotFound`). Two saves racing: one wins, the
    /// other is a `Conflict`.
    pub async fn save_agent(
        &self,
        project: &ProjectId,
        name: &str,
        definition: &Value,
        save: AgentSave,
        now: i64,
    ) -> Result<AgentRecord> {
        self.new_agent_version(project, name, Some(definition), save, now)
            .await
    }

    /// Deletes an agent (a tombstone version); `NotFound` when there is none.
    pub async fn delete_agent(&self, project: &ProjectId, name: &str, now: i64) -> Result<()> {
        self.new_agent_version(project, name, None, AgentSave::Update, now)
            .await
            .map(drop)
    }

    async fn new_agent_version(
        &self,
        project: &ProjectId,
        name: &str,
        definition: Option<&Value>,
        save: AgentSave,
        now: i64,
    ) -> Result<AgentRecord> {
        let mut tx = self.db.begin().await?;
        let head = tx
            .opt(
                sql("SELECT version, deleted, definition FROM agents WHERE project_id = ? AND name = ? \
                     ORDER BY version DESC LIMIT 1")
                .bind(project.as_str())
                .bind(name),
            )
            .await?;
        let live = head.as_ref().is_some_and(|h| h.int("deleted") == 0);
        let refusal = match (save, live) {
            (AgentSave::Create, true) => Some(StoreError::Conflict(format!(
                "agent {name} already exists; change it with PUT"
            ))),
            (AgentSave::Update, false) => Some(StoreError::NotFound(format!("agent {name}"))),
            _ => None,
        };
        if let Some(e) = refusal {
            tx.rollback().await?;
            return Err(e);
        }
        let version = head.as_ref().map_or(0, |h| h.int("version")) + 1;
        // A tombstone keeps the last definition, so every row holds one.
        let (text, deleted) = match (definition, &head) {
            (Some(d), _) => (d.to_string(), 0_i64),
            (None, Some(h)) => (h.text("definition"), 1),
            (None, None) => {
                tx.rollback().await?;
                return Err(StoreError::NotFound(format!("agent {name}")));
            }
        };
        let row = tx
            .opt(
                sql(format!(
                    "INSERT INTO agents (project_id, name, version, definition, deleted, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING {AGENT_COLUMNS}"
                ))
                .bind(project.as_str())
                .bind(name)
                .bind(version)
                .bind(text)
                .bind(deleted)
                .bind(now),
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "agent {name} was changed at the same moment; retry"
            )));
        };
        tx.commit().await?;
        agent_from_row(&row)
    }

    /// A live agent: its newest version, or the one asked for.
    pub async fn get_agent(
        &self,
        project: &ProjectId,
        name: &str,
        version: Option<u32>,
    ) -> Result<AgentRecord> {
        let not_found = || StoreError::NotFound(format!("agent {name}"));
        let live = self
            .db
            .opt(sql(LIVE).bind(project.as_str()).bind(name).bind(name))
            .await?
            .ok_or_else(not_found)?;
        let newest = agent_from_row(&live)?;
        match version {
            None => Ok(newest),
            Some(v) if v == newest.version => Ok(newest),
            Some(v) => {
                let row = self
                    .db
                    .opt(
                        sql(format!(
                            "SELECT {AGENT_COLUMNS} FROM agents WHERE project_id = ? AND name = ? \
                             AND version = ? AND deleted = 0"
                        ))
                        .bind(project.as_str())
                        .bind(name)
                        .bind(v),
                    )
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("agent {name} version {v}")))?;
                agent_from_row(&row)
            }
        }
    }

    /// The project's live agents, by name, each at its newest version.
    pub async fn list_agents(&self, project: &ProjectId) -> Result<Vec<AgentRecord>> {
        let rows = self
            .db
            .all(
                sql(LIVE)
                    .bind(project.as_str())
                    .bind(None::<&str>)
                    .bind(None::<&str>),
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Every project's live agents (newest versions) that ask for a warm pool.
    pub async fn warm_agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = self
            .db
            .all(sql(format!(
                "SELECT {AGENT_COLUMNS} FROM agents a WHERE deleted = 0 \
                 AND definition LIKE '%\"warm_pool\"%' \
                 AND version = (SELECT MAX(version) FROM agents b \
                                WHERE b.project_id = a.project_id AND b.name = a.name) \
                 ORDER BY project_id, name"
            )))
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Every saved version of a live agent, newest first (tombstones left out).
    pub async fn agent_versions(
        &self,
        project: &ProjectId,
        name: &str,
    ) -> Result<Vec<AgentRecord>> {
        self.get_agent(project, name, None).await?;
        let rows = self
            .db
            .all(
                sql(format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE project_id = ? AND name = ? \
                     AND deleted = 0 ORDER BY version DESC"
                ))
                .bind(project.as_str())
                .bind(name),
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }
}
