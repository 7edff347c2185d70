//! One `Config`, in sections (`[server]`, `[store]`, `[runner]`, `[limits]`, `[retention]`,
//! `[[warm_pool]]`): defaults, then `baton.toml`, then `BATON_<SECTION>_<KEY>` environment
//! variables, then command-line flags (`layers.rs`). Unknown keys are an error wherever they
//! appear, and a key of the flat layout Baton had before its sections is refused with its new
//! place; values that cannot work are refused by [`Config::validate`] with a message that
//! says how to fix them.

mod layers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration, in sections. Every key has a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub runner: RunnerConfig,
    pub limits: LimitsConfig,
    pub retention: RetentionConfig,
    pub outbound: OutboundConfig,
    pub proxy: ProxyConfig,
    /// Pre-started CLI processes for the job options given; see the README.
    pub warm_pool: Vec<WarmPoolEntry>,
    /// `[policy]`: what the default project's jobs may ask for, until it is set through
    /// the API. Absent: anything (a single user's Baton, as before policies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<baton_core::Policy>,
    /// `[[mcp_server]]`: the admin's catalogue of MCP servers, which jobs name.
    pub mcp_server: Vec<baton_core::McpServer>,
    /// The configuration file read, if any (hidden from sandboxed CLIs: it may hold
    /// secrets).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `[server]`: this process, its HTTP API and its logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the HTTP API listens. Loopback only until API keys exist.
    pub listen: SocketAddr,
    /// `auto`: open (no key needed, loopback only) until the first API key is made, then
    /// every request needs one; `required`: every request needs a key from the start.
    pub auth: AuthMode,
    /// HTTPS: the server's certificate chain (PEM); with `tls_key`, or neither.
    pub tls_cert: PathBuf,
    /// HTTPS: the certificate's private key (PEM).
    pub tls_key: PathBuf,
    /// The node id, attempt workspaces and (by default) the SQLite database live here.
    pub data_dir: PathBuf,
    /// `all` (API and workers), `api` (queues, reads and cancels; runs nothing) or
    /// `worker` (runs jobs; serves only `/v1/health`). Roles other than `all` need a
    /// shared (PostgreSQL) database.
    pub role: Role,
    /// On SIGTERM/SIGINT, how long running attempts may take to finish before they are
    /// stopped and requeued.
    pub drain_timeout_seconds: u64,
    pub max_body_bytes: usize,
    /// A tracing filter, e.g. `info` or `baton_engine=debug`.
    pub log: String,
    /// `text` (colour only when stderr is a terminal) or `json` (one object per line,
    /// for log collectors).
    pub log_format: LogFormat,
    /// How Baton is reached from outside, for the URLs it hands out (a trigger's fire URL,
    /// a fire's session page); empty: `http(s)://<listen>`.
    pub public_url: String,
}

/// `[outbound]`: the requests Baton itself makes (completion callbacks).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Non-public addresses (CIDR ranges or single addresses) Baton may call anyway;
    /// loopback, private and link-local destinations are refused otherwise.
    pub allow: Vec<String>,
    /// How long one request may take.
    pub timeout_seconds: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout_seconds: 10,
        }
    }
}

/// `[proxy]`: the credential proxy between the CLIs and the Anthropic API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `auto`: through the proxy whenever Baton holds a credential (in its environment or
    /// `credential_file`); `proxy`: always (refused without a credential); `direct`: the
    /// CLI gets the credential itself, as before.
    pub mode: ProxyMode,
    /// The API the proxy forwards to; empty: `ANTHROPIC_BASE_URL` of Baton's environment,
    /// else `https://api.anthropic.com`.
    pub upstream: String,
    /// A file holding the credential (an API key, or `claude setup-token`'s OAuth token,
    /// which begins `sk-ant-oat`), read at start.
    pub credential_file: PathBuf,
    /// Prices per model (dollars per million tokens), over the built-in table:
    /// `[proxy.prices."claude-sonnet-4"] input = 3.0, output = 15.0`.
    pub prices: std::collections::BTreeMap<String, baton_proxy::Price>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    Auto,
    Proxy,
    Direct,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            mode: ProxyMode::Auto,
            upstream: String::new(),
            credential_file: PathBuf::new(),
            prices: Default::default(),
        }
    }
}

