//! Hints between nodes: what only a shared database sends.

use super::*;

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
    // Channels are the database's, not the schema's: tests running beside this one send
    // hints too. Each expected hint is waited for, others passed over.
    let mut expect = async |want: Notice| loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), notices.next())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} within 5 s"))
            .unwrap();
        if n == want {
            return;
        }
    };
    let id = insert(s, spec("x"), 0).await;
    expect(Notice::JobsDue).await;
    s.claim("n", 0, 30_000, 1).await.unwrap();
    expect(Notice::Events {
        job: id,
        last_seq: 2,
    })
    .await;
    s.append_events(
        id,
        1,
        &[NewEvent::new("a", json!({}))],
        &AttemptMeta::default(),
        1,
    )
    .await
    .unwrap();
    expect(Notice::Events {
        job: id,
        last_seq: 3,
    })
    .await;
    s.cancel(id, 2).await.unwrap();
    expect(Notice::Cancel(id)).await;
    s.finish_attempt(id, 1, &finish(Transition::Retry), 3)
        .await
        .unwrap();
    expect(Notice::Events {
        job: id,
        last_seq: 4,
    })
    .await;
    expect(Notice::JobsDue).await;
}
