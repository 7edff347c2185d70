//! Agents over HTTP: `/v1/agents` (saved, versioned job configurations of a project), a
//! run of one (`POST /v1/agents/{name}/runs`), and the task-agent call: `POST /` with
//! `X-Baton-Agent: <project>/<agent>` (or the header `X-Clrk-TaskAgent`), whose body is
//! the input and whose answer is the output.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::{AgentDefinition, AgentError, AgentRef, JobState, ProjectId};
use baton_store::{AgentRecord, AgentSave, Inserted, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Target;
use crate::auth::{AgentsRead, AgentsWrite, Caller, JobsWrite};
use crate::compat::inserted;
use crate::dead::idempotent;
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::extract::Body;
use crate::jobs::{Params, WaitQuery, idempotency, prepare, submit, wait_duration};
use crate::{AppState, wire};

/// An agent as the API shows it: one version.
#[derive(Serialize, ToSchema)]
pub struct Agent {
    name: String,
    #[schema(value_type = String, pattern = "^agent$")]
    object: &'static str,
    version: u32,
    description: String,
    prompt_template: String,
    #[schema(value_type = Object)]
    options: Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    input_schema: Option<Value>,
    #[schema(value_type = Option<Object>)]
    output_schema: Option<Value>,
    /// The media type of the output.
    content_type: String,
    /// Written as `CLAUDE.md` into each run's workspace.
    claude_md: Option<String>,
    /// Files placed in each run's workspace (relative path → contents).
    #[schema(value_type = Object)]
    files: std::collections::BTreeMap<String, String>,
    /// The command that checks each successful result.
    verify: Option<baton_core::Verify>,
    /// Git repositories each run gets its own checkout of.
    repos: Vec<baton_core::agent::Repo>,
    /// CLI processes kept started for its runs on each node.
    warm_pool: u32,
    /// What its runs may cost a UTC day and month.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<baton_core::Budget>,
    /// When this version was saved.
    created_at: String,
}

impl Agent {
    fn new(r: &AgentRecord) -> ApiResult<Self> {
        let d = definition(r)?;
        Ok(Self {
            name: r.name.clone(),
            object: "agent",
            version: r.version,
            content_type: d.content_type().to_string(),
            description: d.description,
            prompt_template: d.prompt_template,
            options: d.options,
            input_schema: d.input_schema,
            output_schema: d.output_schema,
            claude_md: d.claude_md,
            files: d.files,
            verify: d.verify,
            repos: d.repos,
            warm_pool: d.warm_pool.unwrap_or(0),
            budget: d.budget,
            created_at: wire::timestamp(r.created_at),
        })
    }
}

fn definition(r: &AgentRecord) -> ApiResult<AgentDefinition> {
    serde_json::from_value(r.definition.clone()).map_err(|e| {
        ApiError::new(
            ErrorType::Api,
            format!("agent {} version {} cannot be read: {e}", r.name, r.version),
        )
    })
}

/// An agent's definition; `name` is required when creating and, on a `PUT`, must be the
/// path's if given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    description: String,
    /// A minijinja template over `input`, e.g. `Find {{ input.want }}`.
    #[schema(min_length = 1)]
    prompt_template: String,
    /// Job options, as in `POST /v1/jobs` (without `prompt`, `session`, `metadata` or
    /// `json_schema`).
    #[serde(default)]
    #[schema(value_type = Object)]
    options: Map<String, Value>,
    /// A JSON Schema the run's input must satisfy.
    #[schema(value_type = Option<Object>)]
    input_schema: Option<Value>,
    /// A JSON Schema of the output (the CLI's structured output).
    #[schema(value_type = Option<Object>)]
    output_schema: Option<Value>,
    /// The output's media type.
    content_type: Option<String>,
    /// Written as `CLAUDE.md` into each run's workspace (the project context the CLI
    /// reads).
    claude_md: Option<String>,
    /// Small files placed in each run's workspace: relative path → contents (64 at most,
    /// 1 MiB in all with `claude_md`).
    #[serde(default)]
    #[schema(value_type = Object)]
    files: std::collections::BTreeMap<String, String>,
    /// A command run in the workspace after each successful result, with `{"input",
    /// "output", "result"}` on its stdin: its stdout becomes the output, a non-zero exit
    /// fails the attempt (`verification_failed`).
    verify: Option<baton_core::Verify>,
    /// Local git repositories (inside a workspace root): each run works in its own clone,
    /// at `ref` (default `HEAD`), in the workspace's `dir` (default: the folder's name).
    #[serde(default)]
    #[schema(max_items = 16)]
    repos: Vec<baton_core::agent::Repo>,
    /// CLI processes to keep started for this agent's options on each node that runs
    /// jobs (0 to 16; only for an agent without claude_md, files, verify or repos).
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 0, maximum = 16)]
    warm_pool: Option<u32>,
    /// What the agent's runs may cost a UTC day and month (every version's runs count;
    /// the version a job runs says the limit).
    budget: Option<baton_core::Budget>,
}