/// `[store]`: where jobs are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Empty: the embedded SQLite database in the data directory. `postgres://…`: a
    /// PostgreSQL database that several nodes share. A password belongs in `PGPASSWORD`,
    /// `~/.pgpass` or the configuration file, never on the command line.
    pub database_url: String,
    /// Connections this node keeps to PostgreSQL.
    pub max_connections: u32,
}

/// `[runner]`: how this node runs attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// The `claude` executable; empty means `CLAUDE_BIN`, else `claude` on `PATH`.
    pub claude_bin: PathBuf,
    /// Attempts running at once on this node; more jobs wait in the queue.
    pub max_concurrency: usize,
    pub lease_seconds: u64,
    pub poll_interval_ms: u64,
    pub silence_timeout_seconds: u64,
    pub result_grace_seconds: u64,
    pub kill_grace_seconds: u64,
    pub max_line_bytes: usize,
    pub max_stderr_bytes: usize,
    /// Variables copied from Baton's environment into every CLI's, beyond the built-in
    /// list (credentials, endpoint, proxies, locale).
    pub env_passthrough: Vec<String>,
    /// Variables set for every CLI.
    pub env: BTreeMap<String, String>,
    pub keep_workspaces: bool,
    /// Where attempt workspaces (each attempt's private `HOME` and scratch directory) are
    /// made; empty means `<data_dir>/attempts`. Every attempt creates and deletes a few
    /// directories, so at high job rates a tmpfs here spares the disk that churn. This
    /// server keeps to its own `baton-<node id>` inside, so servers may share it.
    pub workspace_dir: PathBuf,
    /// Whether each CLI runs in a bubblewrap sandbox (read-only system, its own writable
    /// workspace, no network but Baton's proxy, a non-root uid; it needs the proxy):
    /// `auto` (the default) when Baton is shared, that is has more than one project or
    /// listens beyond loopback; `bwrap` always; `none` never. A project's policy may say
    /// otherwise (`sandbox = "on"` or `"off"`).
    pub sandbox: SandboxMode,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// The uid (and gid) the CLI has inside the sandbox.
    pub sandbox_uid: u32,
    /// Baton's binary, run inside the sandbox as its forwarder (`baton sandbox-init`);
    /// empty: this very binary.
    pub sandbox_helper: PathBuf,
    /// Domains a sandboxed CLI may reach through Baton's HTTPS (CONNECT) proxy, e.g.
    /// `["github.com", ".npmjs.org"]` (a leading dot: any subdomain). Empty: none.
    pub egress_allow: Vec<String>,
    /// A Baton running as root runs each CLI (or, with a sandbox, bubblewrap) as this
    /// unprivileged user (its workspaces are given to it); with a sandbox, `nobody` when
    /// empty.
    pub run_as: String,
}

/// How the CLIs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    #[default]
    Auto,
    None,
    Bwrap,
}

/// `[limits]`: what a job may ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub max_prompt_chars: usize,
    pub max_attempts_limit: u32,
    /// Directories a job's `cwd` and `add_dirs` may name.
    pub workspace_roots: Vec<PathBuf>,
    /// A cron trigger may fire at most this often.
    pub min_cron_interval_seconds: u64,
    /// The largest webhook payload accepted (413 beyond).
    pub max_webhook_bytes: usize,
}

/// `[retention]`: how long finished jobs are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days a completed job (with its events) is kept.
    pub completed_days: u64,
    /// Days a failed or cancelled job is kept.
    pub failed_days: u64,
    /// Days a dead-lettered job is kept.
    pub dead_days: u64,
    /// Days an audit record is kept.
    pub audit_days: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Auto,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    All,
    Api,
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Self::Worker
    }

    pub fn runs_jobs(self) -> bool {
        self != Self::Api
    }
}

