//! The native job routes.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use baton_core::{JobId, JobRequest, JobSpec, JobState};
use baton_store::{Inserted, JobFilter, JobRecord, NewJob, StoreError};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Target;
use crate::auth::{Caller, JobsRead, JobsWrite};
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::extract::Body;
use crate::follow::{Followed, follow};
use crate::{AppState, wire};

/// Query parameters, refused in the error envelope.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))
    }
}

/// The job `id` names, if the caller may see it: another project's job is answered
/// exactly as one that does not exist.
pub async fn job_of(st: &AppState, caller: &Caller, id: &str) -> ApiResult<JobRecord> {
    let not_found = || ApiError::not_found(format!("no job with id {id:?}"));
    let job_id = JobId::parse(id).map_err(|_| not_found())?;
    match st.engine().store().get_job(job_id).await {
        Ok(job) if caller.sees(&job.project_id) => Ok(job),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `Idempotency-Key` plus a hash of what the key guards: the same key with another body
/// is a conflict, not a replay.
pub(crate) fn idempotency(
    headers: &HeaderMap,
    route: &str,
    raw: &[u8],
) -> ApiResult<Option<(String, String)>> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(raw);
    let hash = crate::keys::hex(&h.finalize());
    Ok(Some((format!("{route} {key}"), hash)))
}

/// A job: a prompt with its options, or a run of a saved agent with its input. (The
/// document's shape of the body only: the handler reads the JSON and picks the one it is.)
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
pub enum CreateJob {
    Prompt(JobRequest),
    Agent(crate::agents::AgentJobRequest),
}

/// Validates paths against the workspace roots, checks that a session it continues is
/// one of the caller's project and that the project is within its queued-jobs quota, and
/// queues the job in the caller's project.
pub async fn submit(
    st: &AppState,
    caller: &Caller,
    mut spec: JobSpec,
    idem: Option<(String, String)>,
) -> ApiResult<Inserted> {
    admit(st, caller, &mut spec).await?;
    // Its spend counts against the submitting key's budget.
    spec.charge.key_id = caller.key_id.clone();
    let job = NewJob {
        id: JobId::new(),
        project_id: caller.project.clone(),
        spec,
        run_at: st.engine().now_ms(),
        idempotency: idem,
    };
    Ok(st.engine().submit(job).await?)
}

/// What every new job must pass before it is queued: its project's policy (which also
/// fills in what the job leaves to it and decides its sandbox), its paths inside the
/// workspace roots, a session it continues known in the caller's project, a callback URL
/// that may be called, and the project's queued-jobs quota.
pub(crate) async fn admit(st: &AppState, caller: &Caller, spec: &mut JobSpec) -> ApiResult<()> {
    crate::policy::police(st, &caller.project, spec).await?;
    for repo in &spec.repos {
        check_repo(st, repo)?;
    }
    if let Some(url) = &spec.callback_url {
        crate::callbacks::check_destination(st, url).await?;
    }
    st.engine()
        .config()
        .runner
        .check_paths(&spec.options.add_dirs, spec.cwd.as_deref())
        .map_err(ApiError::invalid)?;
    known_session(st, caller, spec).await?;
    let settings = st.settings(&caller.project).await?;
    if let Some(max) = settings.quotas.max_queued {
        let open = st.engine().store().count_open(&caller.project).await?;
        let held = open.queued + open.running;
        if held >= i64::from(max) {
            return Err(ApiError {
                retry_after: Some(QUOTA_RETRY_SECONDS),
                ..ApiError::new(
                    ErrorType::RateLimit,
                    format!(
                        "project {} has {held} jobs queued or running, its quota (quotas.max_queued) is {max}; \
                         retry when some have finished",
                        caller.project
                    ),
                )
            });
        }
    }
    Ok(())
}

/// A repository an agent checks out must be inside a workspace root.
pub(crate) fn check_repo(st: &AppState, repo: &baton_core::agent::Repo) -> ApiResult<()> {
    st.engine()
        .config()
        .runner
        .check_paths(std::slice::from_ref(&repo.path), None)
        .map(drop)
        .map_err(|e| ApiError::invalid(e.replacen("add_dirs", "repos", 1)))
}

/// How long a caller refused by its project's queued-jobs quota is told to wait.
const QUOTA_RETRY_SECONDS: u64 = 5;

/// A job continues a session Baton knows in the caller's project (its transcript is
/// stored, or a job of it exists): another project's session, or one Baton never saw, is
/// a 404 at once, not a job that fails as the CLI finds no conversation.
pub(crate) async fn known_session(st: &AppState, caller: &Caller, spec: &JobSpec) -> ApiResult<()> {
    let Some(id) = spec.session.restores() else {
        return Ok(());
    };
    // A job of the session is the cheap proof (an index lookup); only without one is the
    // stored transcript looked for.
    let store = st.engine().store();
    let jobs = store
        .list_jobs(&JobFilter {
            project_id: caller.project.clone(),
            session_id: Some(id.to_string()),
            limit: 1,
            ..JobFilter::default()
        })
        .await?;
    if !jobs.is_empty() {
        return Ok(());
    }
    match store.get_session(&caller.project, &id.to_string()).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!(
            "no session with id {id} in this project"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A request's job spec: the project's defaults for what it leaves out, then checked.
pub async fn prepare(st: &AppState, caller: &Caller, req: JobRequest) -> ApiResult<JobSpec> {
    let settings = st.settings(&caller.project).await?;
    if settings.defaults.is_empty() {
        return parse_request(st, req);
    }
    let mut fields = match serde_json::to_value(&req) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            return Err(ApiError::new(
                ErrorType::Api,
                "a request that cannot be shown",
            ));
        }
    };
    settings.apply_defaults(&mut fields);
    let req: JobRequest = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::invalid(format!("with the project's defaults: {e}")))?;
    parse_request(st, req)
}

