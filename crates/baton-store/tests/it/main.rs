//! The store's behaviour, as the engine relies on it: one conformance suite, run against
//! SQLite and PostgreSQL alike. Every semantic the engine needs is here; each test runs
//! once per backend (`<test>::sqlite`, `<test>::postgres`), each PostgreSQL run in a fresh
//! schema of its own.

use std::sync::Arc;

use baton_core::{
    ErrorKind, JobId, JobRequest, JobSpec, JobState, Limits, ProjectId, SessionId, Transition,
};
use baton_store::testing::TestDatabase;
use baton_store::{
    AttemptMeta, Finish, IDEMPOTENCY_PENDING_MS, IdempotencyClaim, Inserted, JobFilter, NewEvent,
    NewJob, Notice, OpenJobs, Store, StoreError,
};
use serde_json::json;

/// A store under test, and what it lives in.
struct TestStore {
    store: Store,
    place: Place,
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl TestStore {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        Self {
            store,
            place: Place::Sqlite(dir),
        }
    }

    async fn postgres(test: &str) -> Option<Self> {
        let db = baton_store::testing::postgres_or_skip(test).await?;
        let store = Store::connect_postgres(&db.url, 8).await.unwrap();
        Some(Self {
            store,
            place: Place::Postgres(db),
        })
    }

    /// Another handle on the same database, as another process or node would open it.
    async fn reopen(&self) -> Store {
        match &self.place {
            Place::Sqlite(dir) => Store::open(&dir.path().join("t.db")).await.unwrap(),
            Place::Postgres(db) => Store::connect_postgres(&db.url, 8).await.unwrap(),
        }
    }
}

/// Each test body, once per backend.
macro_rules! conformance {
    ($(async fn $name:ident($t:ident) $body:block)*) => {$(
        mod $name {
            use super::*;

            async fn body($t: &TestStore) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body(&TestStore::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(t) = TestStore::postgres(concat!(stringify!($name), "::postgres")).await {
                    body(&t).await;
                }
            }
        }
    )*};
}

fn other_project() -> ProjectId {
    ProjectId::parse("other").unwrap()
}

fn spec(prompt: &str) -> JobSpec {
    JobRequest::prompt(prompt)
        .parse(&Limits::default())
        .unwrap()
}

async fn insert(store: &Store, spec: JobSpec, run_at: i64) -> JobId {
    let id = JobId::new();
    let job = NewJob {
        id,
        project_id: ProjectId::default(),
        spec,
        run_at,
        idempotency: None,
    };
    match store.insert_job(job, 0).await.unwrap() {
        Inserted::New(r) => r.id,
        other => panic!("{other:?}"),
    }
}

fn finish(t: Transition) -> Finish {
    Finish {
        transition: t,
        run_at: Some(0),
        outcome: None,
        error: (t != Transition::Succeed).then(|| (ErrorKind::Crashed, "boom".to_string())),
        event: NewEvent::new("test.finish", json!({})),
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        // As its own supervisor ends an attempt.
        reaped: true,
    }
}

/// An end written by someone other than the attempt's supervisor: a rescue.
fn rescue(t: Transition) -> Finish {
    Finish {
        reaped: false,
        ..finish(t)
    }
}

mod agents;
mod attempts;
mod events;
mod idempotency;
mod jobs;
mod ledger;
mod notices;
mod routines;
mod schema;
mod sessions;
mod tenancy;
