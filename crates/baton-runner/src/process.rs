//! Process-group handling. Each CLI runs as the leader of its own process group, so one
//! signal reaches it and everything it started (tool commands, MCP servers).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::spawn::Child;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Sends `signal` to a process group; a group that is already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, error = %e, "could not signal process group"),
    }
}

/// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group
/// and reap. Returns once the leader is reaped; survivors in the group are killed too.
pub async fn terminate_group(child: &mut Child, pgid: i32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        signal_group(pgid, Signal::SIGKILL);
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    signal_group(pgid, Signal::SIGKILL);
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
/// Together with the pid it names one process, immune to pid reuse.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn process_group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(2)?.parse().ok()
}

/// Processes in group `pgid` that started no earlier than `since_ticks`: what is left of an
/// attempt whose leader was started at `since_ticks`. Pids of unrelated, older processes
/// that happen to share the number are never included.
pub fn group_members(pgid: i32, since_ticks: u64) -> Vec<i32> {
    live_pids()
        .into_iter()
        .filter(|&pid| process_group_of(pid) == Some(pgid))
        .filter(|&pid| process_start_ticks(pid).is_some_and(|t| t >= since_ticks))
        .collect()
}

/// Kills whatever remains of an attempt run by an earlier incarnation. Returns how many
/// processes were signalled.
pub fn kill_stale_group(pgid: i32, since_ticks: u64) -> usize {
    let members = group_members(pgid, since_ticks);
    for &pid in &members {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    members.len()
}

/// Kills every process whose `HOME` lies under `dir` (canonical): every CLI starts with its
/// workspace's home, and what it starts inherits it. Called before a node runs anything,
/// so all it finds is left from an earlier incarnation, including the children of a CLI
/// whose group was never recorded because the server died between the spawn and the write
/// of its pid. A working directory there is not enough: that may be someone's shell,
/// looking at a kept workspace. Returns how many processes were signalled.
pub fn kill_strays(dir: &Path) -> usize {
    let me = std::process::id() as i32;
    let mut killed = HashSet::new();
    // A stray may fork while it is being looked for: look again until a pass finds no
    // new one.
    for _ in 0..10 {
        let found: Vec<i32> = live_pids()
            .into_iter()
            .filter(|&pid| pid != me && !killed.contains(&pid) && home_in(pid, dir))
            .collect();
        if found.is_empty() {
            break;
        }
        for pid in found {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.insert(pid);
        }
    }
    killed.len()
}

/// Pids of processes that are not zombies.
fn live_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
            })
        })
        .collect()
}

fn home_in(pid: i32, dir: &Path) -> bool {
    // Another user's environment is unreadable, and is none of ours.
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    environ
        .split(|&b| b == 0)
        .filter_map(|var| var.strip_prefix(b"HOME="))
        .any(|home| Path::new(std::ffi::OsStr::from_bytes(home)).starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_start_time_and_group() {
        let me = std::process::id() as i32;
        assert!(process_start_ticks(me).is_some());
        let pgid = nix::unistd::getpgrp().as_raw();
        assert_eq!(process_group_of(me), Some(pgid));
        assert!(group_members(pgid, 0).contains(&me));
        assert!(!group_members(pgid, u64::MAX).contains(&me));
    }
}
