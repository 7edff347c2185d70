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

fn credentials_check(config: &Config) -> Check {
    let vars = [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
    ];
    let set: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| {
            std::env::var_os(v).is_some_and(|x| !x.is_empty()) || config.runner.env.contains_key(*v)
        })
        .collect();
    let bedrock = ["CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !set.is_empty() {
        Check {
            name: "credentials",
            ok: true,
            detail: format!("{} set (value not shown)", set.join(", ")),
        }
    } else if bedrock {
        Check {
            name: "credentials",
            ok: true,
            detail: "a cloud provider is configured".into(),
        }
    } else {
        Check {
            name: "credentials",
            ok: false,
            detail: "none of ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN, CLAUDE_CODE_OAUTH_TOKEN is set; each job runs with a fresh HOME, so a login stored in ~/.claude is not seen".into(),
        }
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

fn endpoint(config: &Config) -> String {
    config
        .runner
        .env
        .get("ANTHROPIC_BASE_URL")
        .cloned()
        .or_else(|| std::env::var("ANTHROPIC_BASE_URL").ok())
        .unwrap_or_else(|| "https://api.anthropic.com".into())
}

/// One prompt through the runner, exactly as a job runs, and a diagnosis of the answer.
async fn round_trip_check(config: &Config) -> Check {
    let name = "round trip";
    let mut runner = crate::app::runner_config(config, "doctor");
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
        credential_env: Vec::new(),
    };
    let report = baton_runner::run(
        &runner,
        attempt,
        tx,
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    drain.abort();
    let endpoint = endpoint(config);
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
                "no credentials reached the CLI: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in Baton's environment or its `env` setting ({message})"
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
    if cli_ok {
        checks.push(round_trip_check(config).await);
    }

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
