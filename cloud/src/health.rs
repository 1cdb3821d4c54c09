//! Liveness of the accept loop: it beats every [`HEARTBEAT_PERIOD`]; the systemd watchdog only
//! pings while the beat is fresh.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a serving accept loop beats.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(100);

/// The time of the accept loop's last beat.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds after `origin` of the last beat; `u64::MAX` before the first.
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl Heartbeat {
    /// Records a beat now.
    pub fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat; `None` before the first one.
    pub fn age(&self) -> Option<Duration> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        Some(Duration::from_millis(now.saturating_sub(last)))
    }

    /// Whether the last beat is at most `limit` old.
    pub fn is_fresh(&self, limit: Duration) -> bool {
        self.age().is_some_and(|age| age <= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_after_a_recent_beat() {
        let h = Heartbeat::default();
        assert!(!h.is_fresh(Duration::from_secs(60)), "no beat yet");
        h.beat();
        assert!(h.is_fresh(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!h.is_fresh(Duration::from_millis(10)));
    }
}
