//! One `Config`: defaults, then `baton.toml`, then `BATON_*` environment variables, then
//! command-line flags. Unknown keys are an error wherever they appear; values that cannot
//! work are refused by [`Config::validate`] with a message that says how to fix them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the HTTP API listens. Loopback only until API keys exist.
    pub listen: SocketAddr,
    /// The node id, attempt workspaces and (by default) the SQLite database live here.
    pub data_dir: PathBuf,
    /// Empty: the embedded SQLite database in the data directory. `postgres://…`: a
    /// PostgreSQL database that several nodes share. A password belongs in `PGPASSWORD`,
    /// `~/.pgpass` or this file, never on the command line.
    pub database_url: String,
    /// Connections this node keeps to PostgreSQL.
    pub database_max_connections: u32,
    /// `all` (API and workers), `api` (queues, reads and cancels; runs nothing) or
    /// `worker` (runs jobs; serves only `/v1/health`). Roles other than `all` need a
    /// shared (PostgreSQL) database.
    pub role: Role,
    /// The `claude` executable; empty means `CLAUDE_BIN`, else `claude` on `PATH`.
    pub claude_bin: PathBuf,
    /// Attempts running at once on this node; more jobs wait in the queue.
    pub max_concurrency: usize,
    pub lease_seconds: u64,
    pub poll_interval_ms: u64,
    /// On SIGTERM/SIGINT, how long running attempts may take to finish before they are
    /// stopped and requeued.
    pub drain_timeout_seconds: u64,
    pub silence_timeout_seconds: u64,
    pub result_grace_seconds: u64,
    pub kill_grace_seconds: u64,
    pub max_line_bytes: usize,
    pub max_stderr_bytes: usize,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub max_prompt_chars: usize,
    pub max_body_bytes: usize,
    pub max_attempts_limit: u32,
    /// Directories a job's `cwd` and `add_dirs` may name.
    pub workspace_roots: Vec<PathBuf>,
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
    /// A tracing filter, e.g. `info` or `baton_engine=debug`.
    pub log: String,
    /// `text` (colour only when stderr is a terminal) or `json` (one object per line,
    /// for log collectors).
    pub log_format: LogFormat,
    /// Pre-started CLI processes for the job options given; see the README.
    pub warm_pool: Vec<WarmPoolEntry>,
    /// Days a completed job (with its events) is kept.
    pub retention_completed_days: u64,
    /// Days a failed or cancelled job is kept.
    pub retention_failed_days: u64,
    /// Days a dead-lettered job is kept.
    pub retention_dead_days: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7847".parse().expect("a valid address"),
            data_dir: default_data_dir(),
            database_url: String::new(),
            database_max_connections: 10,
            role: Role::All,
            claude_bin: PathBuf::new(),
            max_concurrency: 4,
            lease_seconds: 12,
            poll_interval_ms: 1000,
            drain_timeout_seconds: 30,
            silence_timeout_seconds: 300,
            result_grace_seconds: 5,
            kill_grace_seconds: 5,
            max_line_bytes: 8 * 1024 * 1024,
            max_stderr_bytes: 64 * 1024,
            default_timeout_ms: 30 * 60 * 1000,
            max_timeout_ms: 24 * 3600 * 1000,
            max_prompt_chars: 500_000,
            max_body_bytes: 4 * 1024 * 1024,
            max_attempts_limit: 20,
            workspace_roots: Vec::new(),
            env_passthrough: Vec::new(),
            env: BTreeMap::new(),
            keep_workspaces: false,
            workspace_dir: PathBuf::new(),
            log: "info".into(),
            log_format: LogFormat::Text,
            warm_pool: Vec::new(),
            retention_completed_days: 7,
            retention_failed_days: 7,
            retention_dead_days: 30,
        }
    }
}

/// Environment variables that belong to Baton but are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["BATON_SERVER", "BATON_CONFIG", "BATON_REQUIRE_ALL"];

