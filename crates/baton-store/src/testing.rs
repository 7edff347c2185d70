//! Test support: a PostgreSQL to test against, and a fresh schema per test.
//!
//! The server comes from `BATON_TEST_DATABASE_URL`; else this process starts a private
//! throwaway cluster with the installed server binaries (`initdb` in a temporary
//! directory, a Unix socket only, killed with the process); else there is none, and
//! [`postgres`] says why, so a test can skip loudly (or fail under `BATON_REQUIRE_ALL=1`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable that names a PostgreSQL server for the tests.
pub const URL_VAR: &str = "BATON_TEST_DATABASE_URL";

/// A schema of its own in the test server, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    /// A URL whose connections use the schema (through `search_path`).
    pub url: String,
    base: String,
    schema: String,
}

/// A fresh, empty schema in the test server, or why there is no test server.
pub async fn postgres() -> Result<TestDatabase, String> {
    let base = base_url()?;
    let schema = format!(
        "baton_t_{}_{:08x}",
        std::process::id(),
        rand_u32() ^ (Instant::now().elapsed().subsec_nanos())
    );
    let mut conn = connect(&base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("creating a test schema: {e}"))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(TestDatabase {
        url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
        base,
        schema,
    })
}

/// A fresh schema, or `None` after printing why the test is skipped. Under
/// `BATON_REQUIRE_ALL=1` there is no skipping: a missing server fails the test.
pub async fn postgres_or_skip(test: &str) -> Option<TestDatabase> {
    match postgres().await {
        Ok(db) => Some(db),
        Err(why) => {
            assert!(
                std::env::var("BATON_REQUIRE_ALL").as_deref() != Ok("1"),
                "BATON_REQUIRE_ALL=1 but {test} has no PostgreSQL: {why}"
            );
            eprintln!("SKIPPED {test} on PostgreSQL: {why} (set {URL_VAR})");
            None
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        // Drop may run inside a runtime, which cannot be blocked on: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = connect(&base).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

async fn connect(url: &str) -> Result<sqlx::PgConnection, String> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("connecting to the test PostgreSQL: {e}"))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

/// The server's URL: from the environment, or a private cluster started once per process.
pub fn base_url() -> Result<String, String> {
    if let Ok(url) = std::env::var(URL_VAR)
        && !url.is_empty()
    {
        return Ok(url);
    }
    static PRIVATE: OnceLock<Result<String, String>> = OnceLock::new();
    PRIVATE.get_or_init(start_private_cluster).clone()
}

/// The directory holding `initdb` and `postgres`, if a server is installed.
fn server_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut candidates: Vec<PathBuf> = from_pg_config.into_iter().collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// `(uid, gid)` of the `postgres` user: the server refuses to run as root.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&"postgres"))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn start_private_cluster() -> Result<String, String> {
    let bindir = server_bindir().ok_or(format!(
        "{URL_VAR} is not set and no PostgreSQL server binaries (initdb, postgres) are installed"
    ))?;
    remove_dead_clusters();
    let root = std::env::temp_dir().join(format!("baton-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let as_root = unsafe { libc::geteuid() } == 0;
    let user = if as_root {
        let (uid, gid) = postgres_user()
            .ok_or("running as root and there is no postgres user to run the server as")?;
        chown(&root, uid, gid)?;
        Some((uid, gid))
    } else {
        None
    };
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .args([
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "-A",
            "trust",
        ])
        .args(["-E", "UTF8", "--no-sync", "--no-instructions"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut initdb, user, false);
    let out = initdb
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let socket_dir = root.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // The server is started from a thread that lives as long as the process, because the
    // parent-death signal follows the thread that forked it.
    let postgres = bindir.join("postgres");
    std::thread::spawn(move || {
        let mut cmd = Command::new(postgres);
        cmd.args([
            "-D",
            &data.to_string_lossy(),
            "-k",
            &socket_dir.to_string_lossy(),
        ])
        .args(["-c", "listen_addresses=", "-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        as_user(&mut cmd, user, true);
        let child = cmd.spawn();
        let ok = child.is_ok();
        let _ = tx.send(child.map(|_| ()).map_err(|e| e.to_string()));
        if ok {
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting postgres: {e}"))?;
    let socket = root.join(".s.PGSQL.5432");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err("the private PostgreSQL did not open its socket within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "note: {URL_VAR} is not set; started a private PostgreSQL in {}",
        root.display()
    );
    Ok(format!(
        "postgres://postgres@localhost/postgres?host={}",
        root.display()
    ))
}

/// Clusters of test processes that have exited (their server died with them).
fn remove_dead_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("baton-pg-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// Runs `cmd` as `user` when given, and, for the server, dies with this process (the
/// parent-death signal is set after the change of user, which would clear it).
fn as_user(cmd: &mut Command, user: Option<(u32, u32)>, die_with_parent: bool) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
