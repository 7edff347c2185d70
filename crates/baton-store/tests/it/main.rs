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

conformance! {
async fn claims_by_priority_then_age_and_only_when_due(t) {
    let s = &t.store;
    let low = insert(s, spec("low"), 0).await;
    let mut high_spec = spec("high");
    high_spec.priority = 10;
    let high = insert(s, high_spec, 0).await;
    let later = insert(s, spec("later"), 5_000).await;
    let claimed = s.claim("n1", 1_000, 30_000, 10).await.unwrap();
    let ids: Vec<JobId> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(
        ids,
        vec![high, low],
        "priority first, then age; the future job waits"
    );
    assert!(
        claimed
            .iter()
            .all(|c| c.job.state == JobState::Running && c.job.attempt == 1)
    );
    assert!(s.claim("n1", 1_000, 30_000, 10).await.unwrap().is_empty());
    let claimed = s.claim("n1", 5_000, 30_000, 10).await.unwrap();
    assert_eq!(claimed[0].job.id, later);
    assert_eq!(s.next_run_at().await.unwrap(), None);
}

async fn one_running_attempt_per_session(t) {
    let s = &t.store;
    let session = SessionId::new();
    let mut a = spec("a");
    a.session = baton_core::SessionMode::Resume { id: session };
    let first = insert(s, a.clone(), 0).await;
    let second = insert(s, a, 0).await;
    let claimed = s.claim("n1", 0, 30_000, 10).await.unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "two resumes of one session were claimed together"
    );
    assert_eq!(claimed[0].job.id, first);
    assert!(s.claim("n1", 0, 30_000, 10).await.unwrap().is_empty());
    s.finish_attempt(first, 1, &finish(Transition::Succeed), 1)
        .await
        .unwrap();
    let claimed = s.claim("n1", 2, 30_000, 10).await.unwrap();
    assert_eq!(claimed[0].job.id, second);
}

async fn a_stale_attempt_is_fenced_everywhere(t) {
    let s = &t.store;
    let id = insert(s, spec("x"), 0).await;
    s.claim("old", 0, 10, 1).await.unwrap();
    // The old attempt's owner vanished; the job is rescued and claimed again.
    let rec = s
        .finish_attempt(id, 1, &finish(Transition::Retry), 100)
        .await
        .unwrap();
    assert_eq!(rec.state, JobState::Queued);
    let claimed = s.claim("new", 100, 30_000, 1).await.unwrap();
    assert_eq!(claimed[0].job.attempt, 2);

    let stale = s
        .finish_attempt(id, 1, &finish(Transition::Succeed), 200)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Fenced { attempt: 1, .. })),
        "{stale:?}"
    );
    let events = [NewEvent::new("assistant", json!({"type": "assistant"}))];
    assert!(matches!(
        s.append_events(id, 1, &events, &AttemptMeta::default(), 200)
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        s.renew_lease(id, 1, "old", 999).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(
        matches!(
            s.renew_lease(id, 2, "old", 999).await,
            Err(StoreError::Fenced { .. })
        ),
        "wrong owner"
    );
    assert!(!s.renew_lease(id, 2, "new", 999).await.unwrap());

    let attempts = s.list_attempts(id).await.unwrap();
    assert!(attempts[0].fenced, "the refused completion is recorded");
    let job = s.get_job(id).await.unwrap();
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Running, 2),
        "the stale write changed nothing"
    );
}

async fn events_are_numbered_without_gaps_across_lifecycle_and_output(t) {
    let s = &t.store;
    let id = insert(s, spec("x"), 0).await;
    s.claim("n", 0, 30_000, 1).await.unwrap();
    let batch: Vec<NewEvent> = (0..3)
        .map(|i| NewEvent::new("assistant", json!({"i": i})))
        .collect();
    assert_eq!(
        s.append_events(id, 1, &batch, &AttemptMeta::default(), 1)
            .await
            .unwrap(),
        5
    );
    s.finish_attempt(id, 1, &finish(Transition::Succeed), 2)
        .await
        .unwrap();
    let events = s.list_events(id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "job.queued",
            "attempt.started",
            "assistant",
            "assistant",
            "assistant",
            "test.finish"
        ]
    );
    assert_eq!(s.list_events(id, 4, 100).await.unwrap().len(), 2);
    assert_eq!(s.get_job(id).await.unwrap().last_seq, 6);
}