impl Config {
    /// Builds the configuration. `file` is `--config`; without it `baton.toml` in the
    /// working directory is read if present. `flags` are `key=value` overrides.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut table =
            toml::Table::try_from(Config::default()).context("default configuration")?;
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| {
                env.iter()
                    .find(|(k, _)| k == "BATON_CONFIG")
                    .map(|(_, v)| PathBuf::from(v))
            })
            .or_else(|| Some(PathBuf::from("baton.toml")).filter(|p| p.exists()));
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the configuration file {}", path.display()))?;
            let overlay: toml::Table = text
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            for (k, v) in overlay {
                if !table.contains_key(&k) {
                    bail!(
                        "{}: unknown key {k:?}; see the configuration reference in the README",
                        path.display()
                    );
                }
                table.insert(k, v);
            }
        }
        if table.get("claude_bin").and_then(toml::Value::as_str) == Some("")
            && let Some((_, v)) = env.iter().find(|(k, _)| k == "CLAUDE_BIN")
        {
            table.insert("claude_bin".into(), toml::Value::String(v.clone()));
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("BATON_") else {
                continue;
            };
            if NON_CONFIG_ENV.contains(&name.as_str()) || key.starts_with("TEST_") {
                continue;
            }
            let key = key.to_ascii_lowercase();
            set(&mut table, &key, value).with_context(|| format!("environment variable {name}"))?;
        }
        for (key, value) in flags {
            set(&mut table, key, value).with_context(|| format!("flag {key}"))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() {
            bail!(
                "listen = {}: Baton has no API keys yet, so it only binds a loopback address \
                 (127.0.0.1 or ::1); put an authenticating proxy in front to expose it",
                self.listen
            );
        }
        if self.max_concurrency == 0 || self.max_concurrency > 1024 {
            bail!(
                "max_concurrency must be between 1 and 1024 (got {})",
                self.max_concurrency
            );
        }
        let url = self.database_url.as_str();
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "database_url must be empty (SQLite in the data directory) or a postgres:// URL (got {})",
                redact_url(url)
            );
        }
        if url.is_empty() && self.role != Role::All {
            bail!(
                "role = {:?} needs a database shared with other nodes: set database_url = \"postgres://…\"",
                self.role
            );
        }
        if self.database_max_connections < 2 || self.database_max_connections > 1000 {
            bail!("database_max_connections must be between 2 and 1000");
        }
        if !self.workspace_dir.as_os_str().is_empty() && !self.workspace_dir.is_absolute() {
            bail!(
                "workspace_dir must be an absolute path (got {})",
                self.workspace_dir.display()
            );
        }
        if self.lease_seconds < 3 {
            bail!("lease_seconds must be at least 3 (renewed every third)");
        }
        if self.default_timeout_ms > self.max_timeout_ms || self.default_timeout_ms < 1000 {
            bail!("default_timeout_ms must be between 1000 and max_timeout_ms");
        }
        if self.max_line_bytes < 64 * 1024 {
            bail!("max_line_bytes must be at least 65536: real events exceed a few kilobytes");
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
        for root in &self.workspace_roots {
            if !root.is_absolute() {
                bail!(
                    "workspace_roots: {} must be an absolute path",
                    root.display()
                );
            }
        }
        Ok(())
    }

    pub fn resolve_claude_bin(&self) -> PathBuf {
        if !self.claude_bin.as_os_str().is_empty() {
            return self.claude_bin.clone();
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

/// Sets one key from a string: parsed as a TOML value when it is one (numbers, booleans,
/// arrays), else taken as a string; a list key also takes a comma-separated string.
fn set(table: &mut toml::Table, key: &str, raw: &str) -> anyhow::Result<()> {
    let Some(current) = table.get(key) else {
        bail!("unknown configuration key {key:?}; see the configuration reference in the README");
    };
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let value = match (current, parsed) {
        (toml::Value::Array(_), Some(v @ toml::Value::Array(_))) => v,
        (toml::Value::Array(_), _) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        (toml::Value::String(_), _) => toml::Value::String(raw.into()),
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.into()),
    };
    table.insert(key.into(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "max_concurrency = 2\nlog = \"debug\"\n").unwrap();
        let c = Config::load(
            Some(&file),
            &env(&[
                ("BATON_MAX_CONCURRENCY", "6"),
                ("BATON_WORKSPACE_ROOTS", "/srv/a,/srv/b"),
            ]),
            &[("max_concurrency".into(), "9".into())],
        )
        .unwrap();
        assert_eq!(c.max_concurrency, 9);
        assert_eq!(c.log, "debug");
        assert_eq!(
            c.workspace_roots,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
    }

    #[test]
    fn database_urls_are_checked_and_never_shown_with_their_password() {
        assert_eq!(
            redact_url("postgres://baton:s3cret@db.internal:5432/baton?sslmode=disable"),
            "postgres://baton:***@db.internal:5432/baton?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://db/baton?user=b&password=s3cret&x=1"),
            "postgres://db/baton?user=b&password=***&x=1"
        );
        assert!(!url_has_password("postgres://baton@db/baton"));
        let err = Config::load(
            None,
            &[],
            &[("database_url".into(), "mysql://u:pw@h/db".into())],
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("postgres://") && !msg.contains("pw"), "{msg}");
        let err =
            Config::load(None, &[], &[("workspace_dir".into(), "scratch".into())]).unwrap_err();
        assert!(
            format!("{err:#}").contains("workspace_dir must be an absolute path"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[("role".into(), "worker".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("shared"), "{err:#}");
        let err = Config::load(None, &[], &[("role".into(), "boss".into())]).unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid configuration"),
            "{err:#}"
        );
        let c = Config::load(
            None,
            &env(&[("BATON_DATABASE_URL", "postgres://b@h/db")]),
            &[("role".into(), "api".into())],
        )
        .unwrap();
        assert_eq!(
            (c.role, c.database_url.as_str()),
            (Role::Api, "postgres://b@h/db")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "max_concurency = 2\n").unwrap();
        let err = Config::load(Some(&file), &[], &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown key \"max_concurency\""),
            "{err:#}"
        );
        let err = Config::load(None, &env(&[("BATON_FROBNICATE", "1")]), &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown configuration key"),
            "{err:#}"
        );
        let err = Config::load(None, &[], &[("listen".into(), "0.0.0.0:7847".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("loopback"), "{err:#}");
        let err =
            Config::load(None, &[], &[("max_concurrency".into(), "many".into())]).unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid configuration"),
            "{err:#}"
        );
    }
}
