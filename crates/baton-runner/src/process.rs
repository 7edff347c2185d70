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
    Some(read_stat(pid)?.start)
}

/// What `/proc/<pid>/stat` says of one process.
struct Stat {
    pid: i32,
    pgid: i32,
    /// Clock ticks since boot.
    start: u64,
    /// A zombie, or dead: it can neither hold anything nor be killed.
    dead: bool,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces; the fields
    // after it start with the state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    let pgid = fields.nth(1)?.parse().ok()?;
    let start = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        pid,
        pgid,
        start,
        dead: state.starts_with(['Z', 'X']),
    })
}

/// One read of `/proc`: every live process with its group and start time. Matching many
/// groups against one table costs one scan of `/proc`, not one per group.
pub struct ProcessTable(Vec<Stat>);

impl ProcessTable {
    pub fn read() -> Self {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Self(Vec::new());
        };
        Self(
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(read_stat)
                .filter(|s| !s.dead)
                .collect(),
        )
    }

    /// Processes in group `pgid` that started no earlier than `since_ticks`: what is
    /// left of an attempt whose leader was started at `since_ticks`. Pids of unrelated,
    /// older processes that happen to share the number are never included.
    pub fn group_members(&self, pgid: i32, since_ticks: u64) -> Vec<i32> {
        self.0
            .iter()
            .filter(|s| s.pgid == pgid && s.start >= since_ticks)
            .map(|s| s.pid)
            .collect()
    }

    fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.iter().map(|s| s.pid)
    }
}

/// Waits until nothing live is left in group `pgid` (of a leader started at
/// `since_ticks`), killing what is, for at most `limit`. A SIGKILLed process takes a
/// moment to exit (a large one, or one in a sandbox whose namespace is being torn down):
/// an attempt is over only once its processes are. Returns whether the group is empty.
pub async fn await_group_gone(pgid: i32, since_ticks: u64, limit: Duration) -> bool {
    // The common case: no process in the group at all, one system call.
    if matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH)) {
        return true;
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if group_members(pgid, since_ticks).is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                pgid,
                "processes of an attempt outlived its end by {limit:?}"
            );
            return false;
        }
        signal_group(pgid, Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`ProcessTable::group_members`] on a fresh read of `/proc`.
pub fn group_members(pgid: i32, since_ticks: u64) -> Vec<i32> {
    ProcessTable::read().group_members(pgid, since_ticks)
}

/// Kills whatever remains of attempts run by an earlier incarnation, each named by its
/// group leader's `(pid, start ticks)`, against one read of `/proc`. Returns how many
/// processes were signalled.
pub fn kill_stale_groups(groups: &[(i32, u64)]) -> usize {
    if groups.is_empty() {
        return 0;
    }
    let table = ProcessTable::read();
    let mut killed = 0;
    for &(pgid, since) in groups {
        for pid in table.group_members(pgid, since) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
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
        let found: Vec<i32> = ProcessTable::read()
            .pids()
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
        assert_eq!(read_stat(me).map(|s| s.pgid), Some(pgid));
        assert!(group_members(pgid, 0).contains(&me));
        assert!(!group_members(pgid, u64::MAX).contains(&me));
        // A command name with spaces and parentheses does not shift the fields.
        let dir = tempfile::tempdir().unwrap();
        let odd_name = dir.path().join("a) (b c");
        // A link, not a copy: a copy's write descriptor, inherited by a process another
        // test forks meanwhile, makes its exec fail with ETXTBSY.
        std::os::unix::fs::symlink("/bin/sleep", &odd_name).unwrap();
        let mut odd = std::process::Command::new(&odd_name)
            .arg("5")
            .spawn()
            .unwrap();
        let pid = odd.id() as i32;
        // `spawn` returns once the exec happened, so the name is already the new one.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "a) (b c");
        let stat = read_stat(pid).unwrap();
        assert_eq!(stat.pgid, pgid);
        assert!(stat.start >= process_start_ticks(me).unwrap());
        assert!(
            ProcessTable::read()
                .group_members(pgid, stat.start)
                .contains(&pid)
        );
        odd.kill().unwrap();
        odd.wait().unwrap();
    }
}
