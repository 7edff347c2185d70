//! The credential proxy. Baton serves the Anthropic API to its own CLIs on loopback: each
//! attempt gets a token of its own as its API key and the proxy as its base URL. The proxy
//! knows from the token which project, job and attempt makes each call, swaps the token for
//! the real credential (which never reaches the CLI), forwards to the upstream API, passes
//! the answer back as it arrives (a stream chunk by chunk, never buffered), and meters it:
//! the usage the answer reports, priced per model, goes to a [`Sink`] (Baton's ledger).
//! A token dies with its attempt ([`Token`] revokes it when dropped).

pub mod egress;
mod meter;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

pub use meter::{Meter, Price, Prices, Usage};

/// A credential, never shown: its `Debug` says only what kind it is.
#[derive(Clone)]
pub enum Credential {
    /// An API key, sent upstream as `x-api-key`.
    ApiKey(String),
    /// An OAuth token (`claude setup-token`), sent as `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiKey(_) => f.write_str("ApiKey(…)"),
            Self::Bearer(_) => f.write_str("Bearer(…)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The API's base URL, e.g. `https://api.anthropic.com` or a company gateway.
    pub upstream: String,
    pub credential: Credential,
    pub prices: Prices,
    /// How long connecting upstream and its first byte may take.
    pub connect_timeout: Duration,
    /// Also serve on this Unix socket (for sandboxed CLIs, which have no network), made
    /// afresh with mode 0600.
    pub socket: Option<std::path::PathBuf>,
}

/// Who a token stands for: every call made with it is charged here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub project: String,
    pub job: String,
    pub attempt: u32,
    pub key_id: Option<String>,
    pub agent: Option<String>,
    pub routine: Option<String>,
    /// The budgets the token's calls count against.
    pub limits: Vec<Limit>,
}

/// A budget in one window. Tokens whose limits name the same `scope` share its spend, so
/// concurrent jobs of one project draw on one project budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The budget and its window, e.g. `project:acme:day:2026-12-06` or `job:<id>`.
    pub scope: String,
    /// How a refusal names it, e.g. "the project's daily budget ($5.00)".
    pub label: String,
    /// Millionths of a dollar.
    pub cap_micro_usd: i64,
    /// What the ledger held for the scope when the token was granted (calls of other
    /// nodes, and of earlier attempts).
    pub spent_micro_usd: i64,
}

/// A live token's grant, and the budget its calls were refused for, if one was.
#[derive(Debug, Clone)]
struct Live {
    grant: Grant,
    exceeded: Arc<Mutex<Option<String>>>,
}

/// What a budget's window has spent, as this proxy knows it.
#[derive(Debug, Default)]
struct Spent {
    spent: i64,
    /// The price of calls on their way (each reserved at the dearest call so far).
    reserved: i64,
    /// The dearest call so far: a call is let through only if one more like it fits, so
    /// spend stays within one call per attempt of the cap.
    dearest: i64,
    /// Live tokens counting against it; forgotten at none.
    tokens: usize,
}

#[derive(Default)]
struct Tables {
    /// SHA-256 of each live token → its grant.
    tokens: HashMap<String, Live>,
    scopes: HashMap<String, Spent>,
}

/// One metered call.
#[derive(Debug, Clone)]
pub struct Call {
    pub grant: Grant,
    pub path: String,
    pub status: u16,
    pub usage: Usage,
    /// Millionths of a dollar.
    pub cost_micro_usd: i64,
    /// Whether the price table knew the model (else the dearest price was charged).
    pub priced: bool,
    pub duration_ms: u64,
}

/// Where calls and refusals go. Implemented over Baton's store.
pub trait Sink: Send + Sync + 'static {
    fn record(&self, call: Call) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// A request with a token that is not (or no longer) an attempt's.
    fn refused(&self, path: String) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

struct Inner {
    cfg: Config,
    http: reqwest::Client,
    tables: Mutex<Tables>,
    sink: Arc<dyn Sink>,
}

/// The running proxy.
pub struct Proxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    unix: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(t) = &self.unix {
            t.abort();
        }
    }
}

/// An attempt's token: the value to give the CLI, revoked when this is dropped.
pub struct Token {
    value: String,
    hash: String,
    proxy: Weak<Inner>,
    exceeded: Arc<Mutex<Option<String>>>,
}

impl Token {
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The budget the proxy refused a call of this token's for, if it did.
    pub fn budget_exceeded(&self) -> Option<String> {
        self.exceeded.lock().ok()?.clone()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Some(inner) = self.proxy.upgrade()
            && let Ok(mut t) = inner.tables.lock()
            && let Some(live) = t.tokens.remove(&self.hash)
        {
            for limit in &live.grant.limits {
                if let Some(s) = t.scopes.get_mut(&limit.scope) {
                    s.tokens -= 1;
                }
                forget_if_idle(&mut t, &limit.scope);
            }
        }
    }
}

