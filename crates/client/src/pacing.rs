//! Client-side pacing: at least `interval` between request starts of one token.
//!
//! Toggl's leaky bucket allows about one request per second per token; staying under it costs
//! nothing and avoids 429s that would cost a retry each. The pacer hands out start slots in order,
//! so concurrent callers queue instead of racing. A 429 pushes the next slot back for everyone.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Spaces request starts of one token; share it between all clones of a client.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer with the given minimum spacing.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for the next free start slot and takes it.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock();
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// No request starts before `at` (after a 429 the whole token backs off, not one caller).
    pub fn defer_until(&self, at: Instant) {
        let mut next = self.next.lock();
        *next = Some(next.map_or(at, |n| n.max(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_are_spaced() {
        let pacer = Arc::new(Pacer::new(Duration::from_secs(1)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = Arc::clone(&pacer);
            tasks.push(tokio::spawn(async move {
                p.wait().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("joins").duration_since(start));
        }
        times.sort();
        assert_eq!(times, (0..4).map(Duration::from_secs).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn defer_pushes_the_next_slot() {
        let pacer = Pacer::new(Duration::from_millis(10));
        let start = Instant::now();
        pacer.defer_until(start + Duration::from_secs(5));
        pacer.wait().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }
}
