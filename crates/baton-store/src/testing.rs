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
    schema_in(&base_url()?).await
}

/// A fresh, empty schema in the server at `base`.
pub async fn schema_in(base: &str) -> Result<TestDatabase, String> {
    let base = base.to_string();
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
    let cluster = PrivateCluster::start()?;
    eprintln!(
        "note: {URL_VAR} is not set; started a private PostgreSQL in {}",
        cluster.root.display()
    );
    let url = cluster.url();
    // It lives as long as this process, and dies with it.
    std::mem::forget(cluster);
    Ok(url)
}

/// A throwaway PostgreSQL cluster of this process's own: `initdb` in a temporary
/// directory, a Unix socket only, no durability settings (it holds test data), run as the
/// `postgres` user when this process is root. The server dies with this process (a
/// parent-death signal) and can be restarted, as an operator restarting the database would.
pub struct PrivateCluster {
    root: PathBuf,
    control: std::sync::mpsc::Sender<(Control, std::sync::mpsc::Sender<Result<(), String>>)>,
}

enum Control {
    Start,
    Stop,
}

impl PrivateCluster {
    /// Whether PostgreSQL's server binaries are installed here.
    pub fn available() -> bool {
        server_bindir().is_some()
    }

    pub fn start() -> Result<Self, String> {
        let bindir = server_bindir().ok_or(format!(
            "{URL_VAR} is not set and no PostgreSQL server binaries (initdb, postgres) are installed"
        ))?;
        remove_dead_clusters();
        let root = std::env::temp_dir().join(format!(
            "baton-pg-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        let data = root.join("data");
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let user = if unsafe { libc::geteuid() } == 0 {
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
        // The server is started and stopped by a thread that lives as long as the process,
        // because the parent-death signal follows the thread that forked it.
        let (control, commands) =
            std::sync::mpsc::channel::<(Control, std::sync::mpsc::Sender<Result<(), String>>)>();
        let (postgres, socket_dir) = (bindir.join("postgres"), root.clone());
        std::thread::spawn(move || {
            let mut child: Option<std::process::Child> = None;
            for (command, reply) in commands {
                let result = match command {
                    Control::Start => {
                        let mut cmd = Command::new(&postgres);
                        cmd.args([
                            "-D",
                            &data.to_string_lossy(),
                            "-k",
                            &socket_dir.to_string_lossy(),
                        ])
                        .args(["-c", "listen_addresses=", "-c", "fsync=off"])
                        .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                        .args(["-c", "max_connections=300"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                        as_user(&mut cmd, user, true);
                        cmd.spawn()
                            .map(|c| child = Some(c))
                            .map_err(|e| e.to_string())
                    }
                    Control::Stop => {
                        if let Some(mut c) = child.take() {
                            // SIGINT: a fast shutdown, every client connection cut.
                            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
                            let _ = c.wait();
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            // The handle was dropped: stop the server.
            if let Some(mut c) = child.take() {
                unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
                let _ = c.wait();
            }
        });
        let cluster = Self { root, control };
        cluster.command(Control::Start)?;
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// A URL for the `postgres` database, over the cluster's socket.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}",
            self.root.display()
        )
    }

    /// Stops the server (every connection is cut) and starts it again on the same data.
    pub fn restart(&self) -> Result<(), String> {
        self.command(Control::Stop)?;
        self.command(Control::Start)?;
        self.wait_ready()
    }

    fn command(&self, c: Control) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control
            .send((c, tx))
            .map_err(|_| "the cluster's control thread is gone".to_string())?;
        rx.recv()
            .map_err(|_| "the cluster's control thread is gone".to_string())?
            .map_err(|e| format!("postgres: {e}"))
    }

    /// Waits until the server accepts connections.
    fn wait_ready(&self) -> Result<(), String> {
        let socket = self.root.join(".s.PGSQL.5432");
        let pid_file = self.root.join("data").join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        // The pid file's last lines say "ready" once the server accepts connections.
        while !(socket.exists()
            && std::fs::read_to_string(&pid_file).is_ok_and(|s| s.contains("ready")))
        {
            if Instant::now() > deadline {
                return Err("the private PostgreSQL was not ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.command(Control::Stop);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Clusters of test processes that have exited (their server died with them).
fn remove_dead_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("baton-pg-"))
            .and_then(|n| n.split('-').next())
        else {
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
