//! The sandbox (`runner.sandbox = "bwrap"`): what a sandboxed CLI can and cannot see, reach
//! and leave behind, with the fake CLI making real calls through the proxy's socket.

use mock_anthropic::MockAnthropic;
use serde_json::{Value, json};

use crate::support::{Server, baton_bin, have};

pub fn have_bwrap() -> bool {
    have("bwrap", "the sandbox runs each CLI under bubblewrap")
}

/// A server whose CLIs run sandboxed and reach `mock` through the proxy.
async fn sandboxed(mock: &MockAnthropic, extra: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    crate::support::secret_file(&file, "sk-ant-api03-sandbox-canary");
    let file = file.display().to_string();
    let upstream = mock.base_url();
    let helper = baton_bin().display().to_string();
    let mut flags = vec![
        ("proxy.credential_file", file.as_str()),
        ("proxy.upstream", upstream.as_str()),
        ("runner.sandbox", "bwrap"),
        ("runner.sandbox_helper", helper.as_str()),
    ];
    flags.extend_from_slice(extra);
    (Server::with(&flags).await, dir)
}

fn result(job: &Value) -> String {
    job["result"].as_str().unwrap_or_default().to_string()
}

/// Processes on this machine whose command line holds `marker`.
fn running_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn a_sandboxed_cli_sees_its_workspace_and_the_proxy_and_nothing_else() {
    if !have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let (s, _cred) = sandboxed(&mock, &[]).await;
    // Things it must not see: Baton's database, a file in the host's /tmp, the host's home.
    let db = s.dir.path().join("baton.db");
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), "host secret").unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let env = s.run(json!({"prompt": "FAKE echo_env\nwho"})).await;
    assert_eq!(env["state"], "completed", "{env}");
    let seen: Value = serde_json::from_str(&result(&env)).unwrap();
    assert_eq!(seen["uid"], 1000.0, "a non-root uid inside: {seen}");
    assert_eq!(seen["base_url"], "http://127.0.0.1:8377", "{seen}");
    assert!(
        seen["api_key"].as_str().unwrap().starts_with("btk-"),
        "{seen}"
    );

    let calls = s
        .run(json!({"prompt": "FAKE api_calls 2 100 50\ncall"}))
        .await;
    assert_eq!(
        calls["state"], "completed",
        "through the proxy's socket: {calls}"
    );
    assert_eq!(mock.messages_requests().len(), 2);

    for path in [
        db.display().to_string(),
        outside.path().display().to_string(),
        format!("{home}/.bashrc"),
        "/proc/1/environ".into(),
    ] {
        let job = s
            .run(json!({"prompt": format!("FAKE cat {path}\nlook")}))
            .await;
        let r = result(&job);
        assert!(
            r.starts_with(&format!("cannot read {path}"))
                || (path.starts_with("/proc") && !r.contains("ANTHROPIC_API_KEY=sk")),
            "{path} is visible: {r}"
        );
    }
    let job = s
        .run(json!({"prompt": format!("FAKE connect 127.0.0.1:{port}\nreach")}))
        .await;
    assert!(result(&job).starts_with("cannot connect"), "{job}");
    drop(listener);

    // Writes: inside the workspace, yes; the system, no.
    let job = s
        .run(json!({"prompt": "FAKE deny\nwrite", "permission_mode": "bypassPermissions"}))
        .await;
    assert_eq!(
        job["state"], "completed",
        "bypassPermissions works inside: {job}"
    );

    // A process that leaves the CLI's session and group dies with the sandbox.
    let marker = "3599.0271828";
    let job = s
        .run(json!({"prompt": format!("FAKE escape {marker}\nflee")}))
        .await;
    assert_eq!(result(&job), "escaped", "{job}");
    let left = running_with(marker);
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(left.is_empty(), "it outlived its attempt: {left:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_sandbox_that_cannot_start_fails_the_attempt_and_never_runs_the_cli_bare() {
    if !have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("bwrap");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let broken = broken.display().to_string();
    for bwrap in [broken.as_str(), "/nonexistent/bwrap"] {
        let (s, _cred) = sandboxed(&mock, &[("runner.bwrap", bwrap)]).await;
        let job = s
            .run(json!({"prompt": "FAKE text ran bare", "max_attempts": 3}))
            .await;
        assert_eq!(
            (job["state"].as_str(), job["error"]["type"].as_str()),
            (Some("failed"), Some("sandbox_failed")),
            "{job}"
        );
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "not retried");
        assert_ne!(result(&job), "ran bare");
        s.stop().await;
    }
    // The default, `auto`, on a shared Baton (a second project) whose machine has no
    // working bubblewrap: the tenant's job fails, it does not run bare.
    let (s, _cred) = sandboxed(
        &mock,
        &[
            ("runner.bwrap", "/nonexistent/bwrap"),
            ("runner.sandbox", "auto"),
        ],
    )
    .await;
    let job = s.run(json!({"prompt": "FAKE text alone"})).await;
    assert_eq!(
        (job["sandboxed"].as_bool(), result(&job).as_str()),
        (Some(false), "alone"),
        "one project on loopback runs as before: {job}"
    );
    let admin = crate::tenancy::admin_key(&s).await;
    let key = crate::policy::project_with_key(&s, &admin, "tenant").await;
    let job = s
        .as_key(&key)
        .run(json!({"prompt": "FAKE text ran bare"}))
        .await;
    assert_eq!(
        (job["sandboxed"].as_bool(), job["error"]["type"].as_str()),
        (Some(true), Some("sandbox_failed")),
        "{job}"
    );
    assert_ne!(result(&job), "ran bare");
    s.stop().await;
}

