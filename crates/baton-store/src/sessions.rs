//! Sessions: the transcript a Claude session left, so any later job, on any node, can
//! resume it.

use baton_core::{JobId, ProjectId};

use crate::db::{Stmt, sql};
use crate::decode::parse_project;
use crate::{Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub project_id: ProjectId,
    pub transcript: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_job_id: Option<String>,
}

/// A transcript to store with the end of an attempt.
#[derive(Debug, Clone)]
pub struct SessionSave {
    pub id: String,
    pub transcript: Vec<u8>,
}

impl Store {
    /// The session of a project's newest job that has one: what "continue the last
    /// conversation" continues.
    pub async fn latest_session(&self, project_id: &ProjectId) -> Result<Option<String>> {
        Ok(self
            .db
            .opt(
                sql(
                    "SELECT session_id FROM jobs WHERE project_id = ? AND session_id IS NOT NULL \
                     ORDER BY id DESC LIMIT 1",
                )
                .bind(project_id.as_str()),
            )
            .await?
            .and_then(|r| r.opt_text("session_id")))
    }

    /// Stores a session's transcript after an attempt, so any later job can resume it.
    pub async fn save_session(
        &self,
        project_id: &ProjectId,
        session_id: &str,
        transcript: &[u8],
        job: JobId,
        now: i64,
    ) -> Result<()> {
        self.db
            .exec(save_session(project_id, session_id, transcript, job, now))
            .await?;
        Ok(())
    }

    pub async fn get_session(
        &self,
        project_id: &ProjectId,
        session_id: &str,
    ) -> Result<SessionRecord> {
        let row = self
            .db
            .write_opt(
                sql(
                    "SELECT id, project_id, transcript, created_at, updated_at, last_job_id \
                     FROM sessions WHERE id = ? AND project_id = ?",
                )
                .bind(session_id)
                .bind(project_id.as_str()),
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("session {session_id}")))?;
        Ok(SessionRecord {
            id: row.text("id"),
            project_id: parse_project(row.text("project_id"))?,
            transcript: row.bytes("transcript"),
            created_at: row.int("created_at"),
            updated_at: row.int("updated_at"),
            last_job_id: row.opt_text("last_job_id"),
        })
    }
}

/// Stores (or replaces) a session's transcript.
pub(crate) fn save_session(
    project_id: &ProjectId,
    session_id: &str,
    transcript: &[u8],
    job: JobId,
    now: i64,
) -> Stmt {
    sql("INSERT INTO sessions (id, project_id, transcript, created_at, updated_at, last_job_id) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET transcript = excluded.transcript, \
         updated_at = excluded.updated_at, last_job_id = excluded.last_job_id")
    .bind(session_id)
    .bind(project_id.as_str())
    .bind(transcript)
    .bind(now)
    .bind(now)
    .bind(job.to_string())
}
