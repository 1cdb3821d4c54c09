//! The service manager's side of `Type=notify` (sd_notify): `READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=…` and the watchdog. Every call is a no-op without `NOTIFY_SOCKET`;
//! a failed send is logged, never fatal.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

use crate::health::Heartbeat;
use crate::server::ServerStats;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Start-up (or a reload) is finished.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (with the monotonic time systemd ≥ 253 expects).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Shutdown begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A free-form status line (`systemctl status` shows it).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC` for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// `listening on ADDR: N connections open, M in flight, K frames served, F failed, O overloaded`.
pub fn status_line(addr: SocketAddr, stats: &ServerStats) -> String {
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
pub async fn watchdog_loop(interval: Duration, heartbeat: Arc<Heartbeat>) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if heartbeat.is_fresh(interval) {
            send(&[NotifyState::Watchdog]);
        } else {
            debug!(age = ?heartbeat.age(), "accept loop heartbeat is stale: no watchdog ping");
        }
    }
}

/// Sends [`status_line`] every `every`. Runs until aborted.
pub async fn status_loop(addr: SocketAddr, stats: Arc<ServerStats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        status(&status_line(addr, &stats));
    }
}