impl AgentBody {
    fn definition(self) -> AgentDefinition {
        AgentDefinition {
            description: self.description,
            prompt_template: self.prompt_template,
            options: self.options,
            input_schema: self.input_schema,
            output_schema: self.output_schema,
            content_type: self.content_type,
            claude_md: self.claude_md,
            files: self.files,
            verify: self.verify,
            repos: self.repos,
            warm_pool: self.warm_pool,
            budget: self.budget,
        }
    }
}

fn refused(e: AgentError) -> ApiError {
    match e {
        AgentError::Invalid(m) => ApiError::invalid(m),
        AgentError::Input { pointer, message } => ApiError {
            detail: Some(json!({"pointer": pointer})),
            ..ApiError::invalid(format!("input{pointer}: {message}"))
        },
        AgentError::Template(m) => ApiError {
            detail: Some(json!({"error_type": "template_error"})),
            ..ApiError::invalid(format!("template_error: {m}"))
        },
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no agent named {name:?}"))
}

/// A store error about agent `name` (at `version`, when one was asked for).
fn agent_error(name: &str, version: Option<u32>, e: StoreError) -> ApiError {
    match (e, version) {
        (StoreError::NotFound(_), Some(v)) => {
            ApiError::not_found(format!("no agent named {name:?} with a version {v}"))
        }
        (StoreError::NotFound(_), None) => not_found(name),
        (other, _) => other.into(),
    }
}

fn checked(st: &AppState, body: AgentBody) -> ApiResult<AgentDefinition> {
    let d = body.definition();
    d.check(st.limits()).map_err(refused)?;
    for repo in &d.repos {
        crate::jobs::check_repo(st, repo)?;
        let path = std::path::Path::new(&repo.path);
        if !(path.join(".git").exists()
            || path.join("HEAD").is_file() && path.join("objects").is_dir())
        {
            return Err(ApiError::invalid(format!(
                "repos: {} is not a git repository",
                repo.path
            )));
        }
    }
    Ok(d)
}

#[utoipa::path(post, path = "/v1/agents", tag = "agents",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = AgentBody,
    responses((status = 201, description = "Created, as version 1", body = Agent),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn create_agent(
    State(st): State<AppState>,
    caller: AgentsWrite,
    headers: HeaderMap,
    body: Body<AgentBody>,
) -> ApiResult<Response> {
    let name = body
        .value
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    baton_core::agent::check_name(&name).map_err(refused)?;
    let d = checked(&st, body.value)?;
    policed(&st, &caller.project, &d).await?;
    let resp = idempotent(
        &st,
        &caller,
        &headers,
        "POST /v1/agents",
        &body.raw,
        || async {
            let record = st
                .engine()
                .store()
                .save_agent(
                    &caller.project,
                    &name,
                    &json_of(&d),
                    AgentSave::Create,
                    st.engine().now_ms(),
                )
                .await?;
            Ok((StatusCode::CREATED, json_of(&Agent::new(&record)?), None))
        },
    )
    .await?;
    warm_agents_soon(&st);
    Ok(Target::on(resp, name, None))
}

fn json_of<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, description = "The project's agents, by name, each at its newest version", body = wire::Page<Agent>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_agents(
    State(st): State<AppState>,
    caller: AgentsRead,
) -> ApiResult<Json<wire::Page<Agent>>> {
    let records = st.engine().store().list_agents(&caller.project).await?;
    Ok(Json(wire::Page::whole(
        records.iter().map(Agent::new).collect::<ApiResult<_>>()?,
    )))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A saved version (default: the newest).
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    #[param(minimum = 1)]
    version: Option<u32>,
}

#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents", params(("name" = String, Path), VersionQuery),
    responses((status = 200, description = "The agent", body = Agent),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get_agent(
    State(st): State<AppState>,
    caller: AgentsRead,
    Path(name): Path<String>,
    Params(q): Params<VersionQuery>,
) -> ApiResult<Json<Agent>> {
    let record = st
        .engine()
        .store()
        .get_agent(&caller.project, &name, q.version)
        .await
        .map_err(|e| agent_error(&name, q.version, e))?;
    Ok(Json(Agent::new(&record)?))
}

#[utoipa::path(put, path = "/v1/agents/{name}", tag = "agents", params(("name" = String, Path)),
    request_body = AgentBody,
    responses((status = 200, description = "Saved as a new version", body = Agent),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn update_agent(
    State(st): State<AppState>,
    caller: AgentsWrite,
    Path(name): Path<String>,
    body: Body<AgentBody>,
) -> ApiResult<Json<Agent>> {
    if body.value.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::invalid(
            "name differs from the path's; an agent cannot be renamed",
        ));
    }
    let d = checked(&st, body.value)?;
    policed(&st, &caller.project, &d).await?;
    let record = st
        .engine()
        .store()
        .save_agent(
            &caller.project,
            &name,
            &json_of(&d),
            AgentSave::Update,
            st.engine().now_ms(),
        )
        .await
        .map_err(|e| agent_error(&name, None, e))?;
    warm_agents_soon(&st);
    Ok(Json(Agent::new(&record)?))
}

/// An agent deleted.
#[derive(Serialize, ToSchema)]
pub struct AgentDeleted {
    name: String,
    #[schema(value_type = String, pattern = "^agent$")]
    object: &'static str,
    deleted: bool,
}

#[utoipa::path(delete, path = "/v1/agents/{name}", tag = "agents", params(("name" = String, Path)),
    responses((status = 200, description = "Deleted (its runs keep their record of it)", body = AgentDeleted),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn delete_agent(
    State(st): State<AppState>,
    caller: AgentsWrite,
    Path(name): Path<String>,
) -> ApiResult<Json<AgentDeleted>> {
    st.engine()
        .store()
        .delete_agent(&caller.project, &name, st.engine().now_ms())
        .await
        .map_err(|e| agent_error(&name, None, e))?;
    warm_agents_soon(&st);
    Ok(Json(AgentDeleted {
        name,
        object: "agent",
        deleted: true,
    }))
}

#[utoipa::path(get, path = "/v1/agents/{name}/versions", tag = "agents", params(("name" = String, Path)),
    responses((status = 200, description = "Every saved version, newest first", body = wire::Page<Agent>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn agent_versions(
    State(st): State<AppState>,
    caller: AgentsRead,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Page<Agent>>> {
    let records = st
        .engine()
        .store()
        .agent_versions(&caller.project, &name)
        .await
        .map_err(|e| agent_error(&name, None, e))?;
    Ok(Json(wire::Page::whole(
        records.iter().map(Agent::new).collect::<ApiResult<_>>()?,
    )))
}

/// A run of an agent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The input the template renders over, checked against `input_schema`.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// Run this saved version (default: the newest).
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1)]
    version: Option<u32>,
    /// Where the run's summary is POSTed when it ends.
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
}

/// A job that runs an agent, in `POST /v1/jobs`: the agent and its input, and what a
/// run may set beside the agent's options.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentJobRequest {
    /// The agent's name, in the caller's project.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    agent: String,
    /// The input the agent's template renders over.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// A saved version (default: the newest).
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1)]
    version: Option<u32>,
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: Option<i32>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1000, maximum = 86400000)]
    timeout_ms: Option<i64>,
    /// Where the run's summary is POSTed when it ends.
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
}

