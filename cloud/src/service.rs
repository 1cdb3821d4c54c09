//! `jmdc-cloud serve` as a service: signals, systemd notifications, reload and graceful stop.
//!
//! - SIGTERM / SIGINT: `STOPPING=1`, stop accepting, finish frames in flight (at most
//!   [`DRAIN_TIMEOUT`]), close connections, return `Ok` (exit status 0).
//! - `[health] listen`: `/healthz`, `/readyz` (503 from SIGTERM on), `/metrics` over HTTP, up
//!   until the process exits.
//! - SIGHUP: `RELOADING=1`, re-read the configuration, apply `log_level` (the only setting that
//!   changes live; others are reported as needing a restart), `READY=1`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jmdc_service::logging::LogControl;
use jmdc_service::notify::Notifier;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

use crate::config::CloudConfig;
use crate::health_server::{HealthOptions, HealthServer, HEALTH_MAX_CONNECTIONS};
use crate::server::{ServerStats, DRAIN_TIMEOUT};
use crate::systemd;

/// How often `STATUS=` is refreshed.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// What the service was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Reload,
    Stop,
}

/// The signals the service handles.
#[derive(Debug)]
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        let make = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot install the {name} handler"))
        };
        Ok(Self {
            term: make(SignalKind::terminate(), "SIGTERM")?,
            int: make(SignalKind::interrupt(), "SIGINT")?,
            hup: make(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.term.recv() => Request::Stop,
            _ = self.int.recv() => Request::Stop,
            _ = self.hup.recv() => Request::Reload,
        }
    }
}

/// Loads the models, binds, notifies `READY=1` and serves until SIGTERM/SIGINT. Prints
/// `jmdc-cloud listening on ADDR` on stdout once bound. `config_path` is re-read on SIGHUP.
pub async fn run(config_path: &Path, cfg: CloudConfig, log: LogControl) -> anyhow::Result<()> {
    // Before the (slow) model load, so an early SIGHUP/SIGTERM does not kill the process.
    let mut signals = Signals::install()?;
    let server = crate::build_server(&cfg)?;
    let addr = server.local_addr()?;
    let stats = server.stats();
    let revocations = server.revocations();
    let heartbeat = server.heartbeat();
    let health_view = server.health_view();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serve = tokio::spawn(server.serve(async {
        let _ = stop_rx.await;
    }));
    // Bound after the models loaded: until then probes get "connection refused" (not ready).
    let _health = match &cfg.health {
        Some(section) => {
            let health = HealthServer::start(
                section.listen,
                health_view,
                HealthOptions {
                    max_connections: HEALTH_MAX_CONNECTIONS,
                    ..HealthOptions::default()
                },
            )
            .await;
            let health = match health {
                Ok(health) => health,
                Err(e) => {
                    let _ = stop_tx.send(());
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut serve).await;
                    return Err(e.into());
                }
            };
            println!("jmdc-cloud health on {}", health.local_addr());
            Some(health)
        }
        None => None,
    };
    println!("jmdc-cloud listening on {addr}");
    info!(%addr, "jmdc-cloud listening");
    let notifier = Notifier::from_env();
    notifier.ready(&systemd::status_line(addr, &stats));

    let mut helpers = Vec::new();
    if let Some(interval) = notifier.watchdog_timeout() {
        info!(?interval, "systemd watchdog enabled");
        helpers.push(tokio::spawn(systemd::watchdog_loop(
            notifier.clone(),
            interval,
            heartbeat,
        )));
    }
    helpers.push(tokio::spawn(systemd::status_loop(
        notifier.clone(),
        addr,
        stats.clone(),
        STATUS_PERIOD,
    )));

    let mut running = cfg;
    let outcome = loop {
        tokio::select! {
            request = signals.next() => match request {
                Request::Reload => {
                    match revocations.reload() {
                        Ok(n) if revocations.path().is_some() => {
                            info!(revoked = n, "revocation list re-read");
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "revocation list not re-read; the one in force stays"),
                    }
                    reload(config_path, &mut running, &log, &notifier, addr, &stats)
                }
                Request::Stop => break Ok(()),
            },
            ended = &mut serve => {
                break Err(anyhow::anyhow!("the QUIC endpoint stopped on its own ({ended:?})"));
            }
        }
    };
    if outcome.is_ok() {
        let in_flight = stats.in_flight.load(std::sync::atomic::Ordering::SeqCst);
        info!(in_flight, "stop requested");
        notifier.stopping(&format!("stopping: finishing {in_flight} frames in flight"));
        let _ = stop_tx.send(());
        let bound = DRAIN_TIMEOUT + Duration::from_secs(5);
        if tokio::time::timeout(bound, &mut serve).await.is_err() {
            warn!("shutdown took longer than {bound:?}; exiting anyway");
        }
        info!("jmdc-cloud stopped");
    }
    for helper in helpers {
        helper.abort();
    }
    outcome
}

/// SIGHUP: re-reads the configuration and applies what can change live (the log level).
fn reload(
    path: &Path,
    running: &mut CloudConfig,
    log: &LogControl,
    notifier: &Notifier,
    addr: SocketAddr,
    stats: &Arc<ServerStats>,
) {
    notifier.reloading();
    info!(config = %path.display(), "SIGHUP: re-reading the configuration (only log_level changes live)");
    match CloudConfig::load(path) {
        Ok(new) => {
            match log.set_level(&new.log_level) {
                Ok(()) if log.env_override() => {
                    info!(level = %new.log_level, "RUST_LOG is set and stays in force")
                }
                Ok(()) => info!(level = %new.log_level, "log level applied"),
                Err(e) => warn!(error = %e, "log level not changed"),
            }
            let pending = running.restart_needed(&new);
            if !pending.is_empty() {
                warn!(
                    settings = %pending.join(", "),
                    "changed settings take effect only after a restart"
                );
            }
            running.log_level = new.log_level;
        }
        Err(e) => warn!(error = %e, "configuration not reloaded; the running one stays"),
    }
    notifier.ready(&systemd::status_line(addr, stats));
}
