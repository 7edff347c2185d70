//! The fake against the recordings of the pinned CLI, event kind by event kind: for each
//! recorded scenario, a fake run of the same kind, and the first event of every kind both
//! print compared key by key, in key order (`assert_same_shape`).

use crate::support::{Json, Sandbox, assert_same_shape, fixture, fixture_events, str_at, type_of};

/// What tells events apart: the type, the subtype of system events, the inner type of
/// stream events (with the block or delta type they carry), and the first block's type of
/// assistant messages.
fn kind(event: &Json) -> String {
    if type_of(event) == "stream_event" {
        let inner = str_at(event, &["event", "type"]).unwrap_or_default();
        let block = str_at(event, &["event", "content_block", "type"])
            .or_else(|| str_at(event, &["event", "delta", "type"]))
            .filter(|_| inner.starts_with("content_block"));
        return match block {
            Some(block) => format!("stream_event/{inner}/{block}"),
            None => format!("stream_event/{inner}"),
        };
    }
    let inner = match type_of(event) {
        "system" => str_at(event, &["subtype"]),
        "result" => str_at(event, &["subtype"]),
        "assistant" => event
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Json::as_array)
            .and_then(|blocks| blocks.first())
            .and_then(|block| str_at(block, &["type"])),
        _ => None,
    };
    match inner {
        Some(inner) => format!("{}/{inner}", type_of(event)),
        None => type_of(event).to_string(),
    }
}

/// Compares the first event of each of `kinds` in `ours` with the first in the recording.
fn compare(ours: &[Json], recording: &str, kinds: &[&str]) {
    let real = fixture_events(recording);
    for wanted in kinds {
        let first = |events: &[Json]| events.iter().find(|e| kind(e) == *wanted).cloned();
        let theirs = first(&real).unwrap_or_else(|| panic!("{recording} has no {wanted}"));
        let mine =
            first(ours).unwrap_or_else(|| panic!("the fake printed no {wanted} ({recording})"));
        assert_same_shape(&mine, &theirs);
    }
}

fn stream(prompt: &str, extra: &[&str]) -> Vec<Json> {
    let mut args = vec!["-p", prompt, "--output-format", "stream-json", "--verbose"];
    args.extend_from_slice(extra);
    let run = Sandbox::new().run(&args, "");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    run.events()
}

#[test]
fn init_lists_what_the_real_cli_offers() {
    let ours = stream("hi", &[]);
    let theirs = &fixture_events("b_stream_json_verbose.stdout")[0];
    // Everything but what differs per run and per machine.
    let per_run = [
        "cwd",
        "session_id",
        "uuid",
        "memory_paths",
        "original_cwd",
        "messaging_socket_path",
        "apiKeySource",
    ];
    for key in theirs.keys().into_iter().filter(|k| !per_run.contains(k)) {
        assert_eq!(ours[0].get(key), theirs.get(key), "system/init {key}");
    }

    // Without Bash the CLI swaps Monitor for Glob and Grep (d5); `--tools ""` offers none.
    let without_bash = stream("hi", &["--disallowedTools", "Bash"]);
    let recorded = &fixture_events("d5_tool_bash_disallowed.stdout")[0];
    assert_eq!(without_bash[0].get("tools"), recorded.get("tools"));
    let none = stream("hi", &["--tools", ""]);
    let recorded = &fixture_events("d14_tools_empty.stdout")[0];
    assert_eq!(none[0].get("tools"), recorded.get("tools"));
}

#[test]
fn tool_calls_and_their_permissions() {
    let kinds = ["assistant/tool_use", "user", "result/success"];
    compare(
        &stream("FAKE tool", &[]),
        "d0_tool_bash_echo_auto_allowed.stdout",
        &kinds,
    );
    let allowed = stream("FAKE tool", &["--allowedTools", "Bash"]);
    compare(&allowed, "d1_tool_bash_allowed.stdout", &kinds);
    let meta = |events: &[Json]| {
        let user = events.iter().find(|e| type_of(e) == "user").unwrap();
        user.get("tool_result_meta").unwrap().as_array().unwrap()[0]
            .get("permission_decision")
            .cloned()
    };
    let real = fixture_events("d1_tool_bash_allowed.stdout");
    assert_eq!(meta(&allowed), meta(&real), "allowed by a rule");

    // A refused Write: a permission_denied event, then the refusal (d4).
    let denied = stream("FAKE deny", &[]);
    let order: Vec<String> = denied.iter().map(kind).collect();
    let at = |k: &str| order.iter().position(|x| x == k).unwrap();
    assert_eq!(at("system/permission_denied") + 1, at("user"));
    compare(
        &denied,
        "d4_tool_write_not_allowed.stdout",
        &["system/permission_denied", "user", "result/success"],
    );
    assert_eq!(
        meta(&denied),
        meta(&fixture_events("d4_tool_write_not_allowed.stdout"))
    );

    // Allowed by the permission mode, the file is written (d10).
    let written = stream("FAKE deny", &["--permission-mode", "acceptEdits"]);
    compare(&written, "d10_acceptEdits_write.stdout", &["user"]);

    // No such tool (d14): the error block and no tool_result_meta.
    let missing = stream("FAKE tool", &["--tools", ""]);
    compare(&missing, "d14_tools_empty.stdout", &["user"]);
}

