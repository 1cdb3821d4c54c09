//! The worker's counters: connections, requests in flight, frames by outcome, error replies by
//! kind and a request latency histogram. Lock-free; read by the status line and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use jmdc_core::protocol::ErrorKind;
use jmdc_service::histogram::{Buckets, Histogram};

/// Upper bounds (microseconds; rendered in seconds) of the request latency histogram buckets,
/// 0.5 ms … 2.5 s; `+Inf` is implied.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];

/// The bucket layout of the request latency histogram ([`LATENCY_BUCKETS_US`]).
#[derive(Debug)]
pub struct RequestLatency;

impl Buckets for RequestLatency {
    const BOUNDS_US: &'static [u64] = &LATENCY_BUCKETS_US;
}

/// The request latency histogram (the shared `jmdc_service::histogram` with the worker's buckets).
pub type LatencyHistogram = Histogram<RequestLatency>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_is_cumulative_and_sums() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative.len(), LATENCY_BUCKETS_US.len());
        assert_eq!(s.cumulative[0], 1, "0.3 ms <= 0.5 ms");
        assert_eq!(s.cumulative[2], 1, "3 ms > 2.5 ms");
        assert_eq!(s.cumulative[3], 2, "3 ms <= 5 ms");
        assert_eq!(s.cumulative[LATENCY_BUCKETS_US.len() - 1], 2);
        assert_eq!(s.sum_us, 10_003_300);
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
