//! The worker's use of the service manager's `Type=notify` protocol (the one wrapper,
//! [`jmdc_service::notify::Notifier`]): its STATUS line, a watchdog fed only while the accept loop's
//! heartbeat is fresh, and the periodic status.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jmdc_service::notify::Notifier;
use tracing::debug;

use crate::health::Heartbeat;
use crate::server::ServerStats;

/// `listening on ADDR: N connections open, M in flight, K frames served, F failed, O overloaded`.
pub(crate) fn status_line(addr: SocketAddr, stats: &ServerStats) -> String {
    format!(
        "listening on {addr}: {} connections open, {} in flight, {} frames served, {} failed, {} overloaded",
        stats.open_connections.load(Ordering::Relaxed),
        stats.in_flight.load(Ordering::Relaxed),
        stats.frames_ok.load(Ordering::Relaxed),
        stats.frames_failed.load(Ordering::Relaxed),
        stats.overloaded.load(Ordering::Relaxed),
    )
}

/// Sends `WATCHDOG=1` every `interval / 2` while the accept loop's heartbeat is fresher than
/// `interval` (systemd then restarts a worker whose accept loop hangs). Runs until aborted.
pub(crate) async fn watchdog_loop(
    notifier: Notifier,
    interval: Duration,
    heartbeat: Arc<Heartbeat>,
) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if heartbeat.is_fresh(interval) {
            notifier.watchdog();
        } else {
            debug!(age = ?heartbeat.age(), "accept loop heartbeat is stale: no watchdog ping");
        }
    }
}

/// Sends [`status_line`] every `every`. Runs until aborted.
pub(crate) async fn status_loop(
    notifier: Notifier,
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        notifier.status(&status_line(addr, &stats));
    }
}
