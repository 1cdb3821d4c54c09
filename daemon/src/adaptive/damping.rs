//! Flap damping: the hysteresis margin grows with the plan changes of the last few seconds.
//!
//! Plans that the model ranks within a few per cent of each other (cloud-only with a raw or a
//! JPEG input, pruned 50 % or 75 %) trade places whenever host noise moves one plan's measured
//! latency and not the others': measured on an emulated Pi 3 at a steady 50 Mbit/s, the loop
//! changed plan 21 times in 12 s besides exploration visits. Each recent change makes the next
//! one need a larger gain (base margin × (1 + changes), capped), so a string of small gains is
//! damped while a real step (which gains 2× and more) still passes. Changes that a monitor
//! reported (bandwidth, CPU load, a new cloud, a reload) are decided with the base margin.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Recent plan changes and the margin they call for.
#[derive(Debug, Clone)]
pub(crate) struct FlapDamping {
    window: Duration,
    max_margin: f64,
    changes: VecDeque<Instant>,
}

impl FlapDamping {
    /// Changes older than `window` no longer count; the damped margin never exceeds
    /// `max_margin` (nor falls below the base margin).
    pub(crate) fn new(window: Duration, max_margin: f64) -> Self {
        Self {
            window,
            max_margin,
            changes: VecDeque::new(),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(&oldest) = self.changes.front() {
            if now.saturating_duration_since(oldest) > self.window {
                self.changes.pop_front();
            } else {
                break;
            }
        }
    }

    /// Plan changes within the window before `now`.
    pub(crate) fn recent(&mut self, now: Instant) -> usize {
        self.forget_old(now);
        self.changes.len()
    }

    /// The margin for a decision at `now`: `base` when a monitor reported the change behind it
    /// (`reported`), else `base × (1 + recent changes)` capped at the maximum.
    pub(crate) fn margin(&mut self, base: f64, now: Instant, reported: bool) -> f64 {
        if reported {
            return base;
        }
        let damped = base * (1.0 + self.recent(now) as f64);
        damped.min(self.max_margin).max(base)
    }

    /// Notes a change of plan at `now`.
    pub(crate) fn record_change(&mut self, now: Instant) {
        self.forget_old(now);
        self.changes.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_grows_with_recent_changes_and_is_capped() {
        let t0 = Instant::now();
        let mut d = FlapDamping::new(Duration::from_secs(10), 0.4);
        assert!((d.margin(0.1, t0, false) - 0.1).abs() < 1e-12);
        d.record_change(t0);
        assert!((d.margin(0.1, t0, false) - 0.2).abs() < 1e-12);
        d.record_change(t0 + Duration::from_secs(1));
        d.record_change(t0 + Duration::from_secs(2));
        assert!((d.margin(0.1, t0 + Duration::from_secs(2), false) - 0.4).abs() < 1e-12);
        d.record_change(t0 + Duration::from_secs(3));
        assert!((d.margin(0.1, t0 + Duration::from_secs(3), false) - 0.4).abs() < 1e-12);
    }

    #[test]
    fn reported_changes_use_the_base_margin() {
        let t0 = Instant::now();
        let mut d = FlapDamping::new(Duration::from_secs(10), 0.5);
        for s in 0..4 {
            d.record_change(t0 + Duration::from_secs(s));
        }
        assert!((d.margin(0.1, t0 + Duration::from_secs(4), true) - 0.1).abs() < 1e-12);
        assert!(d.margin(0.1, t0 + Duration::from_secs(4), false) > 0.4);
    }

    #[test]
    fn old_changes_are_forgotten() {
        let t0 = Instant::now();
        let mut d = FlapDamping::new(Duration::from_secs(10), 0.5);
        d.record_change(t0);
        d.record_change(t0 + Duration::from_secs(5));
        assert_eq!(d.recent(t0 + Duration::from_secs(9)), 2);
        assert_eq!(d.recent(t0 + Duration::from_secs(11)), 1);
        assert_eq!(d.recent(t0 + Duration::from_secs(16)), 0);
        assert!((d.margin(0.1, t0 + Duration::from_secs(16), false) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn a_large_base_margin_is_never_lowered_by_the_cap() {
        let t0 = Instant::now();
        let mut d = FlapDamping::new(Duration::from_secs(10), 0.3);
        d.record_change(t0);
        assert!((d.margin(0.6, t0, false) - 0.6).abs() < 1e-12);
    }
}
