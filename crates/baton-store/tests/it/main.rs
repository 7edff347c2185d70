//! The store's behaviour, as the engine relies on it. Every semantic the engine needs is
//! here; a second backend must pass the same tests.

use baton_core::{ErrorKind, JobId, JobRequest, JobSpec, JobState, Limits, SessionId, Transition};
use baton_store::{AttemptMeta, Finish, Inserted, JobFilter, NewEvent, NewJob, Store, StoreError};
use serde_json::json;

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    (store, dir)
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
        project_id: "default".into(),
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
    }
}

#[tokio::test]
async fn claims_by_priority_then_age_and_only_when_due() {
    let (s, _d) = store().await;
    let low = insert(&s, spec("low"), 0).await;
    let mut high_spec = spec("high");
    high_spec.priority = 10;
    let high = insert(&s, high_spec, 0).await;
    let later = insert(&s, spec("later"), 5_000).await;
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

#[tokio::test]
async fn one_running_attempt_per_session() {
    let (s, _d) = store().await;
    let session = SessionId::new();
    let mut a = spec("a");
    a.session = baton_core::SessionMode::Resume { id: session };
    let first = insert(&s, a.clone(), 0).await;
    let second = insert(&s, a, 0).await;
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

#[tokio::test]
async fn a_stale_attempt_is_fenced_everywhere() {
    let (s, _d) = store().await;
    let id = insert(&s, spec("x"), 0).await;
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

#[tokio::test]
async fn events_are_numbered_without_gaps_across_lifecycle_and_output() {
    let (s, _d) = store().await;
    let id = insert(&s, spec("x"), 0).await;
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

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let (s, _d) = store().await;
    let job = |hash: &str| NewJob {
        id: JobId::new(),
        project_id: "default".into(),
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

#[tokio::test]
async fn cancel_depends_on_state() {
    let (s, _d) = store().await;
    let queued = insert(&s, spec("q"), 0).await;
    let rec = s.cancel(queued, 1).await.unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    assert!(matches!(
        s.cancel(queued, 2).await,
        Err(StoreError::Conflict(_))
    ));
    let running = insert(&s, spec("r"), 0).await;
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

#[tokio::test]
async fn expired_leases_and_orphans_are_found() {
    let (s, _d) = store().await;
    s.register_incarnation("inc-old", "node-a", 1, 0)
        .await
        .unwrap();
    s.register_incarnation("inc-new", "node-a", 2, 0)
        .await
        .unwrap();
    let a = insert(&s, spec("a"), 0).await;
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
}

#[tokio::test]
async fn sessions_round_trip_and_reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let id = {
        let s = Store::open(&path).await.unwrap();
        let id = insert(&s, spec("persist"), 0).await;
        s.save_session("default", "sess-1", b"line 1\n", id, 5)
            .await
            .unwrap();
        s.save_session("default", "sess-1", b"line 1\nline 2\n", id, 6)
            .await
            .unwrap();
        id
    };
    let s = Store::open(&path).await.unwrap();
    assert_eq!(s.get_job(id).await.unwrap().spec.prompt, "persist");
    let session = s.get_session("default", "sess-1").await.unwrap();
    assert_eq!(session.transcript, b"line 1\nline 2\n");
    assert_eq!((session.created_at, session.updated_at), (5, 6));
    assert!(matches!(
        s.get_session("other", "sess-1").await,
        Err(StoreError::NotFound(_))
    ));
    let filter = JobFilter {
        project_id: "default".into(),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(s.list_jobs(&filter).await.unwrap().len(), 1);
}
