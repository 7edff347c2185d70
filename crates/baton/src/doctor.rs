//! `baton doctor`: says exactly what stands between this machine and a working Baton:
//! the CLI binary and its version, credentials, the data directory, the database, and one
//! real round trip through the same runner jobs use, against the configured endpoint.

use std::time::Duration;

use baton_core::{ErrorKind, JobRequest, Limits};

use crate::config::Config;

use baton_runner::version::{MIN_CLI_VERSION, parse_version};

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

async fn cli_check(config: &Config) -> Check {
    use baton_runner::version::{VersionError, cli_version};
    let bin = config.resolve_claude_bin();
    let (ok, detail) = match cli_version(&bin, Duration::from_secs(20)).await {
        Err(VersionError::NotRunnable { bin, source }) => (
            false,
            format!(
                "{bin} cannot be run ({source}); install the CLI (npm install @anthropic-ai/claude-code) or set claude_bin / CLAUDE_BIN"
            ),
        ),
        Err(other) => (false, other.to_string()),
        Ok(text) => match parse_version(&text) {
            Some(v) if v >= MIN_CLI_VERSION => (true, format!("{text} ({})", bin.display())),
            Some((a, b, c)) => (
                false,
                format!(
                    "{} is version {a}.{b}.{c}, older than the {}.{}.{} Baton needs; install a newer @anthropic-ai/claude-code",
                    bin.display(),
                    MIN_CLI_VERSION.0,
                    MIN_CLI_VERSION.1,
                    MIN_CLI_VERSION.2
                ),
            ),
            None => (
                false,
                format!(
                    "{} --version printed {text:?}, not a claude version",
                    bin.display()
                ),
            ),
        },
    };
    Check {
        name: "claude CLI",
        ok,
        detail,
    }
}

/// How a user with a Claude subscription, not an API key, gives Baton a credential.
const SETUP_TOKEN_HINT: &str = "with a Claude subscription rather than an API key, run `claude setup-token` once and \
     put the long-lived token it prints (sk-ant-oat…) in a file named by proxy.credential_file: \
     Baton's proxy sends it as Authorization: Bearer";

fn credentials_check(config: &Config) -> Check {
    let name = "credentials";
    let bedrock = ["CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    match crate::proxy::credential(config) {
        Err(e) => Check {
            name,
            ok: false,
            detail: format!("{e:#}"),
        },
        Ok(Some(c)) => {
            let kind = match c {
                baton_proxy::Credential::ApiKey(_) => "an API key",
                baton_proxy::Credential::Bearer(_) => "an OAuth token",
            };
            let how = if config.proxy.mode == crate::config::ProxyMode::Direct {
                "proxy.mode = \"direct\": each CLI gets it in its environment"
            } else {
                "Baton's proxy injects it into each API call; no CLI holds it"
            };
            Check {
                name,
                ok: true,
                detail: format!("{kind} (value not shown); {how}"),
            }
        }
        Ok(None) if bedrock => Check {
            name,
            ok: true,
            detail: "a cloud provider is configured".into(),
        },
        Ok(None) => Check {
            name,
            ok: false,
            detail: format!(
                "none: set ANTHROPIC_API_KEY in Baton's environment or name a file in proxy.credential_file; \
                 {SETUP_TOKEN_HINT}. Each job runs with a fresh HOME, so a login stored in ~/.claude is not seen"
            ),
        },
    }
}

/// What the CLI's environment would hold: a token of its own and the proxy, never the
/// credential (a `runner.env` or passed-through variable could carry it).
fn cli_environment_check(
    config: &Config,
    secret: &str,
    credential_env: &[(String, String)],
) -> Check {
    let runner = crate::app::runner_config(config, "doctor");
    let env = baton_runner::argv::build_env(
        std::path::Path::new("/home"),
        std::path::Path::new("/tmp"),
        &runner.env_passthrough,
        &runner.env,
        credential_env,
        |k| std::env::var_os(k),
    );
    let holding: Vec<String> = env
        .iter()
        .filter(|(_, v)| v.to_string_lossy().contains(secret))
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    if holding.is_empty() {
        Check {
            name: "cli environment",
            ok: true,
            detail: "each CLI gets a token of its own and the proxy's address; no variable holds the credential".into(),
        }
    } else {
        Check {
            name: "cli environment",
            ok: false,
            detail: format!(
                "{} would hold the credential (from runner.env or runner.env_passthrough); remove it",
                holding.join(", ")
            ),
        }
    }
}

