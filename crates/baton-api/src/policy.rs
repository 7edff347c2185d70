//! Per-project job policies: `GET` and `PUT /v1/projects/{id}/policy`, and [`police`],
//! the one check every way a job is made passes through (native jobs, agents' runs,
//! routines' fires, the compatible routes) and that saved agents and routines pass when
//! they are saved. It also decides whether the job's attempts run in the sandbox.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use baton_core::policy::Context;
use baton_core::{JobSpec, Policy, ProjectId, ProjectSettings, SandboxChoice};
use baton_store::StoreError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::Target;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::extract::Body;
use crate::{AppState, wire};

/// The server's choice about the sandbox (`runner.sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSandbox {
    /// On when Baton is shared: it has more than one project, or listens beyond loopback.
    Auto,
    /// On for every project that does not opt out.
    On,
    /// Off for every project that does not opt in.
    Off,
}

impl ServerSandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "bwrap",
            Self::Off => "none",
        }
    }
}

/// What the server's configuration says about jobs' policies.
#[derive(Debug, Clone)]
pub struct Policies {
    /// `[policy]`: the default project's, when it has none of its own; `None`: open.
    pub default_project: Option<Policy>,
    /// The names of the admin's MCP servers (`[[mcp_server]]`).
    pub catalogue: Vec<String>,
    pub sandbox: ServerSandbox,
    /// Whether the API listens beyond loopback.
    pub beyond_loopback: bool,
    /// Whether this Baton can make a sandbox at all (it has its proxy).
    pub can_sandbox: bool,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            default_project: None,
            catalogue: Vec::new(),
            sandbox: ServerSandbox::Off,
            beyond_loopback: false,
            can_sandbox: false,
        }
    }
}

/// The policy `settings` give a project: its own, else the default project's from the
/// configuration (open when there is none), else the safe default.
pub fn effective(st: &AppState, project: &ProjectId, settings: &ProjectSettings) -> Policy {
    match &settings.policy {
        Some(p) => p.clone(),
        None if project.is_default() => st
            .policies()
            .default_project
            .clone()
            .unwrap_or_else(Policy::open),
        None => Policy::default(),
    }
}

/// Whether Baton is shared: it listens beyond loopback, or has more than one project.
/// Only "shared" is remembered (until a project is deleted here): a project made on
/// another node, or a moment ago, is seen at the next job, never a moment late.
pub async fn shared(st: &AppState) -> ApiResult<bool> {
    if st.policies().beyond_loopback {
        return Ok(true);
    }
    let seen = st.seen_shared();
    if seen.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let shared = st.engine().store().list_projects().await?.len() > 1;
    if shared {
        seen.store(true, Ordering::Relaxed);
    }
    Ok(shared)
}

/// Whether a project's attempts run in the sandbox, and why.
pub async fn sandboxed(st: &AppState, policy: &Policy) -> ApiResult<(bool, &'static str)> {
    Ok(match (policy.sandbox, st.policies().sandbox) {
        (Some(SandboxChoice::On), _) => (true, "the project's policy says sandbox = \"on\""),
        (Some(SandboxChoice::Off), _) => (false, "the project's policy says sandbox = \"off\""),
        (None, ServerSandbox::On) => (true, "runner.sandbox = \"bwrap\""),
        (None, ServerSandbox::Off) => (false, "runner.sandbox = \"none\""),
        (None, ServerSandbox::Auto) if shared(st).await? => (
            true,
            "Baton is shared (more than one project, or a listener beyond loopback)",
        ),
        (None, ServerSandbox::Auto) => (false, "a single project on loopback"),
    })
}

