//! A lock-free latency histogram with fixed buckets from 0.1 ms to 10 s.
//!
//! Observations are whole microseconds (what [`FrameRecord`](crate::stats::FrameRecord) carries),
//! so bucket comparisons and the sum are exact integers; they are rendered in seconds.

use std::sync::atomic::{AtomicU64, Ordering};

use jmdc_service::exposition::{format_value, TextWriter};

/// Upper bounds (inclusive, `le`) of the finite buckets, in microseconds: 0.1 ms … 10 s in
/// 1–2.5–5 steps. Larger values land only in `+Inf`.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const SLOTS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Counts per bucket (not cumulative; the last slot is "above every bound") and the sum.
#[derive(Debug)]
pub struct Histogram {
    slots: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A consistent-enough copy of a histogram for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per finite bucket, in the order of [`LATENCY_BUCKETS_US`].
    pub cumulative: Vec<u64>,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of observations in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one observation of `us` microseconds.
    pub fn observe_us(&self, us: u64) {
        let slot = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        if let Some(s) = self.slots.get(slot) {
            s.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Current counts. `count` is derived from the buckets, so it always equals the `+Inf` bucket.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS_US.len());
        for s in &self.slots[..LATENCY_BUCKETS_US.len()] {
            running += s.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.slots[LATENCY_BUCKETS_US.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }

    /// Writes `name_bucket{…,le=…}`, `name_sum{…}` and `name_count{…}` (the family header is the
    /// caller's).
    pub fn render(&self, w: &mut TextWriter, name: &str, labels: &[(&str, &str)]) {
        let snap = self.snapshot();
        let bucket = format!("{name}_bucket");
        let bounds = LATENCY_BUCKETS_US.map(|us| format_value(us as f64 / 1e6));
        let finite = bounds.iter().map(String::as_str).zip(&snap.cumulative);
        for (le, count) in finite.chain(std::iter::once(("+Inf", &snap.count))) {
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", le));
            w.sample_u64(&bucket, &with_le, *count);
        }
        w.sample(&format!("{name}_sum"), labels, snap.sum_us as f64 / 1e6);
        w.sample_u64(&format!("{name}_count"), labels, snap.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_large_values_overflow() {
        let h = Histogram::default();
        h.observe_us(100); // exactly 0.1 ms: first bucket
        h.observe_us(101); // second bucket
        h.observe_us(0);
        h.observe_us(20_000_000); // 20 s: only +Inf
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(*s.cumulative.last().expect("buckets"), 3);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 20_000_201);
    }

    #[test]
    fn renders_buckets_sum_and_count_in_seconds() {
        let h = Histogram::default();
        h.observe_us(1_500);
        let mut w = TextWriter::new();
        h.render(&mut w, "x_seconds", &[("stage", "edge")]);
        let text = w.finish();
        assert!(text.contains("x_seconds_bucket{stage=\"edge\",le=\"0.0001\"} 0\n"));
        assert!(text.contains("x_seconds_bucket{stage=\"edge\",le=\"0.001\"} 0\n"));
        assert!(text.contains("x_seconds_bucket{stage=\"edge\",le=\"0.0025\"} 1\n"));
        assert!(text.contains("x_seconds_bucket{stage=\"edge\",le=\"10\"} 1\n"));
        assert!(text.contains("x_seconds_bucket{stage=\"edge\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("x_seconds_sum{stage=\"edge\"} 0.0015\n"));
        assert!(text.contains("x_seconds_count{stage=\"edge\"} 1\n"));
        assert_eq!(text.lines().count(), LATENCY_BUCKETS_US.len() + 3);
    }
}
