//! Baton's engine: turns queued jobs into supervised attempts and attempts into state.
//!
//! Concurrency model. One dispatch loop per process calls [`Engine::tick`], which rescues
//! expired leases and claims as many due jobs as there are free slots (a semaphore of
//! `max_concurrency` permits: back-pressure, never an unbounded spawn). Each claimed job
//! gets one supervisor task, which alone may write the attempt's events and end it: it owns
//! the child process (through the runner), renews the lease on a timer *in the same loop
//! that reads the child's output*, so a wedged supervisor stops renewing and is rescued,
//! and every write it makes carries the attempt number, so once fenced it can change
//! nothing. The loop wakes on a submit or a finished attempt (in-process `Notify`), at
//! the next `run_at`, and on a polling interval that covers everything else.
//!
//! **Architecture invariant:** the engine reaches the world only through `baton-store`
//! and `baton-runner`; it knows nothing of HTTP.

mod bus;
mod cancel;
mod clock;
mod dispatch;
mod finish;
mod hints;
mod loops;
mod recovery;
mod retention;
mod supervisor;
mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{JobId, JobSpec, Step};
use baton_runner::RunnerConfig;
use baton_store::{Inserted, JobRecord, NewJob, Store, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bus::{Change, EventBus, Tail};

/// Test support: the dangerous points at which a test can make an attempt's supervisor
/// stop dead, writing nothing more, as if the process had been killed there. Planned only
/// in builds with the `testing` feature; elsewhere no attempt ever stops at one.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The job is claimed; the CLI has not been started.
    AfterClaim,
    /// Inside an event append's transaction, before it commits.
    DuringAppend,
    /// The CLI has exited and been reaped; its end is not recorded.
    AfterExit,
    /// Inside the finishing transaction, after the job row moved and before the attempt and
    /// the event are written.
    BetweenFinishWrites,
}

/// Cancellation tokens of local attempts, and cancels that arrived for a job this process
/// had claimed but not yet registered (one lock, so the two cannot miss each other).
#[derive(Default)]
struct Running {
    tokens: HashMap<JobId, CancellationToken>,
    pending_cancels: std::collections::HashSet<JobId>,
}
pub use clock::{Clock, ManualClock, SystemClock};
pub use recovery::Recovery;
pub use retention::Retention;
pub use warm::WarmPoolConfig;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Stable across restarts of this node: how a new incarnation finds its predecessor's
    /// attempts.
    pub node_id: String,
    pub max_concurrency: usize,
    /// How long an attempt's lease lasts; renewed every third of it.
    pub lease: Duration,
    /// The dispatcher looks for due jobs at least this often.
    pub poll_interval: Duration,
    /// On shutdown, how long running attempts may take to finish before they are
    /// stopped and requeued.
    pub drain_timeout: Duration,
    pub runner: RunnerConfig,
    /// Pre-started CLI processes for the job options marked warm.
    pub warm_pools: Vec<WarmPoolConfig>,
    pub retention: Retention,
    /// Whether this node claims and runs jobs (`worker` and `all` roles); an `api` node
    /// only queues, reads and cancels.
    pub runs_jobs: bool,
}

/// Per-attempt credentials: Baton's proxy gives each attempt a token of its own.
pub trait Credentials: Send + Sync + 'static {
    /// The variables `job`'s attempt runs with in place of any credential, and what keeps
    /// them valid: dropped when the attempt ends. `None`: the attempt runs without. A
    /// refusal: a budget the job falls under is spent at `now_ms`, so it does not start.
    fn issue<'a>(
        &'a self,
        job: &'a JobRecord,
        attempt: u32,
        now_ms: i64,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Option<IssuedCredential>, Refusal>> + Send + 'a,
        >,
    >;

    /// A credential for a warm process, not yet any job's: its calls are charged to no
    /// one until [`Credentials::bind`] gives it to the job that takes the process.
    fn issue_warm(&self) -> Option<IssuedCredential>;

    /// Gives a warm process's credential to `job`'s attempt, with the same checks as
    /// [`Credentials::issue`].
    fn bind<'a>(
        &'a self,
        credential: &'a IssuedCredential,
        job: &'a JobRecord,
        attempt: u32,
        now_ms: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Refusal>> + Send + 'a>>;
}

/// Why an attempt may not start: a budget is spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// Park the job until then (the budget's window resets), rather than fail it.
    pub park_until: Option<i64>,
}

/// An attempt's credential: its variables, valid while `guard` lives.
pub struct IssuedCredential {
    pub env: Vec<(String, String)>,
    pub guard: Box<dyn CredentialGuard>,
}

