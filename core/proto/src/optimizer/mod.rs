//! Adaptive optimizer: picks the variant (pruning level), split point, region keep ratio ρ and
//! quantization mode from live measurements.
//!
//! Pure: no I/O, no clock reads, no async. The caller measures [`Conditions`] (bandwidth, RTT, edge
//! load, cloud reachability) and asks [`Optimizer::decide`] for a [`Decision`] under an
//! [`Objective`]. Everything that does not depend on the conditions (layer-time sums, exact payload
//! sizes from [`crate::codec::encoded_len`], codec costs) is computed once in [`Optimizer::new`], so
//! a decision is one linear scan of arithmetic over the candidates.
//!
//! The model, the objectives and the hysteresis rule are documented in `docs/optimizer.md`.
//!
//! ```
//! use jmdc_proto::codec::{CodecParams, QuantMode};
//! use jmdc_proto::optimizer::*;
//!
//! let variant = VariantProfile {
//!     name: "full".into(),
//!     edge_layer_us: vec![4000.0, 4000.0],
//!     cloud_layer_us: vec![400.0, 400.0],
//!     boundary_shapes: vec![vec![3, 32, 32], vec![16, 16, 16], vec![10]],
//! };
//! let profile = Profile::new(vec![variant]);
//! let codec = CodecParams { keep_ratio: 0.5, mode: QuantMode::Bits(4) };
//! let candidates = vec![
//!     Candidate::cloud_only(0, 0.90),
//!     Candidate::split(0, 1, codec, 0.88),
//!     Candidate::edge_only(0, 2, 0.90),
//! ];
//! let opt = Optimizer::new(profile, candidates, OptimizerConfig::default()).unwrap();
//! let conditions = Conditions { bandwidth_bps: 100e6, rtt_s: 0.002, edge_load_factor: 1.0, cloud_available: true };
//! let d = opt.decide(&conditions, &Objective::MinLatency { accuracy_floor: 0.85 }, None);
//! assert!(d.feasible);
//! assert!(d.plan.is_cloud_only());
//! ```

mod candidate;
mod decide;
mod profile;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;

pub use candidate::{candidate_grid, Candidate, InputCodec};
pub use decide::{Decision, Evaluation, LatencyBreakdown, Optimizer, Plan};
pub use profile::{CodecCost, Profile, VariantProfile, DEFAULT_HEADER_OVERHEAD_BYTES};

/// Live measurements a decision is made under.
///
/// Out-of-range values are sanitized rather than rejected (a decision always answers): a bandwidth
/// that is NaN or ≤ 0 makes every networked plan infinitely slow; an RTT that is NaN or negative
/// counts as 0; a load factor that is NaN or ≤ 0 counts as 1 (+∞ counts as `f64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    /// Uplink bandwidth in bits per second.
    pub bandwidth_bps: f64,
    /// Round-trip time in seconds.
    pub rtt_s: f64,
    /// Edge slowdown: measured edge layer time ÷ profiled time (≥ 1 when the edge is busy).
    pub edge_load_factor: f64,
    /// Whether the cloud worker is reachable; when `false` only edge-only plans are allowed.
    pub cloud_available: bool,
}

impl Conditions {
    pub(crate) fn sanitized(&self) -> Conditions {
        let bandwidth_bps = if self.bandwidth_bps > 0.0 {
            self.bandwidth_bps
        } else {
            0.0
        };
        let rtt_s = if self.rtt_s >= 0.0 { self.rtt_s } else { 0.0 };
        let edge_load_factor = if self.edge_load_factor > 0.0 {
            // Finite, so that a zero edge time stays zero (∞·0 would be NaN).
            self.edge_load_factor.min(f64::MAX)
        } else {
            1.0
        };
        Conditions {
            bandwidth_bps,
            rtt_s,
            edge_load_factor,
            cloud_available: self.cloud_available,
        }
    }
}

