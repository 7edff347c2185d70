//! Idempotency keys of the replay routes.

use super::*;

conformance! {
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
}