/// The job spec of a run of an agent: its input checked and rendered, its options with
/// the run's own settings over them and the project's defaults under them, and the
/// version it runs recorded.
pub(crate) async fn agent_spec(
    st: &AppState,
    caller: &Caller,
    req: AgentJobRequest,
) -> ApiResult<(baton_core::JobSpec, AgentDefinition)> {
    let record = st
        .engine()
        .store()
        .get_agent(&caller.project, &req.agent, req.version)
        .await
        .map_err(|e| agent_error(&req.agent, req.version, e))?;
    let d = definition(&record)?;
    let prompt = d.render(&req.input).map_err(refused)?;
    let mut request = d.request(prompt).map_err(refused)?;
    request.priority = req.priority.or(request.priority);
    request.metadata = req.metadata.or(request.metadata);
    request.max_attempts = req.max_attempts.or(request.max_attempts);
    request.timeout_ms = req.timeout_ms.or(request.timeout_ms);
    request.callback_url = req.callback_url.or(request.callback_url);
    let mut spec = prepare(st, caller, request).await?;
    with_workspace(&mut spec, &d, &req.input);
    spec.agent = Some(AgentRef {
        name: record.name,
        version: record.version,
    });
    Ok((spec, d))
}

/// Queues a run of `name` (at `version`) over `input` for `caller`.
async fn run(
    st: &AppState,
    caller: &Caller,
    req: AgentJobRequest,
    idem: Option<(String, String)>,
) -> ApiResult<(baton_store::JobRecord, AgentDefinition, bool)> {
    let (spec, d) = agent_spec(st, caller, req).await?;
    let (job, replayed) = match submit(st, caller, spec, idem).await? {
        Inserted::New(j) => (j, false),
        other => (inserted(other)?, true),
    };
    Ok((job, d, replayed))
}

