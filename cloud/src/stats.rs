//! The worker's counters: connections, requests in flight, frames by outcome, error replies by
//! kind and a request latency histogram. Lock-free; read by the status line and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jmdc_core::protocol::ErrorKind;

/// Upper bounds (seconds) of the request latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters a health or metrics endpoint can read.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted since start.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Requests (streams) being read, computed or answered now.
    pub in_flight: AtomicU64,
    /// Frames answered with a result.
    pub frames_ok: AtomicU64,
    /// Requests answered with an error reply other than `Overloaded` (bad input or internal).
    pub frames_failed: AtomicU64,
    /// Frames refused with `Overloaded` (admission limit reached, or draining).
    pub overloaded: AtomicU64,
    /// Probe requests answered.
    pub probes: AtomicU64,
    /// Context bindings accepted (protocol version 2's compact framing).
    pub contexts_bound: AtomicU64,
    /// Error replies by kind, indexed like [`ErrorKind::ALL`] (`Overloaded` included).
    pub errors_by_kind: [AtomicU64; ErrorKind::ALL.len()],
    /// Time from a stream's arrival to its inference answer being ready (results and errors).
    pub latency: LatencyHistogram,
    /// Handshakes that failed (no device certificate, another CA's, expired, revoked, …).
    pub handshakes_failed: AtomicU64,
    /// Connections refused at a limit (`max_connections`, `max_connections_per_address`,
    /// `max_connections_per_device`).
    pub connections_refused: AtomicU64,
    /// Of those, connections closed after their handshake because `max_connections_per_device`
    /// connections with the same device identity were open.
    pub connections_refused_per_device: AtomicU64,
    /// Connections closed for having no request for `idle_timeout_s`.
    pub idle_closed: AtomicU64,
    /// Request streams reset for not arriving whole within `request_read_timeout_ms`.
    pub read_timeouts: AtomicU64,
    /// Requests refused (`Overloaded`) because the request-byte budget could not cover them.
    pub over_budget: AtomicU64,
    /// Log lines about bad requests or refused connections left out by the rate limit.
    pub log_lines_suppressed: AtomicU64,
    /// The request-byte budget (set when the server is bound).
    pub budget: std::sync::OnceLock<std::sync::Arc<crate::guard::ByteBudget>>,
}

impl ServerStats {
    /// Counts one error reply of `kind` (also in `overloaded` or `frames_failed`).
    pub fn record_error(&self, kind: ErrorKind) {
        if kind == ErrorKind::Overloaded {
            self.overloaded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.frames_failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.errors_by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Error replies of `kind` so far.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors_by_kind[i].load(Ordering::Relaxed))
    }
}

/// A fixed-bucket histogram of durations (Prometheus style: per-bucket counts, sum and count).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket of [`LATENCY_BUCKETS_S`]; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Cumulative counts for each bound of [`LATENCY_BUCKETS_S`], then `+Inf`.
    pub cumulative: Vec<u64>,
    /// Sum of all observations, seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|bound| s <= *bound)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts, sum and count.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut running = 0u64;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        // Integer microseconds to seconds for the exposition.
        let sum_s = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        LatencySnapshot {
            cumulative,
            sum_s,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_sums() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative.len(), LATENCY_BUCKETS_S.len() + 1);
        assert_eq!(s.cumulative[0], 1, "0.3 ms <= 0.5 ms");
        assert_eq!(s.cumulative[2], 1, "3 ms > 2.5 ms");
        assert_eq!(s.cumulative[3], 2, "3 ms <= 5 ms");
        assert_eq!(s.cumulative[LATENCY_BUCKETS_S.len() - 1], 2);
        assert_eq!(*s.cumulative.last().expect("+Inf"), 3);
        assert!((s.sum_s - 10.0033).abs() < 1e-9, "{}", s.sum_s);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let st = ServerStats::default();
        st.record_error(ErrorKind::Overloaded);
        st.record_error(ErrorKind::BadPayload);
        st.record_error(ErrorKind::BadPayload);
        assert_eq!(st.errors(ErrorKind::Overloaded), 1);
        assert_eq!(st.errors(ErrorKind::BadPayload), 2);
        assert_eq!(st.errors(ErrorKind::Internal), 0);
        assert_eq!(st.overloaded.load(Ordering::Relaxed), 1);
        assert_eq!(st.frames_failed.load(Ordering::Relaxed), 2);
    }
}
