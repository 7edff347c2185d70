//! Who is calling. A request carries an API key (`Authorization: Bearer <key>` or
//! `x-api-key: <key>`); the key names one project and its scopes. Until the first key is
//! made (and unless `server.auth = "required"`), Baton is open: it serves loopback only and
//! every request acts as an administrator of the `default` project.
//!
//! Handlers state what they need by their extractor: [`JobsRead`], [`JobsWrite`] or
//! [`Admin`], each of which derefs to the [`Caller`], whose project is the only place the
//! handler may look.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_core::ProjectId;
use baton_store::{KeyRecord, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::ratelimit::Standing;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    /// Everything, in every project: projects, keys, the audit log.
    #[serde(rename = "admin")]
    Admin,
    /// Submit, cancel, retry and replay jobs (and read them).
    #[serde(rename = "jobs:write")]
    JobsWrite,
    /// Read jobs, their events, sessions and dead letters (and agents).
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// Create, change and delete agents.
    #[serde(rename = "agents:write")]
    AgentsWrite,
    /// Create, change, pause and delete routines and their triggers.
    #[serde(rename = "routines:write")]
    RoutinesWrite,
    /// Read the project's usage and cost alerts.
    #[serde(rename = "usage:read")]
    UsageRead,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::JobsWrite,
        Scope::JobsRead,
        Scope::AgentsWrite,
        Scope::RoutinesWrite,
        Scope::UsageRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::JobsWrite => "jobs:write",
            Self::JobsRead => "jobs:read",
            Self::AgentsWrite => "agents:write",
            Self::RoutinesWrite => "routines:write",
            Self::UsageRead => "usage:read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether holding `self` allows what `needed` allows.
    fn grants(self, needed: Scope) -> bool {
        self == needed
            || self == Self::Admin
            || (self == Self::JobsWrite && needed == Self::JobsRead)
    }
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id (never its secret); `None` while Baton is open.
    pub key_id: Option<String>,
    pub project: ProjectId,
    pub scopes: Vec<Scope>,
    /// The key's own rate limit, requests a minute.
    pub requests_per_minute: Option<u32>,
}

impl Caller {
    /// Anyone, while no key exists: an administrator of `default`.
    fn open() -> Self {
        Self {
            key_id: None,
            project: ProjectId::default(),
            scopes: vec![Scope::Admin],
            requests_per_minute: None,
        }
    }

    /// Baton itself queueing a job in `project` (a routine's fire, an agent's warm pool):
    /// no key, and only what making a job needs.
    pub fn baton(project: ProjectId) -> Self {
        Self {
            key_id: None,
            project,
            scopes: vec![Scope::JobsWrite],
            requests_per_minute: None,
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s.grants(scope))
    }

    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.has(scope) {
            return Ok(());
        }
        Err(ApiError {
            detail: Some(serde_json::json!({"required_scope": scope.as_str()})),
            ..ApiError::new(
                ErrorType::Permission,
                format!("this API key lacks the scope {}", scope.as_str()),
            )
        })
    }

    /// Whether an object of `project` exists for this caller: its own project's, or any
    /// project's for an administrator. Another project's object is answered exactly as
    /// one that does not exist.
    pub fn sees(&self, project: &ProjectId) -> bool {
        self.project == *project || self.has(Scope::Admin)
    }
}

macro_rules! scoped {
    ($name:ident, $scope:expr) => {
        #[doc = concat!("A caller holding `", stringify!($name), "`'s scope.")]
        pub struct $name(pub Caller);

        impl std::ops::Deref for $name {
            type Target = Caller;
            fn deref(&self) -> &Caller {
                &self.0
            }
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
                let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
                    ApiError::new(ErrorType::Api, "this route is not behind authentication")
                })?;
                caller.require($scope)?;
                Ok(Self(caller))
            }
        }
    };
}

scoped!(JobsRead, Scope::JobsRead);
scoped!(JobsWrite, Scope::JobsWrite);
scoped!(Admin, Scope::Admin);
scoped!(AgentsWrite, Scope::AgentsWrite);
scoped!(RoutinesWrite, Scope::RoutinesWrite);
scoped!(UsageRead, Scope::UsageRead);

/// A caller that may read what `write` changes: with `jobs:read` (which runs need) or
/// `write` itself.
macro_rules! readable {
    ($name:ident, $write:ident, $what:literal) => {
        #[doc = concat!("A caller that may read ", $what, ": with `jobs:read` or the scope that changes them.")]
        pub struct $name(pub Caller);

        impl std::ops::Deref for $name {
            type Target = Caller;
            fn deref(&self) -> &Caller {
                &self.0
            }
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
                match JobsRead::from_request_parts(parts, st).await {
                    Ok(c) => Ok(Self(c.0)),
                    Err(e) => $write::from_request_parts(parts, st)
                        .await
                        .map(|w| Self(w.0))
                        .map_err(|_| e),
                }
            }
        }
    };
}