pub(crate) fn run_of(agent: &str, input: Value, version: Option<u32>) -> AgentJobRequest {
    AgentJobRequest {
        agent: agent.to_string(),
        input,
        version,
        priority: None,
        metadata: None,
        max_attempts: None,
        timeout_ms: None,
        callback_url: None,
    }
}

#[utoipa::path(post, path = "/v1/agents/{name}/runs", tag = "agents",
    params(("name" = String, Path), WaitQuery, ("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = RunRequest,
    responses((status = 201, description = "Queued (or, with ?wait, finished)", body = wire::Job),
        (status = 200, description = "An earlier request with this Idempotency-Key made this job", body = wire::Job),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn run_agent(
    State(st): State<AppState>,
    caller: JobsWrite,
    Path(name): Path<String>,
    Params(q): Params<WaitQuery>,
    headers: HeaderMap,
    body: Body<RunRequest>,
) -> ApiResult<Response> {
    let wait = wait_duration(&q)?;
    let route = format!("POST /v1/agents/{name}/runs");
    let idem = idempotency(&headers, &route, &body.raw)?;
    let req = AgentJobRequest {
        callback_url: body.value.callback_url,
        ..run_of(&name, body.value.input, body.value.version)
    };
    let (job, _, replayed) = run(&st, &caller, req, idem).await?;
    let job = match wait {
        Some(w) if !job.state.is_terminal() => st.engine().wait_for(job.id, w).await?,
        _ => job,
    };
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, Json(wire::Job::new(&job))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        resp.headers_mut().insert("location", loc);
    }
    Ok(Target::on(resp, job.id.to_string(), None))
}

/// How long the task-agent call waits when the agent sets no `timeout_ms`.
const CALL_TIMEOUT: Duration = Duration::from_secs(100);

/// `POST /`: the task-agent call. The body is the agent's input; the answer is its output
/// (what `verify` printed, else the structured output with an `output_schema`, else the
/// result text) with the
/// agent's content type, once the run ends, within the agent's timeout (queueing
/// included; 100 s by default).
#[utoipa::path(post, path = "/", tag = "agents",
    params(("X-Baton-Agent" = String, Header, pattern = "^[a-z0-9][a-z0-9_-]{0,62}/[a-z0-9][a-z0-9_-]{0,62}$", description = "<project>/<agent>; X-Clrk-TaskAgent is the same"),
        ("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header),
        ("Baton-Detach" = Option<wire::params::Detach>, Header, description = "true: the job keeps running if the caller hangs up before the answer (else it is cancelled); the answer is then 202 at once, with Baton-Job-Id")),
    request_body(content = Object, description = "The agent's input"),
    responses((status = 200, description = "The agent's output, with its content type", body = Object),
        (status = 202, description = "Detached: Baton-Job-Id at once; the body, when the run ends, is the output or the error envelope"),
        (status = 502, description = "The run failed (the error names the job)", body = wire::ErrorBody),
        (status = 504, description = "The run did not end within the agent's timeout; it keeps running", body = wire::ErrorBody),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn call(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<Value>,
) -> ApiResult<Response> {
    let named = ["x-baton-agent", "x-clrk-taskagent"]
        .iter()
        .find_map(|h| headers.get(*h))
        .ok_or_else(|| {
            ApiError::invalid("X-Baton-Agent (or X-Clrk-TaskAgent) is required: <project>/<agent>")
        })?
        .to_str()
        .map_err(|_| ApiError::invalid("X-Baton-Agent must be <project>/<agent>"))?
        .to_string();
    let (project, name) = named
        .split_once('/')
        .ok_or_else(|| ApiError::invalid("X-Baton-Agent must be <project>/<agent>"))?;
    let project = ProjectId::parse(project).map_err(|_| not_found(name))?;
    // Another project's agent is answered as one that does not exist.
    if !caller.sees(&project) {
        return Err(not_found(name));
    }
    let caller = Caller {
        project,
        ..caller.0.clone()
    };
    let idem = idempotency(&headers, &format!("POST / {named}"), &body.raw)?;
    let detached = crate::hangup::detached(&headers)?;
    let (job, d, _) = run(&st, &caller, run_of(name, body.value, None), idem).await?;
    let wait = if d.options.contains_key("timeout_ms") {
        Duration::from_millis(job.spec.schedule.timeout_ms)
    } else {
        CALL_TIMEOUT
    };
    let job_id = job.id;
    let content_type = d.content_type().to_string();
    let finish = call_answer(st.clone(), job_id, wait, d);
    let resp =
        crate::hangup::answer((&st, &caller, "/"), job_id, detached, &content_type, finish).await?;
    Ok(Target::on(resp, job_id.to_string(), Some(&caller.project)))
}

/// The task-agent call's answer, when its run ends (or its wait does).
async fn call_answer(
    st: AppState,
    job: baton_core::JobId,
    wait: Duration,
    d: AgentDefinition,
) -> ApiResult<Response> {
    let job = st.engine().wait_for(job, wait).await?;
    let view = wire::Job::new(&job);
    let detail = json!({"job_id": job.id.to_string(), "job_state": job.state.as_str()});
    let resp = match job.state {
        JobState::Completed => {
            let body = if let Some(verified) = view.verified_output.as_str() {
                verified.to_string()
            } else if d.output_schema.is_some() {
                view.structured_output.to_string()
            } else {
                view.result.as_str().unwrap_or_default().to_string()
            };
            let mut resp = (StatusCode::OK, body).into_response();
            if let Ok(ct) = HeaderValue::from_str(d.content_type()) {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, ct);
            }
            resp
        }
        s if s.is_terminal() => {
            return Err(ApiError {
                detail: Some(detail),
                ..ApiError::new(
                    ErrorType::BadGateway,
                    format!(
                        "the agent's run ended {s}: {}",
                        view.error
                            .as_ref()
                            .map_or("no error message", |e| e.message.as_str())
                    ),
                )
            });
        }
        _ => {
            return Err(ApiError {
                detail: Some(detail),
                ..ApiError::new(
                    ErrorType::GatewayTimeout,
                    "the agent's run did not end within its timeout; it keeps running, follow it at /v1/jobs/{job_id}",
                )
            });
        }
    };
    Ok(resp)
}

/// How long an agent's idle warm process is kept before it is replaced.
const WARM_IDLE: Duration = Duration::from_secs(600);

/// Makes this node's agent warm pools what the saved agents ask for (each other node
/// catches up within its next step). Returns how many pools are wanted.
pub async fn warm_agents_step(st: &AppState) -> ApiResult<usize> {
    let mut wanted = Vec::new();
    for r in st.engine().store().warm_agents().await? {
        let Ok(d) = definition(&r) else { continue };
        let Some(size) = d.warm_pool.filter(|n| *n > 0) else {
            continue;
        };
        // The options a run gets (the project's defaults and policy applied) and its
        // sandbox, so its runs match.
        let spec = match policed(st, &r.project_id, &d).await {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(agent = %r.name, project = %r.project_id, error = %e.message, "an agent's warm pool cannot be made");
                continue;
            }
        };
        wanted.push((
            format!("{}/{}", r.project_id, r.name),
            baton_engine::WarmPoolConfig {
                options: spec.options,
                size: size as usize,
                idle: WARM_IDLE,
                sandbox: spec.sandbox,
            },
        ));
    }
    st.engine().set_agent_warm_pools(&wanted);
    Ok(wanted.len())
}

/// What a run of `d` in `project` would be, its project's defaults and policy applied:
/// how an agent is checked against the policy when it is saved (it is again at each run,
/// so a narrowed policy applies to agents saved before), and what its warm pool runs.
async fn policed(
    st: &AppState,
    project: &baton_core::ProjectId,
    d: &AgentDefinition,
) -> ApiResult<baton_core::JobSpec> {
    let caller = Caller::baton(project.clone());
    let request = d.request("a run".into()).map_err(refused)?;
    let mut spec = prepare(st, &caller, request).await?;
    with_workspace(&mut spec, d, &Value::Null);
    crate::policy::police(st, project, &mut spec).await?;
    Ok(spec)
}

/// What a run of `d` over `input` brings to its workspace: its files, its repositories
/// and its check.
fn with_workspace(spec: &mut baton_core::JobSpec, d: &AgentDefinition, input: &Value) {
    spec.files = d.workspace_files();
    spec.repos = d.repos.clone();
    spec.verify = d.verify.as_ref().map(|v| baton_core::VerifyRun {
        command: v.command.clone(),
        input: input.clone(),
    });
}

/// Runs [`warm_agents_step`] now, off the request.
fn warm_agents_soon(st: &AppState) {
    let st = st.clone();
    tokio::spawn(async move {
        if let Err(e) = warm_agents_step(&st).await {
            tracing::warn!(error = %e.message, "agent warm pools not updated");
        }
    });
}
