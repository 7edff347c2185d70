//! Administration: projects (`/v1/projects`) and API keys (`/v1/keys`). Every route here
//! needs the `admin` scope.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use baton_core::{Alerts, Budget, JobRequest, ProjectId, ProjectSettings, Quotas};
use baton_store::{KeyRecord, NewKey, ProjectRecord, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Target;
use crate::auth::{Admin, Scope};
use crate::dead::idempotent;
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::extract::Body;
use crate::jobs::Params;
use crate::{AppState, wire};

/// A project as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct Project {
    id: String,
    #[schema(value_type = String, pattern = "^project$")]
    object: &'static str,
    name: String,
    quotas: Quotas,
    /// Job options its jobs get when they do not set them.
    #[schema(value_type = Object)]
    defaults: Map<String, Value>,
    /// What the project's API calls may cost a UTC day and month (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<Budget>,
    /// Cost alerts (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<Alerts>,
    /// What its jobs may ask for, when it has a policy of its own (absent: the default;
    /// `GET /v1/projects/{id}/policy` shows the one in force).
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<baton_core::Policy>,
    created_at: String,
    updated_at: String,
}

impl Project {
    fn new(r: &ProjectRecord) -> Self {
        let settings: ProjectSettings =
            serde_json::from_value(r.settings.clone()).unwrap_or_default();
        Self {
            id: r.id.to_string(),
            object: "project",
            name: r.name.clone(),
            quotas: settings.quotas,
            defaults: settings.defaults,
            budget: settings.budget,
            alerts: settings.alerts,
            policy: settings.policy,
            created_at: wire::timestamp(r.created_at),
            updated_at: wire::timestamp(r.updated_at),
        }
    }
}

/// A new project.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Lower-case letters, digits, `-` and `_`; 1 to 63 characters.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    id: String,
    /// Shown in lists (default: the id).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    name: Option<String>,
    quotas: Option<Quotas>,
    /// Job options (as in `POST /v1/jobs`, without `prompt`, `session` or `metadata`).
    #[schema(value_type = Option<Object>)]
    defaults: Option<Map<String, Value>>,
    /// What the project's API calls may cost a UTC day and month.
    budget: Option<Budget>,
    /// Cost alerts.
    alerts: Option<Alerts>,
    /// What its jobs may ask for (absent: the safe default; see `PUT
    /// /v1/projects/{id}/policy`).
    policy: Option<baton_core::Policy>,
}

/// What a `PATCH` changes: each field given replaces the one stored (`quotas` and
/// `defaults` as a whole).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    name: Option<String>,
    quotas: Option<Quotas>,
    #[schema(value_type = Option<Object>)]
    defaults: Option<Map<String, Value>>,
    /// Replaces the budget (`{}`: no limit).
    budget: Option<Budget>,
    /// Replaces the alerts (`{"thresholds": []}`: none).
    alerts: Option<Alerts>,
}

/// A project's budget and alerts are valid.
fn check_spend(budget: Option<&Budget>, alerts: Option<&Alerts>) -> ApiResult<()> {
    if let Some(b) = budget {
        b.check("budget").map_err(ApiError::invalid)?;
    }
    if let Some(a) = alerts {
        a.check().map_err(ApiError::invalid)?;
    }
    Ok(())
}

/// A project's or a key's name: 1 to 200 characters, not all blank, no NUL.
fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.contains('\0') {
        return Err("name must be 1 to 200 characters".into());
    }
    Ok(())
}

/// A `project` filter of a list: absent, or a project id.
pub(crate) fn project_filter(project: Option<&str>) -> ApiResult<Option<ProjectId>> {
    project
        .map(|p| ProjectId::parse(p).map_err(|e| ApiError::invalid(e.to_string())))
        .transpose()
}

/// Defaults must be job options a request could set.
fn check_defaults(st: &AppState, defaults: &Map<String, Value>) -> ApiResult<()> {
    if let Some(k) = baton_core::project::NOT_DEFAULTABLE
        .iter()
        .find(|k| defaults.contains_key(**k))
    {
        return Err(ApiError::invalid(format!(
            "defaults.{k}: belongs to one job, not to a project's defaults"
        )));
    }
    let mut probe = defaults.clone();
    probe.insert("prompt".into(), json!("a prompt"));
    let request: JobRequest = serde_json::from_value(Value::Object(probe))
        .map_err(|e| ApiError::invalid(format!("defaults: {e}")))?;
    request
        .parse(st.limits())
        .map_err(|e| ApiError::invalid(format!("defaults: {e}")))?;
    Ok(())
}

fn project_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no project with id {id:?}"))
}

