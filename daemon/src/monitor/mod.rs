//! Live measurements of the conditions the optimizer decides on: CPU load on the edge
//! ([`cpu::CpuMonitor`]) and the network path to the cloud worker ([`network::NetworkMonitor`]).
//!
//! Both smooth their samples with an EWMA and flag *changes* with a [`ChangeDetector`]: a sample
//! that departs from the smoothed value by more than a threshold, in the same direction, for
//! `sustain` consecutive samples resets the smoothed value to the mean of those samples (so the
//! estimate follows a real step at once instead of creeping towards it) and reports the change.
//! One outlier never moves the estimate: deviating samples are held out of the EWMA until they
//! are confirmed. See `docs/monitoring.md`.

pub mod cpu;
pub mod network;

pub use jmdc_core::profiling::Ewma;

/// When a sample counts as departing from the smoothed value: `|x − v| > max(relative·|v|,
/// absolute)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeThreshold {
    /// Relative part (0.3 = 30 % of the smoothed value).
    pub relative: f64,
    /// Absolute part, in the sample's unit.
    pub absolute: f64,
}

impl ChangeThreshold {
    /// Only a relative threshold.
    pub fn relative(r: f64) -> Self {
        ChangeThreshold {
            relative: r,
            absolute: 0.0,
        }
    }

    /// Only an absolute threshold.
    pub fn absolute(a: f64) -> Self {
        ChangeThreshold {
            relative: 0.0,
            absolute: a,
        }
    }

    fn exceeded(&self, smoothed: f64, sample: f64) -> bool {
        (sample - smoothed).abs() > (self.relative * smoothed.abs()).max(self.absolute)
    }
}

/// Tuning of a [`ChangeDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// EWMA weight of a new (non-deviating) sample.
    pub alpha: f64,
    /// What counts as a deviation.
    pub threshold: ChangeThreshold,
    /// Consecutive deviations in the same direction that make a change (≥ 1).
    pub sustain: usize,
}

/// A confirmed step in a smoothed series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Smoothed value before the step.
    pub from: f64,
    /// Smoothed value after it (mean of the confirming samples).
    pub to: f64,
}

impl Step {
    /// `to / from − 1` (∞ when `from` is 0).
    pub fn relative(&self) -> f64 {
        if self.from == 0.0 {
            f64::INFINITY
        } else {
            self.to / self.from - 1.0
        }
    }
}

/// EWMA smoothing with sustained-step detection (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeDetector {
    config: DetectorConfig,
    ewma: Ewma,
    pending: usize,
    pending_sum: f64,
    pending_up: bool,
    changes: u64,
}

impl ChangeDetector {
    /// A detector with no samples yet.
    pub fn new(config: DetectorConfig) -> Self {
        ChangeDetector {
            config,
            ewma: Ewma::new(config.alpha),
            pending: 0,
            pending_sum: 0.0,
            pending_up: false,
            changes: 0,
        }
    }

    /// Adds a sample (non-finite samples are ignored); returns the step if this sample confirmed
    /// one. The first sample only initialises the smoothed value.
    pub fn update(&mut self, x: f64) -> Option<Step> {
        if !x.is_finite() {
            return None;
        }
        let Some(v) = self.ewma.value() else {
            self.ewma.update(x);
            return None;
        };
        if !self.config.threshold.exceeded(v, x) {
            self.pending = 0;
            self.ewma.update(x);
            return None;
        }
        let up = x > v;
        if self.pending > 0 && up == self.pending_up {
            self.pending += 1;
            self.pending_sum += x;
        } else {
            self.pending = 1;
            self.pending_sum = x;
            self.pending_up = up;
        }
        if self.pending >= self.config.sustain.max(1) {
            let to = self.pending_sum / self.pending as f64;
            self.ewma.reset_to(to);
            self.pending = 0;
            self.changes += 1;
            return Some(Step { from: v, to });
        }
        None
    }

    /// Drops the deviating samples waiting for confirmation if they point `up` (or down): a
    /// measurement that could not be used as a sample still showed that the step did not hold.
    pub fn contradict_pending(&mut self, up: bool) {
        if self.pending > 0 && self.pending_up == up {
            self.pending = 0;
            self.pending_sum = 0.0;
        }
    }

    /// The smoothed value (`None` before the first sample).
    pub fn value(&self) -> Option<f64> {
        self.ewma.value()
    }

    /// Deviating samples waiting for confirmation.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Steps confirmed so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }
}
