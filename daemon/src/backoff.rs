//! The one exponential backoff of the edge: the cloud link between connection rounds
//! (`link/driver.rs`, with jitter) and the live frame sources between restarts of an MJPEG child or
//! re-opens of a camera (`source/mjpeg.rs`, `source/v4l2.rs`).

use std::time::Duration;

/// The range of a backoff: it starts at `initial` and doubles up to `max` (`max ≥ initial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffBounds {
    pub initial: Duration,
    pub max: Duration,
}

impl BackoffBounds {
    /// `initial` is at least 1 ms and `max` at least `initial`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// [`BackoffBounds::new`] from milliseconds (the config's unit).
    pub(crate) fn from_millis(initial_ms: u64, max_ms: u64) -> Self {
        Self::new(
            Duration::from_millis(initial_ms),
            Duration::from_millis(max_ms),
        )
    }
}

/// Where a backoff stands: the next delay doubles after each use and starts over after
/// [`Backoff::reset`]. The bounds are passed to each call, so a reload that changes them applies
/// to the next delay.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The delay to wait now (`initial` after a reset); the following one doubles, up to `max`.
    pub(crate) fn next_delay(&mut self, bounds: BackoffBounds) -> Duration {
        let base = self.next.unwrap_or(bounds.initial).min(bounds.max);
        self.next = Some(base.saturating_mul(2).min(bounds.max));
        base
    }

    /// The next delay starts over at `initial`.
    pub(crate) fn reset(&mut self) {
        self.next = None;
    }

    /// Starts over if the run that just ended lasted at least [`HEALTHY_RUN`].
    pub(crate) fn after_run(&mut self, ran: Duration) {
        if ran >= HEALTHY_RUN {
            self.reset();
        }
    }
}

/// A child or device that ran this long before failing counts as healthy: its backoff starts over.
pub(crate) const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// "Equal jitter": `delay` scaled into `[delay/2, delay]` by `unit` in `[0, 1)`, so that many
/// devices that lost the same worker do not reconnect in step.
pub(crate) fn equal_jitter(delay: Duration, unit: f64) -> Duration {
    delay / 2 + (delay / 2).mul_f64(unit.clamp(0.0, 1.0))
}

/// A small SplitMix64 generator for backoff jitter (no cryptographic use).
#[derive(Debug)]
pub(crate) struct Jitter {
    state: u64,
    /// Set by [`Jitter::fixed`]: every draw is this value.
    fixed: Option<f64>,
}

impl Jitter {
    /// Seeded from the clock and the process's hasher keys.
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self {
            state: h.finish(),
            fixed: None,
        }
    }

    /// Always `unit`: tests on virtual time assert exact waits with it.
    #[cfg(test)]
    pub(crate) fn fixed(unit: f64) -> Self {
        Self {
            state: 0,
            fixed: Some(unit),
        }
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        if let Some(unit) = self.fixed {
            return unit;
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets_after_a_healthy_run() {
        let bounds = BackoffBounds::from_millis(500, 3000);
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay(bounds).as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 3000, 3000]);
        b.after_run(Duration::from_secs(1));
        assert_eq!(b.next_delay(bounds).as_millis(), 3000);
        b.after_run(HEALTHY_RUN);
        assert_eq!(b.next_delay(bounds).as_millis(), 500);
    }

    #[test]
    fn bounds_are_sane_and_changed_bounds_apply_at_once() {
        assert_eq!(
            BackoffBounds::from_millis(0, 0),
            BackoffBounds::from_millis(1, 1)
        );
        assert_eq!(BackoffBounds::from_millis(800, 100).max.as_millis(), 800);
        let mut b = Backoff::default();
        let wide = BackoffBounds::from_millis(100, 800);
        assert_eq!(b.next_delay(wide).as_millis(), 100);
        assert_eq!(b.next_delay(wide).as_millis(), 200);
        // A reload lowered the maximum: the next delay respects it.
        assert_eq!(
            b.next_delay(BackoffBounds::from_millis(100, 300))
                .as_millis(),
            300
        );
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let d = Duration::from_millis(800);
        assert_eq!(equal_jitter(d, 0.0), Duration::from_millis(400));
        assert_eq!(equal_jitter(d, 1.0), d);
        assert_eq!(equal_jitter(d, 7.0), d);
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let x = equal_jitter(d, j.unit());
            assert!(x >= d / 2 && x <= d, "{x:?}");
        }
    }

    #[test]
    fn jitter_is_uniform_enough() {
        let mut j = Jitter::new();
        let xs: Vec<f64> = (0..10_000).map(|_| j.unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