fn parse_project_id(id: &str) -> ApiResult<ProjectId> {
    ProjectId::parse(id).map_err(|_| project_not_found(id))
}

fn json_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/projects", tag = "administration",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header)),
    request_body = CreateProject,
    responses((status = 201, description = "Created", body = Project),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn create_project(
    State(st): State<AppState>,
    caller: Admin,
    headers: HeaderMap,
    body: Body<CreateProject>,
) -> ApiResult<Response> {
    let req = body.value;
    let id = ProjectId::parse(&req.id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let name = req.name.unwrap_or_else(|| req.id.clone());
    check_name(&name).map_err(ApiError::invalid)?;
    let settings = ProjectSettings {
        quotas: req.quotas.unwrap_or_default(),
        defaults: req.defaults.unwrap_or_default(),
        budget: req.budget,
        alerts: req.alerts,
        policy: req.policy,
    };
    if let Some(p) = &settings.policy {
        crate::policy::check(&st, p)?;
    }
    settings.quotas.check().map_err(ApiError::invalid)?;
    check_spend(settings.budget.as_ref(), settings.alerts.as_ref())?;
    if let Some(url) = settings
        .alerts
        .as_ref()
        .and_then(|a| a.webhook_url.as_deref())
    {
        crate::callbacks::check_destination(&st, url).await?;
    }
    check_defaults(&st, &settings.defaults)?;
    let resp = idempotent(
        &st,
        &caller,
        &headers,
        "POST /v1/projects",
        &body.raw,
        || async {
            let record = st
                .engine()
                .store()
                .create_project(&id, &name, &json_value(&settings), st.engine().now_ms())
                .await?;
            let view = json_value(&Project::new(&record));
            Ok((StatusCode::CREATED, view, None))
        },
    )
    .await?;
    // A second project makes Baton shared (the sandbox's default).
    st.forget_project(&id);
    if settings
        .policy
        .as_ref()
        .is_some_and(|p| p.sandbox == Some(baton_core::SandboxChoice::Off))
    {
        tracing::warn!(project = %id, "the project's policy turns the sandbox off: its jobs can read whatever the CLI's user can");
    }
    Ok(Target::on(resp, id.as_str(), Some(&id)))
}

#[utoipa::path(get, path = "/v1/projects", tag = "administration",
    responses((status = 200, description = "Every project, by id", body = wire::Page<Project>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_projects(
    State(st): State<AppState>,
    _: Admin,
) -> ApiResult<Json<wire::Page<Project>>> {
    let projects = st.engine().store().list_projects().await?;
    Ok(Json(wire::Page::whole(
        projects.iter().map(Project::new).collect(),
    )))
}

#[utoipa::path(get, path = "/v1/projects/{id}", tag = "administration", params(("id" = String, Path)),
    responses((status = 200, description = "The project", body = Project),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get_project(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Project>> {
    let pid = parse_project_id(&id)?;
    match st.engine().store().get_project(&pid).await {
        Ok(r) => Ok(Json(Project::new(&r))),
        Err(StoreError::NotFound(_)) => Err(project_not_found(&id)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "administration", params(("id" = String, Path)),
    request_body = UpdateProject,
    responses((status = 200, description = "The project, changed", body = Project),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn update_project(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Body<UpdateProject>,
) -> ApiResult<Response> {
    let pid = parse_project_id(&id)?;
    let req = body.value;
    if let Some(name) = &req.name {
        check_name(name).map_err(ApiError::invalid)?;
    }
    if let Some(q) = &req.quotas {
        q.check().map_err(ApiError::invalid)?;
    }
    if let Some(d) = &req.defaults {
        check_defaults(&st, d)?;
    }
    check_spend(req.budget.as_ref(), req.alerts.as_ref())?;
    if let Some(url) = req.alerts.as_ref().and_then(|a| a.webhook_url.as_deref()) {
        crate::callbacks::check_destination(&st, url).await?;
    }
    let store = st.engine().store();
    let current = match store.get_project(&pid).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => return Err(project_not_found(&id)),
        Err(e) => return Err(e.into()),
    };
    let mut settings: ProjectSettings =
        serde_json::from_value(current.settings).unwrap_or_default();
    if let Some(q) = req.quotas {
        settings.quotas = q;
    }
    if let Some(d) = req.defaults {
        settings.defaults = d;
    }
    if let Some(b) = req.budget {
        settings.budget = (b != Budget::default()).then_some(b);
    }
    if let Some(a) = req.alerts {
        settings.alerts = Some(a);
    }
    let record = store
        .update_project(
            &pid,
            req.name.as_deref(),
            Some(&json_value(&settings)),
            st.engine().now_ms(),
        )
        .await?;
    st.forget_project(&pid);
    Ok(Target::on(
        Json(Project::new(&record)).into_response(),
        pid.as_str(),
        Some(&pid),
    ))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete the project's jobs, sessions, keys and audit records with it; without it a
    /// project that has jobs is not deleted.
    #[serde(default)]
    purge: bool,
}

/// A project deleted.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    id: String,
    #[schema(value_type = String, pattern = "^project$")]
    object: &'static str,
    deleted: bool,
}

#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "administration",
    params(("id" = String, Path), DeleteQuery),
    responses((status = 200, description = "Deleted", body = Deleted),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn delete_project(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Params(q): Params<DeleteQuery>,
) -> ApiResult<Response> {
    let pid = parse_project_id(&id)?;
    match st.engine().store().delete_project(&pid, q.purge).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(project_not_found(&id)),
        Err(e) => return Err(e.into()),
    }
    st.forget_project(&pid);
    st.auth().forget_keys();
    let body = Deleted {
        id: pid.to_string(),
        object: "project",
        deleted: true,
    };
    // The record goes to `default`: the project's own records are gone with it.
    Ok(Target::on(
        Json(body).into_response(),
        pid.as_str(),
        Some(&ProjectId::default()),
    ))
}

/// An API key as the API shows it: never its secret, except `key` in the answer that made
/// it.
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    /// Public: names the key in lists and in the audit log.
    id: String,
    #[schema(value_type = String, pattern = "^api_key$")]
    object: &'static str,
    project: String,
    name: String,
    scopes: Vec<Scope>,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
    /// The key's own rate limit; none when null.
    requests_per_minute: Option<i64>,
    /// What the jobs it submits may cost a UTC day and month.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<Budget>,
    /// The key itself (`bk_…`), in the creation answer only: it is stored only as a hash
    /// and cannot be shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl ApiKey {
    fn new(r: &KeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            object: "api_key",
            project: r.project_id.to_string(),
            name: r.name.clone(),
            scopes: r.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            created_at: wire::timestamp(r.created_at),
            expires_at: r.expires_at.map(wire::timestamp),
            last_used_at: r.last_used_at.map(wire::timestamp),
            revoked_at: r.revoked_at.map(wire::timestamp),
            requests_per_minute: r.requests_per_minute,
            budget: r.budget,
            key: None,
        }
    }
}

/// A new key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The project the key acts in.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    project: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    name: String,
    #[schema(min_items = 1, value_type = Vec<Scope>)]
    scopes: Vec<String>,
    /// When the key stops working, RFC 3339; never when absent.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The key's own rate limit (its project's applies as well).
    #[serde(default, deserialize_with = "baton_core::int::opt")]
    #[schema(minimum = 1, maximum = 10000000)]
    requests_per_minute: Option<u32>,
    /// What the jobs it submits may cost a UTC day and month (its project's budget
    /// applies as well).
    budget: Option<Budget>,
}

/// A key's fields checked: its project, name, scopes and expiry.
pub struct KeyRequest {
    pub project: ProjectId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
    pub requests_per_minute: Option<u32>,
    pub budget: Option<Budget>,
}

/// Checks a key request (also used by `baton keys create`, offline).
pub fn check_key_request(
    project: &str,
    name: &str,
    scopes: &[String],
    expires_at: Option<&str>,
    requests_per_minute: Option<u32>,
    now_ms: i64,
) -> Result<KeyRequest, String> {
    let max = baton_core::project::MAX_COUNT;
    if requests_per_minute.is_some_and(|n| !(1..=max).contains(&n)) {
        return Err(format!(
            "requests_per_minute must be between 1 and {max} (leave it out for no limit)"
        ));
    }
    let project = ProjectId::parse(project).map_err(|e| e.to_string())?;
    check_name(name)?;
    if scopes.is_empty() {
        return Err(format!(
            "scopes must name at least one of {}",
            Scope::ALL.map(Scope::as_str).join(", ")
        ));
    }
    let mut parsed = Vec::new();
    for s in scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            format!(
                "unknown scope {s:?}; scopes are {}",
                Scope::ALL.map(Scope::as_str).join(", ")
            )
        })?;
        if !parsed.contains(&scope) {
            parsed.push(scope);
        }
    }
    let expires_at = expires_at
        .map(|e| {
            chrono::DateTime::parse_from_rfc3339(e)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    format!("expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z; got {e:?}")
                })
        })
        .transpose()?;
    if expires_at.is_some_and(|e| e <= now_ms) {
        return Err("expires_at must be in the future".into());
    }
    Ok(KeyRequest {
        project,
        name: name.to_string(),
        scopes: parsed,
        expires_at,
        requests_per_minute,
        budget: None,
    })
}

