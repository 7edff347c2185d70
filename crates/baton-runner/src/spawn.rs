//! Starting the CLI: `clone(CLONE_VM | CLONE_VFORK)` and `execve`, with the child's own
//! set-up in between, which no standard spawn offers together.
//!
//! The CLI must lead its own process group and die with Baton (the parent-death signal,
//! which only the child itself can arm, between fork and exec). `std::process::Command`
//! can do that only through a `pre_exec` hook, which makes it `fork` the whole server
//! (page tables and all, 1.2–1.6 ms per spawn in a 25 MB server here); `posix_spawn` is
//! cheap but cannot arm the signal, so earlier Baton execed a shim first, which cost a
//! second `execve` and dynamic link (~0.8 ms per job). This does what glibc's
//! `posix_spawn` does, plus that one `prctl`: the child runs on a small stack of its own
//! in the parent's memory while the parent waits, makes only plain system calls, and
//! either execs or reports its `errno` through that shared memory and exits.
//!
//! The exit is awaited through a pidfd (Linux 5.3+), or by polling where there is none.

use std::ffi::{CString, OsStr, OsString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What to start.
pub struct Spawn<'a> {
    /// An absolute path (no `PATH` search happens here).
    pub program: &'a Path,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    /// Run as this uid and gid (Baton as root, `runner.run_as`), with no supplementary
    /// groups.
    pub run_as: Option<(u32, u32)>,
}

/// A started process: the leader of its own process group, with piped stdio. Dropped
/// before it was reaped, it is killed and reaped in the background.
pub struct Child {
    pid: i32,
    exit: Exit,
    status: Option<ExitStatus>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

enum Exit {
    /// Readable once the process has exited.
    Pidfd(AsyncFd<OwnedFd>),
    /// No pidfds on this kernel: look every few milliseconds.
    Poll,
}

/// Everything the child needs, prepared by the parent so the child allocates nothing.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// The child's ends of the stdin, stdout and stderr pipes.
    stdio: [RawFd; 3],
    parent: libc::pid_t,
    /// The uid and gid to become, when `switch`.
    ids: (libc::uid_t, libc::gid_t),
    switch: bool,
    /// Set by the child when a step before (or the) exec fails.
    errno: c_int,
}

/// The child, between clone and exec. It shares the parent's memory and the calling
/// thread's TLS while the parent is suspended, so it calls only async-signal-safe
/// functions and touches nothing but `ChildArgs`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive until this child execs or exits
    // (CLONE_VFORK suspends the parent until then).
    let a = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: plain system calls on this process, on valid pointers prepared by the parent.
    unsafe {
        // Handlers are the parent's code: a signal arriving before exec must not run
        // them here, so every handled signal goes back to its default (all are blocked
        // until just before exec). Ignored ones stay ignored, as with any spawn, except
        // SIGPIPE, which Rust's runtime ignores and `Command` restores too.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let fail = |a: &mut ChildArgs| -> c_int {
            a.errno = *libc::__errno_location();
            libc::_exit(127)
        };
        // First the user: a change of credentials clears the parent-death signal, so it
        // is armed after. Raw system calls: glibc's wrappers would take the parent's
        // lock and signal its threads (they set every thread's ids), which this child
        // shares memory with.
        if a.switch
            && (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, a.ids.1, a.ids.1, a.ids.1) != 0
                || libc::syscall(libc::SYS_setresuid, a.ids.0, a.ids.0, a.ids.0) != 0)
        {
            return fail(a);
        }
        // Its own session (and so its own process group, which Baton stops as one): no
        // controlling terminal a CLI could type into.
        if libc::setsid() < 0 {
            return fail(a);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return fail(a);
        }
        // The parent may have died before the signal was armed.
        if libc::getppid() != a.parent {
            a.errno = libc::ESRCH;
            libc::_exit(127);
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            let target = target as c_int;
            let ok = if fd == target {
                // Already in place (the server runs without that stdio): keep it open
                // across exec.
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, target) == target
            };
            if !ok {
                return fail(a);
            }
        }
        if libc::chdir(a.cwd) != 0 {
            return fail(a);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        fail(a)
    }
}

/// An anonymous mapping for the child's stack, unmapped on drop.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { base, len })
    }

    /// The highest address: stacks grow down.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by nobody once the child has execed.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or variable contains a NUL byte",
        )
    })
}

/// A pipe whose ends are both close-on-exec and above the standard descriptors.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((r, w))
}

