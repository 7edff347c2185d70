//! Session transcripts, stored exactly where the real CLI stores them so that Baton's
//! session portability (copy one `.jsonl`, resume elsewhere) is tested honestly:
//! `<config dir>/projects/<cwd with every non-alphanumeric char replaced by '-'>/<id>.jsonl`.
//!
//! The lines written are shaped like the real transcript (`e_session_file_after_resume.jsonl`)
//! but shorter; Baton treats the file as opaque bytes. Reading only needs the user prompts.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Environment, SessionRequest, is_uuid};
use crate::json::Json;
use crate::obj;

/// Why a session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// `--resume` named a session with no transcript here. Printed specially (see `lib`).
    NotFound(String),
    /// Any other refusal; the text goes to stderr as is.
    Refused(String),
}

/// The session a run continues or starts.
#[derive(Debug)]
pub struct Opened {
    pub session_id: String,
    /// The user prompts of the resumed conversation, oldest first.
    pub history: Vec<String>,
    pub transcript: Transcript,
}

/// The project directory name: each non-alphanumeric UTF-16 unit becomes `-`, because the
/// CLI does this with a JavaScript regex over a UTF-16 string.
pub fn project_dir_name(cwd: &str) -> String {
    cwd.chars()
        .flat_map(|c| {
            let (keep, units) = if c.is_ascii_alphanumeric() {
                (Some(c), 1)
            } else {
                (None, c.len_utf16())
            };
            std::iter::repeat_n(keep.unwrap_or('-'), units)
        })
        .collect()
}

pub fn project_dir(env: &Environment) -> PathBuf {
    env.config_dir
        .join("projects")
        .join(project_dir_name(&env.cwd))
}

pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Resolves `--session-id`, `--resume`, `--continue` and `--fork-session`.
pub fn open(request: &SessionRequest, env: &Environment) -> Result<Opened, OpenError> {
    let dir = project_dir(env);
    let resume = match (&request.resume, request.continue_latest) {
        (Some(id), _) => Some(id.clone()),
        (None, true) => Some(
            newest_session(&dir)
                .ok_or_else(|| OpenError::Refused("No conversation found to continue".into()))?,
        ),
        (None, false) => None,
    };

    let Some(old_id) = resume else {
        let session_id = request.session_id.clone().unwrap_or_else(new_session_id);
        let path = dir.join(format!("{session_id}.jsonl"));
        if request.session_id.is_some() && path.exists() {
            return Err(OpenError::Refused(format!(
                "Error: Session ID {session_id} is already in use."
            )));
        }
        return Ok(Opened {
            transcript: Transcript::new(request.persist.then_some(path), &session_id, env),
            session_id,
            history: Vec::new(),
        });
    };

    // A non-UUID is never a file name the CLI would have written; treat it as unknown rather
    // than letting it name a path outside the project directory.
    let Some(old_path) = is_uuid(&old_id)
        .then(|| find_transcript(env, &dir, &old_id))
        .flatten()
    else {
        return Err(OpenError::NotFound(old_id));
    };
    let raw = fs::read_to_string(&old_path).map_err(|e| {
        OpenError::Refused(format!("Error: cannot read {}: {e}", old_path.display()))
    })?;
    let history = user_prompts(&raw);
    let last_uuid = last_uuid(&raw);

    if !request.fork {
        let mut transcript = Transcript::new(request.persist.then_some(old_path), &old_id, env);
        transcript.parent = last_uuid;
        return Ok(Opened {
            session_id: old_id,
            history,
            transcript,
        });
    }

    let session_id = request.session_id.clone().unwrap_or_else(new_session_id);
    let path = dir.join(format!("{session_id}.jsonl"));
    if path.exists() {
        return Err(OpenError::Refused(format!(
            "Error: Session ID {session_id} is already in use."
        )));
    }
    let mut transcript = Transcript::new(request.persist.then_some(path), &session_id, env);
    transcript.parent = last_uuid;
    transcript.append_raw(&retag_session(&raw, &session_id));
    Ok(Opened {
        session_id,
        history,
        transcript,
    })
}

