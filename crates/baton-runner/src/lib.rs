//! Runs one attempt of a job: one `claude` process, supervised from spawn to reap.
//!
//! The CLI is started from an argument vector (never a shell) as the leader of a new
//! process group, with a private `HOME`, an allow-listed environment, the prompt on stdin
//! and a parent-death signal. Its stdout is decoded line by line as stream-json and every
//! event is handed to the caller as it arrives. Four watchdogs end an attempt: the job's
//! wall-clock timeout, a silence timeout (no output), a grace period after `result` (the
//! CLI sometimes never exits) and a bound on line length; stderr is drained into a
//! bounded tail. Whatever ends it, the whole process group gets SIGTERM, then SIGKILL
//! after a grace period, and the leader is reaped: nothing the attempt started survives it.
//!
//! **Architecture invariant:** this is the only crate that spawns agent processes.

pub mod argv;
mod end;
pub mod forwarder;
pub mod lines;
mod mcp;
pub mod outcome;
pub mod process;
pub mod sandbox;
pub mod spawn;
mod verify;
pub mod version;
pub mod warm;
pub mod workspace;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_core::{ClaudeRun, ErrorKind, Step};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::argv::ArgFiles;
use crate::end::{Stop, decide, describe_exit};
use crate::lines::{BoundedLines, LineRead};
use crate::workspace::Workspace;

/// How attempts are run; one per server.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub claude_bin: PathBuf,
    /// Where attempt workspaces are created.
    pub attempts_dir: PathBuf,
    /// Directories a job's `cwd` and `add_dirs` may name (after resolving symlinks).
    pub workspace_roots: Vec<PathBuf>,
    /// Extra variables copied from Baton's environment into the CLI's.
    pub env_passthrough: Vec<String>,
    /// Variables set for every CLI.
    pub env: Vec<(String, String)>,
    /// An attempt that prints nothing for this long is stalled.
    pub silence_timeout: Duration,
    /// How long the CLI may linger after its `result` before its group is killed.
    pub result_grace: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    pub max_line_bytes: usize,
    pub max_stderr_bytes: usize,
    /// Keep attempt directories after the attempt (for debugging).
    pub keep_workspaces: bool,
    /// How a CLI is put in a bubblewrap sandbox; `None`: this Baton cannot sandbox (no
    /// proxy to reach the API through), and a run that must be sandboxed fails.
    pub sandbox: Option<sandbox::SandboxConfig>,
    /// Whether a run that does not say ([`ClaudeRun::sandbox`] is `None`) is sandboxed.
    pub sandbox_default: bool,
    /// Run each CLI and an agent's verify as this uid and gid: Baton as root,
    /// `runner.run_as`. Its workspace is given to it.
    pub run_as: Option<(u32, u32)>,
    /// Run bubblewrap (a sandboxed CLI) as this uid and gid: Baton as root, `run_as` or
    /// `nobody` (bubblewrap started by root maps the sandbox's user to root outside).
    pub sandbox_run_as: Option<(u32, u32)>,
    /// The admin's MCP servers, which a run names in `mcp_servers`.
    pub mcp_catalogue: Vec<baton_core::McpServer>,
    /// Baton's binary: `baton mcp-bridge` joins a CLI to a catalogue server that runs
    /// outside it. Empty: such servers cannot be used.
    pub helper: PathBuf,
}

impl RunnerConfig {
    pub fn new(claude_bin: PathBuf, attempts_dir: PathBuf) -> Self {
        Self {
            claude_bin,
            attempts_dir,
            workspace_roots: Vec::new(),
            env_passthrough: Vec::new(),
            env: Vec::new(),
            silence_timeout: Duration::from_secs(300),
            result_grace: Duration::from_secs(5),
            kill_grace: Duration::from_secs(5),
            max_line_bytes: 8 * 1024 * 1024,
            max_stderr_bytes: 64 * 1024,
            keep_workspaces: false,
            sandbox: None,
            sandbox_default: false,
            run_as: None,
            sandbox_run_as: None,
            mcp_catalogue: Vec::new(),
            helper: PathBuf::new(),
        }
    }

