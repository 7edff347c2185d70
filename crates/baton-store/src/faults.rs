//! Test support, in builds with the `testing` feature only: storage faults, and crashes
//! in the middle of a write.

use std::path::Path;
use std::str::FromStr;

use baton_core::JobId;
use sqlx::Connection;

use crate::db::{Db, sql};
use crate::events::insert_event;
use crate::jobs::move_job;
use crate::{Finish, NewEvent, Result, Store, StoreError};

/// Another connection holding SQLite's write lock, as another process would; dropped, it
/// lets go.
pub struct WriteLock(#[allow(dead_code)] sqlx::SqliteConnection);

fn sqlite_only() -> StoreError {
    StoreError::Conflict("this storage fault can only be injected on SQLite".into())
}

impl Store {
    /// Makes the writer refuse every write, as a database on a read-only file system does
    /// (`SQLITE_READONLY`).
    pub async fn fault_read_only(&self, on: bool) -> Result<()> {
        let Db::Sqlite { .. } = self.db else {
            return Err(sqlite_only());
        };
        let pragma = if on {
            "PRAGMA query_only = 1"
        } else {
            "PRAGMA query_only = 0"
        };
        self.db.exec(sql(pragma)).await?;
        Ok(())
    }

    /// Caps the database at its current size, so any write that needs a new page fails as
    /// on a full disk (`SQLITE_FULL`).
    pub async fn fault_disk_full(&self, on: bool) -> Result<()> {
        let Db::Sqlite { write, .. } = &self.db else {
            return Err(sqlite_only());
        };
        let mut conn = write.acquire().await?;
        let pages: i64 = if on {
            sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(&mut *conn)
                .await?
        } else {
            1_073_741_823
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Another connection holding the write lock of the SQLite file at `path`.
    pub async fn fault_hold_write_lock(path: &Path) -> Result<WriteLock> {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")?.filename(path);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await?;
        Ok(WriteLock(conn))
    }

    /// Overwrites a job's stored options; returns what was there.
    pub async fn fault_set_spec(&self, job: JobId, spec: &str) -> Result<String> {
        let mut tx = self.db.begin().await?;
        let lock = tx.for_update();
        let old = tx
            .one(sql(format!("SELECT spec FROM jobs WHERE id = ?{lock}")).bind(job.to_string()))
            .await?
            .text("spec");
        tx.exec(
            sql("UPDATE jobs SET spec = ? WHERE id = ?")
                .bind(spec)
                .bind(job.to_string()),
        )
        .await?;
        tx.commit().await?;
        Ok(old)
    }

    /// Runs an event append's statements, then drops the transaction without committing:
    /// what a crash in the middle of an append leaves behind.
    pub async fn crash_during_append(
        &self,
        job: JobId,
        attempt: u32,
        events: &[NewEvent],
        now: i64,
    ) -> Result<()> {
        let id = job.to_string();
        let mut tx = self.db.begin().await?;
        let last = tx
            .opt(
                sql(
                    "UPDATE jobs SET last_seq = last_seq + ? WHERE id = ? AND state = 'running' \
                     AND attempt = ? RETURNING last_seq, project_id",
                )
                .bind(events.len() as i64)
                .bind(&*id)
                .bind(attempt),
            )
            .await?;
        if let Some(row) = last {
            let (project, first) = (
                row.text("project_id"),
                row.int("last_seq") - events.len() as i64 + 1,
            );
            for (i, e) in events.iter().enumerate() {
                insert_event(&mut tx, &id, &project, first + i as i64, attempt, now, e).await?;
            }
        }
        drop(tx);
        Ok(())
    }

    /// Moves the job as a finish would, then drops the transaction before the attempt and
    /// the event are written: a crash between two writes of one transition.
    pub async fn crash_between_finish_writes(
        &self,
        job: JobId,
        attempt: u32,
        finish: &Finish,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let _ = move_job(&mut tx, job, attempt, finish, now).await?;
        drop(tx);
        Ok(())
    }
}
