//! Anthropic's Messages API (`POST /v1/messages`), so a client written against the
//! Anthropic SDK runs Claude Code by changing its base URL. Its errors are Baton's own
//! envelope, which is Anthropic's.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use baton_store::JobRecord;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{BLOCK_GAP, Conversation, Piece, Turn, Usage, unsupported};
use crate::audit::Target;
use crate::auth::JobsWrite;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::jobs::idempotency;
use crate::{AppState, wire};

pub const MESSAGES: &str = "/v1/messages";

/// A Messages request. Sampling settings (`max_tokens`, `temperature`, …) are accepted
/// and left to Claude Code; tools from the client and non-text content are refused.
#[derive(Deserialize, ToSchema)]
pub struct MessagesRequest {
    /// A Claude model (`sonnet`, `claude-…`) or a saved agent (`agent/<name>`).
    #[schema(min_length = 1, max_length = 200)]
    model: String,
    #[schema(min_items = 1)]
    messages: Vec<InputMessage>,
    /// A string or a list of text blocks.
    #[schema(value_type = Option<Object>)]
    system: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    /// Continue this Claude session (Baton's extension).
    #[schema(format = "uuid")]
    session_id: Option<String>,
    /// Not supported: an agent (`agent/<name>`) brings its own tools.
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    tools: Option<Vec<Value>>,
}

#[derive(Deserialize, ToSchema)]
pub struct InputMessage {
    #[schema(pattern = "^(user|assistant)$")]
    role: String,
    /// A string, or a list of `{"type": "text", "text"}` blocks.
    #[schema(value_type = Object)]
    content: Value,
}

/// The text of a content: a string or a list of text blocks.
fn text_of(content: &Value, what: &str) -> ApiResult<String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => super::text_parts(blocks, "block", BLOCK_GAP),
        _ => Err(ApiError::invalid(format!(
            "{what} must be a string or a list of content blocks"
        ))),
    }
}

impl MessagesRequest {
    fn conversation(&self) -> ApiResult<Conversation> {
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(unsupported(
                "tools from the client (an agent, model agent/<name>, brings its own)",
            ));
        }
        let system = match &self.system {
            None | Some(Value::Null) => None,
            Some(s) => Some(text_of(s, "system")?).filter(|s| !s.is_empty()),
        };
        let mut turns = Vec::new();
        for m in &self.messages {
            let assistant = match m.role.as_str() {
                "user" => false,
                "assistant" => true,
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown role {other:?}: messages are user or assistant"
                    )));
                }
            };
            turns.push(Turn {
                assistant,
                text: text_of(&m.content, "content")?,
            });
        }
        Ok(Conversation {
            model: self.model.clone(),
            system,
            turns,
            session_id: self.session_id.clone(),
            stream: self.stream.unwrap_or(false),
        })
    }
}

fn message_id(job: &JobRecord) -> String {
    format!("msg_{}", job.id.to_string().replace('-', ""))
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_creation,
        "cache_read_input_tokens": u.cache_read,
    })
}

/// `POST /v1/messages`: a durable job; its answer as a `message`, or, with
/// `stream: true`, the Messages event sequence with each text delta as it is written.
#[utoipa::path(post, path = "/v1/messages", tag = "Anthropic-compatible",
    params(("Idempotency-Key" = Option<wire::params::IdempotencyKey>, Header),
        ("Baton-Detach" = Option<wire::params::Detach>, Header, description = "true: the job keeps running if the caller hangs up before the answer (else it is cancelled)")),
    request_body = MessagesRequest,
    responses((status = 200, description = "A message, or (stream) the Messages events", body = Object),
        (status = 202, description = "Detached: Baton-Job-Id at once; the body follows when the job ends"),
        (status = 404, description = "An unknown model or agent", body = wire::ErrorBody),
        (status = 502, description = "The job failed", body = wire::ErrorBody),
        (status = 504, description = "The job did not finish in time; it keeps running", body = wire::ErrorBody),
        (status = "default", description = "An error", body = wire::ErrorBody)))]