    /// The sandbox `run` goes in, if any: its own choice, else the configured default. A
    /// run that must be sandboxed where this Baton cannot sandbox fails, never runs bare.
    pub fn sandbox_for(
        &self,
        run: &ClaudeRun,
    ) -> Result<Option<&sandbox::SandboxConfig>, (ErrorKind, String)> {
        if !run.sandbox.unwrap_or(self.sandbox_default) {
            return Ok(None);
        }
        self.sandbox.as_ref().map(Some).ok_or_else(|| {
            (
                ErrorKind::SandboxFailed,
                "this job must run in the sandbox, and this Baton cannot make one: the sandbox \
                 reaches the API only through Baton's proxy (proxy.mode = \"proxy\")"
                    .to_string(),
            )
        })
    }

    /// The user a run's processes are started as: bubblewrap's when it is sandboxed.
    pub fn user_for(&self, sandboxed: bool) -> Option<(u32, u32)> {
        if sandboxed {
            self.sandbox_run_as.or(self.run_as)
        } else {
            self.run_as
        }
    }

    /// Checks a run's `cwd` and `add_dirs` against the workspace roots.
    pub fn check_paths(
        &self,
        add_dirs: &[String],
        cwd: Option<&str>,
    ) -> Result<Option<PathBuf>, String> {
        for d in add_dirs {
            workspace::inside_roots(Path::new(d), &self.workspace_roots)
                .map_err(|e| format!("add_dirs: {e}"))?;
        }
        cwd.map(|c| {
            workspace::inside_roots(Path::new(c), &self.workspace_roots)
                .map_err(|e| format!("cwd: {e}"))
        })
        .transpose()
    }
}

/// What the caller hears while an attempt runs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The process started; `start_ticks` pins the pid against reuse.
    Spawned { pid: i32, start_ticks: u64 },
    /// One stream-json event (an object with a `type`), or a `baton.unparsed` line.
    Event(Value),
}

/// One attempt to run.
pub struct Attempt<'a> {
    /// Unique per attempt; names its workspace directory.
    pub name: String,
    pub step: &'a Step,
    /// The stored transcript of the session the job resumes or forks.
    pub restore: Option<Vec<u8>>,
    /// The attempt's own credential variables (Baton's proxy: its token and base URL),
    /// in place of any from Baton's environment; empty: those pass through.
    pub credential_env: Vec<(String, String)>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Default)]
pub struct AttemptReport {
    /// `None` means success.
    pub error: Option<(ErrorKind, String)>,
    /// The summarized `result` event, when there was one.
    pub outcome: Option<Value>,
    pub session_id: Option<String>,
    /// The session transcript the CLI left, to store for later resumes.
    pub transcript: Option<Vec<u8>>,
    pub exit: Option<String>,
    pub stderr_tail: String,
    pub events: u64,
    /// The delay the CLI last waited before retrying a 429 (`system/api_retry` with
    /// `error_status: 429`); the API's `retry-after` is its floor.
    pub rate_limit_retry_ms: Option<u64>,
    /// A usage limit refused this attempt: the CLI printed a `rate_limit_event` whose
    /// status is `rejected`. Events that only report the state of a limit (`allowed`,
    /// `allowed_warning`) leave it alone.
    pub usage_limited: bool,
    /// When that limit resets, if the event said (`resetsAt`, milliseconds since the
    /// epoch).
    pub rate_limit_resets_at_ms: Option<i64>,
}

const MAX_UNPARSED_LINES: u32 = 100;
const MAX_TRANSCRIPT_BYTES: u64 = 64 * 1024 * 1024;

/// Runs one attempt to its end. Never panics on the CLI's behaviour and never returns
/// while a process of the attempt's group is alive.
pub async fn run(
    cfg: &RunnerConfig,
    attempt: Attempt<'_>,
    progress: mpsc::Sender<Progress>,
    cancel: CancellationToken,
) -> AttemptReport {
    let Step::Claude(spec) = attempt.step;
    let cwd = match cfg.check_paths(&spec.options.add_dirs, spec.cwd.as_deref()) {
        Ok(cwd) => cwd,
        Err(e) => return failed(ErrorKind::InvalidRequest, e),
    };
    let ws = match Workspace::create(&cfg.attempts_dir, &attempt.name, cwd.as_deref()) {
        Ok(ws) => ws,
        Err(e) => {
            return failed(
                ErrorKind::SpawnFailed,
                format!("could not prepare the attempt workspace: {e}"),
            );
        }
    };
    let report = run_in(cfg, &ws, &attempt, progress, cancel).await;
    if !cfg.keep_workspaces {
        // Every process of the attempt is gone by now; removing its files is filesystem
        // work that must not hold an async worker, nor delay recording the outcome.
        tokio::task::spawn_blocking(move || ws.remove());
    }
    report
}

