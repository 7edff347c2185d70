//! In-process fan-out of "job X has new events". Subscribers read the events themselves
//! from the store, by sequence number, so a missed wake-up costs latency, never an event.
//! On a shared database, other nodes' writes arrive here as hints (LISTEN/NOTIFY); SSE
//! streams also poll, which covers hints lost while the listener reconnects.
//!
//! A publisher that knows what became of the job says so ([`Change`]), so a waiter for
//! the end need not read the job again after every batch of events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_core::JobId;
use baton_store::JobRecord;
use tokio::sync::watch;

/// The latest news of one job.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    /// The job's log ends here, as far as this process knows.
    pub last_seq: i64,
    pub change: Change,
}

/// What the publisher of a [`Tail`] knew of the job's state.
#[derive(Clone, Debug, Default)]
pub enum Change {
    /// Nothing (a hint from another node, a wake-up to look again).
    #[default]
    Unknown,
    /// Its running attempt appended events: it is still running.
    Running,
    /// The job as it stood right after the change.
    Record(Arc<JobRecord>),
}

#[derive(Default)]
pub struct EventBus {
    channels: Mutex<HashMap<JobId, watch::Sender<Tail>>>,
}

impl EventBus {
    pub fn subscribe(&self, job: JobId) -> watch::Receiver<Tail> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(job)
            .or_insert_with(|| watch::channel(Tail::default()).0)
            .subscribe()
    }

    /// Announces that `job`'s log now ends at `last_seq`.
    pub fn publish(&self, job: JobId, last_seq: i64) {
        self.send(
            job,
            Tail {
                last_seq,
                change: Change::Unknown,
            },
        );
    }

    /// Announces events appended by the job's running attempt.
    pub fn publish_running(&self, job: JobId, last_seq: i64) {
        self.send(
            job,
            Tail {
                last_seq,
                change: Change::Running,
            },
        );
    }

    /// Announces a change of the job's state, with the job as it now is.
    pub fn publish_record(&self, record: &JobRecord) {
        self.send(
            record.id,
            Tail {
                last_seq: record.last_seq,
                change: Change::Record(Arc::new(record.clone())),
            },
        );
    }

    fn send(&self, job: JobId, tail: Tail) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&job) {
            if tx.receiver_count() == 0 {
                map.remove(&job);
            } else {
                tx.send_replace(tail);
            }
        }
    }

    /// Wakes every subscriber, to look at the store again: after hints may have been lost.
    pub fn wake_all(&self) {
        let map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for tx in map.values() {
            tx.send_modify(|t| t.change = Change::Unknown);
        }
    }

    /// Drops channels nobody listens to any more.
    pub fn prune(&self) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
    }
}
