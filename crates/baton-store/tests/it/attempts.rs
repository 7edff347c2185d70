//! Attempts: fencing, rescues, finishes and what they record.

use super::*;

conformance! {
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
