//! Output formats and event shapes, compared key by key (and in key order) with what the
//! real CLI printed in the same situation.

use crate::support::{
    Json, Sandbox, assert_same_shape, first_of, fixture_events, last_of, str_at, type_of,
};

const STREAM: [&str; 3] = ["--output-format", "stream-json", "--verbose"];

fn stream_args<'a>(prompt: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-p", prompt];
    args.extend_from_slice(&STREAM);
    args.extend_from_slice(extra);
    args
}

fn types(events: &[Json]) -> Vec<&str> {
    events.iter().map(type_of).collect()
}

#[test]
fn plain_run_has_the_real_event_shapes() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&stream_args("say hi", &[]), "");
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "a successful run writes nothing to stderr"
    );
    let events = run.events();
    assert_eq!(types(&events), ["system", "assistant", "result"]);

    let (init, result) = (&events[0], &events[2]);
    assert_eq!(str_at(init, &["subtype"]), Some("init"));
    assert_eq!(str_at(init, &["cwd"]), sandbox.work.to_str());
    let session_id = str_at(init, &["session_id"]).expect("session id");
    assert!(
        events
            .iter()
            .all(|e| str_at(e, &["session_id"]) == Some(session_id))
    );
    assert_eq!(str_at(result, &["subtype"]), Some("success"));
    assert_eq!(result.get("is_error").and_then(Json::as_bool), Some(false));
    assert_eq!(str_at(result, &["result"]), Some("fake answer to: say hi"));
    // 100 + 6/4 input tokens, 1 + 22/4 output tokens, at opus's $4 and $20 per million.
    assert_eq!(
        result
            .get("usage")
            .unwrap()
            .get("input_tokens")
            .unwrap()
            .as_i64(),
        Some(101)
    );
    assert_eq!(
        result
            .get("usage")
            .unwrap()
            .get("output_tokens")
            .unwrap()
            .as_i64(),
        Some(6)
    );
    let cost = result.get("total_cost_usd").and_then(Json::as_f64).unwrap();
    assert!((cost - (101.0 * 4e-6 + 6.0 * 20e-6)).abs() < 1e-12);

    let real = fixture_events("b_stream_json_verbose.stdout");
    assert_eq!(types(&real), types(&events));
    for (ours, theirs) in events.iter().zip(&real) {
        assert_same_shape(ours, theirs);
    }
}

#[test]
fn text_and_json_outputs_print_only_the_result() {
    let sandbox = Sandbox::new();
    let text = sandbox.run(&["-p", "FAKE text hello there"], "");
    assert_eq!(text.code(), Some(0));
    assert_eq!(text.stdout, "hello there\n");

    let json = sandbox.run(
        &["-p", "FAKE text hello there", "--output-format", "json"],
        "",
    );
    let events = json.events();
    assert_eq!(types(&events), ["result"]);
    assert_eq!(str_at(&events[0], &["result"]), Some("hello there"));
    let real = fixture_events("a_json_text.stdout");
    assert_same_shape(&events[0], &real[0]);

    // `json --verbose` is one line holding an array of every event (a3).
    let verbose = sandbox.run(
        &["-p", "FAKE tool", "--output-format", "json", "--verbose"],
        "",
    );
    let lines = verbose.events();
    assert_eq!(lines.len(), 1);
    let all = lines[0].as_array().expect("an array");
    assert_eq!(
        types(all),
        ["system", "assistant", "user", "assistant", "result"]
    );
}

