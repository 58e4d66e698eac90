//! Receiver counters, rendered as Prometheus text at `GET /metrics`.
//!
//! Plain atomics rather than a metrics crate: the set is small and fixed, and rendering it by hand
//! keeps the exposition format visible in one place.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a delivery was refused; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Missing, malformed or wrong signature (401).
    Signature,
    /// Body over the limit (413).
    TooLarge,
    /// Not JSON or not an envelope (400).
    Malformed,
    /// Wrong method (405).
    Method,
    /// The store could not take it (503).
    Unavailable,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Rejection::Signature,
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::Method,
        Rejection::Unavailable,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Signature => "signature",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::Method => "method",
            Rejection::Unavailable => "unavailable",
        }
    }
}

/// Upper bounds of the store latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The receiver's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    received: AtomicU64,
    pings: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    /// A delivery arrived (before any check).
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
    /// A ping was answered.
    pub fn ping(&self) {
        self.pings.fetch_add(1, Ordering::Relaxed);
    }
    /// A new event was stored.
    pub fn stored(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }
    /// A redelivery of a stored event was acknowledged without storing it again.
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    /// A delivery was refused.
    pub fn rejected(&self, why: Rejection) {
        let i = Rejection::ALL
            .iter()
            .position(|r| *r == why)
            .expect("ALL lists every variant");
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }
    /// How long the durable store call took.
    pub fn store_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Number of events stored so far.
    pub fn stored_count(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Number of refused deliveries for `why`.
    pub fn rejected_count(&self, why: Rejection) -> u64 {
        let i = Rejection::ALL
            .iter()
            .position(|r| *r == why)
            .expect("ALL lists every variant");
        self.rejected[i].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "toggl_connect_deliveries_received_total",
            "Webhook deliveries received.",
            &self.received,
        );
        counter(
            &mut out,
            "toggl_connect_pings_total",
            "Validation pings answered.",
            &self.pings,
        );
        counter(
            &mut out,
            "toggl_connect_events_stored_total",
            "Events stored durably.",
            &self.stored,
        );
        counter(
            &mut out,
            "toggl_connect_events_duplicate_total",
            "Redelivered events acknowledged without storing again.",
            &self.duplicates,
        );
        let _ = writeln!(
            out,
            "# HELP toggl_connect_deliveries_rejected_total Deliveries refused, by reason.\n# TYPE toggl_connect_deliveries_rejected_total counter"
        );
        for (why, v) in Rejection::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "toggl_connect_deliveries_rejected_total{{reason=\"{}\"}} {}",
                why.label(),
                v.load(Ordering::Relaxed)
            );
        }
        let name = "toggl_connect_store_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to store an event durably.\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.received();
        m.received();
        m.stored();
        m.rejected(Rejection::Signature);
        m.store_latency(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("toggl_connect_deliveries_received_total 2"));
        assert!(text.contains("toggl_connect_events_stored_total 1"));
        assert!(text.contains("toggl_connect_deliveries_rejected_total{reason=\"signature\"} 1"));
        assert!(text.contains("toggl_connect_store_latency_seconds_bucket{le=\"0.002\"} 0"));
        assert!(text.contains("toggl_connect_store_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("toggl_connect_store_latency_seconds_count 1"));
    }
}
