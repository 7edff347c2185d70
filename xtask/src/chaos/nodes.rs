//! The servers of a chaos run: starting, finding and killing them.

use super::*;

pub(super) struct Server {
    pub(super) child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn start(
    bin: &Path,
    fake: &Path,
    dir: &Path,
    port: u16,
    database_url: Option<&str>,
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    if let Some(url) = database_url {
        // Through the environment: a URL does not belong in argv.
        cmd.env("BATON_STORE_DATABASE_URL", url).env(
            "BATON_RUNNER_LEASE_SECONDS",
            (NODE_LEASE_MS / 1000).to_string(),
        );
    }
    let child = cmd
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .arg("--claude-bin")
        .arg(fake)
        .args(["--max-concurrency", "8"])
        .args([
            "--set",
            "server.log=error",
            "--set",
            "server.drain_timeout_seconds=1",
            "--set",
            "runner.poll_interval_ms=100",
            "--set",
            "limits.min_cron_interval_seconds=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its errors (server.log = error) are kept, to say why a server did not come back.
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))?,
        )
        .spawn()?;
    Ok(Server { child })
}

/// The last lines the servers on `dir` logged.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub(super) async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = http.get(format!("{base}/v1/health")).send().await
            && let Ok(h) = resp.json::<Value>().await
        {
            return Ok(h);
        }
        if Instant::now() > deadline {
            bail!("the server did not come back");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Live processes whose working directory is inside `dir`.
pub(super) fn processes_in(dir: &Path) -> Vec<i32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let alive =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                            s.rsplit_once(") ")
                                .is_some_and(|(_, r)| !r.starts_with('Z'))
                        });
                    alive
                        && std::fs::read_link(format!("/proc/{pid}/cwd"))
                            .is_ok_and(|c| c.starts_with(&dir))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn binaries(release: bool, prebuilt: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let profile = if release { "release" } else { "debug" };
    let dir = root().join("target").join(profile);
    let (bin, fake) = (dir.join("baton"), dir.join("fake-claude"));
    if prebuilt && !(bin.exists() && fake.exists()) {
        bail!("--prebuilt: no {} and {}", bin.display(), fake.display());
    }
    if !prebuilt {
        let mut build = cargo();
        build.args(["build", "-p", "baton", "-p", "fake-claude"]);
        if release {
            build.arg("--release");
        }
        run(build)?;
    }
    Ok((bin, fake))
}

/// The nodes under test: their directories, ports, processes and current incarnations.
pub(super) struct Nodes<'a> {
    pub(super) bin: &'a Path,
    pub(super) fake: &'a Path,
    pub(super) database_url: Option<String>,
    pub(super) dirs: Vec<tempfile::TempDir>,
    pub(super) ports: Vec<u16>,
    pub(super) servers: Vec<Option<Server>>,
    pub(super) incarnations: Vec<String>,
}

impl Nodes<'_> {
    pub(super) fn base(&self, k: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[k])
    }

    /// Starts node `k` and waits until it answers; returns how long that took.
    pub(super) async fn start(&mut self, http: &reqwest::Client, k: usize) -> anyhow::Result<u128> {
        let t = Instant::now();
        let server = start(
            self.bin,
            self.fake,
            self.dirs[k].path(),
            self.ports[k],
            self.database_url.as_deref(),
        )?;
        self.servers[k] = Some(server);
        let health = match wait_ready(http, &self.base(k)).await {
            Ok(h) => h,
            Err(e) => {
                let exit = self.servers[k]
                    .as_mut()
                    .and_then(|s| s.child.try_wait().ok().flatten());
                bail!(
                    "{e} (node {k}; its process: {}); its log ends:\n{}",
                    exit.map_or("still running".to_string(), |s| format!("exited, {s}")),
                    log_tail(self.dirs[k].path())
                );
            }
        };
        self.incarnations[k] = health["incarnation"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(t.elapsed().as_millis())
    }

    pub(super) fn kill(&mut self, k: usize) -> anyhow::Result<()> {
        if let Some(mut server) = self.servers[k].take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(server.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            let _ = server.child.wait();
        }
        Ok(())
    }
}
