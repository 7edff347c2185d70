//! Warm pools: pre-started CLI processes for the job options marked warm in configuration.
//! A job whose options match takes one (it skips the CLI's start-up); anything else runs
//! cold. A background loop, run as an async task on the runtime's long-lived workers (the
//! parent-death signal follows the thread that forked), retires processes idle too long or
//! dead, and tops each pool up to its size.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::{ClaudeOptions, ClaudeRun};
use baton_runner::RunnerConfig;
use baton_runner::warm::{WarmProcess, shape_of};
use serde_json::{Value, json};

/// How long a warm process may take to boot before it is given up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// One pool, as configured.
#[derive(Debug, Clone)]
pub struct WarmPoolConfig {
    /// The options of the runs it serves.
    pub options: ClaudeOptions,
    /// Processes kept ready.
    pub size: usize,
    /// A ready process unused this long is retired and replaced.
    pub idle: Duration,
    /// Whether its processes are sandboxed (as its runs are); `None`: the runner's default.
    pub sandbox: Option<bool>,
}

struct Pool {
    /// What made it: `None` for a configured pool, else its owner's key (an agent's
    /// `project/name`).
    key: Option<String>,
    shape: ClaudeOptions,
    sandbox: Option<bool>,
    /// Started, not yet answering: counted so a refill does not start too many.
    booting: std::sync::atomic::AtomicUsize,
    /// Set on shutdown: a process that finishes booting afterwards is killed, not kept.
    closed: std::sync::atomic::AtomicBool,
    size: usize,
    idle: Duration,
    ready: Mutex<VecDeque<Warm>>,
    started: AtomicU64,
    used: AtomicU64,
    retired: AtomicU64,
    failed: AtomicU64,
}

/// A ready process, and the credential it was started with (Baton's proxy's token).
pub(crate) struct Warm {
    pub process: WarmProcess,
    pub credential: Option<crate::IssuedCredential>,
}

#[derive(Default)]
pub(crate) struct WarmPools {
    pools: std::sync::RwLock<Vec<std::sync::Arc<Pool>>>,
    names: AtomicU64,
}

impl Pool {
    fn new(key: Option<String>, c: &WarmPoolConfig) -> Self {
        Pool {
            key,
            shape: c.options.clone(),
            sandbox: c.sandbox,
            booting: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            size: c.size,
            idle: c.idle,
            ready: Mutex::new(VecDeque::new()),
            started: AtomicU64::new(0),
            used: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Closes the pool: its ready processes are killed, one still booting is not kept.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut ready) = self.ready.lock() {
            ready.clear();
        }
    }
}

impl WarmPools {
    pub(crate) fn new(configs: &[WarmPoolConfig]) -> Self {
        let pools = configs
            .iter()
            .map(|c| std::sync::Arc::new(Pool::new(None, c)))
            .collect();
        Self {
            pools: std::sync::RwLock::new(pools),
            names: AtomicU64::new(0),
        }
    }

    fn all(&self) -> Vec<std::sync::Arc<Pool>> {
        self.pools.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Makes the keyed pools (agents' own) exactly `wanted`: new ones start, changed ones
    /// are replaced, ones no longer wanted are closed. Configured pools stay as they are.
    pub(crate) fn set_keyed(&self, wanted: &[(String, WarmPoolConfig)]) {
        let Ok(mut pools) = self.pools.write() else {
            return;
        };
        pools.retain(|p| {
            let Some(key) = &p.key else { return true };
            let keep = wanted.iter().any(|(k, c)| {
                k == key
                    && c.options == p.shape
                    && c.sandbox == p.sandbox
                    && c.size == p.size
                    && c.idle == p.idle
            });
            if !keep {
                p.close();
            }
            keep
        });
        for (key, c) in wanted {
            if !pools.iter().any(|p| p.key.as_ref() == Some(key)) {
                pools.push(std::sync::Arc::new(Pool::new(Some(key.clone()), c)));
            }
        }
    }

    /// A ready process for `run`, if a pool serves its options.
    /// (`sandboxed`: whether a run or pool that does not say is sandboxed.)
    pub(crate) fn take(&self, run: &ClaudeRun, sandboxed: bool) -> Option<Warm> {
        let shape = shape_of(run)?;
        let pools = self.all();
        let pool = pools.iter().find(|p| {
            &p.shape == shape && p.sandbox.unwrap_or(sandboxed) == run.sandbox.unwrap_or(sandboxed)
        })?;
        let mut ready = pool.ready.lock().ok()?;
        while let Some(mut warm) = ready.pop_front() {
            if warm.process.is_alive() {
                pool.used.fetch_add(1, Ordering::Relaxed);
                return Some(warm);
            }
            pool.failed.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    /// Retires idle and dead processes and starts new ones up to each pool's size. A new
    /// process joins the ready queue only once it has booted (see `await_ready`).
    pub(crate) fn refill(
        &self,
        runner: &RunnerConfig,
        credential: &dyn Fn() -> Option<crate::IssuedCredential>,
    ) {
        for (index, pool) in self.all().iter().enumerate() {
            if pool.closed.load(Ordering::SeqCst) {
                continue;
            }
            let Ok(mut ready) = pool.ready.lock() else {
                continue;
            };
            let before = ready.len();
            ready.retain_mut(|w| w.process.born.elapsed() < pool.idle && w.process.is_alive());
            pool.retired
                .fetch_add((before - ready.len()) as u64, Ordering::Relaxed);
            while ready.len() + pool.booting.load(Ordering::SeqCst) < pool.size {
                let n = self.names.fetch_add(1, Ordering::Relaxed);
                let name = format!("warm-{index}-{}-{n}", std::process::id());
                let credential = credential();
                let env = credential
                    .as_ref()
                    .map(|c| c.env.clone())
                    .unwrap_or_default();
                match WarmProcess::start(runner, &pool.shape, pool.sandbox, &name, &env) {
                    Ok(mut process) => {
                        pool.started.fetch_add(1, Ordering::Relaxed);
                        pool.booting.fetch_add(1, Ordering::SeqCst);
                        let pool = pool.clone();
                        tokio::spawn(async move {
                            match process.await_ready(BOOT_TIMEOUT).await {
                                Ok(()) => {
                                    if let Ok(mut ready) = pool.ready.lock()
                                        && !pool.closed.load(Ordering::SeqCst)
                                    {
                                        ready.push_back(Warm {
                                            process,
                                            credential,
                                        });
                                    }
                                }
                                Err(e) => {
                                    pool.failed.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(pool = index, error = %e, "a warm process did not start");
                                }
                            }
                            pool.booting.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(e) => {
                        pool.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(pool = index, error = %e, "could not start a warm process");
                        break;
                    }
                }
            }
        }
    }

    /// Kills every ready process (on shutdown).
    pub(crate) fn clear(&self) {
        for pool in self.all() {
            pool.close();
        }
    }

    pub(crate) fn status(&self) -> Value {
        self.all()
            .iter()
            .map(|p| {
                json!({
                    "agent": p.key,
                    "size": p.size,
                    "ready": p.ready.lock().map_or(0, |r| r.len()),
                    "booting": p.booting.load(Ordering::SeqCst),
                    "started": p.started.load(Ordering::Relaxed),
                    "used": p.used.load(Ordering::Relaxed),
                    "retired": p.retired.load(Ordering::Relaxed),
                    "failed": p.failed.load(Ordering::Relaxed),
                    "idle_seconds": p.idle.as_secs(),
                })
            })
            .collect()
    }
}
