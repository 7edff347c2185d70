//! Helpers: an HTTP client, request bodies shaped like the CLI's, and an SSE parser.

use std::time::Duration;

use serde_json::{Value, json};

/// Upper bound for anything that should be quick; a failure means a bug, not a slow box.
pub const QUICK: Duration = Duration::from_secs(10);

pub fn client() -> reqwest::Client {
    // No proxy: the environment may set one, and the mock is on loopback.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// The first user message as the CLI writes it: a `<system-reminder>` block, then the
/// prompt; followed by the `role:"system"` message the CLI inserts.
pub fn prompt_messages(prompt: &str) -> Vec<Value> {
    vec![
        json!({"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAttribution for git commits and pull requests you create from here on\n</system-reminder>"},
            {"type": "text", "text": prompt},
        ]}),
        json!({"role": "system", "content": [
            {"type": "text", "text": "# Environment\nYou have been invoked in the following environment: \n - Primary working directory: /tmp/lab/cwd", "cache_control": {"type": "ephemeral"}},
        ]}),
    ]
}

/// A `/v1/messages` body like the CLI's main-loop request.
pub fn body(messages: Vec<Value>, stream: bool) -> Value {
    let mut body = json!({
        "model": "claude-opus-5-5",
        "messages": messages,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.0b8; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."},
        ],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "max_tokens": 128000,
        "thinking": {"type": "adaptive", "display": "updates"},
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// Appends an assistant tool call and the user's tool result, as the CLI does after
/// running a tool.
pub fn with_tool_round(mut messages: Vec<Value>, tool_use_id: &str, result: &str) -> Vec<Value> {
    messages.push(json!({"role": "assistant", "content": [
        {"type": "text", "text": "I'll use the Bash tool."},
        {"type": "tool_use", "id": tool_use_id, "name": "Bash", "input": {"command": "echo hi"}},
    ]}));
    messages.push(json!({"role": "user", "content": [
        {"tool_use_id": tool_use_id, "type": "tool_result", "content": result, "is_error": false},
    ]}));
    messages
}

pub async fn post(base_url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base_url}/v1/messages?beta=true"))
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("POST /v1/messages")
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

/// Parses complete SSE events (`event:` and `data:` lines, blank-line separated) and
/// checks that each `data.type` matches its event name.
pub fn parse_sse(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let mut name = None;
            let mut data = None;
            for line in chunk.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = Some(rest.to_owned());
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(rest).expect("data is JSON"));
                }
            }
            let event = Event {
                name: name.expect("event line"),
                data: data.expect("data line"),
            };
            assert_eq!(event.data["type"], event.name.as_str(), "{chunk}");
            event
        })
        .collect()
}

pub fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

/// The concatenated `text_delta`s of the stream.
pub fn streamed_text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.data["delta"]["type"] == "text_delta")
        .filter_map(|e| e.data["delta"]["text"].as_str())
        .collect()
}

/// Sends a streaming request and returns its events.
pub async fn stream_events(base_url: &str, body: &Value) -> Vec<Event> {
    let response = post(base_url, body).await;
    assert_eq!(response.status(), 200);
    parse_sse(&response.text().await.expect("SSE body"))
}

/// Sends a non-streaming request and returns the message JSON.
pub async fn message_json(base_url: &str, body: &Value) -> Value {
    let response = post(base_url, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("message JSON")
}

/// The text of the last text block of a non-streamed message (what the CLI shows).
pub fn final_text(message: &Value) -> String {
    message["content"]
        .as_array()
        .expect("content")
        .iter()
        .rev()
        .find(|b| b["type"] == "text")
        .and_then(|b| b["text"].as_str())
        .expect("a text block")
        .to_owned()
}
