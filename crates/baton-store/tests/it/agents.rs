//! Agents: versions, tombstones, races and projects.

use super::*;
use baton_store::AgentSave;

conformance! {
async fn every_change_of_an_agent_is_a_version_and_a_deletion_keeps_them(t) {
    let s = &t.store;
    let a = ProjectId::parse("team-a").unwrap();
    s.create_project(&a, "A", &json!({}), 0).await.unwrap();
    let v1 = s.save_agent(&a, "jq-bot", &json!({"prompt_template": "one"}), AgentSave::Create, 10).await.unwrap();
    assert_eq!((v1.version, v1.created_at), (1, 10));
    assert!(matches!(
        s.save_agent(&a, "jq-bot", &json!({}), AgentSave::Create, 11).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.save_agent(&a, "nobody", &json!({}), AgentSave::Update, 11).await,
        Err(StoreError::NotFound(_))
    ));
    let v2 = s.save_agent(&a, "jq-bot", &json!({"prompt_template": "two"}), AgentSave::Update, 12).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(s.get_agent(&a, "jq-bot", None).await.unwrap().definition["prompt_template"], "two");
    assert_eq!(s.get_agent(&a, "jq-bot", Some(1)).await.unwrap().definition["prompt_template"], "one");
    assert!(matches!(s.get_agent(&a, "jq-bot", Some(9)).await, Err(StoreError::NotFound(_))));
    s.save_agent(&a, "another", &json!({"prompt_template": "x"}), AgentSave::Create, 13).await.unwrap();
    let names: Vec<String> = s.list_agents(&a).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["another", "jq-bot"]);
    let versions: Vec<u32> = s.agent_versions(&a, "jq-bot").await.unwrap().iter().map(|r| r.version).collect();
    assert_eq!(versions, [2, 1]);
    // Another project sees none of them.
    assert!(s.list_agents(&ProjectId::default()).await.unwrap().is_empty());
    assert!(matches!(s.get_agent(&ProjectId::default(), "jq-bot", None).await, Err(StoreError::NotFound(_))));

    s.delete_agent(&a, "jq-bot", 20).await.unwrap();
    assert!(matches!(s.get_agent(&a, "jq-bot", None).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_agent(&a, "jq-bot", 21).await, Err(StoreError::NotFound(_))));
    assert_eq!(s.list_agents(&a).await.unwrap().len(), 1);
    // Saved again, it continues after the tombstone.
    let v4 = s.save_agent(&a, "jq-bot", &json!({"prompt_template": "four"}), AgentSave::Create, 30).await.unwrap();
    assert_eq!(v4.version, 4);
    // Agents asking for a warm pool, across projects, newest versions only.
    s.save_agent(&a, "warm", &json!({"prompt_template": "w", "warm_pool": 2}), AgentSave::Create, 31).await.unwrap();
    s.save_agent(&ProjectId::default(), "warm", &json!({"prompt_template": "w", "warm_pool": 1}), AgentSave::Create, 31).await.unwrap();
    let warm: Vec<(String, String)> = s.warm_agents().await.unwrap().into_iter().map(|r| (r.project_id.to_string(), r.name)).collect();
    assert_eq!(warm, [("default".to_string(), "warm".to_string()), ("team-a".to_string(), "warm".to_string())]);
    s.save_agent(&a, "warm", &json!({"prompt_template": "cold"}), AgentSave::Update, 32).await.unwrap();
    assert_eq!(s.warm_agents().await.unwrap().len(), 1, "its newest version has none");
    // Purging the project takes its agents.
    s.delete_project(&a, true).await.unwrap();
    assert!(matches!(s.get_agent(&a, "another", None).await, Err(StoreError::NotFound(_))));
}

async fn racing_saves_of_one_agent_make_one_version_each_or_a_conflict(t) {
    let s = &t.store;
    let p = ProjectId::default();
    s.save_agent(&p, "racy", &json!({"n": 0}), AgentSave::Create, 1).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = Arc::new(t.reopen().await);
        tasks.push(tokio::spawn(async move {
            store.save_agent(&ProjectId::default(), "racy", &json!({"n": n}), AgentSave::Update, 2).await
        }));
    }
    let mut saved = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(r) => saved.push(r.version),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    saved.sort();
    let versions: Vec<u32> = s.agent_versions(&p, "racy").await.unwrap().iter().rev().map(|r| r.version).collect();
    assert_eq!(versions.len(), saved.len() + 1, "every success is a version, nothing else is");
    assert_eq!(versions, (1..=versions.len() as u32).collect::<Vec<_>>(), "no gap, no duplicate");
}
}