readable!(AgentsRead, AgentsWrite, "agents");
readable!(RoutinesRead, RoutinesWrite, "routines");

/// How often an open server looks again for a key made elsewhere (by `baton keys create`
/// or another node).
const RECHECK: Duration = Duration::from_secs(1);
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY_MS: i64 = 60_000;
/// How long a key read from the store is trusted without reading it again. A key revoked
/// (or a project deleted) through this node's API is forgotten at once; one revoked by
/// `baton keys revoke` or on another node stops working within this.
pub const KEY_TTL: Duration = Duration::from_secs(1);
/// A key as read from the store: when, its record and its secret's hash.
type CachedKey = (Instant, Arc<(KeyRecord, String)>);

/// Keys held at most before the stale ones are swept.
const KEY_CACHE_SWEEP: usize = 4096;

/// Whether keys are needed, and which were used when.
pub struct Auth {
    /// `server.auth = "required"`, or a listener beyond loopback.
    required: bool,
    /// A key exists: never false again once true.
    keys_exist: AtomicBool,
    checked: Mutex<Option<Instant>>,
    touched: Mutex<HashMap<String, i64>>,
    /// Keys by id, as last read (record, secret hash), and when.
    keys: Mutex<HashMap<String, CachedKey>>,
}

pub const UNAUTHENTICATED: &str =
    "a valid API key is required: send Authorization: Bearer <key> or x-api-key: <key>";

/// A key's caller: its project, scopes and rate limit.
fn caller_of(record: &KeyRecord) -> Caller {
    Caller {
        key_id: Some(record.id.clone()),
        project: record.project_id.clone(),
        // A scope this build does not know (written by a newer one) grants nothing.
        scopes: record
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s))
            .collect(),
        requests_per_minute: record
            .requests_per_minute
            .and_then(|n| u32::try_from(n).ok()),
    }
}

/// HMAC-SHA256 of `payload` keyed with a key's stored hash, hex.
pub(crate) fn session_mac(key_hash: &str, payload: &str) -> String {
    crate::keys::hmac_hex(key_hash.as_bytes(), &[payload.as_bytes()])
}

fn unauthenticated() -> ApiError {
    ApiError::new(ErrorType::Authentication, UNAUTHENTICATED)
}

/// The key a request presents, if any; a header that is there but unreadable presents a
/// key that matches nothing.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or("")
                .trim(),
        );
    }
    headers
        .get("x-api-key")
        .map(|v| v.to_str().unwrap_or("").trim())
}

impl Auth {
    pub fn new(required: bool) -> Self {
        Self {
            required,
            keys_exist: AtomicBool::new(false),
            checked: Mutex::new(None),
            touched: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// A key was made here: enforce from now on.
    pub fn key_made(&self) {
        self.keys_exist.store(true, Ordering::Release);
    }

    /// Whether requests need a key.
    pub async fn enforced(&self, st: &AppState) -> ApiResult<bool> {
        if self.required || self.keys_exist.load(Ordering::Acquire) {
            return Ok(true);
        }
        let due = {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let due = checked.is_none_or(|at| at.elapsed() >= RECHECK);
            if due {
                *checked = Some(Instant::now());
            }
            due
        };
        if due && st.engine().store().any_keys().await? {
            self.key_made();
            tracing::info!("an API key exists: every request now needs one");
            return Ok(true);
        }
        Ok(self.keys_exist.load(Ordering::Acquire))
    }

    /// The caller of a request, or why it is refused.
    pub async fn caller(&self, st: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
        if !self.enforced(st).await? {
            return Ok(Caller::open());
        }
        let presented = presented(headers).ok_or_else(unauthenticated)?;
        let (id, secret) = crate::keys::parse(presented).ok_or_else(unauthenticated)?;
        let found = match self.key(st, id).await {
            Ok(found) => found,
            Err(StoreError::NotFound(_)) => {
                // Hash anyway, so an unknown id takes as long as a wrong secret.
                crate::keys::verify(secret, "");
                return Err(unauthenticated());
            }
            Err(e) => return Err(e.into()),
        };
        let (record, hash) = &*found;
        let now = st.engine().now_ms();
        let live =
            record.revoked_at.is_none() && record.expires_at.is_none_or(|expires| now < expires);
        if !crate::keys::verify(secret, hash) || !live {
            return Err(unauthenticated());
        }
        self.touch(st, &record.id, now).await;
        Ok(caller_of(record))
    }

    /// A browser session for a key: `<key id>.<expires ms>.<mac>`, the MAC keyed with the
    /// stored hash of the key's secret, so every node can check it, it holds no secret,
    /// and revoking the key ends it.
    pub async fn browser_session(
        &self,
        st: &AppState,
        key_id: &str,
        expires: i64,
    ) -> ApiResult<String> {
        let found = self.key(st, key_id).await?;
        let payload = format!("{key_id}.{expires}");
        Ok(format!("{payload}.{}", session_mac(&found.1, &payload)))
    }

    /// The caller of a browser session made by [`Auth::browser_session`], if it is intact,
    /// unexpired and its key is live.
    pub async fn session_caller(&self, st: &AppState, cookie: &str) -> Option<Caller> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        let (key_id, expires) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        let now = st.engine().now_ms();
        if now >= expires {
            return None;
        }
        let found = self.key(st, key_id).await.ok()?;
        let (record, hash) = &*found;
        let expected = session_mac(hash, payload);
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        let live =
            record.revoked_at.is_none() && record.expires_at.is_none_or(|expires| now < expires);
        (same && live).then(|| caller_of(record))
    }

    /// A key by id: from memory when read within [`KEY_TTL`], else from the store.
    async fn key(&self, st: &AppState, id: &str) -> Result<Arc<(KeyRecord, String)>, StoreError> {
        if let Some((at, found)) = self.key_cache().get(id)
            && at.elapsed() < KEY_TTL
        {
            return Ok(found.clone());
        }
        let found = Arc::new(st.engine().store().find_key(id).await?);
        let mut cache = self.key_cache();
        if cache.len() >= KEY_CACHE_SWEEP {
            cache.retain(|_, (at, _)| at.elapsed() < KEY_TTL);
        }
        cache.insert(id.to_string(), (Instant::now(), found.clone()));
        Ok(found)
    }

    fn key_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A key was revoked here: it stops working now.
    pub fn forget_key(&self, id: &str) {
        self.key_cache().remove(id);
    }

    /// A project was deleted here, with its keys.
    pub fn forget_keys(&self) {
        self.key_cache().clear();
    }

    async fn touch(&self, st: &AppState, id: &str, now: i64) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched.get(id).is_some_and(|at| now - at < TOUCH_EVERY_MS) {
                return;
            }
            touched.insert(id.to_string(), now);
        }
        if let Err(e) = st.engine().store().touch_key(id, now).await {
            tracing::warn!(key = %id, error = %e, "could not record a key's use");
        }
    }
}

