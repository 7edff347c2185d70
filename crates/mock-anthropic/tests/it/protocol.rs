//! The wire format: SSE, non-streaming messages, errors, and the other endpoints.

use futures_util::StreamExt;
use mock_anthropic::{MockAnthropic, Reply};
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::support::*;

#[tokio::test]
async fn streams_text_as_sse_in_api_order() {
    let mock = MockAnthropic::start().await;
    let text = "Hello, streaming wörld! This is longer than one delta.";
    mock.push(Reply::text(text));
    let mut request = body(prompt_messages("say hi"), true);
    request["model"] = json!("claude-custom-model");

    let response = post(&mock.base_url(), &request).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let request_id = response.headers()["request-id"].to_str().unwrap();
    assert!(request_id.starts_with("req_"), "{request_id}");
    let events = parse_sse(&response.text().await.unwrap());

    let names = names(&events);
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let deltas = &names[3..names.len() - 3];
    assert!(deltas.len() > 1, "text is split into several deltas");
    assert!(deltas.iter().all(|n| *n == "content_block_delta"));
    assert_eq!(streamed_text(&events), text);

    let start = &events[0].data["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["model"], "claude-custom-model");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        start["usage"],
        json!({"input_tokens": 1667, "output_tokens": 1,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
    assert_eq!(
        events[2].data["content_block"],
        json!({"type": "text", "text": ""})
    );
    let delta = &events[events.len() - 2].data;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 1);
}

#[tokio::test]
async fn tool_use_streams_input_json_deltas() {
    let mock = MockAnthropic::start().await;
    let input = json!({"command": "echo 'a fairly long command line'", "description": "Print"});
    mock.push(Reply::tool_use("Bash", input.clone()).with_usage(10, 48));

    let events = stream_events(&mock.base_url(), &body(prompt_messages("x"), true)).await;
    let start = events
        .iter()
        .find(|e| e.name == "content_block_start")
        .unwrap();
    let block = &start.data["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Bash");
    assert_eq!(block["input"], json!({}));
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));

    let pieces: Vec<&str> = events
        .iter()
        .filter(|e| e.data["delta"]["type"] == "input_json_delta")
        .map(|e| e.data["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1);
    let reassembled: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(reassembled, input);

    let message_delta = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(message_delta.data["delta"]["stop_reason"], "tool_use");
    assert_eq!(message_delta.data["usage"], json!({"output_tokens": 48}));
    assert_eq!(
        events[0].data["message"]["usage"]["input_tokens"],
        json!(10)
    );
}

#[tokio::test]
async fn non_streaming_request_gets_one_message_object() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::texts(["part A.", "part B."]).with_usage(12, 5));

    let message = message_json(&mock.base_url(), &body(prompt_messages("x"), false)).await;
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-opus-5-5");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "part A."}, {"type": "text", "text": "part B."}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(message["usage"]["input_tokens"], 12);
    assert_eq!(message["usage"]["output_tokens"], 5);
    assert!(!mock.messages_requests()[0].is_streaming());
}

#[tokio::test]
async fn errors_carry_status_retry_after_and_envelope() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::error(429, "slow down").with_retry_after(2));
    mock.push(Reply::error(529, "busy"));

    let response = post(&mock.base_url(), &body(prompt_messages("x"), true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert!(response.headers().get("x-should-retry").is_none());
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(
        envelope,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );

    let response = post(&mock.base_url(), &body(prompt_messages("x"), true)).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["x-should-retry"], "true");
    assert!(response.headers().get("retry-after").is_none());
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn max_tokens_and_thinking_replies() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::max_tokens("truncated answ"));
    mock.push(mock_anthropic::Message::new(vec![
        mock_anthropic::Block::thinking("Let me think about hi."),
        mock_anthropic::Block::text("hi"),
    ]));

    let message = message_json(&mock.base_url(), &body(prompt_messages("x"), false)).await;
    assert_eq!(message["stop_reason"], "max_tokens");

    let events = stream_events(&mock.base_url(), &body(prompt_messages("x"), true)).await;
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e.data["delta"]["type"].as_str())
        .collect();
    assert!(kinds.contains(&"thinking_delta"));
    assert!(kinds.contains(&"signature_delta"));
    assert_eq!(streamed_text(&events), "hi");
}

#[tokio::test]
async fn stall_sends_deltas_then_silence_until_dropped() {
    let mock = MockAnthropic::start().await;
    let response = post(&mock.base_url(), &body(prompt_messages("MOCK_STALL"), true)).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();

    let mut text = String::new();
    while parse_sse(&complete_events(&text)).len() < 5 {
        let chunk = timeout(QUICK, stream.next())
            .await
            .expect("deltas arrive")
            .expect("stream open")
            .expect("chunk");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events = parse_sse(&text);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta"
        ]
    );
    assert_eq!(streamed_text(&events), "partial answer that neve");

    // Silence: nothing more while the mock lives.
    let quiet = timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(quiet.is_err(), "stalled stream sent more: {quiet:?}");

    drop(mock);
    let end = timeout(QUICK, stream.next())
        .await
        .expect("dropping the mock ends the stream");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no more data after the stall: {end:?}"
    );
}

/// The events of `text` that are complete (followed by a blank line).
fn complete_events(text: &str) -> String {
    match text.rfind("\n\n") {
        Some(end) => text[..end + 2].to_owned(),
        None => String::new(),
    }
}