#[test]
fn tool_round_trip_matches_the_real_cli() {
    let run = Sandbox::new().run(&stream_args("FAKE tool", &[]), "");
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let events = run.events();
    assert_eq!(
        types(&events),
        ["system", "assistant", "user", "assistant", "result"]
    );
    let tool_use = &events[1]
        .get("message")
        .unwrap()
        .get("content")
        .unwrap()
        .as_array()
        .unwrap()[0];
    assert_eq!(tool_use.get("name").and_then(Json::as_str), Some("Bash"));
    assert_eq!(
        tool_use.get("input").unwrap().to_compact(),
        r#"{"command":"echo hi","description":"Print hi"}"#
    );
    let tool_result = &events[2];
    assert_eq!(
        str_at(tool_result, &["tool_use_result", "stdout"]),
        Some("hi")
    );
    let result = last_of(&events, "result");
    assert_eq!(str_at(result, &["result"]), Some("done"));
    assert_eq!(result.get("num_turns").and_then(Json::as_i64), Some(2));

    let real = fixture_events("d0_tool_bash_echo_auto_allowed.stdout");
    assert_same_shape(&events[1], &real[2]); // the tool_use block event
    assert_same_shape(tool_result, first_of(&real, "user"));
    assert_same_shape(result, last_of(&real, "result"));
}

#[test]
fn denied_write_is_reported_and_not_performed() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&stream_args("FAKE deny", &[]), "");
    assert_eq!(run.code(), Some(0), "a denial does not fail the run");
    let events = run.events();
    let denied = first_of(&events, "user");
    let block = &denied
        .get("message")
        .unwrap()
        .get("content")
        .unwrap()
        .as_array()
        .unwrap()[0];
    assert_eq!(block.get("is_error").and_then(Json::as_bool), Some(true));
    let path = sandbox.work.join("w.txt");
    assert_eq!(
        block.get("content").and_then(Json::as_str),
        Some(format!(
            "Claude requested permissions to write to {}, but you haven't granted it yet.",
            path.display()
        ))
        .as_deref()
    );
    let result = last_of(&events, "result");
    assert_eq!(result.get("is_error").and_then(Json::as_bool), Some(false));
    let denials = result
        .get("permission_denials")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(denials.len(), 1);
    assert_eq!(str_at(&denials[0], &["tool_name"]), Some("Write"));
    assert!(!path.exists());
    let real = fixture_events("d4_tool_write_not_allowed.stdout");
    assert_same_shape(denied, first_of(&real, "user"));
    assert_same_shape(result, last_of(&real, "result"));

    // With edits accepted, the write happens and nothing is denied.
    let allowed = sandbox.run(
        &stream_args("FAKE deny", &["--permission-mode", "acceptEdits"]),
        "",
    );
    let result = last_of(&allowed.events(), "result").clone();
    assert_eq!(result.get("permission_denials").unwrap().to_compact(), "[]");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
}

