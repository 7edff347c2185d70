//! The one way a background loop starts: named, stopped by its token, its failures
//! logged with its name. Each loop's body is a step function the tests call directly.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs `step` now and then every `period` until `stop`. A failed step is logged and the
/// loop goes on; a step is never interrupted by `stop`, only the wait after it.
pub(crate) fn every<F, Fut, E>(
    name: &'static str,
    period: Duration,
    stop: CancellationToken,
    mut step: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        tracing::debug!(task = name, "background loop started");
        loop {
            if let Err(e) = step().await {
                tracing::warn!(task = name, error = %e, "background step failed; will try again");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        tracing::debug!(task = name, "background loop stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn steps_until_stopped_and_survives_failures() {
        let stop = CancellationToken::new();
        let steps = Arc::new(AtomicUsize::new(0));
        let counted = steps.clone();
        let task = every("test", Duration::from_secs(1), stop.clone(), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("first step fails")
                } else {
                    Ok(())
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(
            steps.load(Ordering::SeqCst),
            3,
            "a step now, at 1 s and at 2 s"
        );
        stop.cancel();
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 3, "no step after the stop");
    }
}
