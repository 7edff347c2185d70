//! OpenAI's Chat Completions API (`POST /v1/chat/completions`, `GET /v1/models`), so a
//! client written against the OpenAI SDK runs Claude Code by changing its base URL.
//! Errors on these routes have OpenAI's shape (`{"error": {"message", "type", "param",
//! "code"}}`), rewritten from the envelope by [`error_shape`].

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use baton_store::JobRecord;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{BLOCK_GAP, Conversation, Piece, Turn, Usage, unsupported};
use crate::audit::Target;
use crate::auth::{JobsRead, JobsWrite};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::jobs::idempotency;
use crate::{AppState, wire};

pub const COMPLETIONS: &str = "/v1/chat/completions";
pub const MODELS: &str = "/v1/models";

/// A Chat Completions request. Sampling settings (`temperature`, `max_tokens`, …) are
/// accepted and left to Claude Code; what it cannot do (tools from the client, several
/// choices, images) is refused.
#[derive(Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A Claude model (`sonnet`, `claude-…`) or a saved agent (`agent/<name>`).
    #[schema(min_length = 1, max_length = 200)]
    model: String,
    #[schema(min_items = 1)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// Continue this Claude session (Baton's extension; a conversation Baton answered
    /// before is found without it).
    #[schema(format = "uuid")]
    session_id: Option<String>,
    /// Only 1.
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
    /// Not supported: an agent (`agent/<name>`) brings its own tools.
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    tools: Option<Vec<Value>>,
    /// Not supported.
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    functions: Option<Vec<Value>>,
    #[schema(value_type = Option<Object>)]
    response_format: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct ChatMessage {
    #[schema(pattern = "^(system|developer|user|assistant)$")]
    role: String,
    /// A string, or a list of `{"type": "text", "text"}` parts.
    #[schema(value_type = Object)]
    content: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    tool_calls: Option<Vec<Value>>,
}

/// The text of one message's content: a string or a list of text parts.
fn text_of(role: &str, content: Option<&Value>) -> ApiResult<String> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => super::text_parts(parts, "part", "\n"),
        None | Some(Value::Null) => Err(ApiError::invalid(format!(
            "a {role} message needs its content"
        ))),
        Some(_) => Err(ApiError::invalid(
            "content must be a string or a list of parts",
        )),
    }
}

impl ChatCompletionRequest {
    fn conversation(&self) -> ApiResult<Conversation> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(unsupported("n other than 1"));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty())
            || self.functions.as_ref().is_some_and(|f| !f.is_empty())
        {
            return Err(unsupported(
                "tools from the client (an agent, model agent/<name>, brings its own)",
            ));
        }
        if let Some(format) = &self.response_format
            && format["type"] != "text"
        {
            return Err(unsupported(format!("response_format {}", format["type"])));
        }
        let mut system = Vec::new();
        let mut turns = Vec::new();
        for m in &self.messages {
            match m.role.as_str() {
                "system" | "developer" => system.push(text_of(&m.role, m.content.as_ref())?),
                "user" | "assistant" => {
                    if m.tool_calls.as_ref().is_some_and(|t| !t.is_empty()) {
                        return Err(unsupported("a tool-call turn from the client"));
                    }
                    turns.push(Turn {
                        assistant: m.role == "assistant",
                        text: text_of(&m.role, m.content.as_ref())?,
                    });
                }
                "tool" | "function" => {
                    return Err(unsupported(format!("a message with role {:?}", m.role)));
                }
                other => return Err(ApiError::invalid(format!("unknown role {other:?}"))),
            }
        }
        Ok(Conversation {
            model: self.model.clone(),
            system: (!system.is_empty()).then(|| system.join(BLOCK_GAP)),
            turns,
            session_id: self.session_id.clone(),
            stream: self.stream.unwrap_or(false),
        })
    }
}

fn completion_id(job: &JobRecord) -> String {
    format!("chatcmpl-{}", job.id.to_string().replace('-', ""))
}

fn usage_json(u: Usage) -> Value {
    let prompt = u.input + u.cache_creation + u.cache_read;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
    })
}

/// `POST /v1/chat/completions`: a durable job; its answer as a `chat.completion`, or,
/// with `stream: true`, a `chat.completion.chunk` per text delta, then `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "OpenAI-compatible",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header),
        ("Baton-Detach" = Option<wire::params::Detach>, Header, description = "true: the job keeps running if the caller hangs up before the answer (else it is cancelled)")),
    request_body = ChatCompletionRequest,
    responses((status = 200, description = "A chat.completion, or (stream) chat.completion.chunk events", body = Object),
        (status = 202, description = "Detached: Baton-Job-Id at once; the body follows when the job ends"),
        (status = 404, description = "An unknown model or agent", body = Object),
        (status = 502, description = "The job failed", body = Object),
        (status = 504, description = "The job did not finish in time; it keeps running", body = Object),
        (status = "default", description = "An error, in OpenAI's shape", body = Object)))]
