//! Wiring: configuration in, a running server out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_api::{ApiConfig, AppState};
use baton_core::Limits;
use baton_engine::{Engine, EngineConfig, SystemClock, WarmPoolConfig};
use baton_runner::RunnerConfig;
use baton_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthMode, Config};

pub struct App {
    listener: TcpListener,
    /// HTTPS, when `server.tls_cert` and `server.tls_key` are set.
    tls: Option<Arc<rustls::ServerConfig>>,
    serves_api: bool,
    /// Held while the server runs: one process per data directory.
    _lock: std::fs::File,
    engine: Engine,
    state: AppState,
    shutdown: CancellationToken,
    drain_timeout: Duration,
    /// The sandbox's egress proxy, when it has an allow-list.
    _egress: Option<baton_proxy::egress::Egress>,
}

/// The stable id of this node, kept in the data directory so that a restarted server
/// recognizes the attempts its previous incarnation left running.
fn node_id(config: &Config) -> anyhow::Result<String> {
    let path = config.server.data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("node-{}", baton_core::JobId::new());
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

fn remove_children(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a stale attempt directory");
        }
    }
}

/// The runner's settings; attempts are made under `<data_dir>/attempts`, or under this
/// node's own directory in `workspace_dir` when one is set.
pub fn runner_config(config: &Config, node_id: &str) -> RunnerConfig {
    let attempts = if config.runner.workspace_dir.as_os_str().is_empty() {
        config.server.data_dir.join("attempts")
    } else {
        config.runner.workspace_dir.join(format!("baton-{node_id}"))
    };
    let mut r = RunnerConfig::new(config.resolve_claude_bin(), attempts);
    r.workspace_roots = config.limits.workspace_roots.clone();
    r.env_passthrough = config.runner.env_passthrough.clone();
    r.env = config
        .runner
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    r.silence_timeout = Duration::from_secs(config.runner.silence_timeout_seconds);
    r.result_grace = Duration::from_secs(config.runner.result_grace_seconds);
    r.kill_grace = Duration::from_secs(config.runner.kill_grace_seconds);
    r.max_line_bytes = config.runner.max_line_bytes;
    r.max_stderr_bytes = config.runner.max_stderr_bytes;
    r.keep_workspaces = config.runner.keep_workspaces;
    r.sandbox = sandbox_config(config);
    r.sandbox_default = config.runner.sandbox == crate::config::SandboxMode::Bwrap;
    r.mcp_catalogue = config.mcp_server.clone();
    r.helper = helper(config);
    // `proxy.mode = "direct"`: the credential Baton took out of its own environment goes
    // to each CLI, as before there was a proxy.
    if config.proxy.mode == crate::config::ProxyMode::Direct
        && let Some((var, value)) = crate::proxy::taken_from_environment()
    {
        r.env.retain(|(k, _)| k != var);
        r.env.push((var.to_string(), value));
    }
    r
}