pub async fn messages(
    State(st): State<AppState>,
    caller: JobsWrite,
    headers: HeaderMap,
    body: Body<MessagesRequest>,
) -> ApiResult<Response> {
    let idem = idempotency(&headers, "POST /v1/messages", &body.raw)?;
    let detached = crate::hangup::detached(&headers)?;
    let conv = body.value.conversation()?;
    let job = super::start(&st, &caller, &conv, idem).await?;
    let job_id = job.id;
    let resp = if conv.stream {
        let events = events(st.clone(), &job, conv.model.clone(), detached);
        crate::hangup::stream(&st, &caller, job_id, detached, MESSAGES, events)
    } else {
        let finish = answer(st.clone(), job, conv.model.clone());
        super::answered(&st, &caller, job_id, detached, MESSAGES, finish).await?
    };
    Ok(Target::on(resp, job_id.to_string(), None))
}

/// The `message` of a job, once it completes.
async fn answer(st: AppState, job: JobRecord, model: String) -> ApiResult<Response> {
    let done = match super::finished(&st, &job).await {
        Ok(done) => done,
        Err(resp) => return Ok(resp),
    };
    let blocks: Vec<Value> = super::answer(&st, &done)
        .await?
        .into_iter()
        .map(|text| json!({"type": "text", "text": text}))
        .collect();
    let view = wire::Job::new(&done);
    let stop = done
        .outcome
        .as_ref()
        .and_then(|o| o["stop_reason"].as_str().map(str::to_string));
    Ok(Json(json!({
        "id": message_id(&done),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop.unwrap_or_else(|| "end_turn".into()),
        "stop_sequence": null,
        "usage": usage_json(Usage::of(&view.usage)),
        "session_id": view.session_id,
        "job_id": done.id.to_string(),
    }))
    .into_response())
}

/// A job's answer as the Messages event sequence: `message_start`, `ping`, a text block
/// per block the model wrote (`content_block_start`, its deltas as written,
/// `content_block_stop`), `message_delta` with the usage, `message_stop`.
fn events(
    st: AppState,
    job: &JobRecord,
    model: String,
    keep: bool,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let start = json!({"type": "message_start", "message": {
        "id": message_id(job), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": usage_json(Usage::default()),
    }});
    let head = futures_util::stream::iter([start, json!({"type": "ping"})]);
    // The index of the open text block, if one is open; the next block's index.
    let body = super::pieces(st, job.id, keep)
        .scan((None::<usize>, 0usize), |(open, next), piece| {
            let mut out = Vec::new();
            let close = |open: &mut Option<usize>, out: &mut Vec<Value>| {
                if let Some(index) = open.take() {
                    out.push(json!({"type": "content_block_stop", "index": index}));
                }
            };
            match piece {
                Piece::Block => {
                    close(open, &mut out);
                    out.push(json!({"type": "content_block_start", "index": *next,
                                    "content_block": {"type": "text", "text": ""}}));
                    *open = Some(*next);
                    *next += 1;
                }
                Piece::Text(text) => {
                    let index = *open.get_or_insert_with(|| {
                        out.push(json!({"type": "content_block_start", "index": *next,
                                        "content_block": {"type": "text", "text": ""}}));
                        *next += 1;
                        *next - 1
                    });
                    out.push(json!({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "text_delta", "text": text}}));
                }
                Piece::Done(result) => {
                    close(open, &mut out);
                    let stop = result["stop_reason"]
                        .as_str()
                        .unwrap_or("end_turn")
                        .to_string();
                    out.push(json!({"type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": null},
                        "usage": usage_json(Usage::of(&result["usage"]))}));
                    out.push(json!({"type": "message_stop"}));
                }
                Piece::Failed(kind, message) => {
                    let (_, name) = kind.status_and_name();
                    out.push(json!({"type": "error", "error": {"type": name, "message": message}}));
                }
            }
            std::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten();
    head.chain(body).map(|data| {
        let kind = data["type"].as_str().unwrap_or("error").to_string();
        Ok(Event::default().event(kind).data(data.to_string()))
    })
}

/// The models a caller can name, in Anthropic's list shape.
pub(crate) fn models_page(models: &[(String, i64)]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|(id, created)| {
            let at = chrono::DateTime::from_timestamp_millis(*created)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            json!({"type": "model", "id": id, "display_name": id, "created_at": at})
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first().map(|m| m.0.clone()),
        "last_id": models.last().map(|m| m.0.clone()),
    })
}
