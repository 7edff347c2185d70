//! `cargo xtask …`: everything that is not plain cargo.
//!
//! - `ci`: formatting, lints and the whole test suite, as CI runs them.
//! - `bench`: the benchmarks behind `docs/benchmarks.md`.
//! - `chaos`: SIGKILLs a loaded server at random and checks its invariants.
//! - `install-claude`: the pinned `claude` CLI (tools/claude) from the npm registry into
//!   `.build/claude`, where the real-CLI tests find it.

mod bench;
mod chaos;
mod history;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ci() -> anyhow::Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // One test invocation for the whole workspace: dev-dependencies change feature
    // unification, so running two would build the world twice.
    let mut test = cargo();
    if has_nextest() {
        test.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        test.args(["test", "--workspace", "--no-fail-fast"]);
    }
    // One PostgreSQL for the whole run, unless one is named: each PostgreSQL test takes a
    // fresh schema in it (a test run on its own starts a private cluster of its own).
    let cluster = postgres_for_tests()?;
    if let Some(c) = &cluster {
        test.env(baton_store::testing::URL_VAR, c.url());
    }
    run(test)?;
    drop(cluster);
    // The real-CLI suite once more, every CLI in the sandbox (through the proxy's socket),
    // on the binaries just built.
    let mut sandboxed = cargo();
    if has_nextest() {
        sandboxed.args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "-E",
            "test(/^real_cli::/)",
        ]);
    } else {
        sandboxed.args(["test", "--workspace", "--no-fail-fast", "--", "real_cli::"]);
    }
    sandboxed.env("BATON_TEST_REAL_CLI_VIA", "sandbox");
    run(sandboxed)?;
    // Short chaos runs on the binaries the tests just built: one node on SQLite, then
    // three on PostgreSQL (which is also restarted once).
    // Both runs start with long-lived first incarnations: a restart must not grow with
    // everything the node ran.
    chaos::main(&[
        "--prebuilt".to_string(),
        "--kills".to_string(),
        "20".to_string(),
        "--history".to_string(),
        "2000".to_string(),
    ])?;
    if baton_store::testing::PrivateCluster::available() {
        chaos::main(&[
            "--prebuilt".to_string(),
            "--postgres".to_string(),
            "--nodes".to_string(),
            "3".to_string(),
            "--kills".to_string(),
            "10".to_string(),
            "--history".to_string(),
            "2000".to_string(),
        ])
    } else {
        require_all("no PostgreSQL server binaries for the multi-node chaos run")
    }
}

fn require_all(why: &str) -> anyhow::Result<()> {
    if std::env::var("BATON_REQUIRE_ALL").as_deref() == Ok("1") {
        bail!("BATON_REQUIRE_ALL=1: {why}");
    }
    eprintln!("xtask: SKIPPED: {why}");
    Ok(())
}

/// A private PostgreSQL for the test run, when none is named and one can be started.
fn postgres_for_tests() -> anyhow::Result<Option<baton_store::testing::PrivateCluster>> {
    if std::env::var_os(baton_store::testing::URL_VAR).is_some_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    match baton_store::testing::PrivateCluster::start() {
        Ok(c) => {
            eprintln!(
                "xtask: the PostgreSQL tests use a private cluster at {}",
                c.url()
            );
            Ok(Some(c))
        }
        Err(e) => {
            require_all(&format!("no PostgreSQL for the tests: {e}"))?;
            Ok(None)
        }
    }
}

/// Installs exactly the CLI version `tools/claude/package-lock.json` pins, with `npm ci`
/// (integrity-checked, nothing global, nothing fetched outside the registry). With
/// `--version V`, that version instead (`npm install`, no lockfile), to check another
/// release with the real-CLI suite; `cargo xtask install-claude` alone puts the pin back.
/// The pinned Python tools (`tools/python/requirements.txt`) in `.build/venv`.
fn install_python() -> anyhow::Result<()> {
    let venv = root().join(".build/venv");
    let requirements = root().join("tools/python/requirements.txt");
    let python = venv.join("bin/python");
    if !python.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv (is python3-venv installed?)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install -r {} failed", requirements.display());
    }
    eprintln!("xtask: Python tools installed in {}", venv.display());
    Ok(())
}

