//! Time-varying link conditions: a list of parameter changes applied on schedule.
//!
//! # File format (CSV)
//!
//! One step per line, `#` starts a comment, blank lines are ignored, an optional header line whose
//! first field is `at_ms` is skipped:
//!
//! ```text
//! # at_ms, direction, rate_mbit, delay_ms, loss, queue_bytes
//! 0,     both, 10,        20, 0.0,  65536
//! 5000,  up,   2
//! 10000, down, unlimited, 50
//! 15000, both, 10,        20, 0.01
//! ```
//!
//! * `at_ms`: milliseconds after the start of the playback (steps are sorted by it).
//! * `direction`: `up`/`uplink`, `down`/`downlink` or `both` (empty = both).
//! * `rate_mbit`: Mbit/s (10⁶ bit/s) or `unlimited`.
//! * `delay_ms`: one-way delay in milliseconds (fractions allowed).
//! * `loss`: drop probability in `0..=1`.
//! * `queue_bytes`: queue capacity.
//!
//! Missing or empty fields keep the value the direction had after the previous step (the first step
//! starts from the base parameters given to [`Trace::parse`]), so each step records complete
//! parameters.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::params::{Direction, LinkParams, ParamsError};
use super::shaper::cancelled;
use super::LinkHandle;

/// Largest accepted step time in a trace file (about 31 years).
const MAX_AT_MS: f64 = 1e12;

/// Most applied steps a [`TraceReport`] keeps (a looping trace can run for a long time).
pub const MAX_REPORTED_STEPS: usize = 100_000;

/// One scheduled change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceStep {
    /// Offset from the start of the playback.
    pub at: Duration,
    /// Direction(s) the parameters apply to.
    pub direction: Direction,
    /// The new parameters.
    pub params: LinkParams,
}

/// A schedule of link changes, optionally repeated with a period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    steps: Vec<TraceStep>,
    period: Option<Duration>,
}

