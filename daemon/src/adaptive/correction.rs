//! What the loop learned about a plan (or a kind of plan) from its frames — a plan's measured
//! latency, or a kind's measured − modelled residual — and when and under which network
//! conditions it was learned.
//!
//! A correction is forgotten after a while without frames, and a correction of a plan that uses
//! the network holds only under the conditions it was learned under: what requests cost while
//! they queued on a 1 Mbit/s link says nothing about the same plan at 20 Mbit/s, and carrying it
//! over kept the loop away from the cloud for the correction's whole lifetime after a step.

use std::time::{Duration, Instant};

use jmdc_core::optimizer::Conditions;

/// The network conditions a correction was learned under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NetworkRegime {
    bandwidth_bps: f64,
    rtt_s: f64,
}

impl NetworkRegime {
    /// Bandwidths within this factor of each other are the same regime.
    const BANDWIDTH_RATIO: f64 = 1.5;
    /// RTTs closer than the larger of these are the same regime.
    const RTT_RELATIVE: f64 = 0.3;
    const RTT_ABSOLUTE_S: f64 = 0.005;

    pub(crate) fn of(conditions: &Conditions) -> Self {
        NetworkRegime {
            bandwidth_bps: conditions.bandwidth_bps,
            rtt_s: conditions.rtt_s,
        }
    }

    /// Whether a correction learned under `self` still holds under `now`.
    pub(crate) fn holds_under(&self, now: &Conditions) -> bool {
        let (a, b) = (self.bandwidth_bps, now.bandwidth_bps);
        let bandwidth_close = if a > 0.0 && b > 0.0 {
            let ratio = a / b;
            (1.0 / Self::BANDWIDTH_RATIO..=Self::BANDWIDTH_RATIO).contains(&ratio)
        } else {
            // Unknown then and now (or not finite): nothing says the path changed.
            !(a > 0.0 || b > 0.0)
        };
        let rtt_tolerance =
            (Self::RTT_RELATIVE * self.rtt_s.max(now.rtt_s)).max(Self::RTT_ABSOLUTE_S);
        bandwidth_close && (self.rtt_s - now.rtt_s).abs() <= rtt_tolerance
    }
}

/// How corrections are learned and trusted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CorrectionPolicy {
    /// EWMA weight of a new frame (small: one frame's noise should barely move a prediction).
    pub(crate) alpha: f64,
    /// A frame whose residual departs from the correction by more than this fraction of the
    /// modelled latency counts towards a step...
    pub(crate) step_fraction: f64,
    /// ...and this many such frames in a row, all on the same side, replace the correction by
    /// their mean (a real change is followed at once, not crept towards).
    pub(crate) step_frames: u32,
    /// Trusted for this long without a new frame.
    pub(crate) ttl: Duration,
    /// Frames before it is trusted.
    pub(crate) min_frames: u64,
}

/// Smoothed residuals: an EWMA that jumps to a sustained step (see [`CorrectionPolicy`]).
#[derive(Debug, Clone, Default)]
struct ResidualFilter {
    value: Option<f64>,
    count: u64,
    /// Departing frames in a row: how many, their sum, and on which side.
    pending: u32,
    pending_sum: f64,
    pending_above: bool,
}

impl ResidualFilter {
    fn update(&mut self, policy: &CorrectionPolicy, residual_s: f64, modelled_s: f64) {
        if !residual_s.is_finite() {
            return;
        }
        self.count += 1;
        let Some(v) = self.value else {
            self.value = Some(residual_s);
            return;
        };
        let threshold = policy.step_fraction * modelled_s.abs();
        if (residual_s - v).abs() <= threshold {
            self.pending = 0;
            self.value = Some(v + policy.alpha * (residual_s - v));
            return;
        }
        let above = residual_s > v;
        if self.pending > 0 && above == self.pending_above {
            self.pending += 1;
            self.pending_sum += residual_s;
        } else {
            self.pending = 1;
            self.pending_sum = residual_s;
            self.pending_above = above;
        }
        if self.pending >= policy.step_frames.max(1) {
            self.value = Some(self.pending_sum / f64::from(self.pending));
            self.pending = 0;
        } else {
            // A lone outlier still counts a little (a heavy tail is part of the latency).
            self.value = Some(v + policy.alpha * 0.5 * (residual_s - v));
        }
    }
}

/// A smoothed latency series learned from frames (seconds): a plan's measured latency or a kind
/// of plan's residual (measured − modelled).
#[derive(Debug, Clone)]
pub(crate) struct Correction {
    residual_s: ResidualFilter,
    last: Instant,
    regime: NetworkRegime,
    /// Whether the plans it corrects use the network (all but edge-only ones).
    uses_network: bool,
}

impl Correction {
    pub(crate) fn new(uses_network: bool, now: Instant) -> Self {
        Correction {
            residual_s: ResidualFilter::default(),
            last: now,
            regime: NetworkRegime {
                bandwidth_bps: 0.0,
                rtt_s: 0.0,
            },
            uses_network,
        }
    }

    /// Adds one frame's value (`sample_s`; `modelled_s` is the model's latency for the frame,
    /// which scales the step threshold) measured under `conditions`. What was learned before is
    /// dropped when it is stale or was learned under other network conditions.
    pub(crate) fn update(
        &mut self,
        policy: &CorrectionPolicy,
        sample_s: f64,
        modelled_s: f64,
        conditions: &Conditions,
        now: Instant,
    ) {
        if !self.holds(policy, conditions, now) {
            self.residual_s = ResidualFilter::default();
        }
        self.residual_s.update(policy, sample_s, modelled_s);
        self.last = now;
        self.regime = NetworkRegime::of(conditions);
    }

