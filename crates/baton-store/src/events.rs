//! Events: each job's numbered log. Appending differs by backend (one statement list on
//! SQLite's writer, one statement with arrays on PostgreSQL); reading is written once.

use baton_core::{EventKind, JobId};
use serde_json::Value;

use crate::db::{Db, Tx, sql};
use crate::{AttemptMeta, Result, Store, StoreError, postgres, sqlite};

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub seq: i64,
    pub attempt: u32,
    pub at: i64,
    pub kind: String,
    pub data: Value,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub data: Value,
}

impl NewEvent {
    pub fn new(kind: impl Into<String>, data: Value) -> Self {
        Self {
            kind: kind.into(),
            data,
        }
    }

    /// One of Baton's own lifecycle events.
    pub fn lifecycle(kind: EventKind, data: Value) -> Self {
        Self::new(kind.as_str(), data)
    }
}

impl Store {
    /// Appends events for a running attempt, in one transaction (group commit). Refused
    /// with `Fenced` when the attempt no longer owns the job, so a zombie cannot write.
    pub async fn append_events(
        &self,
        job: JobId,
        attempt: u32,
        events: &[NewEvent],
        meta: &AttemptMeta,
        now: i64,
    ) -> Result<i64> {
        match &self.db {
            Db::Sqlite { .. } => {
                sqlite::append_events(&self.db, job, attempt, events, meta, now).await
            }
            Db::Postgres(pool) => {
                postgres::append_events(pool, job, attempt, events, meta, now).await
            }
        }
    }

    pub async fn list_events(
        &self,
        job: JobId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let rows = self
            .db
            .all(
                sql(
                    "SELECT seq, attempt, at, kind, data FROM events WHERE job_id = ? AND seq > ? \
                     ORDER BY seq LIMIT ?",
                )
                .bind(job.to_string())
                .bind(after_seq)
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    seq: r.int("seq"),
                    attempt: r.int("attempt") as u32,
                    at: r.int("at"),
                    kind: r.text("kind"),
                    data: serde_json::from_str(&r.text("data"))
                        .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
                })
            })
            .collect()
    }
}

/// Writes one event with its number, inside a transaction.
pub(crate) async fn insert_event(
    tx: &mut Tx,
    job: &str,
    project: &str,
    seq: i64,
    attempt: u32,
    now: i64,
    event: &NewEvent,
) -> Result<()> {
    tx.exec(
        sql(
            "INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job)
        .bind(seq)
        .bind(project)
        .bind(attempt)
        .bind(now)
        .bind(event.kind.as_str())
        .bind(event.data.to_string()),
    )
    .await?;
    Ok(())
}
