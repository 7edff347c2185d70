//! The OpenAI- and Anthropic-compatible APIs and the MCP server, over HTTP as their
//! clients speak them; and the official Python SDKs against them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Server, baton_bin};
use crate::tenancy::{admin_key, key_of, tenant};

/// Projects team-a and team-b, and a key of each that may run jobs and save agents.
async fn agent_tenants(s: &Server, admin: &str) -> (String, String) {
    let mut keys = Vec::new();
    for project in ["team-a", "team-b"] {
        tenant(s, admin, project).await;
        keys.push(key_of(s, admin, project, &["jobs:write", "agents:write"]).await);
    }
    (keys.remove(0), keys.remove(0))
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn send(
    s: &Server,
    key: Option<&str>,
    path: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = s.http.post(format!("{}{path}", s.base)).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

/// The `data:` documents of an event stream, with their `event:` names.
fn sse(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|frame| {
            let mut event = String::new();
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                }
            }
            data.map(|d| (event, d))
        })
        .collect()
}

fn chat(model: &str, messages: Value, stream: bool) -> Value {
    json!({"model": model, "messages": messages, "stream": stream, "max_tokens": 100,
           "stream_options": {"include_usage": true}})
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn the_compatible_apis_answer_in_their_own_shapes() {
    let s = Server::start().await;
    // OpenAI: plain, then streamed, with the same text.
    let (status, headers, body) = send(&s, None, "/v1/chat/completions",
        chat("sonnet", json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "FAKE slow 3 20"}]), false)).await;
    assert_eq!(status, 200, "{body}");
    let plain: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(
        plain["choices"][0]["message"]["content"], "chunk 1\n\nchunk 2\n\nchunk 3",
        "{plain}"
    );
    assert!(
        plain["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{plain}"
    );
    let job = s.job(headers["baton-job-id"].to_str().unwrap()).await;
    assert_eq!(
        job["options"]["system_prompt"], "be brief",
        "system messages are the system prompt: {job}"
    );
    assert_eq!(job["options"]["prompt"], "FAKE slow 3 20");
    assert_eq!(
        job["options"]["tools"],
        json!([]),
        "plain chat has no tools: {job}"
    );

    let (status, headers, body) = send(
        &s,
        None,
        "/v1/chat/completions",
        chat("sonnet", user("FAKE slow 3 20"), true),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse(&body);
    assert_eq!(events.last().unwrap().1, "[DONE]", "{body}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "chunk 1\n\nchunk 2\n\nchunk 3");
    let deltas = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(deltas >= 3, "a chunk per delta: {body}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "include_usage: {last}");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let streamed = s.job(headers["baton-job-id"].to_str().unwrap()).await;
    assert_eq!(
        streamed["options"]["include_partial_messages"], true,
        "{streamed}"
    );
    let partials = s.events(streamed["id"].as_str().unwrap()).await;
    assert!(
        partials.iter().any(|e| e["kind"] == "stream_event"),
        "the CLI's partial messages are in the log"
    );

    // Anthropic: plain, then the Messages event sequence.
    let (status, _, body) = send(
        &s,
        None,
        "/v1/messages",
        chat("sonnet", user("FAKE slow 2 20"), false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let msg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(
        msg["content"],
        json!([{"type": "text", "text": "chunk 1"}, {"type": "text", "text": "chunk 2"}])
    );
    assert_eq!(msg["stop_reason"], "end_turn");
    let (status, _, body) = send(
        &s,
        None,
        "/v1/messages",
        chat("sonnet", user("FAKE slow 2 20"), true),
    )
    .await;
    assert_eq!(status, 200);
    let kinds: Vec<String> = sse(&body).into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{body}"
    );

    // Models, in each shape.
    let (status, agent) = s
        .post(
            "/v1/agents",
            json!({"name": "helper", "prompt_template": "{{ input.prompt }}"}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (_, models) = s.get("/v1/models").await;
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"sonnet") && ids.contains(&"agent/helper"),
        "{models}"
    );
    let anthropic = s
        .http
        .get(format!("{}/v1/models", s.base))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let anthropic: Value = anthropic.json().await.unwrap();
    assert_eq!(anthropic["data"][0]["type"], "model", "{anthropic}");
    assert_eq!(anthropic["has_more"], false);

    // An agent as the model: its own prompt template gets the conversation.
    let (status, _, body) = send(
        &s,
        None,
        "/v1/chat/completions",
        chat("agent/helper", user("FAKE text from the agent"), false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from the agent");

    // Bad input, in each API's own error shape; nothing is queued.
    let before = s.job_count().await;
    for (path, request, status, code) in [
        (
            "/v1/chat/completions",
            chat("gpt-4o", user("x"), false),
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            chat("agent/nobody", user("x"), false),
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            chat(
                "sonnet",
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]),
                false,
            ),
            400,
            "unsupported",
        ),
        (
            "/v1/chat/completions",
            chat(
                "sonnet",
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c"}]}, {"role": "tool", "content": "y"}]),
                false,
            ),
            400,
            "unsupported",
        ),
        (
            "/v1/chat/completions",
            chat(
                "sonnet",
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": "prefill"}]),
                false,
            ),
            400,
            "unsupported",
        ),
        (
            "/v1/messages",
            chat(
                "sonnet",
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]),
                false,
            ),
            400,
            "unsupported",
        ),
        (
            "/v1/messages",
            chat("nope", user("x"), false),
            404,
            "model_not_found",
        ),
    ] {
        let (got, _, body) = send(&s, None, path, request.clone()).await;
        assert_eq!(got.as_u16(), status, "{path} {request}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        if path == "/v1/messages" {
            assert_eq!(body["type"], "error", "Anthropic's envelope: {body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        } else {
            assert_eq!(body["error"]["code"], code, "OpenAI's shape: {body}");
            assert!(
                body["error"]["message"].is_string() && body.get("type").is_none(),
                "{body}"
            );
        }
    }
    assert_eq!(
        s.job_count().await,
        before,
        "a refused request queues nothing"
    );

    // A job that fails: 502, and the SDKs are told not to run it again.
    let (status, _) = s
        .request(
            reqwest::Method::PATCH,
            "/v1/projects/default",
            Some(json!({"defaults": {"max_attempts": 1}})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, headers, body) = send(
        &s,
        None,
        "/v1/chat/completions",
        chat("sonnet", user("FAKE crash"), false),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["x-should-retry"], "false");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    // A streamed one ends with an error event in each shape.
    let (_, _, body) = send(
        &s,
        None,
        "/v1/messages",
        chat("sonnet", user("FAKE crash"), true),
    )
    .await;
    assert_eq!(sse(&body).last().unwrap().0, "error", "{body}");
    let (_, _, body) = send(
        &s,
        None,
        "/v1/chat/completions",
        chat("sonnet", user("FAKE crash"), true),
    )
    .await;
    let last: Value = serde_json::from_str(&sse(&body).last().unwrap().1).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the job ended dead"),
        "{body}"
    );
    s.stop().await;
}

async fn completion(s: &Server, key: &str, messages: Value) -> Value {
    let (status, _, body) = send(
        s,
        Some(key),
        "/v1/chat/completions",
        chat("sonnet", messages, false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn answer(c: &Value) -> String {
    c["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_conversation_resumes_its_own_session_and_never_another_projects() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let (ka, kb) = agent_tenants(&s, &admin).await;

    let first = completion(&s, &ka, user("alpha")).await;
    assert_eq!(answer(&first), "fake answer to: alpha");
    let mut history = json!([{"role": "user", "content": "alpha"}, {"role": "assistant", "content": answer(&first)}, {"role": "user", "content": "beta"}]);
    let second = completion(&s, &ka, history.clone()).await;
    assert_eq!(
        answer(&second),
        "I remember: alpha",
        "the CLI resumed its session"
    );
    history.as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": answer(&second)}),
        json!({"role": "user", "content": "gamma"}),
    ]);
    let third = completion(&s, &ka, history.clone()).await;
    assert_eq!(answer(&third), "I remember: alpha | beta");
    let session = first["session_id"].clone();
    assert_eq!(
        (&second["session_id"], &third["session_id"]),
        (&session, &session)
    );
    for (c, turn) in [(&second, "beta"), (&third, "gamma")] {
        let (_, job) = s
            .as_key(&ka)
            .get(&format!("/v1/jobs/{}", c["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(job["options"]["prompt"], turn, "only the new turn: {job}");
        assert_eq!(
            job["options"]["session"],
            json!({"mode": "resume", "id": session}),
            "{job}"
        );
    }
    // A second conversation with the same first turn and answer, once the first has gone
    // on: the session holds turns it never saw, so it starts its own.
    let twin = json!([{"role": "user", "content": "alpha"}, {"role": "assistant", "content": answer(&first)}, {"role": "user", "content": "delta"}]);
    let twin = completion(&s, &ka, twin).await;
    assert_ne!(twin["session_id"], session, "{twin}");
    assert!(
        answer(&twin).starts_with("fake answer to: This conversation continues"),
        "{twin}"
    );
    // A second conversation with the same first turn and answer, once the first has gone
    // on: the session holds turns it never saw, so it starts its own.
    let twin = json!([{"role": "user", "content": "alpha"}, {"role": "assistant", "content": answer(&first)}, {"role": "user", "content": "delta"}]);
    let twin = completion(&s, &ka, twin).await;
    assert_ne!(twin["session_id"], session, "{twin}");
    assert!(
        answer(&twin).starts_with("fake answer to: This conversation continues"),
        "{twin}"
    );
    // An answer Baton did not give (edited by the client): the history is the prompt.
    let edited = json!([{"role": "user", "content": "alpha"}, {"role": "assistant", "content": "something else"}, {"role": "user", "content": "beta"}]);
    let fresh = completion(&s, &ka, edited).await;
    assert_ne!(fresh["session_id"], session);
    assert!(
        answer(&fresh).starts_with("fake answer to: This conversation continues"),
        "{fresh}"
    );

    // Project B sending A's whole conversation gets a session of its own.
    let other = completion(&s, &kb, history).await;
    assert_ne!(other["session_id"], session, "{other}");
    assert!(
        answer(&other).starts_with("fake answer to:"),
        "B never resumes A's session: {other}"
    );
    // Nor by naming it.
    let mut named = chat("sonnet", user("x"), false);
    named["session_id"] = session.clone();
    let (status, _, body) = send(&s, Some(&kb), "/v1/chat/completions", named.clone()).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = send(&s, Some(&kb), "/v1/messages", named).await;
    assert_eq!(status, 404);
    // B lists only its own agents as models, and A's jobs are not B's.
    let (status, agent) = s
        .as_key(&ka)
        .post(
            "/v1/agents",
            json!({"name": "a-only", "prompt_template": "{{ input.prompt }}"}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (_, models) = s.as_key(&kb).get("/v1/models").await;
    assert!(!models.to_string().contains("a-only"), "{models}");
    let (status, _, body) = send(
        &s,
        Some(&kb),
        "/v1/chat/completions",
        chat("agent/a-only", user("x"), false),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, list) = s.as_key(&kb).get("/v1/jobs?limit=100").await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["project_id"] == "team-b")
    );
    // Without a key: 401, in each API's shape.
    let (status, _, body) = send(
        &s,
        None,
        "/v1/chat/completions",
        chat("sonnet", user("x"), false),
    )
    .await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert!(body.get("request_id").is_none(), "OpenAI's shape: {body}");
    let (status, _, body) = send(&s, None, "/v1/messages", chat("sonnet", user("x"), false)).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["type"],
        "error"
    );
    let resp = s
        .http
        .post(format!("{}/v1/messages", s.base))
        .header("x-api-key", &ka)
        .json(&chat("sonnet", user("FAKE text keyed"), false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "x-api-key, as the Anthropic SDK sends it"
    );
    s.stop().await;
}

/// A minimal MCP client over streamable HTTP: JSON-RPC posts, answers read from JSON or
/// an event stream.
struct Mcp<'a> {
    s: &'a Server,
    key: Option<String>,
    session: Option<String>,
}

impl<'a> Mcp<'a> {
    async fn post(
        &self,
        body: Value,
        host: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<Value>) {
        let mut req = self
            .s
            .http
            .post(format!("{}/mcp", self.s.base))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(sid) = &self.session {
            req = req.header("mcp-session-id", sid);
        }
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
            .await
            .unwrap()
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let text = tokio::time::timeout(Duration::from_secs(30), resp.text())
            .await
            .unwrap()
            .unwrap();
        let docs = if text.trim_start().starts_with('{') {
            vec![serde_json::from_str(&text).unwrap()]
        } else {
            sse(&text)
                .into_iter()
                .filter_map(|(_, d)| serde_json::from_str(&d).ok())
                .collect()
        };
        (status, headers, docs)
    }

    async fn open(s: &'a Server, key: Option<&str>) -> Self {
        let mut m = Mcp {
            s,
            key: key.map(str::to_string),
            session: None,
        };
        let (status, headers, docs) = m.post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}}), None).await;
        assert_eq!(status, 200, "{docs:?}");
        assert_eq!(docs[0]["result"]["serverInfo"]["name"], "baton", "{docs:?}");
        m.session = headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        let (status, _, _) = m
            .post(
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                None,
            )
            .await;
        assert_eq!(status, 202);
        m
    }

    /// A tool call's JSON-RPC answer.
    async fn call(&self, tool: &str, args: Value) -> Value {
        let (status, _, docs) = self
            .post(
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}),
                None,
            )
            .await;
        assert_eq!(status, 200, "{docs:?}");
        docs.into_iter().find(|d| d["id"] == 7).expect("an answer")
    }
}

#[tokio::test]
async fn mcp_over_http_is_the_keys_project_and_checks_its_host() {
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    let (ka, kb) = agent_tenants(&s, &admin).await;
    let (status, agent) = s.as_key(&ka).post("/v1/agents", json!({"name": "a-agent", "prompt_template": "FAKE text {{ input.word }}",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}})).await;
    assert_eq!(status, 201, "{agent}");

    // No key: 401 in the envelope, before any session exists.
    let anyone = Mcp {
        s: &s,
        key: None,
        session: None,
    };
    let (status, _, docs) = anyone
        .post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
            None,
        )
        .await;
    assert_eq!(status, 401, "{docs:?}");
    assert_eq!(docs[0]["error"]["type"], "authentication_error");
    // A Host that is not Baton's (DNS rebinding): refused.
    let a = Mcp {
        s: &s,
        key: Some(ka.clone()),
        session: None,
    };
    let (status, _, _) = a.post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}}), Some("evil.example")).await;
    assert_eq!(status, 403);

    let a = Mcp::open(&s, Some(&ka)).await;
    let b = Mcp::open(&s, Some(&kb)).await;
    let (_, _, listed) = a
        .post(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            None,
        )
        .await;
    let names: Vec<&str> = listed[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"run_claude_agent") && names.contains(&"a-agent"),
        "{names:?}"
    );
    let (_, _, listed) = b
        .post(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            None,
        )
        .await;
    assert!(
        !listed[0].to_string().contains("a-agent"),
        "B's tools are B's agents: {listed:?}"
    );

    let ran = a
        .call("run_claude_agent", json!({"prompt": "FAKE text from mcp"}))
        .await;
    let result = &ran["result"];
    assert_eq!(result["isError"], false, "{ran}");
    assert_eq!(result["structuredContent"]["result"], "from mcp");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(
        text["cost_usd"].is_number() && text["usage"].is_object(),
        "{text}"
    );
    let job_id = result["structuredContent"]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, job) = s.as_key(&ka).get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        job["project_id"], "team-a",
        "an MCP call is a job of the key's project: {job}"
    );
    let agent = a.call("a-agent", json!({"word": "agentword"})).await;
    assert_eq!(
        agent["result"]["content"][0]["text"], "agentword",
        "{agent}"
    );

    // B cannot see, cancel or run A's.
    let seen = b.call("get_job", json!({"job_id": job_id})).await;
    assert_eq!(seen["result"]["isError"], true, "{seen}");
    assert!(
        seen["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not found")
            || seen.to_string().contains("no job"),
        "{seen}"
    );
    let cancel = b.call("cancel_job", json!({"job_id": job_id})).await;
    assert_eq!(cancel["result"]["isError"], true, "{cancel}");
    let run = b.call("a-agent", json!({"word": "x"})).await;
    assert!(run.get("error").is_some(), "no such tool for B: {run}");
    let (_, list) = s.as_key(&kb).get("/v1/jobs").await;
    assert_eq!(list["data"], json!([]), "B made no job");
    let listed = b.call("list_jobs", json!({})).await;
    assert_eq!(
        listed["result"]["structuredContent"]["data"],
        json!([]),
        "{listed}"
    );

    // Arguments that fail the tool's schema: a JSON-RPC error, and nothing queued.
    let (_, before) = s.as_key(&ka).get("/v1/jobs?limit=100").await;
    for (tool, args) in [
        ("get_job", json!({"nope": 1})),
        ("a-agent", json!({"word": 3})),
        ("run_claude_agent", json!({})),
    ] {
        let refused = a.call(tool, args.clone()).await;
        assert_eq!(refused["error"]["code"], -32602, "{tool} {args}: {refused}");
    }
    let (_, after) = s.as_key(&ka).get("/v1/jobs?limit=100").await;
    assert_eq!(
        before["data"].as_array().unwrap().len(),
        after["data"].as_array().unwrap().len()
    );

    // A session is its key's: B cannot use A's session id.
    let hijack = Mcp {
        s: &s,
        key: Some(kb.clone()),
        session: a.session.clone(),
    };
    let refused = hijack.call("list_jobs", json!({})).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another key"),
        "{refused}"
    );

    // An MCP request counts once against the rate limits, whatever API requests its tool
    // makes inside Baton (a run is three: submit, follow, read).
    let (status, k) = s
        .as_key(&admin)
        .post(
            "/v1/keys",
            json!({"project": "team-a", "name": "few", "scopes": ["jobs:write"], "requests_per_minute": 4}),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    let few = Mcp::open(&s, k["key"].as_str()).await; // initialize, initialized: 2
    let ran = few
        .call(
            "run_claude_agent",
            json!({"prompt": "FAKE text counted once"}),
        )
        .await; // 3
    assert_eq!(
        ran["result"]["structuredContent"]["result"], "counted once",
        "{ran}"
    );

    // A session that ends before its call's job does not cancel the job: only the
    // client's notifications/cancelled does.
    let job_count = |v: &Value| v["data"].as_array().unwrap().len();
    let (_, before) = s.as_key(&ka).get("/v1/jobs?limit=100").await;
    let call = a.post(
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
               "params": {"name": "run_claude_agent", "arguments": {"prompt": "FAKE sleep 1500\nFAKE text outlived"}}}),
        None,
    );
    let close = async {
        let mut id = None;
        for _ in 0..100 {
            let (_, now) = s.as_key(&ka).get("/v1/jobs?limit=100").await;
            if job_count(&now) > job_count(&before) {
                id = now["data"][0]["id"].as_str().map(str::to_string);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let resp = s
            .http
            .delete(format!("{}/mcp", s.base))
            .bearer_auth(&ka)
            .header("mcp-session-id", a.session.clone().unwrap())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        id.expect("the call's job")
    };
    let (_, id) = tokio::join!(call, close);
    let job = s.as_key(&ka).wait_terminal(&id).await;
    assert_eq!(
        (job["state"].as_str(), job["result"].as_str()),
        (Some("completed"), Some("outlived")),
        "{job}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_official_python_sdks_work_against_baton() {
    let python = repo().join(".build/venv/bin/python");
    let sdks = std::process::Command::new(&python)
        .args(["-c", "import openai, anthropic, mcp, pytest"])
        .output();
    if !sdks.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("BATON_REQUIRE_ALL").as_deref() != Ok("1"),
            "the Python SDKs are required: cargo xtask install-python"
        );
        eprintln!("SKIPPED: the Python SDKs are not installed (cargo xtask install-python)");
        return;
    }
    let s = Server::start().await;
    let admin = admin_key(&s).await;
    tenant(&s, &admin, "sdk").await;
    let key = key_of(&s, &admin, "sdk", &["jobs:write", "agents:write"]).await;
    let (status, agent) = s.as_key(&key).post("/v1/agents", json!({"name": "echoer", "description": "Answers a question",
        "prompt_template": "{{ input.question }}",
        "input_schema": {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"], "additionalProperties": false}})).await;
    assert_eq!(status, 201, "{agent}");
    let tests = repo().join("tests/python");
    let (base, bin) = (s.base.clone(), baton_bin());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(&tests)
            .env("BATON_URL", base)
            .env("BATON_API_KEY", key)
            .env("BATON_BIN", bin)
            .env("BATON_AGENT", "echoer")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "pytest failed:\n{report}");
    assert!(
        report.contains(" passed") && !report.contains("skipped"),
        "{report}"
    );
    s.stop().await;
}
