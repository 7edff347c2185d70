//! The server as a process: SIGKILL and restart, SIGTERM drain, and the CLI client.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{baton_bin, fake_claude, survivors, test_flags};

pub(crate) struct Proc {
    pub child: Child,
    pub base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_server(dir: &std::path::Path, roots: &std::path::Path, port: u16) -> Proc {
    spawn_server_with(dir, roots, port, &[])
}

/// `baton serve` as a process, with the test flags and `extra` after them.
pub(crate) fn spawn_server_with(
    dir: &std::path::Path,
    roots: &std::path::Path,
    port: u16,
    extra: &[(&str, &str)],
) -> Proc {
    spawn_server_env(dir, roots, port, extra, &[])
}

/// [`spawn_server_with`], with `env` in the server's environment.
pub(crate) fn spawn_server_env(
    dir: &std::path::Path,
    roots: &std::path::Path,
    port: u16,
    extra: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = Command::new(baton_bin());
    cmd.envs(env.iter().copied());
    cmd.arg("serve");
    let extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    for (k, v) in test_flags(dir, roots).into_iter().chain(extra) {
        let v = if k == "server.listen" {
            format!("127.0.0.1:{port}")
        } else {
            v
        };
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    // Its log goes to a file in its data directory, as it would for a service manager.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn get(base: &str, path: &str) -> Option<Value> {
    let resp = reqwest::get(format!("{base}{path}")).await.ok()?;
    resp.json().await.ok()
}

pub(crate) async fn wait_ready(p: &Proc) {
    for _ in 0..400 {
        if get(&p.base, "/v1/health").await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server did not come up");
}

pub(crate) async fn wait_job(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..2400 {
        if let Some(j) = get(base, &format!("/v1/jobs/{id}")).await
            && done(&j)
        {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never reached the expected state");
}

pub(crate) async fn submit(base: &str, body: Value) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Starts a server with `extra` settings, lets it log a job's life, stops it with SIGTERM
/// and returns what it wrote to stderr (a file, not a terminal).
async fn log_of_a_job(extra: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let mut settings = vec![("server.log", "info")];
    settings.extend_from_slice(extra);
    let mut server = spawn_server_with(dir.path(), roots.path(), free_port(), &settings);
    wait_ready(&server).await;
    let id = submit(&server.base, json!({"prompt": "FAKE text logged"})).await;
    wait_job(&server.base, &id, |j| j["state"] == "completed").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    server.child.wait().unwrap();
    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap()
}

#[tokio::test]
async fn logs_to_a_file_carry_no_colour_codes_and_json_logs_are_one_object_a_line() {
    let text = log_of_a_job(&[]).await;
    assert!(text.contains("baton listening"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file: {text:?}"
    );

    let json_log = log_of_a_job(&[("server.log_format", "json")]).await;
    let lines: Vec<&str> = json_log.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 2, "{json_log}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("baton listening") && l.contains("\"address\"")),
        "{json_log}"
    );
}

#[tokio::test]
async fn sigkill_mid_job_then_restart_requeues_and_completes_with_no_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_server(dir.path(), roots.path(), port);
    wait_ready(&server).await;
    // The grandchild is the hard case: the parent-death signal reaches only the CLI itself.
    let id = submit(&server.base, json!({"prompt": "FAKE grandchild\nFAKE sleep 1500\nFAKE text survived", "max_attempts": 3})).await;
    let running = wait_job(&server.base, &id, |j| j["attempts"][0]["pid"].is_i64()).await;
    let pgid = running["attempts"][0]["pid"].as_i64().unwrap();
    assert!(!survivors(pgid).is_empty(), "the attempt should be running");

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // The parent-death signal (armed in the child before exec) kills the CLI itself at once.
    let leader_alive = || {
        std::fs::read_to_string(format!("/proc/{pgid}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    for _ in 0..200 {
        if !leader_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !leader_alive(),
        "the CLI outlived the server it belonged to"
    );
    // The next incarnation kills what is left of the group and requeues the job at once.
    let server = spawn_server(dir.path(), roots.path(), port);
    wait_ready(&server).await;
    assert!(
        survivors(pgid).is_empty(),
        "processes of the killed server's attempt survived its restart: {:?}",
        survivors(pgid)
    );
    let job = wait_job(&server.base, &id, |j| j["state"] == "completed").await;
    assert_eq!(job["result"], "survived");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    assert_eq!(attempts[0]["error"]["type"], "interrupted");
    for a in attempts {
        assert!(survivors(a["pid"].as_i64().unwrap()).is_empty());
    }
    drop(server);
}

#[tokio::test]
async fn sigterm_drains_then_requeues_what_did_not_finish() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_server(dir.path(), roots.path(), port);
    wait_ready(&server).await;
    let quick = submit(
        &server.base,
        json!({"prompt": "FAKE sleep 500\nFAKE text quick"}),
    )
    .await;
    let slow = submit(&server.base, json!({"prompt": "FAKE slow 600 100"})).await;
    let slow_job = wait_job(&server.base, &slow, |j| j["attempts"][0]["pid"].is_i64()).await;
    wait_job(&server.base, &quick, |j| j["state"] == "running").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The quick job finished within the drain timeout (2 s); the slow one was stopped,
    // killed and requeued.
    let dir_server = spawn_server(dir.path(), roots.path(), port);
    wait_ready(&dir_server).await;
    let quick = wait_job(&dir_server.base, &quick, |_| true).await;
    assert_eq!(quick["state"], "completed", "{quick}");
    let slow = wait_job(&dir_server.base, &slow, |j| {
        j["attempts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(
        slow["attempts"][0]["error"]["type"], "interrupted",
        "{slow}"
    );
    assert!(survivors(slow_job["attempts"][0]["pid"].as_i64().unwrap()).is_empty());
    drop(dir_server);
}

#[tokio::test]
async fn cli_client_runs_lists_shows_and_reports_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = spawn_server(dir.path(), roots.path(), port);
    wait_ready(&server).await;
    let baton = |args: &[&str]| {
        let out = Command::new(baton_bin())
            .args(args)
            .env("BATON_SERVER", &server.base)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = baton(&["run", "FAKE text forty-two"]);
    assert_eq!((code, out.as_str()), (Some(0), "forty-two\n"));
    let (code, _, err) = baton(&["run", "FAKE api_error 401"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("authentication_error"), "{err}");
    let (code, out, _) = baton(&["run", "--json", "FAKE text as json"]);
    assert_eq!(code, Some(0));
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["result"], "as json");
    let id = job["id"].as_str().unwrap();
    let (code, out, _) = baton(&["jobs", "ls"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains(id));
    let (code, out, _) = baton(&["jobs", "show", id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"as json\""));
    let (code, out, _) = baton(&["jobs", "logs", id]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("job.completed") && out.contains("result"),
        "{out}"
    );
    let (code, out, _) = baton(&["jobs", "logs", "-f", id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("job.completed"), "{out}");
    let (code, _, err) = baton(&["jobs", "cancel", id]);
    assert_eq!(code, Some(2));
    assert!(err.contains("conflict_error"), "{err}");
    // The dead-letter queue from the command line.
    let (code, out, _) = baton(&["run", "--json", "FAKE crash"]);
    assert_eq!(code, Some(1));
    let dead: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dead["state"], "dead", "{dead}");
    let dead_id = dead["id"].as_str().unwrap();
    let (code, out, _) = baton(&["dead", "ls"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(dead_id) && out.contains("crashed"), "{out}");
    let (code, _, err) = baton(&["jobs", "retry", id]);
    assert_eq!(code, Some(2), "a completed job cannot be replayed");
    assert!(err.contains("only failed or dead jobs"), "{err}");
    let (code, out, _) = baton(&["jobs", "retry", dead_id]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("{dead_id} queued").as_str())
    );
    let (code, out, _) = baton(&["dead", "replay", "--error-type", "crashed"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("replayed "), "{out}");
    drop(server);

    // doctor: the fake CLI is found, credentials are what the environment says.
    let doctor_with = |key: Option<&str>, sets: &[String]| {
        let mut cmd = Command::new(baton_bin());
        cmd.args(["doctor", "--data-dir"])
            .arg(dir.path())
            .arg("--claude-bin")
            .arg(fake_claude());
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        cmd.env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN");
        if let Some(k) = key {
            cmd.env("ANTHROPIC_API_KEY", k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let doctor = |key: Option<&str>| doctor_with(key, &[]);
    let (code, out) = doctor(Some("sk-test-secret"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("2.1.332") && !out.contains("sk-test-secret"),
        "{out}"
    );
    assert!(out.contains("ok   cli environment"), "{out}");
    let (code, out) = doctor(None);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("FAIL credentials") && out.contains("claude setup-token"),
        "a subscriber is told how to give Baton a token: {out}"
    );
    // Configuration that would hand the CLI the credential under another name.
    let (code, out) = doctor_with(
        Some("sk-test-secret"),
        &[r#"runner.env={LEAKED = "sk-test-secret"}"#.to_string()],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL cli environment") && out.contains("LEAKED would hold the credential"),
        "{out}"
    );
    assert!(!out.contains("sk-test-secret"), "{out}");
    // The sandbox starts, and the round trip runs in it through the proxy.
    if crate::sandbox::have_bwrap() {
        let (code, out) = doctor_with(
            Some("sk-test-secret"),
            &[
                "runner.sandbox=bwrap".to_string(),
                format!("runner.sandbox_helper={}", baton_bin().display()),
            ],
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("ok   sandbox") && out.contains("ok   round trip"),
            "{out}"
        );
        let (code, out) = doctor_with(
            Some("sk-test-secret"),
            &[
                "runner.sandbox=bwrap".to_string(),
                "runner.bwrap=/nonexistent/bwrap".to_string(),
            ],
        );
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains("FAIL sandbox") && out.contains("install bubblewrap"),
            "{out}"
        );
    }
}
