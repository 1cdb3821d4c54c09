//! The link's background task: a state machine over [`Step`]s — try the endpoints (in order of
//! preference, demoted endpoint last), watch the connection that came up (loss, idle close,
//! dropped for failed requests, failback to a preferred endpoint, reconfiguration), wait between
//! failed rounds (fast retries while an outage is young, then doubling with jitter). It talks to
//! the network only through a [`Connector`] and keeps time with tokio's clock, so its tests run
//! on virtual time. See `docs/cloud-link.md` for the state machine.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::transport::{Connection, Connector};
use super::{lock, LinkSettings, LinkState, LinkStats, Prepared};
use crate::backoff::{equal_jitter, Backoff, Jitter};

/// A connection that lived at least this long is considered to have been healthy: when it is lost
/// the link reconnects at once with the backoff reset; a shorter-lived one keeps backing off (so a
/// worker that accepts and drops at once cannot make the link spin).
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// When the link moves to another connection (failback, reconfigure), the old one is closed once no
/// request holds it any more, or after this long.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time between two failback attempts, whatever `backoff_max` is.
const MIN_FAILBACK_INTERVAL: Duration = Duration::from_secs(1);

/// State shared between the handles and the background task.
#[derive(Debug)]
pub(super) struct Shared<K: Connector> {
    /// Makes the connections (QUIC: owns the link's UDP sockets).
    pub(super) connector: K,
    pub(super) settings: Mutex<Arc<Prepared<K>>>,
    pub(super) client_tx: watch::Sender<Option<Arc<K::Conn>>>,
    pub(super) stats: Mutex<LinkStats>,
    pub(super) health: Mutex<Health>,
    pub(super) pending: Mutex<Pending>,
    pub(super) wake: Notify,
}

/// Consecutive request failures on the current connection.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub(super) conn: Option<usize>,
    pub(super) failures: u32,
}

/// Requests to the background task, taken by [`Shared::take_command`].
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) close: bool,
    pub(super) reconfigure: bool,
    pub(super) drop_conn: Option<(usize, String)>,
}

#[derive(Debug)]
enum Command {
    Close,
    Reconfigure,
    Drop { conn: usize, reason: String },
}

impl<K: Connector> Shared<K> {
    pub(super) fn prepared(&self) -> Arc<Prepared<K>> {
        lock(&self.settings).clone()
    }