async fn idempotency_keys_replay_or_conflict(t) {
    let s = &t.store;
    let job = |hash: &str| NewJob {
        id: JobId::new(),
        project_id: ProjectId::default(),
        spec: spec("x"),
        run_at: 0,
        idempotency: Some(("key".into(), hash.into())),
    };
    let Inserted::New(first) = s.insert_job(job("h1"), 0).await.unwrap() else {
        panic!()
    };
    let Inserted::Replayed(again) = s.insert_job(job("h1"), 0).await.unwrap() else {
        panic!()
    };
    assert_eq!(first.id, again.id);
    assert!(matches!(
        s.insert_job(job("h2"), 0).await.unwrap(),
        Inserted::KeyReused
    ));
}

async fn cancel_depends_on_state(t) {
    let s = &t.store;
    let queued = insert(s, spec("q"), 0).await;
    let rec = s.cancel(queued, 1).await.unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    assert!(matches!(
        s.cancel(queued, 2).await,
        Err(StoreError::Conflict(_))
    ));
    let running = insert(s, spec("r"), 0).await;
    s.claim("n", 0, 30_000, 1).await.unwrap();
    let rec = s.cancel(running, 1).await.unwrap();
    assert_eq!(rec.state, JobState::Running);
    assert!(rec.cancel_requested);
    assert!(
        s.renew_lease(running, 1, "n", 999).await.unwrap(),
        "the supervisor learns of the cancel"
    );
    assert!(matches!(
        s.cancel(JobId::new(), 1).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn expired_leases_and_orphans_are_found(t) {
    let s = &t.store;
    s.register_incarnation("inc-old", "node-a", 1, 0)
        .await
        .unwrap();
    s.register_incarnation("inc-new", "node-a", 2, 0)
        .await
        .unwrap();
    let a = insert(s, spec("a"), 0).await;
    s.claim("inc-old", 0, 1_000, 1).await.unwrap();
    s.append_events(
        a,
        1,
        &[],
        &AttemptMeta {
            pid: Some((4242, 77)),
            ..AttemptMeta::default()
        },
        0,
    )
    .await
    .unwrap();
    let orphans = s.orphans_of_node("node-a", "inc-new").await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(
        (orphans[0].job_id, orphans[0].pid, orphans[0].pid_start),
        (a, Some(4242), Some(77))
    );
    assert!(
        s.orphans_of_node("node-a", "inc-old")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.expired_leases(500).await.unwrap().is_empty());
    assert_eq!(s.expired_leases(1_001).await.unwrap().len(), 1);
    // While it runs, its processes may outlive the node.
    assert_eq!(
        s.abandoned_processes("node-a", "inc-new").await.unwrap(),
        vec![(4242, 77)]
    );
    // Rescued by another node: no longer an orphan, but its processes may live on.
    s.finish_attempt(a, 1, &rescue(Transition::Fail), 2_000)
        .await
        .unwrap();
    assert!(s.orphans_of_node("node-a", "inc-new").await.unwrap().is_empty());
    assert_eq!(
        s.abandoned_processes("node-a", "inc-new").await.unwrap(),
        vec![(4242, 77)]
    );
    // Attempts the old incarnation's supervisors ended themselves were reaped: not
    // named, however many there are. Nor is a fenced attempt whose supervisor reaped it.
    for n in 0..20 {
        let id = insert(s, spec(&format!("done {n}")), 0).await;
        s.claim("inc-old", 0, 1_000, 1).await.unwrap();
        let meta = AttemptMeta {
            pid: Some((5_000 + n, 88)),
            ..AttemptMeta::default()
        };
        s.append_events(id, 1, &[], &meta, 0).await.unwrap();
        s.finish_attempt(id, 1, &finish(Transition::Succeed), 1)
            .await
            .unwrap();
    }
    let z = insert(s, spec("zombie"), 0).await;
    s.claim("inc-old", 0, 1_000, 1).await.unwrap();
    let meta = AttemptMeta {
        pid: Some((6_000, 99)),
        ..AttemptMeta::default()
    };
    s.append_events(z, 1, &[], &meta, 0).await.unwrap();
    s.finish_attempt(z, 1, &rescue(Transition::Fail), 1_500)
        .await
        .unwrap();
    assert_eq!(
        s.abandoned_processes("node-a", "inc-new").await.unwrap().len(),
        2,
        "the rescued zombie may have survivors until its supervisor says otherwise"
    );
    let refused = s.finish_attempt(z, 1, &finish(Transition::Succeed), 1_600).await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    assert_eq!(
        s.abandoned_processes("node-a", "inc-new").await.unwrap(),
        vec![(4242, 77)]
    );
    assert_eq!(s.close_incarnations("node-a", "inc-new", 2_001).await.unwrap(), 1);
    assert!(s.abandoned_processes("node-a", "inc-new").await.unwrap().is_empty());
}

async fn sessions_round_trip_and_reopening_keeps_everything(t) {
    let id = {
        let s = &t.store;
        let id = insert(s, spec("persist"), 0).await;
        s.save_session(&ProjectId::default(), "sess-1", b"line 1\n", id, 5)
            .await
            .unwrap();
        s.save_session(&ProjectId::default(), "sess-1", b"line 1\nline 2\n", id, 6)
            .await
            .unwrap();
        id
    };
    let s = t.reopen().await;
    assert_eq!(s.get_job(id).await.unwrap().spec.prompt, "persist");
    let session = s.get_session(&ProjectId::default(), "sess-1").await.unwrap();
    assert_eq!(session.transcript, b"line 1\nline 2\n");
    assert_eq!((session.created_at, session.updated_at), (5, 6));
    assert_eq!(session.last_job_id, Some(id.to_string()));
    assert!(matches!(
        s.get_session(&other_project(), "sess-1").await,
        Err(StoreError::NotFound(_))
    ));
    let filter = JobFilter {
        project_id: ProjectId::default(),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(s.list_jobs(&filter).await.unwrap().len(), 1);
}

async fn nodes_claiming_at_once_never_take_the_same_job(t) {
    let s = &t.store;
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(insert(s, spec(&format!("j{i}")), 0).await);
    }
    // Four handles, as four nodes: each claims in small batches until the queue is dry.
    let mut nodes = Vec::new();
    for n in 0..4 {
        let store = Arc::new(t.reopen().await);
        nodes.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&format!("node-{n}"), 10, 30_000, 7).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|c| c.job.id));
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for n in nodes {
        claimed.extend(n.await.unwrap());
    }
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids, "every job claimed exactly once");
    let attempts = s.list_attempts(ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
}

async fn concurrent_submits_with_one_key_make_one_job(t) {
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = t.reopen().await;
        handles.push(tokio::spawn(async move {
            let job = NewJob {
                id: JobId::new(),
                project_id: ProjectId::default(),
                spec: spec("same"),
                run_at: 0,
                idempotency: Some(("k".into(), "h".into())),
            };
            store.insert_job(job, 0).await.unwrap()
        }));
    }
    let mut new = 0;
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        match h.await.unwrap() {
            Inserted::New(r) => {
                new += 1;
                ids.insert(r.id);
            }
            Inserted::Replayed(r) => {
                ids.insert(r.id);
            }
            Inserted::KeyReused => panic!("same body, same key"),
        }
    }
    assert_eq!((new, ids.len()), (1, 1));
    let filter = JobFilter {
        project_id: ProjectId::default(),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(t.store.list_jobs(&filter).await.unwrap().len(), 1);
}