/// Checks a job of `project` against the project's policy, fills in what it leaves to it,
/// records the policy with it and decides its sandbox. A refusal is `403
/// permission_error` naming the rule and the value; nothing is queued.
pub async fn police(st: &AppState, project: &ProjectId, spec: &mut JobSpec) -> ApiResult<()> {
    let catalogue = &st.policies().catalogue;
    if let Some(name) = spec
        .options
        .mcp_servers
        .iter()
        .find(|n| !catalogue.contains(n))
    {
        return Err(ApiError::invalid(format!(
            "mcp_servers: no MCP server {name:?} in this Baton's catalogue"
        )));
    }
    let settings = st.settings(project).await?;
    let policy = effective(st, project, &settings);
    let roots = |p: &str, roots: &[String]| {
        let roots: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        baton_runner::workspace::inside_roots(FsPath::new(p), &roots).is_ok()
    };
    let ctx = Context {
        default_timeout_ms: st.limits().default_timeout_ms,
        inside: &roots,
    };
    policy.apply(spec, &ctx).map_err(|r| ApiError {
        detail: Some(json!({"rule": r.rule, "value": r.value})),
        ..ApiError::new(ErrorType::Permission, r.message)
    })?;
    spec.sandbox = Some(sandboxed(st, &policy).await?.0);
    Ok(())
}

/// A policy an admin sets must be one this Baton can keep: its own form, its roots inside
/// the workspace roots, its MCP servers in the catalogue, a sandbox it can make.
pub(crate) fn check(st: &AppState, policy: &Policy) -> ApiResult<()> {
    policy.check().map_err(ApiError::invalid)?;
    let workspace_roots = &st.engine().config().runner.workspace_roots;
    for root in policy
        .roots
        .iter()
        .filter(|r| *r != baton_core::policy::ANY)
    {
        baton_runner::workspace::inside_roots(FsPath::new(root), workspace_roots)
            .map_err(|e| ApiError::invalid(format!("policy.roots: {root}: {e}")))?;
    }
    let catalogue = &st.policies().catalogue;
    if let Some(name) = policy
        .mcp_servers
        .iter()
        .find(|n| *n != baton_core::policy::ANY && !catalogue.contains(n))
    {
        return Err(ApiError::invalid(format!(
            "policy.mcp_servers: no MCP server {name:?} in this Baton's catalogue ([[mcp_server]])"
        )));
    }
    if policy.sandbox == Some(SandboxChoice::On) && !st.policies().can_sandbox {
        return Err(ApiError::invalid(
            "policy.sandbox: this Baton cannot make a sandbox: it needs its proxy (a credential, and proxy.mode = \"proxy\")",
        ));
    }
    Ok(())
}

/// A project's policy, as its jobs get it.
#[derive(Serialize, ToSchema)]
pub struct ProjectPolicy {
    project: String,
    #[schema(value_type = String, pattern = "^policy$")]
    object: &'static str,
    /// Whether the project set its own (`false`: the default for the project).
    custom: bool,
    /// Whether the project's new jobs run in the sandbox now, and why.
    sandboxed: bool,
    sandbox_reason: &'static str,
    /// The MCP servers of this Baton's catalogue.
    catalogue: Vec<String>,
    policy: Policy,
}

async fn view(st: &AppState, project: &ProjectId) -> ApiResult<ProjectPolicy> {
    st.forget_project(project);
    let settings = st.settings(project).await?;
    let policy = effective(st, project, &settings);
    let (sandboxed, sandbox_reason) = sandboxed(st, &policy).await?;
    Ok(ProjectPolicy {
        project: project.to_string(),
        object: "policy",
        custom: settings.policy.is_some(),
        sandboxed,
        sandbox_reason,
        catalogue: st.policies().catalogue.clone(),
        policy,
    })
}

