//! The dispatcher: one step claims due jobs into free slots and starts their supervisors;
//! the loop around it wakes on submits, finished attempts, the next `run_at` and a poll,
//! and starts the node's background loops.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::loops::every;
use crate::{Engine, Result, supervisor};

/// What one dispatcher step did (by default: nothing).
#[derive(Default)]
struct Step {
    started: usize,
    /// Every free slot was filled: more jobs may be due.
    full: bool,
}

impl Engine {
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
            every(
                "cancels",
                Duration::from_millis(500),
                drained.clone(),
                move || {
                    let engine = engine.clone();
                    async move { engine.watch_cancels().await }
                },
            )
        });
        if !inner.cfg.runs_jobs {
            shutdown.cancelled().await;
            let _ = notices.await;
            self.drain().await;
            return;
        }
        // Always: an agent's pool may be asked for at any time.
        let refill = Some({
            let engine = self.clone();
            every(
                "warm pools",
                Duration::from_millis(100),
                shutdown.clone(),
                move || {
                    // On a runtime worker, never a blocking-pool thread: see `warm`.
                    engine
                        .inner
                        .warm
                        .refill(&engine.inner.cfg.runner, &|| engine.warm_credential());
                    std::future::ready(Ok::<(), std::convert::Infallible>(()))
                },
            )
        });
        let retention = {
            let engine = self.clone();
            every(
                "retention",
                Duration::from_secs(600),
                shutdown.clone(),
                move || {
                    let engine = engine.clone();
                    async move {
                        let n = engine.prune().await?;
                        if n > 0 {
                            tracing::info!(jobs = n, "retention pruned finished jobs");
                        }
                        Ok::<(), crate::EngineError>(())
                    }
                },
            )
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
            inner.warm.clear();
        }
        let _ = retention.await;
        let _ = notices.await;
        self.drain().await;
        drained.cancel();
        if let Some(cancels) = cancels {
            let _ = cancels.await;
        }
    }
}
