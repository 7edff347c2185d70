//! Request rate limits: a token bucket per API key (its `requests_per_minute`) and per
//! project (its quota `requests_per_minute`, over all its keys). A bucket holds a
//! minute's requests and refills continuously; a request it cannot pay for is refused
//! with `429` and `Retry-After`. Every answer to a limited caller says where it stands in
//! `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds until the
//! bucket is full again). Buckets live in this node's memory; full ones are forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

struct Bucket {
    tokens: f64,
    at: Instant,
    per_minute: u32,
}

impl Bucket {
    fn rate(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate()).min(f64::from(self.per_minute));
        self.at = now;
    }

    fn full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.rate() >= f64::from(self.per_minute)
    }
}

/// Where a caller stands after one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
    /// Seconds until one request is allowed (when refused).
    pub retry_after: u64,
}

impl Standing {
    /// The tighter of two: a refusal, else the fewer requests remaining.
    fn tighter(self, other: Standing) -> Standing {
        match (self.allowed, other.allowed) {
            (false, true) => self,
            (true, false) => other,
            (false, false) if self.retry_after >= other.retry_after => self,
            (false, false) => other,
            _ if self.remaining <= other.remaining => self,
            _ => other,
        }
    }

    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }
}

/// Checks made between sweeps of full buckets.
const SWEEP_EVERY: u32 = 4096;

#[derive(Default)]
pub struct Limiter {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    buckets: HashMap<String, Bucket>,
    since_sweep: u32,
}

impl Limiter {
    /// Takes one request from each bucket named (`(bucket, per_minute)`), all or none:
    /// a request refused by one limit does not use up the other.
    pub fn check(&self, limits: &[(String, u32)], now: Instant) -> Option<Standing> {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.since_sweep += 1;
        if state.since_sweep >= SWEEP_EVERY {
            state.since_sweep = 0;
            state.buckets.retain(|_, b| !b.full(now));
        }
        let mut standings = Vec::with_capacity(limits.len());
        for (name, per_minute) in limits {
            let bucket = state.buckets.entry(name.clone()).or_insert(Bucket {
                tokens: f64::from(*per_minute),
                at: now,
                per_minute: *per_minute,
            });
            if bucket.per_minute != *per_minute {
                // The limit changed: keep what is left, within the new size.
                bucket.per_minute = *per_minute;
            }
            bucket.refill(now);
            standings.push((name, bucket.tokens >= 1.0));
        }
        let allowed = standings.iter().all(|(_, ok)| *ok);
        let mut verdict: Option<Standing> = None;
        for (name, _) in standings {
            let b = state.buckets.get_mut(name.as_str())?;
            if allowed {
                b.tokens -= 1.0;
            }
            let rate = b.rate();
            let standing = Standing {
                allowed: b.tokens >= 0.0 && allowed,
                limit: b.per_minute,
                remaining: b.tokens.max(0.0).floor() as u32,
                reset: ((f64::from(b.per_minute) - b.tokens) / rate)
                    .ceil()
                    .max(0.0) as u64,
                retry_after: if b.tokens >= 1.0 || allowed {
                    0
                } else {
                    ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64
                },
            };
            verdict = Some(verdict.map_or(standing, |v| v.tighter(standing)));
        }
        verdict
    }

    /// Buckets held (for tests of the sweep).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|s| s.buckets.len())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A minute, for tests and callers that move time by hand.
pub const MINUTE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Vec<(String, u32)> {
        vec![("key:k".to_string(), n)]
    }

    #[test]
    fn a_bucket_allows_a_minutes_requests_then_refills_at_the_rate() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let s = l.check(&key(3), t0).unwrap();
            assert!(s.allowed, "{i}");
            assert_eq!(s.remaining, 2 - i);
            assert_eq!(s.limit, 3);
        }
        let refused = l.check(&key(3), t0).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(
            refused.retry_after, 20,
            "one request every 20 s at 3 a minute"
        );
        assert_eq!(refused.reset, 60);
        // 20 s later one more is allowed, and only one.
        let later = t0 + Duration::from_secs(20);
        assert!(l.check(&key(3), later).unwrap().allowed);
        assert!(!l.check(&key(3), later).unwrap().allowed);
        // After a minute idle the bucket is full, and a sweep forgets it.
        let idle = later + MINUTE;
        assert_eq!(l.check(&key(3), idle).unwrap().remaining, 2);
        assert_eq!(l.len(), 1);
        for _ in 0..SWEEP_EVERY {
            l.check(&[("key:other".to_string(), 1_000_000)], idle + MINUTE);
        }
        assert_eq!(
            l.len(),
            1,
            "the full bucket of key:k was swept, key:other kept"
        );
    }

    #[test]
    fn two_limits_take_all_or_nothing_and_report_the_tighter() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let both = |k: &str| vec![(format!("key:{k}"), 10), ("project:p".to_string(), 2)];
        assert_eq!(
            l.check(&both("a"), t0).unwrap().remaining,
            1,
            "the project's"
        );
        assert!(l.check(&both("b"), t0).unwrap().allowed);
        let refused = l.check(&both("a"), t0).unwrap();
        assert!(
            !refused.allowed,
            "the project's two are spent, over both keys"
        );
        // The refusal did not take from key a's own bucket.
        let alone = l.check(&[("key:a".to_string(), 10)], t0).unwrap();
        assert_eq!(alone.remaining, 8);
    }
}
