//! The session page a routine's fire links to: `/ui/sessions/{id}` shows the session's
//! runs and follows the newest one live (server-rendered HTML and server-sent events, no
//! front-end build). A browser signs in once by pasting a key (`/ui/login`): it gets an
//! HttpOnly, SameSite=Strict cookie that names the key and is signed with the key's stored
//! hash (it holds no secret; revoking the key ends it). Every form carries a CSRF token:
//! before sign-in, a random one also set as a cookie; after, one derived from the session.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use baton_core::SessionId;
use baton_store::{JobFilter, JobRecord};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Scope};
use crate::follow::{Followed, follow};
use crate::routines::session_name;
use crate::{AppState, wire};

/// The browser session's cookie.
pub const COOKIE: &str = "baton_session";
/// The sign-in form's CSRF cookie.
const CSRF_COOKIE: &str = "baton_csrf";
/// How long a browser session lasts.
const SESSION_MS: i64 = 12 * 3_600_000;

pub fn router(_st: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/sessions/{id}", get(session_page))
        .route("/ui/jobs/{id}/events", get(job_events))
        .route("/ui/jobs/{id}/cancel", post(cancel))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// HTML text or attribute, escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn secure(st: &AppState) -> &'static str {
    if st.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn page(title: &str, nonce: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{} · Baton</title>\
         <meta name=viewport content=\"width=device-width\"><style>body{{font:15px system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em}}\
         pre{{background:#f4f4f4;padding:.6em;white-space:pre-wrap;word-break:break-word}}table{{border-collapse:collapse}}\
         td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut resp = (StatusCode::OK, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if let Ok(csp) = HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    )) {
        h.insert("content-security-policy", csp);
    }
    resp
}

fn random_token() -> String {
    crate::keys::random_hex(32)
}

/// The CSRF token of a signed-in browser: derived from its session cookie.
fn session_csrf(session: &str) -> String {
    crate::keys::hash(&format!("csrf.{session}"))[..32].to_string()
}

/// The caller of a page: a key presented as the API takes it, a browser session, or
/// anyone while Baton is open. `None`: sign in first.
async fn ui_caller(st: &AppState, headers: &HeaderMap) -> Option<(Caller, Option<String>)> {
    if !st.auth().enforced(st).await.ok()? {
        return st.auth().caller(st, headers).await.ok().map(|c| (c, None));
    }
    if let Some(session) = cookie(headers, COOKIE)
        && let Some(c) = st.auth().session_caller(st, session).await
    {
        return Some((c, Some(session.to_string())));
    }
    let keyed = headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key");
    if keyed {
        return st.auth().caller(st, headers).await.ok().map(|c| (c, None));
    }
    None
}

fn to_login(next: &str) -> Response {
    let target = format!("/ui/login?next={}", url_encode(next));
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&target) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Only a path of this server is a place to go after signing in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/login".to_string(),
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

async fn login_form(State(st): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    let csrf = random_token();
    let nonce = random_token();
    let next = safe_next(q.next.as_deref());
    let body = format!(
        "<h1>Sign in to Baton</h1><p>Paste an API key (<code>bk_…</code>) once; this browser keeps a \
         session for 12 hours. The key itself is not kept.</p>\
         <form method=post action=/ui/login><input type=hidden name=csrf value=\"{csrf}\">\
         <input type=hidden name=next value=\"{}\"><input type=password name=key autocomplete=off size=60 required> \
         <button>Sign in</button></form>",
        esc(&next)
    );
    let mut resp = page("Sign in", &nonce, &body);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={csrf}; Path=/ui; HttpOnly; SameSite=Strict{}",
        secure(&st)
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    csrf: String,
    next: Option<String>,
}

fn forbidden(message: &str) -> Response {
    (StatusCode::FORBIDDEN, message.to_string()).into_response()
}

async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || expected != f.csrf {
        return forbidden("the form is stale or came from another site; open /ui/login again");
    }
    let mut presented = HeaderMap::new();
    let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", f.key.trim())) else {
        return (StatusCode::UNAUTHORIZED, "that is not a key").into_response();
    };
    presented.insert(header::AUTHORIZATION, v);
    let caller = match st.auth().caller(&st, &presented).await {
        Ok(c) => c,
        Err(_) => return (StatusCode::UNAUTHORIZED, "that key is not valid").into_response(),
    };
    let Some(key_id) = caller.key_id.clone() else {
        // Open: nothing to sign in to.
        return redirect(&safe_next(f.next.as_deref()), None);
    };
    let expires = st.engine().now_ms() + SESSION_MS;
    let session = match st.auth().browser_session(&st, &key_id, expires).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let set = format!(
        "{COOKIE}={session}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_MS / 1000,
        secure(&st)
    );
    redirect(&safe_next(f.next.as_deref()), Some(set))
}

