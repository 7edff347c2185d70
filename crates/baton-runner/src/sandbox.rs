//! The sandbox: each attempt's CLI runs under bubblewrap (`bwrap`) with a read-only view of
//! the system; its workspace, `add_dirs` and a job's `cwd` writable; a private `/tmp`,
//! `/run` and home (the host's `/home` and `/root` are empty, Baton's data directory and
//! secret files are hidden); its own PID namespace (the whole tree dies with it), user
//! namespace (a non-root uid, so `bypassPermissions` works without root on the host) and
//! network namespace (nothing but loopback). The one way out is Baton's proxy: its Unix
//! socket is bound in, and a small forwarder (Baton's own binary, `baton sandbox-init`)
//! serves it on a loopback port inside, which is the CLI's `ANTHROPIC_BASE_URL`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the proxy's socket appears inside.
pub const PROXY_SOCKET: &str = "/run/baton/proxy.sock";
/// Where the egress proxy's socket appears inside.
pub const EGRESS_SOCKET: &str = "/run/baton/egress.sock";
/// The loopback port inside on which the forwarder serves the API proxy.
pub const API_PORT: u16 = 8377;
/// The loopback port inside on which the forwarder serves the egress proxy.
pub const EGRESS_PORT: u16 = 8378;
/// What the forwarder exits with when the sandbox cannot be made.
pub const SETUP_FAILED: i32 = 125;
/// How the forwarder's own failures begin, on stderr.
pub const HELPER_PREFIX: &str = "baton sandbox:";

/// How attempts are sandboxed.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `bwrap` binary.
    pub bwrap: PathBuf,
    /// Baton's binary, run inside as the forwarder: `<helper> sandbox-init …`.
    pub helper: PathBuf,
    /// The API proxy's Unix socket on the host.
    pub proxy_socket: PathBuf,
    /// The egress (CONNECT) proxy's Unix socket, when an allow-list is configured.
    pub egress_socket: Option<PathBuf>,
    /// Directories hidden behind an empty one (Baton's data directory, its workspace
    /// directory) and files hidden behind `/dev/null` (the credential file, TLS key).
    pub hide: Vec<PathBuf>,
    /// The uid and gid inside.
    pub uid: u32,
    pub gid: u32,
}

impl SandboxConfig {
    /// The bubblewrap binary to start, or why the sandbox cannot start.
    pub fn program(&self) -> Result<PathBuf, (baton_core::ErrorKind, String)> {
        crate::find_executable(&self.bwrap).ok_or_else(|| {
            (
                baton_core::ErrorKind::SandboxFailed,
                format!(
                    "the sandbox cannot start: {} is not found or not executable (install bubblewrap)",
                    self.bwrap.display()
                ),
            )
        })
    }
}

fn push(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

fn push_path(args: &mut Vec<OsString>, flag: &str, from: &Path, to: &Path) {
    args.push(flag.into());
    args.push(from.into());
    args.push(to.into());
}

/// The `bwrap` command line that runs `program args` in the sandbox, with `writable`
/// directories (the attempt's workspace first, then a job's `cwd` and `add_dirs`) bound
/// read-write and `cwd` as the working directory; and the variables the CLI needs
/// changed inside.
pub fn wrap(
    cfg: &SandboxConfig,
    program: &Path,
    args: Vec<OsString>,
    writable: &[&Path],
    readable: &[PathBuf],
    sockets: &[(PathBuf, PathBuf)],
    cwd: &Path,
) -> (Vec<OsString>, Vec<(String, String)>) {
    let mut a: Vec<OsString> = Vec::new();
    push(
        &mut a,
        &[
            "--die-with-parent",
            "--unshare-all",
            "--cap-drop",
            "ALL",
            "--uid",
            &cfg.uid.to_string(),
            "--gid",
            &cfg.gid.to_string(),
            "--hostname",
            "baton",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ],
    );
    for private in ["/tmp", "/var/tmp", "/run", "/home", "/root"] {
        if Path::new(private).is_dir() && !Path::new(private).is_symlink() {
            push(&mut a, &["--tmpfs", private]);
        }
    }
    // What the CLI needs from a private place: its own program, read-only; then what it
    // may write. Only after those is Baton's own hidden, so no bind of a parent directory
    // (a `cwd` or `add_dirs` above the data directory) can show it again; and last the
    // workspace, which lives inside it.
    let mut programs = program_dirs(program);
    if let Some(d) = cfg.helper.parent()
        && !programs.iter().any(|p| p == d)
    {
        programs.push(d.to_path_buf());
    }
    for dir in readable {
        if !programs.contains(dir) {
            programs.push(dir.clone());
        }
    }
    for dir in programs {
        push_path(&mut a, "--ro-bind", &dir, &dir);
    }
    let (workspace, others) = writable
        .split_first()
        .map_or((None, &[][..]), |(w, o)| (Some(w), o));
    for w in others {
        push_path(&mut a, "--bind", w, w);
    }
    for hidden in &cfg.hide {
        if hidden.is_dir() {
            a.push("--tmpfs".into());
            a.push(hidden.into());
        } else if hidden.exists() {
            push_path(&mut a, "--ro-bind", Path::new("/dev/null"), hidden);
        }
    }
    if let Some(w) = workspace {
        push_path(&mut a, "--bind", w, w);
    }
    push_path(&mut a, "--bind", &cfg.proxy_socket, Path::new(PROXY_SOCKET));
    if let Some(s) = &cfg.egress_socket {
        push_path(&mut a, "--bind", s, Path::new(EGRESS_SOCKET));
    }
    for (outside, inside) in sockets {
        push_path(&mut a, "--bind", outside, inside);
    }
    a.push("--chdir".into());
    a.push(cwd.into());
    a.push("--".into());
    a.push(cfg.helper.clone().into());
    push(
        &mut a,
        &[
            "sandbox-init",
            "--api-socket",
            PROXY_SOCKET,
            "--api-port",
            &API_PORT.to_string(),
        ],
    );
    let mut env = vec![(
        "ANTHROPIC_BASE_URL".to_string(),
        format!("http://127.0.0.1:{API_PORT}"),
    )];
    if cfg.egress_socket.is_some() {
        push(
            &mut a,
            &[
                "--egress-socket",
                EGRESS_SOCKET,
                "--egress-port",
                &EGRESS_PORT.to_string(),
            ],
        );
        let url = format!("http://127.0.0.1:{EGRESS_PORT}");
        for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            env.push((k.to_string(), url.clone()));
        }
        env.push(("NO_PROXY".into(), "127.0.0.1,localhost".into()));
        env.push(("no_proxy".into(), "127.0.0.1,localhost".into()));
    }
    a.push("--".into());
    a.push(program.into());
    a.extend(args);
    (a, env)
}

