//! The cloud link: keeps one QUIC connection to the first reachable cloud endpoint, notices when it
//! is lost (the worker closed it, the path went silent past the QUIC idle timeout, or requests on it
//! keep failing), and gets back to the cloud by itself — every endpoint in order of preference on
//! each round, exponential backoff with jitter between rounds, failback to a more preferred endpoint
//! once it answers again. See `docs/cloud-link.md` for the state machine.
//!
//! While disconnected [`CloudLink::current`] is `None`, so frames finish on the edge at once
//! instead of waiting on a dead connection.
//!
//! This file is the public API over a core generic in its transport; `driver.rs` is the background
//! task's state machine, `transport.rs` the QUIC connector, `tests.rs` the state machine on
//! virtual time over an in-memory transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::backoff::{BackoffBounds, Jitter};
use crate::client::{ClientError, CloudClient};

mod driver;
#[cfg(test)]
mod tests;
mod transport;

use driver::{client_key, Driver, Health, Pending, Shared};
use transport::{Connector, QuicConnector};

/// How long [`CloudLink::close`] waits for the background task to finish.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link needs (built from the `[cloud]` config section).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSettings {
    /// Cloud workers in order of preference; at least one.
    pub endpoints: Vec<SocketAddr>,
    /// Name the workers' certificate must carry.
    pub server_name: String,
    /// PEM file with the certificate(s) the workers' certificate must chain to.
    pub ca_cert: PathBuf,
    /// This device's certificate and key (PEM) for workers that require client authentication.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Limit of one handshake attempt.
    pub connect_timeout: Duration,
    /// After every endpoint failed, wait about this long (with jitter) before the next round …
    pub backoff_initial: Duration,
    /// … doubling after each failed round up to this. Also the interval of failback attempts.
    pub backoff_max: Duration,
    /// For this long after an outage began, a failed round is retried after about
    /// `backoff_initial` instead of a doubling wait: a link that comes back within it (a radio
    /// blackout, a worker restart) is used again within about one connect attempt, not after a wait
    /// that grew while it was down. Longer outages back off exponentially. Zero: double at once.
    pub fast_retry_for: Duration,
    /// This many consecutive failed or timed-out requests on one connection drop it.
    pub failures_before_reconnect: u32,
}

impl LinkSettings {
    /// The range of the backoff between connection rounds.
    fn backoff_bounds(&self) -> BackoffBounds {
        BackoffBounds::new(self.backoff_initial, self.backoff_max)
    }
}

/// Why the link could not be started or reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// `endpoints` is empty.
    #[error("cloud link: no endpoint configured (at least one is needed)")]
    NoEndpoints,
    /// A setting is out of range.
    #[error("cloud link: setting `{field}` {reason}")]
    Invalid {
        /// The [`LinkSettings`] field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate file cannot be read or used (the message names the file).
    #[error("cloud link: {0}")]
    Trust(#[source] ClientError),
    /// [`CloudLink::start`] was called outside a tokio runtime.
    #[error("cloud link: must be started inside a tokio runtime")]
    NoRuntime,
    /// The link was closed.
    #[error("cloud link is closed")]
    Closed,
}

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Trying the endpoints.
    #[default]
    Connecting,
    /// A connection is up.
    Connected,
    /// Every endpoint failed; waiting before the next round.
    Backoff,
    /// [`CloudLink::close`] was called (or the last handle dropped).
    Closed,
}

/// Counters of the link's life.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkStats {
    /// Where the link stands now.
    pub state: LinkState,
    /// The endpoint of the current connection.
    pub endpoint: Option<SocketAddr>,
    /// Connections established (the first one, reconnects, failovers, failbacks, reconfigurations).
    pub connects: u64,
    /// Connections established after a connection was lost or dropped.
    pub reconnects: u64,
    /// Connections established after an endpoint tried before it in the same round failed.
    pub failovers: u64,
    /// Moves back to a more preferred endpoint while connected to a less preferred one.
    pub failbacks: u64,
    /// Connections lost (closed by the worker, idle timeout, reset) or dropped for failed requests.
    pub losses: u64,
    /// Rounds in which every endpoint failed.
    pub failed_rounds: u64,
    /// Handshake attempts that failed.
    pub failed_attempts: u64,
    /// The last connection error or loss reason, with the endpoint.
    pub last_error: Option<String>,
}