/// What keeps an attempt's credential valid, and what it saw.
pub trait CredentialGuard: Send + Sync {
    /// The budget a call was refused for, if one was: the attempt then ends
    /// `budget_exceeded`, whatever the CLI made of the refusal.
    fn budget_exceeded(&self) -> Option<String>;

    /// For the issuer to find its own type again ([`Credentials::bind`]).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// How long finished jobs (and their events and attempts) are kept.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Baton is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cfg: EngineConfig,
    clock: Arc<dyn Clock>,
    incarnation: String,
    slots: Arc<Semaphore>,
    wake: Notify,
    bus: EventBus,
    /// The attempts this process supervises.
    running: Mutex<Running>,
    /// Cancelled when the node drains: running attempts stop and are requeued.
    drain: CancellationToken,
    draining: AtomicBool,
    tasks: TaskTracker,
    warm: warm::WarmPools,
    /// Per-attempt credentials (Baton's proxy), once set.
    credentials: std::sync::OnceLock<Arc<dyn Credentials>>,
    /// A planned crash (test support), taken by the first attempt that reaches it.
    crash: Mutex<Option<CrashPoint>>,
    /// When the dispatcher next looks for expired leases (ms since the epoch).
    next_sweep: AtomicI64,
    /// What the start found of earlier incarnations.
    recovery: std::sync::OnceLock<Recovery>,
}

