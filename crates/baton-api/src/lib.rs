//! Baton's HTTP surface: the native `/v1` API, the routes that keep existing clients
//! working, server-sent events, the error envelope and the OpenAPI document.
//!
//! **Architecture invariant:** this is the only crate that knows HTTP status codes and
//! wire JSON; below it, errors are typed and records are Rust values.

pub mod admin;
mod agent_jobs;
pub mod agents;
mod audit;
pub mod auth;
pub mod callbacks;
mod compat;
mod dead;
pub mod error;
mod extract;
mod facades;
mod follow;
mod hangup;
mod health;
mod hooks;
mod jobs;
pub mod keys;
pub mod openapi;
pub mod policy;
pub mod ratelimit;
pub mod routines;
pub mod ui;
mod usage;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use baton_core::{Limits, ProjectId, ProjectSettings};
use baton_engine::Engine;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

pub use health::cli_version;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    pub max_body_bytes: usize,
    /// Every request needs a key, even before the first is made (`server.auth =
    /// "required"`, or a listener beyond loopback).
    pub auth_required: bool,
    /// How Baton is reached from outside (fire and session URLs), without a trailing `/`.
    pub public_url: String,
    /// A cron trigger may fire at most this often.
    pub min_cron_interval_ms: i64,
    /// The largest webhook payload accepted.
    pub max_webhook_bytes: usize,
    /// Where Baton's own requests (callbacks) may go.
    pub outbound: callbacks::Outbound,
    /// Jobs' policies and the sandbox.
    pub policies: policy::Policies,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

type VersionCache = Mutex<Option<(Instant, Result<String, String>)>>;
type SettingsCache = Mutex<HashMap<ProjectId, (Instant, Arc<ProjectSettings>)>>;

/// How long a project's settings are reused before they are read again (a change made on
/// this node is seen at once; one made on another, within this).
const SETTINGS_TTL: Duration = Duration::from_secs(2);

struct StateInner {
    engine: Engine,
    cfg: ApiConfig,
    /// Ends SSE streams on shutdown, so graceful shutdown never waits on a client.
    shutdown: CancellationToken,
    version: VersionCache,
    auth: auth::Auth,
    settings: SettingsCache,
    /// How many projects there are, and when that was read.
    shared: std::sync::atomic::AtomicBool,
    limiter: ratelimit::Limiter,
}

