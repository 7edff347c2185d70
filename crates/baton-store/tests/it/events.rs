//! Events: numbering, and what a crash in the middle of an append leaves.

use super::*;

conformance! {
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
}