#[test]
fn partial_messages_and_structured_output() {
    let partial = stream("FAKE tool", &["--include-partial-messages"]);
    compare(
        &partial,
        "c4_stream_partial_tool_use.stdout",
        &[
            "system/status",
            "stream_event/message_start",
            "stream_event/content_block_start/text",
            "stream_event/content_block_start/tool_use",
            "stream_event/content_block_delta/text_delta",
            "stream_event/content_block_delta/input_json_delta",
            "stream_event/content_block_stop",
            "stream_event/message_delta",
            "stream_event/message_stop",
            "assistant/tool_use",
            "assistant/text",
            "result/success",
        ],
    );

    let schema = r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#;
    let structured = stream(
        r#"FAKE structured {"name":"Ada"}"#,
        &["--json-schema", schema],
    );
    compare(
        &structured,
        "i3_json_schema_structured_stream.stdout",
        &["assistant/tool_use", "user", "result/success"],
    );
}

#[test]
fn failures_without_an_answer() {
    // A 429 from the API, as Baton runs the CLI (one retry): h16.
    let limited = stream("FAKE api_error 429", &[]);
    compare(
        &limited,
        "h16_http429_retry_after_2_stream_max_retries_1.stdout",
        &["assistant/text", "result/success"],
    );
    let result = limited.last().unwrap();
    assert_eq!(str_at(result, &["terminal_reason"]), Some("api_error"));
    assert_eq!(
        str_at(result, &["api_error_type"]),
        Some("rate_limit_error")
    );

    // No credentials: no request, so no request id and no status (o5).
    let anonymous = stream("FAKE not_logged_in", &[]);
    compare(
        &anonymous,
        "o5_no_credentials_stream.stdout",
        &["assistant/text", "result/success"],
    );

    // Error subtypes carry `errors` and their terminal reason (g1, g2, g4).
    let budget = stream("FAKE loop 5", &["--max-budget-usd", "0.001"]);
    let result = budget.last().unwrap();
    let real = fixture_events("g4_max_budget_hit.stdout");
    assert_eq!(
        result.get("terminal_reason"),
        real.last().unwrap().get("terminal_reason")
    );
    let json = Sandbox::new().run(
        &[
            "-p",
            "FAKE loop 5",
            "--max-turns",
            "1",
            "--output-format",
            "json",
        ],
        "",
    );
    assert_same_shape(
        &json.events()[0],
        &fixture_events("g2_max_turns_hit_json.stdout")[0],
    );
}

#[test]
fn text_mode_and_replayed_input() {
    let sandbox = Sandbox::new();
    let text = sandbox.run(&["-p", "FAKE loop 5", "--max-turns", "1"], "");
    // Without a newline (g3).
    assert_eq!(text.stdout, fixture("g3_max_turns_hit_text.stdout"));

    let line = |text: &str| {
        fake_claude::obj! {
            "type" => "user",
            "message" => fake_claude::obj! { "role" => "user", "content" => text },
        }
        .to_compact()
    };
    let input = format!("{}\n{}\n", line("one"), line("two"));
    let warm = sandbox.run(
        &[
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--replay-user-messages",
        ],
        &input,
    );
    let events = warm.events();
    compare(
        &events,
        "f2_stream_input_back_to_back.stdout",
        &["system/init", "user", "assistant/text", "result/success"],
    );
    let indexes: Vec<Option<i64>> = events
        .iter()
        .filter(|e| type_of(e) == "result")
        .map(|e| e.get("result_index").and_then(Json::as_i64))
        .collect();
    assert_eq!(indexes, [Some(0), Some(1)]);
}