/// Forgets a scope no token counts against and no call is on its way in: the ledger
/// knows its spend.
fn forget_if_idle(t: &mut Tables, scope: &str) {
    if t.scopes
        .get(scope)
        .is_some_and(|s| s.tokens == 0 && s.reserved == 0)
    {
        t.scopes.remove(scope);
    }
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Proxy {
    /// Binds `127.0.0.1` on a free port and serves.
    pub async fn start(cfg: Config, sink: Arc<dyn Sink>) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            cfg,
            http,
            tables: Mutex::new(Tables::default()),
            sink,
        });
        let socket = inner.cfg.socket.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let unix = match socket {
            None => None,
            Some(path) => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                let listener = tokio::net::UnixListener::bind(&path)?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )?;
                let app = app.clone();
                Some(tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!(error = %e, "the credential proxy's socket stopped");
                    }
                }))
            }
        };
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the credential proxy stopped");
            }
        });
        Ok(Self {
            inner,
            addr,
            task,
            unix,
        })
    }

    /// What a CLI gets as `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new token for `grant`, live until the returned [`Token`] is dropped.
    pub fn grant(&self, grant: Grant) -> Token {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let value = format!(
            "btk-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let hash = digest(&value);
        let exceeded = Arc::new(Mutex::new(None));
        if let Ok(mut t) = self.inner.tables.lock() {
            for limit in &grant.limits {
                let s = t.scopes.entry(limit.scope.clone()).or_default();
                s.tokens += 1;
                // The ledger may know calls this proxy did not see (another node's).
                s.spent = s.spent.max(limit.spent_micro_usd);
            }
            t.tokens.insert(
                hash.clone(),
                Live {
                    grant,
                    exceeded: exceeded.clone(),
                },
            );
        }
        Token {
            value,
            hash,
            proxy: Arc::downgrade(&self.inner),
            exceeded,
        }
    }

    /// Moves a live token to another grant: a warm process's, started before any job,
    /// taken by one.
    pub fn rebind(&self, token: &Token, grant: Grant) {
        let Ok(mut t) = self.inner.tables.lock() else {
            return;
        };
        let Some(old) = t.tokens.get(&token.hash).map(|l| l.grant.clone()) else {
            return;
        };
        for limit in &old.limits {
            if let Some(s) = t.scopes.get_mut(&limit.scope) {
                s.tokens -= 1;
            }
            forget_if_idle(&mut t, &limit.scope);
        }
        for limit in &grant.limits {
            let s = t.scopes.entry(limit.scope.clone()).or_default();
            s.tokens += 1;
            s.spent = s.spent.max(limit.spent_micro_usd);
        }
        if let Some(live) = t.tokens.get_mut(&token.hash) {
            live.grant = grant;
        }
    }

    /// Tokens live now.
    pub fn live_tokens(&self) -> usize {
        self.inner.tables.lock().map_or(0, |t| t.tokens.len())
    }
}

/// Sets aside a call's price (the dearest call so far) in each of the grant's budgets, or
/// names the first budget that has no room for it.
fn reserve(inner: &Arc<Inner>, grant: &Grant) -> Result<Reservation, String> {
    let reservation = |amount| Reservation {
        inner: inner.clone(),
        grant: grant.clone(),
        amount,
        settled: false,
    };
    let Ok(mut t) = inner.tables.lock() else {
        return Ok(reservation(0));
    };
    let need = grant
        .limits
        .iter()
        .filter_map(|l| t.scopes.get(&l.scope))
        .map(|s| s.dearest)
        .max()
        .unwrap_or(0)
        .max(1);
    for l in &grant.limits {
        let s = t.scopes.get(&l.scope);
        let (spent, reserved) = s.map_or((l.spent_micro_usd, 0), |s| (s.spent, s.reserved));
        if spent + reserved + need > l.cap_micro_usd {
            return Err(l.label.clone());
        }
    }
    for l in &grant.limits {
        if let Some(s) = t.scopes.get_mut(&l.scope) {
            s.reserved += need;
        }
    }
    Ok(reservation(need))
}

/// A call's price set aside in its budgets: settled with the call's cost, or with none
/// when the call goes nowhere (the upstream failed, or the CLI went away before an
/// answer and the handler was dropped).
struct Reservation {
    inner: Arc<Inner>,
    grant: Grant,
    amount: i64,
    settled: bool,
}

impl Reservation {
    fn settle(&mut self, cost: i64) {
        if !std::mem::replace(&mut self.settled, true) {
            settle(&self.inner, &self.grant, self.amount, cost);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle(0);
    }
}

/// A call is over: its reservation is released and its cost counted.
fn settle(inner: &Inner, grant: &Grant, reserved: i64, cost: i64) {
    let Ok(mut t) = inner.tables.lock() else {
        return;
    };
    for l in &grant.limits {
        if let Some(s) = t.scopes.get_mut(&l.scope) {
            s.reserved -= reserved;
            s.spent += cost;
            s.dearest = s.dearest.max(cost);
        }
        forget_if_idle(&mut t, &l.scope);
    }
}

/// An answer in the API's own error shape.
fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The API paths the proxy forwards: those whose cost it can see in the answer, and the
/// free ones. Others (batches, files) would spend money no answer reports.
fn metered_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    matches!(
        path,
        "/v1/messages" | "/v1/messages/count_tokens" | "/v1/models"
    ) || path.starts_with("/v1/models/")
}