/// The uids and gids a CLI runs as when Baton runs as root, unsandboxed and sandboxed:
/// `runner.run_as` for both, and when it is not set, bubblewrap as `nobody` (started by
/// root, it would map the sandbox's user to root outside, who may read every root-only
/// file). Their workspaces must be reachable by that user, and Baton's files are closed
/// to it.
#[allow(clippy::type_complexity)]
fn run_as(
    config: &Config,
    runner: &baton_runner::RunnerConfig,
) -> anyhow::Result<(Option<(u32, u32)>, Option<(u32, u32)>)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = nix::unistd::geteuid().is_root();
    let (name, plain) = match config.runner.run_as.as_str() {
        "" => {
            if root {
                tracing::warn!(
                    "Baton runs as root, and so does each CLI outside the sandbox (which then refuses \
                     bypassPermissions); set runner.run_as to an unprivileged user"
                );
            }
            if !(root && runner.sandbox.is_some()) {
                return Ok((None, None));
            }
            ("nobody", false)
        }
        n => (n, true),
    };
    if !root {
        tracing::warn!(user = %name, "runner.run_as is for a Baton running as root; the CLIs run as Baton's own user");
        return Ok((None, None));
    }
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("looking up runner.run_as = {name:?}"))?
        .ok_or_else(|| anyhow::anyhow!("runner.run_as = {name:?}: no such user"))?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    if uid == 0 {
        anyhow::bail!("runner.run_as = {name:?} is root; name an unprivileged user");
    }
    // Each workspace is given to the user; the way to it must let the user through, and
    // no further: the data directory cannot be listed, the database and the credential
    // file not read.
    for dir in [&runner.attempts_dir, &config.server.data_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("opening {} to {name}", dir.display()))?;
    }
    for db in ["baton.db", "baton.db-wal", "baton.db-shm"] {
        let path = config.server.data_dir.join(db);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("closing {} to {name}", path.display()))?;
        }
    }
    for secret in [&config.proxy.credential_file, &config.server.tls_key] {
        if let Ok(meta) = std::fs::metadata(secret)
            && meta.mode() & 0o044 != 0
        {
            anyhow::bail!(
                "runner.run_as = {name:?}: {} may be read by others; chmod 600 it",
                secret.display()
            );
        }
    }
    for dir in resolved(&runner.attempts_dir).ancestors().skip(1) {
        let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        if meta.mode() & 0o001 == 0 && meta.uid() != uid {
            anyhow::bail!(
                "runner.run_as = {name:?}: {name} cannot reach its workspaces through {} (mode {:o}); \
                 let others through it (chmod o+x) or set runner.workspace_dir elsewhere",
                dir.display(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok((plain.then_some((uid, gid)), Some((uid, gid))))
}

/// Absolute, and canonical where it exists (bwrap's paths must be).
fn resolved(p: &std::path::Path) -> std::path::PathBuf {
    p.canonicalize()
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// How a CLI is sandboxed (whichever jobs are: see `runner.sandbox` and the projects'
/// policies): what it hides (Baton's data and workspace directories, the credential file,
/// the TLS key, the configuration file) and the sockets it binds.
pub fn sandbox_config(config: &Config) -> Option<baton_runner::sandbox::SandboxConfig> {
    let data = resolved(&config.server.data_dir);
    let mut hide = vec![data.clone()];
    let file = config.file.clone().unwrap_or_default();
    for p in [
        &config.runner.workspace_dir,
        &config.proxy.credential_file,
        &config.server.tls_key,
        &file,
    ] {
        if !p.as_os_str().is_empty() {
            hide.push(resolved(p));
        }
    }
    let helper = helper(config);
    Some(baton_runner::sandbox::SandboxConfig {
        bwrap: config.runner.bwrap.clone(),
        helper,
        proxy_socket: data.join("proxy.sock"),
        egress_socket: (!config.runner.egress_allow.is_empty()).then(|| data.join("egress.sock")),
        hide,
        uid: config.runner.sandbox_uid,
        gid: config.runner.sandbox_uid,
    })
}

/// Baton's binary, which the sandbox runs as its forwarder and a CLI as its bridge to a
/// catalogue MCP server outside it: `runner.sandbox_helper`, else this very binary.
fn helper(config: &Config) -> std::path::PathBuf {
    if config.runner.sandbox_helper.as_os_str().is_empty() {
        std::env::current_exe().unwrap_or_else(|_| "baton".into())
    } else {
        resolved(&config.runner.sandbox_helper)
    }
}

/// The configured database: PostgreSQL when `database_url` names one, else SQLite in the
/// data directory.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            config.server.data_dir.display()
        )
    })?;
    if !config.store.database_url.is_empty() {
        let shown = crate::config::redact_url(&config.store.database_url);
        return Store::connect_postgres(&config.store.database_url, config.store.max_connections)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {shown}"));
    }
    let db = config.server.data_dir.join("baton.db");
    Store::open(&db)
        .await
        .with_context(|| format!("opening the database {}", db.display()))
}

