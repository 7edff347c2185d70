//! Sessions: stored where the real CLI stores them, so that a transcript copied to another
//! HOME resumes there, a session is found from another directory, and an unknown one fails
//! the same way.

use std::fs;

use crate::support::{
    Sandbox, assert_same_shape, command, fixture, fixture_events, last_of, run, str_at, type_of,
};

const SESSION: &str = "11111111-2222-4333-8444-555555555555";

#[test]
fn resume_in_a_fresh_home_from_a_copied_transcript() {
    let first = Sandbox::new();
    let run1 = first.run(
        &[
            "-p",
            "the secret word is banana",
            "--session-id",
            SESSION,
            "--output-format",
            "json",
        ],
        "",
    );
    assert_eq!(run1.code(), Some(0), "{}", run1.stderr);
    let transcript = first.project_dir().join(format!("{SESSION}.jsonl"));
    assert!(
        transcript.is_file(),
        "transcript at {}",
        transcript.display()
    );

    // Another HOME whose only content is that one file, at the same cwd (e5).
    let second_home = tempfile::tempdir().unwrap();
    let copy = crate::support::project_dir(second_home.path(), &first.work)
        .join(format!("{SESSION}.jsonl"));
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    fs::copy(&transcript, &copy).unwrap();
    let before = fs::read_to_string(&copy).unwrap().lines().count();

    let resumed = run(
        command(
            second_home.path(),
            &first.work,
            &[
                "-p",
                "what was the secret word?",
                "--resume",
                SESSION,
                "--output-format",
                "json",
            ],
        ),
        "",
    );
    assert_eq!(resumed.code(), Some(0), "{}", resumed.stderr);
    let result = &resumed.events()[0];
    assert_eq!(
        str_at(result, &["result"]),
        Some("I remember: the secret word is banana")
    );
    assert_eq!(str_at(result, &["session_id"]), Some(SESSION));
    let after = fs::read_to_string(&copy).unwrap().lines().count();
    assert!(
        after > before,
        "the resumed turn is appended to the same file"
    );

    // The next resume remembers both earlier prompts.
    let again = run(
        command(
            second_home.path(),
            &first.work,
            &["-p", "and now?", "--resume", SESSION],
        ),
        "",
    );
    assert_eq!(
        again.stdout,
        "I remember: the secret word is banana | what was the secret word?\n"
    );
}

#[test]
fn resume_reads_a_real_cli_transcript() {
    let real = fixture("e_session_file_after_resume.jsonl");
    let sandbox = Sandbox::new();
    let path = sandbox.project_dir().join(format!("{SESSION}.jsonl"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, real).unwrap();
    let run = sandbox.run(&["-p", "once more", "--resume", SESSION], "");
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "I remember: MOCK_TEXT first answer: the secret word is banana | what was the secret word?\n"
    );
}

#[test]
fn resume_from_another_cwd_finds_the_session() {
    let sandbox = Sandbox::new();
    let created = sandbox.run(&["-p", "hello", "--session-id", SESSION], "");
    assert_eq!(created.code(), Some(0), "{}", created.stderr);

    // 2.1.332 looks in every project directory (e3); the transcript stays where it was.
    let elsewhere = sandbox.work.parent().unwrap().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let args = ["-p", "and now?", "--resume", SESSION];
    let resumed = run(command(&sandbox.home, &elsewhere, &args), "");
    assert_eq!(resumed.code(), Some(0), "{}", resumed.stderr);
    assert_eq!(resumed.stdout, "I remember: hello\n");
    let transcript = sandbox.project_dir().join(format!("{SESSION}.jsonl"));
    assert!(
        fs::read_to_string(&transcript)
            .unwrap()
            .contains("and now?")
    );
    let own = crate::support::project_dir(&sandbox.home, &elsewhere);
    assert!(!own.exists(), "nothing is written under {}", own.display());
}

