//! The command-line client: `baton run`, `baton jobs …`, over the HTTP API.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Exit statuses of `baton run`, so scripts can tell outcomes apart.
pub mod exit {
    pub const COMPLETED: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CANCELLED: i32 = 3;
}

/// The client's configuration file, `$XDG_CONFIG_HOME/baton/client.toml` (or
/// `~/.config/baton/client.toml`); every setting optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub server: Option<String>,
    pub api_key: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
}

impl ClientFile {
    pub fn path() -> Option<std::path::PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config"))
            })?;
        Some(base.join("baton/client.toml"))
    }

    /// The file's settings; none when it does not exist. One that holds a key and that
    /// other users can read is refused, as `ssh` refuses such a key file.
    pub fn load() -> anyhow::Result<Self> {
        let Some(path) = Self::path() else {
            return Ok(Self::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: Self =
            toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        if file.api_key.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} holds an API key and other users can read it (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
        Ok(file)
    }
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// One server-sent event.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Client {
    /// A client of the Baton at `base`, sending `api_key` (when given) with every request.
    pub fn new(base: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        Self::with_ca(base, api_key, None)
    }

    /// As [`Client::new`], trusting the certificate authority in `ca_cert` (PEM) too, for
    /// a server whose certificate a private CA signed.
    pub fn with_ca(
        base: &str,
        api_key: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key.filter(|k| !k.is_empty()) {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the API key holds characters a header cannot"))?;
            // Never shown in a debug print of the request.
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers);
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not PEM certificates", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: builder.build().context("building the HTTP client")?,
        })
    }

    /// The HTTP client, which sends the API key with every request.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            let kind = body["error"]["type"].as_str().unwrap_or("error");
            bail!("{status}: {kind}: {message}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("connecting to Baton at {}", self.base))?;
        Self::check(resp).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("connecting to Baton at {}", self.base))?;
        Self::check(resp).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("connecting to Baton at {}", self.base))?;
        Self::check(resp).await
    }

    /// Follows a job's events after `last_event_id` until the stream ends, calling
    /// `on_event` for each; stops early when it returns false.
    pub async fn follow(
        &self,
        job: &str,
        last_event_id: Option<i64>,
        mut on_event: impl FnMut(&SseEvent) -> bool,
    ) -> anyhow::Result<()> {
        let mut req = self
            .http
            .get(format!("{}/v1/jobs/{job}/events", self.base))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.context("opening the event stream")?;
        if !resp.status().is_success() {
            Self::check(resp).await?;
            return Ok(());
        }
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut current = SseEvent::default();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.context("reading the event stream")?);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if (!current.data.is_empty() || current.event.is_some()) && !on_event(&current)
                    {
                        return Ok(());
                    }
                    current = SseEvent::default();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !current.data.is_empty() {
                        current.data.push('\n');
                    }
                    current.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("event:") {
                    current.event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("id:") {
                    current.id = Some(v.trim().to_string());
                }
            }
        }
        Ok(())
    }
}

/// `baton run`'s arguments.
#[derive(clap::Args, Debug)]
pub struct RunOptions {
    /// The prompt; `-` reads it from stdin.
    pub prompt: String,
    #[arg(long)]
    pub model: Option<String>,
    /// A tool the job may use without asking (repeatable).
    #[arg(long = "allowed-tool")]
    pub allowed_tools: Vec<String>,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Resume this session id.
    #[arg(long)]
    pub resume: Option<String>,
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Print the finished job as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Progress on stderr while a job runs, only when stderr is a terminal.
struct Progress {
    enabled: bool,
    turns: u64,
    state: String,
}

impl Progress {
    fn show(&self, job: &str) {
        if self.enabled {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[2K{} {} · {} events",
                &job[..8.min(job.len())],
                self.state,
                self.turns
            );
            let _ = err.flush();
        }
    }

