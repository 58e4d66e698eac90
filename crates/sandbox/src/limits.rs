//! Hourly quota (402) and the per-token leaky bucket (429).
//!
//! Quota: a **sliding window** log per key, as Toggl documents it ("sliding 60-minute window").
//! A request is counted when it is admitted; a request answered 402 is not counted (otherwise a
//! client polling for the reset would push the reset out forever). `resets_in` is the time until
//! the oldest counted request leaves the window, i.e. until one more request is allowed; with an
//! empty window it is the full window. On a plan that does not enforce the quota the log is
//! capped at `total` entries, so memory stays bounded and `remaining` bottoms out at 0.
//!
//! Keys: org-scoped requests (anything under `/workspaces/{wid}`, `/organizations/{oid}`,
//! Reports and Webhooks paths naming a workspace) count per (user, organization); everything
//! else that is authenticated (`/me...`, `/workspaces` list, legacy `/time_entries`) counts per
//! user.
//!
//! Leaky bucket: capacity [`BUCKET_CAPACITY`] requests leaking one per second per token (per
//! user: token and email/password logins of one user share it). Toggl's "safe rate" is about
//! 1 req/s; the real burst size is not published, so a small burst keeps a client that paces at
//! 1 req/s from ever seeing 429 while a client that does not pace sees it quickly.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Requests a token may send back-to-back before the bucket overflows.
pub const BUCKET_CAPACITY: f64 = 3.0;
/// Requests per second the bucket drains.
pub const BUCKET_RATE_PER_SEC: f64 = 1.0;

/// Which quota window a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKey {
    /// The user-level window (`organization_id: null` in `/me/quota`).
    User(i64),
    /// The window of one user in one organization.
    Org {
        /// The user.
        user_id: i64,
        /// The organization.
        organization_id: i64,
    },
}

/// The state of one window after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    /// Whether the request was admitted (and counted).
    pub allowed: bool,
    /// Requests left in the window after this one.
    pub remaining: i64,
    /// Whole seconds until the window frees a request (rounded up).
    pub resets_in_secs: u64,
    /// Requests allowed per window.
    pub total: u32,
}

/// Sliding-window quota counters for all keys.
#[derive(Debug)]
pub struct Quota {
    window: Duration,
    logs: HashMap<QuotaKey, VecDeque<Instant>>,
}

impl Quota {
    /// Creates empty counters with the given window length.
    pub fn new(window: Duration) -> Self {
        Quota {
            window: window.max(Duration::from_secs(1)),
            logs: HashMap::new(),
        }
    }

    /// Counts one request against `key` unless the window is spent and `enforce` is set.
    pub fn hit(&mut self, key: QuotaKey, total: u32, enforce: bool, now: Instant) -> QuotaStatus {
        let window = self.window;
        let log = self.logs.entry(key).or_default();
        expire(log, window, now);
        let used = log.len() as u64;
        if used >= u64::from(total) {
            if enforce {
                return status(log, window, total, now, false);
            }
            // Not enforced: keep the log bounded.
            log.pop_front();
        }
        log.push_back(now);
        status(log, window, total, now, true)
    }

    /// The current state of `key` without counting anything.
    pub fn peek(&mut self, key: QuotaKey, total: u32, now: Instant) -> QuotaStatus {
        let window = self.window;
        match self.logs.get_mut(&key) {
            Some(log) => {
                expire(log, window, now);
                status(log, window, total, now, true)
            }
            None => QuotaStatus {
                allowed: true,
                remaining: i64::from(total),
                resets_in_secs: window.as_secs(),
                total,
            },
        }
    }
}

fn expire(log: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while let Some(&oldest) = log.front() {
        if now.saturating_duration_since(oldest) >= window {
            log.pop_front();
        } else {
            break;
        }
    }
}

