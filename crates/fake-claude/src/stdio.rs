//! Standard streams: events out (one flushed line each, so a reader sees every event the
//! moment it exists, as with the real CLI), prompts in.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use crate::cli::OutputFormat;
use crate::json::Json;

/// Where events go, per `--output-format`.
pub struct Output {
    format: OutputFormat,
    verbose: bool,
    /// `json --verbose` prints every event as one array at the end.
    collected: Vec<Json>,
}

impl Output {
    pub fn new(format: OutputFormat, verbose: bool) -> Output {
        Output {
            format,
            verbose,
            collected: Vec::new(),
        }
    }

    /// Any event but the result.
    pub fn event(&mut self, event: Json) {
        match self.format {
            OutputFormat::StreamJson => {
                let line = event.to_compact();
                write_line(&line);
                if line.contains("\"text_delta\"") {
                    log_delta();
                }
            }
            OutputFormat::Json if self.verbose => self.collected.push(event),
            OutputFormat::Json | OutputFormat::Text => {}
        }
    }

    /// The result event; `text` is what text mode prints instead (with its own newline, if any).
    pub fn result(&mut self, event: Json, text: &str) {
        match self.format {
            OutputFormat::StreamJson => write_line(&event.to_compact()),
            OutputFormat::Json if self.verbose => {
                self.collected.push(event);
                write_line(&Json::Arr(std::mem::take(&mut self.collected)).to_compact());
            }
            OutputFormat::Json => write_line(&event.to_compact()),
            OutputFormat::Text => write_stdout(&[text.as_bytes()]),
        }
    }
}

/// Where `FAKE print_log` records when each text delta was printed.
static DELTA_LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

pub fn log_deltas_to(path: &str) {
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = DELTA_LOG.set(std::sync::Mutex::new(f));
    }
}

/// A text delta has just been printed (and flushed): when, in microseconds since the epoch.
fn log_delta() {
    if let Some(log) = DELTA_LOG.get() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{now}");
        }
    }
}

pub fn write_line(line: &str) {
    write_stdout(&[line.as_bytes(), b"\n"]);
}

/// Writes and flushes. When the reader has gone (EPIPE; Rust ignores SIGPIPE) there is no
/// one left to talk to, so the process ends the way a CLI killed by SIGPIPE would: at once.
fn write_stdout(parts: &[&[u8]]) {
    let mut stdout = io::stdout().lock();
    let written = parts
        .iter()
        .try_for_each(|part| stdout.write_all(part))
        .and_then(|()| stdout.flush());
    if written.is_err() {
        std::process::exit(1);
    }
}

/// Reads the prompt from stdin unless stdin is a terminal. Like the real CLI, waits at most
/// 3 s for the first byte of an open pipe, then warns and goes on without it.
pub fn read_piped_prompt() -> Option<String> {
    // SAFETY: isatty only inspects file descriptor 0.
    if unsafe { libc::isatty(0) } == 1 {
        return None;
    }
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let ready = loop {
        // SAFETY: `fd` is a valid pollfd and the count is 1.
        let ready = unsafe { libc::poll(&mut fd, 1, 3000) };
        if ready >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break ready;
        }
    };
    if ready == 0 {
        eprintln!(
            "Warning: no stdin data received in 3s, proceeding without it. If piping from a slow command, redirect stdin explicitly: < /dev/null to skip, or wait longer."
        );
        return None;
    }
    if ready < 0 || fd.revents & libc::POLLNVAL != 0 {
        return None; // stdin is closed or unusable: there is simply no piped prompt.
    }
    let mut bytes = Vec::new();
    io::stdin().lock().read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Stdin lines of `--input-format stream-json`. A thread reads them so that a turn can wait
/// for an interrupt while it "thinks"; lines that are not handled at once are deferred and
/// come back in arrival order.
pub struct Input {
    lines: Receiver<String>,
    deferred: VecDeque<String>,
    eof: bool,
}

impl Input {
    pub fn spawn() -> Input {
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Input {
            lines,
            deferred: VecDeque::new(),
            eof: false,
        }
    }

    /// The next line in arrival order, waiting for it; `None` at end of input.
    pub fn next_line(&mut self) -> Option<String> {
        if let Some(line) = self.deferred.pop_front() {
            return Some(line);
        }
        if self.eof {
            return None;
        }
        match self.lines.recv() {
            Ok(line) => Some(line),
            Err(_) => {
                self.eof = true;
                None
            }
        }
    }

    /// A new line arriving before `deadline`; `None` once the deadline has passed.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<String> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if self.eof {
                thread::sleep(deadline - now);
                return None;
            }
            match self.lines.recv_timeout(deadline - now) {
                Ok(line) => return Some(line),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
    }

    /// Keeps a line for `next_line`.
    pub fn defer(&mut self, line: String) {
        self.deferred.push_back(line);
    }
}
