//! Baton as an MCP server: an AI that calls tools hands Claude Code a task and gets its
//! result back (`run_claude_agent`), manages jobs (`submit_job`, `get_job`, `cancel_job`,
//! `list_jobs`), and calls each saved agent as a tool of its own. Served over streamable
//! HTTP at `/mcp` on the server and over stdio by `baton mcp`.
//!
//! Every tool is a request to Baton's HTTP API with the MCP client's own key ([`api`]), so
//! a tool call is a job like any other: admitted under the project's policy, quotas and
//! budgets, listed, streamable and audited. While a job runs, a client that sent a
//! progress token gets a progress notification per event; `notifications/cancelled`
//! cancels the job.
//!
//! **Architecture invariant:** this crate isolates the MCP SDK (`rmcp`, pinned to its exact
//! minor); nothing else in Baton names it.

pub mod api;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{Method, request::Parts};
use futures_util::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use api::{Credentials, Transport};

/// How often a session looks for changed agents, to tell its client the tool list changed.
const AGENT_POLL: Duration = Duration::from_secs(2);
/// The same for `baton mcp`, whose looks are requests to a server.
const AGENT_POLL_REMOTE: Duration = Duration::from_secs(10);
/// A call's job that has printed nothing for this long gets a progress notification
/// anyway, which also keeps its session from timing out.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// The built-in tools; an agent whose name is one of them is listed as `agent_<name>`.
const BUILT_IN: [&str; 5] = [
    "run_claude_agent",
    "submit_job",
    "get_job",
    "cancel_job",
    "list_jobs",
];

