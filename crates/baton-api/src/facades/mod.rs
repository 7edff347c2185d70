//! The OpenAI- and Anthropic-compatible APIs (`/v1/chat/completions`, `/v1/messages`,
//! `/v1/models`): a conversation in either shape becomes one durable job, admitted like
//! any other (policy, quotas, budgets), and its answer is given back in the shape asked.
//!
//! What both share lives here: reading a conversation (its system prompt and its text
//! turns), finding the Claude session an earlier answer of it came from so the CLI
//! resumes instead of re-reading the history, naming a model or a saved agent, the text
//! the model wrote (for an answer and for a stream), and its usage.

pub mod anthropic;
pub mod openai;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use baton_core::{JobId, JobRequest, SessionId, SessionMode};
use baton_store::{JobFilter, JobRecord};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Caller;
use crate::compat::{cancel_parked, inserted};
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::follow::{Followed, follow};
use crate::jobs::{prepare, submit};

/// One text turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Turn {
    pub assistant: bool,
    pub text: String,
}

/// A conversation as either API sends it, reduced to what the CLI can be given.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub model: String,
    pub system: Option<String>,
    pub turns: Vec<Turn>,
    /// The Claude session to continue, named by the caller (Baton's extension).
    pub session_id: Option<String>,
    pub stream: bool,
}

/// The model aliases the CLI knows; full names (`claude-…`) are known too.
const ALIASES: [&str; 3] = ["opus", "sonnet", "haiku"];
/// The prefix of a `model` that names a saved agent.
const AGENT_PREFIX: &str = "agent/";

/// What a request's `model` names.
enum Target<'a> {
    Claude(&'a str),
    Agent(&'a str),
}

/// A `model` that names nothing Baton can run: a 404 (`model_not_found`).
pub(crate) fn unknown_model(model: &str) -> ApiError {
    ApiError {
        detail: Some(json!({"code": "model_not_found", "param": "model"})),
        ..ApiError::not_found(format!(
            "the model {model:?} does not exist: name a Claude model (opus, sonnet, haiku or a \
             claude-… name) or a saved agent as agent/<name>; GET /v1/models lists them"
        ))
    }
}

/// A request the CLI cannot express: a 400 saying what is not supported.
pub(crate) fn unsupported(what: impl std::fmt::Display) -> ApiError {
    ApiError {
        detail: Some(json!({"code": "unsupported"})),
        ..ApiError::invalid(format!("{what} is not supported by Baton's compatible API"))
    }
}

fn target(model: &str) -> ApiResult<Target<'_>> {
    if let Some(name) = model.strip_prefix(AGENT_PREFIX) {
        return Ok(Target::Agent(name));
    }
    let full = model.strip_prefix("claude-").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']'))
    });
    if ALIASES.contains(&model) || full {
        Ok(Target::Claude(model))
    } else {
        Err(unknown_model(model))
    }
}

/// The models a caller can name: the aliases and the project's saved agents (which a key
/// that reads jobs may read).
pub(crate) async fn models(st: &AppState, caller: &Caller) -> ApiResult<Vec<(String, i64)>> {
    let mut out: Vec<(String, i64)> = ALIASES.iter().map(|a| (a.to_string(), 0)).collect();
    let agents = st.engine().store().list_agents(&caller.project).await?;
    out.extend(
        agents
            .into_iter()
            .map(|a| (format!("{AGENT_PREFIX}{}", a.name), a.created_at)),
    );
    Ok(out)
}

impl Conversation {
    /// Checks its shape: at least one turn, and the last one the user's.
    pub fn check(&self) -> ApiResult<()> {
        match self.turns.last() {
            None => Err(ApiError::invalid("messages must hold at least one message")),
            Some(t) if t.assistant => Err(unsupported(
                "a conversation that ends with an assistant message (a prefill)",
            )),
            Some(_) => Ok(()),
        }
    }

