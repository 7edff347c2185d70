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
