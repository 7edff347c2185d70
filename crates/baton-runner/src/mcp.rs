//! The MCP servers a run gets: its own `mcp_config` (where its project's policy allows
//! one) and the admin's catalogue servers it names. A catalogue server marked
//! `sandbox = false` runs outside the CLI, sandboxed or not: the CLI starts `baton
//! mcp-bridge`, which joins its stdio to a Unix socket (bound into the sandbox), and Baton
//! starts the server's command for each connection to it, in a directory of its own, as
//! `runner.run_as` (`nobody` for a root Baton without one; else Baton's user). Its
//! command line and environment stay outside: the CLI never sees them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use baton_core::{ClaudeRun, McpServer};
use serde_json::{Map, Value, json};
use tokio::net::UnixListener;

use crate::RunnerConfig;
use crate::sandbox::SandboxConfig;

/// Where a bridged server's socket appears inside the sandbox.
pub(crate) fn inside_socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/baton/mcp-{name}.sock"))
}

fn named<'a>(cfg: &'a RunnerConfig, run: &'a ClaudeRun) -> impl Iterator<Item = &'a McpServer> {
    run.options
        .mcp_servers
        .iter()
        .filter_map(|n| cfg.mcp_catalogue.iter().find(|s| &s.name == n))
}

/// Whether `server` runs outside the CLI, joined to it by a bridge.
fn bridged(server: &McpServer) -> bool {
    !server.sandbox && server.command.is_some()
}

/// Connections one bridged server serves at once, per run; more are closed at once.
const MAX_CONNECTIONS: usize = 4;

/// Where a run's bridges live: beside its workspace, out of the CLI's reach.
fn bridge_dir(root: &Path) -> PathBuf {
    let mut dir = root.as_os_str().to_owned();
    dir.push(".mcp");
    PathBuf::from(dir)
}

/// The socket of `name` as the CLI reaches it.
fn cli_socket(root: &Path, name: &str, sandbox: Option<&SandboxConfig>) -> PathBuf {
    match sandbox {
        Some(_) => inside_socket(name),
        None => bridge_dir(root).join(format!("{name}.sock")),
    }
}