/// The connection manager. Cheap to clone (all clones share one background task); the task stops
/// when [`CloudLink::close`] is called or the last clone is dropped.
#[derive(Debug, Clone)]
pub struct CloudLink {
    core: Core<QuicConnector>,
}

impl CloudLink {
    /// Checks the settings (the CA file must load → error naming it) and starts the background task
    /// that connects to the first endpoint that answers, watches the connection, and reconnects when
    /// it drops. Must be called inside a tokio runtime.
    pub fn start(settings: LinkSettings) -> Result<CloudLink, LinkError> {
        let core = Core::start(settings, QuicConnector::default(), Jitter::new())?;
        Ok(CloudLink { core })
    }

    /// The connected client, or `None` while disconnected (frames then finish on the edge at once).
    pub fn current(&self) -> Option<Arc<CloudClient>> {
        self.core.current()
    }

    /// Changes of the connected client (`None` = disconnected), for the bandwidth monitor to follow.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CloudClient>>> {
        self.core.subscribe()
    }

    /// Waits up to `timeout` for a connection (used once at start-up).
    /// Returns `None` at once when the link is closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Option<Arc<CloudClient>> {
        self.core.wait_connected(timeout).await
    }

    /// A request on `client` failed or timed out (`ok = false`) or was answered (`ok = true`, also
    /// for a typed error reply such as `Overloaded`: the connection works). After
    /// `failures_before_reconnect` consecutive failures the connection is dropped and the link
    /// reconnects, trying the other endpoints first. Reports about a connection that is no longer
    /// the current one are ignored.
    pub fn report(&self, client: &Arc<CloudClient>, ok: bool) {
        self.core.report(client, ok);
    }

    /// New settings (SIGHUP). If the endpoints, the server name, the CA file's path or its contents
    /// changed, the link connects with the new settings — the old connection keeps serving until the
    /// new one is up (or every new endpoint failed) and is then closed cleanly — and `Ok(true)` is
    /// returned; otherwise the connection is kept and the other settings (timeouts, backoff, failure
    /// threshold) apply from now on. Errors (bad CA file, bad value) leave the old settings in force.
    pub fn reconfigure(&self, settings: LinkSettings) -> Result<bool, LinkError> {
        self.core.reconfigure(settings)
    }

    /// The settings in force.
    pub fn settings(&self) -> LinkSettings {
        self.core.settings()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        self.core.stats()
    }

    /// Closes the connection cleanly (QUIC CONNECTION_CLOSE) and stops the task. Idempotent.
    pub async fn close(&self) {
        self.core.close().await;
    }
}

/// The link over any [`Connector`]: [`CloudLink`] is this over QUIC.
#[derive(Debug)]
struct Core<K: Connector> {
    handle: Arc<Handle<K>>,
}

impl<K: Connector> Clone for Core<K> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

