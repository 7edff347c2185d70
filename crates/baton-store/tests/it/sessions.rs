//! Sessions: transcripts kept for resuming.

use super::*;

conformance! {
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
}
