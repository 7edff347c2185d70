//! An agent's `verify` step: after the CLI's successful result, a command runs in the
//! attempt's workspace under the same supervision (its own process group, the job's time
//! limit, the attempt's cancellation), with `{"input", "output", "result"}` on its stdin.
//! Its stdout becomes the run's output; a non-zero exit fails the attempt as
//! `verification_failed`, with the tail of its stderr. It gets no credentials: its
//! environment is `PATH`, the attempt's private `HOME` and `TMPDIR`, and the locale.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use baton_core::ErrorKind;
use baton_core::agent::VerifyRun;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::RunnerConfig;
use crate::process::{signal_group, terminate_group};
use crate::workspace::Workspace;
use nix::sys::signal::Signal;

/// Reads all of `r`, keeping at most `max` bytes (the last ones when `tail`), so a
/// flooding command can neither fill memory nor block on a full pipe.
async fn drain(
    mut r: impl tokio::io::AsyncRead + Unpin,
    max: usize,
    tail: bool,
) -> (Vec<u8>, bool) {
    let (mut kept, mut cut) = (Vec::new(), false);
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > max {
            cut = true;
            if tail {
                kept.drain(..kept.len() - max);
            } else {
                kept.truncate(max);
            }
        }
    }
    (kept, cut)
}

fn environment(ws: &Workspace) -> Vec<(OsString, OsString)> {
    bare_environment(&ws.home, &ws.tmp)
}

/// A helper process's environment, with nothing of Baton's but `PATH` and the locale:
/// `HOME` and `TMPDIR` as given.
pub(crate) fn bare_environment(home: &Path, tmp: &Path) -> Vec<(OsString, OsString)> {
    let mut env = vec![
        ("HOME".into(), home.as_os_str().to_owned()),
        ("TMPDIR".into(), tmp.as_os_str().to_owned()),
    ];
    for k in ["PATH", "LANG", "LC_ALL"] {
        if let Some(v) = std::env::var_os(k) {
            env.push((k.into(), v));
        }
    }
    env
}

/// Runs the check. `Ok` holds its stdout (the run's output).
pub(crate) async fn run(
    cfg: &RunnerConfig,
    ws: &Workspace,
    check: &VerifyRun,
    sandbox: Option<&crate::sandbox::SandboxConfig>,
    outcome: &Value,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<String, (ErrorKind, String)> {
    let failed = |m: String| (ErrorKind::VerificationFailed, m);
    let first = Path::new(&check.command[0]);
    // `./check.sh`: a file of the workspace; `jq`: found on PATH.
    let named = if first.is_relative() && first.components().count() > 1 {
        ws.cwd.join(first)
    } else {
        first.to_path_buf()
    };
    let program = crate::find_executable(&named)
        .ok_or_else(|| failed(format!("verify: {} is not an executable", named.display())))?;
    let args: Vec<OsString> = check.command[1..].iter().map(OsString::from).collect();
    // A sandboxed attempt's check runs in a sandbox of its own, as the CLI did.
    let (program, args) = match sandbox {
        None => (program, args),
        Some(sb) => {
            let (wrapped, _) =
                crate::sandbox::wrap(sb, &program, args, &ws.writable(), &[], &[], &ws.cwd);
            (sb.program()?, wrapped)
        }
    };
    let mut child = crate::spawn::spawn(&crate::spawn::Spawn {
        program: &program,
        args,
        env: environment(ws),
        cwd: &ws.cwd,
        run_as: cfg.user_for(sandbox.is_some()),
    })
    .map_err(|e| {
        failed(format!(
            "verify: could not start {}: {e}",
            program.display()
        ))
    })?;
    let pid = child.id();
    let stdin = json!({
        "input": check.input,
        "output": outcome.get("structured_output").cloned().unwrap_or(Value::Null),
        "result": outcome.get("result").cloned().unwrap_or(Value::Null),
    })
    .to_string();
    let feeder = child.stdin.take().map(|mut s| {
        tokio::spawn(async move {
            let _ = s.write_all(stdin.as_bytes()).await;
            let _ = s.shutdown().await;
        })
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (max_out, max_err) = (cfg.max_line_bytes, cfg.max_stderr_bytes);
    let out_task = tokio::spawn(async move {
        match stdout {
            Some(s) => drain(s, max_out, false).await,
            None => (Vec::new(), false),
        }
    });
    let err_task = tokio::spawn(async move {
        match stderr {
            Some(s) => drain(s, max_err, true).await.0,
            None => Vec::new(),
        }
    });
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        () = tokio::time::sleep(limit) => None,
        () = cancel.cancelled() => None,
    };
    // Whatever it left behind goes with it.
    if status.is_none() {
        terminate_group(&mut child, pid, cfg.kill_grace).await;
    }
    signal_group(pid, Signal::SIGKILL);
    if let Some(f) = feeder {
        f.abort();
    }
    let (out, cut) = out_task.await.unwrap_or_default();
    let err = String::from_utf8_lossy(&err_task.await.unwrap_or_default()).into_owned();
    match status {
        None if cancel.is_cancelled() => {
            Err((ErrorKind::Cancelled, "cancelled while verifying".into()))
        }
        None => Err((
            ErrorKind::Timeout,
            format!("verify did not finish within {} ms", limit.as_millis()),
        )),
        Some(s) if !s.success() => Err(failed(format!(
            "verify exited {}: {}",
            s.code()
                .map_or_else(|| "by a signal".to_string(), |c| c.to_string()),
            err.trim()
        ))),
        Some(_) if cut => Err((
            ErrorKind::OutputTooLarge,
            format!("verify printed more than {max_out} bytes"),
        )),
        Some(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
    }
}