    fn clear(&self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

pub async fn run(client: &Client, opts: RunOptions) -> anyhow::Result<i32> {
    let mut body = json!({"prompt": opts.prompt});
    if let Some(m) = opts.model {
        body["model"] = json!(m);
    }
    if !opts.allowed_tools.is_empty() {
        body["allowed_tools"] = json!(opts.allowed_tools);
    }
    if let Some(c) = opts.cwd {
        body["cwd"] = json!(c);
    }
    if let Some(t) = opts.timeout_ms {
        body["timeout_ms"] = json!(t);
    }
    if let Some(r) = opts.resume {
        body["session"] = json!({"resume": r});
    }
    if let Some(n) = opts.max_turns {
        body["max_turns"] = json!(n);
    }
    let job = client.post("/v1/jobs", &body).await?;
    let id = job["id"]
        .as_str()
        .context("the server answered without a job id")?
        .to_string();
    let mut progress = Progress {
        enabled: std::io::stderr().is_terminal() && !opts.json,
        turns: 0,
        state: "queued".into(),
    };
    progress.show(&id);
    client
        .follow(&id, None, |e| {
            progress.turns += 1;
            match e.event.as_deref() {
                Some("attempt.started") => progress.state = "running".into(),
                Some("attempt.failed") => progress.state = "retrying".into(),
                _ => {}
            }
            progress.show(&id);
            true
        })
        .await?;
    progress.clear();
    let job = client.get(&format!("/v1/jobs/{id}")).await?;
    let state = job["state"].as_str().unwrap_or("unknown");
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else if state == "completed" {
        let text = match &job["structured_output"] {
            Value::Null => job["result"].as_str().unwrap_or_default().to_string(),
            v => v.to_string(),
        };
        println!("{text}");
    } else {
        eprintln!(
            "job {id} {state}: {}: {}",
            job["error"]["type"].as_str().unwrap_or("?"),
            job["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(match state {
        "completed" => exit::COMPLETED,
        "cancelled" => exit::CANCELLED,
        _ => exit::FAILED,
    })
}

fn excerpt(s: &str, n: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > n {
        format!("{}…", one_line.chars().take(n - 1).collect::<String>())
    } else {
        one_line
    }
}

pub async fn jobs_ls(client: &Client, state: Option<String>, limit: u32) -> anyhow::Result<()> {
    let mut path = format!("/v1/jobs?limit={limit}");
    if let Some(s) = state {
        path.push_str(&format!("&state={s}"));
    }
    let list = client.get(&path).await?;
    println!(
        "{:<36}  {:<9}  {:<24}  {:>9}  PROMPT",
        "ID", "STATE", "CREATED", "COST"
    );
    for j in list["data"].as_array().into_iter().flatten() {
        let cost = j["total_cost_usd"]
            .as_f64()
            .map_or("-".to_string(), |c| format!("${c:.4}"));
        println!(
            "{:<36}  {:<9}  {:<24}  {:>9}  {}",
            j["id"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["created_at"].as_str().unwrap_or(""),
            cost,
            excerpt(j["options"]["prompt"].as_str().unwrap_or(""), 50)
        );
    }
    Ok(())
}

fn describe(kind: &str, data: &Value) -> String {
    match kind {
        "assistant" => data["message"]["content"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| match b["type"].as_str() {
                Some("text") => excerpt(b["text"].as_str().unwrap_or(""), 100),
                Some("tool_use") => format!(
                    "tool_use {} {}",
                    b["name"].as_str().unwrap_or("?"),
                    excerpt(&b["input"].to_string(), 80)
                ),
                Some(other) => other.to_string(),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" | "),
        "result" => format!(
            "{} is_error={} cost=${} {}",
            data["subtype"].as_str().unwrap_or("?"),
            data["is_error"],
            data["total_cost_usd"],
            excerpt(data["result"].as_str().unwrap_or(""), 80)
        ),
        _ => excerpt(&data.to_string(), 120),
    }
}

pub async fn jobs_logs(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    if follow {
        return client
            .follow(id, None, |e| {
                let kind = e.event.as_deref().unwrap_or("message");
                let data: Value =
                    serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone()));
                println!(
                    "{:>5}  {:<16} {}",
                    e.id.as_deref().unwrap_or(""),
                    kind,
                    describe(kind, &data)
                );
                true
            })
            .await;
    }
    let mut after = 0;
    loop {
        let page = client
            .get(&format!("/v1/jobs/{id}/events?format=json&after={after}"))
            .await?;
        for e in page["data"].as_array().into_iter().flatten() {
            let kind = e["kind"].as_str().unwrap_or("");
            println!(
                "{:>5}  {:<16} {}",
                e["seq"],
                kind,
                describe(kind, &e["data"])
            );
        }
        match page["next_after"].as_i64() {
            Some(n) if page["has_more"] == true => after = n,
            _ => return Ok(()),
        }
    }
}

pub async fn dead_ls(
    client: &Client,
    error_type: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut path = format!("/v1/dead?limit={limit}");
    if let Some(t) = error_type {
        path.push_str(&format!("&error_type={t}"));
    }
    let list = client.get(&path).await?;
    println!("{:<36}  {:>8}  {:<20}  MESSAGE", "ID", "ATTEMPTS", "ERROR");
    for j in list["data"].as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:>8}  {:<20}  {}",
            j["id"].as_str().unwrap_or(""),
            j["attempts"].as_array().map_or(0, Vec::len),
            j["error"]["type"].as_str().unwrap_or(""),
            excerpt(j["error"]["message"].as_str().unwrap_or(""), 60)
        );
    }
    Ok(())
}

/// `s` as a URL query value: everything but unreserved characters percent-encoded.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