/// Whether bubblewrap starts a sandbox as `runner.sandbox = "bwrap"` makes them.
fn sandbox_check(sandbox: &baton_runner::sandbox::SandboxConfig) -> Check {
    match baton_runner::sandbox::probe(sandbox) {
        Ok(()) => Check {
            name: "sandbox",
            ok: true,
            detail: format!(
                "{} starts a sandbox (uid {}, no network but the proxy)",
                sandbox.bwrap.display(),
                sandbox.uid
            ),
        },
        Err(detail) => Check {
            name: "sandbox",
            ok: false,
            detail,
        },
    }
}

fn data_dir_check(config: &Config) -> Check {
    let dir = &config.server.data_dir;
    let probe = dir.join(".doctor-probe");
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check {
            name: "data directory",
            ok: true,
            detail: format!("{} is writable", dir.display()),
        },
        Err(e) => Check {
            name: "data directory",
            ok: false,
            detail: format!(
                "{} is not writable: {e}; set data_dir or --data-dir",
                dir.display()
            ),
        },
    }
}

async fn database_check(config: &Config) -> Check {
    match crate::app::open_store(config).await {
        Ok(store) => match store.ping().await {
            Ok(()) => Check {
                name: "database",
                ok: true,
                detail: if config.store.database_url.is_empty() {
                    format!(
                        "{} opens and answers",
                        config.server.data_dir.join("baton.db").display()
                    )
                } else {
                    format!(
                        "PostgreSQL at {} answers",
                        crate::config::redact_url(&config.store.database_url)
                    )
                },
            },
            Err(e) => Check {
                name: "database",
                ok: false,
                detail: e.to_string(),
            },
        },
        Err(e) => Check {
            name: "database",
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}

/// One prompt through the runner, exactly as a job runs (through the proxy and in the
/// sandbox when those are on), and a diagnosis of the answer.
async fn round_trip_check(
    config: &Config,
    sandbox: Option<baton_runner::sandbox::SandboxConfig>,
    credential_env: Vec<(String, String)>,
    endpoint: String,
) -> Check {
    let name = "round trip";
    let mut runner = crate::app::runner_config(config, "doctor");
    runner.sandbox = sandbox;
    runner.attempts_dir = config.server.data_dir.join("doctor");
    runner.silence_timeout = Duration::from_secs(60);
    let mut request = JobRequest::prompt("Reply with the single word: ok");
    request.max_turns = Some(1);
    request.tools = Some(Vec::new());
    request.timeout_ms = Some(90_000);
    let spec = match request.parse(&Limits::default()) {
        Ok(spec) => spec,
        Err(e) => {
            return Check {
                name,
                ok: false,
                detail: e.to_string(),
            };
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let started = std::time::Instant::now();
    let attempt = baton_runner::Attempt {
        name: format!("doctor-{}", std::process::id()),
        step: &spec.step(),
        restore: None,
        credential_env,
    };
    let report = baton_runner::run(
        &runner,
        attempt,
        tx,
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    drain.abort();
    let message = report.error.as_ref().map(|(_, m)| m.as_str()).unwrap_or("");
    let detail = match &report.error {
        None => {
            let outcome = report.outcome.clone().unwrap_or_default();
            return Check {
                name,
                ok: true,
                detail: format!(
                    "{endpoint} answered {:?} in {} ms (model {}, ${})",
                    outcome["result"].as_str().unwrap_or(""),
                    started.elapsed().as_millis(),
                    outcome["model"].as_str().unwrap_or("?"),
                    outcome["total_cost_usd"]
                ),
            };
        }
        Some((ErrorKind::CliNotFound, _)) => format!("the CLI binary is missing: {message}"),
        Some((ErrorKind::AuthenticationError, _)) if message.starts_with("Not logged in") => {
            format!(
                "no credentials reached the CLI: set ANTHROPIC_API_KEY in Baton's environment or name a file in proxy.credential_file; {SETUP_TOKEN_HINT} ({message})"
            )
        }
        Some((ErrorKind::AuthenticationError, _)) => {
            format!(
                "{endpoint} refused the credentials: the key is wrong, revoked or lacks access ({message})"
            )
        }
        Some((ErrorKind::ApiError, _))
            if [
                "Unable to connect",
                "ConnectionRefused",
                // 2.1.3xx: "API Error: Connection refused — … (ECONNREFUSED)".
                "Connection refused",
                "ECONNREFUSED",
                "timed out",
                "ENOTFOUND",
                // Through Baton's proxy, which answers 502 for an API it cannot reach.
                "the API could not be reached",
                "the API did not answer in time",
            ]
            .iter()
            .any(|m| message.contains(m)) =>
        {
            format!("{endpoint} is unreachable from this machine ({message})")
        }
        Some((kind, _)) => format!("{kind}: {message}"),
    };
    Check {
        name,
        ok: false,
        detail,
    }
}

/// Prints one line per check; returns whether all passed. The round trip runs only when
/// the CLI itself is usable.
pub async fn doctor(config: &Config) -> bool {
    let cli = cli_check(config).await;
    let cli_ok = cli.ok;
    let mut checks = vec![
        cli,
        credentials_check(config),
        data_dir_check(config),
        database_check(config).await,
    ];
    // The sandbox and the proxy as the server would make them (on a socket of the
    // doctor's own, beside a server that may be running).
    let mode = config.runner.sandbox;
    let mut sandbox =
        crate::app::sandbox_config(config).filter(|_| mode != crate::config::SandboxMode::None);
    if let Some(sb) = &mut sandbox {
        sb.proxy_socket = sb.proxy_socket.with_file_name("doctor-proxy.sock");
        sb.egress_socket = None;
    }
    let socket = sandbox.as_ref().map(|s| s.proxy_socket.clone());
    let proxy = match crate::proxy::start(config, Default::default(), socket).await {
        Ok(p) => p,
        Err(e) => {
            checks.push(Check {
                name: "proxy",
                ok: false,
                detail: format!("{e:#}"),
            });
            None
        }
    };
    let token = proxy.as_ref().map(|p| {
        p.grant(baton_proxy::Grant {
            project: "default".into(),
            job: "doctor".into(),
            attempt: 1,
            key_id: None,
            agent: None,
            routine: None,
            limits: Vec::new(),
        })
    });
    let mut credential_env = Vec::new();
    let mut endpoint = crate::proxy::configured_base_url(config);
    if let (Some(p), Some(t)) = (&proxy, &token) {
        credential_env = vec![
            ("ANTHROPIC_BASE_URL".to_string(), p.base_url()),
            ("ANTHROPIC_API_KEY".to_string(), t.value().to_string()),
        ];
        endpoint = crate::proxy::upstream(config);
        if let Ok(Some(c)) = crate::proxy::credential(config) {
            let secret = match &c {
                baton_proxy::Credential::ApiKey(s) | baton_proxy::Credential::Bearer(s) => s,
            };
            checks.push(cli_environment_check(config, secret, &credential_env));
        }
    }
    if let Some(sb) = &sandbox {
        let mut check = if proxy.is_some() {
            sandbox_check(sb)
        } else {
            Check {
                name: "sandbox",
                ok: false,
                detail: "the sandbox needs Baton's proxy, which needs a credential".into(),
            }
        };
        // `auto` needs the sandbox only once Baton is shared: then its jobs would fail.
        if mode == crate::config::SandboxMode::Auto && !check.ok {
            check.ok = true;
            check.detail = format!(
                "unavailable, and runner.sandbox = \"auto\" needs it once Baton has a second project \
                 or listens beyond loopback (its jobs then fail sandbox_failed): {}",
                check.detail
            );
        }
        checks.push(check);
    }
    if cli_ok {
        checks.push(round_trip_check(config, sandbox, credential_env, endpoint).await);
    }
    drop(token);

    for c in &checks {
        println!(
            "{} {:<15} {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    checks.iter().all(|c| c.ok)
}
