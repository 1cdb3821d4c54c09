//! Link parameters of one direction and their validation.

use std::fmt;
use std::time::Duration;

/// Queue size used by [`LinkParams::default`]: 64 KiB (52 ms of buffering at 10 Mbit/s).
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024;

/// The emulated conditions of one direction of the link.
///
/// A datagram entering the direction is first dropped with probability `loss`; otherwise it joins a
/// FIFO queue (dropped instead when the queue would exceed `queue_bytes`), is serialised at `rate_bps`
/// and then delivered `delay` after its serialisation ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// Bottleneck rate in bit/s; `None` means unlimited (no serialisation time).
    pub rate_bps: Option<u64>,
    /// Fixed one-way propagation delay added after serialisation.
    pub delay: Duration,
    /// Probability in `0..=1` that a datagram is dropped on entry (independent, seeded).
    pub loss: f64,
    /// Capacity of the drop-tail queue in bytes (the datagram being serialised is not counted; a
    /// datagram arriving at an empty queue is always admitted).
    pub queue_bytes: usize,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self::unlimited()
    }
}

impl LinkParams {
    /// No rate limit, no delay, no loss, [`DEFAULT_QUEUE_BYTES`] of queue.
    pub const fn unlimited() -> Self {
        Self {
            rate_bps: None,
            delay: Duration::ZERO,
            loss: 0.0,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }

    /// Sets the rate in bit/s.
    #[must_use]
    pub const fn with_rate_bps(mut self, rate_bps: u64) -> Self {
        self.rate_bps = Some(rate_bps);
        self
    }

    /// Sets the rate in Mbit/s (10⁶ bit/s).
    #[must_use]
    pub fn with_rate_mbit(mut self, mbit: f64) -> Self {
        self.rate_bps = Some(mbit_to_bps(mbit));
        self
    }

    /// Removes the rate limit.
    #[must_use]
    pub const fn with_unlimited_rate(mut self) -> Self {
        self.rate_bps = None;
        self
    }

    /// Sets the one-way delay.
    #[must_use]
    pub const fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the loss probability.
    #[must_use]
    pub const fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the queue capacity in bytes.
    #[must_use]
    pub const fn with_queue_bytes(mut self, queue_bytes: usize) -> Self {
        self.queue_bytes = queue_bytes;
        self
    }

    /// Checks the values: a rate must be > 0, the loss in `0..=1`, the delay at most one hour.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.rate_bps == Some(0) {
            return Err(ParamsError::ZeroRate);
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ParamsError::Loss(self.loss));
        }
        if self.delay > MAX_DELAY {
            return Err(ParamsError::Delay(self.delay));
        }
        Ok(())
    }

    /// Time to serialise `bytes` at this rate (zero when unlimited).
    pub fn serialisation_time(&self, bytes: usize) -> Duration {
        match self.rate_bps {
            None => Duration::ZERO,
            Some(rate) => {
                let nanos = (bytes as u128 * 8 * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        }
    }
}

impl fmt::Display for LinkParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate_bps {
            Some(r) => write!(f, "rate {:.3} Mbit/s", r as f64 / 1e6)?,
            None => write!(f, "rate unlimited")?,
        }
        write!(
            f,
            ", delay {:.1} ms, loss {}, queue {} B",
            self.delay.as_secs_f64() * 1e3,
            self.loss,
            self.queue_bytes
        )
    }
}

/// Largest accepted one-way delay.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Converts Mbit/s (10⁶ bit/s) to bit/s, rounding; values ≤ 0 or not finite give 0 (rejected by
/// [`LinkParams::validate`]).
pub fn mbit_to_bps(mbit: f64) -> u64 {
    if mbit.is_finite() && mbit > 0.0 {
        // Saturating float-to-int conversion; realistic rates are far below u64::MAX.
        (mbit * 1e6).round() as u64
    } else {
        0
    }
}

/// Rejected link parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// A rate of 0 bit/s (unlimited is `rate_bps: None`).
    #[error("rate must be > 0 bit/s (use no rate for unlimited)")]
    ZeroRate,
    /// A loss probability outside `0..=1` (or NaN).
    #[error("loss probability {0} is outside 0..=1")]
    Loss(f64),
    /// A one-way delay above [`MAX_DELAY`].
    #[error("one-way delay {0:?} exceeds one hour")]
    Delay(Duration),
}

/// Which direction(s) of the link a change applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → upstream server.
    Uplink,
    /// Upstream server → client.
    Downlink,
    /// Both directions.
    Both,
}

impl Direction {
    /// Whether this selector includes the uplink.
    pub fn has_uplink(self) -> bool {
        matches!(self, Self::Uplink | Self::Both)
    }

    /// Whether this selector includes the downlink.
    pub fn has_downlink(self) -> bool {
        matches!(self, Self::Downlink | Self::Both)
    }
}

impl std::str::FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "up" | "uplink" | "ul" => Ok(Self::Uplink),
            "down" | "downlink" | "dl" => Ok(Self::Downlink),
            "both" | "*" | "" => Ok(Self::Both),
            other => Err(format!("unknown direction {other:?} (up, down or both)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialisation_time_of_a_1250_byte_datagram_at_10_mbit_is_1_ms() {
        let p = LinkParams::unlimited().with_rate_mbit(10.0);
        assert_eq!(p.serialisation_time(1250), Duration::from_millis(1));
        assert_eq!(
            LinkParams::unlimited().serialisation_time(1250),
            Duration::ZERO
        );
    }

    #[test]
    fn validation_rejects_bad_values() {
        assert_eq!(
            LinkParams::unlimited().with_rate_bps(0).validate(),
            Err(ParamsError::ZeroRate)
        );
        assert!(LinkParams::unlimited().with_loss(1.5).validate().is_err());
        assert!(LinkParams::unlimited()
            .with_loss(f64::NAN)
            .validate()
            .is_err());
        assert!(LinkParams::unlimited()
            .with_delay(Duration::from_secs(7200))
            .validate()
            .is_err());
        assert!(LinkParams::unlimited().with_loss(1.0).validate().is_ok());
        assert_eq!(mbit_to_bps(-1.0), 0);
        assert_eq!(mbit_to_bps(2.5), 2_500_000);
    }

    #[test]
    fn directions_parse() {
        assert_eq!("UP".parse::<Direction>(), Ok(Direction::Uplink));
        assert_eq!("downlink".parse::<Direction>(), Ok(Direction::Downlink));
        assert_eq!("both".parse::<Direction>(), Ok(Direction::Both));
        assert!("sideways".parse::<Direction>().is_err());
    }
}