/// The transcript of session `id`: in this directory's project, else (2.1.332, e3) in the
/// project of any other directory, where a resumed session goes on being written.
fn find_transcript(env: &Environment, dir: &Path, id: &str) -> Option<PathBuf> {
    let name = format!("{id}.jsonl");
    let own = dir.join(&name);
    if own.is_file() {
        return Some(own);
    }
    let mut others: Vec<PathBuf> = fs::read_dir(env.config_dir.join("projects"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join(&name))
        .filter(|path| path.is_file())
        .collect();
    others.sort();
    others.into_iter().next()
}

/// The most recently modified transcript in `dir`, for `--continue`.
fn newest_session(dir: &Path) -> Option<String> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".jsonl")?.to_string();
            let modified = entry.metadata().ok()?.modified().ok()?;
            is_uuid(&id).then_some((modified, id))
        })
        .max()
        .map(|(_, id)| id)
}

/// The prompts a person typed, skipping tool results, synthetic and meta lines.
pub fn user_prompts(raw: &str) -> Vec<String> {
    raw.lines()
        .filter_map(|line| Json::parse(line).ok())
        .filter(|entry| entry.get("type").and_then(Json::as_str) == Some("user"))
        .filter(|entry| {
            !["isMeta", "isSynthetic"]
                .iter()
                .any(|flag| entry.get(flag).and_then(Json::as_bool) == Some(true))
        })
        .filter_map(|entry| entry.get("message")?.get("content").and_then(prompt_text))
        .collect()
}

/// The text of a message `content`: a string, or the text blocks of a block list. `None`
/// for tool results, which are not prompts.
pub fn prompt_text(content: &Json) -> Option<String> {
    match content {
        Json::Str(s) => Some(s.clone()),
        Json::Arr(blocks) => {
            let mut texts = Vec::new();
            for block in blocks {
                match block.get("type").and_then(Json::as_str) {
                    Some("text") => texts.push(block.get("text")?.as_str()?.to_string()),
                    Some("tool_result") => return None,
                    _ => {}
                }
            }
            Some(texts.join("\n"))
        }
        _ => None,
    }
}

fn last_uuid(raw: &str) -> Option<String> {
    raw.lines()
        .rev()
        .filter_map(|line| Json::parse(line).ok())
        .find_map(|entry| entry.get("uuid")?.as_str().map(str::to_string))
}