/// One MCP session's server: the API it calls, and the agents it last listed.
#[derive(Clone)]
pub struct Baton {
    api: Transport,
    /// The agents as last listed: tool name → the agent.
    agents: Arc<Mutex<BTreeMap<String, Value>>>,
    /// The calls the client cancelled (`notifications/cancelled`), by request id: only
    /// those cancel their jobs (a session that ends, or a server that stops, does not).
    cancelled: Arc<Mutex<HashSet<String>>>,
    /// The credentials the session began with; a request with others is refused.
    owner: Arc<OnceLock<Credentials>>,
    /// Whether the session's agent watch runs.
    watching: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Baton {
    /// A server calling Baton through `api` (over stdio, its client already sends the
    /// key; over HTTP, each request brings its caller's).
    pub fn new(api: Transport, stop: CancellationToken) -> Self {
        Self {
            api,
            agents: Arc::default(),
            cancelled: Arc::default(),
            owner: Arc::default(),
            watching: Arc::default(),
            stop,
        }
    }

    /// The same server for a new session: nothing of another session's state.
    fn fresh(&self) -> Self {
        Self::new(self.api.clone(), self.stop.clone())
    }

    /// The request's credentials, if the session's own.
    fn caller(&self, extensions: &rmcp::model::Extensions) -> Result<Credentials, ErrorData> {
        let creds = self.credentials(extensions);
        match self.owner.get() {
            Some(owner) if *owner != creds => Err(ErrorData::invalid_request(
                "this MCP session was opened with another key",
                None,
            )),
            _ => Ok(creds),
        }
    }

    /// Whether the client cancelled call `id` (rather than its session ending). The
    /// cancellation token fires just before the notification is handed over, so it is
    /// waited for a moment.
    async fn client_cancelled(&self, id: &str) -> bool {
        for _ in 0..50 {
            if self
                .cancelled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// How often the agents are looked at: in process it costs a store read; over the
    /// network, a request against the key's rate limit.
    fn poll(&self) -> Duration {
        match self.api {
            Transport::Local { .. } => AGENT_POLL,
            Transport::Remote { .. } => AGENT_POLL_REMOTE,
        }
    }

    /// The credentials an HTTP request brought (none over stdio).
    fn credentials(&self, extensions: &rmcp::model::Extensions) -> Credentials {
        extensions
            .get::<Parts>()
            .map(|p| Credentials::from_headers(&p.headers))
            .unwrap_or_default()
    }

    /// The project's agents, by tool name.
    async fn fetch_agents(&self, creds: &Credentials) -> Result<BTreeMap<String, Value>, String> {
        let reply = self
            .api
            .call(Method::GET, "/v1/agents", None, creds)
            .await?;
        if !reply.ok() {
            // A key that may not read the agents (jobs:read) sees the built-in tools only.
            return if reply.status == 403 {
                Ok(BTreeMap::new())
            } else {
                Err(reply.message())
            };
        }
        let mut out = BTreeMap::new();
        for a in reply.body["data"].as_array().cloned().unwrap_or_default() {
            let Some(name) = a["name"].as_str() else {
                continue;
            };
            let tool = if BUILT_IN.contains(&name) {
                format!("agent_{name}")
            } else {
                name.to_string()
            };
            out.insert(tool, a);
        }
        Ok(out)
    }

    /// Refreshes the agents; whether their tools changed.
    async fn refresh(&self, creds: &Credentials) -> Result<bool, String> {
        let fresh = self.fetch_agents(creds).await?;
        let shape = |m: &BTreeMap<String, Value>| -> Vec<(String, Value)> {
            m.iter()
                .map(|(k, v)| (k.clone(), v["version"].clone()))
                .collect()
        };
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let changed = shape(&agents) != shape(&fresh);
        *agents = fresh;
        Ok(changed)
    }

    fn tools(&self) -> Vec<Tool> {
        let mut tools = built_in_tools();
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        for (name, a) in agents.iter() {
            tools.push(agent_tool(name, a));
        }
        tools
    }
}

fn object(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

fn tool(
    name: &'static str,
    description: &'static str,
    input: Value,
    output: Option<Value>,
) -> Tool {
    let mut t = Tool::new(name, description, object(input));
    if let Some(o) = output {
        t = t.with_raw_output_schema(Arc::new(object(o)));
    }
    t
}

/// A job as the native API shows it.
fn job_schema() -> Value {
    json!({"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"type": "string"}}, "required": ["id", "state"]})
}

fn job_id_input() -> Value {
    json!({"type": "object", "properties": {"job_id": {"type": "string", "description": "The job's id"}},
           "required": ["job_id"], "additionalProperties": false})
}

fn built_in_tools() -> Vec<Tool> {
    vec![
        tool(
            "run_claude_agent",
            "Run Claude Code on a task and wait for its answer: a durable Baton job. Returns {result, usage, cost_usd}.",
            json!({"type": "object", "properties": {
                "prompt": {"type": "string", "minLength": 1, "description": "The task"},
                "model": {"type": "string"},
                "system_prompt": {"type": "string"},
                "cwd": {"type": "string", "description": "An absolute directory inside a workspace root"},
                "allowed_tools": {"type": "array", "items": {"type": "string"}},
                "max_budget_usd": {"type": "number", "exclusiveMinimum": 0},
                "timeout_ms": {"type": "integer", "minimum": 1000},
            }, "required": ["prompt"], "additionalProperties": false}),
            Some(json!({"type": "object", "properties": {
                "result": {"type": ["string", "null"]}, "usage": {}, "cost_usd": {"type": ["number", "null"]},
                "job_id": {"type": "string"}, "session_id": {"type": ["string", "null"]}},
                "required": ["result"]})),
        ),
        tool(
            "submit_job",
            "Queue a Claude Code job without waiting (the fields of POST /v1/jobs). Returns the job.",
            json!({"type": "object", "properties": {"prompt": {"type": "string", "minLength": 1}},
                   "required": ["prompt"], "additionalProperties": true}),
            Some(job_schema()),
        ),
        tool(
            "get_job",
            "A job, as GET /v1/jobs/{id} shows it.",
            job_id_input(),
            Some(job_schema()),
        ),
        tool(
            "cancel_job",
            "Cancel a job; returns it.",
            job_id_input(),
            Some(job_schema()),
        ),
        tool(
            "list_jobs",
            "The project's jobs, newest first (GET /v1/jobs).",
            json!({"type": "object", "properties": {
                "state": {"type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled", "dead"]},
                "session_id": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "cursor": {"type": "string"}}, "additionalProperties": false}),
            Some(
                json!({"type": "object", "properties": {"data": {"type": "array"}, "has_more": {"type": "boolean"}}}),
            ),
        ),
    ]
}

/// A saved agent as a tool: its input schema the agent's, and its output schema the
/// agent's when that describes an object.
fn agent_tool(name: &str, a: &Value) -> Tool {
    let input = match &a["input_schema"] {
        Value::Object(m) if m.get("type").is_none_or(|t| t == "object") => {
            let mut m = m.clone();
            m.entry("type").or_insert_with(|| json!("object"));
            m
        }
        _ => object(json!({"type": "object"})),
    };
    let description = a["description"]
        .as_str()
        .filter(|d| !d.is_empty())
        .map_or_else(
            || format!("Run the saved agent {}", a["name"]),
            str::to_string,
        );
    let mut t = Tool::new(name.to_string(), description, input);
    if let Some(o) = a["output_schema"]
        .as_object()
        .filter(|o| o.get("type").is_some_and(|t| t == "object"))
    {
        t = t.with_raw_output_schema(Arc::new(o.clone()));
    }
    t
}

/// A refused call: the API's own words, as a JSON-RPC error when the arguments were
/// wrong (nothing was queued), else as the tool's error result.
fn refused(reply: &api::Reply) -> Result<CallToolResponse, ErrorData> {
    if reply.status == 400 {
        Err(ErrorData::invalid_params(
            reply.message(),
            Some(reply.body["error"].clone()),
        ))
    } else {
        Ok(CallToolResult::error(vec![ContentBlock::text(reply.message())]).into())
    }
}

fn internal(e: String) -> ErrorData {
    ErrorData::internal_error(e, None)
}

/// `value` as the tool's structured content, with its JSON as text.
fn structured(value: Value) -> CallToolResponse {
    let mut r = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    r.structured_content = Some(value);
    r.into()
}

fn parse<T: serde::de::DeserializeOwned>(args: &JsonObject) -> Result<T, ErrorData> {
    serde_json::from_value(Value::Object(args.clone()))
        .map_err(|e| ErrorData::invalid_params(format!("arguments: {e}"), None))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobIdArgs {
    job_id: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    state: Option<String>,
    session_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<i64>,
}

/// A path segment, escaped.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a finished job gives its caller: the job as the API shows it at its end.
enum Ended {
    Job(Value),
    /// The client cancelled the call, and the job was cancelled.
    Cancelled,
    /// The session ended (or Baton is stopping) first: the job runs on.
    Left,
}

impl Baton {
    /// Follows job `id` to its end, with a progress notification per event (and one a
    /// minute while it is quiet) when the client sent a token; cancels it if the client
    /// cancels the call. A stream of events that breaks off is opened again.
    async fn follow(
        &self,
        id: &str,
        creds: &Credentials,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Ended, ErrorData> {
        let token = ctx.meta.get_progress_token();
        let mut seen = 0u32;
        let path = format!("/v1/jobs/{}", segment(id));
        loop {
            let events = self.api.events(id, creds).await.map_err(internal)?;
            tokio::pin!(events);
            let mut ended = false;
            loop {
                tokio::select! {
                    _ = ctx.ct.cancelled() => {
                        if !self.client_cancelled(&ctx.id.to_string()).await {
                            return Ok(Ended::Left);
                        }
                        let cancel = format!("{path}/cancel");
                        if let Err(e) = self.api.call(Method::POST, &cancel, None, creds).await {
                            tracing::warn!(job = id, error = %e, "could not cancel a cancelled call's job");
                        }
                        return Ok(Ended::Cancelled);
                    }
                    next = tokio::time::timeout(HEARTBEAT, events.next()) => {
                        let (kind, data) = match next {
                            Ok(Some(event)) => event,
                            Ok(None) => break,
                            Err(_) => ("waiting".to_string(), Value::Null),
                        };
                        seen += 1;
                        if let Some(token) = &token {
                            let note = ProgressNotificationParam::new(token.clone(), f64::from(seen))
                                .with_message(progress_message(&kind, &data));
                            let _ = ctx.peer.notify_progress(note).await;
                        }
                        if is_terminal(&kind) {
                            ended = true;
                            break;
                        }
                    }
                }
            }
            let reply = self
                .api
                .call(Method::GET, &path, None, creds)
                .await
                .map_err(internal)?;
            if !reply.ok() {
                return Err(internal(reply.message()));
            }
            let state = reply.body["state"].as_str().unwrap_or_default();
            if ended || matches!(state, "completed" | "failed" | "dead" | "cancelled") {
                return Ok(Ended::Job(reply.body));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn run_job(
        &self,
        path: &str,
        body: Value,
        creds: &Credentials,
        ctx: &RequestContext<RoleServer>,
        output: impl FnOnce(&Value) -> Option<CallToolResponse>,
    ) -> Result<CallToolResponse, ErrorData> {
        let reply = self
            .api
            .call(Method::POST, path, Some(&body), creds)
            .await
            .map_err(internal)?;
        if !reply.ok() {
            return refused(&reply);
        }
        let Some(id) = reply.body["id"].as_str().map(str::to_string) else {
            return Err(internal("Baton's answer named no job".into()));
        };
        match self.follow(&id, creds, ctx).await? {
            Ended::Cancelled => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "the call was cancelled, and so was its job {id}"
            ))])
            .into()),
            Ended::Left => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "the MCP session ended before the job {id}, which runs on"
            ))])
            .into()),
            Ended::Job(job) if job["state"] == "completed" => {
                Ok(output(&job).unwrap_or_else(|| {
                    CallToolResult::error(vec![ContentBlock::text("No result returned")]).into()
                }))
            }
            Ended::Job(job) => {
                let why = job["error"]["message"]
                    .as_str()
                    .unwrap_or("no error message");
                Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "the job {id} ended {}: {why}",
                    job["state"].as_str().unwrap_or("unknown")
                ))])
                .into())
            }
        }
    }

    async fn call(
        &self,
        name: &str,
        args: JsonObject,
        creds: &Credentials,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let simple = |reply: api::Reply| {
            if reply.ok() {
                Ok(structured(reply.body))
            } else {
                refused(&reply)
            }
        };
        match name {
            "run_claude_agent" => {
                let run: RunArgs = parse(&args)?;
                if run.prompt.trim().is_empty() {
                    return Err(ErrorData::invalid_params("prompt must not be empty", None));
                }
                let body = serde_json::to_value(&run).map_err(|e| internal(e.to_string()))?;
                self.run_job("/v1/jobs", body, creds, ctx, |job| {
                    let result = job["result"].as_str()?;
                    Some(structured(json!({
                        "result": result, "usage": job["usage"], "cost_usd": job["total_cost_usd"],
                        "job_id": job["id"], "session_id": job["session_id"],
                    })))
                })
                .await
            }
            "submit_job" => {
                let reply = self
                    .api
                    .call(Method::POST, "/v1/jobs", Some(&Value::Object(args)), creds)
                    .await
                    .map_err(internal)?;
                simple(reply)
            }
            "get_job" | "cancel_job" => {
                let a: JobIdArgs = parse(&args)?;
                let (method, path) = if name == "get_job" {
                    (Method::GET, format!("/v1/jobs/{}", segment(&a.job_id)))
                } else {
                    (
                        Method::POST,
                        format!("/v1/jobs/{}/cancel", segment(&a.job_id)),
                    )
                };
                simple(
                    self.api
                        .call(method, &path, None, creds)
                        .await
                        .map_err(internal)?,
                )
            }
            "list_jobs" => {
                let a: ListArgs = parse(&args)?;
                let mut query = Vec::new();
                for (k, v) in [
                    ("state", a.state),
                    ("session_id", a.session_id),
                    ("cursor", a.cursor),
                ] {
                    if let Some(v) = v {
                        query.push(format!("{k}={}", segment(&v)));
                    }
                }
                if let Some(l) = a.limit {
                    query.push(format!("limit={l}"));
                }
                let path = format!("/v1/jobs?{}", query.join("&"));
                simple(
                    self.api
                        .call(Method::GET, &path, None, creds)
                        .await
                        .map_err(internal)?,
                )
            }
            _ => self.call_agent(name, args, creds, ctx).await,
        }
    }

    async fn call_agent(
        &self,
        name: &str,
        args: JsonObject,
        creds: &Credentials,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let known = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let agent = match known {
            Some(a) => a,
            None => {
                // Saved since this session last looked.
                self.refresh(creds).await.map_err(internal)?;
                self.agents
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .cloned()
                    .ok_or_else(|| {
                        ErrorData::invalid_params(format!("no tool named {name:?}"), None)
                    })?
            }
        };
        let input = Value::Object(args);
        if let Some(schema) = agent.get("input_schema").filter(|s| s.is_object()) {
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| internal(format!("the agent's input_schema: {e}")))?;
            if let Some(err) = validator.iter_errors(&input).next() {
                return Err(ErrorData::invalid_params(
                    format!("the arguments fail the agent's input_schema: {err}"),
                    None,
                ));
            }
        }
        let agent_name = agent["name"].as_str().unwrap_or(name).to_string();
        let has_output = agent_tool(name, &agent).output_schema.is_some();
        let path = format!("/v1/agents/{}/runs", segment(&agent_name));
        self.run_job(&path, json!({"input": input}), creds, ctx, |job| {
            if let Some(v) = job["verified_output"].as_str() {
                return Some(CallToolResult::success(vec![ContentBlock::text(v)]).into());
            }
            if has_output && job["structured_output"].is_object() {
                return Some(structured(job["structured_output"].clone()));
            }
            let text = job["result"].as_str()?;
            Some(CallToolResult::success(vec![ContentBlock::text(text)]).into())
        })
        .await
    }
}

