//! Hints from other nodes sharing a PostgreSQL database (LISTEN/NOTIFY).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Engine;

impl Engine {
    /// Follows hints from other nodes sharing the database, until `stop`: a job became
    /// due (wake the dispatcher), a job has new events (wake its followers), a cancel was
    /// requested (stop the attempt if it runs here). Hints can be lost while the
    /// connection is re-established; then everyone is woken to look again, and the
    /// polls (dispatcher, SSE, [`Self::watch_cancels`]) cover the rest.
    pub(crate) async fn follow_notices(&self, stop: CancellationToken) {
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
}
