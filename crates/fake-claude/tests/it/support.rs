//! Spawning fake-claude as Baton spawns the real CLI: its own process group, a clean
//! environment, a scratch HOME and working directory. Every wait is bounded, and every
//! process group is killed before the test ends, so no `sleep` outlives a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

pub use fake_claude::json::Json;

/// The most any single wait in these tests may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch HOME and working directory.
pub struct Sandbox {
    // Held for its Drop, which deletes the directory.
    _root: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("create a temporary directory");
        let home = root.path().join("home");
        let work = root.path().join("work");
        for dir in [&home, &work] {
            std::fs::create_dir_all(dir).expect("create sandbox directories");
        }
        Sandbox {
            _root: root,
            home,
            work,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        command(&self.home, &self.work, args)
    }

    /// Runs to completion with `stdin` as input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Finished {
        run(self.command(args), stdin)
    }

    /// Where the real CLI keeps this working directory's sessions.
    pub fn project_dir(&self) -> PathBuf {
        project_dir(&self.home, &self.work)
    }
}

pub fn project_dir(home: &Path, cwd: &Path) -> PathBuf {
    let name: String = cwd
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    home.join(".claude").join("projects").join(name)
}

/// The fake with only HOME and PATH set, as Baton passes an allow-list of variables.
pub fn command(home: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fake-claude"));
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("HOME", home)
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        );
    cmd
}

/// A finished run.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout as stream-json events; panics on a line that is not JSON.
    pub fn events(&self) -> Vec<Json> {
        parse_lines(&self.stdout)
    }
}

pub fn parse_lines(text: &str) -> Vec<Json> {
    text.lines()
        .map(|line| Json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

pub fn run(cmd: Command, stdin: &str) -> Finished {
    let mut live = Live::spawn(cmd);
    live.send_raw(stdin);
    live.close_stdin();
    let status = live
        .wait(TIMEOUT)
        .unwrap_or_else(|| panic!("fake-claude did not exit within {TIMEOUT:?}"));
    let (stdout, stderr) = live.finish();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// A running fake, read line by line.
pub struct Live {
    child: Child,
    pgid: libc::pid_t,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    exited: Receiver<()>,
    exit_seen: bool,
    status: Option<ExitStatus>,
}

impl Live {
    pub fn spawn(mut cmd: Command) -> Live {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn fake-claude");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");

        let stdout = child.stdout.take().expect("piped stdout");
        let (line_tx, lines) = mpsc::channel();
        // Sends raw lines, newline included, so that output without a final newline (text
        // mode errors) is seen exactly.
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut bytes = Vec::new();
                match reader.read_until(b'\n', &mut bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&bytes).into_owned();
                        if line_tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (stderr_tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut bytes);
            let _ = stderr_tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
        // Waits for the exit without reaping, so the pid (and with it the process group id)
        // cannot be reused before `finish` has killed the group.
        let (exit_tx, exited) = mpsc::channel();
        thread::spawn(move || {
            loop {
                // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: `info` is valid for writes; WNOWAIT leaves the child reapable.
                let rc = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    )
                };
                if rc == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    break;
                }
            }
            let _ = exit_tx.send(());
        });

        Live {
            stdin: child.stdin.take(),
            child,
            pgid: pid,
            lines,
            stderr,
            exited,
            exit_seen: false,
            status: None,
        }
    }

    pub fn send_raw(&mut self, text: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            // The fake may legitimately have exited already (e.g. `FAKE exit`).
            let _ = stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(&format!("{line}\n"));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line; `None` at end of stream. Panics after TIMEOUT.
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => Some(line.trim_end_matches('\n').to_string()),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("no stdout line within {TIMEOUT:?}"),
        }
    }

    pub fn next_event(&mut self) -> Json {
        let line = self.next_line().expect("an event, not end of stream");
        Json::parse(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Events up to and including the first one of type `kind`.
    pub fn events_until(&mut self, kind: &str) -> Vec<Json> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event();
            let done = type_of(&event) == kind;
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// True when stdout stays open and silent for `window`: the process (or something it
    /// left behind) holds the pipe without writing.
    pub fn silent_for(&mut self, window: Duration) -> bool {
        matches!(
            self.lines.recv_timeout(window),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// Whether the fake itself exits within `timeout`. Unlike `wait`, leaves the rest of
    /// its process group alone.
    pub fn has_exited(&mut self, timeout: Duration) -> bool {
        if !self.exit_seen {
            self.exit_seen = self.exited.recv_timeout(timeout).is_ok();
        }
        self.exit_seen
    }

    /// The exit status once the fake exits within `timeout`; `None` while it runs.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            if !self.has_exited(timeout) {
                return None;
            }
            // The leader has exited but is not reaped: its group id is still reserved, so
            // this cannot hit an unrelated group. It removes whatever it left behind.
            self.kill_group();
            self.status = Some(self.child.wait().expect("reap fake-claude"));
        }
        self.status
    }

    pub fn pgid(&self) -> libc::pid_t {
        self.pgid
    }

    pub fn kill_group(&self) {
        // SAFETY: killpg has no memory preconditions; ESRCH (group gone) is fine.
        unsafe {
            libc::killpg(self.pgid, libc::SIGKILL);
        }
    }

    /// Kills the group, reaps the fake and returns the rest of stdout and all of stderr.
    pub fn finish(&mut self) -> (String, String) {
        self.kill_group();
        self.wait(TIMEOUT).expect("a SIGKILLed process exits");
        let mut stdout = String::new();
        while let Ok(line) = self.lines.recv_timeout(TIMEOUT) {
            stdout.push_str(&line);
        }
        let stderr = self.stderr.recv_timeout(TIMEOUT).unwrap_or_default();
        (stdout, stderr)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill_group();
            if !self.exit_seen {
                let _ = self.exited.recv_timeout(TIMEOUT);
            }
            let _ = self.child.wait();
        }
    }
}