impl<K: Connector> Core<K> {
    fn start(settings: LinkSettings, connector: K, jitter: Jitter) -> Result<Self, LinkError> {
        let prepared = Prepared::new(&connector, settings)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LinkError::NoRuntime)?;
        let (client_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            connector,
            settings: Mutex::new(Arc::new(prepared)),
            client_tx,
            stats: Mutex::new(LinkStats::default()),
            health: Mutex::new(Health::default()),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        });
        let task = runtime.spawn(Driver::new(shared.clone(), jitter).run());
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    fn current(&self) -> Option<Arc<K::Conn>> {
        self.handle.shared.client_tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Option<Arc<K::Conn>>> {
        self.handle.shared.client_tx.subscribe()
    }

    async fn wait_connected(&self, timeout: Duration) -> Option<Arc<K::Conn>> {
        if lock(&self.handle.shared.pending).close {
            return None;
        }
        let mut rx = self.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(client)) => client.clone(),
            _ => None,
        }
    }

    fn report(&self, client: &Arc<K::Conn>, ok: bool) {
        let shared = &self.handle.shared;
        let threshold = shared.prepared().settings.failures_before_reconnect;
        let key = client_key(client);
        let mut health = lock(&shared.health);
        if health.conn != Some(key) {
            return;
        }
        if ok {
            health.failures = 0;
            return;
        }
        health.failures = health.failures.saturating_add(1);
        if health.failures == threshold {
            drop(health);
            shared.request(|p| {
                p.drop_conn = Some((key, format!("{threshold} consecutive requests failed")));
            });
        }
    }

    fn reconfigure(&self, settings: LinkSettings) -> Result<bool, LinkError> {
        let shared = &self.handle.shared;
        let prepared = Prepared::new(&shared.connector, settings)?;
        if lock(&shared.pending).close {
            return Err(LinkError::Closed);
        }
        let mut current = lock(&shared.settings);
        let reconnect = current.needs_reconnect(&prepared);
        *current = Arc::new(prepared);
        drop(current);
        if reconnect {
            shared.request(|p| p.reconfigure = true);
        }
        Ok(reconnect)
    }

    fn settings(&self) -> LinkSettings {
        self.handle.shared.prepared().settings.clone()
    }

    fn stats(&self) -> LinkStats {
        lock(&self.handle.shared.stats).clone()
    }

    async fn close(&self) {
        self.handle.shared.request(|p| p.close = true);
        let task = lock(&self.handle.task).take();
        if let Some(task) = task {
            if tokio::time::timeout(CLOSE_TIMEOUT, task).await.is_err() {
                warn!("cloud link: background task did not stop within {CLOSE_TIMEOUT:?}");
            }
        }
    }
}

/// Shared by all clones of a link; dropping the last one stops the task.
#[derive(Debug)]
struct Handle<K: Connector> {
    shared: Arc<Shared<K>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<K: Connector> Drop for Handle<K> {
    fn drop(&mut self) {
        self.shared.request(|p| p.close = true);
    }
}

/// Validated settings with what the transport built from them.
#[derive(Debug)]
struct Prepared<K: Connector> {
    settings: LinkSettings,
    trust: K::Trust,
}

impl<K: Connector> Prepared<K> {
    fn new(connector: &K, settings: LinkSettings) -> Result<Self, LinkError> {
        validate(&settings)?;
        let trust = connector.trust(&settings)?;
        Ok(Self { settings, trust })
    }

    /// Whether moving from `self` to `new` needs a new connection.
    fn needs_reconnect(&self, new: &Prepared<K>) -> bool {
        self.settings.endpoints != new.settings.endpoints
            || self.settings.server_name != new.settings.server_name
            || self.settings.ca_cert != new.settings.ca_cert
            || self.settings.identity != new.settings.identity
            || !K::same_trust(&self.trust, &new.trust)
    }
}

fn validate(s: &LinkSettings) -> Result<(), LinkError> {
    let invalid = |field: &'static str, reason: &str| LinkError::Invalid {
        field,
        reason: reason.to_owned(),
    };
    if s.endpoints.is_empty() {
        return Err(LinkError::NoEndpoints);
    }
    if s.server_name.trim().is_empty() {
        return Err(invalid("server_name", "is empty"));
    }
    if s.connect_timeout.is_zero() {
        return Err(invalid("connect_timeout", "must be > 0"));
    }
    if s.backoff_initial.is_zero() {
        return Err(invalid("backoff_initial", "must be > 0"));
    }
    if s.backoff_max < s.backoff_initial {
        return Err(LinkError::Invalid {
            field: "backoff_max",
            reason: format!(
                "({:?}) must be ≥ backoff_initial ({:?})",
                s.backoff_max, s.backoff_initial
            ),
        });
    }
    if s.failures_before_reconnect == 0 {
        return Err(invalid("failures_before_reconnect", "must be ≥ 1"));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