/// One warm pool: `size` CLI processes kept ready for jobs whose options equal `options`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmPoolEntry {
    /// Processes kept ready (each real CLI holds about 300 MB).
    pub size: usize,
    /// A ready process unused this long is retired and replaced.
    #[serde(default = "default_warm_idle")]
    pub idle_seconds: u64,
    /// The job options served, as in `POST /v1/jobs` but without `prompt`, `session` or `cwd`.
    #[serde(default)]
    pub options: toml::Table,
}

fn default_warm_idle() -> u64 {
    600
}

impl WarmPoolEntry {
    /// The options as a job spec (with a placeholder prompt), checked like a request.
    pub fn spec(&self, limits: &baton_core::Limits) -> anyhow::Result<baton_core::JobSpec> {
        let mut options = serde_json::to_value(&self.options)?;
        if options.get("prompt").is_some() {
            bail!("warm_pool options must not contain a prompt");
        }
        options["prompt"] = serde_json::Value::String("warm".into());
        let request: baton_core::JobRequest =
            serde_json::from_value(options).context("warm_pool options")?;
        let spec = request.parse(limits).context("warm_pool options")?;
        if spec.session != baton_core::SessionMode::New || spec.cwd.is_some() {
            bail!(
                "warm_pool options cannot name a session or a cwd: a warm process starts before its job"
            );
        }
        Ok(spec)
    }
}

pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("baton");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/baton"),
        None => PathBuf::from(".baton"),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7847".parse().expect("a valid address"),
            auth: AuthMode::Auto,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            data_dir: default_data_dir(),
            role: Role::All,
            drain_timeout_seconds: 30,
            max_body_bytes: 4 * 1024 * 1024,
            log: "info".into(),
            log_format: LogFormat::Text,
            public_url: String::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            max_connections: 10,
        }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            claude_bin: PathBuf::new(),
            max_concurrency: 4,
            lease_seconds: 12,
            poll_interval_ms: 1000,
            silence_timeout_seconds: 300,
            result_grace_seconds: 5,
            kill_grace_seconds: 5,
            max_line_bytes: 8 * 1024 * 1024,
            max_stderr_bytes: 64 * 1024,
            env_passthrough: Vec::new(),
            env: BTreeMap::new(),
            keep_workspaces: false,
            workspace_dir: PathBuf::new(),
            sandbox: SandboxMode::Auto,
            bwrap: PathBuf::from("bwrap"),
            sandbox_uid: 1000,
            sandbox_helper: PathBuf::new(),
            egress_allow: Vec::new(),
            run_as: String::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default_timeout_ms: 30 * 60 * 1000,
            max_timeout_ms: 24 * 3600 * 1000,
            max_prompt_chars: 500_000,
            max_attempts_limit: 20,
            workspace_roots: Vec::new(),
            min_cron_interval_seconds: 60,
            max_webhook_bytes: 1024 * 1024,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            completed_days: 7,
            failed_days: 7,
            dead_days: 30,
            audit_days: 90,
        }
    }
}