#[tokio::test]
async fn the_canary_suite_holds_in_the_sandbox() {
    if !have_bwrap() {
        return;
    }
    let helper = baton_bin().display().to_string();
    let jobs = crate::secrets::canary_suite(
        &[
            ("runner.sandbox", "bwrap"),
            ("runner.sandbox_helper", helper.as_str()),
        ],
        true,
    )
    .await;
    assert_eq!(jobs.len(), 5);
}

#[tokio::test]
async fn an_egress_allow_list_lets_through_only_its_domains() {
    if !have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let (s, _cred) = sandboxed(&mock, &[("runner.egress_allow", r#"["example.invalid"]"#)]).await;
    let job = s.run(json!({"prompt": "FAKE echo_env\nenv"})).await;
    let seen: Value = serde_json::from_str(&result(&job)).unwrap();
    let names = seen["env"].to_string();
    assert!(names.contains("HTTPS_PROXY"), "{seen}");
    // Inside, the forwarder serves the egress proxy on its port.
    let job = s
        .run(json!({"prompt": "FAKE connect 127.0.0.1:8378\nproxy"}))
        .await;
    assert!(result(&job).starts_with("connected"), "{job}");
    // What the egress proxy lets through: a name off the list is refused (403); the
    // listed one is let through to a public address only, and this machine resolves it
    // to none (502); anything but CONNECT is refused (405).
    let socket = s.dir.path().canonicalize().unwrap().join("egress.sock");
    for (request, status) in [
        (
            "CONNECT evil.test:443 HTTP/1.1\r\nhost: evil.test:443\r\n\r\n",
            "403",
        ),
        ("CONNECT example.invalid:80 HTTP/1.1\r\n\r\n", "403"),
        ("CONNECT example.invalid:443 HTTP/1.1\r\n\r\n", "502"),
        ("GET http://example.invalid/ HTTP/1.1\r\n\r\n", "405"),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::UnixStream::connect(&socket).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {answer}"
        );
    }
    s.stop().await;
}

/// Without a sandbox, a Baton running as root runs each CLI as `runner.run_as`, in a
/// workspace given to that user.
#[tokio::test]
async fn a_root_baton_runs_each_cli_as_run_as() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "NOTICE: skipping: runner.run_as needs Baton to run as root, and this test does not"
        );
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        eprintln!("NOTICE: skipping: this machine has no user named nobody");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let work_dir = work.path().display().to_string();
    let s = Server::with(&[
        ("runner.run_as", "nobody"),
        ("runner.workspace_dir", work_dir.as_str()),
    ])
    .await;
    let job = s.run(json!({"prompt": "FAKE echo_env\nwho"})).await;
    assert_eq!(job["state"], "completed", "{job}");
    let seen: Value = serde_json::from_str(&result(&job)).unwrap();
    assert_eq!(seen["uid"], f64::from(nobody.uid.as_raw()), "{seen}");
    let job = s
        .run(json!({"prompt": "FAKE deny\nwrite", "permission_mode": "bypassPermissions"}))
        .await;
    assert_eq!(
        job["state"], "completed",
        "bypassPermissions works as nobody: {job}"
    );
    s.stop().await;
    // A data directory the user cannot reach is refused at start, with the reason (Baton
    // opens the data directory itself to the user, not the directories above it).
    let outer = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        outer.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let roots = tempfile::tempdir().unwrap();
    let mut flags = crate::support::test_flags(&outer.path().join("data"), roots.path());
    flags.push(("runner.run_as".into(), "nobody".into()));
    let config = baton::Config::load(None, &[], &flags).unwrap();
    let err = baton::App::build(config).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains("nobody cannot reach its workspaces"),
        "{err:#}"
    );
    // And a credential file others may read.
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("cred");
    std::fs::write(&cred, "sk-ant-api03-open").unwrap();
    std::fs::set_permissions(&cred, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut flags = crate::support::test_flags(&dir.path().join("data"), roots.path());
    flags.push(("runner.run_as".into(), "nobody".into()));
    flags.push(("proxy.credential_file".into(), cred.display().to_string()));
    let config = baton::Config::load(None, &[], &flags).unwrap();
    let err = baton::App::build(config).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains("may be read by others"),
        "{err:#}"
    );
    assert!(!format!("{err:#}").contains("sk-ant-api03-open"));
}