/// A rejected trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A step's parameters failed [`LinkParams::validate`].
    #[error("trace step {index} (at {at:?}): {source}")]
    Params {
        /// Index of the step after sorting by time (0-based).
        index: usize,
        /// The step's offset from the start of the playback.
        at: Duration,
        /// Why the parameters were rejected.
        source: ParamsError,
    },
    /// A line of a trace file cannot be parsed.
    #[error("line {line}: {reason}")]
    Syntax {
        /// Line number in the file (1-based).
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// The repeat period is zero or shorter than the time of the last step.
    #[error("repeat period {period:?} must be > 0 and ≥ the last step ({last:?})")]
    Period {
        /// The requested period.
        period: Duration,
        /// Offset of the last step.
        last: Duration,
    },
    /// The trace file cannot be read.
    #[error("cannot read trace file {path}: {source}")]
    Read {
        /// The trace file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Trace {
    /// Builds a trace; the steps are sorted by time (stable: equal times keep their order) and each
    /// one's parameters are validated.
    pub fn new(mut steps: Vec<TraceStep>) -> Result<Self, TraceError> {
        steps.sort_by_key(|s| s.at);
        for (index, step) in steps.iter().enumerate() {
            step.params
                .validate()
                .map_err(|source| TraceError::Params {
                    index,
                    at: step.at,
                    source,
                })?;
        }
        Ok(Self {
            steps,
            period: None,
        })
    }

    /// Convenience: the same parameters for both directions at each time.
    pub fn both(
        steps: impl IntoIterator<Item = (Duration, LinkParams)>,
    ) -> Result<Self, TraceError> {
        Self::new(
            steps
                .into_iter()
                .map(|(at, params)| TraceStep {
                    at,
                    direction: Direction::Both,
                    params,
                })
                .collect(),
        )
    }

    /// Repeats the schedule every `period` (step `i` of pass `n` runs at `n·period + at_i`) until the
    /// relay shuts down.
    pub fn repeat_every(mut self, period: Duration) -> Result<Self, TraceError> {
        let last = self.steps.last().map_or(Duration::ZERO, |s| s.at);
        if period.is_zero() || period < last {
            return Err(TraceError::Period { period, last });
        }
        self.period = Some(period);
        Ok(self)
    }

    /// The steps, sorted by time.
    pub fn steps(&self) -> &[TraceStep] {
        &self.steps
    }

    /// The repeat period, if any.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    /// Whether the trace has no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Parses the CSV format described in the module documentation; `uplink` and `downlink` are the
    /// parameters that missing fields of the first step fall back to.
    pub fn parse(text: &str, uplink: LinkParams, downlink: LinkParams) -> Result<Self, TraceError> {
        let mut current_up = uplink;
        let mut current_down = downlink;
        let mut steps = Vec::new();
        for (number, raw) in text.lines().enumerate() {
            let line = number + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split(',').map(str::trim).collect();
            if fields[0].eq_ignore_ascii_case("at_ms") {
                continue;
            }
            let syntax = |reason: String| TraceError::Syntax { line, reason };
            if fields.len() > 6 {
                return Err(syntax(format!(
                    "{} fields, at most 6 (at_ms, direction, rate_mbit, delay_ms, loss, queue_bytes)",
                    fields.len()
                )));
            }
            let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
            let at_ms: f64 = parse_number(fields[0], "at_ms").map_err(syntax)?;
            if !(at_ms.is_finite() && (0.0..=MAX_AT_MS).contains(&at_ms)) {
                return Err(syntax(format!("at_ms {at_ms} must be in 0..={MAX_AT_MS}")));
            }
            let direction: Direction = field(1).unwrap_or("both").parse().map_err(syntax)?;
            let base = if direction == Direction::Downlink {
                current_down
            } else {
                current_up
            };
            let mut params = base;
            if let Some(rate) = field(2) {
                params.rate_bps = if ["unlimited", "inf", "none"]
                    .iter()
                    .any(|w| rate.eq_ignore_ascii_case(w))
                {
                    None
                } else {
                    let mbit = parse_number(rate, "rate_mbit").map_err(syntax)?;
                    Some(super::params::mbit_to_bps(mbit))
                };
            }
            if let Some(delay) = field(3) {
                let ms = parse_number(delay, "delay_ms").map_err(syntax)?;
                let max_ms = super::params::MAX_DELAY.as_secs_f64() * 1e3;
                if !(ms.is_finite() && (0.0..=max_ms).contains(&ms)) {
                    return Err(syntax(format!("delay_ms {ms} must be in 0..={max_ms}")));
                }
                params.delay = Duration::from_secs_f64(ms / 1e3);
            }
            if let Some(loss) = field(4) {
                params.loss = parse_number(loss, "loss").map_err(syntax)?;
            }
            if let Some(queue) = field(5) {
                params.queue_bytes = queue
                    .parse()
                    .map_err(|e| syntax(format!("queue_bytes {queue:?}: {e}")))?;
            }
            params.validate().map_err(|e| syntax(e.to_string()))?;
            // A `both` step built from the uplink's state also sets the downlink to the same values.
            if direction.has_uplink() {
                current_up = params;
            }
            if direction.has_downlink() {
                current_down = params;
            }
            steps.push(TraceStep {
                at: Duration::from_secs_f64(at_ms / 1e3),
                direction,
                params,
            });
        }
        Self::new(steps)
    }

    /// Reads and parses a trace file (see [`Trace::parse`]).
    pub fn from_file(
        path: &Path,
        uplink: LinkParams,
        downlink: LinkParams,
    ) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, uplink, downlink)
    }
}

fn parse_number(text: &str, name: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|e| format!("{name} {text:?} is not a number: {e}"))
}

/// When each step was actually applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppliedStep {
    /// Index into [`Trace::steps`].
    pub index: usize,
    /// Repetition number (0 for the first pass).
    pub pass: u64,
    /// Scheduled offset from the start of the playback.
    pub scheduled: Duration,
    /// Actual offset when the parameters were set.
    pub applied: Duration,
}

