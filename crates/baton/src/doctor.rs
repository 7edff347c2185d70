//! `baton doctor`: says exactly what stands between this machine and a working Baton.

use std::time::Duration;

use crate::config::Config;

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

async fn cli_check(config: &Config) -> Check {
    let bin = config.resolve_claude_bin();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("--version")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let (ok, detail) = match tokio::time::timeout(Duration::from_secs(20), cmd.output()).await {
        Err(_) => (
            false,
            format!("{} --version did not answer in 20 s", bin.display()),
        ),
        Ok(Err(e)) => (
            false,
            format!(
                "{} cannot be run ({e}); install the CLI (npm install @anthropic-ai/claude-code) or set claude_bin / CLAUDE_BIN",
                bin.display()
            ),
        ),
        Ok(Ok(out)) if out.status.success() => (
            true,
            format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stdout).trim(),
                bin.display()
            ),
        ),
        Ok(Ok(out)) => (
            false,
            format!(
                "{} --version exited {}: {}",
                bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
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
            std::env::var_os(v).is_some_and(|x| !x.is_empty()) || config.env.contains_key(*v)
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
    let dir = &config.data_dir;
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
                detail: format!(
                    "{} opens and answers",
                    config.data_dir.join("baton.db").display()
                ),
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

/// Prints one line per check; returns whether all passed.
pub async fn doctor(config: &Config) -> bool {
    let checks = vec![
        cli_check(config).await,
        credentials_check(config),
        data_dir_check(config),
        database_check(config).await,
    ];
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
