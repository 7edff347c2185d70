//! Prompt directives, the queue's precedence over them, and tool round trips.

use std::time::{Duration, Instant};

use mock_anthropic::{MockAnthropic, Reply};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn default_and_text_directive() {
    let mock = MockAnthropic::start().await;
    let events = stream_events(&mock.base_url(), &body(prompt_messages("say hi"), true)).await;
    assert_eq!(streamed_text(&events), "mock answer");

    let events = stream_events(
        &mock.base_url(),
        &body(
            prompt_messages("MOCK_TEXT hello from mock\nMOCK_USAGE 100 7"),
            true,
        ),
    )
    .await;
    assert_eq!(streamed_text(&events), "hello from mock");
    assert_eq!(events[0].data["message"]["usage"]["input_tokens"], 100);
    let delta = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(delta.data["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn queue_takes_precedence_over_directives() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::text("from queue"));
    assert_eq!(mock.queued(), 1);
    let request = body(prompt_messages("MOCK_TEXT from directive"), true);

    let first = stream_events(&mock.base_url(), &request).await;
    let second = stream_events(&mock.base_url(), &request).await;
    assert_eq!(streamed_text(&first), "from queue");
    assert_eq!(streamed_text(&second), "from directive");
    assert_eq!(mock.queued(), 0);
    let labels: Vec<String> = mock
        .messages_requests()
        .into_iter()
        .map(|r| r.reply)
        .collect();
    assert_eq!(labels, ["queue", "text"]);
}

#[tokio::test]
async fn error_directive_and_error_once() {
    let mock = MockAnthropic::start().await;
    let response = post(
        &mock.base_url(),
        &body(prompt_messages("MOCK_ERROR 401"), true),
    )
    .await;
    assert_eq!(response.status(), 401);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(
        envelope["error"],
        json!({"type": "authentication_error", "message": "mock 401 authentication_error"})
    );

    let response = post(
        &mock.base_url(),
        &body(prompt_messages("MOCK_ERROR 429 2"), true),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");

    // The same prompt fails once, then succeeds (the CLI's retry); other directives of
    // the prompt decide the success.
    let request = body(
        prompt_messages("MOCK_ERROR_ONCE 529\nMOCK_TEXT recovered"),
        true,
    );
    let response = post(&mock.base_url(), &request).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["x-should-retry"], "true");
    let events = stream_events(&mock.base_url(), &request).await;
    assert_eq!(streamed_text(&events), "recovered");

    // A different prompt has its own "once".
    let other = body(prompt_messages("MOCK_ERROR_ONCE 500"), true);
    assert_eq!(post(&mock.base_url(), &other).await.status(), 500);
    assert_eq!(
        streamed_text(&stream_events(&mock.base_url(), &other).await),
        "mock answer"
    );
}

#[tokio::test]
async fn tool_directive_then_tool_result_gets_final_text() {
    let mock = MockAnthropic::start().await;
    let prompt = r#"MOCK_TOOL Bash {"command":"echo hi","description":"Print hi"}"#;

    let events = stream_events(&mock.base_url(), &body(prompt_messages(prompt), true)).await;
    let tool = events
        .iter()
        .find(|e| e.data["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    let tool_id = tool.data["content_block"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let partial: String = events
        .iter()
        .filter_map(|e| e.data["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"command": "echo hi", "description": "Print hi"})
    );

    // The follow-up must not repeat the tool call (the prompt still says MOCK_TOOL).
    let follow_up = body(
        with_tool_round(prompt_messages(prompt), &tool_id, "hi"),
        true,
    );
    let events = stream_events(&mock.base_url(), &follow_up).await;
    assert_eq!(streamed_text(&events), "done: hi");
    let delta = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(delta.data["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        mock.messages_requests()[1].tool_result().as_deref(),
        Some("hi")
    );
    assert_eq!(mock.messages_requests()[1].reply, "tool-final");
}

#[tokio::test]
async fn queued_tool_use_round_trip_and_loop() {
    let mock = MockAnthropic::start().await;
    mock.push(Reply::tool_use("Bash", json!({"command": "echo x"})));
    let first = stream_events(&mock.base_url(), &body(prompt_messages("go"), true)).await;
    assert!(
        first
            .iter()
            .any(|e| e.data["content_block"]["type"] == "tool_use")
    );
    let follow_up = body(
        with_tool_round(prompt_messages("go"), "toolu_1", "x"),
        false,
    );
    let message = message_json(&mock.base_url(), &follow_up).await;
    assert_eq!(final_text(&message), "done: x");

    // MOCK_LOOP 2: tool calls until two tool results came back.
    let mut messages = prompt_messages("MOCK_LOOP 2");
    for round in 0..3 {
        let message = message_json(&mock.base_url(), &body(messages.clone(), false)).await;
        let is_tool = message["stop_reason"] == "tool_use";
        assert_eq!(is_tool, round < 2, "round {round}: {message}");
        if is_tool {
            let tool = &message["content"][1];
            assert_eq!(
                tool["input"],
                json!({"command": "echo loop", "description": "loop"})
            );
            messages = with_tool_round(messages, tool["id"].as_str().unwrap(), "loop");
        } else {
            assert_eq!(final_text(&message), "done: loop");
        }
    }
}

#[tokio::test]
async fn structured_slow_and_stall_fallback() {
    let mock = MockAnthropic::start().await;
    let message = message_json(
        &mock.base_url(),
        &body(prompt_messages(r#"MOCK_STRUCTURED {"name":"Ada"}"#), false),
    )
    .await;
    let tool = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(tool["name"], "StructuredOutput");
    assert_eq!(tool["input"], json!({"name": "Ada"}));

    let started = Instant::now();
    let events = stream_events(
        &mock.base_url(),
        &body(prompt_messages("MOCK_SLOW 3 30"), true),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(streamed_text(&events), "tick 1 tick 2 tick 3");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.name == "content_block_delta")
            .count(),
        3
    );

    // The CLI's non-streaming retry after a stalled stream gets a distinct, complete answer.
    let message = message_json(
        &mock.base_url(),
        &body(prompt_messages("MOCK_STALL"), false),
    )
    .await;
    assert_eq!(final_text(&message), mock_anthropic::STALL_FALLBACK_TEXT);
}

#[tokio::test]
async fn merged_user_turns_use_the_last_directive() {
    let mock = MockAnthropic::start().await;
    let messages = vec![json!({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nctx\n</system-reminder>\n\n"},
        {"type": "text", "text": "MOCK_HANG\n"},
        {"type": "text", "text": "[Request interrupted by user]\n"},
        {"type": "text", "text": "MOCK_TEXT after interrupt"},
    ]})];
    let events = stream_events(&mock.base_url(), &body(messages, true)).await;
    assert_eq!(streamed_text(&events), "after interrupt");
}
