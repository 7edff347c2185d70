//! How Baton's records look on the wire.

use baton_store::{AttemptRecord, EventRecord, JobRecord};
use serde_json::{Value, json};

pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn opt_timestamp(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| Value::String(timestamp(m)))
}

pub fn job(j: &JobRecord) -> Value {
    let outcome = j.outcome.clone().unwrap_or(Value::Null);
    let error = match (&j.error_type, &j.error_message) {
        (Some(t), m) => json!({"type": t, "message": m.clone().unwrap_or_default()}),
        _ => Value::Null,
    };
    let mut options = serde_json::to_value(&j.spec).unwrap_or(Value::Null);
    let metadata = options
        .as_object_mut()
        .and_then(|o| o.remove("metadata"))
        .unwrap_or_else(|| json!({}));
    json!({
        "id": j.id.to_string(),
        "object": "job",
        "project_id": j.project_id,
        "state": j.state.as_str(),
        "priority": j.priority,
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "session_id": j.session_id,
        "cancel_requested": j.cancel_requested,
        "created_at": timestamp(j.created_at),
        "updated_at": timestamp(j.updated_at),
        "run_at": timestamp(j.run_at),
        "started_at": opt_timestamp(j.started_at),
        "finished_at": opt_timestamp(j.finished_at),
        "result": outcome["result"],
        "structured_output": outcome["structured_output"],
        "total_cost_usd": outcome["total_cost_usd"],
        "usage": outcome["usage"],
        "num_turns": outcome["num_turns"],
        "duration_ms": outcome["duration_ms"],
        "model": outcome["model"],
        "permission_denials": outcome.get("permission_denials").cloned().unwrap_or_else(|| json!([])),
        "error": error,
        "outcome": outcome,
        "metadata": metadata,
        "options": options,
        "last_event_seq": j.last_seq,
        // A queued job whose last attempt hit a rate limit waits for the limit to reset.
        "parked_until": j.parked_until().map(timestamp),
    })
}

pub fn attempt(a: &AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt,
        "node_incarnation": a.incarnation,
        "started_at": timestamp(a.started_at),
        "finished_at": opt_timestamp(a.finished_at),
        "pid": a.pid,
        "error": a.error_type.as_ref().map(|t| json!({"type": t, "message": a.error_message})),
        "fenced": a.fenced,
        "warm": a.warm,
    })
}

pub fn event(e: &EventRecord) -> Value {
    json!({
        "seq": e.seq,
        "kind": e.kind,
        "attempt": e.attempt,
        "at": timestamp(e.at),
        "data": e.data,
    })
}