fn install_claude(args: &[String]) -> anyhow::Result<()> {
    let dest = root().join(".build/claude");
    std::fs::create_dir_all(&dest)?;
    match args {
        [] => {}
        [flag, version] if flag == "--version" => return install_claude_version(&dest, version),
        _ => bail!("usage: cargo xtask install-claude [--version V]"),
    }
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(root().join("tools/claude").join(f), dest.join(f))
            .with_context(|| format!("copying tools/claude/{f}"))?;
    }
    let bin = dest.join("node_modules/.bin/claude");
    let wanted = {
        let lock: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dest.join("package-lock.json"))?)?;
        lock["packages"]["node_modules/@anthropic-ai/claude-code"]["version"]
            .as_str()
            .context("the lockfile pins no @anthropic-ai/claude-code version")?
            .to_string()
    };
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if installed.as_deref().is_some_and(|v| v.starts_with(&wanted)) {
        eprintln!(
            "xtask: claude {wanted} already installed at {}",
            bin.display()
        );
        return Ok(());
    }
    let mut npm = Command::new("npm");
    npm.current_dir(&dest)
        .args(["ci", "--no-audit", "--no-fund"]);
    run(npm).context(
        "npm is required to install the pinned claude CLI (Node.js 22+ for the pinned release)",
    )?;
    let out = Command::new(&bin).arg("--version").output()?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.starts_with(&wanted) {
        bail!("installed claude reports {version:?}, expected {wanted}");
    }
    eprintln!("xtask: installed claude {}", version.trim());
    Ok(())
}

