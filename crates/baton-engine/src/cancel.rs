//! Cancels: a queued job at once, a running one by stopping its attempt here or, through
//! the shared database, on whichever node runs it.

use crate::{Engine, Result};
use baton_core::{JobId, JobState};
use baton_store::JobRecord;

impl Engine {
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

    /// On a shared database a cancel may be requested on another node: look for the
    /// attempts running here that were asked to stop, twice a second, so a cancel takes
    /// effect within a second even when its hint was lost.
    pub(crate) async fn watch_cancels(&self) -> Result<()> {
        if self.running_here() > 0 {
            let inner = &self.inner;
            for job in inner.store.cancels_for(&inner.incarnation).await? {
                self.cancel_here(job);
            }
        }
        Ok(())
    }

    /// Stops `job`'s attempt if it runs in this process.
    pub(crate) fn cancel_here(&self, job: JobId) {
        if let Ok(running) = self.inner.running.lock()
            && let Some(token) = running.tokens.get(&job)
        {
            token.cancel();
        }
    }
}
