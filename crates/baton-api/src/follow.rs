//! Following a job's event log: everything after a sequence number, then the live tail,
//! ending after the job's terminal event. Events are read from the store by sequence
//! number; in-process notifications (and a 1 s poll, which also covers events written by
//! another process) only say when to look. So a follower can neither skip nor repeat an
//! event, however it is woken.

use std::collections::VecDeque;
use std::time::Duration;

use baton_core::JobId;
use baton_store::EventRecord;
use futures_util::Stream;
use tokio::sync::watch;

use crate::AppState;
use baton_core::is_terminal_kind;

pub enum Followed {
    Event(EventRecord),
    /// The store failed mid-stream; the stream ends after this.
    Failed(String),
}

struct Cursor {
    st: AppState,
    job: JobId,
    after: i64,
    buffer: VecDeque<EventRecord>,
    rx: watch::Receiver<baton_engine::Tail>,
    done: bool,
}

const PAGE: u32 = 256;

pub fn follow(st: AppState, job: JobId, after: i64) -> impl Stream<Item = Followed> + Send {
    let rx = st.engine().bus().subscribe(job);
    let cursor = Cursor {
        st,
        job,
        after,
        buffer: VecDeque::new(),
        rx,
        done: false,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffer.pop_front() {
                c.after = e.seq;
                if is_terminal_kind(&e.kind) {
                    c.done = true;
                    c.buffer.clear();
                }
                return Some((Followed::Event(e), c));
            }
            if c.done {
                return None;
            }
            let store = c.st.engine().store().clone();
            match store.list_events(c.job, c.after, PAGE).await {
                Ok(events) if !events.is_empty() => {
                    c.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    c.done = true;
                    return Some((Followed::Failed(e.to_string()), c));
                }
            }
            // Nothing new: is there nothing more to come?
            match store.get_job(c.job).await {
                Ok(job) if job.state.is_terminal() && c.after >= job.last_seq => return None,
                Ok(_) => {}
                Err(e) => {
                    c.done = true;
                    return Some((Followed::Failed(e.to_string()), c));
                }
            }
            let shutdown = c.st.shutdown();
            tokio::select! {
                _ = c.rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    })
}