/// Takes the data directory for this process: two servers on one directory would share a
/// node id and kill each other's attempts as a dead predecessor's.
fn lock_data_dir(config: &Config) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            config.server.data_dir.display()
        )
    })?;
    let path = config.server.data_dir.join("node.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another Baton server uses the data directory {}; give each server its own --data-dir",
            config.server.data_dir.display()
        );
    }
    Ok(file)
}

/// Whether every request needs a key from the start. A listener beyond loopback needs a
/// key to exist already (and then always requires one, even if every key were deleted);
/// until one does, Baton is open to loopback only, and says so.
async fn auth_mode(config: &Config, store: &Store) -> anyhow::Result<bool> {
    let keys = store.any_keys().await.context("looking for API keys")?;
    let loopback = config.server.listen.ip().is_loopback();
    if !loopback && !keys {
        anyhow::bail!(
            "server.listen = {}: no API key exists yet, so Baton binds only a loopback address \
             (127.0.0.1 or ::1); make one first with `baton keys create --admin --name ops`",
            config.server.listen
        );
    }
    let required = config.server.auth == AuthMode::Required || !loopback;
    if keys || required {
        tracing::info!("authentication: every request but GET /v1/health needs an API key");
    } else {
        tracing::warn!(
            "authentication: no API key exists, so every request on loopback is served without one; \
             `baton keys create --admin --name ops` makes the first and turns authentication on"
        );
    }
    Ok(required)
}