/// A forked transcript is the old one under the new session id.
fn retag_session(raw: &str, session_id: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        match Json::parse(line) {
            Ok(mut entry) if entry.get("sessionId").is_some() => {
                entry.set("sessionId", session_id);
                out.push_str(&entry.to_compact());
            }
            // Lines we do not understand are copied verbatim: the file is opaque to Baton.
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Appends lines to one session's transcript, or does nothing without persistence.
#[derive(Debug)]
pub struct Transcript {
    path: Option<PathBuf>,
    session_id: String,
    cwd: String,
    /// The `uuid` of the previous message line, for `parentUuid`.
    parent: Option<String>,
    warned: bool,
}

impl Transcript {
    fn new(path: Option<PathBuf>, session_id: &str, env: &Environment) -> Transcript {
        Transcript {
            path,
            session_id: session_id.to_string(),
            cwd: env.cwd.clone(),
            parent: None,
            warned: false,
        }
    }

    /// The user's prompt, written before the model is asked (as the real CLI does, so a
    /// killed run still leaves it on disk).
    pub fn user_prompt(&mut self, content: Json, permission_mode: &str) {
        let now = now_iso();
        self.append(&obj! {
            "type" => "queue-operation",
            "operation" => "enqueue",
            "timestamp" => now.clone(),
            "sessionId" => self.session_id.clone(),
            "content" => content.clone(),
        });
        let uuid = new_uuid();
        let line = obj! {
            "parentUuid" => self.parent.clone(),
            "isSidechain" => false,
            "promptId" => new_uuid(),
            "type" => "user",
            "message" => obj! { "role" => "user", "content" => content },
            "uuid" => uuid.clone(),
            "timestamp" => now,
            "permissionMode" => permission_mode,
            "promptSource" => "sdk",
            "userType" => "external",
            "entrypoint" => "sdk-cli",
            "cwd" => self.cwd.clone(),
            "sessionId" => self.session_id.clone(),
            "version" => crate::VERSION,
            "gitBranch" => "HEAD",
        };
        self.append(&line);
        self.parent = Some(uuid);
    }

    /// A user line that is not a prompt: a tool result, an interruption, a synthetic nudge.
    pub fn user_message(&mut self, uuid: &str, content: Json, tool_use_result: Option<Json>) {
        let mut line = obj! {
            "parentUuid" => self.parent.clone(),
            "isSidechain" => false,
            "type" => "user",
            "message" => obj! { "role" => "user", "content" => content },
            "uuid" => uuid,
            "timestamp" => now_iso(),
        };
        if let Some(result) = tool_use_result {
            line.set("toolUseResult", result);
        }
        self.finish_line(line, uuid);
    }

    /// One assistant content block, as the CLI stores one line per block.
    pub fn assistant(&mut self, uuid: &str, message: Json, request_id: Option<&str>) {
        let mut line = obj! {
            "parentUuid" => self.parent.clone(),
            "isSidechain" => false,
            "message" => message,
        };
        if let Some(id) = request_id {
            line.set("requestId", id);
        }
        line.set("type", "assistant");
        line.set("uuid", uuid);
        line.set("timestamp", now_iso());
        self.finish_line(line, uuid);
    }

    pub fn last_prompt(&mut self, prompt: &str) {
        let line = obj! {
            "type" => "last-prompt",
            "lastPrompt" => prompt,
            "leafUuid" => self.parent.clone(),
            "sessionId" => self.session_id.clone(),
        };
        self.append(&line);
    }

    fn finish_line(&mut self, mut line: Json, uuid: &str) {
        line.set("userType", "external");
        line.set("entrypoint", "sdk-cli");
        line.set("cwd", self.cwd.clone());
        line.set("sessionId", self.session_id.clone());
        line.set("version", crate::VERSION);
        line.set("gitBranch", "HEAD");
        self.append(&line);
        self.parent = Some(uuid.to_string());
    }

    fn append(&mut self, line: &Json) {
        let mut text = line.to_compact();
        text.push('\n');
        self.append_raw(&text);
    }

    fn append_raw(&mut self, text: &str) {
        let Some(path) = &self.path else { return };
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(path))
            .and_then(|mut file| file.write_all(text.as_bytes()));
        // A transcript that cannot be written must not break the run (the real CLI goes on
        // too), but it should not go unnoticed either: say so once.
        if let Err(e) = written
            && !self.warned
        {
            self.warned = true;
            eprintln!(
                "fake-claude: cannot write the session transcript {}: {e}",
                path.display()
            );
        }
    }
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `2026-11-22T03:13:08.377Z`, the timestamp format of events and transcripts.
pub fn now_iso() -> String {
    iso_timestamp(SystemTime::now())
}

fn iso_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm), to
/// avoid a date-time dependency for one format.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn project_dir_replaces_every_non_alphanumeric() {
        assert_eq!(project_dir_name("/tmp/lab/work"), "-tmp-lab-work");
        assert_eq!(project_dir_name("/tmp/my_dir.x y"), "-tmp-my-dir-x-y");
        // One '-' per UTF-16 unit, as JavaScript counts.
        assert_eq!(project_dir_name("/é😀"), "----");
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_316_912_093);
        assert_eq!(iso_timestamp(t), "2026-11-22T03:08:32.093Z");
        assert_eq!(iso_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn prompts_skip_tool_results_and_synthetic_lines() {
        let raw = [
            r#"{"type":"queue-operation","operation":"enqueue","content":"a"}"#,
            r#"{"type":"user","message":{"role":"user","content":"first"}}"#,
            r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t","type":"tool_result","content":"hi"}]}}"#,
            r#"{"type":"user","isSynthetic":true,"message":{"role":"user","content":[{"type":"text","text":"nudge"}]}}"#,
            r#"{"type":"user","message":{"role":"user","content":[{"type":"text","text":"second"}]}}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(user_prompts(&raw), ["first", "second"]);
    }
}