/// What a decision optimizes, under which constraint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Objective {
    /// Lowest end-to-end latency among plans with accuracy ≥ `accuracy_floor` (in `[0, 1]`).
    /// Infeasible → the most accurate plan (ties → lower latency).
    MinLatency {
        /// Minimum top-1 accuracy in `[0, 1]`.
        accuracy_floor: f32,
    },
    /// Highest accuracy among plans with latency ≤ `latency_budget_s`.
    /// Infeasible → the fastest plan (ties → higher accuracy).
    MaxAccuracy {
        /// Maximum end-to-end latency in seconds.
        latency_budget_s: f64,
    },
    /// Highest pipelined throughput (1 / slowest stage) among plans with accuracy ≥
    /// `accuracy_floor`. Infeasible → the most accurate plan (ties → higher throughput).
    MaxThroughput {
        /// Minimum top-1 accuracy in `[0, 1]`.
        accuracy_floor: f32,
    },
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Objective::MinLatency { accuracy_floor } => {
                write!(
                    f,
                    "min latency with accuracy ≥ {:.1} %",
                    accuracy_floor * 100.0
                )
            }
            Objective::MaxAccuracy { latency_budget_s } => {
                write!(
                    f,
                    "max accuracy with latency ≤ {:.3} ms",
                    latency_budget_s * 1e3
                )
            }
            Objective::MaxThroughput { accuracy_floor } => {
                write!(
                    f,
                    "max throughput with accuracy ≥ {:.1} %",
                    accuracy_floor * 100.0
                )
            }
        }
    }
}

/// Tuning of [`Optimizer::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Relative improvement of latency or throughput the best plan must exceed before the current
    /// (still feasible) plan is replaced; `0.10` = 10 %.
    pub hysteresis_margin: f64,
    /// Absolute accuracy gain (fraction, `0.005` = 0.5 points) the best plan must exceed before the
    /// current plan is replaced when accuracy is what is optimized (`MaxAccuracy`, and the
    /// most-accurate fallback of infeasible `MinLatency`/`MaxThroughput`).
    pub accuracy_margin: f32,
}

impl Default for OptimizerConfig {
    /// 10 % relative margin, 0.5 accuracy points.
    fn default() -> Self {
        OptimizerConfig {
            hysteresis_margin: 0.10,
            accuracy_margin: 0.005,
        }
    }
}

impl OptimizerConfig {
    /// No hysteresis: every decision picks the best plan.
    pub const NO_HYSTERESIS: OptimizerConfig = OptimizerConfig {
        hysteresis_margin: 0.0,
        accuracy_margin: 0.0,
    };

    fn validate(&self) -> Result<(), OptimizerError> {
        if !(self.hysteresis_margin.is_finite() && self.hysteresis_margin >= 0.0) {
            return Err(OptimizerError::InvalidConfig(format!(
                "hysteresis_margin {} is not a finite non-negative number",
                self.hysteresis_margin
            )));
        }
        if !(self.accuracy_margin.is_finite() && self.accuracy_margin >= 0.0) {
            return Err(OptimizerError::InvalidConfig(format!(
                "accuracy_margin {} is not a finite non-negative number",
                self.accuracy_margin
            )));
        }
        Ok(())
    }
}

/// Why an [`Optimizer`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OptimizerError {
    /// The profile has no variant.
    #[error("profile has no variant")]
    NoVariants,
    /// A variant profile is inconsistent.
    #[error("variant {variant}: {reason}")]
    InvalidVariant {
        /// Index of the variant.
        variant: usize,
        /// What is wrong.
        reason: String,
    },
    /// A codec cost model has a negative or non-finite coefficient.
    #[error("{0} cost model has a negative or non-finite coefficient")]
    InvalidCost(&'static str),
    /// The candidate list is empty.
    #[error("no candidate")]
    NoCandidates,
    /// A candidate refers to a variant the profile does not have.
    #[error("candidate {candidate}: unknown variant {variant}")]
    UnknownVariant {
        /// Index of the candidate.
        candidate: usize,
        /// Its variant index.
        variant: usize,
    },
    /// A candidate's split is beyond the variant's layer count.
    #[error("candidate {candidate}: split {split} is beyond the variant's {layers} layers")]
    SplitOutOfRange {
        /// Index of the candidate.
        candidate: usize,
        /// Its split.
        split: usize,
        /// Layers of its variant.
        layers: usize,
    },
    /// An inner split has no codec, or a cloud-only/edge-only plan has one.
    #[error("candidate {candidate}: {reason}")]
    CodecPlacement {
        /// Index of the candidate.
        candidate: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The codec rejected the candidate's parameters or split shape.
    #[error("candidate {candidate}: {source}")]
    Codec {
        /// Index of the candidate.
        candidate: usize,
        /// The codec's error.
        source: CodecError,
    },
    /// A candidate's accuracy is not in `[0, 1]`.
    #[error("candidate {candidate}: accuracy {accuracy} is not in [0, 1]")]
    InvalidAccuracy {
        /// Index of the candidate.
        candidate: usize,
        /// Its accuracy.
        accuracy: f32,
    },
    /// The configuration is out of range.
    #[error("invalid optimizer configuration: {0}")]
    InvalidConfig(String),
}