/// Live (non-zombie) processes in process group `pgid`, from /proc. Zombies do not count:
/// in a container whose init does not reap, killed orphans linger as zombies.
pub fn live_group_members(pgid: libc::pid_t) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .count()
}

/// Waits (bounded) until group `pgid` has no live member.
pub fn assert_group_gone(pgid: libc::pid_t) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while live_group_members(pgid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "process group {pgid} still has live members"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn type_of(event: &Json) -> &str {
    event.get("type").and_then(Json::as_str).unwrap_or_default()
}

pub fn str_at<'a>(event: &'a Json, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(event, |value, key| value.get(key))
        .and_then(Json::as_str)
}

pub fn first_of<'a>(events: &'a [Json], kind: &str) -> &'a Json {
    events
        .iter()
        .find(|e| type_of(e) == kind)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

pub fn last_of<'a>(events: &'a [Json], kind: &str) -> &'a Json {
    events
        .iter()
        .rev()
        .find(|e| type_of(e) == kind)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

/// The CLI version whose recordings the fake is compared with: the pinned one.
pub const RECORDED: &str = "2.1.332";

/// A recorded real-CLI transcript (`crates/fake-claude/fixtures/<RECORDED>`, part of the
/// repository).
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(RECORDED)
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()))
}

pub fn fixture_events(name: &str) -> Vec<Json> {
    parse_lines(&fixture(name))
}

/// Asserts that `ours` has the keys of `real` in the same order, recursively through
/// nested objects and through arrays of objects (element by element).
pub fn assert_same_shape(ours: &Json, real: &Json) {
    shape(ours, real, "$");
}

const PAYLOAD_KEYS: [&str; 3] = ["input", "tool_input", "structured_output"];

fn shape(ours: &Json, real: &Json, path: &str) {
    match (ours, real) {
        (Json::Obj(_), Json::Obj(_)) => {
            assert_eq!(ours.keys(), real.keys(), "keys differ at {path}");
            // Payloads chosen by the model (tool input, structured output) differ by design.
            for key in real
                .keys()
                .into_iter()
                .filter(|k| !PAYLOAD_KEYS.contains(k))
            {
                if let (Some(a), Some(b)) = (ours.get(key), real.get(key)) {
                    shape(a, b, &format!("{path}.{key}"));
                }
            }
        }
        (Json::Arr(a), Json::Arr(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                shape(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}
