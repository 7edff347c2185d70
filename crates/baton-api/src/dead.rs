//! The dead-letter queue: jobs out of attempts, listed with every attempt's error, and
//! replayed one by one or in bulk, optionally with changed options.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::{JobRequest, JobSpec};
use baton_store::{IdempotencyClaim, JobRecord};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::{Caller, JobsRead, JobsWrite};
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::jobs::{DeadQuery, Params, idempotency, job_of, known_session, list, parse_request};
use crate::{AppState, wire};

#[utoipa::path(get, path = "/v1/dead", tag = "dead letters", params(DeadQuery),
    responses((status = 200, description = "Dead jobs, newest first, each with every attempt", body = wire::Page<wire::Job>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_dead(
    State(st): State<AppState>,
    caller: JobsRead,
    Params(q): Params<DeadQuery>,
) -> ApiResult<Json<wire::Page<wire::Job>>> {
    list(&st, &caller, q.into(), true).await
}

/// What a replay may change.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// Job options to change, as in `POST /v1/jobs` (checked like a new request).
    #[serde(default)]
    #[schema(value_type = Object)]
    options: Map<String, Value>,
    /// Attempts for the replay (default: the job's policy).
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<u32>,
}

fn parse_body<T: for<'de> Deserialize<'de> + Default>(raw: &Bytes) -> ApiResult<T> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

/// `changes` on their own: every option a known field of the right type, `max_attempts`
/// in range. Checked before any job is looked at, so a bad request is refused even when
/// no job would take it.
fn check_changes(st: &AppState, changes: &Changes) -> ApiResult<()> {
    if let Some(n) = changes.max_attempts
        && (n == 0 || n > st.limits().max_attempts)
    {
        return Err(ApiError::invalid(format!(
            "max_attempts must be between 1 and {}",
            st.limits().max_attempts
        )));
    }
    let mut probe = Value::Object(changes.options.clone());
    if probe.get("prompt").is_none() {
        probe["prompt"] = json!("a prompt");
    }
    let request = serde_json::from_value::<JobRequest>(probe)
        .map_err(|e| ApiError::invalid(format!("options: {e}")))?;
    parse_request(st, request).map(drop)
}

/// The job's options with `changes` applied, checked like a new request.
async fn changed_spec(
    st: &AppState,
    job: &JobRecord,
    changes: &Changes,
) -> ApiResult<(JobSpec, u32)> {
    let mut request = serde_json::to_value(job.spec.to_request())
        .map_err(|e| ApiError::new(ErrorType::Api, e.to_string()))?;
    for (k, v) in &changes.options {
        request[k] = v.clone();
    }
    if let Some(n) = changes.max_attempts {
        request["max_attempts"] = json!(n);
    }
    let request: JobRequest =
        serde_json::from_value(request).map_err(|e| ApiError::invalid(format!("options: {e}")))?;
    let mut spec = parse_request(st, request)?;
    // A replay of an agent's run is still that run.
    spec.agent = job.spec.agent.clone();
    spec.files = job.spec.files.clone();
    spec.verify = job.spec.verify.clone();
    spec.repos = job.spec.repos.clone();
    spec.charge = job.spec.charge.clone();
    st.engine()
        .config()
        .runner
        .check_paths(&spec.options.add_dirs, spec.cwd.as_deref())
        .map_err(ApiError::invalid)?;
    // Run again as its project's policy stands now.
    crate::policy::police(st, &job.project_id, &mut spec).await?;
    let attempts = spec.schedule.retry.max_attempts;
    Ok((spec, attempts))
}

/// Runs `f` at most once per `Idempotency-Key` of the caller's project: a repeat with the
/// same body gets the stored response, with another body a 409. `f` answers with a status,
/// the body to store, and optionally another body for this first answer only (one that
/// holds a secret, which is never stored). The key is taken before `f` runs, so of
/// requests racing with one key exactly one runs; the others get the stored answer, or a
/// 409 while it is still being made. A request that fails gives its key back.
pub(crate) async fn idempotent<F, Fut>(
    st: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    raw: &[u8],
    f: F,
) -> ApiResult<Response>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<(StatusCode, Value, Option<Value>)>>,
{
    let store = st.engine().store();
    let Some((key, hash)) = idempotency(headers, route, raw)? else {
        let (status, body, first) = f().await?;
        return Ok((status, Json(first.unwrap_or(body))).into_response());
    };
    let project = &caller.project;
    match store
        .claim_idempotency(project, &key, &hash, st.engine().now_ms())
        .await?
    {
        IdempotencyClaim::Answered { request_hash, .. }
        | IdempotencyClaim::Pending { request_hash }
            if request_hash != hash =>
        {
            Err(ApiError::key_reused())
        }
        IdempotencyClaim::Pending { .. } => Err(ApiError::new(
            ErrorType::Conflict,
            "a request with this Idempotency-Key is still being answered; retry shortly",
        )),
        IdempotencyClaim::Answered { status, body, .. } => {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut resp = (status, Json(body)).into_response();
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(resp)
        }
        IdempotencyClaim::Taken => match f().await {
            Ok((status, body, first)) => {
                store
                    .complete_idempotency(project, &key, status.as_u16(), &body.to_string())
                    .await?;
                Ok((status, Json(first.unwrap_or(body))).into_response())
            }
            Err(e) => {
                if let Err(release) = store.release_idempotency(project, &key).await {
                    tracing::warn!(error = %release, "could not give an idempotency key back");
                }
                Err(e)
            }
        },
    }
}

/// `POST /v1/jobs/{id}/retry`: replays a failed or dead job.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "dead letters",
    params(("id" = String, Path), ("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header, description = "Replay once.")),
    request_body(content = Changes, description = "What to change; no body keeps everything", content_type = "application/json"),
    responses((status = 200, description = "The failed or dead job, queued again", body = wire::Job),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn retry_job(
    State(st): State<AppState>,
    caller: JobsWrite,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    let changes: Changes = parse_body(&raw)?;
    check_changes(&st, &changes)?;
    let job = job_of(&st, &caller, &id).await?;
    let route = format!("POST /v1/jobs/{}/retry", job.id);
    idempotent(&st, &caller, &headers, &route, &raw, || async {
        let job = st.engine().store().get_job(job.id).await?;
        let (spec, attempts) = changed_spec(&st, &job, &changes).await?;
        known_session(&st, &caller, &spec).await?;
        let job = st.engine().replay(job.id, &spec, attempts).await?;
        Ok((
            StatusCode::OK,
            serde_json::to_value(wire::Job::new(&job)).unwrap_or_default(),
            None,
        ))
    })
    .await
}

/// Which dead jobs to replay, and what to change.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplay {
    /// Only dead jobs with this error type.
    error_type: Option<String>,
    /// At most this many (default 100), oldest first.
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    #[serde(flatten)]
    changes: Changes,
}

/// `POST /v1/dead/replay`: replays dead jobs by filter.
#[utoipa::path(post, path = "/v1/dead/replay", tag = "dead letters",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header, description = "Replay once.")),
    request_body = BulkReplay,
    responses((status = 200, description = "The dead jobs queued again, oldest first", body = wire::ReplayResult),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn replay_dead(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    // A bulk replay names what it replays: `{}` for every dead job, never an empty body.
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "a JSON body is required: {} replays every dead job, {\"error_type\": …} some",
        ));
    }
    let req: BulkReplay = parse_body(&raw)?;
    check_changes(&st, &req.changes)?;
    let limit = req.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    idempotent(
        &st,
        &caller,
        &headers,
        "POST /v1/dead/replay",
        &raw,
        || async {
            let dead = st
                .engine()
                .store()
                .dead_jobs(&caller.project, req.error_type.as_deref(), limit)
                .await?;
            // Check every job's changed options before replaying any.
            let mut planned = Vec::with_capacity(dead.len());
            for job in &dead {
                let (spec, n) = changed_spec(&st, job, &req.changes).await?;
                planned.push((job.id, spec, n));
            }
            for (_, spec, _) in &planned {
                known_session(&st, &caller, spec).await?;
            }
            let mut replayed = Vec::new();
            for (id, spec, attempts) in planned {
                // A job replayed meanwhile by someone else is skipped, not an error.
                match st.engine().replay(id, &spec, attempts).await {
                    Ok(job) => replayed.push(job.id.to_string()),
                    Err(baton_engine::EngineError::Store(baton_store::StoreError::Conflict(_))) => {
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((
                StatusCode::OK,
                serde_json::to_value(wire::ReplayResult {
                    object: wire::ReplayTag::Tag,
                    count: replayed.len(),
                    job_ids: replayed,
                })
                .unwrap_or_default(),
                None,
            ))
        },
    )
    .await
}
