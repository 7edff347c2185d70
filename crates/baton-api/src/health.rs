//! `GET /v1/health`: the CLI, the database and the queue at a glance. Answers 503 when Baton
//! cannot run jobs (no CLI, no database), so a load balancer takes it out of rotation.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

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

/// What `GET /v1/health` answers: to a caller without a key, once keys exist, only
/// `status` and `auth`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^(ok|error)$")]
    status: &'static str,
    /// `open`: no API key exists yet, so Baton serves loopback only and needs no key;
    /// `keys`: every route but this one needs an API key.
    #[schema(value_type = String, pattern = "^(open|keys)$")]
    auth: &'static str,
    #[serde(flatten)]
    detail: Option<HealthDetail>,
}

/// What health tells a caller with a key (or anyone, while Baton is open).
#[derive(Serialize, ToSchema)]
pub struct HealthDetail {
    /// What `claude --version` printed; null when it could not run.
    claude_version: Option<String>,
    claude_bin: String,
    #[schema(value_type = String, pattern = "^(ok|error)$")]
    database: &'static str,
    #[schema(value_type = String, pattern = "^(sqlite|postgres)$")]
    database_backend: &'static str,
    node_id: String,
    runs_jobs: bool,
    /// What is wrong, when `status` is `error`.
    error: Option<String>,
    /// The caller's project's queue as it stands (finished jobs are not counted).
    jobs: Option<QueueCounts>,
    running_here: usize,
    max_concurrency: usize,
    incarnation: String,
    /// Each warm pool's counters.
    #[schema(value_type = Vec<Object>)]
    warm_pools: Value,
    /// Where jobs run: the server's sandbox setting and the projects that opt out.
    sandbox: Option<crate::policy::SandboxHealth>,
}

/// Jobs waiting and running.
#[derive(Serialize, ToSchema)]
pub struct QueueCounts {
    queued: i64,
    running: i64,
}

#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses(
        (status = 200, description = "Baton can run jobs", body = Health),
        (status = 503, description = "Baton cannot run jobs (no CLI, no database)", body = Health)))]
pub async fn health(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let enforced = st.auth().enforced(&st).await.unwrap_or(true);
    let caller = st.auth().caller(&st, &headers).await.ok();
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
    let jobs = match &caller {
        Some(c) => st.engine().store().count_open(&c.project).await.ok(),
        None => None,
    }
    .map(|c| QueueCounts {
        queued: c.queued,
        running: c.running,
    });
    let sandbox = match &caller {
        Some(c) => crate::policy::health(&st, c).await.ok(),
        None => None,
    };
    let ok = cli.is_ok() && db.is_ok();
    let errors: Vec<&str> = [cli.as_ref().err(), db.as_ref().err()]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let detail = caller.is_some().then(|| HealthDetail {
        claude_version: cli.as_ref().ok().cloned(),
        claude_bin: st.engine().config().runner.claude_bin.display().to_string(),
        database: if db.is_ok() { "ok" } else { "error" },
        database_backend: st.engine().store().backend_name(),
        node_id: st.engine().config().node_id.clone(),
        runs_jobs,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        jobs,
        running_here: st.engine().running_here(),
        max_concurrency: st.engine().config().max_concurrency,
        incarnation: st.engine().incarnation().to_string(),
        warm_pools: st.engine().warm_status(),
        sandbox,
    });
    let body = Health {
        status: if ok { "ok" } else { "error" },
        auth: if enforced { "keys" } else { "open" },
        detail,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
