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
mod clock;
mod supervisor;
mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{ErrorKind, JobId, JobSpec, JobState};
use baton_runner::RunnerConfig;
use baton_store::{Finish, Inserted, JobRecord, NewEvent, NewJob, Store, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bus::{Change, EventBus, Tail};

/// Test support: the dangerous points at which a test can make an attempt's supervisor
/// stop dead, writing nothing more, as if the process had been killed there.
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

/// How long finished jobs (and their events and attempts) are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub completed: Duration,
    pub failed: Duration,
    pub cancelled: Duration,
    pub dead: Duration,
    /// Jobs deleted per transaction.
    pub batch: u32,
}

impl Default for Retention {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        Self {
            completed: days(7),
            failed: days(7),
            cancelled: days(7),
            dead: days(30),
            batch: 500,
        }
    }
}

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
    /// A planned crash (test support), taken by the first attempt that reaches it.
    crash: Mutex<Option<CrashPoint>>,
    /// When the dispatcher next looks for expired leases (ms since the epoch).
    next_sweep: AtomicI64,
    /// What the start found of earlier incarnations.
    recovery: std::sync::OnceLock<Recovery>,
}

/// What a node's start did about its earlier incarnations. Its cost grows with what they
/// were running when they died, never with everything they ever ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Process groups looked for, each named by its leader's pid and start time: the
    /// attempts that were running, and those rescued elsewhere after their lease.
    pub groups: usize,
    /// Processes of those groups found alive and killed.
    pub killed: usize,
    /// Processes with their `HOME` in the attempts directory that no record named.
    pub strays: usize,
    /// Attempts that were running, ended as interrupted and requeued.
    pub requeued: usize,
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
    #[doc(hidden)]
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

    /// The warm pools' counters, for health.
    pub fn warm_status(&self) -> serde_json::Value {
        self.inner.warm.status()
    }

    pub(crate) fn take_warm(&self, spec: &JobSpec) -> Option<baton_runner::warm::WarmProcess> {
        self.inner.warm.take(spec)
    }

    /// Attempts running in this process right now.
    pub fn running_here(&self) -> usize {
        self.inner
            .running
            .lock()
            .map(|m| m.tokens.len())
            .unwrap_or(0)
    }

    async fn recover_previous_incarnations(&self) -> Result<Recovery> {
        let inner = &self.inner;
        let store = &inner.store;
        let (node, me) = (&inner.cfg.node_id, &inner.incarnation);
        let orphans = store.orphans_of_node(node, me).await?;
        // The groups that may hold survivors: the orphans' (running when their node
        // died), and those of attempts another node already rescued after the lease (the
        // CLI died with its node, but not its children). Not the attempts that ended
        // under their own supervisor: it reaped them. One read of `/proc` for them all.
        let mut groups: Vec<(i32, u64)> = orphans
            .iter()
            .filter_map(|o| Some((o.pid?, o.pid_start?)))
            .chain(store.abandoned_processes(node, me).await?)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let mut report = Recovery {
            groups: groups.len(),
            killed: baton_runner::process::kill_stale_groups(&groups),
            requeued: orphans.len(),
            ..Recovery::default()
        };
        for orphan in orphans {
            self.rescue(
                orphan.job_id,
                orphan.attempt,
                "the node restarted while the attempt ran",
            )
            .await;
        }
        // Processes no record names: the children of a CLI started just before the
        // previous incarnation died, before it could write the CLI's pid.
        if let Ok(dir) = inner.cfg.runner.attempts_dir.canonicalize() {
            report.strays = baton_runner::process::kill_strays(&dir);
        }
        store.close_incarnations(node, me, self.now_ms()).await?;
        if report != Recovery::default() {
            tracing::info!(
                groups = report.groups,
                killed = report.killed,
                strays = report.strays,
                requeued = report.requeued,
                "recovered what earlier incarnations of this node left"
            );
        }
        Ok(report)
    }

    /// What this node's start found of its earlier incarnations.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery.get().copied().unwrap_or_default()
    }

    /// Ends an attempt whose owner is gone as an `interrupted` failure, due again now.
    async fn rescue(&self, job: JobId, attempt: u32, why: &str) {
        let store = &self.inner.store;
        let Ok(record) = store.get_job(job).await else {
            return;
        };
        let now = self.now_ms();
        // No backoff: the attempt did not fail on its own account.
        let finish = failure_finish(
            &record,
            attempt,
            ErrorKind::Interrupted,
            why.into(),
            None,
            now,
            0.0,
        );
        match store.finish_attempt(job, attempt, &finish, now).await {
            Ok(rec) => {
                tracing::warn!(job = %job, attempt, state = %rec.state, "rescued an attempt: {why}");
                self.inner.bus.publish_record(&rec);
            }
            Err(StoreError::Fenced { .. }) => {}
            Err(e) => tracing::error!(job = %job, error = %e, "could not rescue an attempt"),
        }
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

    /// Cancels a job: a queued one at once; a running one by killing its process group
    /// (here, or on whichever node runs it: by a hint at once, else within half a
    /// second by its poll).
    pub async fn cancel(&self, job: JobId) -> Result<JobRecord> {
        let record = self.inner.store.cancel(job, self.now_ms()).await?;
        if record.state == JobState::Running
            && let Ok(mut running) = self.inner.running.lock()
        {
            match running.tokens.get(&job) {
                Some(token) => token.cancel(),
                // Claimed here a moment ago, not yet registered: the claimer cancels it.
                None if record.lease_owner.as_deref() == Some(self.incarnation()) => {
                    running.pending_cancels.insert(job);
                }
                // Running elsewhere: that node hears the hint, or polls for the flag.
                None => {}
            }
        }
        self.inner.bus.publish_record(&record);
        Ok(record)
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

    /// One step of the dispatcher: rescues expired leases, then claims due jobs for the
    /// free slots and starts their supervisors. Returns how many attempts it started.
    pub async fn tick(&self) -> Result<usize> {
        Ok(self.step().await?.started)
    }

    async fn step(&self) -> Result<Step> {
        let inner = &self.inner;
        if inner.draining.load(Ordering::SeqCst) {
            return Ok(Step::default());
        }
        let now = self.now_ms();
        // Leases are counted in seconds: looking for expired ones once per poll interval
        // is soon enough, and keeps the sweep off the path of every submit and finish.
        if now >= inner.next_sweep.load(Ordering::SeqCst) {
            inner.next_sweep.store(
                now + inner.cfg.poll_interval.as_millis() as i64,
                Ordering::SeqCst,
            );
            for expired in inner.store.expired_leases(now).await? {
                self.rescue(expired.job_id, expired.attempt, "its lease expired")
                    .await;
            }
        }
        let free = inner.slots.available_permits();
        if free == 0 {
            return Ok(Step::default());
        }
        let lease_ms = inner.cfg.lease.as_millis() as i64;
        // Read again: the rescues above took time, and the claim is stamped with this.
        let now = self.now_ms();
        let claimed = inner
            .store
            .claim(&inner.incarnation, now, lease_ms, free as u32)
            .await?;
        let started = claimed.len();
        for c in claimed {
            let Ok(permit) = inner.slots.clone().try_acquire_owned() else {
                // Cannot happen (only this loop takes permits), but if it did the lease
                // would expire and the job be rescued, never lost.
                tracing::error!(job = %c.job.id, "claimed a job without a free slot");
                continue;
            };
            let token = inner.drain.child_token();
            if let Ok(mut running) = inner.running.lock() {
                running.tokens.insert(c.job.id, token.clone());
                if running.pending_cancels.remove(&c.job.id) {
                    token.cancel();
                }
            }
            inner.bus.publish_record(&c.job);
            let engine = self.clone();
            inner.tasks.spawn(async move {
                let id = c.job.id;
                supervisor::supervise(&engine, c.job, token).await;
                if let Ok(mut running) = engine.inner.running.lock() {
                    running.tokens.remove(&id);
                }
                drop(permit);
                engine.inner.wake.notify_one();
            });
        }
        Ok(Step {
            started,
            full: started == free,
        })
    }

    /// Deletes finished jobs older than their retention, in bounded batches, yielding
    /// between batches so claims and completions are never held up for long. Returns how
    /// many jobs were deleted.
    pub async fn prune(&self) -> Result<u64> {
        let r = self.inner.cfg.retention;
        let now = self.now_ms();
        // Idempotency keys guard retries of a request, which come within minutes.
        self.inner.store.prune_idempotency(now - 86_400_000).await?;
        let mut total = 0;
        for (state, age) in [
            (JobState::Completed, r.completed),
            (JobState::Failed, r.failed),
            (JobState::Cancelled, r.cancelled),
            (JobState::Dead, r.dead),
        ] {
            let before = now - age.as_millis() as i64;
            loop {
                let n = self.inner.store.prune(state, before, r.batch).await?;
                total += n;
                if n < u64::from(r.batch) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }

    /// Follows hints from other nodes sharing the database, until `stop`: a job became
    /// due (wake the dispatcher), a job has new events (wake its followers), a cancel was
    /// requested (stop the attempt if it runs here). Hints can be lost while the
    /// connection is re-established; then everyone is woken to look again, and the
    /// polls (dispatcher, SSE, [`Self::watch_cancels`]) cover the rest.
    async fn follow_notices(&self, stop: CancellationToken) {
        use baton_store::Notice;
        let inner = &self.inner;
        let mut notices = None;
        loop {
            if notices.is_none() {
                match inner.store.notices().await {
                    Ok(Some(n)) => notices = Some(n),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other nodes' hints; polling");
                    }
                }
            }
            let Some(n) = notices.as_mut() else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            let notice = tokio::select! {
                _ = stop.cancelled() => return,
                notice = n.next() => notice,
            };
            match notice {
                Ok(Notice::JobsDue) => inner.wake.notify_one(),
                Ok(Notice::Events { job, last_seq }) => inner.bus.publish(job, last_seq),
                Ok(Notice::Cancel(job)) => self.cancel_here(job),
                Ok(Notice::Reconnected) => {
                    tracing::info!("listening for other nodes' hints again");
                    inner.wake.notify_one();
                    inner.bus.wake_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the hints connection; polling until it is back");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// On a shared database a cancel may be requested on another node: look for the
    /// attempts running here that were asked to stop, twice a second, so a cancel takes
    /// effect within a second even when its hint was lost.
    async fn watch_cancels(&self, stop: CancellationToken) {
        let inner = &self.inner;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if self.running_here() == 0 {
                continue;
            }
            match inner.store.cancels_for(&inner.incarnation).await {
                Ok(ids) => ids.into_iter().for_each(|job| self.cancel_here(job)),
                Err(e) => tracing::debug!(error = %e, "could not look for cancels"),
            }
        }
    }

    /// Stops `job`'s attempt if it runs in this process.
    fn cancel_here(&self, job: JobId) {
        if let Ok(running) = self.inner.running.lock()
            && let Some(token) = running.tokens.get(&job)
        {
            token.cancel();
        }
    }

    /// The dispatch loop, until `shutdown`; then drains. A node that does not run jobs
    /// only follows other nodes' hints (for its SSE streams and waits) until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let notices = tokio::spawn({
            let engine = self.clone();
            let stop = shutdown.clone();
            async move { engine.follow_notices(stop).await }
        });
        // Cancels are watched until the drain is over, not only until shutdown begins.
        let drained = CancellationToken::new();
        let cancels = (inner.store.is_shared() && inner.cfg.runs_jobs).then(|| {
            let engine = self.clone();
            let stop = drained.clone();
            tokio::spawn(async move { engine.watch_cancels(stop).await })
        });
        if !inner.cfg.runs_jobs {
            shutdown.cancelled().await;
            let _ = notices.await;
            self.drain().await;
            return;
        }
        let refill = (!inner.warm.is_empty()).then(|| {
            let engine = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    // On a runtime worker, never a blocking-pool thread: see `warm`.
                    engine.inner.warm.refill(&engine.inner.cfg.runner);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                engine.inner.warm.clear();
            })
        });
        let retention = {
            let engine = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    match engine.prune().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(jobs = n, "retention pruned finished jobs"),
                        Err(e) => tracing::warn!(error = %e, "retention failed; will try again"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                    }
                }
            })
        };
        loop {
            let step = match self.step().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "dispatch failed; retrying");
                    Step::default()
                }
            };
            inner.bus.prune();
            // A full batch may mean more are due: go again at once while slots are free.
            // A short one emptied the due part of the queue; a submit wakes us again.
            if step.full && inner.slots.available_permits() > 0 {
                continue;
            }
            let mut wait = inner.cfg.poll_interval;
            if let Ok(Some(next)) = inner.store.next_run_at().await {
                let until = (next - self.now_ms()).max(0) as u64;
                wait = wait.min(Duration::from_millis(until.max(5)));
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(refill) = refill {
            let _ = refill.await;
        }
        let _ = retention.await;
        let _ = notices.await;
        self.drain().await;
        drained.cancel();
        if let Some(cancels) = cancels {
            let _ = cancels.await;
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

/// What one dispatcher step did (by default: nothing).
#[derive(Default)]
struct Step {
    started: usize,
    /// Every free slot was filled: more jobs may be due.
    full: bool,
}

/// The finish of a failed attempt, decided by the job's retry policy. `unit` is the
/// random draw for the backoff's jitter.
pub(crate) fn failure_finish(
    job: &JobRecord,
    attempt: u32,
    kind: ErrorKind,
    message: String,
    outcome: Option<serde_json::Value>,
    now: i64,
    unit: f64,
) -> Finish {
    // The job's `max_attempts` column is the budget: refunds (parking, drains) and
    // replays move it; the spec keeps the policy's delays.
    let policy = baton_core::RetryPolicy {
        max_attempts: job.max_attempts,
        ..job.spec.retry
    };
    let transition = policy.decide(kind, attempt);
    let next = JobState::Running
        .apply(transition)
        .unwrap_or(JobState::Failed);
    let error = serde_json::json!({"type": kind.as_str(), "message": message});
    let (run_at, event) = if next == JobState::Queued {
        let at = now + policy.backoff_ms(attempt, unit, 0) as i64;
        (
            Some(at),
            NewEvent::new(
                "attempt.failed",
                serde_json::json!({"attempt": attempt, "error": error, "retry_at": at}),
            ),
        )
    } else {
        (
            None,
            NewEvent::new(
                format!("job.{next}"),
                serde_json::json!({"state": next.as_str(), "error": error}),
            ),
        )
    };
    Finish {
        transition,
        run_at,
        outcome,
        error: Some((kind, message)),
        event,
        session: None,
        refund_attempt: false,
        trailing: Vec::new(),
        // A rescue's view; the supervisor says otherwise for its own finishes.
        reaped: false,
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}
