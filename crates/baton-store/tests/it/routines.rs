//! Routines, triggers, fires and the callbacks outbox.

use super::*;
use baton_store::{Delivery, Fire, FireOutcome, Fired, NewTrigger};

fn new_job(spec: JobSpec, project: &ProjectId) -> NewJob {
    NewJob {
        id: JobId::new(),
        project_id: project.clone(),
        spec,
        run_at: 0,
        idempotency: None,
    }
}

fn a_fire(key: &str, job: Option<NewJob>, outcome: FireOutcome, allowed: u32) -> Fire {
    Fire {
        project_id: ProjectId::default(),
        routine_id: "rtn_1".into(),
        trigger_id: "trig_1".into(),
        fire_key: key.into(),
        job,
        outcome,
        allowance: (allowed, 0),
        error: None,
    }
}

async fn setup(s: &Store) {
    let p = ProjectId::default();
    s.create_routine(
        &p,
        "rtn_1",
        "nightly",
        &json!({"name": "nightly", "prompt": "p"}),
        1,
    )
    .await
    .unwrap();
    s.add_trigger(
        &p,
        NewTrigger {
            id: "trig_1".into(),
            routine_id: "rtn_1".into(),
            kind: "cron".into(),
            config: json!({"type": "cron", "schedule": "*/15 * * * *"}),
            secret: None,
            token_hash: None,
            next_fire_at: Some(900_000),
        },
        32,
        1,
    )
    .await
    .unwrap();
}

conformance! {
async fn routines_and_triggers_belong_to_their_project(t) {
    let s = &t.store;
    let p = ProjectId::default();
    setup(s).await;
    assert!(matches!(
        s.create_routine(&p, "rtn_2", "nightly", &json!({}), 2).await,
        Err(StoreError::Conflict(_))
    ), "one name per project");
    let a = ProjectId::parse("team-a").unwrap();
    s.create_project(&a, "A", &json!({}), 0).await.unwrap();
    s.create_routine(&a, "rtn_a", "nightly", &json!({"name": "nightly"}), 2).await.unwrap();
    assert!(matches!(s.get_routine(&a, "rtn_1").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_trigger(&a, "trig_1").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.set_trigger_token(&a, "trig_1", "h").await, Err(StoreError::NotFound(_))));
    let paused = s.update_routine(&p, "rtn_1", None, Some(true), 5).await.unwrap();
    assert!(paused.paused);
    let renamed = s.update_routine(&p, "rtn_1", Some(("renamed", &json!({"name": "renamed"}))), None, 6).await.unwrap();
    assert_eq!((renamed.name.as_str(), renamed.paused, renamed.updated_at), ("renamed", true, 6));
    assert_eq!(s.list_triggers(&p, "rtn_1").await.unwrap().len(), 1);
    assert!(matches!(
        s.add_trigger(&p, NewTrigger {
            id: "trig_x".into(), routine_id: "rtn_1".into(), kind: "api".into(), config: json!({}),
            secret: None, token_hash: Some("h".into()), next_fire_at: None,
        }, 1, 7).await,
        Err(StoreError::Conflict(_))
    ), "at most `max` triggers");
    // Due triggers, and a guarded advance: only the first mover wins.
    assert_eq!(s.due_triggers(899_999, 10).await.unwrap().len(), 0);
    assert_eq!(s.due_triggers(900_000, 10).await.unwrap().len(), 1);
    assert!(s.advance_trigger("trig_1", 900_000, Some(1_800_000)).await.unwrap());
    assert!(!s.advance_trigger("trig_1", 900_000, Some(1_800_000)).await.unwrap());
    let secrets = s.trigger_secrets("trig_1").await.unwrap();
    assert_eq!(secrets.trigger.next_fire_at, Some(1_800_000));
    s.delete_routine(&p, "rtn_1").await.unwrap();
    assert!(matches!(s.trigger_secrets("trig_1").await, Err(StoreError::NotFound(_))), "triggers go with it");
    s.delete_project(&a, true).await.unwrap();
    assert!(matches!(s.get_routine(&a, "rtn_a").await, Err(StoreError::NotFound(_))));
}

async fn a_fire_happens_once_per_key_within_the_allowance_and_never_while_paused(t) {
    let s = &t.store;
    let p = ProjectId::default();
    setup(s).await;
    let Fired::New(first, Some(job)) = s.fire(a_fire("slot:1", Some(new_job(spec("one"), &p)), FireOutcome::Queued, 2), 10).await.unwrap() else {
        panic!("a new fire with its job");
    };
    assert_eq!(first.job_id, Some(job.id.to_string()));
    assert_eq!(s.get_job(job.id).await.unwrap().state, JobState::Queued);
    let Fired::Duplicate(again) = s.fire(a_fire("slot:1", Some(new_job(spec("dup"), &p)), FireOutcome::Queued, 2), 11).await.unwrap() else {
        panic!("the same key is the same fire");
    };
    assert_eq!(again.job_id, first.job_id);
    // Racing nodes: one fire of a key, whatever the number of racers.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = Arc::new(t.reopen().await);
        tasks.push(tokio::spawn(async move {
            store.fire(a_fire("slot:2", Some(new_job(spec("race"), &ProjectId::default())), FireOutcome::Queued, 10), 12).await.unwrap()
        }));
    }
    let mut new = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Fired::New(..)) {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    // The allowance counts fires since its start; a skipped slot does not count.
    assert!(matches!(s.fire(a_fire("slot:3", Some(new_job(spec("over"), &p)), FireOutcome::Queued, 2), 13).await.unwrap(), Fired::OverAllowance));
    assert!(matches!(s.fire(a_fire("slot:4", None, FireOutcome::Skipped, 2), 14).await.unwrap(), Fired::New(_, None)));
    s.update_routine(&p, "rtn_1", None, Some(true), 15).await.unwrap();
    assert!(matches!(s.fire(a_fire("slot:5", Some(new_job(spec("p"), &p)), FireOutcome::Queued, 99), 16).await.unwrap(), Fired::Paused));
    let fires = s.routine_fires(&p, "rtn_1", 50).await.unwrap();
    let outcomes: Vec<&str> = fires.iter().map(|(f, _)| f.outcome.as_str()).collect();
    assert_eq!(outcomes, ["skipped", "queued", "queued"], "newest first");
    assert!(s.routine_fires(&other_project(), "rtn_1", 50).await.unwrap().is_empty());
}