/// `@anthropic-ai/claude-code@version` into `dest`, replacing what is there.
fn install_claude_version(dest: &std::path::Path, version: &str) -> anyhow::Result<()> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
    {
        bail!("--version needs a version such as 2.1.332, not {version:?}");
    }
    for f in ["package.json", "package-lock.json"] {
        let _ = std::fs::remove_file(dest.join(f));
    }
    std::fs::write(
        dest.join("package.json"),
        r#"{"name": "baton-claude-cli", "private": true}"#,
    )?;
    let mut npm = Command::new("npm");
    npm.current_dir(dest).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--no-save",
        &format!("@anthropic-ai/claude-code@{version}"),
    ]);
    run(npm).context(
        "npm is required to install the claude CLI (Node.js 22+ for the pinned release)",
    )?;
    let bin = dest.join("node_modules/.bin/claude");
    let out = Command::new(&bin).arg("--version").output()?;
    let reported = String::from_utf8_lossy(&out.stdout);
    if !reported.starts_with(version) {
        bail!("installed claude reports {reported:?}, expected {version}");
    }
    eprintln!(
        "xtask: installed claude {} (not the pinned version; `cargo xtask install-claude` restores it)",
        reported.trim()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::main(&args[1..]),
        Some("install-claude") => install_claude(&args[1..]),
        Some("install-python") => install_python(),
        Some("chaos") => chaos::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | bench [--quick|--real|--spend|--stream|--scale [--run-history]|--postgres [--database-url URL]|--baton PATH|--workspace-dir DIR] | chaos [--kills N] [--history N] [--release] [--postgres --nodes N] [--prebuilt] | install-claude [--version V] | install-python>"
            );
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tidy {
    //! Repository hygiene, checked like any other behaviour.

    use super::root;

    fn read(path: &str) -> String {
        std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn crates() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root().join("crates"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn architecture_md_maps_every_crate() {
        let arch = read("ARCHITECTURE.md");
        for name in crates() {
            assert!(
                arch.contains(&format!("### `{name}`")),
                "ARCHITECTURE.md has no section for {name}"
            );
        }
    }

    #[test]
    fn every_crate_is_internal_and_inherits_the_workspace() {
        for name in crates() {
            let manifest = read(&format!("crates/{name}/Cargo.toml"));
            assert!(
                manifest.contains("publish.workspace = true"),
                "{name} must not be publishable"
            );
            assert!(
                manifest.contains("version.workspace = true"),
                "{name} must use the workspace version"
            );
        }
    }

    #[test]
    fn no_grab_bag_modules() {
        for name in crates() {
            for bad in ["utils.rs", "common.rs", "helpers.rs", "misc.rs"] {
                let path = root().join(format!("crates/{name}/src/{bad}"));
                assert!(
                    !path.exists(),
                    "{}: name modules for what they do",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn ci_runs_the_readme_test_command() {
        let readme = read("README.md");
        let ci = read(".ci/run");
        assert!(
            readme.contains("cargo xtask ci"),
            "the README must give the test command"
        );
        assert!(
            ci.lines().any(|l| l.trim() == "cargo xtask ci"),
            ".ci/run must call exactly the README's test command"
        );
    }

    /// Every `.rs` file under `dir` (relative to the root), with its path.
    fn sources(dir: &str) -> Vec<(String, String)> {
        fn walk(path: &std::path::Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(path).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let rel = path.strip_prefix(root()).unwrap().display().to_string();
                    out.push((rel, text));
                }
            }
        }
        let mut out = Vec::new();
        walk(&root().join(dir), &mut out);
        out
    }

    /// The lines of `sources` that contain any of `needles`, outside the allowed paths.
    fn offenders(allowed: &[&str], needles: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for dir in ["crates", "xtask/src"] {
            for (path, text) in sources(dir) {
                if allowed.iter().any(|a| path.starts_with(a)) {
                    continue;
                }
                for (n, line) in text.lines().enumerate() {
                    if needles.iter().any(|needle| line.contains(needle)) {
                        found.push(format!("{path}:{}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn sql_statements_are_written_only_in_the_store() {
        // This file names the statements it looks for.
        let found = offenders(
            &["crates/baton-store/", "xtask/src/main.rs"],
            &[
                "\"SELECT ",
                "\"INSERT INTO",
                "\"UPDATE jobs",
                "\"UPDATE attempts",
                "\"DELETE FROM",
                "\"CREATE TABLE",
                "\"CREATE INDEX",
                "sqlx::",
            ],
        );
        assert!(
            found.is_empty(),
            "SQL outside baton-store:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn processes_are_spawned_only_by_the_runner_and_the_test_tools() {
        // The runner spawns the agent processes; the PostgreSQL test support starts its
        // cluster; fake-claude and mock-anthropic are test support; xtask is tooling;
        // tests start servers and sleeps of their own.
        let found = offenders(
            &[
                "crates/baton-runner/src/",
                "crates/baton-store/src/testing.rs",
                "crates/fake-claude/",
                "crates/mock-anthropic/",
                "xtask/",
                "crates/baton/tests/",
                "crates/baton-engine/tests/",
                "crates/baton-store/tests/",
            ],
            &[
                "Command::new(",
                "process::Command",
                "libc::fork",
                "posix_spawn",
            ],
        );
        assert!(
            found.is_empty(),
            "processes spawned outside baton-runner:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn http_status_codes_are_known_only_to_the_api() {
        // The command-line client reads statuses of responses; the mock serves HTTP; the
        // credential proxy serves the Anthropic API (its wire, not Baton's); the MCP server
        // is a client of Baton's API (it reads its statuses).
        let found = offenders(
            &[
                "crates/baton-api/src/",
                "crates/baton-mcp/",
                "crates/baton-proxy/",
                "crates/baton/src/client.rs",
                "crates/mock-anthropic/",
                "crates/baton/tests/",
                "xtask/",
            ],
            &["StatusCode", "axum::http", "TOO_MANY_REQUESTS", "NOT_FOUND"],
        );
        assert!(
            found.is_empty(),
            "HTTP statuses outside baton-api:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn only_the_dialect_modules_of_the_store_name_sqlx() {
        // The aggregates' queries are written once, through `db.rs`; `sqlx` stays behind it.
        let found = offenders(
            &[
                "crates/baton-store/src/db.rs",
                "crates/baton-store/src/sqlite.rs",
                "crates/baton-store/src/postgres.rs",
                "crates/baton-store/src/faults.rs",
                "crates/baton-store/src/testing.rs",
                // This file names what it looks for.
                "xtask/src/main.rs",
            ],
            &["sqlx"],
        );
        assert!(
            found.is_empty(),
            "sqlx named outside the store's dialect modules:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn sql_lives_only_in_the_store() {
        for name in crates() {
            if name == "baton-store" {
                continue;
            }
            let dir = root().join(format!("crates/{name}/Cargo.toml"));
            let manifest = std::fs::read_to_string(dir).unwrap();
            assert!(
                !manifest.contains("sqlx"),
                "{name} depends on sqlx; SQL belongs in baton-store"
            );
        }
    }
}
