//! When a failed attempt is tried again. Exponential backoff with full jitter (a random
//! delay between zero and the capped exponential), so that a burst of failures does not
//! come back as a burst of retries. The randomness is an argument, so this stays pure.

use serde::{Deserialize, Serialize};

use crate::{ErrorKind, Transition};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff before the second attempt, before jitter.
    pub base_delay_ms: u64,
    /// The largest backoff, before jitter.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 5 * 60 * 1_000,
        }
    }
}

impl RetryPolicy {
    /// Decides what a failure of attempt number `attempt` (1-based) means for the job.
    pub fn decide(&self, kind: ErrorKind, attempt: u32) -> Transition {
        if kind == ErrorKind::Cancelled {
            Transition::Cancel
        } else if !kind.is_retryable() {
            Transition::Fail
        } else if attempt >= self.max_attempts {
            Transition::Exhaust
        } else {
            Transition::Retry
        }
    }

    /// The delay before the attempt after `attempt`, given `unit` drawn uniformly from
    /// [0, 1). `floor_ms` (an announced `Retry-After`) is never undercut.
    pub fn backoff_ms(&self, attempt: u32, unit: f64, floor_ms: u64) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        let ceiling = self
            .base_delay_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_delay_ms);
        let jittered = (ceiling as f64 * unit.clamp(0.0, 1.0)) as u64;
        jittered.max(floor_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_failures_retry_until_exhausted() {
        let p = RetryPolicy::default();
        assert_eq!(p.decide(ErrorKind::Crashed, 1), Transition::Retry);
        assert_eq!(p.decide(ErrorKind::Crashed, 3), Transition::Exhaust);
        assert_eq!(
            p.decide(ErrorKind::AuthenticationError, 1),
            Transition::Fail
        );
        assert_eq!(p.decide(ErrorKind::Cancelled, 1), Transition::Cancel);
    }

    #[test]
    fn backoff_is_capped_jittered_and_floored() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ms(1, 0.999_999, 0), 999);
        assert_eq!(p.backoff_ms(3, 0.5, 0), 2_000);
        assert_eq!(p.backoff_ms(40, 1.0, 0), p.max_delay_ms);
        assert_eq!(p.backoff_ms(1, 0.0, 7_000), 7_000);
    }
}