async fn a_waiting_fire_is_queued_once_the_routine_has_no_unfinished_run(t) {
    let s = &t.store;
    let p = ProjectId::default();
    setup(s).await;
    let Fired::New(_, Some(running)) = s.fire(a_fire("slot:1", Some(new_job(spec("first"), &p)), FireOutcome::Queued, 9), 10).await.unwrap() else {
        panic!()
    };
    assert!(s.routine_busy("rtn_1").await.unwrap());
    s.fire(a_fire("slot:2", Some(new_job(spec("second"), &p)), FireOutcome::Waiting, 9), 11).await.unwrap();
    assert_eq!(s.release_waiting(12).await.unwrap(), 0, "the first is unfinished");
    s.cancel(running.id, 13).await.unwrap();
    assert_eq!(s.release_waiting(14).await.unwrap(), 1);
    assert_eq!(s.release_waiting(15).await.unwrap(), 0, "once");
    let fires = s.routine_fires(&p, "rtn_1", 50).await.unwrap();
    let (released, state) = &fires[0];
    assert_eq!((released.outcome, *state), (FireOutcome::Queued, Some(JobState::Queued)));
    let job = s.get_job(JobId::parse(released.job_id.as_deref().unwrap()).unwrap()).await.unwrap();
    assert_eq!(job.spec.prompt, "second");
}

async fn a_job_with_a_callback_url_brings_its_outbox_row_delivered_once_ended(t) {
    let s = &t.store;
    let mut with = spec("cb");
    with.callback_url = Some("http://127.0.0.1:9/hook".into());
    let id = insert(s, with, 0).await;
    insert(s, spec("no callback"), 0).await;
    let rows = s.job_callbacks(id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state.as_str(), rows[0].url.as_str()), ("pending", "http://127.0.0.1:9/hook"));
    assert!(rows[0].id.starts_with("dlv_"));
    assert!(s.claim_callbacks(1_000, 60_000, 10).await.unwrap().is_empty(), "not before the job ends");
    s.cancel(id, 5).await.unwrap();
    let claimed = s.claim_callbacks(1_000, 60_000, 10).await.unwrap();
    assert_eq!((claimed.len(), claimed[0].attempts), (1, 1));
    assert!(s.claim_callbacks(1_000, 60_000, 10).await.unwrap().is_empty(), "claimed: leased");
    s.record_delivery(&claimed[0].id, claimed[0].attempts, &Delivery::Failed { status: Some(500), error: "boom".into(), retry_at: Some(2_000) }, 1_000).await.unwrap();
    let again = s.claim_callbacks(2_000, 60_000, 10).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    // A lapsed claim's late outcome does not overwrite the newer claim's.
    s.record_delivery(&again[0].id, 1, &Delivery::Failed { status: None, error: "late".into(), retry_at: None }, 2_000).await.unwrap();
    assert_eq!(s.job_callbacks(id).await.unwrap()[0].state, "pending");
    s.record_delivery(&again[0].id, again[0].attempts, &Delivery::Delivered { status: 204 }, 2_000).await.unwrap();
    let done = &s.job_callbacks(id).await.unwrap()[0];
    assert_eq!((done.state.as_str(), done.last_status, done.delivered_at), ("delivered", Some(204), Some(2_000)));
    assert!(s.claim_callbacks(999_999, 60_000, 10).await.unwrap().is_empty());
    // A project's secret is made once, then rotated.
    let p = ProjectId::default();
    let first = s.callback_secret(&p, "one").await.unwrap();
    assert_eq!(s.callback_secret(&p, "two").await.unwrap(), first);
    s.rotate_callback_secret(&p, "three").await.unwrap();
    assert_eq!(s.callback_secret(&p, "four").await.unwrap(), "three");
}
}
