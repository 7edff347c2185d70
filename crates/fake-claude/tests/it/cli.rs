//! Command-line handling and validation errors.

use crate::support::{Sandbox, first_of, fixture};

#[test]
fn version_prints_the_real_version_string() {
    let sandbox = Sandbox::new();
    for flag in ["--version", "-v"] {
        let run = sandbox.run(&[flag], "");
        assert_eq!(run.code(), Some(0));
        assert_eq!(run.stdout, fixture("_version.txt"));
    }
}

#[test]
fn print_mode_is_required() {
    let run = Sandbox::new().run(&["hello"], "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stdout.is_empty());
    assert_eq!(
        run.stderr,
        "fake-claude: only print mode (-p) is supported\n"
    );
}

#[test]
fn unknown_flag_is_rejected_like_commander() {
    let run = Sandbox::new().run(&["-p", "hi", "--nonexistent-flag"], "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr, "error: unknown option '--nonexistent-flag'\n");
}

#[test]
fn stream_json_requires_verbose() {
    let run = Sandbox::new().run(&["-p", "say hi", "--output-format", "stream-json"], "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr, fixture("b2_stream_json_no_verbose.stderr"));
}

#[test]
fn missing_prompt_is_an_error() {
    let run = Sandbox::new().run(&["-p", "--output-format", "json"], "");
    assert_eq!(run.code(), Some(1));
    assert!(run.stdout.is_empty());
    assert_eq!(run.stderr, fixture("a6_no_prompt.stderr"));
}

#[test]
fn prompt_comes_from_stdin_and_is_appended_to_the_argument() {
    let sandbox = Sandbox::new();
    let from_stdin = sandbox.run(&["-p"], "from stdin\n");
    assert_eq!(from_stdin.code(), Some(0), "{}", from_stdin.stderr);
    assert_eq!(from_stdin.stdout, "fake answer to: from stdin\n");

    let both = sandbox.run(
        &["-p", "FAKE echo_env", "--output-format", "json"],
        "piped\n",
    );
    let result = &both.events()[0];
    let report = fake_claude::json::Json::parse(result.get("result").unwrap().as_str().unwrap())
        .expect("echo_env answers with JSON");
    assert_eq!(
        report.get("prompt").and_then(|p| p.as_str()),
        Some("FAKE echo_env\npiped\n")
    );
}

#[test]
fn echo_env_reports_argv_environment_and_cwd() {
    let sandbox = Sandbox::new();
    let args = [
        "-p",
        "FAKE echo_env",
        "--model",
        "sonnet",
        "--allowedTools",
        "Bash,Read",
    ];
    let run = sandbox.run(&args, "");
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let report = fake_claude::json::Json::parse(run.stdout.trim_end()).expect("JSON answer");
    let argv: Vec<&str> = report
        .get("argv")
        .and_then(|a| a.as_array())
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(argv, args);
    let env: Vec<&str> = report
        .get("env")
        .and_then(|a| a.as_array())
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(env, ["HOME", "PATH"]);
    assert_eq!(
        report.get("cwd").and_then(|c| c.as_str()),
        Some(sandbox.work.to_str().unwrap())
    );
    assert_eq!(
        report.get("home").and_then(|c| c.as_str()),
        Some(sandbox.home.to_str().unwrap())
    );
}

#[test]
fn flags_are_reflected_in_system_init() {
    let sandbox = Sandbox::new();
    let mcp = r#"{"mcpServers":{"t":{"type":"stdio","command":"python3"},"bad":{"command":"/nonexistent/binary"}}}"#;
    let run = sandbox.run(
        &[
            "-p",
            "hi",
            "--output-format=stream-json",
            "--verbose",
            "--model",
            "sonnet",
            "--permission-mode",
            "plan",
            "--tools",
            "Bash,Read",
            "--mcp-config",
            mcp,
            "--strict-mcp-config",
        ],
        "",
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let events = run.events();
    let init = first_of(&events, "system");
    assert_eq!(
        init.get("model").unwrap().as_str(),
        Some("claude-sonnet-5-5")
    );
    assert_eq!(init.get("permissionMode").unwrap().as_str(), Some("plan"));
    assert_eq!(
        init.get("tools").unwrap().to_compact(),
        r#"["Bash","Read"]"#
    );
    assert_eq!(
        init.get("mcp_servers").unwrap().to_compact(),
        r#"[{"name":"t","status":"connected"},{"name":"bad","status":"failed"}]"#
    );
    let result = first_of(&events, "result");
    assert!(
        result
            .get("modelUsage")
            .unwrap()
            .get("claude-sonnet-5-5")
            .is_some()
    );

    let no_tools = sandbox.run(
        &[
            "-p",
            "hi",
            "--output-format",
            "stream-json",
            "--verbose",
            "--tools",
            "",
        ],
        "",
    );
    assert_eq!(
        first_of(&no_tools.events(), "system")
            .get("tools")
            .unwrap()
            .to_compact(),
        "[]"
    );
}

#[test]
fn invalid_mcp_config_is_taken_for_a_missing_file() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&["-p", "hi", "--mcp-config", r#"{"mcpServers":"#], "");
    assert_eq!(run.code(), Some(1));
    assert_eq!(
        run.stderr,
        format!(
            "Error: Invalid MCP configuration:\nMCP config file not found: {}/{{\"mcpServers\":\n",
            sandbox.work.display()
        )
    );
}

#[test]
fn bypass_is_refused_to_root_outside_a_sandbox() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("NOTICE: not running as root; skipping the root bypass check");
        return;
    }
    let sandbox = Sandbox::new();
    for flags in [
        &["--dangerously-skip-permissions"][..],
        &["--permission-mode", "bypassPermissions"][..],
    ] {
        let mut args = vec!["-p", "hi"];
        args.extend_from_slice(flags);
        let refused = sandbox.run(&args, "");
        assert_eq!(refused.code(), Some(1));
        assert!(refused.stdout.is_empty());
        assert_eq!(
            refused.stderr,
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n"
        );

        let mut cmd = sandbox.command(&args);
        cmd.env("IS_SANDBOX", "1");
        let allowed = crate::support::run(cmd, "");
        assert_eq!(allowed.code(), Some(0), "{}", allowed.stderr);
    }
}