    /// The digest of the conversation up to (not including) turn `end`, with its model
    /// (an agent's session is that agent's): what a job answering that turn records, and
    /// what the next request looks it up by.
    fn digest(&self, end: usize) -> String {
        let turns: Vec<Value> = self.turns[..end]
            .iter()
            .map(|t| json!([if t.assistant { "assistant" } else { "user" }, t.text]))
            .collect();
        let canonical =
            json!({"model": self.model, "system": self.system, "turns": turns}).to_string();
        format!("{:x}", Sha256::digest(canonical.as_bytes()))
    }

    /// The index of the last assistant turn, if any.
    fn last_answer(&self) -> Option<usize> {
        self.turns.iter().rposition(|t| t.assistant)
    }
}

/// The session an earlier answer of this conversation came from, and the first turn the
/// CLI has not seen: named by the caller, or found by the digest of the conversation
/// before its last answer among the project's completed jobs whose answer was that text.
async fn resumed(
    st: &AppState,
    caller: &Caller,
    conv: &Conversation,
) -> ApiResult<Option<(SessionId, usize)>> {
    let last = conv.last_answer();
    let after = last.map_or(0, |k| k + 1);
    if let Some(id) = &conv.session_id {
        let id = SessionId::parse(id)
            .map_err(|_| ApiError::invalid(format!("session_id {id:?} is not a session id")))?;
        return Ok(Some((id, after)));
    }
    let Some(k) = last else {
        return Ok(None);
    };
    let jobs = st
        .engine()
        .store()
        .list_jobs(&JobFilter {
            project_id: caller.project.clone(),
            state: Some(baton_core::JobState::Completed),
            conversation: Some(conv.digest(k)),
            limit: 16,
            ..JobFilter::default()
        })
        .await?;
    for job in jobs {
        let Some(session) = job
            .session_id
            .as_deref()
            .and_then(|s| SessionId::parse(s).ok())
        else {
            continue;
        };
        if answer(st, &job).await?.join(BLOCK_GAP) == conv.turns[k].text
            && last_of_session(st, caller, &job).await?
        {
            return Ok(Some((session, after)));
        }
    }
    Ok(None)
}

/// Whether `job` is still its session's newest: only then does the session hold exactly
/// the history the client sends. (Two clients that sent the same first turn and got the
/// same answer share a match; once one has gone on, the other must not resume the session
/// with turns it never saw.)
async fn last_of_session(st: &AppState, caller: &Caller, job: &JobRecord) -> ApiResult<bool> {
    let newest = st
        .engine()
        .store()
        .list_jobs(&JobFilter {
            project_id: caller.project.clone(),
            session_id: job.session_id.clone(),
            limit: 1,
            ..JobFilter::default()
        })
        .await?;
    Ok(newest.first().is_some_and(|n| n.id == job.id))
}

/// Between two text blocks of an answer given as one string.
pub(crate) const BLOCK_GAP: &str = "\n\n";

/// The text of a list of content parts (OpenAI) or blocks (Anthropic), each `noun`, joined
/// by `joiner`: only text ones are what the CLI can be given.
pub(crate) fn text_parts(parts: &[Value], noun: &str, joiner: &str) -> ApiResult<String> {
    let mut text = Vec::new();
    for p in parts {
        match p["type"].as_str() {
            Some("text") => text.push(
                p["text"]
                    .as_str()
                    .ok_or_else(|| ApiError::invalid(format!("a text {noun} needs its text")))?,
            ),
            Some(other) => {
                return Err(unsupported(format!("a content {noun} of type {other:?}")));
            }
            None => {
                return Err(ApiError::invalid(format!(
                    "each content {noun} needs a type"
                )));
            }
        }
    }
    Ok(text.join(joiner))
}

