//! SIGINT, answered as 2.1.332 answers it (k2): during a turn the turn ends as an
//! interrupted one (`[Request interrupted by user]`, an `error_during_execution` result)
//! and the process exits 0; outside a turn it exits 0 at once. SIGTERM and SIGHUP keep
//! their default (death by signal, 143/129 as a shell reports it; k1, k3).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

static TURN_ACTIVE: AtomicBool = AtomicBool::new(false);
static RECEIVED: AtomicBool = AtomicBool::new(false);

/// How often waits look for a SIGINT.
const SLICE: Duration = Duration::from_millis(20);

pub fn install() {
    extern "C" fn on_sigint(_signal: libc::c_int) {
        if TURN_ACTIVE.load(Ordering::SeqCst) {
            RECEIVED.store(true, Ordering::SeqCst);
        } else {
            // SAFETY: _exit is async-signal-safe. Every event line was flushed when written.
            unsafe { libc::_exit(0) }
        }
    }
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: installs a handler that only touches atomics or calls an async-signal-safe
    // function.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// Marks whether a turn is being played: a SIGINT then ends the turn, not the process.
pub fn set_turn_active(active: bool) {
    TURN_ACTIVE.store(active, Ordering::SeqCst);
}

pub fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}

/// The end of the slice of a wait that ends at `deadline`.
pub fn slice_end(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + SLICE)
}

/// Sleeps `duration`, or less when a SIGINT arrives; returns whether it slept it all.
pub fn sleep(duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if received() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep(slice_end(deadline) - now);
    }
}
