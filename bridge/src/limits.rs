//! Per-user limits: `tools/call` requests per second per subject, a token bucket each (bursts
//! of one second's worth). The open-sessions-per-user count lives with the sessions
//! ([`crate::Bridge::reserve_session`]). Both answer 429 with `Retry-After` and a JSON-RPC error.
//!
//! Why here and not in Envoy's local rate limit: a bucket per subject could be keyed on the
//! `x-mcpgw-subject` header at the edge, but before MCP 2026-07-28 what a POST is (a tool call, a
//! list, a notification, a response) is only in its body, which Envoy's rate limiter does not
//! read. The bridge parses every body anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per subject.
#[derive(Debug)]
pub struct CallLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl CallLimiter {
    /// `per_second` calls per second per subject, bursts of as many; 0 admits everything.
    pub fn new(per_second: u32) -> CallLimiter {
        CallLimiter {
            per_second: f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `subject`'s bucket at `now`, or says how long until one is there.
    pub fn admit(&self, subject: &str, now: Instant) -> Result<(), Duration> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = Bucket {
            tokens: self.per_second,
            at: now,
        };
        let b = match buckets.get_mut(subject) {
            Some(b) => b,
            None => buckets.entry(subject.to_owned()).or_insert(full),
        };
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.per_second);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }

    /// Forgets buckets that have refilled completely (they would admit a full burst anyway).
    pub fn forget_full(&self, now: Instant) {
        let per_second = self.per_second;
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second
                    < per_second
            });
        }
    }
}

/// Whole seconds for `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_until_the_bucket_refills() {
        let l = CallLimiter::new(5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.admit("oidc:alice", t0), Ok(()));
        }
        let wait = l.admit("oidc:alice", t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(200) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert_eq!(l.admit("oidc:bob", t0), Ok(()), "buckets are per subject");
        assert_eq!(
            l.admit("oidc:alice", t0 + Duration::from_millis(200)),
            Ok(())
        );
        assert!(
            l.admit("oidc:alice", t0 + Duration::from_millis(200))
                .is_err()
        );
    }

    #[test]
    fn zero_turns_the_limit_off_and_full_buckets_are_forgotten() {
        let off = CallLimiter::new(0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| off.admit("x", t0).is_ok()));
        let l = CallLimiter::new(2);
        assert!(l.admit("x", t0).is_ok());
        l.forget_full(t0);
        assert_eq!(l.buckets.lock().map(|b| b.len()).unwrap_or(0), 1);
        l.forget_full(t0 + Duration::from_secs(1));
        assert_eq!(l.buckets.lock().map(|b| b.len()).unwrap_or(1), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
