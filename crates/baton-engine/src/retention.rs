//! Retention: finished jobs are deleted once older than their state's keep time, and
//! audit records once older than theirs.

use std::time::Duration;

use baton_core::JobState;

use crate::{Engine, Result};

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub completed: Duration,
    pub failed: Duration,
    pub cancelled: Duration,
    pub dead: Duration,
    pub audit: Duration,
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
            audit: days(90),
            batch: 500,
        }
    }
}

impl Engine {
    /// Deletes finished jobs older than their retention, in bounded batches, yielding
    /// between batches so claims and completions are never held up for long. Returns how
    /// many jobs were deleted.
    pub async fn prune(&self) -> Result<u64> {
        let r = self.inner.cfg.retention;
        let now = self.now_ms();
        // Idempotency keys guard retries of a request, which come within minutes.
        self.inner.store.prune_idempotency(now - 86_400_000).await?;
        let audited = self
            .inner
            .store
            .prune_audit(now - r.audit.as_millis() as i64)
            .await?;
        if audited > 0 {
            tracing::info!(
                records = audited,
                "forgot audit records past their retention"
            );
        }
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
}