pub async fn completions(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<ChatCompletionRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /v1/chat/completions", &body.raw)?;
    let detached = crate::hangup::detached(&headers)?;
    let conv = body.value.conversation()?;
    let include_usage = body
        .value
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let job = super::start(&st, &caller, &conv, idem).await?;
    let job_id = job.id;
    let resp = if conv.stream {
        let events = chunks(
            st.clone(),
            &job,
            conv.model.clone(),
            include_usage,
            detached,
        );
        crate::hangup::stream(&st, &caller, job_id, detached, COMPLETIONS, events)
    } else {
        let finish = answer(st.clone(), job, conv.model.clone());
        super::answered(&st, &caller, job_id, detached, COMPLETIONS, finish).await?
    };
    Ok(Target::on(resp, job_id.to_string(), None))
}

/// The `chat.completion` of a job, once it completes.
async fn answer(st: AppState, job: JobRecord, model: String) -> ApiResult<Response> {
    let done = match super::finished(&st, &job).await {
        Ok(done) => done,
        Err(resp) => return Ok(resp),
    };
    let text = super::answer(&st, &done).await?.join(BLOCK_GAP);
    let view = wire::Job::new(&done);
    Ok(Json(json!({
        "id": completion_id(&done),
        "object": "chat.completion",
        "created": done.created_at / 1000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "finish_reason": "stop",
            "logprobs": null,
        }],
        "usage": usage_json(Usage::of(&view.usage)),
        "system_fingerprint": null,
        "session_id": view.session_id,
        "job_id": done.id.to_string(),
    }))
    .into_response())
}

/// A job's answer as `chat.completion.chunk` events, as the model writes it.
fn chunks(
    st: AppState,
    job: &JobRecord,
    model: String,
    include_usage: bool,
    keep: bool,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let id = completion_id(job);
    let created = job.created_at / 1000;
    let chunk = move |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    let head = futures_util::stream::once(std::future::ready(first.to_string()));
    let body = super::pieces(st, job.id, keep)
        .scan(false, move |seen_block, piece| {
            let out: Vec<String> = match piece {
                // Blocks after the first are set apart, as in the plain answer.
                Piece::Block if std::mem::replace(seen_block, true) => {
                    vec![chunk(json!({"content": BLOCK_GAP}), Value::Null).to_string()]
                }
                Piece::Block => Vec::new(),
                Piece::Text(t) if t.is_empty() => Vec::new(),
                Piece::Text(t) => vec![chunk(json!({"content": t}), Value::Null).to_string()],
                Piece::Done(result) => {
                    let mut out = vec![chunk(json!({}), json!("stop")).to_string()];
                    if include_usage {
                        let mut last = chunk(json!({}), Value::Null);
                        last["choices"] = json!([]);
                        last["usage"] = usage_json(Usage::of(&result["usage"]));
                        out.push(last.to_string());
                    }
                    out.push("[DONE]".to_string());
                    out
                }
                Piece::Failed(kind, message) => {
                    let (_, name) = kind.status_and_name();
                    vec![json!({"error": {"message": message, "type": name, "param": null, "code": null}}).to_string()]
                }
            };
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten();
    head.chain(body).map(|data| Ok(Event::default().data(data)))
}

/// `GET /v1/models`: the models a caller can name, in OpenAI's shape, or in Anthropic's
/// when the request carries `anthropic-version`.
#[utoipa::path(get, path = "/v1/models", tag = "OpenAI-compatible",
    params(("anthropic-version" = Option<String>, Header, description = "Present: the list in Anthropic's shape")),
    responses((status = 200, description = "The aliases and the project's agents (agent/<name>)", body = Object),
        (status = "default", description = "An error", body = Object)))]
pub async fn list_models(
    State(st): State<AppState>,
    caller: JobsRead,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let models = super::models(&st, &caller.0).await?;
    if headers.contains_key("anthropic-version") {
        return Ok(Json(super::anthropic::models_page(&models)));
    }
    let data: Vec<Value> = models
        .iter()
        .map(|(id, created)| {
            json!({"id": id, "object": "model", "created": created / 1000,
                   "owned_by": if id.starts_with(super::AGENT_PREFIX) { "baton" } else { "anthropic" }})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Whether a request is answered in OpenAI's shape.
fn is_openai(req: &Request) -> bool {
    let path = req.uri().path();
    path == COMPLETIONS || (path == MODELS && !req.headers().contains_key("anthropic-version"))
}

/// Rewrites an error envelope into OpenAI's error shape on OpenAI's routes, whatever
/// refused the request (authentication, rate limits, the body's size, the handler).
pub async fn error_shape(req: Request, next: Next) -> Response {
    let openai = is_openai(&req);
    let resp = next.run(req).await;
    if !openai || resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let shaped = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v["type"] == "error" => {
            let e = &v["error"];
            json!({"error": {
                "message": e["message"],
                "type": e["type"],
                "param": e.get("param").cloned().unwrap_or(Value::Null),
                "code": e.get("code").cloned().unwrap_or_else(|| e["type"].clone()),
            }})
        }
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(shaped.to_string()))
}