/// Makes a key: the record stored (secret hashed) and the key to give the caller once.
pub async fn make_key(
    store: &baton_store::Store,
    req: &KeyRequest,
    now_ms: i64,
) -> Result<(KeyRecord, String), StoreError> {
    let issued = crate::keys::issue();
    let record = store
        .insert_key(
            &NewKey {
                id: issued.id.clone(),
                project_id: req.project.clone(),
                name: req.name.clone(),
                scopes: req.scopes.iter().map(|s| s.as_str().to_string()).collect(),
                secret_hash: issued.hash.clone(),
                expires_at: req.expires_at,
                requests_per_minute: req.requests_per_minute.map(i64::from),
                budget: req.budget.filter(|b| *b != Budget::default()),
            },
            now_ms,
        )
        .await?;
    Ok((record, issued.key))
}

/// The view of a new key, with its secret.
pub fn created_key_view(record: &KeyRecord, key: String) -> Value {
    json_value(&ApiKey {
        key: Some(key),
        ..ApiKey::new(record)
    })
}

#[utoipa::path(post, path = "/v1/keys", tag = "administration",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header, description = "Create once: a repeat answers with the same key's record, without its secret.")),
    request_body = CreateKey,
    responses((status = 201, description = "Created; `key` is shown this once", body = ApiKey),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn create_key(
    State(st): State<AppState>,
    caller: Admin,
    headers: HeaderMap,
    body: Body<CreateKey>,
) -> ApiResult<Response> {
    let now = st.engine().now_ms();
    let b = &body.value;
    let req = check_key_request(
        &b.project,
        &b.name,
        &b.scopes,
        b.expires_at.as_deref(),
        b.requests_per_minute,
        now,
    )
    .map_err(ApiError::invalid)?;
    if let Some(budget) = &b.budget {
        budget.check("budget").map_err(ApiError::invalid)?;
    }
    let req = KeyRequest {
        budget: b.budget,
        ..req
    };
    let store = st.engine().store();
    match store.get_project(&req.project).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::invalid(format!(
                "no project with id {:?}; create it first with POST /v1/projects",
                req.project.as_str()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let mut made = None;
    let resp = idempotent(
        &st,
        &caller,
        &headers,
        "POST /v1/keys",
        &body.raw,
        || async {
            let (record, key) = make_key(store, &req, now).await?;
            st.auth().key_made();
            made = Some(record.id.clone());
            // What a repeat of this request is answered with: the record, never the secret.
            let stored = json_value(&ApiKey::new(&record));
            Ok((
                StatusCode::CREATED,
                stored,
                Some(created_key_view(&record, key)),
            ))
        },
    )
    .await?;
    // A repeat made nothing: its record names no target.
    Ok(match made {
        Some(id) => Target::on(resp, id, Some(&req.project)),
        None => resp,
    })
}

/// Keys, oldest first: every project's, or one's.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// Only this project's keys.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    project: Option<String>,
}

#[utoipa::path(get, path = "/v1/keys", tag = "administration", params(KeysQuery),
    responses((status = 200, description = "API keys, oldest first; never a secret", body = wire::Page<ApiKey>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_keys(
    State(st): State<AppState>,
    _: Admin,
    Params(q): Params<KeysQuery>,
) -> ApiResult<Json<wire::Page<ApiKey>>> {
    let project = project_filter(q.project.as_deref())?;
    let keys = st.engine().store().list_keys(project.as_ref()).await?;
    Ok(Json(wire::Page::whole(
        keys.iter().map(ApiKey::new).collect(),
    )))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "administration", params(("id" = String, Path)),
    responses((status = 200, description = "Revoked, at once", body = ApiKey),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn revoke_key(
    State(st): State<AppState>,
    caller: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    // The last administrator's key revoking itself would lock everyone out.
    if caller.key_id.as_deref() == Some(id.as_str()) {
        return Err(ApiError::new(
            ErrorType::Conflict,
            "a key cannot revoke itself: revoke it with another admin key, or with `baton keys revoke` on the server",
        ));
    }
    let record = match st
        .engine()
        .store()
        .revoke_key(&id, st.engine().now_ms())
        .await
    {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("no key with id {id:?}")));
        }
        Err(e) => return Err(e.into()),
    };
    st.auth().forget_key(&record.id);
    Ok(Target::on(
        Json(ApiKey::new(&record)).into_response(),
        record.id.as_str(),
        Some(&record.project_id),
    ))
}