/// The `--mcp-config` of a run: its own servers, then the catalogue's it names. `None`
/// when it has none.
pub(crate) fn config(
    cfg: &RunnerConfig,
    run: &ClaudeRun,
    root: &Path,
) -> std::io::Result<Option<Value>> {
    if let Some(missing) = run
        .options
        .mcp_servers
        .iter()
        .find(|n| !cfg.mcp_catalogue.iter().any(|s| &s.name == *n))
    {
        return Err(std::io::Error::other(format!(
            "the MCP server {missing:?} is no longer in the catalogue ([[mcp_server]])"
        )));
    }
    let mut servers = run
        .options
        .mcp_config
        .as_ref()
        .and_then(|c| c.get("mcpServers"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if servers.is_empty() && run.options.mcp_servers.is_empty() {
        return Ok(run.options.mcp_config.clone());
    }
    let sandbox = cfg.sandbox_for(run).ok().flatten();
    for s in named(cfg, run) {
        let entry = if bridged(s) {
            if cfg.helper.as_os_str().is_empty() {
                return Err(std::io::Error::other(format!(
                    "the MCP server {:?} runs outside the CLI, which needs Baton's binary as its bridge",
                    s.name
                )));
            }
            json!({
                "command": cfg.helper,
                "args": ["mcp-bridge", cli_socket(root, &s.name, sandbox)],
            })
        } else if let Some(command) = &s.command {
            json!({"command": command, "args": s.args, "env": s.env})
        } else {
            json!({"type": "http", "url": s.url, "headers": s.headers})
        };
        servers.insert(s.name.clone(), entry);
    }
    let mut config = Map::new();
    config.insert("mcpServers".into(), Value::Object(servers));
    Ok(Some(Value::Object(config)))
}

/// Directories of the catalogue commands a sandboxed run starts inside: bound read-only,
/// so a server installed outside the system directories still runs.
pub(crate) fn programs(cfg: &RunnerConfig, run: &ClaudeRun) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for s in named(cfg, run).filter(|s| !bridged(s)) {
        let Some(program) = s
            .command
            .as_deref()
            .and_then(|c| crate::find_executable(Path::new(c)))
        else {
            continue;
        };
        for d in crate::sandbox::program_dirs(&program) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// The outside ends of a run's bridged servers: a listener per server, which starts the
/// server's command for each connection. Dropping it stops them all and removes the
/// sockets.
pub(crate) struct Bridges {
    dir: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// (socket outside, socket inside), for the sandbox's binds.
    pub sockets: Vec<(PathBuf, PathBuf)>,
}

impl Drop for Bridges {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Starts the bridges of a run (`<root>.mcp/`): a socket per bridged server, given to the
/// CLI's user (bubblewrap's, for a sandboxed run) and no one else; and the directory the
/// servers work in (their home and cwd), given to the servers' user.
pub(crate) fn bridges(
    cfg: &RunnerConfig,
    run: &ClaudeRun,
    root: &Path,
) -> std::io::Result<Bridges> {
    let servers: Vec<McpServer> = named(cfg, run).filter(|s| bridged(s)).cloned().collect();
    let mut out = Bridges {
        dir: None,
        tasks: Vec::new(),
        sockets: Vec::new(),
    };
    if servers.is_empty() {
        return Ok(out);
    }
    let sandbox = cfg
        .sandbox_for(run)
        .map_err(|(_, m)| std::io::Error::other(m))?;
    let dir = bridge_dir(root);
    std::fs::create_dir(&dir)?;
    out.dir = Some(dir.clone());
    // Others may pass through to their socket, not list it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    let cli_user = cfg.user_for(sandbox.is_some());
    let server_user = cfg.run_as.or(cfg.sandbox_run_as);
    let work = dir.join("server");
    std::fs::create_dir(&work)?;
    if let Some((uid, gid)) = server_user {
        std::os::unix::fs::chown(&work, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))?;
    let env = crate::verify::bare_environment(&work, &work);
    for s in servers {
        let path = dir.join(format!("{}.sock", s.name));
        let listener = UnixListener::bind(&path)?;
        if let Some((uid, gid)) = cli_user {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if sandbox.is_some() {
            out.sockets.push((path, inside_socket(&s.name)));
        }
        let (env, work) = (env.clone(), work.clone());
        out.tasks.push(tokio::spawn(async move {
            // Held here, so the connections' servers stop when this task is aborted.
            let mut serving = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                while serving.try_join_next().is_some() {}
                if serving.len() >= MAX_CONNECTIONS {
                    tracing::warn!(server = %s.name, "a bridged MCP server has {MAX_CONNECTIONS} connections of this run already; one more is closed");
                    continue;
                }
                serving.spawn(serve(s.clone(), conn, env.clone(), work.clone(), server_user));
            }
        }));
    }
    Ok(out)
}

/// One connection: the server's command, its stdio joined to the socket, killed (with
/// its group) when either side ends or the run's bridges are dropped.
async fn serve(
    s: McpServer,
    conn: tokio::net::UnixStream,
    mut env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    cwd: PathBuf,
    run_as: Option<(u32, u32)>,
) {
    let Some(program) = s
        .command
        .as_deref()
        .and_then(|c| crate::find_executable(Path::new(c)))
    else {
        tracing::warn!(server = %s.name, "a bridged MCP server's command is not found");
        return;
    };
    env.extend(s.env.iter().map(|(k, v)| (k.into(), v.into())));
    let child = crate::spawn::spawn(&crate::spawn::Spawn {
        program: &program,
        args: s.args.iter().map(Into::into).collect(),
        env,
        cwd: &cwd,
        run_as,
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(server = %s.name, error = %e, "a bridged MCP server could not start");
            return;
        }
    };
    let pid = child.id();
    // Dropped (the run's bridges stopped) before the server is reaped: its group is
    // killed, while its pid cannot have been reused.
    struct Kill(Option<i32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let mut kill = Kill(Some(pid));
    let (mut from_cli, mut to_cli) = conn.into_split();
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return;
    };
    // Requests until the CLI closes its side (then the server's stdin closes); answers
    // until the server closes its stdout. A server that never ends is killed with the
    // run's bridges.
    let up = async move {
        let _ = tokio::io::copy(&mut from_cli, &mut stdin).await;
        drop(stdin);
    };
    let down = async {
        let _ = tokio::io::copy(&mut stdout, &mut to_cli).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_cli).await;
    };
    tokio::join!(up, down);
    // The server is done with its stdout: whatever it left in its group goes, then it is
    // reaped.
    crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
    kill.0 = None;
    let _ = child.wait().await;
}
