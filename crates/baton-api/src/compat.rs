//! Routes that let existing clients work unchanged: the pipeline-worker API
//! (`POST /execute`, `GET /sessions/{id}`) and the CLI-wrapper API (`/v1/chat`,
//! `/v1/chat/stream`). Both are thin shapes over the same durable jobs.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use baton_core::spec::SessionRequest;
use baton_core::{EventKind, JobRequest, JobState, PermissionMode, SessionId};
use baton_store::{Inserted, JobFilter, JobRecord};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::Target;
use crate::auth::{JobsRead, JobsWrite};
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::extract::Body;
use crate::follow::{Followed, follow};
use crate::jobs::{idempotency, prepare, submit};
use crate::{AppState, wire};

/// The job a creating request made, or found made by its Idempotency-Key.
pub(crate) fn inserted(i: Inserted) -> ApiResult<JobRecord> {
    match i {
        Inserted::New(r) | Inserted::Replayed(r) => Ok(r),
        Inserted::KeyReused => Err(ApiError::key_reused()),
    }
}

/// The pipeline worker's request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    #[schema(
        min_length = 1,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    prompt: String,
    #[schema(max_items = 256, inline, value_type = Option<Vec<baton_core::spec::ToolName>>)]
    allowed_tools: Option<Vec<String>>,
    /// The job's wall-clock limit, in milliseconds.
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1000, maximum = 86400000)]
    timeout: Option<i64>,
}

/// `POST /execute`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ExecuteResponse {
    /// Poll `GET /sessions/{session_id}`.
    session_id: String,
    #[schema(value_type = String, pattern = "^running$")]
    status: &'static str,
    job_id: String,
}

/// `GET /sessions/{id}`'s answer, in the pipeline worker's shape.
#[derive(Serialize, ToSchema)]
pub struct SessionStatus {
    session_id: String,
    #[schema(value_type = String, pattern = "^(running|completed|failed)$")]
    status: &'static str,
    /// The result text (empty until completed).
    response: String,
    /// The job, as the native API shows it.
    result: wire::Job,
    error: Option<wire::Failure>,
}

/// `POST /v1/chat`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ChatResponse {
    #[schema(value_type = Option<String>)]
    result: Value,
    session_id: Option<String>,
    #[schema(value_type = Option<f64>)]
    cost_usd: Value,
    #[schema(value_type = Option<Object>)]
    usage: Value,
    #[schema(value_type = Option<String>)]
    model: Value,
    job_id: String,
}

/// `POST /execute`: the job starts a new Claude session whose id Baton picks, so the
/// `session_id` it answers with is the real session id, pollable at `/sessions/{id}`.
#[utoipa::path(post, path = "/execute", tag = "pipeline worker",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = ExecuteRequest,
    responses((status = 200, description = "Queued; poll /sessions/{session_id}", body = ExecuteResponse),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn execute(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<ExecuteRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /execute", &body.raw)?;
    let session = SessionId::new();
    let req = JobRequest {
        allowed_tools: body.value.allowed_tools,
        timeout_ms: body.value.timeout,
        session: Some(SessionRequest {
            id: Some(session.to_string()),
            ..SessionRequest::default()
        }),
        ..JobRequest::prompt(body.value.prompt)
    };
    let spec = prepare(&st, &caller, req).await?;
    let job = inserted(submit(&st, &caller, spec, idem).await?)?;
    // A replayed request answers with the session its first submission created.
    let session = job.spec.session.owned_session().unwrap_or(session);
    let resp = Json(ExecuteResponse {
        session_id: session.to_string(),
        status: "running",
        job_id: job.id.to_string(),
    })
    .into_response();
    Ok(Target::on(resp, job.id.to_string(), None))
}

/// `GET /sessions/{id}`: the newest job of the session, in the pipeline-worker shape.
#[utoipa::path(get, path = "/sessions/{id}", tag = "pipeline worker", params(("id" = String, Path)),
    responses((status = 200, description = "The session's newest job", body = SessionStatus),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn session_status(
    State(st): State<AppState>,
    caller: JobsRead,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionStatus>> {
    let not_found = || ApiError::not_found(format!("no session with id {id:?}"));
    let sid = SessionId::parse(&id).map_err(|_| not_found())?;
    let jobs = st
        .engine()
        .store()
        .list_jobs(&JobFilter {
            project_id: caller.project.clone(),
            session_id: Some(sid.to_string()),
            limit: 1,
            ..JobFilter::default()
        })
        .await?;
    let job = jobs.first().ok_or_else(not_found)?;
    let status = match job.state {
        JobState::Queued | JobState::Running => "running",
        JobState::Completed => "completed",
        JobState::Failed | JobState::Cancelled | JobState::Dead => "failed",
    };
    let view = wire::Job::new(job);
    Ok(Json(SessionStatus {
        session_id: sid.to_string(),
        status,
        response: view.result.as_str().unwrap_or_default().to_string(),
        error: view.error.clone(),
        result: view,
    }))
}

/// The CLI wrapper's request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Required.
    #[serde(default)]
    #[schema(
        required = true,
        min_length = 1,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    prompt: String,
    /// Continue this Claude session.
    #[schema(format = "uuid")]
    session_id: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\x00]+$")]
    model: Option<String>,
    #[schema(min_length = 1, max_length = 200000, pattern = r"^[^\x00]+$")]
    system_prompt: Option<String>,
    #[schema(exclusive_minimum = 0, maximum = 100000)]
    max_budget_usd: Option<f64>,
    permission_mode: Option<PermissionMode>,
    #[schema(max_items = 256, inline, value_type = Option<Vec<baton_core::spec::ToolName>>)]
    allowed_tools: Option<Vec<String>>,
    #[schema(value_type = Option<baton_core::spec::AbsolutePath>)]
    cwd: Option<String>,
}

impl ChatRequest {
    fn into_job(self) -> ApiResult<JobRequest> {
        let prompt = Some(self.prompt)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ApiError::invalid("prompt is required"))?;
        Ok(JobRequest {
            model: self.model,
            system_prompt: self.system_prompt,
            max_budget_usd: self.max_budget_usd,
            permission_mode: self.permission_mode,
            allowed_tools: self.allowed_tools,
            cwd: self.cwd,
            session: self.session_id.map(|s| SessionRequest {
                resume: Some(s),
                ..SessionRequest::default()
            }),
            ..JobRequest::prompt(prompt)
        })
    }
}