#[test]
fn api_error_401_is_a_successful_subtype_with_is_error() {
    let run = Sandbox::new().run(&stream_args("FAKE api_error 401", &[]), "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stderr.is_empty(), "API errors are reported on stdout");
    let events = run.events();
    assert_eq!(types(&events), ["system", "assistant", "result"]);
    let synthetic = &events[1];
    assert_eq!(
        str_at(synthetic, &["message", "model"]),
        Some("<synthetic>")
    );
    assert_eq!(str_at(synthetic, &["error"]), Some("authentication_failed"));
    let result = &events[2];
    assert_eq!(str_at(result, &["subtype"]), Some("success"));
    assert_eq!(result.get("is_error").and_then(Json::as_bool), Some(true));
    assert_eq!(
        result.get("api_error_status").and_then(Json::as_i64),
        Some(401)
    );
    let text = str_at(result, &["result"]).unwrap();
    assert!(
        text.starts_with("Failed to authenticate. API Error: 401"),
        "{text}"
    );
    let real = fixture_events("h1_http401_stream.stdout");
    assert_same_shape(synthetic, last_of(&real, "assistant"));
    assert_same_shape(result, last_of(&real, "result"));

    let rate_limited = Sandbox::new().run(&stream_args("FAKE api_error 429", &[]), "");
    assert_eq!(
        str_at(&rate_limited.events()[1], &["error"]),
        Some("rate_limit")
    );
    let overloaded = Sandbox::new().run(&["-p", "FAKE api_error 529"], "");
    assert_eq!(overloaded.code(), Some(1));
    assert!(
        overloaded.stdout.starts_with("API Error: 529"),
        "{}",
        overloaded.stdout
    );
}

#[test]
fn loop_past_max_turns_ends_in_error_max_turns() {
    let run = Sandbox::new().run(&stream_args("FAKE loop 5", &["--max-turns", "2"]), "");
    assert_eq!(run.code(), Some(1));
    let events = run.events();
    assert_eq!(
        types(&events),
        ["system", "assistant", "user", "assistant", "user", "result"],
        "two round trips, then the limit"
    );
    let result = last_of(&events, "result");
    assert_eq!(str_at(result, &["subtype"]), Some("error_max_turns"));
    assert_eq!(result.get("num_turns").and_then(Json::as_i64), Some(3));
    assert_eq!(str_at(result, &["terminal_reason"]), Some("max_turns"));
    assert_eq!(str_at(result, &["stop_reason"]), Some("tool_use"));
    assert_eq!(
        result.get("errors").unwrap().to_compact(),
        r#"["Reached maximum number of turns (2)"]"#
    );
    assert!(
        result.get("result").is_none(),
        "error results have no result key"
    );
    let real = fixture_events("g1_max_turns_hit.stdout");
    // The recorded model also wrote a text block before each tool call; compare the
    // events both have.
    assert_same_shape(first_of(&events, "user"), first_of(&real, "user"));
    assert_same_shape(result, last_of(&real, "result"));
    assert_eq!(
        result.get("terminal_reason"),
        last_of(&real, "result").get("terminal_reason")
    );

    // Text mode prints the error without a newline (g3).
    let text = Sandbox::new().run(&["-p", "FAKE loop 5", "--max-turns", "1"], "");
    assert_eq!(text.code(), Some(1));
    assert_eq!(text.stdout, "Error: Reached max turns (1)");
}

#[test]
fn budget_is_checked_after_each_answer() {
    let run = Sandbox::new().run(
        &stream_args("FAKE loop 5", &["--max-budget-usd", "0.001"]),
        "",
    );
    assert_eq!(run.code(), Some(1));
    let events = run.events();
    // The second answer's tool call is not executed (g4).
    assert_eq!(
        types(&events),
        ["system", "assistant", "user", "assistant", "result"]
    );
    let result = last_of(&events, "result");
    assert_eq!(str_at(result, &["subtype"]), Some("error_max_budget_usd"));
    assert_eq!(
        result.get("errors").unwrap().to_compact(),
        r#"["Reached maximum budget ($0.001)"]"#
    );
    let real = fixture_events("g4_max_budget_hit.stdout");
    assert_same_shape(result, last_of(&real, "result"));
}

#[test]
fn error_directives_produce_error_subtypes() {
    let sandbox = Sandbox::new();
    for (subtype, error) in [
        ("error_max_turns", "Reached maximum number of turns (1)"),
        ("error_max_budget_usd", "Reached maximum budget ($1)"),
        (
            "error_max_structured_output_retries",
            "Failed to provide valid structured output after 5 attempts",
        ),
        (
            "error_during_execution",
            "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null",
        ),
    ] {
        let prompt = format!("FAKE error {subtype}");
        let run = sandbox.run(&["-p", &prompt, "--output-format", "json"], "");
        assert_eq!(run.code(), Some(1), "{subtype}");
        let result = &run.events()[0];
        assert_eq!(str_at(result, &["subtype"]), Some(subtype));
        assert_eq!(result.get("is_error").and_then(Json::as_bool), Some(true));
        assert_eq!(
            result.get("errors").unwrap().as_array().unwrap()[0].as_str(),
            Some(error)
        );
        assert!(result.get("result").is_none() && result.get("api_error_status").is_none());
    }
}

#[test]
fn not_logged_in_is_reported_like_the_real_cli() {
    let run = Sandbox::new().run(&["-p", "FAKE not_logged_in", "--output-format", "json"], "");
    assert_eq!(run.code(), Some(1));
    let result = &run.events()[0];
    assert_eq!(
        str_at(result, &["result"]),
        Some("Not logged in · Please run /login")
    );
    assert!(result.get("api_error_status").unwrap().is_null());
    let real = fixture_events("o3_no_credentials.stdout");
    assert_same_shape(result, &real[0]);
}

#[test]
fn structured_output_follows_the_result() {
    let sandbox = Sandbox::new();
    let schema = r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#;
    let run = sandbox.run(
        &[
            "-p",
            r#"FAKE structured {"name":"Ada","age":36}"#,
            "--output-format",
            "json",
            "--json-schema",
            schema,
        ],
        "",
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let result = &run.events()[0];
    assert_eq!(
        str_at(result, &["result"]),
        Some(r#"{"name":"Ada","age":36}"#)
    );
    assert_eq!(
        result.get("structured_output").unwrap().to_compact(),
        r#"{"name":"Ada","age":36}"#
    );
    assert_eq!(result.get("num_turns").and_then(Json::as_i64), Some(2));
    let keys = result.keys();
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert_eq!(at("result") + 1, at("structured_output"));
    let real = fixture_events("i1_json_schema_structured.stdout");
    assert_same_shape(result, &real[0]);

    let missing = sandbox.run(
        &[
            "-p",
            "FAKE structured_missing",
            "--output-format",
            "json",
            "--json-schema",
            schema,
        ],
        "",
    );
    assert_eq!(missing.code(), Some(0));
    assert!(missing.events()[0].get("structured_output").is_none());

    let bad_schema = sandbox.run(&["-p", "hi", "--json-schema", "{not json"], "");
    assert_eq!(bad_schema.code(), Some(1));
}

#[test]
fn partial_messages_stream_deltas_around_each_block() {
    let run = Sandbox::new().run(
        &stream_args("FAKE tool", &["--include-partial-messages"]),
        "",
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let events = run.events();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match type_of(e) {
            "stream_event" => str_at(e, &["event", "type"]).unwrap().to_string(),
            "system" => str_at(e, &["subtype"]).unwrap().to_string(),
            other => other.to_string(),
        })
        .collect();
    let first_request: Vec<&str> = kinds.iter().map(String::as_str).take(8).collect();
    assert_eq!(
        first_request[..4],
        ["init", "status", "message_start", "content_block_start"]
    );
    let assistant = kinds.iter().position(|k| k == "assistant").unwrap();
    assert_eq!(kinds[assistant - 1], "content_block_delta");
    assert_eq!(kinds[assistant + 1], "content_block_stop");
    let real = fixture_events("c4_stream_partial_tool_use.stdout");
    assert_same_shape(
        first_of(&events, "stream_event"),
        first_of(&real, "stream_event"),
    );
    assert_same_shape(&events[1], &real[1]); // system/status

    let json = Sandbox::new().run(
        &[
            "-p",
            "hi",
            "--output-format",
            "json",
            "--include-partial-messages",
        ],
        "",
    );
    assert_eq!(json.code(), Some(1));
    assert_eq!(
        json.stderr,
        "Error: --include-partial-messages requires --print and --output-format=stream-json.\n"
    );
}

#[test]
fn big_line_and_slow_chunks() {
    let sandbox = Sandbox::new();
    let big = sandbox.run(&stream_args("FAKE big_line 200000", &[]), "");
    assert_eq!(big.code(), Some(0));
    let longest = big.stdout.lines().map(str::len).max().unwrap();
    assert!(longest > 200_000, "one line carries the whole text");
    assert_eq!(
        str_at(last_of(&big.events(), "result"), &["result"]),
        Some("big")
    );

    let slow = sandbox.run(&stream_args("FAKE slow 3 10", &[]), "");
    let events = slow.events();
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| type_of(e) == "assistant")
        .filter_map(|e| {
            e.get("message")?.get("content")?.as_array()?[0]
                .get("text")?
                .as_str()
        })
        .collect();
    assert_eq!(texts, ["chunk 1", "chunk 2", "chunk 3"]);
    assert_eq!(
        str_at(last_of(&events, "result"), &["result"]),
        Some("chunk 3")
    );
}
