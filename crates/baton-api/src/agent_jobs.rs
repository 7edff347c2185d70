//! The Agent SDK service's job API: `POST /claude` queues a prompt and answers with a job
//! id, `GET /claude/jobs/{id}` polls it, and `POST /claude/stream` streams the CLI's
//! messages as `data:` lines, then `data: [DONE]`. Each is a durable Baton job of the
//! caller's project. `"continue": true` continues the project's most recent conversation.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use baton_core::spec::SessionRequest;
use baton_core::{EventKind, JobRequest, JobState, SessionId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::Target;
use crate::auth::{Caller, JobsRead, JobsWrite};
use crate::compat::inserted;
use crate::error::ApiResult;
use crate::extract::Body;
use crate::follow::{Followed, follow};
use crate::jobs::{idempotency, job_of, prepare, submit};
use crate::{AppState, wire};

/// A task for Claude.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    #[schema(
        min_length = 1,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    prompt: String,
    /// Continue the project's most recent conversation (waiting for its running turn, if
    /// any, to end); absent or false starts a new one.
    #[serde(rename = "continue", default)]
    continue_: bool,
}

/// `POST /claude`'s answer.
#[derive(Serialize, ToSchema)]
pub struct AgentJobCreated {
    job_id: String,
    #[schema(value_type = String, pattern = "^pending$")]
    status: &'static str,
}

/// A job, as the Agent SDK service shows it.
#[derive(Serialize, ToSchema)]
pub struct AgentJob {
    job_id: String,
    #[schema(value_type = String, pattern = "^(pending|in_progress|completed|failed)$")]
    status: &'static str,
    /// When completed: the result text, the token usage and the cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<AgentResult>,
    /// When failed: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    started_at: Option<String>,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AgentResult {
    #[schema(value_type = Option<String>)]
    output: Value,
    #[schema(value_type = Option<Object>)]
    usage: Value,
    #[schema(value_type = Option<f64>)]
    cost_usd: Value,
}

fn status(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "pending",
        JobState::Running => "in_progress",
        JobState::Completed => "completed",
        JobState::Failed | JobState::Cancelled | JobState::Dead => "failed",
    }
}

/// The job a request asks for: in a new session Baton names (so `continue` can find it),
/// or in the project's most recent one.
async fn agent_job(
    st: &AppState,
    caller: &Caller,
    req: AgentRequest,
    one_attempt: bool,
) -> ApiResult<JobRequest> {
    let latest = if req.continue_ {
        st.engine().store().latest_session(&caller.project).await?
    } else {
        None
    };
    let session = match latest {
        Some(id) => SessionRequest {
            resume: Some(id),
            ..SessionRequest::default()
        },
        None => SessionRequest {
            id: Some(SessionId::new().to_string()),
            ..SessionRequest::default()
        },
    };
    Ok(JobRequest {
        session: Some(session),
        max_attempts: one_attempt.then_some(1),
        ..JobRequest::prompt(req.prompt)
    })
}

#[utoipa::path(post, path = "/claude", tag = "agent service",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = AgentRequest,
    responses((status = 200, description = "Queued; poll /claude/jobs/{job_id}", body = AgentJobCreated),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<AgentRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /claude", &body.raw)?;
    let req = agent_job(&st, &caller, body.value, false).await?;
    let spec = prepare(&st, &caller, req).await?;
    let job = inserted(submit(&st, &caller, spec, idem).await?)?;
    let resp = Json(AgentJobCreated {
        job_id: job.id.to_string(),
        status: "pending",
    })
    .into_response();
    Ok(Target::on(resp, job.id.to_string(), None))
}

#[utoipa::path(get, path = "/claude/jobs/{id}", tag = "agent service", params(("id" = String, Path)),
    responses((status = 200, description = "The job", body = AgentJob),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    caller: JobsRead,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentJob>> {
    let job = job_of(&st, &caller, &id).await?;
    let view = wire::Job::new(&job);
    let status = status(job.state);
    Ok(Json(AgentJob {
        job_id: job.id.to_string(),
        status,
        result: (job.state == JobState::Completed).then(|| AgentResult {
            output: view.result.clone(),
            usage: view.usage.clone(),
            cost_usd: view.total_cost_usd.clone(),
        }),
        error: (status == "failed").then(|| {
            view.error.as_ref().map_or_else(
                || format!("the job ended {}", job.state),
                |e| e.message.clone(),
            )
        }),
        created_at: view.created_at,
        started_at: view.started_at,
        completed_at: view.finished_at,
    }))
}

/// What a stream says for one event: a message to pass on, the end, or a failure.
enum Said {
    Message(Value),
    Done,
    Failed(String),
}

fn said(kind: &str, data: &Value) -> Option<Said> {
    match kind {
        "system" | "assistant" | "user" | "result" => Some(Said::Message(data.clone())),
        k if k == EventKind::JobCompleted.as_str() => Some(Said::Done),
        k if k == EventKind::JobParked.as_str() => Some(Said::Failed(
            "the Anthropic API refused the run for now (a rate or usage limit); the job was cancelled"
                .into(),
        )),
        "job.failed" | "job.dead" | "job.cancelled" => Some(Said::Failed(
            data["error"]["message"]
                .as_str()
                .map_or_else(|| format!("the job ended: {kind}"), str::to_string),
        )),
        _ => None,
    }
}

#[utoipa::path(post, path = "/claude/stream", tag = "agent service",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header),
        ("Baton-Detach" = Option<wire::params::Detach>, Header, description = "true: the job keeps running if the caller hangs up before the stream ends (else it is cancelled)")),
    request_body = AgentRequest,
    responses((status = 200, description = "Server-sent `data:` lines: each CLI message as JSON, then [DONE]; a failure sends {\"error\": …} and ends", content_type = "text/event-stream", body = Value),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn stream(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<AgentRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /claude/stream", &body.raw)?;
    let detached = crate::hangup::detached(&headers)?;
    // One attempt: a retry would repeat messages the client has already seen.
    let req = agent_job(&st, &caller, body.value, true).await?;
    let spec = prepare(&st, &caller, req).await?;
    let job = inserted(submit(&st, &caller, spec, idem).await?)?;
    let job_id = job.id;
    let engine = st.engine().clone();
    let stream = follow(st.clone(), job_id, 0)
        .filter_map(move |item| {
            let engine = engine.clone();
            async move {
                let said = match item {
                    Followed::Event(e) => said(&e.kind, &e.data)?,
                    Followed::Failed(message) => Said::Failed(message),
                };
                if let Said::Failed(_) = said
                    && let Err(e) = engine.cancel(job_id).await
                {
                    tracing::debug!(job = %job_id, error = %e, "a failed stream's job was already over");
                }
                Some(said)
            }
        })
        .scan(false, |ended, said| {
            if *ended {
                return std::future::ready(None);
            }
            let data = match said {
                Said::Message(m) => m.to_string(),
                Said::Done => {
                    *ended = true;
                    "[DONE]".to_string()
                }
                Said::Failed(message) => {
                    *ended = true;
                    json!({"error": message}).to_string()
                }
            };
            std::future::ready(Some(Ok::<_, Infallible>(Event::default().data(data))))
        });
    // A client that leaves before the end cancels the job, unless it detached.
    let resp = crate::hangup::stream(&st, &caller, job_id, detached, "/claude/stream", stream);
    Ok(Target::on(resp, job_id.to_string(), None))
}