/// `report`, checked by the agent's `verify`: its output recorded in the outcome
/// (`verified_output`), or the attempt failed.
async fn verified(
    cfg: &RunnerConfig,
    ws: &Workspace,
    run: &ClaudeRun,
    check: &baton_core::agent::VerifyRun,
    mut report: AttemptReport,
    limit: Duration,
    cancel: &CancellationToken,
) -> AttemptReport {
    let outcome = report.outcome.clone().unwrap_or(Value::Null);
    let sandbox = match cfg.sandbox_for(run) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    match verify::run(cfg, ws, check, sandbox, &outcome, limit, cancel).await {
        Ok(output) => {
            if let Some(Value::Object(o)) = report.outcome.as_mut() {
                o.insert("verified_output".into(), Value::String(output));
            }
        }
        Err(e) => report.error = Some(e),
    }
    report
}

pub(crate) fn failed(kind: ErrorKind, message: String) -> AttemptReport {
    AttemptReport {
        error: Some((kind, message)),
        ..AttemptReport::default()
    }
}

fn prepare_files(
    cfg: &RunnerConfig,
    ws: &Workspace,
    spec: &ClaudeRun,
    restore: Option<&[u8]>,
) -> std::io::Result<ArgFiles> {
    if let (Some(session), Some(transcript)) = (spec.session.restores(), restore) {
        ws.restore_transcript(&session.to_string(), transcript)?;
    }
    Ok(ArgFiles {
        system_prompt: spec
            .options
            .system_prompt
            .as_ref()
            .map(|s| ws.private_file("system_prompt.txt", s.as_bytes()))
            .transpose()?,
        append_system_prompt: spec
            .options
            .append_system_prompt
            .as_ref()
            .map(|s| ws.private_file("append_system_prompt.txt", s.as_bytes()))
            .transpose()?,
        mcp_config: mcp::config(cfg, spec, &ws.root)?
            .map(|c| ws.private_file("mcp_config.json", c.to_string().as_bytes()))
            .transpose()?,
    })
}

/// A CLI process started for an attempt, before it has its prompt. Its stderr is already
/// being drained, so it can wait (in the warm pool) without ever blocking on a full pipe.
pub struct Launched {
    child: spawn::Child,
    pid: i32,
    start_ticks: u64,
    stdin: Option<tokio::net::unix::pipe::Sender>,
    stdout: tokio::net::unix::pipe::Receiver,
    /// Output already read from stdout but not yet consumed (after a warm-up exchange).
    pending_stdout: Vec<u8>,
    stderr_task: tokio::task::JoinHandle<String>,
    /// Catalogue MCP servers run outside the sandbox for it; they stop when it ends.
    _bridges: Option<mcp::Bridges>,
}

