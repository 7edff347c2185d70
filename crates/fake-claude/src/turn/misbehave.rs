//! Directives that make the process misbehave the ways a supervisor must survive: a
//! stderr flood, a grandchild holding the pipes, a hang.

use std::process::{Command, Stdio};
use std::time::Duration;

/// `FAKE stderr_flood`: exactly `bytes` bytes, in large writes (stderr is unbuffered).
pub(super) fn flood_stderr(bytes: usize) {
    use std::io::Write;
    const LINE: &[u8] = b"fake-claude: stderr flood, as a noisy CLI would produce it ..........\n";
    let block: Vec<u8> = LINE.iter().copied().cycle().take(64 * 1024).collect();
    let mut stderr = std::io::stderr().lock();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len());
        if stderr.write_all(&block[..n]).is_err() {
            return; // Nobody reads stderr any more; the flood has made its point.
        }
        left -= n;
    }
}

/// `FAKE grandchild`: a `sleep 3600` that inherits stdout and stderr and stays in our
/// process group, so the pipes stay open after this process exits.
#[allow(
    clippy::zombie_processes,
    reason = "the grandchild must outlive this process; it is never waited for by design"
)]
pub(super) fn spawn_grandchild() {
    if let Err(e) = Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
    {
        eprintln!("fake-claude: cannot start the grandchild `sleep 3600`: {e}");
    }
}

/// Hangs until killed; a SIGINT ends the process with 0, without a result.
pub(super) fn hang_forever() -> ! {
    loop {
        if !crate::interrupt::sleep(Duration::from_secs(3600)) {
            std::process::exit(0);
        }
    }
}
