//! The cost ledger.

use super::*;
use baton_store::NewCall;

fn call(job: JobId, at: i64, cost: i64) -> NewCall {
    NewCall {
        at,
        project_id: ProjectId::default(),
        key_id: Some("k".into()),
        agent: None,
        routine_id: None,
        job_id: job,
        attempt: 1,
        model: Some("claude-sonnet-4-5".into()),
        input_tokens: 100,
        output_tokens: 50,
        cache_write_tokens: 0,
        cache_read_tokens: 0,
        cost_micro_usd: cost,
        priced: true,
        status: 200,
        duration_ms: 12,
    }
}

conformance! {
async fn calls_add_up_per_job_and_per_project_window(t) {
    let s = &t.store;
    let a = insert(s, spec("a"), 0).await;
    let b = insert(s, spec("b"), 0).await;
    s.record_call(&call(a, 1_000, 1_050)).await.unwrap();
    s.record_call(&call(a, 2_000, 950)).await.unwrap();
    s.record_call(&call(b, 3_000, 7)).await.unwrap();
    let spend = s.job_spend(a).await.unwrap();
    assert_eq!((spend.calls, spend.input_tokens, spend.output_tokens, spend.cost_micro_usd), (2, 200, 100, 2_000));
    assert_eq!(s.job_spend(JobId::new()).await.unwrap().calls, 0);
    let window = s.project_spend(&ProjectId::default(), 1_500, 3_000).await.unwrap();
    assert_eq!((window.calls, window.cost_micro_usd), (1, 950));
    assert_eq!(s.project_spend(&other_project(), 0, 10_000).await.unwrap().calls, 0);
}
}