/// A job whose `add_dirs` is a parent of Baton's data directory does not see the data
/// directory again through it.
#[tokio::test]
async fn a_writable_parent_directory_does_not_show_the_hidden_data_directory() {
    if !have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let parent = std::env::temp_dir().canonicalize().unwrap();
    let roots = format!("[\"{}\"]", parent.display());
    let (s, _cred) = sandboxed(&mock, &[("limits.workspace_roots", roots.as_str())]).await;
    let db = s.dir.path().canonicalize().unwrap().join("baton.db");
    assert!(db.starts_with(&parent));
    let job = s
        .run(json!({"prompt": format!("FAKE cat {}\nlook", db.display()), "add_dirs": [parent]}))
        .await;
    assert!(
        result(&job).starts_with("cannot read"),
        "the database is visible through add_dirs: {job}"
    );
    s.stop().await;
}

/// A directory others may enter (bubblewrap, started as `nobody` by a root Baton, binds
/// what is in it), with an executable `name` holding `script`.
fn script_dir(name: &str, script: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            files_holding(&p, needle, out);
        } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            out.push(p);
        }
    }
}

/// The `ANTHROPIC_API_KEY` of every fake CLI running in `data` (other tests run theirs
/// beside): each attempt's proxy token.
fn running_tokens(data: &std::path::Path) -> Vec<(i32, String)> {
    let data = data.canonicalize().unwrap();
    let mut found = Vec::new();
    for pid in running_with("fake-claude") {
        if !std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(&data)) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"ANTHROPIC_API_KEY=") {
                found.push((pid, String::from_utf8_lossy(v).into_owned()));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_tenants_job_in_the_sandbox_reads_nothing_of_another_project_and_no_credential() {
    if !have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    let (dir, roots) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = dir.path().display().to_string();
    let cred_dir = tempfile::tempdir().unwrap();
    let credential = cred_dir.path().join("credential");
    crate::support::secret_file(&credential, "sk-ant-api03-escape-canary");
    let credential = credential.display().to_string();
    let baton_environ = format!("/proc/{}/environ", std::process::id());
    // A catalogue MCP server that tries every path there is, as the CLI starts it.
    let (_snoop_dir, snoop) = script_dir(
        "snoop",
        "#!/bin/sh\nfor f in \"$@\"; do echo \"== $f\"; if [ -d \"$f\" ]; then find \"$f\" -type f -exec cat {} + 2>&1; else cat \"$f\" 2>&1; fi; done\n\
         for e in /proc/[0-9]*/environ; do echo \"== $e\"; tr '\\000' '\\n' < \"$e\" 2>&1; done\n",
    );
    let catalogue = format!(
        r#"[{{name = "snoop", command = "{snoop}", args = ["{data}/baton.db", "{data}/attempts", "{credential}", "{baton_environ}"]}}]"#
    );
    let upstream = mock.base_url();
    let helper = baton_bin().display().to_string();
    let s = Server::start_in(
        dir,
        roots,
        &[
            ("proxy.credential_file", credential.as_str()),
            ("proxy.upstream", upstream.as_str()),
            ("runner.sandbox", "auto"),
            ("runner.sandbox_helper", helper.as_str()),
            ("mcp_server", catalogue.as_str()),
        ],
    )
    .await;
    let admin = crate::tenancy::admin_key(&s).await;
    let key_a = crate::policy::project_with_key(&s, &admin, "tenant-a").await;
    let key_b = crate::policy::project_with_key(&s, &admin, "tenant-b").await;
    let (a, b) = (s.as_key(&key_a), s.as_key(&key_b));

    // Project A's agent holds its secret in its CLAUDE.md (so in the database and in its
    // run's workspace); a run of it goes on while B tries to read it.
    let canary = format!("CANARY-A-{}", uuid::Uuid::now_v7().simple());
    let (status, agent) = a
        .post(
            "/v1/agents",
            json!({"name": "holder", "prompt_template": "FAKE sleep 20000\nFAKE text done",
                   "claude_md": format!("The secret is {canary}.")}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (status, held) = a.post("/v1/agents/holder/runs", json!({"input": {}})).await;
    assert_eq!(status, 201, "{held}");
    let held_id = held["id"].as_str().unwrap().to_string();
    let mut tokens = Vec::new();
    for _ in 0..200 {
        tokens = running_tokens(s.dir.path());
        if !tokens.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (a_cli, a_token) = tokens.first().cloned().expect("A's CLI is running");
    assert!(a_token.starts_with("btk-"), "{a_token}");
    let mut a_files = Vec::new();
    files_holding(&s.dir.path().join("attempts"), &canary, &mut a_files);
    let a_file = a_files
        .first()
        .cloned()
        .expect("A's workspace holds its prompt");
    let mut db_files = Vec::new();
    files_holding(s.dir.path(), &canary, &mut db_files);
    assert!(
        db_files
            .iter()
            .any(|p| p.to_string_lossy().contains("baton.db")),
        "the database holds A's prompt: {db_files:?}"
    );

    // B, on the safe default policy, tries each path as its CLI (Read, or Bash where a
    // policy allows it) would.
    let paths = [
        ("the database", format!("{data}/baton.db")),
        ("another attempt's workspace", a_file.display().to_string()),
        ("Baton's environment", baton_environ.clone()),
        (
            "another CLI's environment",
            format!("/proc/{a_cli}/environ"),
        ),
        ("the credential file", credential.clone()),
    ];
    let secrets = [
        canary.as_str(),
        a_token.as_str(),
        "sk-ant-api03-escape-canary",
    ];
    for (what, path) in &paths {
        let job = b
            .run(json!({"prompt": format!("FAKE cat {path}\nlook")}))
            .await;
        assert_eq!(job["sandboxed"], true, "{job}");
        assert_eq!(job["state"], "completed", "{what}: {job}");
        let r = result(&job);
        for secret in secrets {
            assert!(
                !r.contains(secret),
                "{what} ({path}) leaked into B's job: {r}"
            );
        }
        assert!(
            r.starts_with("cannot read") || r.is_empty(),
            "{what} ({path}) was read: {r}"
        );
    }
    // Bash itself is not B's to ask for.
    let (status, e) = b
        .post(
            "/v1/jobs",
            json!({"prompt": "x", "allowed_tools": ["Bash"]}),
        )
        .await;
    assert_eq!(status, 403, "{e}");

    // A catalogue server the admin lets B use, run inside B's sandbox, tries them all.
    let mut policy = json!({});
    policy["mcp_servers"] = json!(["snoop"]);
    crate::policy::set_policy(&s, &admin, "tenant-b", policy).await;
    let job = b
        .run(json!({"prompt": "FAKE mcp snoop\nsnoop", "mcp_servers": ["snoop"]}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let r = result(&job);
    assert!(
        r.contains(&format!("== {data}/baton.db")),
        "it ran and tried: {r}"
    );
    assert!(
        r.contains("== /proc/1/environ"),
        "it listed the processes it sees: {r}"
    );
    for secret in secrets {
        assert!(
            !r.contains(secret),
            "the catalogue server read a secret: {r}"
        );
    }
    assert_eq!(
        a.job(&held_id).await["state"],
        "running",
        "A's job was running all along"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_catalogue_server_outside_the_sandbox_is_bridged_in_and_its_secrets_stay_out() {
    if !have_bwrap() {
        return;
    }
    let mock = MockAnthropic::start().await;
    // A file the sandbox hides (the host's /tmp), which the server outside can read.
    let host = tempfile::tempdir().unwrap();
    let host_file = host.path().join("host-only");
    std::fs::write(&host_file, "host-only-contents").unwrap();
    let (_dir, outside) = script_dir(
        "outside",
        &format!(
            "#!/bin/sh\nread request\necho \"outside secret=$OUTSIDE_SECRET host=$(cat {}) got=$request\"\n",
            host_file.display()
        ),
    );
    let catalogue = format!(
        r#"[{{name = "outside", command = "{outside}", env = {{OUTSIDE_SECRET = "mcp-env-canary"}}, sandbox = false}}]"#
    );
    let (s, _cred) = sandboxed(&mock, &[("mcp_server", catalogue.as_str())]).await;
    let job = s
        .run(json!({"prompt": "FAKE mcp outside\nbridge", "mcp_servers": ["outside"]}))
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let r = result(&job);
    assert!(
        r.starts_with("outside secret=mcp-env-canary host=host-only-contents got={"),
        "the server ran outside, with its environment, and spoke to the CLI: {r}"
    );
    assert!(r.contains("initialize"), "{r}");
    // What the CLI is given names the bridge, not the server's command or environment.
    let job = s
        .run(json!({"prompt": "FAKE cat ../mcp_config.json\nconfig", "mcp_servers": ["outside"]}))
        .await;
    let config = result(&job);
    assert!(config.contains("mcp-bridge"), "{config}");
    assert!(
        !config.contains("mcp-env-canary") && !config.contains(&outside),
        "{config}"
    );
    // Nothing of it outlives the attempt.
    assert!(running_with(&outside).is_empty());
    s.stop().await;
}
