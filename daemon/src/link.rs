//! The cloud link: keeps one QUIC connection to the first reachable cloud endpoint, notices when it
//! is lost (the worker closed it, the path went silent past the QUIC idle timeout, or requests on it
//! keep failing), and gets back to the cloud by itself — every endpoint in order of preference on
//! each round, exponential backoff with jitter between rounds, failback to a more preferred endpoint
//! once it answers again. See `docs/cloud-link.md` for the state machine.
//!
//! While disconnected [`CloudLink::current`] is `None`, so frames finish on the edge at once
//! instead of waiting on a dead connection.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backoff::{equal_jitter, Backoff, BackoffBounds, Jitter};
use crate::client::{client_config_with_identity, ClientError, CloudClient};

/// A connection that lived at least this long is considered to have been healthy: when it is lost
/// the link reconnects at once with the backoff reset; a shorter-lived one keeps backing off (so a
/// worker that accepts and drops at once cannot make the link spin).
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// When the link moves to another connection (failback, reconfigure), the old one is closed once no
/// request holds it any more, or after this long.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time between two failback attempts, whatever `backoff_max` is.
const MIN_FAILBACK_INTERVAL: Duration = Duration::from_secs(1);

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
    handle: Arc<Handle>,
}

impl CloudLink {
    /// Checks the settings (the CA file must load → error naming it) and starts the background task
    /// that connects to the first endpoint that answers, watches the connection, and reconnects when
    /// it drops. Must be called inside a tokio runtime.
    pub fn start(settings: LinkSettings) -> Result<CloudLink, LinkError> {
        let prepared = Prepared::new(settings)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LinkError::NoRuntime)?;
        let (client_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            settings: Mutex::new(Arc::new(prepared)),
            client_tx,
            stats: Mutex::new(LinkStats::default()),
            health: Mutex::new(Health::default()),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            sockets: Mutex::new(Sockets::default()),
        });
        let task = runtime.spawn(Driver::new(shared.clone()).run());
        Ok(CloudLink {
            handle: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The connected client, or `None` while disconnected (frames then finish on the edge at once).
    pub fn current(&self) -> Option<Arc<CloudClient>> {
        self.handle.shared.client_tx.borrow().clone()
    }

    /// Changes of the connected client (`None` = disconnected), for the bandwidth monitor to follow.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CloudClient>>> {
        self.handle.shared.client_tx.subscribe()
    }

    /// Waits up to `timeout` for a connection (used once at start-up).
    /// Returns `None` at once when the link is closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Option<Arc<CloudClient>> {
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

    /// A request on `client` failed or timed out (`ok = false`) or was answered (`ok = true`, also
    /// for a typed error reply such as `Overloaded`: the connection works). After
    /// `failures_before_reconnect` consecutive failures the connection is dropped and the link
    /// reconnects, trying the other endpoints first. Reports about a connection that is no longer
    /// the current one are ignored.
    pub fn report(&self, client: &Arc<CloudClient>, ok: bool) {
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

    /// New settings (SIGHUP). If the endpoints, the server name, the CA file's path or its contents
    /// changed, the link connects with the new settings — the old connection keeps serving until the
    /// new one is up (or every new endpoint failed) and is then closed cleanly — and `Ok(true)` is
    /// returned; otherwise the connection is kept and the other settings (timeouts, backoff, failure
    /// threshold) apply from now on. Errors (bad CA file, bad value) leave the old settings in force.
    pub fn reconfigure(&self, settings: LinkSettings) -> Result<bool, LinkError> {
        let shared = &self.handle.shared;
        let prepared = Prepared::new(settings)?;
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

    /// The settings in force.
    pub fn settings(&self) -> LinkSettings {
        self.handle.shared.prepared().settings.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        lock(&self.handle.shared.stats).clone()
    }

    /// Closes the connection cleanly (QUIC CONNECTION_CLOSE) and stops the task. Idempotent.
    pub async fn close(&self) {
        self.handle.shared.request(|p| p.close = true);
        let task = lock(&self.handle.task).take();
        if let Some(task) = task {
            if tokio::time::timeout(CLOSE_TIMEOUT, task).await.is_err() {
                warn!("cloud link: background task did not stop within {CLOSE_TIMEOUT:?}");
            }
        }
    }
}

/// Shared by all clones of a [`CloudLink`]; dropping the last one stops the task.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request(|p| p.close = true);
    }
}

