//! Projects, API keys and the audit log.

use super::*;
use baton_store::{AuditFilter, AuditRecord, NewKey};

fn team(name: &str) -> ProjectId {
    ProjectId::parse(name).unwrap()
}

fn audit(id: &str, project: &ProjectId, at: i64, action: &str) -> AuditRecord {
    AuditRecord {
        id: id.to_string(),
        at,
        project_id: project.clone(),
        key_id: Some("k1".into()),
        action: action.into(),
        route: "POST /v1/jobs".into(),
        target: Some("job-1".into()),
        outcome: "201".into(),
        request_id: "req_1".into(),
    }
}

conformance! {
async fn projects_are_created_listed_changed_and_deleted(t) {
    let s = &t.store;
    let a = team("team-a");
    let made = s.create_project(&a, "Team A", &json!({"max_queued": 10}), 5).await.unwrap();
    assert_eq!((made.name.as_str(), made.settings["max_queued"].as_i64()), ("Team A", Some(10)));
    assert!(matches!(
        s.create_project(&a, "again", &json!({}), 6).await,
        Err(StoreError::Conflict(_))
    ));
    let ids: Vec<String> = s.list_projects().await.unwrap().iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, ["default", "team-a"]);
    let changed = s.update_project(&a, Some("A"), None, 7).await.unwrap();
    assert_eq!((changed.name.as_str(), changed.updated_at), ("A", 7));
    assert_eq!(changed.settings, made.settings, "settings kept when not given");
    assert!(matches!(
        s.update_project(&team("nobody"), Some("x"), None, 8).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_project(&ProjectId::default(), true).await,
        Err(StoreError::Conflict(_))
    ));
    s.delete_project(&a, false).await.unwrap();
    assert!(matches!(s.get_project(&a).await, Err(StoreError::NotFound(_))));
}

async fn a_project_with_jobs_is_deleted_only_with_purge(t) {
    let s = &t.store;
    let b = team("team-b");
    s.create_project(&b, "B", &json!({}), 1).await.unwrap();
    let job = NewJob {
        id: JobId::new(),
        project_id: b.clone(),
        spec: spec("x"),
        run_at: 0,
        idempotency: None,
    };
    let Inserted::New(job) = s.insert_job(job, 1).await.unwrap() else { panic!() };
    s.insert_key(&NewKey {
        id: "kb".into(), project_id: b.clone(), name: "ci".into(),
        scopes: vec!["jobs:write".into()], secret_hash: "h".into(), expires_at: None,
        requests_per_minute: None, budget: None,
    }, 1).await.unwrap();
    s.append_audit(&audit("0001", &b, 1, "job.create")).await.unwrap();
    assert!(matches!(s.delete_project(&b, false).await, Err(StoreError::Conflict(_))));
    assert!(s.get_job(job.id).await.is_ok(), "a refused delete changes nothing");
    s.delete_project(&b, true).await.unwrap();
    assert!(matches!(s.get_job(job.id).await, Err(StoreError::NotFound(_))));
    assert!(s.list_events(job.id, 0, 10).await.unwrap().is_empty());
    assert!(matches!(s.find_key("kb").await, Err(StoreError::NotFound(_))));
    let left = s.list_audit(&AuditFilter { project_id: Some(b), limit: 10, ..AuditFilter::default() }).await.unwrap();
    assert!(left.is_empty());
}

async fn keys_are_found_by_id_listed_without_secrets_and_revoked(t) {
    let s = &t.store;
    let a = team("team-a");
    s.create_project(&a, "A", &json!({}), 1).await.unwrap();
    let new = NewKey {
        id: "k1".into(), project_id: a.clone(), name: "ci".into(),
        scopes: vec!["jobs:write".into(), "jobs:read".into()],
        secret_hash: "hash-of-secret".into(), expires_at: Some(100), requests_per_minute: Some(60),
        budget: Some(baton_core::Budget { day_usd: Some(2.5), ..Default::default() }),
    };
    let made = s.insert_key(&new, 10).await.unwrap();
    assert_eq!((made.created_at, made.expires_at, made.revoked_at), (10, Some(100), None));
    assert_eq!(made.requests_per_minute, Some(60));
    assert_eq!(made.budget.and_then(|b| b.day_usd), Some(2.5));
    assert!(matches!(s.insert_key(&new, 11).await, Err(StoreError::Conflict(_))));
    let unknown = NewKey { id: "k2".into(), project_id: team("nobody"), ..new.clone() };
    assert!(matches!(s.insert_key(&unknown, 11).await, Err(StoreError::NotFound(_))));
    let (found, hash) = s.find_key("k1").await.unwrap();
    assert_eq!((found.scopes.len(), hash.as_str()), (2, "hash-of-secret"));
    let admin = NewKey { id: "k0".into(), project_id: ProjectId::default(), scopes: vec!["admin".into()], ..new.clone() };
    s.insert_key(&admin, 12).await.unwrap();
    assert_eq!(s.list_keys(Some(&a)).await.unwrap().len(), 1);
    assert_eq!(s.list_keys(None).await.unwrap().len(), 2);
    s.touch_key("k1", 20).await.unwrap();
    let revoked = s.revoke_key("k1", 30).await.unwrap();
    assert_eq!((revoked.last_used_at, revoked.revoked_at), (Some(20), Some(30)));
    let again = s.revoke_key("k1", 40).await.unwrap();
    assert_eq!(again.revoked_at, Some(30), "the first revocation stands");
    assert!(matches!(s.revoke_key("nope", 40).await, Err(StoreError::NotFound(_))));
}

async fn audit_records_page_newest_first_filter_and_expire(t) {
    let s = &t.store;
    let a = team("team-a");
    for (i, action) in ["job.create", "job.cancel", "key.create", "job.create"].iter().enumerate() {
        s.append_audit(&audit(&format!("000{i}"), &a, i as i64 * 10, action)).await.unwrap();
    }
    s.append_audit(&audit("0009", &ProjectId::default(), 5, "job.create")).await.unwrap();
    let page = |before: Option<&str>, action: Option<&str>| AuditFilter {
        project_id: Some(a.clone()),
        action: action.map(str::to_string),
        before: before.map(str::to_string),
        limit: 2,
        ..AuditFilter::default()
    };
    let first = s.list_audit(&page(None, None)).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["0003", "0002"]);
    let second = s.list_audit(&page(Some("0002"), None)).await.unwrap();
    let ids: Vec<&str> = second.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["0001", "0000"]);
    assert_eq!(s.list_audit(&page(None, Some("job.create"))).await.unwrap().len(), 2);
    assert_eq!(s.prune_audit(15).await.unwrap(), 3, "at 0, 10 and the other project's 5");
    let all = AuditFilter { limit: 10, ..AuditFilter::default() };
    assert_eq!(s.list_audit(&all).await.unwrap().len(), 2);
}
}