impl AppState {
    pub fn new(engine: Engine, cfg: ApiConfig, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(StateInner {
                engine,
                shutdown,
                version: Mutex::new(None),
                auth: auth::Auth::new(cfg.auth_required),
                settings: Mutex::new(HashMap::new()),
                shared: std::sync::atomic::AtomicBool::new(false),
                limiter: ratelimit::Limiter::default(),
                cfg,
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.cfg.limits
    }

    pub fn public_url(&self) -> &str {
        &self.inner.cfg.public_url
    }

    pub fn min_cron_interval_ms(&self) -> i64 {
        self.inner.cfg.min_cron_interval_ms
    }

    pub fn max_webhook_bytes(&self) -> usize {
        self.inner.cfg.max_webhook_bytes
    }

    pub fn outbound(&self) -> &callbacks::Outbound {
        &self.inner.cfg.outbound
    }

    pub fn auth(&self) -> &auth::Auth {
        &self.inner.auth
    }

    pub fn limiter(&self) -> &ratelimit::Limiter {
        &self.inner.limiter
    }

    pub fn policies(&self) -> &policy::Policies {
        &self.inner.cfg.policies
    }

    /// Whether this node has seen Baton shared (more than one project).
    pub(crate) fn seen_shared(&self) -> &std::sync::atomic::AtomicBool {
        &self.inner.shared
    }

    /// A project's quotas and job defaults (a project that has none, or is gone, has the
    /// empty settings).
    pub async fn settings(&self, project: &ProjectId) -> error::ApiResult<Arc<ProjectSettings>> {
        if let Some((at, s)) = self.settings_cache().get(project)
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(s.clone());
        }
        let settings = match self.engine().store().get_project(project).await {
            Ok(r) => Arc::new(serde_json::from_value(r.settings).unwrap_or_default()),
            Err(baton_store::StoreError::NotFound(_)) => Arc::new(ProjectSettings::default()),
            Err(e) => return Err(e.into()),
        };
        self.settings_cache()
            .insert(project.clone(), (Instant::now(), settings.clone()));
        Ok(settings)
    }

    /// Forgets a project's cached settings after a change.
    pub fn forget_project(&self, project: &ProjectId) {
        self.settings_cache().remove(project);
        self.inner
            .shared
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn settings_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ProjectId, (Instant, Arc<ProjectSettings>)>> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn shutdown(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn version_cache(&self) -> &VersionCache {
        &self.inner.version
    }
}

async fn request_id(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if !resp.headers().contains_key("request-id")
        && let Ok(v) = HeaderValue::from_str(&error::new_request_id())
    {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// A method a route does not serve: `405` with the routes's `Allow` header (which the
/// router sets), and the error envelope as the body.
async fn method_not_allowed(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
    let message = match allow.as_ref().and_then(|a| a.to_str().ok()) {
        Some(methods) => format!("this route serves {methods} only"),
        None => "this route does not serve this method".to_string(),
    };
    let mut envelope = axum::response::IntoResponse::into_response(ApiError::new(
        error::ErrorType::MethodNotAllowed,
        message,
    ));
    if let Some(allow) = allow {
        envelope
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    envelope
}

/// A worker node's router: `/v1/health` only, for probes; every other route says where
/// the API is.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health::health))
        .fallback(|| async {
            ApiError::not_found(
                "this node runs with role = worker and serves only /v1/health; \
                 send API requests to a node with role api or all",
            )
        })
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    router_with(state, None)
}

/// The API's router, with the MCP server at `/mcp` (authenticated like every route).
pub fn router_with(state: AppState, mcp: Option<axum::routing::MethodRouter<AppState>>) -> Router {
    let body_limit = state.inner.cfg.max_body_bytes;
    let routes = match mcp {
        Some(mcp) => Router::new().route("/mcp", mcp),
        None => Router::new(),
    };
    routes
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/v1/jobs/{id}/events", get(jobs::job_events))
        .route("/v1/jobs/{id}/retry", post(dead::retry_job))
        .route("/v1/dead", get(dead::list_dead))
        .route("/v1/dead/replay", post(dead::replay_dead))
        .route("/v1/sessions/{id}", get(jobs::get_session))
        .route(
            "/v1/projects",
            post(admin::create_project).get(admin::list_projects),
        )
        .route(
            "/v1/projects/{id}",
            get(admin::get_project)
                .patch(admin::update_project)
                .delete(admin::delete_project),
        )
        .route(
            "/v1/projects/{id}/policy",
            get(policy::get_policy).put(policy::put_policy),
        )
        .route("/v1/keys", post(admin::create_key).get(admin::list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/v1/audit", get(audit::list_audit))
        .route(
            "/v1/agents",
            post(agents::create_agent).get(agents::list_agents),
        )
        .route(
            "/v1/agents/{name}",
            get(agents::get_agent)
                .put(agents::update_agent)
                .delete(agents::delete_agent),
        )
        .route("/v1/agents/{name}/versions", get(agents::agent_versions))
        .route("/v1/agents/{name}/runs", post(agents::run_agent))
        .route("/", post(agents::call))
        .route(
            "/v1/routines",
            post(routines::create_routine).get(routines::list_routines),
        )
        .route(
            "/v1/routines/{id}",
            get(routines::get_routine)
                .patch(routines::update_routine)
                .delete(routines::delete_routine),
        )
        .route("/v1/usage", get(usage::usage))
        .route("/v1/alerts", get(usage::alerts))
        .route("/v1/routines/{id}/pause", post(routines::pause_routine))
        .route("/v1/routines/{id}/resume", post(routines::resume_routine))
        .route("/v1/routines/{id}/runs", get(routines::routine_runs))
        .route("/v1/routines/{id}/triggers", post(routines::add_trigger))
        .route(
            "/v1/triggers/{id}",
            axum::routing::delete(routines::delete_trigger),
        )
        .route("/v1/triggers/{id}/token", post(routines::rotate_token))
        .route("/v1/jobs/{id}/callbacks", get(callbacks::job_callbacks))
        .route("/v1/callbacks/secret", post(callbacks::rotate_secret))
        .route("/v1/chat", post(compat::chat))
        .route("/v1/chat/stream", post(compat::chat_stream))
        .route("/execute", post(compat::execute))
        .route("/sessions/{id}", get(compat::session_status))
        .route("/claude", post(agent_jobs::create))
        .route("/claude/jobs/{id}", get(agent_jobs::get))
        .route("/claude/stream", post(agent_jobs::stream))
        .route(
            facades::openai::COMPLETIONS,
            post(facades::openai::completions),
        )
        .route(facades::openai::MODELS, get(facades::openai::list_models))
        .route(
            facades::anthropic::MESSAGES,
            post(facades::anthropic::messages),
        )
        .route("/openapi.json", get(openapi::openapi_json))
        // Every route above needs a key once one exists; health (below) never does.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route("/v1/health", get(health::health))
        // A trigger's own credentials (a token, a signature) stand for a key here.
        .route(
            "/v1/claude_code/routines/{trig_id}/fire",
            post(routines::fire_route),
        )
        .route(
            "/v1/hooks/{trig_id}",
            post(hooks::hook).layer(DefaultBodyLimit::disable()),
        )
        .merge(ui::router(state.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn(method_not_allowed))
        .layer(axum::middleware::from_fn(facades::openai::error_shape))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// The loops that live above the engine, until `stop`: cron triggers and the callbacks
/// outbox (each a step a second), and the agents' warm pools (every ten seconds); the
/// tests call the steps themselves.
pub fn background(state: &AppState, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    let cron = state.clone();
    let outbox = state.clone();
    vec![
        Engine::spawn_loop("cron", Duration::from_secs(1), stop.clone(), move || {
            let st = cron.clone();
            async move {
                routines::cron_step(&st)
                    .await
                    .map(drop)
                    .map_err(|e| e.message)
            }
        }),
        {
            let st = state.clone();
            Engine::spawn_loop(
                "agent warm pools",
                Duration::from_secs(10),
                stop.clone(),
                move || {
                    let st = st.clone();
                    async move {
                        agents::warm_agents_step(&st)
                            .await
                            .map(drop)
                            .map_err(|e| e.message)
                    }
                },
            )
        },
        Engine::spawn_loop("callbacks", Duration::from_secs(1), stop, move || {
            let st = outbox.clone();
            async move {
                callbacks::deliver_step(&st)
                    .await
                    .map(drop)
                    .map_err(|e| e.message)
            }
        }),
    ]
}
