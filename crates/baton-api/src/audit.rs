//! The audit log: every request that changes something is recorded, durably, before its
//! answer leaves: when, which key (its id, never its secret), which project, the route,
//! the object changed and how it ended. `GET /v1/audit` lists it for administrators.

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use baton_core::ProjectId;
use baton_store::{AuditFilter, AuditRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ApiResult};
use crate::jobs::Params;
use crate::{AppState, wire};

/// Set on a response by a handler to name the object it changed (and, when that object
/// belongs to another project than the caller's, that project).
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub project: Option<ProjectId>,
}

impl Target {
    pub fn on(mut resp: Response, id: impl Into<String>, project: Option<&ProjectId>) -> Response {
        resp.extensions_mut().insert(Target {
            id: id.into(),
            project: project.cloned(),
        });
        resp
    }
}

/// What a change names, from its method and route.
fn action(method: &Method, route: &str) -> String {
    let named = match (method.as_str(), route) {
        (
            "POST",
            "/v1/jobs"
            | "/v1/chat"
            | "/v1/chat/stream"
            | "/execute"
            | "/claude"
            | "/claude/stream"
            | "/v1/chat/completions"
            | "/v1/messages",
        ) => "job.create",
        ("POST", "/v1/jobs/{id}/cancel") => "job.cancel",
        ("POST", "/v1/jobs/{id}/retry") => "job.retry",
        ("POST", "/v1/dead/replay") => "dead.replay",
        ("POST", "/v1/projects") => "project.create",
        ("PATCH", "/v1/projects/{id}") => "project.update",
        ("DELETE", "/v1/projects/{id}") => "project.delete",
        ("PUT", "/v1/projects/{id}/policy") => "project.policy",
        ("POST", "/v1/keys") => "key.create",
        ("POST", "/v1/agents") => "agent.create",
        ("PUT", "/v1/agents/{name}") => "agent.update",
        ("DELETE", "/v1/agents/{name}") => "agent.delete",
        ("POST", "/v1/agents/{name}/runs" | "/") => "job.create",
        ("DELETE", "/v1/keys/{id}") => "key.revoke",
        ("POST", "/v1/routines") => "routine.create",
        ("PATCH", "/v1/routines/{id}") => "routine.update",
        ("DELETE", "/v1/routines/{id}") => "routine.delete",
        ("POST", "/v1/routines/{id}/pause") => "routine.pause",
        ("POST", "/v1/routines/{id}/resume") => "routine.resume",
        ("POST", "/v1/routines/{id}/triggers") => "trigger.create",
        ("DELETE", "/v1/triggers/{id}") => "trigger.delete",
        ("POST", "/v1/triggers/{id}/token") => "trigger.rotate_token",
        ("POST", "/v1/callbacks/secret") => "callback_secret.rotate",
        _ => return format!("{method} {route}"),
    };
    named.to_string()
}

/// The `{id}` (or `{name}`) of a route such as `/v1/jobs/{id}/cancel`, read from the
/// request's path.
fn path_id(route: &str, path: &str) -> Option<String> {
    let at = route
        .split('/')
        .position(|seg| seg == "{id}" || seg == "{name}")?;
    path.split('/').nth(at).map(str::to_string)
}

/// A change under way, recorded when its answer is known.
pub struct Pending {
    caller: Caller,
    action: String,
    route: String,
    target: Option<String>,
}

impl Pending {
    /// `None` for a request that reads.
    pub fn of(req: &Request, caller: &Caller) -> Option<Self> {
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
        // An MCP message changes nothing itself: the API requests its tools make are
        // recorded, each as what it did.
        if route == "/mcp" {
            return None;
        }
        Some(Self {
            caller: caller.clone(),
            action: action(req.method(), &route),
            target: path_id(&route, req.uri().path()),
            route,
        })
    }