/// How long a synchronous facade waits beyond the job's own timeout (queueing, retries).
const FACADE_MARGIN: Duration = Duration::from_secs(60);

/// How long a synchronous route waits for the answer of a job of `spec`.
pub(crate) fn answer_wait(spec: &baton_core::JobSpec) -> Duration {
    Duration::from_millis(spec.schedule.timeout_ms) + FACADE_MARGIN
}

/// `POST /v1/chat`: runs a durable job and answers when it ends.
#[utoipa::path(post, path = "/v1/chat", tag = "CLI wrapper",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header),
        ("Baton-Detach" = Option<wire::params::Detach>, Header, description = "true: the job keeps running if the caller hangs up before the answer (else it is cancelled); the answer is then 202 at once, with Baton-Job-Id")),
    request_body = ChatRequest,
    responses((status = 200, description = "The job's result", body = ChatResponse),
        (status = 202, description = "Detached: Baton-Job-Id at once; the body, when the job ends, is the result or the error envelope", body = Object),
        (status = 429, description = "A usage limit refused the run; Retry-After says when it resets", body = wire::ErrorBody),
        (status = 502, description = "The job failed (the error names it)", body = wire::ErrorBody),
        (status = 504, description = "The job did not finish in time; it keeps running", body = wire::ErrorBody),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn chat(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<ChatRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /v1/chat", &body.raw)?;
    let detached = crate::hangup::detached(&headers)?;
    let spec = prepare(&st, &caller, body.value.into_job()?).await?;
    let wait = answer_wait(&spec);
    let job = inserted(submit(&st, &caller, spec, idem).await?)?;
    let job_id = job.id;
    let finish = chat_answer(st.clone(), job_id, wait);
    let resp = crate::hangup::answer(
        (&st, &caller.0, "/v1/chat"),
        job_id,
        detached,
        "application/json",
        finish,
    )
    .await?;
    Ok(Target::on(resp, job_id.to_string(), None))
}

/// `/v1/chat`'s answer, when its job ends (or its wait does).
async fn chat_answer(st: AppState, job: baton_core::JobId, wait: Duration) -> ApiResult<Response> {
    let job = completed(&st, job, wait).await?;
    let view = wire::Job::new(&job);
    Ok(Json(ChatResponse {
        result: view.result,
        session_id: view.session_id,
        cost_usd: view.total_cost_usd,
        usage: view.usage,
        model: view.model,
        job_id: job.id.to_string(),
    })
    .into_response())
}

/// A synchronous route's job once it completed; or the error its caller gets: `429`
/// with `Retry-After` when a rate or usage limit parked it (it is cancelled, since nobody
/// would see it run later), `502` when it ended otherwise, `504` when it did not end
/// within `wait` (it keeps running).
pub(crate) async fn completed(
    st: &AppState,
    job: baton_core::JobId,
    wait: Duration,
) -> ApiResult<JobRecord> {
    let job = st
        .engine()
        .wait_until(job, wait, |r| r.parked_until().is_some())
        .await?;
    if let Some(until) = job.parked_until() {
        let (seconds, message) = cancel_parked(st.engine(), job.id, until).await?;
        return Err(ApiError {
            detail: Some(json!({
                "job_id": job.id.to_string(),
                "job_state": "cancelled",
                "job_error": job.error_message,
            })),
            retry_after: Some(seconds),
            ..ApiError::new(ErrorType::RateLimit, message)
        });
    }
    let view = wire::Job::new(&job);
    let detail = json!({"job_id": job.id.to_string(), "job_state": job.state.as_str(), "job_error": view.error});
    match job.state {
        JobState::Completed => Ok(job),
        s if s.is_terminal() => Err(ApiError {
            detail: Some(detail),
            ..ApiError::new(
                ErrorType::BadGateway,
                format!(
                    "the job ended {s}: {}",
                    view.error
                        .as_ref()
                        .map_or("no error message", |e| e.message.as_str())
                ),
            )
        }),
        _ => Err(ApiError {
            detail: Some(detail),
            ..ApiError::new(
                ErrorType::GatewayTimeout,
                "the job did not finish in time; it keeps running, follow it at /v1/jobs/{job_id}",
            )
        }),
    }
}

/// A synchronous caller's job that a rate or usage limit parked until `until`: it is
/// cancelled, since nobody would see it run later, and the caller is told when to come
/// back (seconds, and a message saying so).
pub(crate) async fn cancel_parked(
    engine: &baton_engine::Engine,
    job: baton_core::JobId,
    until: i64,
) -> Result<(u64, String), baton_engine::EngineError> {
    engine.cancel(job).await?;
    let seconds = (until - engine.now_ms())
        .max(0)
        .unsigned_abs()
        .div_ceil(1000);
    Ok((
        seconds,
        format!(
            "the Anthropic API refused the run until its limit resets in {seconds} s; the job was cancelled"
        ),
    ))
}

/// `POST /v1/chat/stream`: `start`, `delta`… and `done` as data-only SSE events.
/// One attempt only: a retry would replay deltas the client has already shown.
#[utoipa::path(post, path = "/v1/chat/stream", tag = "CLI wrapper",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header),
        ("Baton-Detach" = Option<wire::params::Detach>, Header, description = "true: the job keeps running if the caller hangs up before the stream ends (else it is cancelled)")),
    request_body = ChatRequest,
    responses((status = 200, description = "Data-only server-sent events: start, delta, done or error", content_type = "text/event-stream", body = wire::SseEvent),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn chat_stream(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<ChatRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /v1/chat/stream", &body.raw)?;
    let detached = crate::hangup::detached(&headers)?;
    let mut req = body.value.into_job()?;
    req.max_attempts = Some(1);
    let spec = prepare(&st, &caller, req).await?;
    let job = inserted(submit(&st, &caller, spec, idem).await?)?;
    let job_id = job.id;
    let engine = st.engine().clone();
    let st2 = st.clone();
    let stream = follow(st, job.id, 0)
        .filter_map(move |item| {
            let engine = engine.clone();
            async move {
                match item {
                    // A rate or usage limit parked the job: the client hears when to come
                    // back, the job is cancelled rather than run later for nobody, and the
                    // stream ends here.
                    Followed::Event(e) if e.kind == EventKind::JobParked.as_str() => {
                        let until = e.data["until"].as_i64().unwrap_or(0);
                        let (seconds, message) = cancel_parked(&engine, job_id, until)
                            .await
                            .unwrap_or_else(|err| {
                                tracing::warn!(job = %job_id, error = %err, "could not cancel a parked stream's job");
                                (0, "the Anthropic API refused the run for now".into())
                            });
                        Some((
                            json!({"type": "error", "error": {
                                "type": "rate_limit_error",
                                "message": message,
                                "retry_after": seconds,
                            }}),
                            true,
                        ))
                    }
                    Followed::Event(e) => Some((translate(&e.kind, &e.data)?, false)),
                    Followed::Failed(message) => Some((
                        json!({"type": "error", "error": {"type": "api_error", "message": message}}),
                        true,
                    )),
                }
            }
        })
        .scan(false, |ended, (data, last)| {
            let item = (!*ended).then(|| Ok::<_, Infallible>(Event::default().data(data.to_string())));
            *ended |= last;
            std::future::ready(item)
        });
    // A client that leaves before the end cancels the job, unless it detached.
    let resp = crate::hangup::stream(&st2, &caller, job_id, detached, "/v1/chat/stream", stream);
    Ok(Target::on(resp, job_id.to_string(), None))
}

fn translate(kind: &str, e: &Value) -> Option<Value> {
    match kind {
        "system" if e["subtype"] == "init" => Some(json!({
            "type": "start", "session_id": e["session_id"], "model": e["model"],
        })),
        "assistant" => {
            let text: String = e["message"]["content"]
                .as_array()?
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            (!text.is_empty()).then(|| json!({"type": "delta", "text": text}))
        }
        "result" if e["is_error"] == false => Some(json!({
            "type": "done",
            "result": e["result"],
            "cost_usd": e["total_cost_usd"],
            "usage": e["usage"],
            "session_id": e["session_id"],
        })),
        "job.failed" | "job.dead" | "job.cancelled" => Some(json!({
            "type": "error", "error": e["error"], "state": e["state"],
        })),
        _ => None,
    }
}