/// The prompt for the turns from `from` on: the new user turns alone when the CLI resumes
/// the session, else the whole history written out.
fn prompt(conv: &Conversation, from: usize, resuming: bool) -> String {
    let turns = &conv.turns[from..];
    if resuming || turns.len() == 1 {
        return turns
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(BLOCK_GAP);
    }
    let mut out =
        String::from("This conversation continues one that began elsewhere. Its turns so far:\n\n");
    let (last, history) = turns
        .split_last()
        .expect("a checked conversation has a turn");
    for t in history {
        let who = if t.assistant { "Assistant" } else { "User" };
        out.push_str(&format!("<{who}>\n{}\n</{who}>\n\n", t.text));
    }
    out.push_str("Answer the user's last message, which follows.\n\n");
    out.push_str(&last.text);
    out
}

/// Queues the job that answers `conv` for `caller`.
pub(crate) async fn start(
    st: &AppState,
    caller: &Caller,
    conv: &Conversation,
    idem: Option<(String, String)>,
) -> ApiResult<JobRecord> {
    conv.check()?;
    let target = target(&conv.model)?;
    let resume = resumed(st, caller, conv).await?;
    let prompt = prompt(conv, resume.map_or(0, |r| r.1), resume.is_some());
    let mut spec = match target {
        Target::Claude(model) => {
            let req = JobRequest {
                model: Some(model.to_string()),
                system_prompt: conv.system.clone(),
                // Plain chat has no tools; an agent brings its own.
                tools: Some(Vec::new()),
                ..JobRequest::prompt(prompt)
            };
            prepare(st, caller, req).await?
        }
        Target::Agent(name) => {
            let run = crate::agents::run_of(name, json!({"prompt": prompt}), None);
            let (mut spec, _) = crate::agents::agent_spec(st, caller, run)
                .await
                .map_err(|e| match e.kind {
                    ErrorType::NotFound => unknown_model(&conv.model),
                    _ => e,
                })?;
            if let Some(system) = &conv.system {
                let own = spec.options.append_system_prompt.take();
                spec.options.append_system_prompt = Some(match own {
                    Some(own) => format!("{own}{BLOCK_GAP}{system}"),
                    None => system.clone(),
                });
            }
            spec
        }
    };
    if let Some((id, _)) = resume {
        spec.session = SessionMode::Resume { id };
    }
    if conv.stream {
        // The model's text as it writes it; one attempt, since a retry would repeat what
        // the client has already shown.
        spec.options.include_partial_messages = true;
        spec.schedule.retry.max_attempts = 1;
    }
    spec.conversation = Some(conv.digest(conv.turns.len()));
    inserted(submit(st, caller, spec, idem).await?)
}

/// The text blocks the model wrote in the job's last attempt, in order (a sub-agent's
/// are its own).
pub(crate) async fn answer(st: &AppState, job: &JobRecord) -> ApiResult<Vec<String>> {
    let mut blocks = Vec::new();
    let mut after = 0;
    loop {
        let page = st.engine().store().list_events(job.id, after, 512).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            if e.kind != "assistant"
                || e.attempt != job.attempt
                || !e.data["parent_tool_use_id"].is_null()
            {
                continue;
            }
            let content = e.data["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            blocks.extend(
                content
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str().map(str::to_string)),
            );
        }
    }
    Ok(blocks)
}

/// A job's token counts, from its result.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
}

impl Usage {
    pub fn of(usage: &Value) -> Self {
        let n = |k: &str| usage[k].as_u64().unwrap_or(0);
        Self {
            input: n("input_tokens"),
            output: n("output_tokens"),
            cache_creation: n("cache_creation_input_tokens"),
            cache_read: n("cache_read_input_tokens"),
        }
    }
}

/// What a streamed answer is made of, in the order the job's log gives it.
#[derive(Debug)]
pub(crate) enum Piece {
    /// A new text block begins.
    Block,
    /// Text the model wrote, as it wrote it.
    Text(String),
    /// The job completed; its result event.
    Done(Value),
    /// The job ended otherwise (or the stream cannot go on): the error type and message.
    Failed(ErrorType, String),
}