/// Validated settings with the QUIC client configuration built from them.
#[derive(Debug)]
struct Prepared {
    settings: LinkSettings,
    quic: quinn::ClientConfig,
    ca_bytes: Vec<u8>,
    identity_bytes: Vec<u8>,
}

impl Prepared {
    fn new(settings: LinkSettings) -> Result<Self, LinkError> {
        validate(&settings)?;
        let ca_bytes = std::fs::read(&settings.ca_cert).map_err(|e| {
            LinkError::Trust(ClientError::Trust {
                path: settings.ca_cert.display().to_string(),
                reason: e.to_string(),
            })
        })?;
        let identity = settings
            .identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()));
        let quic =
            client_config_with_identity(&settings.ca_cert, identity).map_err(LinkError::Trust)?;
        // The identity's files, read again at each reconfigure: a renewed certificate reconnects.
        let mut identity_bytes = Vec::new();
        if let Some((cert, key)) = &settings.identity {
            for path in [cert, key] {
                identity_bytes.extend(std::fs::read(path).map_err(|e| {
                    LinkError::Trust(ClientError::Trust {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
                })?);
            }
        }
        Ok(Self {
            settings,
            quic,
            ca_bytes,
            identity_bytes,
        })
    }

    /// Whether moving from `self` to `new` needs a new connection.
    fn needs_reconnect(&self, new: &Prepared) -> bool {
        self.settings.endpoints != new.settings.endpoints
            || self.settings.server_name != new.settings.server_name
            || self.settings.ca_cert != new.settings.ca_cert
            || self.ca_bytes != new.ca_bytes
            || self.settings.identity != new.settings.identity
            || self.identity_bytes != new.identity_bytes
    }

    /// One handshake attempt with `addr` under these settings, on the link's endpoint.
    async fn connect(&self, shared: &Shared, addr: SocketAddr) -> Result<CloudClient, ClientError> {
        let endpoint = lock(&shared.sockets).for_addr(addr)?;
        CloudClient::connect_on(
            &endpoint,
            addr,
            &self.settings.server_name,
            self.quic.clone(),
            self.settings.connect_timeout,
        )
        .await
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

/// How long a closing link waits for its endpoints to send the last connection closes.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// State shared between the handles and the background task.
#[derive(Debug)]
struct Shared {
    settings: Mutex<Arc<Prepared>>,
    client_tx: watch::Sender<Option<Arc<CloudClient>>>,
    stats: Mutex<LinkStats>,
    health: Mutex<Health>,
    pending: Mutex<Pending>,
    wake: Notify,
    /// The link's QUIC endpoints (UDP sockets), one per address family, made on first use and
    /// shared by every connection attempt and connection of the link.
    sockets: Mutex<Sockets>,
}

/// One `quinn::Endpoint` per address family.
#[derive(Debug, Default)]
struct Sockets {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Sockets {
    /// The endpoint for connecting to `addr`, bound to the unspecified address of its family.
    fn for_addr(&mut self, addr: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
        let slot = if addr.is_ipv6() {
            &mut self.v6
        } else {
            &mut self.v4
        };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(crate::client::unspecified_for(addr))
            .map_err(ClientError::Socket)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// Consecutive request failures on the current connection.
#[derive(Debug, Default)]
struct Health {
    conn: Option<usize>,
    failures: u32,
}

/// Requests to the background task, taken by [`Shared::take_command`].
#[derive(Debug, Default)]
struct Pending {
    close: bool,
    reconfigure: bool,
    drop_conn: Option<(usize, String)>,
}

#[derive(Debug)]
enum Command {
    Close,
    Reconfigure,
    Drop { conn: usize, reason: String },
}

impl Shared {
    fn prepared(&self) -> Arc<Prepared> {
        lock(&self.settings).clone()
    }

    fn request(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut lock(&self.pending));
        self.wake.notify_one();
    }

    fn take_command(&self) -> Option<Command> {
        let mut p = lock(&self.pending);
        if p.close {
            // Stays set: a closed link stays closed.
            return Some(Command::Close);
        }
        if std::mem::take(&mut p.reconfigure) {
            return Some(Command::Reconfigure);
        }
        p.drop_conn
            .take()
            .map(|(conn, reason)| Command::Drop { conn, reason })
    }

    /// Waits for the next request (a stored wake-up is never lost: `Notify` keeps one permit).
    async fn next_command(&self) -> Command {
        loop {
            if let Some(cmd) = self.take_command() {
                return cmd;
            }
            self.wake.notified().await;
        }
    }

    fn publish(&self, client: Option<Arc<CloudClient>>) {
        *lock(&self.health) = Health {
            conn: client.as_ref().map(client_key),
            failures: 0,
        };
        self.client_tx.send_replace(client);
    }

    fn stats(&self, f: impl FnOnce(&mut LinkStats)) {
        f(&mut lock(&self.stats));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Identity of a client while the link holds it (an `Arc` address cannot be reused meanwhile).
fn client_key(client: &Arc<CloudClient>) -> usize {
    Arc::as_ptr(client) as usize
}

/// The connection in use.
#[derive(Debug)]
struct Up {
    client: Arc<CloudClient>,
    addr: SocketAddr,
    since: Instant,
}

/// What the task does next.
#[derive(Debug)]
enum Step {
    /// Try the endpoints after `wait` (if any). `old` is a connection that keeps serving until the
    /// round ends (reconfiguration: make before break).
    Connect {
        old: Option<Up>,
        wait: Option<Duration>,
    },
    /// Watch the connection.
    Up(Up),
    /// Stop (closing `old`).
    Close(Option<Up>),
}

/// The result of trying the endpoints once.
enum Round {
    Connected {
        client: Arc<CloudClient>,
        addr: SocketAddr,
        failed: Vec<(SocketAddr, String)>,
    },
    AllFailed(Vec<(SocketAddr, String)>),
}

/// Ongoing outage, for the once-per-transition logs.
#[derive(Debug)]
struct Outage {
    since: Instant,
    rounds: u32,
}

type FailbackFuture = Pin<Box<dyn Future<Output = Option<(Arc<CloudClient>, SocketAddr)>> + Send>>;

/// The background task's own state.
struct Driver {
    shared: Arc<Shared>,
    backoff: Backoff,
    jitter: Jitter,
    /// Endpoint to try last in the next round (it was dropped for failing requests).
    demote: Option<SocketAddr>,
    outage: Option<Outage>,
    connected_before: bool,
}

impl Driver {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            backoff: Backoff::default(),
            jitter: Jitter::new(),
            demote: None,
            outage: None,
            connected_before: false,
        }
    }

    async fn run(mut self) {
        let mut step = Step::Connect {
            old: None,
            wait: None,
        };
        loop {
            step = match step {
                Step::Connect { old, wait } => self.connect(old, wait).await,
                Step::Up(up) => self.watch(up).await,
                Step::Close(old) => {
                    self.shared.publish(None);
                    if let Some(up) = old {
                        info!("cloud link: closing connection to {}", up.addr);
                        up.client.close().await;
                    }
                    // The link's endpoints send the pending closes (briefly), then shut.
                    let sockets = std::mem::take(&mut *lock(&self.shared.sockets));
                    for endpoint in [sockets.v4, sockets.v6].into_iter().flatten() {
                        let _ = tokio::time::timeout(CLOSE_FLUSH, endpoint.wait_idle()).await;
                        endpoint.close(0u32.into(), b"bye");
                    }
                    self.shared.stats(|s| {
                        s.state = LinkState::Closed;
                        s.endpoint = None;
                    });
                    return;
                }
            };
        }
    }

    /// Optionally waits, then tries every endpoint once.
    async fn connect(&mut self, mut old: Option<Up>, wait: Option<Duration>) -> Step {
        if let Some(wait) = wait {
            self.shared.stats(|s| s.state = LinkState::Backoff);
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    biased;
                    cmd = self.shared.next_command() => match cmd {
                        Command::Close => return Step::Close(old),
                        Command::Reconfigure => {
                            self.backoff.reset();
                            break;
                        }
                        Command::Drop { .. } => {} // not about a live connection
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        self.shared.stats(|s| s.state = LinkState::Connecting);
        let shared = self.shared.clone();
        let prepared = shared.prepared();
        let order = preference_order(&prepared.settings.endpoints, self.demote.take());
        let round = try_endpoints(&shared, &prepared, &order);
        tokio::pin!(round);
        let round = loop {
            tokio::select! {
                biased;
                cmd = shared.next_command() => match cmd {
                    Command::Close => return Step::Close(old),
                    Command::Reconfigure => {
                        self.backoff.reset();
                        return Step::Connect { old, wait: None };
                    }
                    Command::Drop { conn, reason } => {
                        if old.as_ref().is_some_and(|u| client_key(&u.client) == conn) {
                            if let Some(up) = old.take() {
                                self.lose(up, &format!("dropped: {reason}"));
                            }
                        }
                    }
                },
                round = &mut round => break round,
            }
        };
        match round {
            Round::Connected {
                client,
                addr,
                failed,
            } => {
                let up = Up {
                    client,
                    addr,
                    since: Instant::now(),
                };
                self.shared.publish(Some(up.client.clone()));
                if let Some(old) = old {
                    info!(
                        "cloud link: moved from {} to {} (new settings)",
                        old.addr, addr
                    );
                    drain_and_close(old.client);
                }
                self.connected(&up, &failed);
                Step::Up(up)
            }
            Round::AllFailed(errors) => {
                if let Some(old) = old {
                    self.shared.publish(None);
                    warn!(
                        "cloud link: closing {} (no longer in the settings); new endpoints unreachable",
                        old.addr
                    );
                    drain_and_close(old.client);
                    self.shared.stats(|s| s.endpoint = None);
                }
                let outage_age = self
                    .outage
                    .as_ref()
                    .map_or(Duration::ZERO, |o| o.since.elapsed());
                let delay = if outage_age < prepared.settings.fast_retry_for {
                    equal_jitter(
                        prepared.settings.backoff_bounds().initial,
                        self.jitter.unit(),
                    )
                } else {
                    self.next_backoff(&prepared.settings)
                };
                self.shared.stats(|s| s.failed_rounds += 1);
                let outage = self.outage.get_or_insert(Outage {
                    since: Instant::now(),
                    rounds: 0,
                });
                outage.rounds += 1;
                let summary = errors
                    .iter()
                    .map(|(a, e)| format!("{a}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                if outage.rounds == 1 {
                    warn!(
                        "cloud link: all endpoints down ({summary}); frames finish on the edge; retry in {:.1} s",
                        delay.as_secs_f64()
                    );
                } else {
                    debug!(
                        "cloud link: still down after {} rounds ({summary}); retry in {:.1} s",
                        outage.rounds,
                        delay.as_secs_f64()
                    );
                }
                Step::Connect {
                    old: None,
                    wait: Some(delay),
                }
            }
        }
    }

    /// Bookkeeping and the log line of a new connection.
    fn connected(&mut self, up: &Up, failed: &[(SocketAddr, String)]) {
        let failover = !failed.is_empty();
        let reconnect = self.outage.is_some() && self.connected_before;
        if failover {
            let skipped = failed
                .iter()
                .map(|(a, e)| format!("{a}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            warn!("cloud link: failing over to {} ({skipped})", up.addr);
        }
        match self.outage.take() {
            Some(outage) if self.connected_before => info!(
                "cloud link: reconnected to {} after {:.1} s without the cloud",
                up.addr,
                outage.since.elapsed().as_secs_f64()
            ),
            _ => info!("cloud link: connected to {}", up.addr),
        }
        self.backoff.reset();
        self.connected_before = true;
        self.shared.stats(|s| {
            s.state = LinkState::Connected;
            s.endpoint = Some(up.addr);
            s.connects += 1;
            s.reconnects += u64::from(reconnect);
            s.failovers += u64::from(failover);
        });
    }

    /// Unpublishes a lost or dropped connection and closes it in the background.
    fn lose(&mut self, up: Up, reason: &str) {
        self.shared.publish(None);
        warn!(
            "cloud link: lost {}: {reason}; frames finish on the edge",
            up.addr
        );
        self.shared.stats(|s| {
            s.losses += 1;
            s.endpoint = None;
            s.last_error = Some(format!("{}: {reason}", up.addr));
        });
        self.outage.get_or_insert(Outage {
            since: Instant::now(),
            rounds: 0,
        });
        tokio::spawn(async move { up.client.close().await });
    }

    /// Watches a live connection until it is lost, dropped, replaced or the link closes.
    async fn watch(&mut self, mut up: Up) -> Step {
        let mut failback = self.failback(&up);
        loop {
            let client = up.client.clone();
            tokio::select! {
                biased;
                cmd = self.shared.next_command() => match cmd {
                    Command::Close => return Step::Close(Some(up)),
                    Command::Reconfigure => {
                        self.backoff.reset();
                        return Step::Connect { old: Some(up), wait: None };
                    }
                    Command::Drop { conn, reason } => {
                        if conn == client_key(&up.client) {
                            let addr = up.addr;
                            self.lose(up, &format!("dropped: {reason}"));
                            // Try the other endpoints first.
                            self.demote = Some(addr);
                            return Step::Connect { old: None, wait: None };
                        }
                    }
                },
                error = client.connection().closed() => {
                    if closed_for_idleness(&error) {
                        // The worker closes connections without requests after its idle
                        // timeout; nothing was lost. Connect again for the next frame.
                        info!("cloud link: {} closed the idle connection; reconnecting", up.addr);
                        self.shared.publish(None);
                        tokio::spawn(async move { up.client.close().await });
                        return Step::Connect { old: None, wait: None };
                    }
                    let lived = up.since.elapsed();
                    self.lose(up, &error.to_string());
                    let wait = if lived >= STABLE_AFTER {
                        self.backoff.reset();
                        None
                    } else {
                        let prepared = self.shared.prepared();
                        Some(self.next_backoff(&prepared.settings))
                    };
                    return Step::Connect { old: None, wait };
                }
                better = poll_optional(&mut failback) => {
                    if let Some((client, addr)) = better {
                        info!("cloud link: failing back to {addr} (preferred to {})", up.addr);
                        self.shared.publish(Some(client.clone()));
                        drain_and_close(up.client);
                        up = Up { client, addr, since: Instant::now() };
                        self.shared.stats(|s| {
                            s.endpoint = Some(addr);
                            s.connects += 1;
                            s.failbacks += 1;
                        });
                    }
                    failback = self.failback(&up);
                }
            }
        }
    }

    /// The next doubling wait between connection rounds, with equal jitter.
    fn next_backoff(&mut self, settings: &LinkSettings) -> Duration {
        equal_jitter(
            self.backoff.next_delay(settings.backoff_bounds()),
            self.jitter.unit(),
        )
    }

    /// A future that, after the failback interval, tries the endpoints preferred to `up`'s; `None`
    /// when `up` is on the most preferred endpoint.
    fn failback(&self, up: &Up) -> Option<FailbackFuture> {
        let prepared = self.shared.prepared();
        let better: Vec<SocketAddr> = prepared
            .settings
            .endpoints
            .iter()
            .take_while(|a| **a != up.addr)
            .copied()
            .collect();
        if better.is_empty() || better.len() == prepared.settings.endpoints.len() {
            return None;
        }
        let interval = prepared.settings.backoff_max.max(MIN_FAILBACK_INTERVAL);
        let shared = self.shared.clone();
        Some(Box::pin(async move {
            tokio::time::sleep(interval).await;
            for addr in better {
                match prepared.connect(&shared, addr).await {
                    Ok(client) => return Some((Arc::new(client), addr)),
                    Err(e) => debug!("cloud link: failback to {addr} not yet possible: {e}"),
                }
            }
            None
        }))
    }
}

/// Awaits the future if there is one, else never resolves.
async fn poll_optional<T>(f: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Tries `order` once, in order, each with the connect timeout.
async fn try_endpoints(shared: &Shared, prepared: &Prepared, order: &[SocketAddr]) -> Round {
    let mut failed = Vec::new();
    for &addr in order {
        match prepared.connect(shared, addr).await {
            Ok(client) => {
                return Round::Connected {
                    client: Arc::new(client),
                    addr,
                    failed,
                }
            }
            Err(e) => {
                debug!("cloud link: {addr}: {e}");
                let message = e.to_string();
                shared.stats(|st| {
                    st.failed_attempts += 1;
                    st.last_error = Some(message.clone());
                });
                failed.push((addr, message));
            }
        }
    }
    Round::AllFailed(failed)
}

/// `endpoints` in order of preference, with `demote` (if present and not alone) moved last.
fn preference_order(endpoints: &[SocketAddr], demote: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut order = endpoints.to_vec();
    if let Some(d) = demote {
        if order.iter().any(|a| *a != d) {
            order.retain(|a| *a != d);
            order.push(d);
        }
    }
    order
}

/// Closes `client` once its requests in flight have finished, or after the drain timeout, in
/// the background.
fn drain_and_close(client: Arc<CloudClient>) {
    tokio::spawn(async move {
        client.wait_idle(DRAIN_TIMEOUT).await;
        client.close().await;
    });
}

/// Whether the worker closed the connection because it carried no request for its idle timeout
/// (application close, reason `idle`: `jmdc-cloud`'s `limits.idle_timeout_s`).
fn closed_for_idleness(error: &quinn::ConnectionError) -> bool {
    matches!(error, quinn::ConnectionError::ApplicationClosed(c) if &c.reason[..] == b"idle")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LinkSettings {
        LinkSettings {
            endpoints: vec!["127.0.0.1:1".parse().expect("addr")],
            server_name: "localhost".into(),
            ca_cert: PathBuf::from("/nonexistent/ca.pem"),
            identity: None,
            connect_timeout: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
            fast_retry_for: Duration::ZERO,
            failures_before_reconnect: 3,
        }
    }

    #[test]
    fn link_backoff_doubles_with_jitter_caps_and_resets() {
        let s = settings();
        let mut b = Backoff::default();
        let mut jitter = Jitter::new();
        let bases = [100u64, 200, 400, 800, 800, 800];
        for base in bases {
            let d = equal_jitter(b.next_delay(s.backoff_bounds()), jitter.unit());
            let base = Duration::from_millis(base);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        b.reset();
        assert_eq!(b.next_delay(s.backoff_bounds()), Duration::from_millis(100));
        assert_eq!(b.next_delay(s.backoff_bounds()), Duration::from_millis(200));
    }

    #[test]
    fn demoted_endpoint_goes_last() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let c: SocketAddr = "[::1]:3".parse().expect("addr");
        assert_eq!(preference_order(&[a, b, c], Some(a)), vec![b, c, a]);
        assert_eq!(preference_order(&[a, b, c], None), vec![a, b, c]);
        assert_eq!(preference_order(&[a], Some(a)), vec![a]);
    }

    #[test]
    fn settings_are_checked_by_name() {
        let check = |f: fn(&mut LinkSettings), needle: &str| {
            let mut s = settings();
            f(&mut s);
            let e = validate(&s).expect_err("must be refused").to_string();
            assert!(e.contains(needle), "{e:?} should name {needle}");
        };
        check(|s| s.endpoints.clear(), "no endpoint");
        check(|s| s.server_name.clear(), "server_name");
        check(|s| s.connect_timeout = Duration::ZERO, "connect_timeout");
        check(|s| s.backoff_initial = Duration::ZERO, "backoff_initial");
        check(|s| s.backoff_max = Duration::from_millis(10), "backoff_max");
        check(
            |s| s.failures_before_reconnect = 0,
            "failures_before_reconnect",
        );
        assert!(validate(&settings()).is_ok());
    }

    #[test]
    fn missing_ca_file_is_named() {
        let e = Prepared::new(settings())
            .expect_err("no CA file")
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
