//! `baton-exec PARENT_PID PROGRAM ARGS…`: sets the parent-death signal, then becomes
//! PROGRAM (same pid, same process group).
//!
//! Baton spawns the CLI through this shim so that the spawn can use `posix_spawn` (a
//! `pre_exec` hook would force a full `fork` of the server, about 1.5 ms per job here)
//! while the CLI still dies with Baton. PARENT_PID closes the race where Baton dies before
//! the signal is armed. Exit codes follow the shell's: 127 not found, 126 not executable.

use std::os::unix::process::CommandExt;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(parent), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: baton-exec PARENT_PID PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let parent: i32 = parent.to_str().and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: plain system calls on this process; nothing else runs yet.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            eprintln!("baton-exec: cannot set the parent-death signal");
            std::process::exit(1);
        }
        if libc::getppid() != parent {
            std::process::exit(1);
        }
    }
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!(
        "baton-exec: cannot run {}: {err}",
        program.to_string_lossy()
    );
    std::process::exit(match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    });
}
