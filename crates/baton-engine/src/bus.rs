//! In-process fan-out of "job X has new events". Subscribers read the events themselves
//! from the store, by sequence number, so a missed wake-up costs latency, never an event.
//! On a shared database, other nodes' writes arrive here as hints (LISTEN/NOTIFY); SSE
//! streams also poll, which covers hints lost while the listener reconnects.

use std::collections::HashMap;
use std::sync::Mutex;

use baton_core::JobId;
use tokio::sync::watch;

#[derive(Default)]
pub struct EventBus {
    channels: Mutex<HashMap<JobId, watch::Sender<i64>>>,
}

impl EventBus {
    pub fn subscribe(&self, job: JobId) -> watch::Receiver<i64> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(job)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Announces that `job`'s log now ends at `last_seq`.
    pub fn publish(&self, job: JobId, last_seq: i64) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&job) {
            if tx.receiver_count() == 0 {
                map.remove(&job);
            } else {
                tx.send_replace(last_seq);
            }
        }
    }

    /// Wakes every subscriber, to look at the store again: after hints may have been lost.
    pub fn wake_all(&self) {
        let map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for tx in map.values() {
            tx.send_modify(|_| {});
        }
    }

    /// Drops channels nobody listens to any more.
    pub fn prune(&self) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
    }
}