/// Starts `spec`. Call it on a thread that outlives the child (a runtime worker, not a
/// blocking-pool thread): the parent-death signal fires when the *thread* that spawned
/// the child exits.
pub fn spawn(spec: &Spawn<'_>) -> io::Result<Child> {
    let program = cstring(spec.program.as_os_str())?;
    let mut argv_owned = vec![program.clone()];
    for a in &spec.args {
        argv_owned.push(cstring(a)?);
    }
    let mut envp_owned = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(v);
        envp_owned.push(cstring(&kv)?);
    }
    let cwd = cstring(spec.cwd.as_os_str())?;
    let argv: Vec<*const libc::c_char> = argv_owned
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = envp_owned
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();

    let (stdin_r, stdin_w) = pipe_pair()?;
    let (stdout_r, stdout_w) = pipe_pair()?;
    let (stderr_r, stderr_w) = pipe_pair()?;
    let mut args = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        stdio: [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ],
        parent: std::process::id() as libc::pid_t,
        ids: spec.run_as.unwrap_or((0, 0)),
        switch: spec.run_as.is_some(),
        errno: 0,
    };
    // The child's stack: it only makes system calls, so 64 KiB is ample. Mapped rather
    // than allocated, so it goes back to the system at once instead of growing the heap.
    let stack = Stack::new(64 * 1024)?;
    // SAFETY: the stack grows down from its (page-aligned) top; `child_main` and `args`
    // stay valid until `clone` returns, because CLONE_VFORK suspends this thread until
    // the child has execed or exited. All signals are blocked meanwhile, so no handler of
    // ours runs on the child's stack, and the mask is restored after.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut args).cast::<c_void>(),
        );
        let clone_errno = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_errno);
        }
        pid
    };
    drop(stack);
    drop((stdin_r, stdout_w, stderr_w));
    if args.errno != 0 {
        // The child has exited already: reap it, and report why.
        let mut status = 0;
        // SAFETY: `pid` is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(args.errno));
    }
    let exit = match pidfd_open(pid) {
        Some(fd) => Exit::Pidfd(watch(fd)?),
        None => Exit::Poll,
    };
    Ok(Child {
        pid,
        exit,
        status: None,
        stdin: Some(pipe::Sender::from_owned_fd(stdin_w)?),
        stdout: Some(pipe::Receiver::from_owned_fd(stdout_r)?),
        stderr: Some(pipe::Receiver::from_owned_fd(stderr_r)?),
    })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a system call with no pointer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Registers a pidfd with the runtime, to learn of the exit without a thread or a poll.
fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` keeps its descriptor open, unchanged, for its whole life.
    Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?)
}

fn reap(pid: i32, flags: c_int) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: `pid` is a child of this process that nobody else reaps.
    match unsafe { libc::waitpid(pid, &mut status, flags) } {
        0 => Ok(None),
        n if n == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

impl Child {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap(self.pid, libc::WNOHANG)?;
        }
        Ok(self.status)
    }

    /// Waits for the process to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match &self.exit {
                Exit::Pidfd(fd) => {
                    let mut ready = fd.readable().await?;
                    // Readable means exited; clear and look again if the reap found nothing.
                    match reap(self.pid, libc::WNOHANG)? {
                        Some(status) => self.status = Some(status),
                        None => ready.clear_ready(),
                    }
                }
                Exit::Poll => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Sends SIGKILL to the process (not its group), unless it was reaped already.
    pub fn start_kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: `pid` is our unreaped child, so the number cannot have been reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let _ = self.start_kill();
        // Killed: reaping takes a moment, which must not block whoever dropped it.
        let pid = self.pid;
        if !matches!(reap(pid, libc::WNOHANG), Ok(Some(_))) {
            std::thread::spawn(move || reap(pid, 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sh(script: &str, cwd: &Path) -> Spawn<'static> {
        Spawn {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            cwd: Box::leak(cwd.to_path_buf().into_boxed_path()),
            run_as: None,
        }
    }

    #[tokio::test]
    async fn runs_with_its_environment_directory_and_pipes() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(&sh(
            r#"read line; echo "$GREETING $line from $(pwd)"; echo oops >&2; exit 3"#,
            dir.path(),
        ))
        .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"world\n").await.unwrap();
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(out.trim(), format!("hello world from {}", real.display()));
        assert_eq!(err.trim(), "oops");
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn leads_its_own_process_group() {
        let mut child = spawn(&sh("sleep 30", Path::new("/"))).unwrap();
        let pid = child.id();
        // SAFETY: a query about our own child.
        assert_eq!(unsafe { libc::getpgid(pid) }, pid);
        child.start_kill().unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_a_process() {
        let err = spawn(&Spawn {
            program: Path::new("/nonexistent/claude"),
            args: vec![],
            env: vec![],
            cwd: Path::new("/"),
            run_as: None,
        })
        .err()
        .expect("no such program");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = spawn(&sh("true", Path::new("/nonexistent-dir")))
            .err()
            .expect("no such directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn dies_when_the_spawning_thread_exits() {
        // The parent-death signal follows the thread that spawned: let it exit.
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let child = spawn(&sh("sleep 30", Path::new("/"))).unwrap();
                let pid = child.id();
                // Leave it running: only the parent-death signal may end it.
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let status = reap(pid, 0).unwrap().expect("reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed() {
        let child = spawn(&sh("sleep 30", Path::new("/"))).unwrap();
        let pidfd = pidfd_open(child.id()).expect("pidfd");
        drop(child);
        // A pidfd turns readable when its process has exited (it is reaped in the
        // background after that).
        let fd = watch(pidfd).unwrap();
        let _exited = fd.readable().await.unwrap();
    }
}