fn launch(
    cfg: &RunnerConfig,
    ws: &Workspace,
    spec: &ClaudeRun,
    files: &ArgFiles,
    extra_args: &[&str],
    credential_env: &[(String, String)],
) -> Result<Launched, (ErrorKind, String)> {
    let not_found = || {
        (
            ErrorKind::CliNotFound,
            format!(
                "could not start {}: not found or not executable",
                cfg.claude_bin.display()
            ),
        )
    };
    let program = find_executable(&cfg.claude_bin).ok_or_else(not_found)?;
    let sandbox = cfg.sandbox_for(spec)?;
    let mut args = argv::build_args(spec, files);
    args.extend(extra_args.iter().map(OsString::from));
    let mut env = argv::build_env(
        &ws.home,
        &ws.tmp,
        &cfg.env_passthrough,
        &cfg.env,
        credential_env,
        |k| std::env::var_os(k),
    );
    // A CLI (or the bubblewrap around it) run as another user gets its workspace.
    let run_as = cfg.user_for(sandbox.is_some());
    if let Some((uid, gid)) = run_as {
        workspace::give(&ws.root, uid, gid).map_err(|e| {
            (
                ErrorKind::SpawnFailed,
                format!("could not give the workspace to uid {uid}: {e}"),
            )
        })?;
    }
    let bridges = mcp::bridges(cfg, spec, &ws.root).map_err(|e| {
        (
            ErrorKind::SpawnFailed,
            format!("could not start the bridges to the MCP servers outside the CLI: {e}"),
        )
    })?;
    // In the sandbox, bwrap runs the forwarder, which runs the CLI.
    let (program, args) = match sandbox {
        None => (program, args),
        Some(sb) => {
            let mut writable = ws.writable();
            writable.extend(spec.options.add_dirs.iter().map(Path::new));
            let readable = mcp::programs(cfg, spec);
            let (wrapped, inside) = sandbox::wrap(
                sb,
                &program,
                args,
                &writable,
                &readable,
                &bridges.sockets,
                &ws.cwd,
            );
            for (k, v) in inside {
                env.retain(|(name, _)| name.to_str() != Some(k.as_str()));
                env.push((k.into(), v.into()));
            }
            (sb.program()?, wrapped)
        }
    };
    let mut child = spawn::spawn(&spawn::Spawn {
        program: &program,
        args,
        env,
        cwd: &ws.cwd,
        // Baton as root starts the CLI, or bubblewrap, as run_as.
        run_as,
    })
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied if !ws.cwd.is_dir() => {
            (
                ErrorKind::SpawnFailed,
                format!("could not enter {}: {e}", ws.cwd.display()),
            )
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => not_found(),
        _ => (
            ErrorKind::SpawnFailed,
            format!("could not start {}: {e}", cfg.claude_bin.display()),
        ),
    })?;
    let pid = child.id();
    let start_ticks = process::process_start_ticks(pid).unwrap_or(0);
    let stderr = child.stderr.take();
    let max_stderr = cfg.max_stderr_bytes;
    let stderr_task = tokio::spawn(async move {
        let mut tail = Vec::new();
        if let Some(mut s) = stderr {
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > max_stderr {
                    tail.drain(..tail.len() - max_stderr);
                }
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    });
    let stdin = child.stdin.take();
    let Some(stdout) = child.stdout.take() else {
        return Err((
            ErrorKind::SpawnFailed,
            "the CLI's stdout was not captured".into(),
        ));
    };
    Ok(Launched {
        child,
        pid,
        start_ticks,
        stdin,
        stdout,
        pending_stdout: Vec::new(),
        stderr_task,
        _bridges: Some(bridges),
    })
}

/// The longest one repository's checkout may take.
const REPO_TIMEOUT: Duration = Duration::from_secs(120);

async fn run_in(
    cfg: &RunnerConfig,
    ws: &Workspace,
    attempt: &Attempt<'_>,
    progress: mpsc::Sender<Progress>,
    cancel: CancellationToken,
) -> AttemptReport {
    let Step::Claude(spec) = attempt.step;
    if !spec.files.is_empty() {
        // Files go into the attempt's own directory, never into a caller's `cwd`.
        let placed = if spec.cwd.is_some() {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a run with files works in its own workspace, not in a cwd",
            ))
        } else {
            ws.place_files(&spec.files).and_then(|()| {
                // A confined CLI reads no settings or memory of its working directory,
                // only its private home's: an agent's CLAUDE.md goes there too.
                match spec.files.get("CLAUDE.md") {
                    Some(md) if spec.options.confined => {
                        let dir = ws.home.join(".claude");
                        std::fs::create_dir_all(&dir)?;
                        std::fs::write(dir.join("CLAUDE.md"), md)
                    }
                    _ => Ok(()),
                }
            })
        };
        if let Err(e) = placed {
            return failed(
                ErrorKind::InvalidRequest,
                format!("could not place the run's files: {e}"),
            );
        }
    }
    if !spec.repos.is_empty() {
        if spec.cwd.is_some() {
            return failed(
                ErrorKind::InvalidRequest,
                "a run with repos works in its own workspace, not in a cwd".into(),
            );
        }
        let budget = Duration::from_millis(spec.timeout_ms).min(REPO_TIMEOUT);
        for repo in &spec.repos {
            if let Err(e) = ws.checkout(repo, budget).await {
                return failed(
                    ErrorKind::InvalidRequest,
                    format!(
                        "could not check out {} at {}: {e}",
                        repo.path,
                        repo.git_ref()
                    ),
                );
            }
        }
    }
    let files = match prepare_files(cfg, ws, spec, attempt.restore.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            return failed(
                ErrorKind::SpawnFailed,
                format!("could not write attempt files: {e}"),
            );
        }
    };
    let started = Instant::now();
    match launch(cfg, ws, spec, &files, &[], &attempt.credential_env) {
        Ok(launched) => {
            let report = drive(
                cfg,
                ws,
                spec,
                launched,
                spec.prompt.clone().into_bytes(),
                progress,
                cancel.clone(),
            )
            .await;
            match &spec.verify {
                Some(check) if report.error.is_none() => {
                    // The rest of the job's time limit.
                    let limit = Duration::from_millis(spec.timeout_ms)
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_secs(1));
                    verified(cfg, ws, spec, check, report, limit, &cancel).await
                }
                _ => report,
            }
        }
        Err((kind, message)) => failed(kind, message),
    }
}

