//! Jobs: the queue, claims, cancels, replays, retention and listing.

use super::*;

conformance! {
async fn claims_by_priority_then_age_and_only_when_due(t) {
    let s = &t.store;
    let low = insert(s, spec("low"), 0).await;
    let mut high_spec = spec("high");
    high_spec.schedule.priority = 10;
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
    changed.schedule.priority = 3;
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
}

async fn insert_in(store: &Store, project: &ProjectId, prompt: &str, run_at: i64) -> JobId {
    let id = JobId::new();
    let job = NewJob {
        id,
        project_id: project.clone(),
        spec: spec(prompt),
        run_at,
        idempotency: None,
    };
    match store.insert_job(job, 0).await.unwrap() {
        Inserted::New(r) => r.id,
        other => panic!("{other:?}"),
    }
}

conformance! {
async fn claims_share_the_slots_between_projects_on_every_node(t) {
    let s = &t.store;
    let (a, b) = (ProjectId::parse("a").unwrap(), ProjectId::parse("b").unwrap());
    s.create_project(&a, "A", &serde_json::json!({}), 0).await.unwrap();
    s.create_project(&b, "B", &serde_json::json!({}), 0).await.unwrap();
    // A floods the queue, and fills the first four slots.
    let mut flood = Vec::new();
    for i in 0..1000 {
        flood.push(insert_in(s, &a, &format!("a{i}"), i).await);
    }
    let first: Vec<JobId> = s.claim("n1", 5_000, 30_000, 4).await.unwrap().iter().map(|c| c.job.id).collect();
    assert_eq!(first, flood[..4], "within a project, queue order");
    // B's one job, queued after all of A's, takes the next free slot, on another node.
    let b_job = insert_in(s, &b, "b0", 2_000).await;
    let other_node = t.reopen().await;
    let next = other_node.claim("n2", 5_000, 30_000, 1).await.unwrap();
    assert_eq!(next[0].job.id, b_job, "one turn of the slots at most");
    // A claim of several interleaves: the project with fewer running goes first.
    let b_more = [insert_in(s, &b, "b1", 3_000).await, insert_in(s, &b, "b2", 3_001).await];
    let got: Vec<JobId> = s.claim("n1", 5_000, 30_000, 3).await.unwrap().iter().map(|c| c.job.id).collect();
    assert_eq!(got, vec![b_more[0], b_more[1], flood[4]], "B (1 running) catches up with A (4)");
}

async fn a_project_at_its_running_quota_waits_and_others_do_not(t) {
    let s = &t.store;
    let (c, d) = (ProjectId::parse("c").unwrap(), ProjectId::parse("d").unwrap());
    s.create_project(&c, "C", &serde_json::json!({"quotas": {"max_running": 2}}), 0).await.unwrap();
    s.create_project(&d, "D", &serde_json::json!({}), 0).await.unwrap();
    let mut cs = Vec::new();
    for i in 0..5 {
        cs.push(insert_in(s, &c, &format!("c{i}"), i).await);
    }
    let ds = [insert_in(s, &d, "d0", 10).await, insert_in(s, &d, "d1", 11).await];
    let got: Vec<JobId> = s.claim("n1", 100, 30_000, 10).await.unwrap().iter().map(|x| x.job.id).collect();
    assert_eq!(got.iter().filter(|id| cs.contains(id)).count(), 2, "C holds two slots at most: {got:?}");
    assert!(ds.iter().all(|id| got.contains(id)), "D is not held back");
    // Across nodes too: another node adds none of C's while two run.
    let other_node = t.reopen().await;
    assert!(other_node.claim("n2", 100, 30_000, 10).await.unwrap().is_empty());
    s.finish_attempt(cs[0], 1, &finish(Transition::Succeed), 200).await.unwrap();
    let got = other_node.claim("n2", 300, 30_000, 10).await.unwrap();
    assert_eq!(got.len(), 1, "one slot freed, one more of C's");
    assert_eq!(got[0].job.id, cs[2]);
}
}

conformance! {
async fn a_session_id_is_one_projects_and_holds_up_no_other(t) {
    let s = &t.store;
    let (a, b) = (ProjectId::parse("a").unwrap(), ProjectId::parse("b").unwrap());
    s.create_project(&a, "A", &serde_json::json!({}), 0).await.unwrap();
    s.create_project(&b, "B", &serde_json::json!({}), 0).await.unwrap();
    let session = SessionId::new();
    let mut ids = Vec::new();
    for (project, n) in [(&a, 0), (&a, 1), (&b, 2)] {
        let mut job_spec = spec(&format!("j{n}"));
        job_spec.session = baton_core::SessionMode::Resume { id: session };
        let job = NewJob {
            id: JobId::new(),
            project_id: project.clone(),
            spec: job_spec,
            run_at: n,
            idempotency: None,
        };
        match s.insert_job(job, 0).await.unwrap() {
            Inserted::New(r) => ids.push(r.id),
            other => panic!("{other:?}"),
        }
    }
    let got: Vec<JobId> = s.claim("n1", 10, 30_000, 10).await.unwrap().iter().map(|c| c.job.id).collect();
    assert_eq!(got.len(), 2, "one of A's, and B's of the same id: {got:?}");
    assert!(got.contains(&ids[0]) && got.contains(&ids[2]));
    // On another node, A's second still waits for its first.
    let other_node = t.reopen().await;
    assert!(other_node.claim("n2", 10, 30_000, 10).await.unwrap().is_empty());
}

async fn jobs_are_found_by_their_conversation_in_their_project_only(t) {
    let s = &t.store;
    s.create_project(&other_project(), "Other", &serde_json::json!({}), 0)
        .await
        .unwrap();
    let mut with = spec("x");
    with.conversation = Some("c0ffee".into());
    let mine = insert(s, with.clone(), 0).await;
    insert(s, spec("y"), 0).await;
    let job = NewJob {
        id: JobId::new(),
        project_id: other_project(),
        spec: with,
        run_at: 0,
        idempotency: None,
    };
    s.insert_job(job, 0).await.unwrap();
    let filter = |project: ProjectId, conversation: &str| JobFilter {
        project_id: project,
        conversation: Some(conversation.into()),
        limit: 10,
        ..JobFilter::default()
    };
    let found = s.list_jobs(&filter(ProjectId::default(), "c0ffee")).await.unwrap();
    assert_eq!(found.iter().map(|j| j.id).collect::<Vec<_>>(), vec![mine]);
    assert_eq!(found[0].spec.conversation.as_deref(), Some("c0ffee"), "kept in the spec too");
    assert!(s.list_jobs(&filter(ProjectId::default(), "other")).await.unwrap().is_empty());
    assert_eq!(s.list_jobs(&filter(other_project(), "c0ffee")).await.unwrap().len(), 1);
}
}
