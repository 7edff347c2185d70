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

/// A database's schema as both dialects can state it: per table its columns (name,
/// normalised type, nullability, default), primary key and foreign keys, and every
/// index's definition, normalised (no schema names, casts, `USING btree` or brackets).
/// Dialect mechanisms that are not schema (SQLite's triggers, `WITHOUT ROWID`) are not
/// part of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    pub tables: std::collections::BTreeMap<String, Table>,
    pub indexes: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// `name type [not null] [default …]`, in column order.
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// `column -> table.column on delete …`, sorted.
    pub foreign_keys: Vec<String>,
}

/// Reads the schema of `store`'s database back.
pub async fn schema(store: &crate::Store) -> crate::Result<Schema> {
    use crate::db::{Db, sql};
    let db = &store.db;
    let mut schema = Schema::default();
    let (tables, indexes) = match db {
        Db::Sqlite { .. } => (
            sql("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"),
            sql(
                "SELECT name, sql AS def FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
            ),
        ),
        Db::Postgres(_) => (
            sql(
                "SELECT table_name::text AS name FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            ),
            sql(
                "SELECT indexname::text AS name, indexdef AS def FROM pg_indexes \
                 WHERE schemaname = current_schema() AND indexname NOT LIKE '%\\_pkey'",
            ),
        ),
    };
    for row in db.all(tables).await? {
        let name = row.text("name");
        let table = match db {
            Db::Sqlite { .. } => sqlite_table(db, &name).await?,
            Db::Postgres(_) => postgres_table(db, &name).await?,
        };
        schema.tables.insert(name, table);
    }
    for row in db.all(indexes).await? {
        schema
            .indexes
            .insert(row.text("name"), normalise_index(&row.text("def")));
    }
    Ok(schema)
}

async fn sqlite_table(db: &crate::db::Db, name: &str) -> crate::Result<Table> {
    use crate::db::sql;
    let mut table = Table::default();
    let mut pk = Vec::new();
    let columns = sql(
        "SELECT name, type, \"notnull\" AS nn, dflt_value AS dflt, pk \
                       FROM pragma_table_info(?) ORDER BY cid",
    )
    .bind(name);
    for c in db.all(columns).await? {
        let key = c.int("pk");
        if key > 0 {
            pk.push((key, c.text("name")));
        }
        // A primary key column is never null in Baton's tables, whatever SQLite allows.
        table.columns.push(column(
            &c.text("name"),
            &c.text("type"),
            c.int("nn") != 0 || key > 0,
            c.opt_text("dflt"),
        ));
    }
    pk.sort();
    table.primary_key = pk.into_iter().map(|(_, n)| n).collect();
    let fks = sql(
        "SELECT \"from\" AS col, \"table\" AS ref, \"to\" AS refcol, on_delete \
                   FROM pragma_foreign_key_list(?)",
    )
    .bind(name);
    table.foreign_keys = foreign_keys(db, fks).await?;
    Ok(table)
}

async fn postgres_table(db: &crate::db::Db, name: &str) -> crate::Result<Table> {
    use crate::db::sql;
    let mut table = Table::default();
    let columns = sql(
        "SELECT column_name::text AS name, data_type::text AS type, \
                       is_nullable::text AS nullable, column_default::text AS dflt \
                       FROM information_schema.columns \
                       WHERE table_schema = current_schema() AND table_name = ? \
                       ORDER BY ordinal_position",
    )
    .bind(name);
    for c in db.all(columns).await? {
        table.columns.push(column(
            &c.text("name"),
            &c.text("type"),
            c.text("nullable") == "NO",
            c.opt_text("dflt"),
        ));
    }
    let pk = sql("SELECT kcu.column_name::text AS name FROM information_schema.table_constraints tc \
                  JOIN information_schema.key_column_usage kcu \
                  ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema \
                  WHERE tc.table_schema = current_schema() AND tc.table_name = ? \
                  AND tc.constraint_type = 'PRIMARY KEY' ORDER BY kcu.ordinal_position")
    .bind(name);
    table.primary_key = db.all(pk).await?.iter().map(|r| r.text("name")).collect();
    let fks = sql("SELECT kcu.column_name::text AS col, ccu.table_name::text AS ref, \
                   ccu.column_name::text AS refcol, rc.delete_rule::text AS on_delete \
                   FROM information_schema.referential_constraints rc \
                   JOIN information_schema.key_column_usage kcu \
                   ON rc.constraint_name = kcu.constraint_name AND kcu.table_schema = rc.constraint_schema \
                   JOIN information_schema.constraint_column_usage ccu \
                   ON rc.unique_constraint_name = ccu.constraint_name \
                   AND ccu.table_schema = rc.unique_constraint_schema \
                   WHERE kcu.table_schema = current_schema() AND kcu.table_name = ?")
    .bind(name);
    table.foreign_keys = foreign_keys(db, fks).await?;
    Ok(table)
}

fn column(name: &str, ty: &str, not_null: bool, default: Option<String>) -> String {
    let ty = match ty.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int" | "int8" => "int".to_string(),
        "blob" | "bytea" => "bytes".to_string(),
        other => other.to_string(),
    };
    let mut out = format!("{name} {ty}");
    if not_null {
        out.push_str(" not null");
    }
    if let Some(d) = default {
        let d = d.split("::").next().unwrap_or_default().trim_matches('\'');
        out.push_str(&format!(" default {d}"));
    }
    out
}

/// `column -> table.column on delete …` of each row of `query` (`col`, `ref`, `refcol`,
/// `on_delete`), sorted.
async fn foreign_keys(db: &crate::db::Db, query: crate::db::Stmt) -> crate::Result<Vec<String>> {
    let mut out: Vec<String> = db
        .all(query)
        .await?
        .iter()
        .map(|f| {
            format!(
                "{} -> {}.{} on delete {}",
                f.text("col"),
                f.text("ref"),
                f.text("refcol"),
                f.text("on_delete").to_ascii_lowercase()
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `CREATE INDEX …` as both dialects would agree to write it.
fn normalise_index(def: &str) -> String {
    let mut s = def.to_ascii_lowercase();
    for noise in ["using btree ", "::text", "::bigint", "(", ")"] {
        s = s.replace(noise, " ");
    }
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut s = words.join(" ").replace(" ,", ",");
    // PostgreSQL names the schema: `on baton_t_….jobs`.
    if let Some(at) = s.find(" on ")
        && let Some(dot) = s[at + 4..].find('.')
        && !s[at + 4..at + 4 + dot].contains(' ')
    {
        s.replace_range(at + 4..at + 4 + dot + 1, "");
    }
    s
}
