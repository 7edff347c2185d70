//! A caller that hangs up stops paying. The synchronous routes (`/v1/chat`,
//! `/v1/chat/stream`, `/claude/stream`, the task-agent call `POST /`) hold a [`Hangup`]
//! while their caller waits: when the request goes away before its answer (the client
//! disconnected, so the server dropped the handler or the stream), the job is cancelled
//! at once. A caller that sends `Baton-Detach: true` keeps its job running; it gets the
//! job's id first, in the `Baton-Job-Id` header, before the answer's body.

use std::future::Future;
use std::task::Poll;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use baton_core::JobId;
use futures_util::{Stream, StreamExt};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;

/// The request header that keeps a job running after its caller hangs up.
pub const DETACH: &str = "baton-detach";
/// The response header that names the job a synchronous route runs.
pub const JOB_ID: &str = "baton-job-id";

/// Whether the request asked to keep its job when it hangs up (`Baton-Detach: true`);
/// any value but `true` or `false` is refused.
pub fn detached(headers: &HeaderMap) -> ApiResult<bool> {
    match headers.get(DETACH).map(|v| v.to_str()) {
        None => Ok(false),
        Some(Ok("true")) => Ok(true),
        Some(Ok("false")) => Ok(false),
        Some(_) => Err(crate::error::ApiError::invalid(
            "Baton-Detach must be true or false",
        )),
    }
}

/// Cancels its job when dropped before [`Hangup::disarm`]: the caller left first. The
/// audit log says so: a request whose answer never left records `job.create` with the
/// outcome `499` (client closed request); a stream that was already answered records
/// `job.cancel`, `499`.
pub struct Hangup {
    st: Option<AppState>,
    job: JobId,
    caller: Caller,
    action: &'static str,
    route: &'static str,
}

impl Hangup {
    /// Armed, unless the request is detached. `answered`: the route's answer has left
    /// (a stream's head), so its creation is already in the audit log.
    pub fn arm(
        st: &AppState,
        caller: &Caller,
        job: JobId,
        detached: bool,
        route: &'static str,
        answered: bool,
    ) -> Self {
        Self {
            st: (!detached).then(|| st.clone()),
            job,
            caller: caller.clone(),
            action: if answered { "job.cancel" } else { "job.create" },
            route,
        }
    }

    /// The answer was given: the job is the caller's no more.
    pub fn disarm(mut self) {
        self.st = None;
    }
}

impl Drop for Hangup {
    fn drop(&mut self) {
        let Some(st) = self.st.take() else { return };
        let job = self.job;
        let (caller, action, route) = (self.caller.clone(), self.action, self.route);
        tracing::info!(job = %job, "the caller hung up before its answer: its job is cancelled");
        // Drop may run outside a runtime only at shutdown, when the job is requeued anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = st.engine().cancel(job).await {
                    tracing::debug!(job = %job, error = %e, "a hung-up caller's job was already over");
                }
                let closed = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
                crate::audit::record_as(
                    &st,
                    closed.into_response(),
                    &caller,
                    action,
                    route,
                    &job.to_string(),
                )
                .await;
            });
        }
    }
}

/// `s`, whose job is cancelled if the stream is dropped before its end.
pub fn guarded<S: Stream>(s: S, guard: Hangup) -> impl Stream<Item = S::Item> {
    let mut guard = Some(guard);
    s.chain(futures_util::stream::poll_fn(move |_| {
        if let Some(g) = guard.take() {
            g.disarm();
        }
        Poll::Ready(None)
    }))
}

/// A streamed answer: `events` as server-sent events (with keep-alive comments) and the
/// job's id in the head; a caller that hangs up before the stream ends cancels the job,
/// unless it detached.
pub fn stream(
    st: &AppState,
    caller: &Caller,
    job: JobId,
    detached: bool,
    route: &'static str,
    events: impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static,
) -> Response {
    let guard = Hangup::arm(st, caller, job, detached, route, true);
    let resp = Sse::new(guarded(events, guard))
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response();
    with_job_id(resp, job)
}

/// `resp` naming its job.
pub fn with_job_id(mut resp: Response, job: JobId) -> Response {
    if let Ok(id) = HeaderValue::from_str(&job.to_string()) {
        resp.headers_mut().insert(JOB_ID, id);
    }
    resp
}

/// A detached synchronous answer: `202` and the job's id at once, then the body when
/// `answer` is ready (the error envelope, if the job failed: the status was sent before
/// the end was known).
pub fn early(
    job: JobId,
    content_type: &str,
    answer: impl Future<Output = ApiResult<Response>> + Send + 'static,
) -> Response {
    let body = futures_util::stream::once(async move {
        let resp = answer.await.unwrap_or_else(IntoResponse::into_response);
        axum::body::to_bytes(resp.into_body(), usize::MAX).await
    });
    let mut resp = (StatusCode::ACCEPTED, Body::from_stream(body)).into_response();
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    with_job_id(resp, job)
}

/// Waits for `answer` while the caller does: a detached request gets [`early`]; any
/// other has its job cancelled if it hangs up first.
pub async fn answer(
    (st, caller, route): (&AppState, &Caller, &'static str),
    job: JobId,
    detached: bool,
    content_type: &str,
    answer: impl Future<Output = ApiResult<Response>> + Send + 'static,
) -> ApiResult<Response> {
    if detached {
        return Ok(early(job, content_type, answer));
    }
    let guard = Hangup::arm(st, caller, job, false, route, false);
    let resp = answer.await;
    guard.disarm();
    resp.map(|r| with_job_id(r, job))
}