    pub(super) fn request(&self, f: impl FnOnce(&mut Pending)) {
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

    /// Makes `client` the current connection (`None`: disconnected) and wakes the watchers.
    /// Callers update the counters first, so whoever the change wakes reads counters that
    /// already include it.
    fn publish(&self, client: Option<Arc<K::Conn>>) {
        *lock(&self.health) = Health {
            conn: client.as_ref().map(client_key),
            failures: 0,
        };
        self.client_tx.send_replace(client);
    }

    fn stats(&self, f: impl FnOnce(&mut LinkStats)) {
        f(&mut lock(&self.stats));
    }

    /// One connection attempt with `addr` under `prepared`.
    fn connect<'a>(
        &'a self,
        prepared: &'a Prepared<K>,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<K::Conn, String>> + Send + 'a {
        self.connector
            .connect(&prepared.settings, &prepared.trust, addr)
    }
}

/// Identity of a client while the link holds it (an `Arc` address cannot be reused meanwhile).
pub(super) fn client_key<C>(client: &Arc<C>) -> usize {
    Arc::as_ptr(client) as usize
}

/// The connection in use.
#[derive(Debug)]
struct Up<C> {
    client: Arc<C>,
    addr: SocketAddr,
    since: Instant,
}

/// What the task does next.
#[derive(Debug)]
enum Step<C> {
    /// Try the endpoints after `wait` (if any). `old` is a connection that keeps serving until the
    /// round ends (reconfiguration: make before break).
    Connect {
        old: Option<Up<C>>,
        wait: Option<Duration>,
    },
    /// Watch the connection.
    Up(Up<C>),
    /// Stop (closing `old`).
    Close(Option<Up<C>>),
}

/// The result of trying the endpoints once.
enum Round<C> {
    Connected {
        client: Arc<C>,
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

type FailbackFuture<C> = Pin<Box<dyn Future<Output = Option<(Arc<C>, SocketAddr)>> + Send>>;

/// The background task's own state.
pub(super) struct Driver<K: Connector> {
    shared: Arc<Shared<K>>,
    backoff: Backoff,
    jitter: Jitter,
    /// Endpoint to try last in the next round (it was dropped for failing requests).
    demote: Option<SocketAddr>,
    outage: Option<Outage>,
    connected_before: bool,
}

impl<K: Connector> Driver<K> {
    pub(super) fn new(shared: Arc<Shared<K>>, jitter: Jitter) -> Self {
        Self {
            shared,
            backoff: Backoff::default(),
            jitter,
            demote: None,
            outage: None,
            connected_before: false,
        }
    }

    pub(super) async fn run(mut self) {
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
                    self.shared.connector.shutdown().await;
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
    async fn connect(
        &mut self,
        mut old: Option<Up<K::Conn>>,
        wait: Option<Duration>,
    ) -> Step<K::Conn> {
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
                self.connected(&up, &failed);
                self.shared.publish(Some(up.client.clone()));
                if let Some(old) = old {
                    info!(
                        "cloud link: moved from {} to {} (new settings)",
                        old.addr, addr
                    );
                    drain_and_close(old.client);
                }
                Step::Up(up)
            }
            Round::AllFailed(errors) => {
                if let Some(old) = old {
                    self.shared.stats(|s| s.endpoint = None);
                    self.shared.publish(None);
                    warn!(
                        "cloud link: closing {} (no longer in the settings); new endpoints unreachable",
                        old.addr
                    );
                    drain_and_close(old.client);
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
    fn connected(&mut self, up: &Up<K::Conn>, failed: &[(SocketAddr, String)]) {
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
    fn lose(&mut self, up: Up<K::Conn>, reason: &str) {
        self.shared.stats(|s| {
            s.losses += 1;
            s.endpoint = None;
            s.last_error = Some(format!("{}: {reason}", up.addr));
        });
        self.shared.publish(None);
        warn!(
            "cloud link: lost {}: {reason}; frames finish on the edge",
            up.addr
        );
        self.outage.get_or_insert(Outage {
            since: Instant::now(),
            rounds: 0,
        });
        tokio::spawn(async move { up.client.close().await });
    }

    /// Watches a live connection until it is lost, dropped, replaced or the link closes.
    async fn watch(&mut self, mut up: Up<K::Conn>) -> Step<K::Conn> {
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
                closed = client.closed() => {
                    if closed.idle {
                        // The worker closes connections without requests after its idle
                        // timeout; nothing was lost. Connect again for the next frame.
                        info!("cloud link: {} closed the idle connection; reconnecting", up.addr);
                        self.shared.publish(None);
                        tokio::spawn(async move { up.client.close().await });
                        return Step::Connect { old: None, wait: None };
                    }
                    let lived = up.since.elapsed();
                    self.lose(up, &closed.reason);
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
                        self.shared.stats(|s| {
                            s.endpoint = Some(addr);
                            s.connects += 1;
                            s.failbacks += 1;
                        });
                        self.shared.publish(Some(client.clone()));
                        drain_and_close(up.client);
                        up = Up { client, addr, since: Instant::now() };
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
    fn failback(&self, up: &Up<K::Conn>) -> Option<FailbackFuture<K::Conn>> {
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
                match shared.connect(&prepared, addr).await {
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
async fn try_endpoints<K: Connector>(
    shared: &Shared<K>,
    prepared: &Prepared<K>,
    order: &[SocketAddr],
) -> Round<K::Conn> {
    let mut failed = Vec::new();
    for &addr in order {
        match shared.connect(prepared, addr).await {
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
pub(super) fn preference_order(
    endpoints: &[SocketAddr],
    demote: Option<SocketAddr>,
) -> Vec<SocketAddr> {
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
fn drain_and_close<C: Connection>(client: Arc<C>) {
    tokio::spawn(async move {
        client.wait_idle(DRAIN_TIMEOUT).await;
        client.close().await;
    });
}
