//! Process-level misbehaviour a supervisor must survive: no result, hangs, crashes,
//! grandchildren holding the pipes, garbage and noise.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::support::{Live, Sandbox, TIMEOUT, assert_group_gone, type_of};

const STREAM: [&str; 3] = ["--output-format", "stream-json", "--verbose"];

fn stream_args(prompt: &str) -> Vec<&str> {
    let mut args = vec!["-p", prompt];
    args.extend_from_slice(&STREAM);
    args
}

#[test]
fn no_result_exits_zero_without_a_result_line() {
    let run = Sandbox::new().run(&stream_args("FAKE no_result"), "");
    assert_eq!(run.code(), Some(0));
    let types: Vec<String> = run
        .events()
        .iter()
        .map(|e| type_of(e).to_string())
        .collect();
    assert_eq!(types, ["system", "assistant"]);
}

#[test]
fn hang_mid_stream_keeps_stdout_open_until_the_group_is_killed() {
    let sandbox = Sandbox::new();
    let mut live = Live::spawn(sandbox.command(&stream_args("FAKE hang_mid_stream")));
    live.close_stdin(); // as Baton does after writing the prompt
    let events = live.events_until("assistant");
    assert_eq!(type_of(&events[0]), "system");
    assert!(live.silent_for(Duration::from_millis(300)));
    assert!(live.wait(Duration::ZERO).is_none(), "still running");
    let pgid = live.pgid();
    let (rest, _) = live.finish();
    assert!(rest.is_empty(), "no result after the hang: {rest}");
    assert_eq!(
        live.wait(TIMEOUT).and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    assert_group_gone(pgid);
}

#[test]
fn hang_after_result_prints_the_result_then_never_exits() {
    let sandbox = Sandbox::new();
    let mut live = Live::spawn(sandbox.command(&stream_args("FAKE hang_after_result")));
    live.close_stdin(); // as Baton does after writing the prompt
    live.events_until("result");
    assert!(!live.has_exited(Duration::from_millis(300)));
    live.finish();
}

#[test]
fn grandchild_holds_the_pipes_after_the_fake_exits() {
    let sandbox = Sandbox::new();
    let mut live = Live::spawn(sandbox.command(&stream_args("FAKE grandchild")));
    live.close_stdin(); // as Baton does after writing the prompt
    live.events_until("result");
    assert!(live.has_exited(TIMEOUT), "the fake itself exits");
    assert!(
        live.silent_for(Duration::from_millis(300)),
        "stdout stays open: the grandchild inherited it"
    );
    let pgid = live.pgid();
    live.finish();
    assert_eq!(live.wait(TIMEOUT).and_then(|s| s.code()), Some(0));
    assert_group_gone(pgid);
}

#[test]
fn crash_aborts_after_the_first_message() {
    let run = Sandbox::new().run(&stream_args("FAKE crash"), "");
    assert_eq!(run.status.signal(), Some(libc::SIGABRT));
    let types: Vec<String> = run
        .events()
        .iter()
        .map(|e| type_of(e).to_string())
        .collect();
    assert_eq!(types, ["system", "assistant"]);
}

#[test]
fn exit_code_directive_prints_nothing() {
    let run = Sandbox::new().run(&stream_args("FAKE exit 7"), "");
    assert_eq!(run.code(), Some(7));
    assert!(run.stdout.is_empty() && run.stderr.is_empty());
}

#[test]
fn garbage_lines_then_failure() {
    let run = Sandbox::new().run(&stream_args("FAKE garbage"), "");
    assert_eq!(run.code(), Some(1));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "system/init and three garbage lines");
    assert!(
        lines[1..]
            .iter()
            .all(|l| fake_claude::json::Json::parse(l).is_err())
    );
}

#[test]
fn stderr_flood_then_a_normal_answer() {
    let run = Sandbox::new().run(&["-p", "FAKE stderr_flood 300000\nFAKE text fine"], "");
    assert_eq!(run.code(), Some(0));
    assert_eq!(run.stderr.len(), 300_000);
    assert_eq!(run.stdout, "fine\n");
}

#[test]
fn sleep_delays_the_answer() {
    let started = std::time::Instant::now();
    let run = Sandbox::new().run(&["-p", "FAKE sleep 200\nFAKE text hi"], "");
    assert_eq!(run.stdout, "hi\n");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn sigint_ends_the_turn_as_interrupted_and_exits_zero() {
    let sandbox = Sandbox::new();
    let mut live = Live::spawn(sandbox.command(&stream_args("FAKE sleep 60000")));
    live.close_stdin(); // as Baton does after writing the prompt
    assert_eq!(type_of(&live.next_event()), "system");
    // SAFETY: signals our own child, which is alive (it is sleeping).
    unsafe {
        libc::kill(live.pgid(), libc::SIGINT);
    }
    // 2.1.332 reports the interruption and a result before it exits 0 (k2).
    let events = live.events_until("result");
    assert_eq!(live.wait(TIMEOUT).and_then(|s| s.code()), Some(0));
    let real = crate::support::fixture_events("k2_sigint_during_request.stdout");
    assert_eq!(events.len(), 2);
    for (ours, theirs) in events.iter().zip(&real[1..]) {
        crate::support::assert_same_shape(ours, theirs);
    }
    let (rest, _) = live.finish();
    assert!(rest.is_empty());
}
