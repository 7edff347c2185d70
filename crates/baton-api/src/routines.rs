//! Routines over HTTP: `/v1/routines` (a saved prompt with an agent or options, a daily
//! allowance, paused or active), their triggers (`api`, `cron`, `webhook`, `github`), the
//! runs they made, the fire route of the hosted API
//! (`POST /v1/claude_code/routines/{trig_id}/fire`), and the cron step.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::routine::{self, FireContext, RoutineDefinition, TriggerConfig};
use baton_core::{AgentError, CronSchedule, JobId, JobSpec, Overlap, SessionId, SessionMode};
use baton_store::{
    Fire, FireOutcome, FireRecord, Fired, NewJob, NewTrigger, RoutineRecord, StoreError,
    TriggerRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Target;
use crate::auth::{Caller, RoutinesRead, RoutinesWrite};
use crate::dead::idempotent;
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::extract::Body;
use crate::jobs::{Params, admit, prepare};
use crate::{AppState, wire};

/// A slot found due more than this late was missed (the node was down): it fires only
/// with `catch_up`.
pub const CRON_GRACE_MS: i64 = 60_000;
/// Upcoming fire times shown for a cron trigger.
const UPCOMING: usize = 5;

/// A routine as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct Routine {
    /// `rtn_…`
    id: String,
    #[schema(value_type = String, pattern = "^routine$")]
    object: &'static str,
    name: String,
    description: String,
    prompt: String,
    agent: Option<String>,
    agent_version: Option<u32>,
    #[schema(value_type = Object)]
    input: Map<String, Value>,
    #[schema(value_type = Object)]
    options: Map<String, Value>,
    daily_allowance: u32,
    callback_url: Option<String>,
    /// What its runs may cost a UTC day and month.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<baton_core::Budget>,
    paused: bool,
    triggers: Vec<Trigger>,
    created_at: String,
    updated_at: String,
}

/// A trigger as the API shows it (never its secret or token).
#[derive(Serialize, ToSchema)]
pub struct Trigger {
    /// `trig_…`
    id: String,
    #[schema(value_type = String, pattern = "^trigger$")]
    object: &'static str,
    routine_id: String,
    /// `api`, `cron`, `webhook` or `github`.
    #[serde(rename = "type")]
    kind: String,
    /// The settings it was made with.
    #[schema(value_type = Object)]
    config: Value,
    /// Where an API trigger is fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    fire_url: Option<String>,
    /// Where a webhook or GitHub trigger is called.
    #[serde(skip_serializing_if = "Option::is_none")]
    hook_url: Option<String>,
    /// A cron trigger's next fire times.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    upcoming: Vec<String>,
    created_at: String,
}

impl Trigger {
    fn new(st: &AppState, t: &TriggerRecord) -> Self {
        let base = st.public_url();
        let mut upcoming = Vec::new();
        if let Ok(TriggerConfig::Cron {
            schedule, timezone, ..
        }) = serde_json::from_value(t.config.clone())
            && let Ok(s) = CronSchedule::parse(&schedule, &timezone)
        {
            let from = t.next_fire_at.map_or(st.engine().now_ms(), |n| n - 1);
            upcoming = s
                .upcoming(from, UPCOMING)
                .into_iter()
                .map(wire::timestamp)
                .collect();
        }
        Self {
            id: t.id.clone(),
            object: "trigger",
            routine_id: t.routine_id.clone(),
            fire_url: (t.kind == "api")
                .then(|| format!("{base}/v1/claude_code/routines/{}/fire", t.id)),
            hook_url: matches!(t.kind.as_str(), "webhook" | "github")
                .then(|| format!("{base}/v1/hooks/{}", t.id)),
            kind: t.kind.clone(),
            config: t.config.clone(),
            upcoming,
            created_at: wire::timestamp(t.created_at),
        }
    }
}

fn definition(r: &RoutineRecord) -> ApiResult<RoutineDefinition> {
    serde_json::from_value(r.definition.clone()).map_err(|e| {
        ApiError::new(
            ErrorType::Api,
            format!("routine {} cannot be read: {e}", r.id),
        )
    })
}

impl Routine {
    fn new(st: &AppState, r: &RoutineRecord, triggers: &[TriggerRecord]) -> ApiResult<Self> {
        let d = definition(r)?;
        Ok(Self {
            id: r.id.clone(),
            object: "routine",
            name: r.name.clone(),
            daily_allowance: d.daily_allowance(),
            description: d.description,
            prompt: d.prompt,
            agent: d.agent,
            agent_version: d.agent_version,
            input: d.input,
            options: d.options,
            callback_url: d.callback_url,
            budget: d.budget,
            paused: r.paused,
            triggers: triggers.iter().map(|t| Trigger::new(st, t)).collect(),
            created_at: wire::timestamp(r.created_at),
            updated_at: wire::timestamp(r.updated_at),
        })
    }
}

