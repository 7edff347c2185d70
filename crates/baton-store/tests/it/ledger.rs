//! The cost ledger.

use super::*;
use baton_store::{NewAlert, NewCall, SpendScope, UsageGroup};

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
    let window = s.spend(&ProjectId::default(), &SpendScope::Project, 1_500, 3_000).await.unwrap();
    assert_eq!((window.calls, window.cost_micro_usd), (1, 950));
    assert_eq!(s.spend(&other_project(), &SpendScope::Project, 0, 10_000).await.unwrap().calls, 0);
    let keyed = s.spend(&ProjectId::default(), &SpendScope::Key("k".into()), 0, 10_000).await.unwrap();
    assert_eq!(keyed.calls, 3);
    let agent = s.spend(&ProjectId::default(), &SpendScope::Agent("x".into()), 0, 10_000).await.unwrap();
    assert_eq!(agent.calls, 0);
}

async fn usage_groups_by_day_and_by_column(t) {
    let s = &t.store;
    let a = insert(s, spec("a"), 0).await;
    let b = insert(s, spec("b"), 0).await;
    let day = 86_400_000;
    s.record_call(&call(a, 5, 100)).await.unwrap();
    s.record_call(&call(a, day + 5, 200)).await.unwrap();
    s.record_call(&NewCall { model: None, ..call(b, day + 9, 300) }).await.unwrap();
    let days = s.usage(None, 0, 10 * day, UsageGroup::Day).await.unwrap();
    let got: Vec<_> = days.iter().map(|r| (r.group.clone(), r.calls, r.jobs, r.cost_micro_usd)).collect();
    assert_eq!(got, [(Some("0".to_string()), 1, 1, 100), (Some(day.to_string()), 2, 2, 500)]);
    let models = s.usage(Some(&ProjectId::default()), 0, 10 * day, UsageGroup::Model).await.unwrap();
    assert_eq!(models.len(), 2, "{models:?}");
    assert!(models.iter().any(|r| r.group.is_none() && r.calls == 1));
    assert!(s.usage(Some(&other_project()), 0, 10 * day, UsageGroup::Day).await.unwrap().is_empty());
}

async fn an_alert_is_raised_once_and_queued_for_its_webhook(t) {
    let s = &t.store;
    let a = insert(s, spec("a"), 0).await;
    let alert = NewAlert {
        project_id: ProjectId::default(),
        key: "budget:project:day:1970-01-01:50".into(),
        kind: "budget_threshold".into(),
        job_id: Some(a),
        detail: serde_json::json!({"threshold_percent": 50}),
        at: 10,
        webhook: Some(("http://example.test/alerts".into(), "{\"type\":\"cost.alert\"}".into())),
    };
    assert!(s.raise_alert(&alert).await.unwrap());
    assert!(!s.raise_alert(&NewAlert { at: 11, ..alert.clone() }).await.unwrap(), "once");
    let listed = s.list_alerts(&ProjectId::default(), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].detail["threshold_percent"], 50);
    assert!(s.list_alerts(&other_project(), 10).await.unwrap().is_empty());
    // Its delivery is due at once, though the job has not ended; it is not the job's own
    // callback.
    let due = s.claim_callbacks(10, 1_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].payload.as_deref(), Some("{\"type\":\"cost.alert\"}"));
    assert!(s.job_callbacks(a).await.unwrap().is_empty());
}
}