#[test]
fn resume_of_an_unknown_session_fails_like_the_real_cli() {
    let sandbox = Sandbox::new();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let args = [
        "-p",
        "hi",
        "--output-format",
        "stream-json",
        "--verbose",
        "--resume",
        unknown,
    ];
    let failed = sandbox.run(&args, "");
    assert_eq!(failed.code(), Some(1));
    assert_eq!(failed.stderr, fixture("e3b_resume_unknown_stream.stderr"));
    let events = failed.events();
    assert_eq!(events.len(), 1, "no system/init, one result line");
    let result = &events[0];
    assert_eq!(str_at(result, &["subtype"]), Some("error_during_execution"));
    assert_eq!(str_at(result, &["session_id"]), Some(unknown));
    let real = fixture_events("e3b_resume_unknown_stream.stdout");
    assert_same_shape(result, &real[0]);
    assert_eq!(result.get("errors"), real[0].get("errors"));

    // With json output, stdout stays empty (e4).
    let json = sandbox.run(
        &["-p", "hi", "--output-format", "json", "--resume", unknown],
        "",
    );
    assert_eq!(json.code(), Some(1));
    assert!(json.stdout.is_empty());
    assert_eq!(json.stderr, failed.stderr);
}

#[test]
fn session_ids_are_validated_and_not_reused() {
    let sandbox = Sandbox::new();
    let invalid = sandbox.run(&["-p", "hi", "--session-id", "not-a-uuid"], "");
    assert_eq!(invalid.code(), Some(1));
    assert_eq!(
        invalid.stderr,
        "Error: Invalid session ID. Must be a valid UUID.\n"
    );

    assert_eq!(
        sandbox
            .run(&["-p", "hi", "--session-id", SESSION], "")
            .code(),
        Some(0)
    );
    let reused = sandbox.run(&["-p", "hi", "--session-id", SESSION], "");
    assert_eq!(reused.code(), Some(1));
    assert_eq!(
        reused.stderr,
        format!("Error: Session ID {SESSION} is already in use.\n")
    );
}

#[test]
fn fork_copies_history_into_a_new_session() {
    let sandbox = Sandbox::new();
    sandbox.run(&["-p", "original prompt", "--session-id", SESSION], "");
    let fork_id = "22222222-3333-4444-8555-666666666666";
    let forked = sandbox.run(
        &[
            "-p",
            "forked",
            "--resume",
            SESSION,
            "--fork-session",
            "--session-id",
            fork_id,
            "--output-format",
            "json",
        ],
        "",
    );
    assert_eq!(forked.code(), Some(0), "{}", forked.stderr);
    let result = &forked.events()[0];
    assert_eq!(str_at(result, &["session_id"]), Some(fork_id));
    assert_eq!(
        str_at(result, &["result"]),
        Some("I remember: original prompt")
    );
    let original =
        fs::read_to_string(sandbox.project_dir().join(format!("{SESSION}.jsonl"))).unwrap();
    let copy = fs::read_to_string(sandbox.project_dir().join(format!("{fork_id}.jsonl"))).unwrap();
    assert!(
        !original.contains("forked"),
        "the original session is untouched"
    );
    assert!(copy.contains("original prompt") && copy.contains("forked"));
    assert!(
        !copy.contains(SESSION),
        "copied lines carry the new session id"
    );
}

#[test]
fn no_session_persistence_writes_nothing() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(
        &[
            "-p",
            "hi",
            "--no-session-persistence",
            "--output-format",
            "json",
        ],
        "",
    );
    assert_eq!(run.code(), Some(0));
    let id = str_at(&run.events()[0], &["session_id"])
        .unwrap()
        .to_string();
    assert!(!sandbox.project_dir().join(format!("{id}.jsonl")).exists());
    let resumed = sandbox.run(&["-p", "again", "--resume", &id], "");
    assert_eq!(resumed.code(), Some(1));
}

#[test]
fn config_dir_overrides_home() {
    let sandbox = Sandbox::new();
    let config = tempfile::tempdir().unwrap();
    let mut cmd = sandbox.command(&[
        "-p",
        "hi",
        "--session-id",
        SESSION,
        "--output-format",
        "stream-json",
        "--verbose",
    ]);
    cmd.env("CLAUDE_CONFIG_DIR", config.path());
    let run = run(cmd, "");
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let project = crate::support::project_dir(&sandbox.home, &sandbox.work);
    let name = project.file_name().unwrap();
    assert!(
        config
            .path()
            .join("projects")
            .join(name)
            .join(format!("{SESSION}.jsonl"))
            .is_file()
    );
    assert!(!sandbox.home.join(".claude").exists());
    let init = &run.events()[0];
    assert_eq!(type_of(init), "system");
    assert!(
        str_at(init, &["memory_paths", "auto"])
            .unwrap()
            .starts_with(config.path().to_str().unwrap())
    );
    assert_eq!(
        str_at(last_of(&run.events(), "result"), &["session_id"]),
        Some(SESSION)
    );
}
