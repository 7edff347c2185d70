//! The HTTP side: one fallback handler that routes by method and path, so that `HEAD` on
//! any path and the Anthropic-style 404 are under our control rather than the router's.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::conversation::Conversation;
use crate::directive;
use crate::record::{RecordedRequest, redact};
use crate::render::{RenderedMessage, new_id};
use crate::reply::{ApiError, Reply};

/// Bodies above this are refused; the CLI's largest requests are well under 1 MiB.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The model the mock answers with when a request names none.
const DEFAULT_MODEL: &str = "claude-opus-5-5";

/// Everything the handlers share with [`crate::MockAnthropic`].
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    started: Instant,
    /// Cancelled when the mock is dropped: ends hanging requests and stalled streams.
    pub(crate) shutdown: CancellationToken,
    /// The number of `POST /v1/messages` received since start or the last `clear()`.
    messages_seen: watch::Sender<usize>,
    max_logged: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Reply>,
    log: VecDeque<RecordedRequest>,
    /// Prompts `MOCK_ERROR_ONCE` has already failed.
    errored_once: HashSet<String>,
}

impl Shared {
    pub(crate) fn new(max_logged: Option<usize>) -> Self {
        Self {
            state: Mutex::default(),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            messages_seen: watch::Sender::new(0),
            max_logged,
        }
    }

    /// A panicking test thread must not make every later call panic too: the state stays
    /// consistent between statements, so a poisoned lock is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, reply: Reply) {
        self.state().queue.push_back(reply);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.state().log.iter().cloned().collect()
    }

    pub(crate) fn queued(&self) -> usize {
        self.state().queue.len()
    }

    pub(crate) fn clear(&self) {
        *self.state() = State::default();
        self.messages_seen.send_replace(0);
    }

    pub(crate) async fn wait_for_messages(&self, count: usize) {
        let mut seen = self.messages_seen.subscribe();
        // The sender lives as long as `self`, so this only returns once the count is met.
        let _ = seen.wait_for(|n| *n >= count).await;
    }

    fn record(&self, state: &mut State, request: RecordedRequest) {
        if let Some(max) = self.max_logged {
            while state.log.len() >= max.max(1) {
                state.log.pop_front();
            }
        }
        if request.is_messages() {
            self.messages_seen.send_modify(|n| *n += 1);
        }
        state.log.push_back(request);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error_response(&ApiError::new(413, "request body too large"));
    };
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();

    if path.starts_with("/__mock/") {
        return control(&shared, &parts.method, &path);
    }

    let mut record = RecordedRequest {
        at_ms: shared.elapsed_ms(),
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: collect_headers(&parts.headers),
        body,
        reply: String::new(),
    };
    tracing::debug!(method = %record.method, path = %record.path, "mock-anthropic request");

    if parts.method == Method::POST && path == "/v1/messages" {
        return messages(&shared, record, bytes.is_empty()).await;
    }

    let response = match (&parts.method, path.as_str()) {
        // The CLI's preflight is `HEAD <base>/`; answering every HEAD keeps a base URL
        // with a path prefix working too.
        (&Method::HEAD, _) => {
            record.reply = "head-200".into();
            StatusCode::OK.into_response()
        }
        (&Method::POST, "/v1/messages/count_tokens") => {
            let tokens = record
                .body
                .as_ref()
                .map_or(1, |body| Conversation::new(body).estimated_input_tokens());
            record.reply = "count_tokens".into();
            json_response(StatusCode::OK, json!({"input_tokens": tokens}).to_string())
        }
        (&Method::GET, "/v1/models") => {
            record.reply = "models".into();
            json_response(StatusCode::OK, models().to_string())
        }
        _ => {
            record.reply = "404".into();
            error_response(&ApiError::new(
                404,
                format!("mock: no route for {} {}", parts.method, path),
            ))
        }
    };
    let mut state = shared.state();
    shared.record(&mut state, record);
    response
}

