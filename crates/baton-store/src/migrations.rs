//! The schema, as numbered `.sql` files per dialect (`migrations/sqlite/`,
//! `migrations/postgres/`). Each runs once, in one transaction with its record in
//! `schema_migrations`; a database newer than this binary is refused. The two dialects'
//! schemas are held equal by a test that reads both back (`tests/it/schema.rs`).

use crate::db::{Db, sql};
use crate::{Result, StoreError};

pub(crate) const SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_attempt_warm.sql"),
    include_str!("../migrations/sqlite/0003_jobs_finished.sql"),
    include_str!("../migrations/sqlite/0004_idempotency_keys.sql"),
    include_str!("../migrations/sqlite/0005_rows_with_their_change.sql"),
    include_str!("../migrations/sqlite/0006_attempt_reaped.sql"),
    include_str!("../migrations/sqlite/0007_one_running_per_session.sql"),
    include_str!("../migrations/sqlite/0008_tenancy.sql"),
    include_str!("../migrations/sqlite/0009_fair_dispatch.sql"),
    include_str!("../migrations/sqlite/0010_key_rate_limit.sql"),
    include_str!("../migrations/sqlite/0011_sessions_per_project.sql"),
    include_str!("../migrations/sqlite/0012_agents.sql"),
    include_str!("../migrations/sqlite/0013_routines.sql"),
    include_str!("../migrations/sqlite/0014_api_calls.sql"),
    include_str!("../migrations/sqlite/0015_budgets.sql"),
    include_str!("../migrations/sqlite/0016_conversations.sql"),
];

pub(crate) const POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_attempt_reaped.sql"),
    include_str!("../migrations/postgres/0003_tenancy.sql"),
    include_str!("../migrations/postgres/0004_fair_dispatch.sql"),
    include_str!("../migrations/postgres/0005_key_rate_limit.sql"),
    include_str!("../migrations/postgres/0006_sessions_per_project.sql"),
    include_str!("../migrations/postgres/0007_agents.sql"),
    include_str!("../migrations/postgres/0008_routines.sql"),
    include_str!("../migrations/postgres/0009_api_calls.sql"),
    include_str!("../migrations/postgres/0010_budgets.sql"),
    include_str!("../migrations/postgres/0011_conversations.sql"),
];

/// Serializes schema migrations across PostgreSQL nodes that start at once.
const MIGRATION_LOCK: i64 = 0x6261_746f_6e00_0001;

/// Brings the schema up to date.
pub(crate) async fn run(db: &Db) -> Result<()> {
    let (steps, lock) = match db {
        Db::Sqlite { .. } => (SQLITE, None),
        Db::Postgres(_) => (POSTGRES, Some(MIGRATION_LOCK)),
    };
    let mut tx = db.begin().await?;
    if let Some(lock) = lock {
        tx.exec(sql("SELECT pg_advisory_xact_lock(?)").bind(lock))
            .await?;
    }
    tx.exec(sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    ))
    .await?;
    let current = tx
        .one(sql(
            "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations",
        ))
        .await?
        .int("v");
    let known = steps.len() as i64;
    if current > known {
        return Err(StoreError::Conflict(format!(
            "the database schema is version {current}, newer than this Baton ({known}); upgrade Baton"
        )));
    }
    for (i, script) in steps.iter().enumerate().skip(current as usize) {
        tx.script(script).await?;
        tx.exec(
            sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)")
                .bind(i as i64 + 1),
        )
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    /// Every file in a dialect's folder is a step, numbered from 1 without a gap.
    #[test]
    fn every_migration_file_is_a_step() {
        for (dialect, steps) in [("sqlite", super::SQLITE), ("postgres", super::POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect);
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names.len(), steps.len(), "{dialect}: {names:?}");
            for (i, name) in names.iter().enumerate() {
                assert!(
                    name.starts_with(&format!("{:04}_", i + 1)) && name.ends_with(".sql"),
                    "{dialect}: {name} is not step {}",
                    i + 1
                );
                let text = std::fs::read_to_string(dir.join(name)).unwrap();
                assert_eq!(text, steps[i], "{dialect}: {name} is not the step listed");
            }
        }
    }
}