pub fn parse_request(st: &AppState, req: JobRequest) -> ApiResult<JobSpec> {
    req.parse(st.limits())
        .map_err(|e| ApiError::invalid(e.to_string()))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the job to end before answering.
    #[param(minimum = 0, maximum = 300)]
    wait: Option<f64>,
}

const MAX_WAIT_SECONDS: f64 = 300.0;

pub(crate) fn wait_duration(q: &WaitQuery) -> ApiResult<Option<Duration>> {
    match q.wait {
        None => Ok(None),
        Some(w) if w.is_finite() && (0.0..=MAX_WAIT_SECONDS).contains(&w) => {
            Ok(Some(Duration::from_secs_f64(w)))
        }
        Some(_) => Err(ApiError::invalid(format!(
            "wait must be between 0 and {MAX_WAIT_SECONDS} seconds"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    params(WaitQuery, ("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header, description = "Submit once: a repeat with the same body answers with the same job.")),
    request_body = CreateJob,
    responses(
        (status = 201, description = "Queued (or, with ?wait, finished)", body = wire::Job),
        (status = 200, description = "An earlier request with this Idempotency-Key made this job", body = wire::Job),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn create_job(
    State(st): State<AppState>,
    caller: JobsWrite,
    Params(q): Params<WaitQuery>,
    headers: HeaderMap,
    body: Body<serde_json::Value>,
) -> ApiResult<Response> {
    let wait = wait_duration(&q)?;
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("invalid JSON body: {e}"));
    let spec = if body.value.get("agent").is_some() {
        let req = serde_json::from_value(body.value).map_err(invalid)?;
        crate::agents::agent_spec(&st, &caller, req).await?.0
    } else {
        let req: JobRequest = serde_json::from_value(body.value).map_err(invalid)?;
        prepare(&st, &caller, req).await?
    };
    let idem = idempotency(&headers, "POST /v1/jobs", &body.raw)?;
    let (status, record, replayed) = match submit(&st, &caller, spec, idem).await? {
        Inserted::New(r) => (StatusCode::CREATED, r, false),
        Inserted::Replayed(r) => (StatusCode::OK, r, true),
        Inserted::KeyReused => {
            return Err(ApiError::key_reused());
        }
    };
    let record = match wait {
        Some(w) if !record.state.is_terminal() => st.engine().wait_for(record.id, w).await?,
        _ => record,
    };
    let mut resp = (status, Json(wire::Job::new(&record))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/jobs/{}", record.id)) {
        resp.headers_mut().insert("location", loc);
    }
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(Target::on(resp, record.id.to_string(), None))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "The job, with its attempts", body = wire::Job),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get_job(
    State(st): State<AppState>,
    caller: JobsRead,
    Path(id): Path<String>,
) -> ApiResult<Json<wire::Job>> {
    let record = job_of(&st, &caller, &id).await?;
    let attempts = st.engine().store().list_attempts(record.id).await?;
    Ok(Json(wire::Job::new(&record).with_attempts(&attempts)))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    pub(crate) state: Option<String>,
    /// Only jobs whose last error has this type.
    error_type: Option<String>,
    /// Only jobs of this session.
    session_id: Option<String>,
    /// Page size (20).
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page; empty is the first page.
    #[param(value_type = Option<wire::params::Cursor>)]
    cursor: Option<String>,
}

/// The dead-letter list's parameters: a job list's, without `state`.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadQuery {
    /// Only jobs whose last error has this type.
    error_type: Option<String>,
    /// Only jobs of this session.
    session_id: Option<String>,
    /// Page size (20).
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page; empty is the first page.
    #[param(value_type = Option<wire::params::Cursor>)]
    cursor: Option<String>,
}

impl From<DeadQuery> for ListQuery {
    fn from(q: DeadQuery) -> Self {
        Self {
            state: Some("dead".into()),
            error_type: q.error_type,
            session_id: q.session_id,
            limit: q.limit,
            cursor: q.cursor,
        }
    }
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "Jobs, newest first", body = wire::Page<wire::Job>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_jobs(
    State(st): State<AppState>,
    caller: JobsRead,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<wire::Page<wire::Job>>> {
    list(&st, &caller, q, false).await
}

/// One page of jobs; `with_attempts` adds every attempt (and so every error) to each.
pub(crate) async fn list(
    st: &AppState,
    caller: &Caller,
    q: ListQuery,
    with_attempts: bool,
) -> ApiResult<Json<wire::Page<wire::Job>>> {
    let state = q
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "state must be one of queued, running, completed, failed, cancelled, dead; got {s:?}"
                ))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 200"));
    }
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            JobId::parse(c).map_err(|_| {
                ApiError::invalid(format!("cursor {c:?} is not a cursor this API returned"))
            })
        })
        .transpose()?;
    let filter = JobFilter {
        project_id: caller.project.clone(),
        state,
        session_id: q.session_id,
        error_type: q.error_type,
        conversation: None,
        before,
        limit: limit + 1,
    };
    let mut jobs = st.engine().store().list_jobs(&filter).await?;
    let has_more = jobs.len() > limit as usize;
    jobs.truncate(limit as usize);
    let next_cursor = if has_more {
        jobs.last().map(|j| j.id.to_string())
    } else {
        None
    };
    let mut data = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let mut view = wire::Job::new(j);
        if with_attempts {
            let attempts = st.engine().store().list_attempts(j.id).await?;
            view = view.with_attempts(&attempts);
        }
        data.push(view);
    }
    Ok(Json(wire::Page::of(data, has_more, next_cursor)))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, description = "Cancelled before it started", body = wire::Job),
        (status = 202, description = "Running: its process group is being killed", body = wire::Job),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn cancel_job(
    State(st): State<AppState>,
    caller: JobsWrite,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = job_of(&st, &caller, &id).await?;
    let record = st.engine().cancel(job.id).await?;
    let status = if record.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(wire::Job::new(&record))).into_response())
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a larger `seq`.
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    after: Option<i64>,
    /// `json`: pages of events instead of a stream.
    #[param(value_type = Option<EventsFormat>)]
    format: Option<String>,
    /// Page size of JSON pages (500).
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// How events are answered.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum EventsFormat {
    #[schema(rename = "json")]
    Json,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path), EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, description = "Resume a stream after this event.")),
    responses(
        (status = 200, description = "The job's events: server-sent events (every event, then live), or pages of JSON with format=json or Accept: application/json",
            content((wire::EventList = "application/json"), (wire::SseEvent = "text/event-stream"))),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn job_events(
    State(st): State<AppState>,
    caller: JobsRead,
    Path(id): Path<String>,
    Params(q): Params<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Existence first, so a bad id is a 404 rather than an empty stream.
    let id = job_of(&st, &caller, &id).await?.id;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event sequence number"))
        })
        .transpose()?;
    let after = last_event_id.or(q.after).unwrap_or(0).max(0);
    let wants_json = q.format.as_deref() == Some("json")
        || headers
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/event-stream"));
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    if let Some(f) = q.format.as_deref().filter(|f| *f != "json") {
        return Err(ApiError::invalid(format!(
            "format must be json (or absent, for a stream); got {f:?}"
        )));
    }
    if wants_json {
        let events = st
            .engine()
            .store()
            .list_events(id, after, limit + 1)
            .await?;
        let has_more = events.len() > limit as usize;
        let events = &events[..events.len().min(limit as usize)];
        return Ok(Json(wire::EventList {
            object: wire::ListTag::Tag,
            data: events.iter().map(wire::Event::new).collect(),
            has_more,
            next_after: events.last().map(|e| e.seq),
        })
        .into_response());
    }
    let stream = follow(st, id, after).map(|item| {
        Ok::<_, Infallible>(match item {
            Followed::Event(e) => Event::default()
                .id(e.seq.to_string())
                .event(e.kind.clone())
                .data(e.data.to_string()),
            Followed::Failed(message) => Event::default().event("error").data(
                json!({"type": "error", "error": {"type": "api_error", "message": message}})
                    .to_string(),
            ),
        })
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path)),
    responses((status = 200, description = "A Claude session: its stored transcript and jobs", body = wire::Session),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get_session(
    State(st): State<AppState>,
    caller: JobsRead,
    Path(id): Path<String>,
) -> ApiResult<Json<wire::Session>> {
    let sid = baton_core::SessionId::parse(&id)
        .map_err(|_| ApiError::not_found(format!("no session with id {id:?}")))?;
    let store = st.engine().store();
    let jobs = store
        .list_jobs(&JobFilter {
            project_id: caller.project.clone(),
            session_id: Some(sid.to_string()),
            limit: 100,
            ..JobFilter::default()
        })
        .await?;
    let stored = match store.get_session(&caller.project, &sid.to_string()).await {
        Ok(s) => Some(s),
        Err(baton_store::StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if jobs.is_empty() && stored.is_none() {
        return Err(ApiError::not_found(format!("no session with id {id:?}")));
    }
    let running = jobs
        .iter()
        .find(|j| j.state == JobState::Running)
        .map(|j| j.id.to_string());
    Ok(Json(wire::Session {
        id: sid.to_string(),
        object: wire::SessionTag::Tag,
        project_id: caller.project.to_string(),
        transcript_stored: stored.is_some(),
        transcript_bytes: stored.as_ref().map(|s| s.transcript.len() as u64),
        created_at: stored.as_ref().map(|s| wire::timestamp(s.created_at)),
        updated_at: stored.as_ref().map(|s| wire::timestamp(s.updated_at)),
        last_job_id: stored.as_ref().and_then(|s| s.last_job_id.clone()),
        running_job_id: running,
        job_ids: jobs.iter().map(|j| j.id.to_string()).collect(),
    }))
}