/// The pieces of job `job`'s answer, from its log as it grows; ends after `Done` or
/// `Failed`. A stream runs one attempt: a job that a rate or usage limit parked, that
/// began a second attempt (its first was interrupted), or whose log stopped before its end
/// (Baton is stopping) fails the stream, and unless the caller detached (`keep`) it is
/// cancelled, since nobody would see it run on.
pub(crate) fn pieces(st: AppState, job: JobId, keep: bool) -> impl Stream<Item = Piece> + Send {
    struct Reading {
        events: std::pin::Pin<Box<dyn Stream<Item = Followed> + Send>>,
        engine: baton_engine::Engine,
        result: Option<Value>,
        attempt: Option<i64>,
        ended: bool,
    }
    /// What became of the job, for the error that ends the stream.
    async fn stop(engine: &baton_engine::Engine, job: JobId, keep: bool) -> &'static str {
        if keep {
            return "; the job keeps running (Baton-Detach)";
        }
        match engine.cancel(job).await {
            Ok(_) => "; the job was cancelled",
            Err(_) => "",
        }
    }
    let reading = Reading {
        engine: st.engine().clone(),
        events: Box::pin(follow(st, job, 0)),
        result: None,
        attempt: None,
        ended: false,
    };
    futures_util::stream::unfold(reading, move |mut r| async move {
        if r.ended {
            return None;
        }
        loop {
            let Some(item) = r.events.next().await else {
                r.ended = true;
                let how = stop(&r.engine, job, keep).await;
                let message =
                    format!("the stream ended before the job did (Baton is stopping){how}");
                return Some((Piece::Failed(ErrorType::Overloaded, message), r));
            };
            let e = match item {
                Followed::Event(e) => e,
                Followed::Failed(message) => {
                    r.ended = true;
                    return Some((Piece::Failed(ErrorType::Api, message), r));
                }
            };
            let piece = match e.kind.as_str() {
                "stream_event" if e.data["parent_tool_use_id"].is_null() => {
                    let ev = &e.data["event"];
                    match ev["type"].as_str() {
                        Some("content_block_start") if ev["content_block"]["type"] == "text" => {
                            Some(Piece::Block)
                        }
                        Some("content_block_delta") if ev["delta"]["type"] == "text_delta" => {
                            ev["delta"]["text"]
                                .as_str()
                                .map(|t| Piece::Text(t.to_string()))
                        }
                        _ => None,
                    }
                }
                "result" => {
                    r.result = Some(e.data);
                    None
                }
                k if k == baton_core::EventKind::AttemptStarted.as_str() => {
                    let n = e.data["attempt"].as_i64();
                    match r.attempt.replace(n.unwrap_or(0)) {
                        Some(first) if Some(first) != n => {
                            let how = stop(&r.engine, job, keep).await;
                            Some(Piece::Failed(
                                ErrorType::Api,
                                format!(
                                    "the job's attempt was interrupted and it began again, which would repeat what was streamed{how}"
                                ),
                            ))
                        }
                        _ => None,
                    }
                }
                k if k == baton_core::EventKind::JobCompleted.as_str() => {
                    Some(Piece::Done(r.result.take().unwrap_or(Value::Null)))
                }
                k if k == baton_core::EventKind::JobParked.as_str() => {
                    let until = e.data["until"].as_i64().unwrap_or(0);
                    let message = if keep {
                        "the Anthropic API refused the run for now; the job stays queued until its limit resets (Baton-Detach)".to_string()
                    } else {
                        match cancel_parked(&r.engine, job, until).await {
                            Ok((_, message)) => message,
                            Err(_) => "the Anthropic API refused the run for now".into(),
                        }
                    };
                    Some(Piece::Failed(ErrorType::RateLimit, message))
                }
                k if baton_core::is_terminal_kind(k) => {
                    let message = e.data["error"]["message"]
                        .as_str()
                        .unwrap_or("no error message");
                    Some(Piece::Failed(
                        ErrorType::BadGateway,
                        format!(
                            "the job ended {}: {message}",
                            e.data["state"].as_str().unwrap_or(k)
                        ),
                    ))
                }
                _ => None,
            };
            if let Some(piece) = piece {
                r.ended = matches!(piece, Piece::Done(_) | Piece::Failed(..));
                return Some((piece, r));
            }
        }
    })
}