/// Feeds `input` to a launched CLI, closes its stdin, and supervises it to the end.
async fn drive(
    cfg: &RunnerConfig,
    ws: &Workspace,
    spec: &ClaudeRun,
    launched: Launched,
    input: Vec<u8>,
    progress: mpsc::Sender<Progress>,
    cancel: CancellationToken,
) -> AttemptReport {
    let Launched {
        mut child,
        pid,
        start_ticks,
        stdin,
        stdout,
        pending_stdout,
        stderr_task,
        _bridges,
    } = launched;
    let stdout = std::io::Cursor::new(pending_stdout).chain(stdout);
    let _ = progress.send(Progress::Spawned { pid, start_ticks }).await;
    // The prompt goes in through stdin, which is then closed; a separate task, so a CLI
    // that writes before it reads can never deadlock against us.
    let feeder = tokio::spawn(async move {
        if let Some(mut s) = stdin {
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
        }
    });
    let mut lines = BoundedLines::new(
        BufReader::with_capacity(64 * 1024, stdout),
        cfg.max_line_bytes,
    );
    let started = Instant::now();
    let wall_deadline = started + Duration::from_millis(spec.timeout_ms);
    let mut silence_deadline = started + cfg.silence_timeout;
    let mut grace_deadline: Option<Instant> = None;
    let mut report = AttemptReport::default();
    let mut result: Option<Value> = None;
    let mut model: Option<String> = None;
    let mut parsed_any = false;
    let mut unparsed = 0u32;
    // Set once the CLI itself has exited, while its output is still being read.
    let mut exited = false;

    let stop = loop {
        let grace = async {
            match grace_deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Stop::Cancelled,
            _ = sleep_until(wall_deadline) => break Stop::WallTimeout,
            _ = grace => break if exited { Stop::Eof } else { Stop::ResultGrace },
            _ = sleep_until(silence_deadline) => break Stop::Silence,
            // The CLI exited: everything it wrote is in the pipe already, and whatever
            // still holds the pipe open is a stray of the attempt (a background shell).
            // Killing the group lets the pipe close once the rest is read; a process that
            // left the group can hold it only for the result grace.
            _ = child.wait(), if !exited => {
                exited = true;
                process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let drained = Instant::now() + cfg.result_grace;
                grace_deadline = Some(grace_deadline.map_or(drained, |d| d.min(drained)));
            }
            read = lines.next_line() => match read {
                Ok(LineRead::Line(line)) => {
                    silence_deadline = Instant::now() + cfg.silence_timeout;
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    let event = match serde_json::from_str::<Value>(&text) {
                        Ok(v) if v.get("type").is_some_and(Value::is_string) => v,
                        _ => {
                            unparsed += 1;
                            let excerpt: String = text.chars().take(4096).collect();
                            let _ = progress
                                .send(Progress::Event(serde_json::json!({"type": "baton.unparsed", "line": excerpt})))
                                .await;
                            if unparsed >= MAX_UNPARSED_LINES {
                                break Stop::Garbage;
                            }
                            continue;
                        }
                    };
                    parsed_any = true;
                    report.events += 1;
                    if let Some(sid) = event.get("session_id").and_then(Value::as_str) {
                        report.session_id = Some(sid.to_string());
                    }
                    match (event["type"].as_str(), event.get("subtype").and_then(Value::as_str)) {
                        (Some("system"), Some("init")) => {
                            model = event.get("model").and_then(Value::as_str).map(str::to_string);
                        }
                        (Some("system"), Some("api_retry")) if event["error_status"] == 429 => {
                            report.rate_limit_retry_ms = event["retry_delay_ms"].as_f64().map(|ms| ms.ceil() as u64);
                        }
                        // A subscription's usage limit: `rejected` refuses the request and
                        // says when the limit resets (epoch seconds); `allowed` and
                        // `allowed_warning` come with runs that succeed and change nothing.
                        (Some("rate_limit_event"), _)
                            if event["rate_limit_info"]["status"] == "rejected" =>
                        {
                            report.usage_limited = true;
                            report.rate_limit_resets_at_ms = event["rate_limit_info"]["resetsAt"]
                                .as_i64()
                                .map(|at| at * 1000);
                        }
                        (Some("result"), _) => {
                            result = Some(event.clone());
                            grace_deadline.get_or_insert(Instant::now() + cfg.result_grace);
                        }
                        _ => {}
                    }
                    // A closed receiver means the supervisor is gone; keep draining so the
                    // watchdogs and the kill below still happen.
                    let _ = progress.send(Progress::Event(event)).await;
                }
                // A line over the bound is most often a tool's large output echoed back
                // (a `user` event holding a whole file): the attempt goes on, with the
                // event stored cut short and marked so. Only the result itself must be
                // read whole.
                Ok(LineRead::TooLong { head, len }) => {
                    silence_deadline = Instant::now() + cfg.silence_timeout;
                    let kind = lines::head_type(&head);
                    if kind.is_none_or(|k| k == "result") {
                        break Stop::TooLong;
                    }
                    report.events += 1;
                    let event = serde_json::json!({
                        "type": kind,
                        "baton_truncated": {"bytes": len, "kept": head.len(), "max_line_bytes": cfg.max_line_bytes},
                        "head": String::from_utf8_lossy(&head),
                    });
                    let _ = progress.send(Progress::Event(event)).await;
                }
                Ok(LineRead::Eof) | Err(_) => break Stop::Eof,
            }
        }
    };

    let status = if stop == Stop::Eof {
        // stdout closed: the CLI is exiting. Give it the result grace, then make sure.
        match tokio::time::timeout(cfg.result_grace, child.wait()).await {
            Ok(Ok(status)) => {
                process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                Some(status)
            }
            _ => {
                process::terminate_group(&mut child, pid, cfg.kill_grace).await;
                child.try_wait().ok().flatten()
            }
        }
    } else {
        process::terminate_group(&mut child, pid, cfg.kill_grace).await;
        child.try_wait().ok().flatten()
    };
    // Nothing of the attempt outlives it: every process of its group has exited.
    process::await_group_gone(pid, start_ticks, Duration::from_secs(2)).await;
    feeder.abort();
    report.stderr_tail = tokio::time::timeout(Duration::from_secs(2), stderr_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    report.exit = status.map(describe_exit);

    report.error = decide(
        stop,
        result.as_ref(),
        spec,
        status,
        parsed_any,
        unparsed,
        &report.stderr_tail,
        cfg,
    );
    // A refused usage limit ends in an error result with no API status, which alone
    // reads as a failed API call: it is a rate limit, to wait out, not to retry now.
    if report.usage_limited
        && let Some((kind @ ErrorKind::ApiError, _)) = &mut report.error
    {
        *kind = ErrorKind::RateLimited;
    }
    report.outcome = result
        .as_ref()
        .map(|r| outcome::summarize(r, model.as_deref()));
    if let Some(sid) = &report.session_id {
        report.transcript = read_transcript(&ws.transcript_path(sid));
    }
    report
}

/// `path` if it is an executable file; without a slash, the first executable `path` on
/// Baton's `PATH`. Relative paths are made absolute: the CLI starts in another directory.
pub(crate) fn find_executable(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if path.components().count() > 1 || path.is_absolute() {
        return ok(path).then(|| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(path))
        .find(|p| ok(p))
        .map(|p| std::path::absolute(&p).unwrap_or(p))
}

fn read_transcript(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_TRANSCRIPT_BYTES {
        tracing::warn!(path = %path.display(), bytes = meta.len(), "session transcript too large to store");
        return None;
    }
    std::fs::read(path).ok()
}