impl Config {
    /// Whether the API is served over HTTPS.
    pub fn tls(&self) -> bool {
        !self.server.tls_cert.as_os_str().is_empty()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.server.tls_cert.as_os_str().is_empty() != self.server.tls_key.as_os_str().is_empty()
        {
            bail!("server.tls_cert and server.tls_key go together: set both for HTTPS, or neither");
        }
        if self.runner.max_concurrency == 0 || self.runner.max_concurrency > 1024 {
            bail!(
                "runner.max_concurrency must be between 1 and 1024 (got {})",
                self.runner.max_concurrency
            );
        }
        let url = self.store.database_url.as_str();
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "store.database_url must be empty (SQLite in the data directory) or a postgres:// URL (got {})",
                redact_url(url)
            );
        }
        if url.is_empty() && self.server.role != Role::All {
            bail!(
                "server.role = {:?} needs a database shared with other nodes: set store.database_url = \"postgres://…\"",
                self.server.role
            );
        }
        if self.store.max_connections < 2 || self.store.max_connections > 1000 {
            bail!("store.max_connections must be between 2 and 1000");
        }
        if !self.runner.workspace_dir.as_os_str().is_empty()
            && !self.runner.workspace_dir.is_absolute()
        {
            bail!(
                "runner.workspace_dir must be an absolute path (got {})",
                self.runner.workspace_dir.display()
            );
        }
        if self.runner.lease_seconds < 3 {
            bail!("runner.lease_seconds must be at least 3 (renewed every third)");
        }
        if self.limits.default_timeout_ms > self.limits.max_timeout_ms
            || self.limits.default_timeout_ms < 1000
        {
            bail!("limits.default_timeout_ms must be between 1000 and limits.max_timeout_ms");
        }
        if self.runner.max_line_bytes < 64 * 1024 {
            bail!(
                "runner.max_line_bytes must be at least 65536: real events exceed a few kilobytes"
            );
        }
        for (i, pool) in self.warm_pool.iter().enumerate() {
            if pool.size == 0 || pool.size > 64 {
                bail!("warm_pool[{i}].size must be between 1 and 64");
            }
            if pool.idle_seconds == 0 {
                bail!("warm_pool[{i}].idle_seconds must be positive");
            }
            pool.spec(&baton_core::Limits::default())
                .with_context(|| format!("warm_pool[{i}]"))?;
        }
        for a in &self.outbound.allow {
            baton_api::callbacks::Cidr::parse(a)
                .map_err(|e| anyhow::anyhow!("outbound.allow: {e}"))?;
        }
        if self.outbound.timeout_seconds == 0 || self.outbound.timeout_seconds > 300 {
            bail!("outbound.timeout_seconds must be between 1 and 300");
        }
        if self.limits.min_cron_interval_seconds == 0 {
            bail!("limits.min_cron_interval_seconds must be at least 1");
        }
        if self.limits.max_webhook_bytes < 1024 || self.limits.max_webhook_bytes > 64 * 1024 * 1024
        {
            bail!("limits.max_webhook_bytes must be between 1024 and 67108864");
        }
        let public = self.server.public_url.as_str();
        if !public.is_empty()
            && (!(public.starts_with("http://") || public.starts_with("https://"))
                || public.ends_with('/'))
        {
            bail!("server.public_url must be an http(s) URL without a trailing '/' (got {public})");
        }
        for root in &self.limits.workspace_roots {
            if !root.is_absolute() {
                bail!(
                    "limits.workspace_roots: {} must be an absolute path",
                    root.display()
                );
            }
        }
        for (i, server) in self.mcp_server.iter().enumerate() {
            server.check().map_err(anyhow::Error::msg)?;
            if self.mcp_server[..i].iter().any(|s| s.name == server.name) {
                bail!("mcp_server {:?} is named twice", server.name);
            }
        }
        if let Some(policy) = &self.policy {
            policy
                .check()
                .map_err(|e| anyhow::anyhow!("[policy]: {e}"))?;
            for name in &policy.mcp_servers {
                if name != baton_core::policy::ANY
                    && !self.mcp_server.iter().any(|s| &s.name == name)
                {
                    bail!("[policy] mcp_servers: {name:?} is not an [[mcp_server]] of this file");
                }
            }
            for root in policy
                .roots
                .iter()
                .filter(|r| *r != baton_core::policy::ANY)
            {
                if !self
                    .limits
                    .workspace_roots
                    .iter()
                    .any(|w| std::path::Path::new(root).starts_with(w))
                {
                    bail!("[policy] roots: {root} is not inside limits.workspace_roots");
                }
            }
        }
        Ok(())
    }

    pub fn resolve_claude_bin(&self) -> PathBuf {
        if !self.runner.claude_bin.as_os_str().is_empty() {
            return self.runner.claude_bin.clone();
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join("claude");
                if candidate.is_file() {
                    return candidate;
                }
            }
        }
        PathBuf::from("claude")
    }
}

/// `url` with any password replaced by `***`, fit for a log line or an error.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    // A password can also travel as a query parameter.
    let path = match path.find("password=") {
        Some(i) => {
            let end = path[i..].find('&').map_or(path.len(), |j| i + j);
            format!("{}password=***{}", &path[..i], &path[end..])
        }
        None => path.to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

/// Whether a database URL carries a password (which must not be on a command line).
pub fn url_has_password(url: &str) -> bool {
    redact_url(url) != url
}