#[tokio::test]
async fn hang_never_answers_until_dropped() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::hang());
    let request = tokio::spawn(post_raw(mock.base_url(), body(prompt_messages("x"), true)));

    timeout(QUICK, mock.wait_for_messages_requests(1))
        .await
        .expect("request reached the mock");
    assert_eq!(mock.messages_requests()[0].reply, "queue");
    // No status line while the mock lives.
    let mut request = request;
    assert!(
        timeout(std::time::Duration::from_millis(300), &mut request)
            .await
            .is_err()
    );

    drop(mock);
    let outcome = timeout(QUICK, request)
        .await
        .expect("dropping the mock ends the request")
        .unwrap();
    // Either the connection is cut before a response, or the body fails.
    if let Ok(response) = outcome {
        assert!(response.bytes().await.is_err());
    }
}

async fn post_raw(base_url: String, body: Value) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{base_url}/v1/messages"))
        .json(&body)
        .send()
        .await
}

#[tokio::test]
async fn head_any_path_count_tokens_models_and_404() {
    let mock = MockAnthropic::start().await;
    let client = client();
    let base = mock.base_url();

    for path in ["/", "/some/prefix"] {
        let response = client.head(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(response.bytes().await.unwrap().is_empty());
    }

    let tokens: Value = client
        .post(format!("{base}/v1/messages/count_tokens?beta=true"))
        .json(&body(prompt_messages("count me"), false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["input_tokens"].as_u64().unwrap() > 0);

    let models: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["type"], "model");
    assert_eq!(models["has_more"], false);

    let response = client
        .get(format!("{base}/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["type"], "error");
    assert_eq!(envelope["error"]["type"], "not_found_error");
    assert!(envelope["error"]["message"].is_string());

    let paths: Vec<(String, String)> = mock
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(paths.len(), 5);
    assert_eq!(paths[0], ("HEAD".to_owned(), "/".to_owned()));
    assert!(mock.messages_requests().is_empty());
}

#[tokio::test]
async fn request_log_records_and_redacts() {
    let mock = MockAnthropic::start().await;
    let response = client()
        .post(format!("{}/v1/messages?beta=true", mock.base_url()))
        .header("x-api-key", "sk-secret-123")
        .header("authorization", "Bearer tok-secret")
        .header("x-app", "cli")
        .json(&body(prompt_messages("MOCK_TEXT logged"), true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();

    let log = mock.messages_requests();
    assert_eq!(log.len(), 1);
    let request = &log[0];
    assert_eq!(request.query, "beta=true");
    assert!(
        request
            .header("X-Api-Key")
            .is_some_and(|v| v.starts_with("<redacted len=13 fp=")),
        "{request:?}"
    );
    assert!(
        request
            .header("authorization")
            .is_some_and(|v| v.starts_with("Bearer <redacted len=10 fp=")),
        "{request:?}"
    );
    assert_eq!(request.header("x-app"), Some("cli"));
    assert_eq!(request.prompt(), Some("MOCK_TEXT logged"));
    assert_eq!(request.model(), Some("claude-opus-5-5"));
    assert!(request.is_streaming());
    assert_eq!(request.reply, "text");

    let served: Value = client()
        .get(format!("{}/__mock/requests", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served: Vec<mock_anthropic::RecordedRequest> = serde_json::from_value(served).unwrap();
    assert_eq!(served, log);
    assert!(!serde_json::to_string(&served).unwrap().contains("secret"));

    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn classifier_is_answered_past_the_queue() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::tool_use("Bash", json!({"command": "true"})));
    let classifier = json!({
        "model": "claude-opus-5-5",
        "max_tokens": 64,
        "stop_sequences": ["</block>"],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.0b8;"},
            {"type": "text", "text": "You are a security monitor for autonomous AI coding agents.\n"},
        ],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<transcript>\n"},
            {"type": "text", "text": "User: MOCK_TOOL Bash {}\n"},
            {"type": "text", "text": "</transcript>\n"},
        ]}],
    });

    let message = message_json(&mock.base_url(), &classifier).await;
    assert_eq!(final_text(&message), "<block>no");
    assert_eq!(message["stop_reason"], "stop_sequence");
    assert_eq!(message["stop_sequence"], "</block>");
    assert_eq!(
        mock.queued(),
        1,
        "the queued tool call is left for the main loop"
    );
    assert_eq!(mock.messages_requests()[0].reply, "classifier");
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_frees_the_port() {
    let mock = MockAnthropic::start().await;
    let base = mock.base_url();
    // An idle keep-alive connection, a stalled stream and a hanging request.
    let client = client();
    client.head(format!("{base}/")).send().await.unwrap();
    let stalled = post(&base, &body(prompt_messages("MOCK_STALL"), true)).await;
    let hanging = tokio::spawn(post_raw(
        base.clone(),
        body(prompt_messages("MOCK_HANG"), true),
    ));
    timeout(QUICK, mock.wait_for_messages_requests(2))
        .await
        .unwrap();

    // Well under the 5 s after which `shutdown` would give up and abort the server task.
    timeout(std::time::Duration::from_secs(3), mock.shutdown())
        .await
        .expect("shutdown does not wait on open responses");
    assert!(timeout(QUICK, stalled.text()).await.unwrap().is_err());
    let hung = timeout(QUICK, hanging).await.unwrap().unwrap();
    if let Ok(response) = hung {
        assert!(response.bytes().await.is_err());
    }
    assert!(client.head(format!("{base}/")).send().await.is_err());
}