impl AppliedStep {
    /// How late the step was applied.
    pub fn lateness(&self) -> Duration {
        self.applied.saturating_sub(self.scheduled)
    }
}

/// The result of playing a trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceReport {
    /// The steps applied, in order (at most [`MAX_REPORTED_STEPS`]).
    pub applied: Vec<AppliedStep>,
    /// True when the relay shut down before the trace ended.
    pub cancelled: bool,
}

/// Applies `trace` to `handle` on schedule, counting from `start`.
pub(crate) async fn play(
    trace: Trace,
    handle: LinkHandle,
    start: Instant,
    mut shutdown: watch::Receiver<bool>,
) -> TraceReport {
    let mut report = TraceReport::default();
    if trace.is_empty() {
        return report;
    }
    let mut pass: u64 = 0;
    loop {
        let offset = trace.period.map_or(Duration::ZERO, |p| {
            p.saturating_mul(u32::try_from(pass).unwrap_or(u32::MAX))
        });
        for (index, step) in trace.steps.iter().enumerate() {
            let scheduled = offset + step.at;
            tokio::select! {
                () = tokio::time::sleep_until((start + scheduled).into()) => {}
                () = cancelled(&mut shutdown) => {
                    report.cancelled = true;
                    return report;
                }
            }
            // Parameters were validated when the trace was built.
            let _ = handle.set(step.direction, step.params);
            if report.applied.len() < MAX_REPORTED_STEPS {
                report.applied.push(AppliedStep {
                    index,
                    pass,
                    scheduled,
                    applied: start.elapsed(),
                });
            }
        }
        if trace.period.is_none() {
            return report;
        }
        pass += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fills_missing_fields_from_the_previous_step() {
        let base = LinkParams::unlimited()
            .with_rate_mbit(10.0)
            .with_delay(Duration::from_millis(20));
        let text = "at_ms,direction,rate_mbit,delay_ms,loss,queue_bytes\n\
                    # comment\n\
                    \n\
                    0, both, 10, 20, 0.0, 65536\n\
                    500, up, 2   # slower uplink\n\
                    1000, down, unlimited, 50\n\
                    1500, up, , , 0.25\n";
        let trace = Trace::parse(text, base, base).expect("valid trace");
        let s = trace.steps();
        assert_eq!(s.len(), 4);
        assert_eq!(s[1].at, Duration::from_millis(500));
        assert_eq!(s[1].direction, Direction::Uplink);
        assert_eq!(s[1].params.rate_bps, Some(2_000_000));
        assert_eq!(s[1].params.delay, Duration::from_millis(20));
        assert_eq!(s[2].params.rate_bps, None);
        assert_eq!(s[2].params.delay, Duration::from_millis(50));
        assert_eq!(s[3].params.rate_bps, Some(2_000_000));
        assert!((s[3].params.loss - 0.25).abs() < 1e-12);
        assert_eq!(s[3].params.queue_bytes, 65536);
    }

    #[test]
    fn parse_rejects_bad_lines() {
        let base = LinkParams::unlimited();
        for bad in [
            "x,both,1",
            "0,sideways,1",
            "0,both,abc",
            "0,both,0",
            "0,both,1,-5",
            "0,both,1,5,1.5",
            "0,both,1,5,0,-1",
            "0,both,1,5,0,1,7",
            "-1,both,1",
        ] {
            assert!(Trace::parse(bad, base, base).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn new_sorts_and_repeat_checks_the_period() {
        let p = LinkParams::unlimited();
        let trace =
            Trace::both([(Duration::from_millis(300), p), (Duration::ZERO, p)]).expect("valid");
        assert_eq!(trace.steps()[0].at, Duration::ZERO);
        assert!(trace
            .clone()
            .repeat_every(Duration::from_millis(100))
            .is_err());
        assert!(trace.repeat_every(Duration::from_millis(300)).is_ok());
        assert!(Trace::both([(Duration::ZERO, p.with_loss(2.0))]).is_err());
    }
}