fn redirect(to: &str, set_cookie: Option<String>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

async fn logout(headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let Some(session) = cookie(&headers, COOKIE) else {
        return redirect("/ui/login", None);
    };
    if f.csrf != session_csrf(session) {
        return forbidden("the form is stale or came from another site");
    }
    redirect(
        "/ui/login",
        Some(format!(
            "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
        )),
    )
}

/// `session_…` (as a fire answers) or the session's UUID.
fn parse_session(id: &str) -> Option<SessionId> {
    SessionId::parse(id.strip_prefix("session_").unwrap_or(id)).ok()
}

fn not_found_page(nonce: &str) -> Response {
    let mut resp = page(
        "Not found",
        nonce,
        "<h1>Not found</h1><p>No such session in this key's project.</p>",
    );
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

fn excerpt(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

fn job_row(j: &JobRecord, csrf: Option<&str>) -> String {
    let view = wire::Job::new(j);
    let outcome = match (&view.error, view.result.as_str()) {
        (Some(e), _) => format!("{}: {}", e.kind, e.message),
        (None, Some(r)) => r.to_string(),
        (None, None) => String::new(),
    };
    let cancel = match csrf {
        Some(token) if !j.state.is_terminal() => format!(
            "<form method=post action=\"/ui/jobs/{}/cancel\"><input type=hidden name=csrf value=\"{token}\"><button>Cancel</button></form>",
            j.id
        ),
        _ => String::new(),
    };
    format!(
        "<tr><td><code>{}</code><br>{}</td><td><b>{}</b> (attempt {})</td><td><pre>{}</pre></td><td><pre>{}</pre>{cancel}</td></tr>",
        j.id,
        esc(&wire::timestamp(j.created_at)),
        j.state.as_str(),
        j.attempt,
        esc(&excerpt(&j.spec.prompt, 2000)),
        esc(&excerpt(&outcome, 4000)),
    )
}

#[utoipa::path(get, path = "/ui/sessions/{id}", tag = "ui",
    params(("id" = String, Path, description = "session_… (as a routine's fire answers) or the session's UUID")),
    responses((status = 200, description = "The session's runs, the newest followed live", content_type = "text/html"),
        (status = 303, description = "Sign in first (to /ui/login)"),
        (status = 404, description = "No such session in the caller's project", content_type = "text/html")))]
pub async fn session_page(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let nonce = random_token();
    let Some((caller, session)) = ui_caller(&st, &headers).await else {
        return to_login(&format!("/ui/sessions/{id}"));
    };
    if !caller.has(Scope::JobsRead) {
        return forbidden("this key cannot read jobs (it needs jobs:read)");
    }
    let Some(sid) = parse_session(&id) else {
        return not_found_page(&nonce);
    };
    let jobs = match st
        .engine()
        .store()
        .list_jobs(&JobFilter {
            project_id: caller.project.clone(),
            session_id: Some(sid.to_string()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
    {
        Ok(j) => j,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    if jobs.is_empty() {
        return not_found_page(&nonce);
    }
    let csrf = session.as_deref().map(session_csrf);
    let can_cancel = caller.has(Scope::JobsWrite);
    let rows: String = jobs
        .iter()
        .map(|j| job_row(j, csrf.as_deref().filter(|_| can_cancel)))
        .collect();
    let live = jobs.iter().find(|j| !j.state.is_terminal());
    let follow = match live {
        Some(j) => format!(
            "<h2>Live: job <code>{id}</code></h2><pre id=events></pre>\
             <script nonce=\"{nonce}\">const out=document.getElementById('events');\
             const es=new EventSource('/ui/jobs/{id}/events');\
             es.onmessage=(m)=>{{const e=JSON.parse(m.data);out.textContent+=e.kind+' '+JSON.stringify(e.data)+'\\n';\
             if(e.terminal){{es.close();setTimeout(()=>location.reload(),500);}}}};\
             es.onerror=()=>{{es.close();}};</script>",
            id = j.id
        ),
        None => String::new(),
    };
    let logout = match &csrf {
        Some(t) => format!(
            "<form method=post action=/ui/logout style=float:right><input type=hidden name=csrf value=\"{t}\"><button>Sign out</button></form>"
        ),
        None => String::new(),
    };
    let name = session_name(sid);
    let body = format!(
        "{logout}<h1>Session <code>{}</code></h1><p>Project <b>{}</b> · {} run(s)</p>\
         <table><tr><th>Job</th><th>State</th><th>Prompt</th><th>Outcome</th></tr>{rows}</table>{follow}",
        esc(&name),
        esc(caller.project.as_str()),
        jobs.len(),
    );
    page(&name, &nonce, &body)
}

async fn job_of_caller(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Caller, Option<String>, JobRecord), Response> {
    let Some((caller, session)) = ui_caller(st, headers).await else {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    };
    match crate::jobs::job_of(st, &caller, id).await {
        Ok(j) => Ok((caller, session, j)),
        Err(e) => Err(e.into_response()),
    }
}

async fn job_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (caller, _, job) = match job_of_caller(&st, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !caller.has(Scope::JobsRead) {
        return forbidden("this key cannot read jobs");
    }
    let stream = follow(st.clone(), job.id, 0).map(|item| {
        Ok::<_, Infallible>(match item {
            Followed::Event(e) => Event::default().id(e.seq.to_string()).data(
                json!({"seq": e.seq, "kind": e.kind, "data": e.data,
                       "terminal": baton_core::is_terminal_kind(&e.kind)})
                .to_string(),
            ),
            Followed::Failed(message) => Event::default()
                .data(json!({"kind": "error", "data": message, "terminal": true}).to_string()),
        })
    });
    let shutdown = st.shutdown();
    let stream = stream.take_until(async move { shutdown.cancelled().await });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn cancel(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (caller, session, job) = match job_of_caller(&st, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(session) = session else {
        return forbidden("sign in to use the page's forms");
    };
    if f.csrf != session_csrf(&session) {
        return forbidden("the form is stale or came from another site");
    }
    if !caller.has(Scope::JobsWrite) {
        return forbidden("this key cannot cancel jobs (it needs jobs:write)");
    }
    let back = match job.spec.session.owned_session() {
        Some(s) => format!("/ui/sessions/{}", session_name(s)),
        None => "/ui/login".into(),
    };
    let resp = match st.engine().cancel(job.id).await {
        Ok(_) => redirect(&back, None),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    };
    crate::audit::record_as(
        &st,
        resp,
        &caller,
        "job.cancel",
        "/ui/jobs/{id}/cancel",
        &id,
    )
    .await
}