impl Engine {
    /// Registers a new incarnation of this node and rescues what the previous one left
    /// running: its process groups are killed and its jobs requeued at once.
    pub async fn start(store: Store, cfg: EngineConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let incarnation = uuid_like();
        let now = clock.now_ms();
        store
            .register_incarnation(&incarnation, &cfg.node_id, std::process::id(), now)
            .await?;
        let warm = warm::WarmPools::new(&cfg.warm_pools);
        let engine = Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(cfg.max_concurrency)),
                store,
                cfg,
                clock,
                incarnation,
                wake: Notify::new(),
                bus: EventBus::default(),
                running: Mutex::new(Running::default()),
                drain: CancellationToken::new(),
                draining: AtomicBool::new(false),
                tasks: TaskTracker::new(),
                warm,
                credentials: std::sync::OnceLock::new(),
                crash: Mutex::new(None),
                next_sweep: AtomicI64::new(0),
                recovery: std::sync::OnceLock::new(),
            }),
        };
        let recovery = engine.recover_previous_incarnations().await?;
        let _ = engine.inner.recovery.set(recovery);
        Ok(engine)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Test support: the next attempt to reach `point` stops there, as if killed.
    #[cfg(feature = "testing")]
    pub fn plan_crash(&self, point: CrashPoint) {
        if let Ok(mut c) = self.inner.crash.lock() {
            *c = Some(point);
        }
    }

    pub(crate) fn crash_now(&self, point: CrashPoint) -> bool {
        self.inner.crash.lock().is_ok_and(|mut c| {
            if *c == Some(point) {
                c.take().is_some()
            } else {
                false
            }
        })
    }

    /// Makes the agents' warm pools `wanted` (key, options and size); configured pools
    /// stay. Only a node that runs jobs keeps processes.
    pub fn set_agent_warm_pools(&self, wanted: &[(String, WarmPoolConfig)]) {
        if self.inner.cfg.runs_jobs {
            self.inner.warm.set_keyed(wanted);
        }
    }

    /// The warm pools' counters, for health.
    pub fn warm_status(&self) -> serde_json::Value {
        self.inner.warm.status()
    }

    pub(crate) fn take_warm(&self, step: &Step) -> Option<warm::Warm> {
        let Step::Claude(run) = step;
        self.inner
            .warm
            .take(run, self.inner.cfg.runner.sandbox_default)
    }

    /// Whether attempts get credentials of their own (a warm process without one is then
    /// not used).
    pub(crate) fn warm_credential_expected(&self) -> bool {
        self.inner.credentials.get().is_some()
    }

    /// A warm process's credential, when attempts get credentials of their own.
    pub(crate) fn warm_credential(&self) -> Option<IssuedCredential> {
        self.inner.credentials.get()?.issue_warm()
    }

    pub(crate) async fn bind_credential(
        &self,
        credential: &IssuedCredential,
        job: &JobRecord,
        attempt: u32,
    ) -> Result<(), Refusal> {
        match self.inner.credentials.get() {
            Some(c) => c.bind(credential, job, attempt, self.now_ms()).await,
            None => Ok(()),
        }
    }

    /// Attempts running in this process right now.
    pub fn running_here(&self) -> usize {
        self.inner
            .running
            .lock()
            .map(|m| m.tokens.len())
            .unwrap_or(0)
    }

    /// Queues a job (or returns the one an earlier request with the same idempotency key
    /// created).
    pub async fn submit(&self, job: NewJob) -> Result<Inserted> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let inserted = self.inner.store.insert_job(job, self.now_ms()).await?;
        self.inner.wake.notify_one();
        Ok(inserted)
    }

    /// Gives every attempt from now on a credential of its own (set once, at start).
    pub fn set_credentials(&self, c: Arc<dyn Credentials>) {
        let _ = self.inner.credentials.set(c);
    }

    /// Adds one of Baton's own events to a running attempt's log (a cost alert), and tells
    /// its followers. Refused (`Fenced`) once the attempt has ended.
    pub async fn note(&self, job: JobId, attempt: u32, event: baton_store::NewEvent) -> Result<()> {
        let last = self
            .inner
            .store
            .append_events(
                job,
                attempt,
                &[event],
                &baton_store::AttemptMeta::default(),
                self.now_ms(),
            )
            .await?;
        self.inner.bus.publish_running(job, last);
        Ok(())
    }

    pub(crate) async fn credential_for(
        &self,
        job: &JobRecord,
        attempt: u32,
    ) -> Result<Option<IssuedCredential>, Refusal> {
        match self.inner.credentials.get() {
            Some(c) => c.issue(job, attempt, self.now_ms()).await,
            None => Ok(None),
        }
    }

    /// Whether this node is draining (it queues nothing new).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Tells the dispatcher that jobs were queued behind its back (by a routine's fire).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs `step` now and then every `period` until `stop`: the one way a background
    /// loop starts (named, its failures logged), for loops that live above the engine.
    pub fn spawn_loop<F, Fut, E>(
        name: &'static str,
        period: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
        step: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        loops::every(name, period, stop, step)
    }

    /// Replays a failed or dead job with `spec` and `attempts` more attempts.
    pub async fn replay(&self, job: JobId, spec: &JobSpec, attempts: u32) -> Result<JobRecord> {
        let record = self
            .inner
            .store
            .replay(job, spec, attempts, self.now_ms())
            .await?;
        self.inner.bus.publish_record(&record);
        self.inner.wake.notify_one();
        Ok(record)
    }

    /// Waits until `job` is terminal or `timeout` passes, and returns it as it then is.
    pub async fn wait_for(&self, job: JobId, timeout: Duration) -> Result<JobRecord> {
        self.wait_until(job, timeout, |r| r.state.is_terminal())
            .await
    }

    /// Waits until `job` is as `done` wants it (and at the latest until it is terminal) or
    /// `timeout` passes, and returns it as it then is. The job is read again only when a
    /// wake-up does not say what became of it.
    pub async fn wait_until(
        &self,
        job: JobId,
        timeout: Duration,
        done: impl Fn(&JobRecord) -> bool,
    ) -> Result<JobRecord> {
        let mut rx = self.inner.bus.subscribe(job);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut record = self.inner.store.get_job(job).await?;
        loop {
            if done(&record) || record.state.is_terminal() {
                return Ok(record);
            }
            let poll = tokio::time::sleep(Duration::from_millis(500));
            tokio::select! {
                changed = rx.changed() => {
                    let change = match changed {
                        Ok(()) => rx.borrow_and_update().change.clone(),
                        Err(_) => Change::Unknown,
                    };
                    match change {
                        Change::Record(r) => {
                            record = JobRecord::clone(&r);
                            continue;
                        }
                        Change::Running => continue,
                        Change::Unknown => {}
                    }
                }
                _ = poll => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(self.inner.store.get_job(job).await?),
            }
            record = self.inner.store.get_job(job).await?;
        }
    }

    /// Stops claiming, lets running attempts finish for up to the drain timeout, then
    /// stops the rest and requeues them.
    pub async fn drain(&self) {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::SeqCst);
        inner.tasks.close();
        let running = self.running_here();
        if running > 0 {
            tracing::info!(running, timeout = ?inner.cfg.drain_timeout, "draining running attempts");
        }
        if tokio::time::timeout(inner.cfg.drain_timeout, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout: stopping and requeueing running attempts");
            inner.drain.cancel();
            inner.tasks.wait().await;
        }
        if let Err(e) = inner
            .store
            .stop_incarnation(&inner.incarnation, self.now_ms())
            .await
        {
            tracing::warn!(error = %e, "could not record the end of this incarnation");
        }
    }

    pub(crate) fn is_draining_cancel(&self) -> bool {
        self.inner.drain.is_cancelled()
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}