fn is_terminal(kind: &str) -> bool {
    matches!(
        kind,
        "job.completed" | "job.failed" | "job.dead" | "job.cancelled"
    )
}

/// A line for a progress notification: what the job just did.
fn progress_message(kind: &str, data: &Value) -> String {
    if kind == "assistant"
        && let Some(blocks) = data["message"]["content"].as_array()
    {
        for b in blocks {
            if b["type"] == "tool_use" {
                return format!("using {}", b["name"].as_str().unwrap_or("a tool"));
            }
            if let Some(t) = b["text"].as_str() {
                let short: String = t.chars().take(80).collect();
                return short;
            }
        }
    }
    kind.to_string()
}

impl ServerHandler for Baton {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("baton", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Baton runs Claude Code as durable jobs. run_claude_agent hands it a task and waits \
             for the answer; submit_job/get_job/cancel_job/list_jobs manage jobs; each saved agent \
             is a tool of its own.",
        )
    }

    // The sessions with a handshake, whose tool-list changes are notifications.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|t| t.name == name)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let creds = self.caller(&ctx.extensions)?;
        // Without the agents (a rate limit, a key that may not read them), the tools that
        // are known still are.
        if let Err(e) = self.refresh(&creds).await {
            tracing::debug!(error = %e, "could not list the agents");
        }
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let creds = self.caller(&ctx.extensions)?;
        let args = request.arguments.unwrap_or_default();
        self.call(&request.name, args, &creds, &ctx).await
    }

    async fn on_cancelled(
        &self,
        n: rmcp::model::CancelledNotificationParam,
        _ctx: NotificationContext<RoleServer>,
    ) {
        if let Some(id) = n.request_id {
            self.cancelled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string());
        }
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        let creds = self.credentials(&ctx.extensions);
        let _ = self.owner.set(creds.clone());
        // Keeps the client's tool list current: the agents are looked at every few
        // seconds, and a change is announced. One watch per session, however often the
        // client says it is initialized.
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let peer = ctx.peer;
        tokio::spawn(async move {
            if let Err(e) = me.refresh(&creds).await {
                tracing::debug!(error = %e, "could not list the agents");
            }
            loop {
                tokio::select! {
                    _ = me.stop.cancelled() => return,
                    _ = tokio::time::sleep(me.poll()) => {}
                }
                if peer.is_transport_closed() {
                    return;
                }
                match me.refresh(&creds).await {
                    Ok(true) => {
                        if peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "could not list the agents"),
                }
            }
        });
    }
}