    /// Whether what was learned applies now (fresh, and under the same network conditions when
    /// it matters), regardless of how many frames it holds.
    fn holds(&self, policy: &CorrectionPolicy, conditions: &Conditions, now: Instant) -> bool {
        now.saturating_duration_since(self.last) <= policy.ttl
            && (!self.uses_network || self.regime.holds_under(conditions))
    }

    /// The correction to apply under `conditions` now, when it is trusted.
    pub(crate) fn value(
        &self,
        policy: &CorrectionPolicy,
        conditions: &Conditions,
        now: Instant,
    ) -> Option<f64> {
        if self.residual_s.count < policy.min_frames || !self.holds(policy, conditions, now) {
            return None;
        }
        self.residual_s.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CorrectionPolicy = CorrectionPolicy {
        alpha: 0.1,
        step_fraction: 0.15,
        step_frames: 3,
        ttl: Duration::from_secs(20),
        min_frames: 2,
    };

    fn at(mbit: f64, rtt_ms: f64) -> Conditions {
        Conditions {
            bandwidth_bps: mbit * 1e6,
            rtt_s: rtt_ms * 1e-3,
            edge_load_factor: 1.0,
            cloud_available: true,
        }
    }

    #[test]
    fn trusted_after_min_frames_under_the_same_conditions() {
        let t0 = Instant::now();
        let mut c = Correction::new(true, t0);
        c.update(&POLICY, 0.004, 0.005, &at(20.0, 0.2), t0);
        assert_eq!(c.value(&POLICY, &at(20.0, 0.2), t0), None);
        c.update(&POLICY, 0.004, 0.005, &at(22.0, 0.2), t0);
        let v = c.value(&POLICY, &at(18.0, 0.3), t0).expect("trusted");
        assert!((v - 0.004).abs() < 1e-12);
    }

    #[test]
    fn noise_barely_moves_it_and_a_sustained_step_moves_it_at_once() {
        let t0 = Instant::now();
        let here = at(20.0, 0.2);
        let mut c = Correction::new(true, t0);
        for _ in 0..10 {
            c.update(&POLICY, 0.0, 0.005, &here, t0);
        }
        // One frame 2 ms slow (40 % of a 5 ms model): a small nudge only.
        c.update(&POLICY, 0.002, 0.005, &here, t0);
        let v = c.value(&POLICY, &here, t0).expect("trusted");
        assert!(v > 0.0 && v < 0.0002, "{v}");
        // Back to normal, then three frames in a row 2 ms slow: the correction is their mean.
        c.update(&POLICY, 0.0, 0.005, &here, t0);
        for _ in 0..2 {
            c.update(&POLICY, 0.002, 0.005, &here, t0);
            assert!(c.value(&POLICY, &here, t0).expect("trusted") < 0.001);
        }
        c.update(&POLICY, 0.002, 0.005, &here, t0);
        let v = c.value(&POLICY, &here, t0).expect("trusted");
        assert!((v - 0.002).abs() < 1e-12, "{v}");
        // Frames within 15 % of the model move it by the EWMA weight.
        c.update(&POLICY, 0.0025, 0.005, &here, t0);
        let v = c.value(&POLICY, &here, t0).expect("trusted");
        assert!((v - 0.00205).abs() < 1e-9, "{v}");
    }

    #[test]
    fn a_network_correction_does_not_carry_over_a_bandwidth_step() {
        let t0 = Instant::now();
        let mut c = Correction::new(true, t0);
        for _ in 0..4 {
            c.update(&POLICY, 0.020, 0.005, &at(1.0, 0.2), t0);
        }
        assert!(c.value(&POLICY, &at(1.0, 0.2), t0).is_some());
        assert_eq!(c.value(&POLICY, &at(20.0, 0.2), t0), None);
        assert_eq!(c.value(&POLICY, &at(1.0, 40.0), t0), None);
        // Learning under the new conditions starts afresh instead of averaging with the old.
        c.update(&POLICY, 0.001, 0.005, &at(20.0, 0.2), t0);
        c.update(&POLICY, 0.001, 0.005, &at(20.0, 0.2), t0);
        let v = c.value(&POLICY, &at(20.0, 0.2), t0).expect("trusted");
        assert!((v - 0.001).abs() < 1e-12, "{v}");
    }

    #[test]
    fn an_edge_correction_ignores_the_network_but_not_time() {
        let t0 = Instant::now();
        let mut c = Correction::new(false, t0);
        c.update(&POLICY, 0.002, 0.005, &at(1.0, 0.2), t0);
        c.update(&POLICY, 0.002, 0.005, &at(1.0, 0.2), t0);
        assert!(c.value(&POLICY, &at(100.0, 60.0), t0).is_some());
        let later = t0 + POLICY.ttl + Duration::from_millis(1);
        assert_eq!(c.value(&POLICY, &at(1.0, 0.2), later), None);
    }

    #[test]
    fn unknown_bandwidth_is_one_regime() {
        let unknown = at(0.0, 0.0);
        assert!(NetworkRegime::of(&unknown).holds_under(&unknown));
        assert!(!NetworkRegime::of(&unknown).holds_under(&at(10.0, 0.0)));
        assert!(!NetworkRegime::of(&at(10.0, 0.0)).holds_under(&unknown));
    }
}