/// A routine's definition. `name` is required when creating; on a `PATCH`, the fields
/// given replace the saved ones (`null` clears one).
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RoutineBody {
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// A minijinja template over `text`, `event`, `routine`, `trigger` and `fired_at`; a
    /// fire's text the prompt does not name follows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    /// An agent of the project each run is a run of (its input: this routine's `input`
    /// with `prompt`, `text` and `event`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    agent_version: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    input: Option<Map<String, Value>>,
    /// Job options (as `POST /v1/jobs`, without `prompt` and `session`) when there is no
    /// agent; neither: the project's defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    options: Option<Map<String, Value>>,
    /// Runs a UTC day before fires are refused (429); 1000 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    daily_allowance: Option<Option<u32>>,
    /// Where each run's summary is POSTed when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    callback_url: Option<Option<String>>,
    /// What its runs may cost a UTC day and month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<baton_core::Budget>)]
    budget: Option<Option<baton_core::Budget>>,
}

fn refused(e: AgentError) -> ApiError {
    match e {
        AgentError::Template(m) => ApiError {
            detail: Some(json!({"error_type": "template_error"})),
            ..ApiError::invalid(format!("template_error: {m}"))
        },
        other => ApiError::invalid(other.to_string()),
    }
}

/// The body (as sent) applied over a saved definition (a `PATCH`), or alone (a `POST`):
/// each field given replaces the saved one, `null` clears it.
fn merged(saved: Option<&RoutineDefinition>, raw: &[u8]) -> ApiResult<RoutineDefinition> {
    let mut fields = match saved.map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    };
    if let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(raw) {
        for (k, v) in patch {
            if v.is_null() {
                fields.remove(&k);
            } else {
                fields.insert(k, v);
            }
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn checked(
    st: &AppState,
    project: &baton_core::ProjectId,
    d: &RoutineDefinition,
) -> ApiResult<()> {
    d.check().map_err(refused)?;
    if let Some(url) = &d.callback_url {
        crate::callbacks::check_destination(st, url).await?;
    }
    if let Some(agent) = &d.agent {
        st.engine()
            .store()
            .get_agent(project, agent, d.agent_version)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => ApiError::invalid(format!(
                    "agent {agent:?}{} does not exist in this project",
                    d.agent_version
                        .map(|v| format!(" version {v}"))
                        .unwrap_or_default()
                )),
                other => other.into(),
            })?;
    } else if !d.options.is_empty() {
        // The options must make a job: checked as a request would be.
        let mut fields = d.options.clone();
        fields.insert("prompt".into(), Value::String("a prompt".into()));
        let req: baton_core::JobRequest = serde_json::from_value(Value::Object(fields))
            .map_err(|e| ApiError::invalid(format!("options: {e}")))?;
        req.clone()
            .parse(st.limits())
            .map_err(|e| ApiError::invalid(format!("options: {e}")))?;
        // And the project's policy must allow it (checked again at each fire).
        let mut spec = prepare(st, &Caller::baton(project.clone()), req).await?;
        crate::policy::police(st, project, &mut spec).await?;
    }
    Ok(())
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

async fn view(st: &AppState, r: &RoutineRecord) -> ApiResult<Routine> {
    let triggers = st
        .engine()
        .store()
        .list_triggers(&r.project_id, &r.id)
        .await?;
    Routine::new(st, r, &triggers)
}

fn routine_error(id: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("no routine with id {id:?}")),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/v1/routines", tag = "routines",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = RoutineBody,
    responses((status = 201, description = "Created (active, with no triggers)", body = Routine),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn create_routine(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    headers: HeaderMap,
    body: Body<RoutineBody>,
) -> ApiResult<Response> {
    if body.value.name.is_none() {
        return Err(ApiError::invalid("name is required"));
    }
    let d = merged(None, &body.raw)?;
    checked(&st, &caller.project, &d).await?;
    let id = new_id("rtn_");
    let resp = idempotent(
        &st,
        &caller,
        &headers,
        "POST /v1/routines",
        &body.raw,
        || async {
            let record = st
                .engine()
                .store()
                .create_routine(
                    &caller.project,
                    &id,
                    &d.name,
                    &json_of(&d),
                    st.engine().now_ms(),
                )
                .await?;
            Ok((
                StatusCode::CREATED,
                json_of(&view(&st, &record).await?),
                None,
            ))
        },
    )
    .await?;
    Ok(Target::on(resp, id, None))
}

fn json_of<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[utoipa::path(get, path = "/v1/routines", tag = "routines",
    responses((status = 200, description = "The project's routines, oldest first", body = wire::Page<Routine>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_routines(
    State(st): State<AppState>,
    caller: RoutinesRead,
) -> ApiResult<Json<wire::Page<Routine>>> {
    let records = st.engine().store().list_routines(&caller.project).await?;
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        out.push(view(&st, r).await?);
    }
    Ok(Json(wire::Page::whole(out)))
}

#[utoipa::path(get, path = "/v1/routines/{id}", tag = "routines", params(("id" = String, Path)),
    responses((status = 200, description = "The routine, with its triggers", body = Routine),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get_routine(
    State(st): State<AppState>,
    caller: RoutinesRead,
    Path(id): Path<String>,
) -> ApiResult<Json<Routine>> {
    let r = st
        .engine()
        .store()
        .get_routine(&caller.project, &id)
        .await
        .map_err(|e| routine_error(&id, e))?;
    Ok(Json(view(&st, &r).await?))
}

#[utoipa::path(patch, path = "/v1/routines/{id}", tag = "routines", params(("id" = String, Path)),
    request_body = RoutineBody,
    responses((status = 200, description = "Changed", body = Routine),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn update_routine(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
    body: Body<RoutineBody>,
) -> ApiResult<Json<Routine>> {
    let store = st.engine().store();
    let saved = store
        .get_routine(&caller.project, &id)
        .await
        .map_err(|e| routine_error(&id, e))?;
    let d = merged(Some(&definition(&saved)?), &body.raw)?;
    checked(&st, &caller.project, &d).await?;
    let r = store
        .update_routine(
            &caller.project,
            &id,
            Some((&d.name, &json_of(&d))),
            None,
            st.engine().now_ms(),
        )
        .await
        .map_err(|e| routine_error(&id, e))?;
    Ok(Json(view(&st, &r).await?))
}

/// A routine deleted.
#[derive(Serialize, ToSchema)]
pub struct RoutineDeleted {
    id: String,
    #[schema(value_type = String, pattern = "^routine$")]
    object: &'static str,
    deleted: bool,
}

#[utoipa::path(delete, path = "/v1/routines/{id}", tag = "routines", params(("id" = String, Path)),
    responses((status = 200, description = "Deleted with its triggers (its runs stay)", body = RoutineDeleted),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn delete_routine(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
) -> ApiResult<Json<RoutineDeleted>> {
    st.engine()
        .store()
        .delete_routine(&caller.project, &id)
        .await
        .map_err(|e| routine_error(&id, e))?;
    Ok(Json(RoutineDeleted {
        id,
        object: "routine",
        deleted: true,
    }))
}

async fn set_paused(st: &AppState, caller: &Caller, id: &str, paused: bool) -> ApiResult<Routine> {
    let store = st.engine().store();
    let was = store
        .get_routine(&caller.project, id)
        .await
        .map_err(|e| routine_error(id, e))?;
    if was.paused == paused {
        return view(st, &was).await;
    }
    let r = store
        .update_routine(
            &caller.project,
            id,
            None,
            Some(paused),
            st.engine().now_ms(),
        )
        .await
        .map_err(|e| routine_error(id, e))?;
    if !paused {
        // Slots passed while paused are not caught up: each schedule starts from now.
        let now = st.engine().now_ms();
        for t in store.list_triggers(&caller.project, id).await? {
            if let Ok(TriggerConfig::Cron {
                schedule, timezone, ..
            }) = serde_json::from_value(t.config.clone())
                && let Ok(s) = CronSchedule::parse(&schedule, &timezone)
            {
                store.reschedule_trigger(&t.id, s.next_after(now)).await?;
            }
        }
    }
    view(st, &r).await
}

#[utoipa::path(post, path = "/v1/routines/{id}/pause", tag = "routines", params(("id" = String, Path)),
    responses((status = 200, description = "Paused: fires are refused (400), cron slots pass", body = Routine),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn pause_routine(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
) -> ApiResult<Json<Routine>> {
    Ok(Json(set_paused(&st, &caller, &id, true).await?))
}

#[utoipa::path(post, path = "/v1/routines/{id}/resume", tag = "routines", params(("id" = String, Path)),
    responses((status = 200, description = "Active again; cron triggers fire from the next slot", body = Routine),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn resume_routine(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
) -> ApiResult<Json<Routine>> {
    Ok(Json(set_paused(&st, &caller, &id, false).await?))
}

/// One fire of a routine and what came of it.
#[derive(Serialize, ToSchema)]
pub struct RoutineRun {
    trigger_id: String,
    /// `queued`, `waiting` (behind the unfinished run), `skipped` (a cron slot that
    /// passed while the previous run went on) or `failed` (its run could not be made:
    /// `error` says why).
    outcome: String,
    job_id: Option<String>,
    /// The job's state, while it is kept.
    job_state: Option<String>,
    /// The run's session, as the fire answered it.
    claude_code_session_id: Option<String>,
    /// A cron fire's slot.
    scheduled_at: Option<String>,
    /// Why a `failed` fire made no run (e.g. `template_error: …`).
    error: Option<String>,
    fired_at: String,
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Page size (50).
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/routines/{id}/runs", tag = "routines", params(("id" = String, Path), RunsQuery),
    responses((status = 200, description = "The routine's fires, newest first", body = wire::Page<RoutineRun>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn routine_runs(
    State(st): State<AppState>,
    caller: RoutinesRead,
    Path(id): Path<String>,
    Params(q): Params<RunsQuery>,
) -> ApiResult<Json<wire::Page<RoutineRun>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let store = st.engine().store();
    store
        .get_routine(&caller.project, &id)
        .await
        .map_err(|e| routine_error(&id, e))?;
    let fires = store.routine_fires(&caller.project, &id, limit).await?;
    let mut runs = Vec::with_capacity(fires.len());
    for (f, state) in fires {
        let session = match &f.job_id {
            Some(job) => session_of_job(&st, job).await,
            None => None,
        };
        runs.push(RoutineRun {
            trigger_id: f.trigger_id,
            outcome: f.outcome.as_str().to_string(),
            job_id: f.job_id,
            job_state: state.map(|s| s.as_str().to_string()),
            claude_code_session_id: session,
            scheduled_at: f
                .fire_key
                .strip_prefix("slot:")
                .and_then(|ms| ms.parse().ok())
                .map(wire::timestamp),
            error: f.error,
            fired_at: wire::timestamp(f.fired_at),
        });
    }
    Ok(Json(wire::Page::whole(runs)))
}

/// A trigger to add: `{"type": "api"}`, `{"type": "cron", "schedule", "timezone",
/// "catch_up", "overlap"}`, `{"type": "webhook", "secret"}` or `{"type": "github",
/// "secret", "events"}`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TriggerBody {
    /// Fired by `POST /v1/claude_code/routines/{trig_id}/fire` with its own token.
    Api,
    /// Fired on a schedule: 5 fields (minute first), 6 (second first), or a nickname
    /// such as `@daily`.
    Cron {
        #[schema(
            example = "*/15 * * * *",
            pattern = r"^ *(@[a-z]+|[^ ]+( +[^ ]+){4,5}) *$"
        )]
        schedule: String,
        /// An IANA zone name (UTC).
        timezone: Option<String>,
        /// After downtime, fire the latest missed slot once (default: none).
        catch_up: Option<bool>,
        /// When the previous run is still going: `skip` (default), `queue` or `allow`.
        overlap: Option<Overlap>,
    },
    /// Fired by `POST /v1/hooks/{trig_id}` signed with `X-Baton-Signature`.
    Webhook {
        /// The HMAC-SHA256 key: 16 to 256 characters.
        #[schema(min_length = 16, max_length = 256)]
        secret: String,
        /// How far `X-Baton-Timestamp` may be from now (300).
        #[schema(minimum = 1, maximum = 86400)]
        tolerance_seconds: Option<u32>,
    },
    /// Fired by GitHub's webhook deliveries to `POST /v1/hooks/{trig_id}`.
    Github {
        /// The webhook's secret: 16 to 256 characters.
        #[schema(min_length = 16, max_length = 256)]
        secret: String,
        /// `event` or `event.action` names (`pull_request.opened`); empty: every event.
        #[serde(default)]
        events: Vec<String>,
    },
}

/// A trigger just added; an API trigger's token is shown here only.
#[derive(Serialize, ToSchema)]
pub struct TriggerCreated {
    #[serde(flatten)]
    trigger: Trigger,
    /// The API trigger's bearer token, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn check_secret(secret: &str) -> ApiResult<()> {
    let n = secret.chars().count();
    if !(16..=256).contains(&n) || secret.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "secret must be 16 to 256 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// A trigger token: `trt_` and 40 random bytes (hex); stored as its SHA-256.
fn issue_token() -> (String, String) {
    let token = format!("trt_{}", crate::keys::random_hex(40));
    let hash = crate::keys::hash(&token);
    (token, hash)
}

#[utoipa::path(post, path = "/v1/routines/{id}/triggers", tag = "routines",
    params(("id" = String, Path), ("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = TriggerBody,
    responses((status = 201, description = "Added; an API trigger's token is in this answer only", body = TriggerCreated),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn add_trigger(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body<TriggerBody>,
) -> ApiResult<Response> {
    let now = st.engine().now_ms();
    let (config, secret) = match body.value {
        TriggerBody::Api => (TriggerConfig::Api, None),
        TriggerBody::Cron {
            schedule,
            timezone,
            catch_up,
            overlap,
        } => (
            TriggerConfig::Cron {
                schedule,
                timezone: timezone.unwrap_or_else(|| "UTC".into()),
                catch_up: catch_up.unwrap_or(false),
                overlap: overlap.unwrap_or_default(),
            },
            None,
        ),
        TriggerBody::Webhook {
            secret,
            tolerance_seconds,
        } => {
            check_secret(&secret)?;
            (
                TriggerConfig::Webhook {
                    tolerance_seconds: tolerance_seconds.unwrap_or(300),
                },
                Some(secret),
            )
        }
        TriggerBody::Github { secret, events } => {
            check_secret(&secret)?;
            (TriggerConfig::Github { events }, Some(secret))
        }
    };
    config
        .check(st.min_cron_interval_ms(), now)
        .map_err(ApiError::invalid)?;
    let next_fire_at = match &config {
        TriggerConfig::Cron {
            schedule, timezone, ..
        } => CronSchedule::parse(schedule, timezone)
            .map_err(ApiError::invalid)?
            .next_after(now),
        _ => None,
    };
    let route = format!("POST /v1/routines/{id}/triggers");
    let resp = idempotent(&st, &caller, &headers, &route, &body.raw, || async {
        let (token, token_hash) = match config {
            TriggerConfig::Api => {
                let (t, h) = issue_token();
                (Some(t), Some(h))
            }
            _ => (None, None),
        };
        let record = st
            .engine()
            .store()
            .add_trigger(
                &caller.project,
                NewTrigger {
                    id: new_id("trig_"),
                    routine_id: id.clone(),
                    kind: config.kind().to_string(),
                    config: json_of(&config),
                    secret,
                    token_hash,
                    next_fire_at,
                },
                routine::MAX_TRIGGERS,
                now,
            )
            .await
            .map_err(|e| routine_error(&id, e))?;
        let stored = TriggerCreated {
            trigger: Trigger::new(&st, &record),
            token: None,
        };
        let first = token.map(|token| {
            json_of(&TriggerCreated {
                trigger: Trigger::new(&st, &record),
                token: Some(token),
            })
        });
        Ok((StatusCode::CREATED, json_of(&stored), first))
    })
    .await?;
    Ok(resp)
}

fn trigger_error(id: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("no trigger with id {id:?}")),
        other => other.into(),
    }
}

/// A trigger removed.
#[derive(Serialize, ToSchema)]
pub struct TriggerDeleted {
    id: String,
    #[schema(value_type = String, pattern = "^trigger$")]
    object: &'static str,
    deleted: bool,
}

#[utoipa::path(delete, path = "/v1/triggers/{id}", tag = "routines", params(("id" = String, Path)),
    responses((status = 200, description = "Removed: its token, schedule or hook stops at once", body = TriggerDeleted),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn delete_trigger(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
) -> ApiResult<Json<TriggerDeleted>> {
    st.engine()
        .store()
        .delete_trigger(&caller.project, &id)
        .await
        .map_err(|e| trigger_error(&id, e))?;
    Ok(Json(TriggerDeleted {
        id,
        object: "trigger",
        deleted: true,
    }))
}

/// An API trigger's new token.
#[derive(Serialize, ToSchema)]
pub struct TriggerToken {
    id: String,
    /// Shown once; the previous token no longer fires.
    token: String,
    fire_url: String,
}

#[utoipa::path(post, path = "/v1/triggers/{id}/token", tag = "routines", params(("id" = String, Path)),
    responses((status = 200, description = "A new token; the old one is revoked", body = TriggerToken),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn rotate_token(
    State(st): State<AppState>,
    caller: RoutinesWrite,
    Path(id): Path<String>,
) -> ApiResult<Json<TriggerToken>> {
    let (token, hash) = issue_token();
    st.engine()
        .store()
        .set_trigger_token(&caller.project, &id, &hash)
        .await
        .map_err(|e| trigger_error(&id, e))?;
    Ok(Json(TriggerToken {
        fire_url: format!("{}/v1/claude_code/routines/{id}/fire", st.public_url()),
        id,
        token,
    }))
}

/// One fire to make.
pub(crate) struct FireRequest<'a> {
    pub routine: &'a RoutineRecord,
    pub trigger: &'a TriggerRecord,
    pub fire_key: String,
    pub text: Option<String>,
    pub event: Value,
    pub outcome: FireOutcome,
}

/// The session id a fire answers with: `session_` and the session's UUID (no dashes).
pub fn session_name(id: SessionId) -> String {
    format!("session_{}", id.to_string().replace('-', ""))
}

async fn session_of_job(st: &AppState, job: &str) -> Option<String> {
    let id = JobId::parse(job).ok()?;
    let job = st.engine().store().get_job(id).await.ok()?;
    job.spec.session.owned_session().map(session_name)
}

/// The job spec of one fire: the routine's prompt rendered over what the fire brings,
/// run by its agent, or with its options (and the project's defaults), in a new session.
async fn fire_spec(st: &AppState, req: &FireRequest<'_>, now: i64) -> ApiResult<JobSpec> {
    let d = definition(req.routine)?;
    let ctx = FireContext {
        routine_id: req.routine.id.clone(),
        trigger_id: req.trigger.id.clone(),
        trigger_type: req.trigger.kind.clone(),
        text: req.text.clone(),
        event: req.event.clone(),
        fired_at: routine::rfc3339(now),
    };
    let prompt = d.render(&ctx).map_err(refused)?;
    let caller = Caller::baton(req.routine.project_id.clone());
    let mut spec = match &d.agent {
        Some(agent) => {
            let input = d.agent_input(&prompt, &ctx);
            let run = crate::agents::run_of(agent, input, d.agent_version);
            crate::agents::agent_spec(st, &caller, run).await?.0
        }
        None => {
            let mut fields = d.options.clone();
            fields.insert("prompt".into(), Value::String(prompt));
            let request: baton_core::JobRequest = serde_json::from_value(Value::Object(fields))
                .map_err(|e| ApiError::invalid(format!("the routine's options: {e}")))?;
            prepare(st, &caller, request).await?
        }
    };
    spec.session = SessionMode::Start {
        id: SessionId::new(),
    };
    if d.callback_url.is_some() {
        spec.callback_url = d.callback_url.clone();
    }
    // Its spend counts against the routine's budget.
    spec.charge.routine_id = Some(req.routine.id.clone());
    admit(st, &caller, &mut spec).await?;
    Ok(spec)
}

/// Makes one fire: its job queued (or waiting, or a skipped slot recorded) with the fire's
/// row, at most once per (trigger, fire key).
pub(crate) async fn fire(st: &AppState, req: FireRequest<'_>) -> ApiResult<Fired> {
    if st.engine().is_draining() {
        return Err(ApiError::new(
            ErrorType::Overloaded,
            "Baton is shutting down and starts no new runs; retry on another node or later",
        ));
    }
    let now = st.engine().now_ms();
    let d = definition(req.routine)?;
    let job = match req.outcome {
        FireOutcome::Skipped => None,
        _ => Some(NewJob {
            id: JobId::new(),
            project_id: req.routine.project_id.clone(),
            spec: fire_spec(st, &req, now).await?,
            run_at: now,
            idempotency: None,
        }),
    };
    let fired = st
        .engine()
        .store()
        .fire(
            Fire {
                project_id: req.routine.project_id.clone(),
                routine_id: req.routine.id.clone(),
                trigger_id: req.trigger.id.clone(),
                fire_key: req.fire_key,
                job,
                outcome: req.outcome,
                allowance: (d.daily_allowance(), routine::utc_day(now).0),
                error: None,
            },
            now,
        )
        .await
        .map_err(|e| routine_error(&req.routine.id, e))?;
    if matches!(fired, Fired::New(_, Some(_))) {
        st.engine().wake();
    }
    Ok(fired)
}

/// How a fire that queued nothing is refused.
pub(crate) fn not_fired(st: &AppState, fired: &Fired) -> Option<ApiError> {
    match fired {
        Fired::Paused => Some(ApiError::invalid(
            "the routine is paused; resume it to fire it",
        )),
        Fired::OverAllowance => {
            let now = st.engine().now_ms();
            let reset = routine::utc_day(now).1;
            Some(ApiError {
                retry_after: Some(((reset - now) / 1000).max(1) as u64),
                ..ApiError::new(
                    ErrorType::RateLimit,
                    "the routine's daily run allowance (daily_allowance) is used; it resets at 00:00 UTC",
                )
            })
        }
        _ => None,
    }
}

/// The fire's record and its job's session.
pub(crate) async fn fired_session(st: &AppState, fired: &Fired) -> Option<(FireRecord, String)> {
    let (record, job) = match fired {
        Fired::New(r, job) => (r, job.as_ref().map(|j| j.id.to_string())),
        Fired::Duplicate(r) => (r, r.job_id.clone()),
        _ => return None,
    };
    let job = job.or_else(|| record.job_id.clone())?;
    let session = session_of_job(st, &job).await?;
    Some((record.clone(), session))
}

/// The hosted API's fire answer.
#[derive(Serialize, ToSchema)]
pub struct RoutineFire {
    #[schema(value_type = String, pattern = "^routine_fire$")]
    #[serde(rename = "type")]
    kind: &'static str,
    /// `session_…`
    claude_code_session_id: String,
    /// The session's page, which follows the run.
    claude_code_session_url: String,
}

/// The beta the fire route requires.
pub const ROUTINE_BETA: &str = "experimental-cc-routine-2026-04-01";

/// The fire body: `text` is optional, other fields are ignored. (The document's shape
/// only: the handler reads the JSON itself.)
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct FireBody {
    /// Handed to the routine beside its saved prompt, as a literal string.
    #[schema(max_length = 65536)]
    text: Option<String>,
}

fn auth_error(message: &str) -> ApiError {
    ApiError::new(ErrorType::Authentication, message)
}

#[utoipa::path(post, path = "/v1/claude_code/routines/{trig_id}/fire", tag = "routines",
    params(("trig_id" = String, Path, description = "The API trigger's id (trig_…)"),
        ("anthropic-beta" = String, Header, pattern = r"^([ -+\--~]*,)* *experimental-cc-routine-2026-04-01 *(,[ -+\--~]*)*$", description = "A comma-separated list that includes experimental-cc-routine-2026-04-01"),
        ("anthropic-version" = String, Header, pattern = "^[!-~]+$", description = "e.g. 2023-06-01"),
        ("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body(content = FireBody, description = "Optional"),
    responses((status = 200, description = "The run is queued", body = RoutineFire),
        (status = 400, description = "A missing or wrong anthropic-beta or anthropic-version header, text over 65,536 characters, or a paused routine", body = wire::ErrorBody),
        (status = 401, description = "No bearer token, or not this routine's", body = wire::ErrorBody),
        (status = 404, description = "No such routine", body = wire::ErrorBody),
        (status = 429, description = "The routine's daily allowance is used; Retry-After says when it resets", body = wire::ErrorBody),
        (status = 503, description = "The database is unavailable, or Baton is draining", body = wire::ErrorBody),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn fire_route(
    State(st): State<AppState>,
    Path(trig_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = fire_checked(&st, &trig_id, &headers, &body)
        .await
        .map(|(fire, project)| ((StatusCode::OK, Json(fire)).into_response(), project));
    answered(
        &st,
        result,
        &trig_id,
        "routine.fire",
        "/v1/claude_code/routines/{trig_id}/fire",
    )
    .await
}

/// A trigger route's answer, in the audit log of the trigger's project when the trigger
/// was found (an unknown one has no project to write to).
pub(crate) async fn answered(
    st: &AppState,
    result: Result<(Response, baton_core::ProjectId), Refusal>,
    trig_id: &str,
    action: &str,
    route: &str,
) -> Response {
    let (resp, project) = match result {
        Ok((resp, project)) => (resp, Some(project)),
        Err((e, project)) => (e.into_response(), project),
    };
    match project {
        Some(p) => crate::audit::record_trigger(st, resp, trig_id, &p, action, route).await,
        None => resp,
    }
}

/// A trigger found by its id alone, if it is one of `kinds`; else the 404 `missing`.
pub(crate) async fn trigger_of(
    st: &AppState,
    trig_id: &str,
    kinds: &[&str],
    missing: &str,
) -> Result<baton_store::TriggerSecrets, Refusal> {
    match st.engine().store().trigger_secrets(trig_id).await {
        Ok(t) if kinds.contains(&t.trigger.kind.as_str()) => Ok(t),
        Ok(_) | Err(StoreError::NotFound(_)) => {
            Err((ApiError::not_found(format!("{missing} {trig_id:?}")), None))
        }
        Err(e) => Err((e.into(), None)),
    }
}

/// Fires a trigger's routine for a request (a fire, a hook) and answers with the fire and
/// its session, or why nothing was queued.
pub(crate) async fn fire_for_request(
    st: &AppState,
    found: &baton_store::TriggerSecrets,
    fire_key: String,
    text: Option<String>,
    event: Value,
) -> ApiResult<(Fired, Option<(FireRecord, String)>)> {
    // A repeat is answered as the first was, whatever changed since (an allowance used, a
    // template edited).
    if let Some(first) = st
        .engine()
        .store()
        .find_fire(&found.trigger.id, &fire_key)
        .await?
    {
        let fired = Fired::Duplicate(first);
        let session = fired_session(st, &fired).await;
        return Ok((fired, session));
    }
    let routine = st
        .engine()
        .store()
        .get_routine(&found.trigger.project_id, &found.trigger.routine_id)
        .await
        .map_err(|e| routine_error(&found.trigger.routine_id, e))?;
    let fired = fire(
        st,
        FireRequest {
            routine: &routine,
            trigger: &found.trigger,
            fire_key,
            text,
            event,
            outcome: FireOutcome::Queued,
        },
    )
    .await?;
    if let Some(e) = not_fired(st, &fired) {
        return Err(e);
    }
    let session = fired_session(st, &fired).await;
    Ok((fired, session))
}

pub(crate) type Refusal = (ApiError, Option<baton_core::ProjectId>);

async fn fire_checked(
    st: &AppState,
    trig_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(RoutineFire, baton_core::ProjectId), Refusal> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let beta_ok = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|b| b.trim() == ROUTINE_BETA);
    if !beta_ok {
        return Err((
            ApiError::invalid(format!(
                "the anthropic-beta header must include {ROUTINE_BETA}"
            )),
            None,
        ));
    }
    if header("anthropic-version").is_none_or(|v| v.trim().is_empty()) {
        return Err((
            ApiError::invalid("the anthropic-version header is required (e.g. 2023-06-01)"),
            None,
        ));
    }
    let token = header("authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            (
                auth_error("a bearer token is required: Authorization: Bearer <token>"),
                None,
            )
        })?;
    let found = trigger_of(st, trig_id, &["api"], "no routine with trigger id").await?;
    let project = found.trigger.project_id.clone();
    let refuse = |e: ApiError| (e, Some(project.clone()));
    let matches = found
        .token_hash
        .as_deref()
        .is_some_and(|h| crate::keys::verify(token, h));
    if !matches {
        return Err(refuse(auth_error("the token does not match this routine")));
    }
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: Value = serde_json::from_slice(body)
            .map_err(|e| refuse(ApiError::invalid(format!("invalid JSON body: {e}"))))?;
        match parsed.get("text") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(refuse(ApiError::invalid("text must be a string"))),
        }
    };
    if let Some(t) = &text
        && t.chars().count() > routine::MAX_FIRE_TEXT_CHARS
    {
        return Err(refuse(ApiError::invalid(format!(
            "text is longer than {} characters",
            routine::MAX_FIRE_TEXT_CHARS
        ))));
    }
    let fire_key = match headers.get("idempotency-key") {
        Some(k) => {
            let k = k
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    refuse(ApiError::invalid(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    ))
                })?;
            format!("key:{k}")
        }
        None => format!("fire:{}", uuid::Uuid::now_v7().simple()),
    };
    let (_, session) = fire_for_request(st, &found, fire_key, text, Value::Null)
        .await
        .map_err(refuse)?;
    let (_, session) = session.ok_or_else(|| {
        refuse(ApiError::new(
            ErrorType::Api,
            "the fire's run cannot be found",
        ))
    })?;
    Ok((
        RoutineFire {
            kind: "routine_fire",
            claude_code_session_url: format!("{}/ui/sessions/{session}", st.public_url()),
            claude_code_session_id: session,
        },
        project,
    ))
}

/// One pass of the cron loop: waiting fires whose routine is free are queued, then each
/// due slot fires (at most once per slot across nodes: the slot is the fire's key) and
/// its trigger moves to the next. A slot found more than [`CRON_GRACE_MS`] late fires only
/// with `catch_up`, and then only the latest one. Returns the fires made.
pub async fn cron_step(st: &AppState) -> ApiResult<u32> {
    let store = st.engine().store();
    let now = st.engine().now_ms();
    // A waiting fire that cannot be released must not hold up every schedule.
    let mut made = match store.release_waiting(now).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "waiting fires not released; trying again at the next step");
            0
        }
    };
    if made > 0 {
        st.engine().wake();
    }
    for t in store.due_triggers(now, 200).await? {
        let Some(slot) = t.next_fire_at else { continue };
        let (schedule, catch_up, overlap) = match serde_json::from_value(t.config.clone()) {
            Ok(TriggerConfig::Cron {
                schedule,
                timezone,
                catch_up,
                overlap,
            }) => match CronSchedule::parse(&schedule, &timezone) {
                Ok(s) => (s, catch_up, overlap),
                Err(e) => {
                    tracing::warn!(trigger = %t.id, error = %e, "a cron trigger's schedule no longer parses; it stops");
                    store.advance_trigger(&t.id, slot, None).await?;
                    continue;
                }
            },
            _ => {
                store.advance_trigger(&t.id, slot, None).await?;
                continue;
            }
        };
        // Slots within the grace fire one by one, however many a short outage left due.
        let mut slot = slot;
        for _ in 0..MAX_SLOTS_PER_STEP {
            if slot > now {
                break;
            }
            let (target, next) = if now - slot <= CRON_GRACE_MS {
                (Some(slot), schedule.next_after(slot))
            } else {
                let latest = if catch_up {
                    schedule.latest_at(now)
                } else {
                    None
                };
                (latest, schedule.next_after(now))
            };
            if let Some(at) = target {
                match cron_fire(st, &t, at, overlap).await {
                    Ok(true) => made += 1,
                    Ok(false) => {}
                    // The database is away: the slot stays due, for the next step.
                    Err(e) if matches!(e.kind, ErrorType::Overloaded) => return Err(e),
                    Err(e) => tracing::warn!(trigger = %t.id, slot = at, error = %e.message,
                        "a cron slot could not fire; it passes"),
                }
            }
            // Another node moved it first: that node goes on from here.
            if !store.advance_trigger(&t.id, slot, next).await? {
                break;
            }
            match next {
                Some(n) => slot = n,
                None => break,
            }
        }
    }
    Ok(made)
}

/// The most slots of one trigger a step fires (the rest are due at the next step).
const MAX_SLOTS_PER_STEP: usize = 120;

/// Fires one cron slot; whether a fire was recorded now.
async fn cron_fire(st: &AppState, t: &TriggerRecord, at: i64, overlap: Overlap) -> ApiResult<bool> {
    let store = st.engine().store();
    let routine = match store.get_routine(&t.project_id, &t.routine_id).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if routine.paused {
        return Ok(false);
    }
    let outcome = match overlap {
        Overlap::Allow => FireOutcome::Queued,
        _ if !store.routine_busy(&routine.id).await? => FireOutcome::Queued,
        Overlap::Skip => FireOutcome::Skipped,
        Overlap::Queue => FireOutcome::Waiting,
    };
    let fire_key = format!("slot:{at}");
    let fired = match fire(
        st,
        FireRequest {
            routine: &routine,
            trigger: t,
            fire_key: fire_key.clone(),
            text: None,
            event: json!({"scheduled_at": routine::rfc3339(at)}),
            outcome,
        },
    )
    .await
    {
        Ok(f) => f,
        Err(e) if matches!(e.kind, ErrorType::Overloaded) => return Err(e),
        // The run cannot be made (its template failed, its agent is gone, …): the slot
        // is recorded as a failed fire with the reason, so it never passes unseen.
        Err(e) => {
            store
                .fire(
                    Fire {
                        project_id: routine.project_id.clone(),
                        routine_id: routine.id.clone(),
                        trigger_id: t.id.clone(),
                        fire_key,
                        job: None,
                        outcome: FireOutcome::Failed,
                        allowance: (0, 0),
                        error: Some(e.message.chars().take(2000).collect()),
                    },
                    st.engine().now_ms(),
                )
                .await?
        }
    };
    if let Some(e) = not_fired(st, &fired) {
        tracing::warn!(trigger = %t.id, slot = at, error = %e.message, "a cron slot passes without a run");
    }
    Ok(matches!(fired, Fired::New(..)))
}