/// The streamable HTTP service for `/mcp`: sessions over `api` (the server's own router).
/// Only `hosts` may be named in `Host`, and a browser's `Origin` must be one of
/// `origins`: a web page cannot reach a loopback Baton through DNS rebinding.
pub fn http_service(
    api: axum::Router,
    mark: fn(&mut axum::http::Request<axum::body::Body>),
    hosts: Vec<String>,
    origins: Vec<String>,
    stop: CancellationToken,
) -> StreamableHttpService<Baton, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_cancellation_token(stop.child_token());
    let proto = Baton::new(Transport::Local { router: api, mark }, stop);
    StreamableHttpService::new(
        // A session per `initialize`, with its own agents, owner and cancellations.
        move || Ok(proto.fresh()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Serves MCP on stdin and stdout (nothing else may write to stdout) until the client
/// closes stdin.
pub async fn serve_stdio(api: Transport, stop: CancellationToken) -> Result<(), String> {
    use rmcp::ServiceExt;
    let server = Baton::new(api, stop.clone());
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP client did not initialize: {e}"))?;
    let quit = running.waiting().await.map_err(|e| e.to_string())?;
    tracing::debug!(?quit, "the MCP client left");
    stop.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_a_tool_with_its_schemas() {
        let a = json!({"name": "review", "description": "Reviews a diff",
            "input_schema": {"type": "object", "properties": {"diff": {"type": "string"}}, "required": ["diff"]},
            "output_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}});
        let t = agent_tool("review", &a);
        assert_eq!(t.input_schema["required"], json!(["diff"]));
        assert!(t.output_schema.is_some());
        // Without schemas: any object in, text out.
        let bare = agent_tool(
            "bare",
            &json!({"name": "bare", "output_schema": {"type": "string"}}),
        );
        assert_eq!(bare.input_schema["type"], "object");
        assert!(bare.output_schema.is_none());
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
