//! The edge's latency buckets: 0.1 ms … 10 s in 1–2.5–5 steps, for the per-stage frame
//! histograms (the histogram itself is `jmdc_service::histogram`, shared with the worker).

use jmdc_service::histogram::Buckets;

/// Upper bounds (inclusive, `le`) of the finite buckets, in microseconds. Larger values land only
/// in `+Inf`.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The bucket layout of the edge's frame-stage histograms ([`LATENCY_BUCKETS_US`]).
#[derive(Debug)]
pub struct StageLatency;

impl Buckets for StageLatency {
    const BOUNDS_US: &'static [u64] = &LATENCY_BUCKETS_US;
}

/// A histogram of one frame stage.
pub type Histogram = jmdc_service::histogram::Histogram<StageLatency>;
