//! The one latency histogram of both binaries: lock-free, fixed buckets given by a [`Buckets`]
//! type, rendered in seconds in the Prometheus text format.
//!
//! Observations are compared with the bucket bounds exactly (whole microseconds, or nanoseconds
//! for a [`Duration`]); the sum is kept in whole microseconds.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::exposition::{format_value, TextWriter};

/// The bucket layout of a histogram: upper bounds (inclusive, `le`) in microseconds, ascending.
/// Values above the last bound land only in `+Inf`.
pub trait Buckets {
    /// The finite bounds, microseconds, ascending.
    const BOUNDS_US: &'static [u64];
}

/// Counts per bucket (not cumulative; the last slot is "above every bound") and the sum.
pub struct Histogram<B: Buckets> {
    slots: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    layout: PhantomData<B>,
}

impl<B: Buckets> fmt::Debug for Histogram<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        debug_assert!(B::BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        Self {
            slots: (0..=B::BOUNDS_US.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
            layout: PhantomData,
        }
    }
}

/// A consistent-enough copy of a histogram for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per finite bucket, in the order of the bounds.
    pub cumulative: Vec<u64>,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of observations in microseconds.
    pub sum_us: u64,
}

impl<B: Buckets> Histogram<B> {
    /// Records one observation of `us` microseconds.
    pub fn observe_us(&self, us: u64) {
        let slot = B::BOUNDS_US.partition_point(|&bound| bound < us);
        self.count_in(slot, us);
    }

    /// Records one duration (bucketed by its exact nanoseconds; summed in whole microseconds).
    pub fn observe(&self, d: Duration) {
        let ns = d.as_nanos();
        let slot = B::BOUNDS_US.partition_point(|&bound| u128::from(bound) * 1_000 < ns);
        self.count_in(slot, u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn count_in(&self, slot: usize, us: u64) {
        if let Some(s) = self.slots.get(slot) {
            s.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Current counts. `count` is derived from the buckets, so it always equals the `+Inf` bucket.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let finite = B::BOUNDS_US.len();
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(finite);
        for s in &self.slots[..finite] {
            running += s.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.slots[finite].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }

    /// Writes `name_bucket{…,le=…}` (bounds in seconds), `name_sum{…}` (seconds) and
    /// `name_count{…}`; the family header is the caller's.
    pub fn render(&self, w: &mut TextWriter, name: &str, labels: &[(&str, &str)]) {
        let snap = self.snapshot();
        let bucket = format!("{name}_bucket");
        let bounds: Vec<String> = B::BOUNDS_US
            .iter()
            .map(|&us| format_value(us as f64 / 1e6))
            .collect();
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

    struct Wide;
    impl Buckets for Wide {
        const BOUNDS_US: &'static [u64] = &[
            100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
            1_000_000, 2_500_000, 5_000_000, 10_000_000,
        ];
    }

    struct Narrow;
    impl Buckets for Narrow {
        const BOUNDS_US: &'static [u64] = &[500, 1_000, 2_500];
    }

    #[test]
    fn bounds_are_inclusive_and_large_values_overflow() {
        let h = Histogram::<Wide>::default();
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
    fn durations_are_bucketed_by_their_exact_nanoseconds() {
        let h = Histogram::<Narrow>::default();
        h.observe(Duration::from_micros(500)); // on the bound: first bucket
        h.observe(Duration::from_nanos(500_001)); // just above: second
        h.observe(Duration::from_millis(3)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![1, 2, 2]);
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_us, 500 + 500 + 3_000);
    }

    #[test]
    fn renders_buckets_sum_and_count_in_seconds() {
        let h = Histogram::<Wide>::default();
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
        assert_eq!(text.lines().count(), Wide::BOUNDS_US.len() + 3);
    }
}