async fn a_finish_writes_the_attempts_last_events_before_its_own(t) {
    let s = &t.store;
    let (a, b, c) = (
        insert(s, spec("a"), 0).await,
        insert(s, spec("b"), 0).await,
        insert(s, spec("c"), 0).await,
    );
    s.claim("n", 0, 30_000, 3).await.unwrap();
    let tail = |n: usize| -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent::new("assistant", json!({"i": i})))
            .collect()
    };
    let with_tail = |n: usize, t: Transition| Finish {
        trailing: tail(n),
        ..finish(t)
    };
    // One finish on its own, then a batch of two (each backend has both paths).
    let one = with_tail(2, Transition::Succeed);
    assert_eq!(s.finish_attempt(a, 1, &one, 5).await.unwrap().last_seq, 5);
    let (three, none) = (with_tail(3, Transition::Retry), with_tail(0, Transition::Succeed));
    let out = s
        .finish_attempts(&[(b, 1, &three), (c, 1, &none)], 6)
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().last_seq, 6);
    assert_eq!(out[1].as_ref().unwrap().last_seq, 3);
    for (job, want) in [
        (a, vec!["job.queued", "attempt.started", "assistant", "assistant", "test.finish"]),
        (
            b,
            vec!["job.queued", "attempt.started", "assistant", "assistant", "assistant", "test.finish"],
        ),
        (c, vec!["job.queued", "attempt.started", "test.finish"]),
    ] {
        let events = s.list_events(job, 0, 100).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=want.len() as i64).collect::<Vec<_>>(), "{job}");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, want, "{job}");
        assert!(events.iter().skip(2).all(|e| e.attempt == 1));
    }
    let trailing: Vec<i64> = s.list_events(b, 2, 3).await.unwrap().iter().map(|e| e.data["i"].as_i64().unwrap()).collect();
    assert_eq!(trailing, [0, 1, 2], "in the order the attempt printed them");

    // A fenced finish writes none of its events.
    let stale = s.finish_attempt(a, 1, &with_tail(2, Transition::Succeed), 7).await;
    assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    assert_eq!(s.list_events(a, 0, 100).await.unwrap().len(), 5);
    assert_eq!(s.get_job(a).await.unwrap().last_seq, 5);
}

