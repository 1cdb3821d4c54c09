//! Exponential restart delay.

use std::time::Duration;

/// Doubling delay between `initial` and `max`, reset after a healthy run.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

/// A child or device that ran this long before failing counts as healthy: the delay starts over.
pub(crate) const HEALTHY_RUN: Duration = Duration::from_secs(10);

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        let initial = Duration::from_millis(initial_ms.max(1));
        Self {
            initial,
            max: Duration::from_millis(max_ms).max(initial),
            next: initial,
        }
    }

    /// The delay to wait now; the following one doubles (up to the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts over at the initial delay if the last run lasted at least [`HEALTHY_RUN`].
    pub fn after_run(&mut self, ran: Duration) {
        if ran >= HEALTHY_RUN {
            self.next = self.initial;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(500, 3000);
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 3000, 3000]);
        b.after_run(Duration::from_secs(1));
        assert_eq!(b.next_delay().as_millis(), 3000);
        b.after_run(HEALTHY_RUN);
        assert_eq!(b.next_delay().as_millis(), 500);
    }
}