    pub async fn record(self, st: &AppState, mut resp: Response) -> Response {
        // The answer's request id, made here when the handler made none, so the record and
        // the answer carry the same one.
        let request_id = match resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
        {
            Some(id) => id.to_string(),
            None => {
                let id = crate::error::new_request_id();
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("request-id", v);
                }
                id
            }
        };
        let named = resp.extensions().get::<Target>().cloned();
        let record = AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            at: st.engine().now_ms(),
            project_id: named
                .as_ref()
                .and_then(|t| t.project.clone())
                .unwrap_or_else(|| self.caller.project.clone()),
            key_id: self.caller.key_id,
            action: self.action,
            route: self.route,
            target: named.map(|t| t.id).or(self.target),
            outcome: resp.status().as_u16().to_string(),
            request_id,
        };
        if let Err(e) = st.engine().store().append_audit(&record).await {
            tracing::error!(action = %record.action, request_id = %record.request_id, error = %e,
                "could not write the audit record of a change");
        }
        resp
    }
}

/// Records a request a trigger made (a fire, a hook): the trigger stands where a key
/// would, in the routine's project.
pub async fn record_trigger(
    st: &AppState,
    resp: Response,
    trigger: &str,
    project: &ProjectId,
    action: &str,
    route: &str,
) -> Response {
    let caller = Caller {
        key_id: Some(trigger.to_string()),
        project: project.clone(),
        scopes: Vec::new(),
        requests_per_minute: None,
    };
    record_as(st, resp, &caller, action, route, trigger).await
}

/// Records a change made outside the authenticated routes (a browser's form).
pub async fn record_as(
    st: &AppState,
    resp: Response,
    caller: &Caller,
    action: &str,
    route: &str,
    target: &str,
) -> Response {
    let pending = Pending {
        caller: caller.clone(),
        action: action.to_string(),
        route: route.to_string(),
        target: Some(target.to_string()),
    };
    pending.record(st, resp).await
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this project's records.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    project: Option<String>,
    /// Only this key's records.
    key_id: Option<String>,
    /// Only this action, e.g. `job.create` or `key.revoke`.
    action: Option<String>,
    /// Page size (50).
    #[serde(default, deserialize_with = "baton_core::int::opt_query")]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page; empty is the first page.
    #[param(value_type = Option<wire::params::Cursor>)]
    cursor: Option<String>,
}

/// One audit record.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    id: String,
    #[schema(value_type = String, pattern = "^audit_record$")]
    object: &'static str,
    /// When, RFC 3339.
    at: String,
    project: String,
    /// The key that asked; null while Baton was open (no keys).
    key_id: Option<String>,
    action: String,
    route: String,
    target: Option<String>,
    /// The answer's HTTP status.
    outcome: String,
    request_id: String,
}

#[utoipa::path(get, path = "/v1/audit", tag = "administration", params(AuditQuery),
    responses((status = 200, description = "Audit records, newest first", body = wire::Page<AuditEntry>),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn list_audit(
    State(st): State<AppState>,
    _: Admin,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<wire::Page<AuditEntry>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let project_id = crate::admin::project_filter(q.project.as_deref())?;
    let before = q.cursor.filter(|c| !c.is_empty());
    if let Some(c) = &before
        && uuid::Uuid::try_parse(c).is_err()
    {
        return Err(ApiError::invalid(format!(
            "cursor {c:?} is not a cursor this API returned"
        )));
    }
    let mut records = st
        .engine()
        .store()
        .list_audit(&AuditFilter {
            project_id,
            key_id: q.key_id,
            action: q.action,
            before,
            limit: limit + 1,
        })
        .await?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| records.last().map(|r| r.id.clone()))
        .flatten();
    let data = records
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            object: "audit_record",
            at: wire::timestamp(r.at),
            project: r.project_id.to_string(),
            key_id: r.key_id,
            action: r.action,
            route: r.route,
            target: r.target,
            outcome: r.outcome,
            request_id: r.request_id,
        })
        .collect();
    Ok(Json(wire::Page::of(data, has_more, next_cursor)))
}