async fn a_batch_of_finishes_moves_owners_and_fences_the_rest(t) {
    let s = &t.store;
    let a = insert(s, spec("a"), 0).await;
    let b = insert(s, spec("b"), 0).await;
    s.claim("n", 0, 30_000, 2).await.unwrap();
    let ok = finish(Transition::Succeed);
    let retry = finish(Transition::Retry);
    let out = s
        .finish_attempts(&[(a, 1, &ok), (b, 2, &ok), (b, 1, &retry)], 5)
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().state, JobState::Completed);
    assert!(matches!(out[1], Err(StoreError::Fenced { attempt: 2, .. })));
    assert_eq!(out[2].as_ref().unwrap().state, JobState::Queued);
    let attempts = s.list_attempts(a).await.unwrap();
    assert_eq!(attempts[0].finished_at, Some(5));
    let attempts = s.list_attempts(b).await.unwrap();
    assert_eq!(
        (attempts[0].error_type.as_deref(), attempts[0].finished_at),
        (Some("crashed"), Some(5))
    );
    let last = s.list_events(b, 0, 100).await.unwrap().pop().unwrap();
    assert_eq!((last.kind.as_str(), last.seq), ("test.finish", 3));
}

async fn a_crash_inside_a_write_leaves_nothing(t) {
    let s = &t.store;
    let id = insert(s, spec("x"), 0).await;
    s.claim("n", 0, 30_000, 1).await.unwrap();
    let events = [NewEvent::new("assistant", json!({}))];
    s.crash_during_append(id, 1, &events, 1).await.unwrap();
    s.crash_between_finish_writes(id, 1, &finish(Transition::Succeed), 2)
        .await
        .unwrap();
    let job = s.get_job(id).await.unwrap();
    assert_eq!((job.state, job.last_seq), (JobState::Running, 2));
    assert_eq!(s.list_events(id, 0, 10).await.unwrap().len(), 2);
    assert_eq!(
        s.append_events(id, 1, &events, &AttemptMeta::default(), 3)
            .await
            .unwrap(),
        3,
        "the sequence goes on with no gap"
    );
}

