//! A Baton server in process, driven over real HTTP, running `fake-claude`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton::{App, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub fn fake_claude() -> PathBuf {
    fake_claude::built_binary()
}

pub fn baton_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// Whether `tool` runs here (`why` says what needs it): a test without it says why it
/// skips, and fails instead under `BATON_REQUIRE_ALL=1`.
pub fn have(tool: &str, why: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var("BATON_REQUIRE_ALL").as_deref() != Ok("1"),
        "BATON_REQUIRE_ALL=1 but {tool} is not installed"
    );
    eprintln!("NOTICE: skipping: {tool} is not installed ({why})");
    false
}

/// `jq`, which the jq-bot's `verify` script runs.
pub fn have_jq() -> bool {
    have("jq", "the jq-bot's verify script runs it")
}

pub struct Server {
    pub base: String,
    /// The server's store, for injecting storage faults.
    pub store: baton_store::Store,
    pub http: reqwest::Client,
    /// The API's state, to call its background steps (cron, callbacks) directly.
    pub state: baton_api::AppState,
    pub dir: tempfile::TempDir,
    pub roots: tempfile::TempDir,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Settings that keep watchdog scenarios fast; individual tests override more.
pub fn test_flags(dir: &std::path::Path, roots: &std::path::Path) -> Vec<(String, String)> {
    [
        ("server.listen", "127.0.0.1:0".to_string()),
        ("server.data_dir", dir.display().to_string()),
        ("runner.claude_bin", fake_claude().display().to_string()),
        ("runner.silence_timeout_seconds", "2".into()),
        ("runner.result_grace_seconds", "1".into()),
        ("runner.kill_grace_seconds", "1".into()),
        ("runner.lease_seconds", "6".into()),
        ("runner.poll_interval_ms", "200".into()),
        ("server.drain_timeout_seconds", "2".into()),
        (
            "limits.workspace_roots",
            format!("[\"{}\"]", roots.display()),
        ),
        ("server.log", "warn".into()),
        // Tests of the sandbox's default (`auto`) say so; the rest run as a single user's
        // Baton does, whatever projects they make.
        ("runner.sandbox", "none".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Server {
    pub async fn start() -> Self {
        Self::with(&[]).await
    }

    pub async fn with(overrides: &[(&str, &str)]) -> Self {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            overrides,
        )
        .await
    }

    /// A server on existing directories: how a test restarts Baton on the same data.
    pub async fn start_in(
        dir: tempfile::TempDir,
        roots: tempfile::TempDir,
        overrides: &[(&str, &str)],
    ) -> Self {
        Self::start_with_clock(dir, roots, overrides, Arc::new(baton_engine::SystemClock)).await
    }

    /// A server whose engine reads the time from `clock` (tests move it by hand).
    pub async fn with_clock(
        overrides: &[(&str, &str)],
        clock: Arc<dyn baton_engine::Clock>,
    ) -> Self {
        Self::start_with_clock(
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            overrides,
            clock,
        )
        .await
    }

    pub async fn start_with_clock(
        dir: tempfile::TempDir,
        roots: tempfile::TempDir,
        overrides: &[(&str, &str)],
        clock: Arc<dyn baton_engine::Clock>,
    ) -> Self {
        let mut flags = test_flags(dir.path(), roots.path());
        for (k, v) in overrides {
            flags.push((k.to_string(), v.to_string()));
        }
        let config = Config::load(None, &[], &flags).expect("test configuration");
        let app = App::build_with_clock(config, clock)
            .await
            .expect("server starts");
        let state = app.state().clone();
        let base = format!("{}://127.0.0.1:{}", app.scheme(), app.port());
        let store = app.engine().store().clone();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
        Self {
            base,
            store,
            http: reqwest::Client::new(),
            state,
            dir,
            roots,
            stop,
            handle,
        }
    }

    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops the server and hands back its data and workspace-root directories.
    pub async fn stop_keeping_data(mut self) -> (tempfile::TempDir, tempfile::TempDir) {
        self.stop.cancel();
        (&mut self.handle).await.unwrap().unwrap();
        let placeholder = || tempfile::tempdir().unwrap();
        (
            std::mem::replace(&mut self.dir, placeholder()),
            std::mem::replace(&mut self.roots, placeholder()),
        )
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request_as(None, method, path, body).await
    }

    /// A request presenting `key` (as a bearer token), or none.
    pub async fn request_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The `baton` command line with `args` against this server (and no client
    /// configuration file), run off the runtime's thread, which serves the requests.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let base = self.base.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(baton_bin())
                .args(&args)
                .args(["--server", &base])
                .env("XDG_CONFIG_HOME", "/nonexistent")
                .env_remove("BATON_API_KEY")
                .output()
                .expect("the baton binary runs")
        })
        .await
        .expect("the command's task")
    }

    /// This server, as the holder of `key`.
    pub fn as_key<'a>(&'a self, key: &'a str) -> Keyed<'a> {
        Keyed {
            server: self,
            key: Some(key),
        }
    }

    /// This server, with no key.
    fn anyone(&self) -> Keyed<'_> {
        Keyed {
            server: self,
            key: None,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.anyone().get(path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.anyone().post(path, body).await
    }

    pub async fn submit(&self, body: Value) -> Value {
        self.anyone().submit(body).await
    }

    pub async fn job(&self, id: &str) -> Value {
        self.anyone().job(id).await
    }

    pub async fn wait_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.anyone().wait_until(id, done).await
    }

    pub async fn wait_terminal(&self, id: &str) -> Value {
        self.anyone().wait_terminal(id).await
    }

    pub async fn run(&self, body: Value) -> Value {
        self.anyone().run(body).await
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, page) = self
            .get(&format!("/v1/jobs/{id}/events?format=json&limit=1000"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn job_count(&self) -> usize {
        let (_, list) = self.get("/v1/jobs?limit=200").await;
        list["data"].as_array().map_or(0, Vec::len)
    }
}

/// Requests made with one API key, or none.
pub struct Keyed<'a> {
    pub server: &'a Server,
    pub key: Option<&'a str>,
}

impl Keyed<'_> {
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.server.request_as(self.key, method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// Submits a job and returns it; fails the test unless it was created.
    pub async fn submit(&self, body: Value) -> Value {
        let (status, job) = self.post("/v1/jobs", body).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        job
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        job
    }

    /// Waits until the job satisfies `done`, up to 60 s.
    pub async fn wait_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never reached the expected state: {job}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_until(id, |j| {
            matches!(
                j["state"].as_str(),
                Some("completed" | "failed" | "cancelled" | "dead")
            )
        })
        .await
    }

    /// Submits and waits for the end.
    pub async fn run(&self, body: Value) -> Value {
        let job = self.submit(body).await;
        self.wait_terminal(job["id"].as_str().unwrap()).await
    }
}

/// Kills a process group when dropped, so a failing test leaves nothing running.
pub struct GroupGuard(pub i64);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Drop for Server {
    /// A test that fails before `stop` still stops the server (its attempts are killed as
    /// the drain ends them).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn survivors(pgid: i64) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i64>().unwrap_or(-1));
        if pgrp == pgid && state != "Z" {
            out.push(pid);
        }
    }
    out
}

/// Asserts that nothing any attempt of `job` started is still alive.
pub fn assert_no_survivors(job: &Value) {
    for a in job["attempts"].as_array().into_iter().flatten() {
        if let Some(pid) = a["pid"].as_i64() {
            let alive = survivors(pid);
            assert!(
                alive.is_empty(),
                "attempt {} left processes {alive:?} alive: {job}",
                a["attempt"]
            );
        }
    }
}

pub fn prompt(p: &str) -> Value {
    json!({"prompt": p, "max_attempts": 1})
}

/// What a receiver got: the headers and the body of each POST.
pub type Received = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// An HTTP receiver on loopback `port` (0: any) that keeps every POST to `path` in `got`.
pub async fn receiver(port: u16, path: &str, got: Received) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push((headers, body));
                "thanks"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

/// Writes a secret (a credential file) that only its owner may read, as Baton asks of
/// one when it runs CLIs as another user.
pub fn secret_file(path: &std::path::Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
}