/// Where the caller stands against its key's and its project's rate limits (an
/// administrator is held to its key's only); `None` when no limit applies.
/// A refusal is the whole answer, with its rate-limit headers.
async fn rate_limit(st: &AppState, caller: &Caller) -> Result<Option<Standing>, Response> {
    let mut limits = Vec::new();
    if let (Some(id), Some(n)) = (&caller.key_id, caller.requests_per_minute) {
        limits.push((format!("key:{id}"), n));
    }
    let project_limit = if caller.has(Scope::Admin) {
        None
    } else {
        let settings = st
            .settings(&caller.project)
            .await
            .map_err(IntoResponse::into_response)?;
        settings.quotas.requests_per_minute
    };
    if let Some(n) = project_limit {
        limits.push((format!("project:{}", caller.project), n));
    }
    if limits.is_empty() {
        return Ok(None);
    }
    let standing = st.limiter().check(&limits, Instant::now());
    match standing {
        Some(s) if !s.allowed => {
            let mut resp = ApiError {
                retry_after: Some(s.retry_after),
                ..ApiError::new(
                    ErrorType::RateLimit,
                    format!(
                        "rate limit: {} requests a minute; retry in {} s",
                        s.limit, s.retry_after
                    ),
                )
            }
            .into_response();
            s.write(resp.headers_mut());
            Err(resp)
        }
        other => Ok(other),
    }
}

/// Marks a request Baton's MCP server makes to the API in process: not held to the rate
/// limits again (the MCP request it serves was). It is a request extension, which only
/// code in this process can set.
#[derive(Debug, Clone, Copy)]
pub struct Inside;

/// Marks `req` as made by Baton's MCP server in process ([`Inside`]).
pub fn mark_inside(req: &mut Request) {
    req.extensions_mut().insert(Inside);
}

/// The middleware of every route but `/v1/health`: finds the caller (or refuses the
/// request), holds it to its rate limits, then writes every change it asks for to the
/// audit log. (A request refused for its key or its rate changes nothing and is not
/// recorded.)
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match st.auth().caller(&st, req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // A request the MCP server makes in process was counted as the MCP request it serves
    // (or is its session's own upkeep); an extension cannot come from outside.
    let standing = if req.extensions().get::<Inside>().is_some() {
        None
    } else {
        match rate_limit(&st, &caller).await {
            Ok(s) => s,
            Err(refused) => return refused,
        }
    };
    let audit = crate::audit::Pending::of(&req, &caller);
    req.extensions_mut().insert(caller);
    let mut resp = next.run(req).await;
    if let Some(s) = standing {
        s.write(resp.headers_mut());
    }
    match audit {
        Some(pending) => pending.record(&st, resp).await,
        None => resp,
    }
}