async fn existing(st: &AppState, id: &str) -> ApiResult<(ProjectId, baton_store::ProjectRecord)> {
    let not_found = || ApiError::not_found(format!("no project with id {id:?}"));
    let pid = ProjectId::parse(id).map_err(|_| not_found())?;
    match st.engine().store().get_project(&pid).await {
        Ok(r) => Ok((pid, r)),
        Err(StoreError::NotFound(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v1/projects/{id}/policy", tag = "administration",
    params(("id" = String, Path)),
    responses((status = 200, description = "The project's policy", body = ProjectPolicy),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn get_policy(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<ProjectPolicy>> {
    let (pid, _) = existing(&st, &id).await?;
    Ok(Json(view(&st, &pid).await?))
}

#[utoipa::path(put, path = "/v1/projects/{id}/policy", tag = "administration",
    params(("id" = String, Path)),
    request_body = Policy,
    responses((status = 200, description = "The project's policy, replaced (fields left out take the safe default)", body = ProjectPolicy),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn put_policy(
    State(st): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Body<Policy>,
) -> ApiResult<Response> {
    let (pid, current) = existing(&st, &id).await?;
    let policy = body.value;
    check(&st, &policy)?;
    let mut settings: ProjectSettings =
        serde_json::from_value(current.settings).unwrap_or_default();
    settings.policy = Some(policy);
    let settings = serde_json::to_value(&settings)
        .map_err(|e| ApiError::new(ErrorType::Api, format!("the settings: {e}")))?;
    st.engine()
        .store()
        .update_project(&pid, None, Some(&settings), st.engine().now_ms())
        .await?;
    let view = view(&st, &pid).await?;
    if view.policy.sandbox == Some(SandboxChoice::Off) {
        tracing::warn!(project = %pid, "the project's policy turns the sandbox off: its jobs can read whatever the CLI's user can");
    }
    Ok(Target::on(
        Json(view).into_response(),
        pid.as_str(),
        Some(&pid),
    ))
}

/// Says at start where jobs run: the server's choice, whether Baton is shared, and each
/// project whose policy opts out of the sandbox.
pub async fn log_sandbox(st: &AppState) {
    let p = st.policies();
    let shared = shared(st).await.unwrap_or(true);
    tracing::info!(
        runner_sandbox = p.sandbox.as_str(),
        shared,
        can_sandbox = p.can_sandbox,
        "the sandbox: {}",
        match (p.sandbox, shared) {
            (ServerSandbox::On, _) | (ServerSandbox::Auto, true) =>
                "on for every project that does not opt out",
            (ServerSandbox::Off, _) => "off for every project that does not opt in",
            (ServerSandbox::Auto, false) =>
                "off while Baton has one project and listens on loopback",
        }
    );
    for (project, off) in opted_out(st).await {
        if off {
            tracing::warn!(project = %project, "the project's policy turns the sandbox off: its jobs can read whatever the CLI's user can");
        }
    }
}

/// Every project with a sandbox choice of its own: (project, whether it is off).
async fn opted_out(st: &AppState) -> Vec<(ProjectId, bool)> {
    let projects = st
        .engine()
        .store()
        .list_projects()
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in projects {
        let settings: ProjectSettings = serde_json::from_value(r.settings).unwrap_or_default();
        if let Some(choice) = effective(st, &r.id, &settings).sandbox {
            out.push((r.id.clone(), choice == SandboxChoice::Off));
        }
    }
    out
}

/// The sandbox as `/v1/health` shows it.
#[derive(Serialize, ToSchema)]
pub struct SandboxHealth {
    /// `runner.sandbox`: `auto`, `bwrap` or `none`.
    mode: &'static str,
    /// Whether this Baton can make a sandbox (it has its proxy).
    available: bool,
    /// Whether Baton is shared: more than one project, or a listener beyond loopback.
    shared: bool,
    /// Whether the caller's project's new jobs run in the sandbox.
    project_sandboxed: bool,
    /// Projects whose policy turns the sandbox off (all of them to an admin; the caller's
    /// own to anyone else).
    off_for: Vec<String>,
}

pub async fn health(st: &AppState, caller: &crate::auth::Caller) -> ApiResult<SandboxHealth> {
    let settings = st.settings(&caller.project).await?;
    let policy = effective(st, &caller.project, &settings);
    Ok(SandboxHealth {
        mode: st.policies().sandbox.as_str(),
        available: st.policies().can_sandbox,
        shared: shared(st).await?,
        project_sandboxed: sandboxed(st, &policy).await?.0,
        off_for: opted_out(st)
            .await
            .into_iter()
            .filter(|(p, off)| *off && caller.sees(p))
            .map(|(p, _)| p.to_string())
            .collect(),
    })
}