async fn dead_jobs_are_listed_and_replayed_with_continuing_attempts(t) {
    let s = &t.store;
    let id = insert(s, spec("x"), 0).await;
    s.claim("n", 0, 30_000, 1).await.unwrap();
    let mut die = finish(Transition::Exhaust);
    die.error = Some((ErrorKind::RateLimited, "slow down".into()));
    let rec = s.finish_attempt(id, 1, &die, 3).await.unwrap();
    assert_eq!((rec.state, rec.finished_at), (JobState::Dead, Some(3)));
    assert_eq!(s.dead_jobs(&ProjectId::default(), None, 10).await.unwrap().len(), 1);
    assert_eq!(
        s.dead_jobs(&ProjectId::default(), Some("rate_limited"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.dead_jobs(&ProjectId::default(), Some("timeout"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut changed = spec("changed");
    changed.priority = 3;
    let rec = s.replay(id, &changed, 2, 4).await.unwrap();
    assert_eq!(
        (rec.state, rec.attempt, rec.max_attempts, rec.priority),
        (JobState::Queued, 1, 3, 3)
    );
    assert_eq!(rec.error_type, None);
    assert!(matches!(
        s.replay(id, &changed, 1, 5).await,
        Err(StoreError::Conflict(_))
    ));
    let claimed = s.claim("n", 5, 30_000, 1).await.unwrap();
    assert_eq!(
        (claimed[0].job.attempt, claimed[0].job.spec.prompt.as_str()),
        (2, "changed")
    );
    let kinds: Vec<String> = s
        .list_events(id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "job.queued",
            "attempt.started",
            "test.finish",
            "job.replayed",
            "attempt.started"
        ]
    );
}

async fn retention_deletes_old_finished_jobs_with_their_rows(t) {
    let s = &t.store;
    let old = insert(s, spec("old"), 0).await;
    let new = insert(s, spec("new"), 0).await;
    s.claim("n", 0, 30_000, 2).await.unwrap();
    s.finish_attempt(old, 1, &finish(Transition::Succeed), 10)
        .await
        .unwrap();
    s.finish_attempt(new, 1, &finish(Transition::Succeed), 1_000)
        .await
        .unwrap();
    assert_eq!(s.prune(JobState::Failed, 500, 10).await.unwrap(), 0);
    assert_eq!(s.prune(JobState::Completed, 500, 10).await.unwrap(), 1);
    assert!(matches!(
        s.get_job(old).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.list_events(old, 0, 10).await.unwrap().is_empty());
    assert!(s.list_attempts(old).await.unwrap().is_empty());
    assert_eq!(s.get_job(new).await.unwrap().state, JobState::Completed);
}

async fn open_jobs_are_counted_and_finished_ones_are_not(t) {
    let s = &t.store;
    let done = insert(s, spec("done"), 0).await;
    s.claim("n", 0, 1_000, 1).await.unwrap();
    s.finish_attempt(done, 1, &finish(Transition::Succeed), 1)
        .await
        .unwrap();
    insert(s, spec("running"), 0).await;
    s.claim("n", 2, 1_000, 1).await.unwrap();
    insert(s, spec("queued"), 0).await;
    insert(s, spec("later"), 10_000).await;
    assert_eq!(
        s.count_open(&ProjectId::default()).await.unwrap(),
        OpenJobs {
            queued: 2,
            running: 1
        }
    );
    assert_eq!(s.count_open(&other_project()).await.unwrap(), OpenJobs::default());
}

async fn idempotency_keys_are_taken_once_answered_and_expire(t) {
    let s = &t.store;
    let pending = IdempotencyClaim::Pending {
        request_hash: "h1".into(),
    };
    assert_eq!(s.claim_idempotency(&ProjectId::default(), "k", "h1", 10).await.unwrap(), IdempotencyClaim::Taken);
    assert_eq!(s.claim_idempotency(&ProjectId::default(), "k", "h2", 11).await.unwrap(), pending);
    // Another project's key is another key.
    assert_eq!(s.claim_idempotency(&other_project(), "k", "h1", 11).await.unwrap(), IdempotencyClaim::Taken);
    s.complete_idempotency(&ProjectId::default(), "k", 201, "{\"a\":1}").await.unwrap();
    let answered = IdempotencyClaim::Answered {
        request_hash: "h1".into(),
        status: 201,
        body: "{\"a\":1}".into(),
    };
    assert_eq!(s.claim_idempotency(&ProjectId::default(), "k", "h1", 12).await.unwrap(), answered);
    // A released key (its request failed) can be taken again; an answered one cannot be
    // released, nor taken over however old.
    s.release_idempotency(&ProjectId::default(), "k").await.unwrap();
    let late = 12 + IDEMPOTENCY_PENDING_MS + 1;
    assert_eq!(s.claim_idempotency(&ProjectId::default(), "k", "h1", late).await.unwrap(), answered);
    s.release_idempotency(&other_project(), "k").await.unwrap();
    assert_eq!(s.claim_idempotency(&other_project(), "k", "h3", 13).await.unwrap(), IdempotencyClaim::Taken);
    // A key taken and never answered (its server died) is taken over after a while.
    assert_eq!(
        s.claim_idempotency(&other_project(), "k", "h4", 14).await.unwrap(),
        IdempotencyClaim::Pending { request_hash: "h3".into() }
    );
    let stale = 13 + IDEMPOTENCY_PENDING_MS + 1;
    assert_eq!(s.claim_idempotency(&other_project(), "k", "h4", stale).await.unwrap(), IdempotencyClaim::Taken);
    assert_eq!(s.prune_idempotency(12).await.unwrap(), 1);
    assert_eq!(s.claim_idempotency(&ProjectId::default(), "k", "h5", 20).await.unwrap(), IdempotencyClaim::Taken);
}

async fn racing_requests_with_one_idempotency_key_take_it_once(t) {
    let mut handles = Vec::new();
    for _ in 0..6 {
        let store = t.reopen().await;
        handles.push(tokio::spawn(async move {
            store.claim_idempotency(&ProjectId::default(), "race", "h", 1).await.unwrap()
        }));
    }
    let mut taken = 0;
    for h in handles {
        match h.await.unwrap() {
            IdempotencyClaim::Taken => taken += 1,
            IdempotencyClaim::Pending { request_hash } => assert_eq!(request_hash, "h"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(taken, 1);
}

async fn listing_filters_and_pages_newest_first(t) {
    let s = &t.store;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(insert(s, spec(&format!("j{i}")), 0).await);
    }
    s.cancel(ids[1], 1).await.unwrap();
    let base = JobFilter {
        project_id: ProjectId::default(),
        limit: 2,
        ..JobFilter::default()
    };
    let page: Vec<JobId> = s.list_jobs(&base).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(page, vec![ids[4], ids[3]]);
    let next = JobFilter {
        before: Some(ids[3]),
        ..base.clone()
    };
    let page: Vec<JobId> = s.list_jobs(&next).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(page, vec![ids[2], ids[1]]);
    let cancelled = JobFilter {
        state: Some(JobState::Cancelled),
        error_type: Some("cancelled".into()),
        ..base.clone()
    };
    let page: Vec<JobId> = s.list_jobs(&cancelled).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(page, vec![ids[1]]);
    let other = JobFilter {
        project_id: other_project(),
        ..base
    };
    assert!(s.list_jobs(&other).await.unwrap().is_empty());
}

async fn a_running_jobs_cancel_is_found_by_its_owner(t) {
    let s = &t.store;
    let a = insert(s, spec("a"), 0).await;
    let b = insert(s, spec("b"), 0).await;
    s.claim("inc-1", 0, 30_000, 1).await.unwrap();
    s.claim("inc-2", 0, 30_000, 1).await.unwrap();
    assert!(s.cancels_for("inc-1").await.unwrap().is_empty());
    s.cancel(a, 1).await.unwrap();
    s.cancel(b, 1).await.unwrap();
    assert_eq!(s.cancels_for("inc-1").await.unwrap(), vec![a]);
    assert_eq!(s.cancels_for("inc-2").await.unwrap(), vec![b]);
    assert_eq!(s.next_run_at().await.unwrap(), None);
}

async fn the_attempts_process_and_session_are_recorded(t) {
    let s = &t.store;
    let id = insert(s, spec("x"), 0).await;
    s.claim("n", 0, 30_000, 1).await.unwrap();
    let meta = AttemptMeta {
        pid: Some((99, 1234)),
        session_id: Some("3f0c1a64-1111-4222-8333-944455556666".into()),
        warm: true,
    };
    s.append_events(id, 1, &[], &meta, 1).await.unwrap();
    let attempt = &s.list_attempts(id).await.unwrap()[0];
    assert_eq!((attempt.pid, attempt.warm, attempt.incarnation.as_str()), (Some(99), true, "n"));
    let job = s.get_job(id).await.unwrap();
    assert_eq!(job.session_id, meta.session_id);
    let filter = JobFilter {
        project_id: ProjectId::default(),
        session_id: meta.session_id.clone(),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(s.list_jobs(&filter).await.unwrap().len(), 1);
}
}

/// What only a shared database does: hints to other nodes, and none on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sends_hints_that_sqlite_does_not_need() {
    assert!(
        TestStore::sqlite()
            .await
            .store
            .notices()
            .await
            .unwrap()
            .is_none()
    );
    let Some(t) = TestStore::postgres("postgres_sends_hints_that_sqlite_does_not_need").await
    else {
        return;
    };
    let s = &t.store;
    let mut notices = s.notices().await.unwrap().expect("postgres listens");
    let mut next = async || {
        tokio::time::timeout(std::time::Duration::from_secs(5), notices.next())
            .await
            .expect("a notice within 5 s")
            .unwrap()
    };
    let id = insert(s, spec("x"), 0).await;
    assert_eq!(next().await, Notice::JobsDue);
    s.claim("n", 0, 30_000, 1).await.unwrap();
    assert_eq!(
        next().await,
        Notice::Events {
            job: id,
            last_seq: 2
        }
    );
    s.append_events(
        id,
        1,
        &[NewEvent::new("a", json!({}))],
        &AttemptMeta::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        next().await,
        Notice::Events {
            job: id,
            last_seq: 3
        }
    );
    s.cancel(id, 2).await.unwrap();
    assert_eq!(next().await, Notice::Cancel(id));
    s.finish_attempt(id, 1, &finish(Transition::Retry), 3)
        .await
        .unwrap();
    assert_eq!(
        next().await,
        Notice::Events {
            job: id,
            last_seq: 4
        }
    );
    assert_eq!(next().await, Notice::JobsDue);
}
