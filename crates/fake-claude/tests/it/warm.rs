//! Warm processes: `--input-format stream-json`, one turn per stdin line.

use crate::support::{Json, Live, Sandbox, TIMEOUT, fixture, fixture_events, str_at, type_of};

const WARM: [&str; 6] = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
];

fn user_line(content: &str) -> String {
    let message = fake_claude::obj! {
        "type" => "user",
        "message" => fake_claude::obj! { "role" => "user", "content" => content },
    };
    message.to_compact()
}

#[test]
fn two_turns_share_one_session() {
    let sandbox = Sandbox::new();
    let mut live = Live::spawn(sandbox.command(&WARM));
    // An unknown type is ignored (f6).
    live.send(r#"{"type":"bogus","foo":1}"#);
    live.send(&user_line("FAKE text answer one"));
    let first = live.events_until("result");
    assert_eq!(
        first.iter().map(type_of).collect::<Vec<_>>(),
        ["system", "assistant", "result"]
    );
    assert_eq!(str_at(&first[2], &["result"]), Some("answer one"));

    // The second turn starts only when asked, repeats system/init and has the history.
    let blocks =
        r#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"second"}]}}"#;
    live.send(blocks);
    let second = live.events_until("result");
    assert_eq!(type_of(&second[0]), "system", "init is repeated every turn");
    let result = second.last().unwrap();
    assert_eq!(
        str_at(result, &["result"]),
        Some("I remember: FAKE text answer one")
    );
    assert_eq!(
        str_at(result, &["session_id"]),
        str_at(&first[0], &["session_id"])
    );
    // Cost is cumulative over the process (f1), usage is per turn.
    let cost = |e: &Json| e.get("total_cost_usd").and_then(Json::as_f64).unwrap();
    assert!(cost(result) > cost(&first[2]));

    live.close_stdin();
    assert_eq!(live.next_line(), None, "stdout closes at end of input");
    let status = live.wait(TIMEOUT).expect("exits after stdin EOF");
    assert_eq!(status.code(), Some(0));
    let real = fixture_events("f1_stream_input_multi.stdout");
    crate::support::assert_same_shape(result, real.last().unwrap());
}

#[test]
fn replayed_messages_and_queued_lines() {
    let sandbox = Sandbox::new();
    let mut args = WARM.to_vec();
    args.push("--replay-user-messages");
    // Lines sent back to back are queued, each gets its own result (f2).
    let input = format!("{}\n{}\n", user_line("one"), user_line("two"));
    let run = sandbox.run(&args, &input);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let events = run.events();
    let results: Vec<&Json> = events.iter().filter(|e| type_of(e) == "result").collect();
    assert_eq!(results.len(), 2);
    let replays: Vec<&Json> = events
        .iter()
        .filter(|e| e.get("isReplay").and_then(Json::as_bool) == Some(true))
        .collect();
    assert_eq!(replays.len(), 2);
    assert_eq!(str_at(replays[0], &["message", "content"]), Some("one"));
}

#[test]
fn malformed_input_ends_the_process() {
    let sandbox = Sandbox::new();
    let bad = sandbox.run(&WARM, "this is not json\n");
    assert_eq!(bad.code(), Some(1));
    assert!(bad.stdout.is_empty());
    assert_eq!(bad.stderr, fixture("f4_stream_input_bad_json.stderr"));

    let no_role = sandbox.run(
        &WARM,
        "{\"type\":\"user\",\"message\":{\"content\":\"x\"}}\n",
    );
    assert_eq!(no_role.code(), Some(1));
    assert_eq!(
        no_role.stderr,
        fixture("f6_stream_input_unknown_type_and_no_role.stderr")
    );
}

#[test]
fn interrupt_aborts_the_turn_and_the_process_goes_on() {
    let sandbox = Sandbox::new();
    let mut live = Live::spawn(sandbox.command(&WARM));
    live.send(
        r#"{"type":"control_request","request_id":"init-1","request":{"subtype":"initialize"}}"#,
    );
    let init = live.next_event();
    assert_eq!(str_at(&init, &["response", "request_id"]), Some("init-1"));
    let real = fixture_events("f5_stream_input_initialize_interrupt.stdout");
    // The answer's keys are the real ones; its lists are abridged.
    assert_eq!(init.keys(), real[0].keys());
    let body = |e: &Json| e.get("response").unwrap().keys().join(",");
    assert_eq!(body(&init), body(&real[0]));
    let answer = |e: &Json| {
        e.get("response")
            .and_then(|r| r.get("response"))
            .map(|r| r.keys().join(","))
    };
    assert_eq!(answer(&init), answer(&real[0]));

    live.send(&user_line("FAKE sleep 60000"));
    assert_eq!(type_of(&live.next_event()), "system");
    live.send(
        r#"{"type":"control_request","request_id":"int-1","request":{"subtype":"interrupt"}}"#,
    );
    let events = live.events_until("result");
    assert_eq!(
        events[0].to_compact(),
        r#"{"type":"control_response","response":{"subtype":"success","request_id":"int-1","response":{"still_queued":[]}}}"#
    );
    // The control response, "[Request interrupted by user]", and the result (f5).
    for (ours, theirs) in events.iter().zip(&real[2..5]) {
        crate::support::assert_same_shape(ours, theirs);
    }
    let result = events.last().unwrap();
    assert_eq!(str_at(result, &["subtype"]), Some("error_during_execution"));
    assert_eq!(
        str_at(result, &["terminal_reason"]),
        Some("aborted_streaming")
    );

    live.send(&user_line("FAKE text after interrupt"));
    let next = live.events_until("result");
    assert_eq!(
        str_at(next.last().unwrap(), &["result"]),
        Some("after interrupt")
    );
    live.close_stdin();
    assert_eq!(live.wait(TIMEOUT).and_then(|s| s.code()), Some(0));
}