/// The directories of `program` and of what it links to, when outside the usual system
/// directories: bound read-only, so a CLI installed under a hidden home still runs.
pub(crate) fn program_dirs(program: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for p in [Some(program.to_path_buf()), program.canonicalize().ok()]
        .into_iter()
        .flatten()
    {
        if let Some(d) = p.parent()
            && !d.starts_with("/usr")
            && !d.starts_with("/bin")
            && !d.starts_with("/opt")
            && !dirs.iter().any(|x: &PathBuf| x == d)
        {
            dirs.push(d.to_path_buf());
        }
    }
    // An npm install: the package directory holds what the entry point loads.
    if let Ok(real) = program.canonicalize()
        && let Some(pkg) = real.ancestors().find(|d| d.join("package.json").is_file())
        && !dirs.iter().any(|x| x == pkg)
    {
        dirs.push(pkg.to_path_buf());
    }
    dirs
}

/// Starts a sandbox as attempts get them, running `/bin/true`: `Ok`, or why it failed
/// (for `baton doctor`).
pub fn probe(cfg: &SandboxConfig) -> Result<(), String> {
    let ws = std::env::temp_dir();
    let (args, _) = wrap(
        cfg,
        Path::new("/bin/true"),
        Vec::new(),
        &[ws.as_path()],
        &[],
        &[],
        ws.as_path(),
    );
    match std::process::Command::new(&cfg.bwrap).args(&args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{} failed ({}): {}",
            cfg.bwrap.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "{} cannot be run ({e}); install bubblewrap (Debian: apt-get install bubblewrap)",
            cfg.bwrap.display()
        )),
    }
}

/// Whether an attempt that printed nothing failed in the sandbox's making, not in the CLI:
/// `bwrap` and the forwarder say so on stderr.
pub fn failed_to_start(stderr: &str) -> bool {
    let t = stderr.trim_start();
    t.starts_with("bwrap:") || t.contains(HELPER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_hides_binds_and_forwards() {
        let cfg = SandboxConfig {
            bwrap: "/usr/bin/bwrap".into(),
            helper: "/usr/local/bin/baton".into(),
            proxy_socket: "/var/lib/baton/proxy.sock".into(),
            egress_socket: None,
            hide: vec![std::env::temp_dir()],
            uid: 1000,
            gid: 1000,
        };
        let (args, env) = wrap(
            &cfg,
            Path::new("/usr/bin/claude"),
            vec!["-p".into()],
            &[Path::new("/srv/ws/work")],
            &[PathBuf::from("/srv/mcp")],
            &[(
                PathBuf::from("/srv/ws.mcp/docs.sock"),
                PathBuf::from("/run/baton/mcp-docs.sock"),
            )],
            Path::new("/srv/ws/work"),
        );
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = text.join(" ");
        assert!(joined.contains("--unshare-all"), "{joined}");
        assert!(
            joined.contains("--bind /srv/ws/work /srv/ws/work"),
            "{joined}"
        );
        assert!(
            joined.contains("--bind /var/lib/baton/proxy.sock /run/baton/proxy.sock"),
            "{joined}"
        );
        // A catalogue server's program is readable, a bridged one's socket bound in.
        assert!(joined.contains("--ro-bind /srv/mcp /srv/mcp"), "{joined}");
        assert!(
            joined.contains("--bind /srv/ws.mcp/docs.sock /run/baton/mcp-docs.sock"),
            "{joined}"
        );
        assert!(
            joined.ends_with("-- /usr/local/bin/baton sandbox-init --api-socket /run/baton/proxy.sock --api-port 8377 -- /usr/bin/claude -p"),
            "{joined}"
        );
        assert_eq!(env[0].1, "http://127.0.0.1:8377");
        assert!(failed_to_start("bwrap: Can't mount proc"));
        assert!(!failed_to_start("Error: unknown option"));
    }
}