fn status(
    log: &VecDeque<Instant>,
    window: Duration,
    total: u32,
    now: Instant,
    allowed: bool,
) -> QuotaStatus {
    let resets_in = match log.front() {
        Some(&oldest) => window.saturating_sub(now.saturating_duration_since(oldest)),
        None => window,
    };
    QuotaStatus {
        allowed,
        remaining: i64::from(total) - log.len() as i64,
        resets_in_secs: ceil_secs(resets_in),
        total,
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Leaky buckets per user.
#[derive(Debug, Default)]
pub struct Buckets {
    levels: HashMap<i64, (f64, Instant)>,
}

impl Buckets {
    /// Admits one request for `user_id`, or returns how long to wait (rounded up, at least 1 s).
    pub fn admit(&mut self, user_id: i64, now: Instant) -> Result<(), Duration> {
        let (level, last) = self.levels.entry(user_id).or_insert((0.0, now));
        let drained = now.saturating_duration_since(*last).as_secs_f64() * BUCKET_RATE_PER_SEC;
        *level = (*level - drained).max(0.0);
        *last = now;
        if *level + 1.0 > BUCKET_CAPACITY {
            let wait = (*level + 1.0 - BUCKET_CAPACITY) / BUCKET_RATE_PER_SEC;
            return Err(Duration::from_secs(wait.ceil().max(1.0) as u64));
        }
        *level += 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: QuotaKey = QuotaKey::User(1);

    #[test]
    fn quota_counts_down_and_refuses_without_counting() {
        let mut q = Quota::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a = q.hit(USER, 2, true, t0);
        assert!(a.allowed);
        assert_eq!(a.remaining, 1);
        assert_eq!(a.resets_in_secs, 60);
        let b = q.hit(USER, 2, true, t0 + Duration::from_secs(10));
        assert_eq!((b.allowed, b.remaining, b.resets_in_secs), (true, 0, 50));
        let c = q.hit(USER, 2, true, t0 + Duration::from_secs(20));
        assert_eq!((c.allowed, c.remaining, c.resets_in_secs), (false, 0, 40));
        // The refused request was not counted: once the first hit slides out, one is free.
        let d = q.hit(USER, 2, true, t0 + Duration::from_secs(60));
        assert_eq!((d.allowed, d.remaining, d.resets_in_secs), (true, 0, 10));
    }

    #[test]
    fn quota_keys_are_independent_and_peek_does_not_count() {
        let mut q = Quota::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let org = QuotaKey::Org {
            user_id: 1,
            organization_id: 7,
        };
        q.hit(org, 5, true, t0);
        assert_eq!(q.peek(org, 5, t0).remaining, 4);
        assert_eq!(q.peek(org, 5, t0).remaining, 4);
        assert_eq!(q.peek(USER, 30, t0).remaining, 30);
    }

    #[test]
    fn unenforced_quota_never_refuses_and_stays_bounded() {
        let mut q = Quota::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(q.hit(USER, 3, false, t0).allowed);
        }
        assert_eq!(q.peek(USER, 3, t0).remaining, 0);
        assert_eq!(q.logs[&USER].len(), 3);
    }

    #[test]
    fn bucket_allows_burst_then_refuses_then_drains() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..BUCKET_CAPACITY as usize {
            assert!(b.admit(1, t0).is_ok());
        }
        let wait = b.admit(1, t0).expect_err("bucket is full");
        assert_eq!(wait, Duration::from_secs(1));
        // Another user has their own bucket.
        assert!(b.admit(2, t0).is_ok());
        // After one second one request has leaked out.
        assert!(b.admit(1, t0 + Duration::from_secs(1)).is_ok());
        assert!(b.admit(1, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn bucket_paced_at_one_per_second_never_refuses() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(b.admit(1, t0 + Duration::from_secs(i)).is_ok());
        }
    }

    proptest::proptest! {
        /// Whatever the arrival pattern, no window of the configured length ever admits more
        /// than `total` requests, and a refused request is never counted.
        #[test]
        fn sliding_window_never_over_admits(
            gaps_ms in proptest::collection::vec(0u64..400, 1..200),
            total in 1u32..10,
        ) {
            let window = Duration::from_secs(1);
            let mut q = Quota::new(window);
            let t0 = Instant::now();
            let mut now = t0;
            let mut admitted: Vec<Instant> = Vec::new();
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                let s = q.hit(USER, total, true, now);
                proptest::prop_assert!(s.remaining >= 0);
                if s.allowed {
                    admitted.push(now);
                }
                let in_window = admitted
                    .iter()
                    .filter(|t| now.saturating_duration_since(**t) < window)
                    .count();
                proptest::prop_assert!(in_window <= total as usize);
                proptest::prop_assert_eq!(s.remaining, i64::from(total) - in_window as i64);
            }
        }
    }
}