/// Headers that are the connection's, or a credential's: never forwarded.
fn hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "x-api-key"
            | "authorization"
            | "proxy-authorization"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "accept-encoding"
    )
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // The CLI's preflight.
    if parts.method == Method::HEAD && parts.uri.path() == "/" {
        return StatusCode::OK.into_response();
    }
    let path = parts.uri.path().to_string();
    if !metered_path(&path) {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "Baton's proxy serves /v1/messages, /v1/messages/count_tokens and /v1/models only",
        );
    }
    let hash = presented(&parts.headers).map(digest);
    let live = hash
        .as_ref()
        .and_then(|h| inner.tables.lock().ok()?.tokens.get(h).cloned());
    let (Some(_), Some(live)) = (hash, live) else {
        let sink = inner.sink.clone();
        sink.refused(path).await;
        return api_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    };
    let reserved = match reserve(&inner, &live.grant) {
        Ok(r) => r,
        Err(label) => {
            if let Ok(mut e) = live.exceeded.lock() {
                e.get_or_insert_with(|| label.clone());
            }
            tracing::info!(job = %live.grant.job, budget = %label, "proxy: a budget is spent; the call is refused");
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Baton: {label} is spent; the call was not made"),
            );
        }
    };
    let grant = live.grant.clone();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}{path}{query}", inner.cfg.upstream.trim_end_matches('/'));
    let mut out = inner.http.request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if !hop(name) {
            out = out.header(name, value);
        }
    }
    out = match &inner.cfg.credential {
        Credential::ApiKey(k) => out.header("x-api-key", k),
        Credential::Bearer(t) => out.header(header::AUTHORIZATION, format!("Bearer {t}")),
    };
    out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    let started = Instant::now();
    let upstream = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                "the API did not answer in time"
            } else {
                "the API could not be reached"
            };
            tracing::warn!(job = %grant.job, error = %e.without_url(), "proxy: {why}");
            return api_error(StatusCode::BAD_GATEWAY, "api_error", why);
        }
    };
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            headers.append(name.clone(), value.clone());
        }
    }
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let metered = Arc::new(Mutex::new(Metered {
        meter: Some(Meter::new(&content_type)),
        inner: inner.clone(),
        reserved,
        grant,
        path,
        status: status.as_u16(),
        started,
    }));
    let fed = metered.clone();
    let sink = inner.sink.clone();
    // The answer's end reaches the CLI only once its call is in the ledger: when an
    // attempt ends, its calls are all counted.
    let recorded = futures_util::stream::once(async move {
        let call = metered.lock().ok().and_then(|mut m| m.take());
        if let Some(call) = call {
            // Its own task: a CLI that goes away now does not cancel the write.
            let _ = tokio::spawn(sink.record(call)).await;
        }
    })
    .filter_map(|()| async { None });
    let stream = upstream
        .bytes_stream()
        .map(move |chunk| {
            if let (Ok(c), Ok(mut m)) = (&chunk, fed.lock()) {
                m.feed(c);
            }
            chunk.map_err(std::io::Error::other)
        })
        .chain(recorded);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if !resp.headers().contains_key(header::CONTENT_TYPE)
        && let Ok(v) = HeaderValue::from_str(&content_type)
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A response on its way: metered as it passes, recorded when it ends (or is dropped,
/// when the CLI goes away mid-stream).
struct Metered {
    meter: Option<Meter>,
    inner: Arc<Inner>,
    /// What was set aside for the call in each of its budgets.
    reserved: Reservation,
    grant: Grant,
    path: String,
    status: u16,
    started: Instant,
}

impl Metered {
    fn feed(&mut self, chunk: &[u8]) {
        if let Some(m) = &mut self.meter {
            m.feed(chunk);
        }
    }
}

impl Metered {
    /// The call, once: priced, and counted in its budgets.
    fn take(&mut self) -> Option<Call> {
        let usage = self.meter.take()?.finish();
        let (price, priced) = self.inner.cfg.prices.of(usage.model.as_deref());
        let call = Call {
            grant: self.grant.clone(),
            path: std::mem::take(&mut self.path),
            status: self.status,
            cost_micro_usd: price.micro_usd(&usage),
            usage,
            priced,
            duration_ms: self.started.elapsed().as_millis() as u64,
        };
        self.reserved.settle(call.cost_micro_usd);
        Some(call)
    }
}

/// A CLI that goes away mid-answer: the call is still counted and recorded.
impl Drop for Metered {
    fn drop(&mut self) {
        if let Some(call) = self.take() {
            let record = self.inner.sink.record(call);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(record);
            }
        }
    }
}
