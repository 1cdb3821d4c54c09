//! Liveness of the accept loop: it beats every [`HEARTBEAT_PERIOD`]; the systemd watchdog only
//! pings while the beat is fresh. [`HealthView`] turns the beat and the draining flag into the
//! answers of `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::runner::MergedCacheStats;

use crate::batch::BatchStats;
use crate::engine::TailEngine;
use crate::stats::ServerStats;

/// `/readyz` fails when the last beat is older than this.
pub const READY_STALE_AFTER: Duration = Duration::from_secs(1);
/// `/healthz` fails when the last beat is older than this (and the worker is not draining).
pub const LIVE_STALE_AFTER: Duration = Duration::from_secs(3);

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

/// Whether the worker should get new devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Models loaded, accept loop beating, not shutting down.
    Ready,
    /// The accept loop has not beaten yet or its beat is stale.
    NotServing,
    /// Shutdown began (SIGTERM): frames in flight finish, new ones are refused.
    Draining,
}

impl Readiness {
    /// `ready`, `not_serving`, `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::NotServing => "not_serving",
            Readiness::Draining => "draining",
        }
    }
}

/// A read-only view of a server's health: heartbeat, draining flag and counters. Cheap to clone;
/// stays valid after the server is consumed by `serve`.
#[derive(Debug, Clone)]
pub struct HealthView {
    heartbeat: Arc<Heartbeat>,
    draining: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    engine: Option<Arc<TailEngine>>,
}

impl HealthView {
    /// A view over the given parts (see `CloudServer::health_view`).
    pub fn new(
        heartbeat: Arc<Heartbeat>,
        draining: Arc<AtomicBool>,
        stats: Arc<ServerStats>,
    ) -> Self {
        Self {
            heartbeat,
            draining,
            stats,
            engine: None,
        }
    }

    /// The view with the engine's batching and merged-range counters.
    pub fn with_engine(mut self, engine: Arc<TailEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The engine's counters: batches run and merged ranges (zeros without an engine).
    pub fn engine_stats(&self) -> (BatchStats, MergedCacheStats) {
        self.engine.as_ref().map_or_else(Default::default, |e| {
            (e.batch_stats(), e.merged_stats().unwrap_or_default())
        })
    }

    /// Alive: the accept loop beat within [`LIVE_STALE_AFTER`], or the worker is draining (the
    /// loop has stopped on purpose and the drain is bounded).
    pub fn is_live(&self) -> bool {
        self.is_draining() || self.heartbeat.is_fresh(LIVE_STALE_AFTER)
    }

    /// Ready for new devices: beating within [`READY_STALE_AFTER`] and not draining.
    pub fn readiness(&self) -> Readiness {
        if self.is_draining() {
            Readiness::Draining
        } else if self.heartbeat.is_fresh(READY_STALE_AFTER) {
            Readiness::Ready
        } else {
            Readiness::NotServing
        }
    }

    /// Shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The heartbeat's age (`None` before the first beat).
    pub fn heartbeat_age(&self) -> Option<Duration> {
        self.heartbeat.age()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_beat_and_drain() {
        let hb = Arc::new(Heartbeat::default());
        let draining = Arc::new(AtomicBool::new(false));
        let view = HealthView::new(hb.clone(), draining.clone(), Arc::default());
        assert_eq!(view.readiness(), Readiness::NotServing);
        assert!(!view.is_live());
        hb.beat();
        assert_eq!(view.readiness(), Readiness::Ready);
        assert!(view.is_live());
        draining.store(true, Ordering::SeqCst);
        assert_eq!(view.readiness(), Readiness::Draining);
        assert!(view.is_live());
    }

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