/// `GET /__mock/requests` returns the log; `POST /__mock/clear` empties it and the queue.
fn control(shared: &Shared, method: &Method, path: &str) -> Response {
    match (method, path) {
        (&Method::GET, "/__mock/requests") => json_response(
            StatusCode::OK,
            serde_json::to_string(&shared.requests()).expect("the log serialises"),
        ),
        (&Method::POST, "/__mock/clear") => {
            shared.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error_response(&ApiError::new(404, format!("mock: no control {path}"))),
    }
}

async fn messages(shared: &Shared, mut record: RecordedRequest, empty_body: bool) -> Response {
    let Some(body) = record.body.clone() else {
        let message = if empty_body {
            "messages: body is required"
        } else {
            "messages: body is not valid JSON"
        };
        record.reply = "400".into();
        let mut state = shared.state();
        shared.record(&mut state, record);
        return error_response(&ApiError::new(400, message));
    };
    let conv = Conversation::new(&body);

    // Decide and log in one critical section, so concurrent requests take queued replies
    // in arrival order and a hanging request is already in the log.
    let reply = {
        let mut state = shared.state();
        let (reply, label) = if conv.is_classifier() {
            // The classifier bypasses the queue: a scripted tool call meant for the main
            // loop would otherwise make it fail closed (README §16.21).
            (directive::classifier_reply(&conv), "classifier".to_owned())
        } else if let Some(reply) = state.queue.pop_front() {
            (reply, "queue".to_owned())
        } else {
            let (reply, label) = directive::choose(&conv, &mut state.errored_once);
            (reply, label.to_owned())
        };
        record.reply = label;
        shared.record(&mut state, record);
        reply
    };

    let request_id = new_id("req");
    let mut response = match reply {
        Reply::Hang => hang(&shared.shutdown).await,
        Reply::Error(error) => error_response(&error),
        Reply::Message(message) => {
            let model = conv.model().unwrap_or(DEFAULT_MODEL);
            let rendered = RenderedMessage::new(&message, model, &conv.stop_sequences());
            if conv.is_streaming() {
                sse_response(&rendered, shared.shutdown.clone())
            } else if rendered.stalls() {
                hang(&shared.shutdown).await
            } else {
                tokio::select! {
                    () = tokio::time::sleep(rendered.total_delay()) => {
                        json_response(StatusCode::OK, rendered.to_json())
                    }
                    () = shared.shutdown.cancelled() => aborted(),
                }
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        // The CLI reports this as `request_id` on its assistant events.
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Waits until the mock shuts down, then cuts the connection without an answer.
async fn hang(shutdown: &CancellationToken) -> Response {
    shutdown.cancelled().await;
    aborted()
}

/// A response whose body fails at once: hyper then drops the connection, so the client
/// sees a cut connection rather than a well-formed answer.
fn aborted() -> Response {
    let body =
        stream::once(async { Err::<Bytes, _>(io::Error::other("mock-anthropic shut down")) });
    (StatusCode::SERVICE_UNAVAILABLE, Body::from_stream(body)).into_response()
}

fn sse_response(message: &RenderedMessage, shutdown: CancellationToken) -> Response {
    let stall = message.stalls();
    let cancel = shutdown.clone();
    let frames = stream::iter(message.to_frames()).then(move |frame| {
        let shutdown = shutdown.clone();
        async move {
            if !frame.delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(frame.delay) => {}
                    () = shutdown.cancelled() => {
                        return Err(io::Error::other("mock-anthropic shut down"));
                    }
                }
            }
            Ok(Bytes::from(frame.text))
        }
    });
    let body = if stall {
        // Keep the connection open and silent; end it (as an error, so the client sees a
        // broken stream, not a clean end) when the mock shuts down.
        let silence = stream::once(async move {
            cancel.cancelled().await;
            Err(io::Error::other("mock-anthropic shut down"))
        });
        Body::from_stream(frames.chain(silence))
    } else {
        Body::from_stream(frames)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"type":"error","error":{"type":…,"message":…}}`, keys in the API's order.
#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let envelope = ErrorEnvelope {
        kind: "error",
        error: ErrorDetail {
            kind: &error.error_type,
            message: &error.message,
        },
    };
    let body = serde_json::to_string(&envelope).expect("error envelope serialises");
    let mut response = json_response(status, body);
    let headers = response.headers_mut();
    if let Some(seconds) = error.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status.is_server_error() {
        // As the fixtures' mock did; the API sends it on retryable errors.
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    }
    response
}

fn collect_headers(headers: &axum::http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = redact(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
        out.entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

fn models() -> Value {
    let models = [
        ("claude-opus-5-5", "Claude Opus 5.5"),
        ("claude-fable-5-2", "Claude Fable 5.2"),
        ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
        ("claude-haiku-5-5", "Claude Haiku 5.5"),
    ];
    let data: Vec<Value> = models
        .iter()
        .map(|(id, name)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": "2025-10-01T00:00:00Z"})
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models[0].0,
        "last_id": models[models.len() - 1].0,
    })
}
