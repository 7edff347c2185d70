//! `GET /v1/health`: the CLI, the database and the queue at a glance. Answers 503 when Baton
//! cannot run jobs (no CLI, no database), so a load balancer takes it out of rotation.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

/// How long a `claude --version` answer is reused: the real CLI takes 0.1–0.7 s and
/// ~230 MB to answer, too much for every probe.
const VERSION_TTL: Duration = Duration::from_secs(60);

pub async fn cli_version(st: &AppState) -> Result<String, String> {
    if let Some((at, v)) = st.version_cache().lock().ok().and_then(|c| c.clone())
        && at.elapsed() < VERSION_TTL
    {
        return v;
    }
    let bin = &st.engine().config().runner.claude_bin;
    let result = baton_runner::version::cli_version(bin, Duration::from_secs(10))
        .await
        .map_err(|e| match e {
            baton_runner::version::VersionError::NotRunnable { bin, source } => {
                format!("claude CLI not found or not executable at {bin}: {source}")
            }
            other => other.to_string(),
        });
    if let Ok(mut c) = st.version_cache().lock() {
        *c = Some((Instant::now(), result.clone()));
    }
    result
}

pub async fn health(State(st): State<AppState>) -> Response {
    let runs_jobs = st.engine().config().runs_jobs;
    // A node that runs no jobs needs no CLI.
    let cli = if runs_jobs {
        cli_version(&st).await
    } else {
        Ok("not needed: this node runs no jobs".to_string())
    };
    let db = st.engine().store().ping().await.map_err(|e| e.to_string());
    // The queue as it stands; finished jobs are not counted, so a health check costs the
    // same however long the history kept.
    let counts = st
        .engine()
        .store()
        .count_open(st.project())
        .await
        .map(|c| json!({"queued": c.queued, "running": c.running}))
        .unwrap_or_else(|_| json!({}));
    let ok = cli.is_ok() && db.is_ok();
    let errors: Vec<&String> = [cli.as_ref().err(), db.as_ref().err()]
        .into_iter()
        .flatten()
        .collect();
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "claude_version": cli.as_ref().ok(),
        "claude_bin": st.engine().config().runner.claude_bin.display().to_string(),
        "database": if db.is_ok() { "ok" } else { "error" },
        "database_backend": st.engine().store().backend_name(),
        "node_id": st.engine().config().node_id,
        "runs_jobs": runs_jobs,
        "error": (!errors.is_empty()).then(|| errors.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")),
        "jobs": counts,
        "running_here": st.engine().running_here(),
        "max_concurrency": st.engine().config().max_concurrency,
        "incarnation": st.engine().incarnation(),
        "warm_pools": st.engine().warm_status(),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