impl App {
    /// Opens the store, starts the engine (rescuing what a previous incarnation left
    /// running) and binds the listener. Port 0 picks a free port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with a clock of the caller's (tests drive time by hand).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn baton_engine::Clock>,
    ) -> anyhow::Result<Self> {
        let lock = lock_data_dir(&config)?;
        let tls = if config.tls() {
            Some(crate::tls::server_config(
                &config.server.tls_cert,
                &config.server.tls_key,
            )?)
        } else {
            None
        };
        let store = open_store(&config).await?;
        let auth_required = auth_mode(&config, &store).await?;
        let node_id = node_id(&config)?;
        let mut runner = runner_config(&config, &node_id);
        std::fs::create_dir_all(&runner.attempts_dir)
            .with_context(|| format!("creating {}", runner.attempts_dir.display()))?;
        // The proxy serves the sandbox's socket as well; without the proxy there is no
        // sandbox (nothing inside could reach the API).
        let ledger_engine = Arc::new(std::sync::OnceLock::new());
        let proxy = crate::proxy::start(
            &config,
            ledger_engine.clone(),
            runner.sandbox.as_ref().map(|s| s.proxy_socket.clone()),
        )
        .await?;
        if proxy.is_none() {
            use crate::config::SandboxMode;
            match config.runner.sandbox {
                SandboxMode::Bwrap => anyhow::bail!(
                    "runner.sandbox = \"bwrap\" runs the CLI without network but Baton's proxy, so it needs \
                     the proxy: a credential (ANTHROPIC_API_KEY in Baton's environment, or \
                     proxy.credential_file) and proxy.mode other than \"direct\""
                ),
                SandboxMode::Auto => tracing::warn!(
                    "Baton cannot make a sandbox without its proxy (a credential, and proxy.mode = \"proxy\"): \
                     if it is shared (more than one project, or a listener beyond loopback), its jobs fail \
                     sandbox_failed rather than run bare"
                ),
                SandboxMode::None => {}
            }
            runner.sandbox = None;
        }
        (runner.run_as, runner.sandbox_run_as) = run_as(&config, &runner)?;
        // A job queued before policies says nothing of its sandbox: under `auto` it gets
        // the sandbox when Baton is shared as it starts.
        if config.runner.sandbox == crate::config::SandboxMode::Auto {
            runner.sandbox_default =
                !config.server.listen.ip().is_loopback() || store.list_projects().await?.len() > 1;
        }
        let sandbox_user = runner.sandbox_run_as.filter(|_| runner.sandbox.is_some());
        let can_sandbox = runner.sandbox.is_some();
        let limits = Limits {
            max_prompt_chars: config.limits.max_prompt_chars,
            max_timeout_ms: config.limits.max_timeout_ms,
            default_timeout_ms: config.limits.default_timeout_ms,
            max_attempts: config.limits.max_attempts_limit,
        };
        let warm_pools = config
            .warm_pool
            .iter()
            .map(|p| {
                Ok(WarmPoolConfig {
                    options: p.spec(&limits)?.options,
                    size: p.size,
                    idle: Duration::from_secs(p.idle_seconds),
                    sandbox: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let engine_cfg = EngineConfig {
            node_id,
            max_concurrency: config.runner.max_concurrency,
            lease: Duration::from_secs(config.runner.lease_seconds),
            poll_interval: Duration::from_millis(config.runner.poll_interval_ms),
            drain_timeout: Duration::from_secs(config.server.drain_timeout_seconds),
            runner,
            warm_pools,
            retention: baton_engine::Retention {
                completed: Duration::from_secs(config.retention.completed_days * 86_400),
                failed: Duration::from_secs(config.retention.failed_days * 86_400),
                cancelled: Duration::from_secs(config.retention.failed_days * 86_400),
                dead: Duration::from_secs(config.retention.dead_days * 86_400),
                audit: Duration::from_secs(config.retention.audit_days * 86_400),
                batch: 500,
            },
            runs_jobs: config.server.role.runs_jobs(),
        };
        let attempts_dir = engine_cfg.runner.attempts_dir.clone();
        let keep = engine_cfg.runner.keep_workspaces;
        let sandbox = engine_cfg.runner.sandbox.clone();
        // Sandboxes started as another user reach the sockets as that user.
        if let (Some((uid, gid)), Some(sb)) = (sandbox_user, &sandbox) {
            std::os::unix::fs::lchown(&sb.proxy_socket, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to uid {uid}", sb.proxy_socket.display()))?;
        }
        let egress = match sandbox.as_ref().and_then(|s| s.egress_socket.clone()) {
            Some(socket) => Some(
                baton_proxy::egress::Egress::start(
                    &socket,
                    config.runner.egress_allow.clone(),
                    Duration::from_secs(config.outbound.timeout_seconds.max(10)),
                )
                .context("starting the sandbox's egress proxy")?,
            ),
            None => None,
        };
        if let (Some((uid, gid)), Some(socket)) = (
            sandbox_user,
            sandbox.as_ref().and_then(|s| s.egress_socket.as_ref()),
        ) {
            std::os::unix::fs::lchown(socket, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to uid {uid}", socket.display()))?;
        }
        let engine = Engine::start(store.clone(), engine_cfg, clock).await?;
        let _ = ledger_engine.set(engine.clone());
        if let Some(p) = &proxy {
            engine.set_credentials(Arc::new(crate::proxy::ProxyCredentials {
                proxy: p.clone(),
                store,
            }));
        }
        // Every attempt this node ran before is over now (recovery killed and requeued
        // them), so what is left in the attempts directory is debris.
        if !keep {
            remove_children(&attempts_dir);
        }
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let public_url = if config.server.public_url.is_empty() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", listener.local_addr()?)
        } else {
            config.server.public_url.clone()
        };
        let api = ApiConfig {
            limits,
            max_body_bytes: config.server.max_body_bytes,
            auth_required,
            public_url,
            min_cron_interval_ms: config.limits.min_cron_interval_seconds as i64 * 1000,
            max_webhook_bytes: config.limits.max_webhook_bytes,
            outbound: baton_api::callbacks::Outbound {
                allow: config
                    .outbound
                    .allow
                    .iter()
                    .map(|a| baton_api::callbacks::Cidr::parse(a).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
                timeout: Duration::from_secs(config.outbound.timeout_seconds),
            },
            policies: baton_api::policy::Policies {
                default_project: config.policy.clone(),
                catalogue: config.mcp_server.iter().map(|s| s.name.clone()).collect(),
                sandbox: match config.runner.sandbox {
                    crate::config::SandboxMode::Auto => baton_api::policy::ServerSandbox::Auto,
                    crate::config::SandboxMode::Bwrap => baton_api::policy::ServerSandbox::On,
                    crate::config::SandboxMode::None => baton_api::policy::ServerSandbox::Off,
                },
                beyond_loopback: !config.server.listen.ip().is_loopback(),
                can_sandbox,
            },
        };
        let state = AppState::new(engine.clone(), api, shutdown.clone());
        baton_api::policy::log_sandbox(&state).await;
        if tls.is_none() && !config.server.listen.ip().is_loopback() {
            tracing::warn!(
                "server.listen = {} without TLS: API keys cross the network in clear; \
                 set server.tls_cert and server.tls_key, or put a TLS proxy in front",
                config.server.listen
            );
        }
        Ok(Self {
            listener,
            tls,
            serves_api: config.server.role.serves_api(),
            _lock: lock,
            engine,
            state,
            shutdown,
            drain_timeout: Duration::from_secs(config.server.drain_timeout_seconds),
            _egress: egress,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The API's state: what the background steps (cron, callbacks) take.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` is cancelled, then drains: the API stops accepting, SSE streams
    /// end, the dispatcher stops claiming, running attempts get the drain timeout to finish
    /// and the rest are stopped and requeued.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let router = if self.serves_api {
            let mcp = mcp_route(&self.state, self.local_addr(), self.shutdown.clone());
            baton_api::router_with(self.state.clone(), Some(mcp))
        } else {
            baton_api::worker_router(self.state.clone())
        };
        let shutdown = self.shutdown.clone();
        let engine = self.engine.clone();
        let dispatcher = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        // Cron triggers and the callbacks outbox run on every node: a slot fires once and a
        // delivery is claimed by one node, however many run them.
        let loops = baton_api::background(&self.state, shutdown.clone());
        let http_shutdown = shutdown.clone();
        let stopped = async move { http_shutdown.cancelled().await };
        let server = match self.tls {
            Some(config) => {
                let listener = crate::tls::TlsListener::new(self.listener, config)?;
                let serve = axum::serve(listener, router).with_graceful_shutdown(stopped);
                tokio::spawn(async move { serve.await })
            }
            None => {
                use axum::serve::ListenerExt;
                let listener = self.listener.tap_io(|tcp| crate::tls::no_delay(tcp));
                let serve = axum::serve(listener, router).with_graceful_shutdown(stopped);
                tokio::spawn(async move { serve.await })
            }
        };
        stop.cancelled().await;
        tracing::info!("shutting down: draining");
        shutdown.cancel();
        // Requests such as `?wait=` may still be open; they get the drain timeout too.
        match tokio::time::timeout(self.drain_timeout + Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("HTTP connections still open after the drain timeout; closing")
            }
        }
        dispatcher.await.context("dispatcher task")?;
        for l in loops {
            l.await.context("background loop")?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop Baton with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The MCP server at `/mcp`: its sessions call the API in process, with the client's own
/// key. `Host` may name loopback, the address Baton listens on or its public URL's host;
/// a browser's `Origin` must be loopback or the public URL's.
fn mcp_route(
    state: &AppState,
    listen: SocketAddr,
    stop: CancellationToken,
) -> axum::routing::MethodRouter<AppState> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    let mut origins: Vec<String> = ["http", "https"]
        .iter()
        .flat_map(|scheme| ["localhost", "127.0.0.1", "[::1]"].map(|h| format!("{scheme}://{h}:*")))
        .collect();
    if let Ok(public) = reqwest::Url::parse(state.public_url())
        && let Some(host) = public.host_str()
    {
        hosts.push(host.trim_matches(['[', ']']).to_string());
        let port = public.port_or_known_default().unwrap_or(443);
        origins.push(format!("{}://{host}:{port}", public.scheme()));
    }
    let service = baton_mcp::http_service(
        baton_api::router(state.clone()),
        baton_api::auth::mark_inside,
        hosts,
        origins,
        stop,
    );
    axum::routing::any_service(service)
}
