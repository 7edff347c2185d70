//! Pre-started CLI processes. A warm process is launched with `--input-format stream-json`
//! in its own fresh workspace and waits, printing nothing, until its one prompt arrives as
//! a stream-json user message; stdin is then closed, so it answers that one turn and exits.
//! It serves exactly one job: nothing of another job's session or files can leak into it.

use std::time::Instant;

use baton_core::{ClaudeOptions, ClaudeRun, SessionMode, Step};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::workspace::Workspace;
use crate::{
    Attempt, AttemptReport, Launched, Progress, RunnerConfig, drive, launch, prepare_files,
};

pub struct WarmProcess {
    launched: Option<Launched>,
    ws: Option<Workspace>,
    /// The options it was started with: only a job with the same ones may use it.
    pub shape: ClaudeOptions,
    pub born: Instant,
    pub pid: i32,
}

/// The options that fix a CLI process at start: the run's [`ClaudeOptions`]. `None` when
/// a run cannot be warm at all (it resumes or names a session, or works in a directory of
/// its own).
pub fn shape_of(run: &ClaudeRun) -> Option<&ClaudeOptions> {
    (run.session == SessionMode::New
        && run.cwd.is_none()
        && run.files.is_empty()
        && run.verify.is_none()
        && run.repos.is_empty())
    .then_some(&run.options)
}

impl WarmProcess {
    /// Starts a process for jobs of `shape` in a new workspace named `name`, with
    /// `credential_env` (a token of Baton's proxy, bound to a job when one takes it).
    pub fn start(
        cfg: &RunnerConfig,
        shape: &ClaudeOptions,
        sandbox: Option<bool>,
        name: &str,
        credential_env: &[(String, String)],
    ) -> Result<Self, String> {
        // What it runs until its prompt arrives: the options, in a new session.
        let shape = ClaudeRun {
            prompt: String::new(),
            options: shape.clone(),
            cwd: None,
            session: SessionMode::New,
            timeout_ms: 0,
            files: Default::default(),
            verify: None,
            repos: Vec::new(),
            sandbox,
        };
        let ws = Workspace::create(&cfg.attempts_dir, name, None)
            .map_err(|e| format!("could not prepare a warm workspace: {e}"))?;
        let files = prepare_files(cfg, &ws, &shape, None)
            .map_err(|e| format!("could not write warm files: {e}"))?;
        let launched = match launch(
            cfg,
            &ws,
            &shape,
            &files,
            &["--input-format", "stream-json"],
            credential_env,
        ) {
            Ok(l) => l,
            Err((_, message)) => {
                ws.remove();
                return Err(message);
            }
        };
        Ok(Self {
            pid: launched.pid,
            launched: Some(launched),
            ws: Some(ws),
            shape: shape.options,
            born: Instant::now(),
        })
    }

    /// Waits until the CLI has booted: it must answer an `initialize` control request.
    /// The real CLI defers much of its start-up until its first input, so a process that
    /// has only been exec'd is not yet warm; one that answered this is.
    pub async fn await_ready(&mut self, timeout: std::time::Duration) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let launched = self
            .launched
            .as_mut()
            .ok_or("the warm process was already used")?;
        let stdin = launched
            .stdin
            .as_mut()
            .ok_or("the warm process has no stdin")?;
        stdin
            .write_all(b"{\"type\":\"control_request\",\"request_id\":\"baton-warm-up\",\"request\":{\"subtype\":\"initialize\"}}\n")
            .await
            .map_err(|e| format!("could not write to the warm process: {e}"))?;
        let read = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = launched
                    .stdout
                    .read(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the warm process exited while starting".to_string());
                }
                launched.pending_stdout.extend_from_slice(&buf[..n]);
                while let Some(i) = launched.pending_stdout.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = launched.pending_stdout.drain(..=i).collect();
                    let value: serde_json::Value =
                        serde_json::from_slice(&line).unwrap_or_default();
                    if value["type"] == "control_response"
                        && value["response"]["request_id"] == "baton-warm-up"
                    {
                        return Ok(());
                    }
                }
                if launched.pending_stdout.len() > 16 * 1024 * 1024 {
                    return Err("the warm process printed too much while starting".to_string());
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("the warm process did not answer within {timeout:?}"))?
    }

    /// Whether the process is still waiting for its prompt.
    pub fn is_alive(&mut self) -> bool {
        self.launched
            .as_mut()
            .is_some_and(|l| matches!(l.child.try_wait(), Ok(None)))
    }
}

impl Drop for WarmProcess {
    /// A process retired unused: its group is killed and its workspace removed.
    fn drop(&mut self) {
        if let Some(mut launched) = self.launched.take() {
            crate::process::signal_group(launched.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = launched.child.start_kill();
            launched.stderr_task.abort();
        }
        if let Some(ws) = self.ws.take() {
            std::thread::spawn(move || ws.remove());
        }
    }
}

/// Runs one attempt on a warm process: the prompt goes in as a stream-json user message,
/// then the attempt is supervised exactly as a cold one.
pub async fn run_warm(
    cfg: &RunnerConfig,
    mut warm: WarmProcess,
    attempt: Attempt<'_>,
    progress: mpsc::Sender<Progress>,
    cancel: CancellationToken,
) -> AttemptReport {
    let (Some(launched), Some(ws)) = (warm.launched.take(), warm.ws.take()) else {
        return crate::failed(
            baton_core::ErrorKind::SpawnFailed,
            "the warm process was already used".into(),
        );
    };
    let Step::Claude(run) = attempt.step;
    let message = json!({"type": "user", "message": {"role": "user", "content": run.prompt}});
    let input = format!("{message}\n").into_bytes();
    let report = drive(cfg, &ws, run, launched, input, progress, cancel).await;
    if !cfg.keep_workspaces {
        tokio::task::spawn_blocking(move || ws.remove());
    }
    report
}