/// A plain answer: `finish`'s body once the job ends; a caller that hangs up first cancels
/// the job, unless it detached (then `202` at once).
pub(crate) async fn answered(
    st: &AppState,
    caller: &Caller,
    job: JobId,
    detached: bool,
    route: &'static str,
    finish: impl std::future::Future<Output = ApiResult<Response>> + Send + 'static,
) -> ApiResult<Response> {
    crate::hangup::answer(
        (st, caller, route),
        job,
        detached,
        "application/json",
        finish,
    )
    .await
}

/// The job once it completed, or the response its caller gets instead ([`final_error`]).
pub(crate) async fn finished(st: &AppState, job: &JobRecord) -> Result<JobRecord, Response> {
    crate::compat::completed(st, job.id, crate::compat::answer_wait(&job.spec))
        .await
        .map_err(final_error)
}

/// An error a client SDK must not retry: the job ran (it failed, or it is still
/// running), and another request would run it again.
pub(crate) fn final_error(e: ApiError) -> Response {
    let no_retry = matches!(e.kind, ErrorType::BadGateway | ErrorType::GatewayTimeout);
    let mut resp = e.into_response();
    if no_retry {
        resp.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(turns: &[(bool, &str)]) -> Conversation {
        Conversation {
            model: "sonnet".into(),
            system: Some("be brief".into()),
            turns: turns
                .iter()
                .map(|(assistant, text)| Turn {
                    assistant: *assistant,
                    text: text.to_string(),
                })
                .collect(),
            session_id: None,
            stream: false,
        }
    }

    #[test]
    fn a_conversations_digest_covers_the_turns_before_an_answer() {
        let first = conv(&[(false, "hi")]);
        let second = conv(&[(false, "hi"), (true, "hello"), (false, "again")]);
        // The job answering "hi" records the digest the next request looks up.
        assert_eq!(
            first.digest(1),
            second.digest(second.last_answer().unwrap())
        );
        assert_ne!(second.digest(3), first.digest(1));
        let other_system = Conversation {
            system: None,
            ..first.clone()
        };
        assert_ne!(other_system.digest(1), first.digest(1));
    }

    #[test]
    fn a_history_becomes_the_prompt_unless_the_session_resumes() {
        let c = conv(&[(false, "hi"), (true, "hello"), (false, "again")]);
        assert_eq!(prompt(&c, 2, true), "again");
        let whole = prompt(&c, 0, false);
        assert!(
            whole.contains("<User>\nhi\n</User>")
                && whole.contains("<Assistant>\nhello\n</Assistant>")
        );
        assert!(whole.ends_with("\n\nagain"));
        assert_eq!(prompt(&conv(&[(false, "one")]), 0, false), "one");
    }

    #[test]
    fn models_are_aliases_full_names_or_agents() {
        assert!(matches!(target("sonnet"), Ok(Target::Claude("sonnet"))));
        assert!(matches!(target("claude-sonnet-4-5"), Ok(Target::Claude(_))));
        assert!(matches!(
            target("agent/review"),
            Ok(Target::Agent("review"))
        ));
        for bad in ["gpt-4o", "claude-", "claude-x y", ""] {
            let e = target(bad).err().expect(bad);
            assert_eq!(e.kind, ErrorType::NotFound, "{bad}");
        }
        let ends_with_answer = conv(&[(false, "hi"), (true, "prefill")]);
        assert_eq!(
            ends_with_answer.check().unwrap_err().kind,
            ErrorType::InvalidRequest
        );
        assert!(conv(&[]).check().is_err());
    }
}
