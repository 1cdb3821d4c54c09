//! What every source shares with the feed: a captured frame, the counters, the background work a
//! feed owns, and what a source's `start` hands to [`super::spawn`]. A leaf: it imports no other
//! source module, so the sources and the feed depend on it and not on each other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::AbortHandle;

/// A frame as produced, before it gets its delivery id.
#[derive(Debug)]
pub(crate) struct Captured {
    pub label: Option<u8>,
    pub pixels: Vec<u8>,
    pub origin: String,
    pub captured: Instant,
    /// The source's JPEG when it was exactly at the model input size ([`Frame::jpeg`]).
    pub jpeg: Option<Arc<[u8]>>,
}

/// Counters shared between the feed and its background work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub dropped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub restarts: AtomicU64,
}

impl Counters {
    pub(crate) fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one undecodable frame and logs it: the first (and the 10th, 100th, …) at warn,
    /// the others at debug.
    pub(crate) fn decode_error(&self, what: &str, error: &dyn std::fmt::Display) {
        let n = self.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if is_power_of_ten(n) {
            tracing::warn!(errors = n, "{what}: skipped undecodable frame: {error}");
        } else {
            tracing::debug!(errors = n, "{what}: skipped undecodable frame: {error}");
        }
    }
}

/// 1, 10, 100, …
pub(crate) fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Background work owned by a feed; stopped when the feed is dropped.
#[derive(Debug, Default)]
pub(crate) struct Background {
    pub tasks: Vec<AbortHandle>,
    pub stop: Option<Arc<AtomicBool>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A started source: what produces its frames (`P`), its counters, a description for logs and
/// STATUS, and its background work. [`super::spawn`] turns it into a [`super::FrameFeed`].
#[derive(Debug)]
pub(crate) struct Started<P> {
    pub producer: P,
    pub counters: Arc<Counters>,
    pub description: String,
    pub background: Background,
}

impl<P> Started<P> {
    /// The same source with its producer wrapped by `f`.
    pub(crate) fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Started<Q> {
        Started {
            producer: f(self.producer),
            counters: self.counters,
            description: self.description,
            background: self.background,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten() {
        let v: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(v, vec![1, 10, 100, 1000]);
        assert!(!is_power_of_ten(0));
    }
}
