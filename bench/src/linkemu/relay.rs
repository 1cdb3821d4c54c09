//! The relay: a listening UDP socket, one upstream socket per client address, two shaped
//! directions, live control and shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tracing::{debug, warn};

use super::params::{Direction, LinkParams, ParamsError};
use super::shaper::{cancelled, Dest, Shaper};
use super::stats::LinkStats;
use super::trace::{self, Trace, TraceReport};

/// Largest UDP payload the relay reads.
const MAX_DATAGRAM: usize = 65_535;

/// How the relay is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address to listen on (port 0 picks a free port; see [`Relay::local_addr`]).
    pub listen: SocketAddr,
    /// The server every datagram is forwarded to.
    pub upstream: SocketAddr,
    /// Client → upstream conditions.
    pub uplink: LinkParams,
    /// Upstream → client conditions.
    pub downlink: LinkParams,
    /// Seed of the loss generators (the downlink uses a seed derived from it).
    pub seed: u64,
    /// A client address silent in both directions for this long loses its upstream socket.
    pub session_idle_timeout: Duration,
    /// Most client addresses mapped at once; datagrams from further clients are dropped.
    pub max_sessions: usize,
    /// A schedule of changes played from the moment the relay is bound.
    pub trace: Option<Trace>,
}

impl RelayConfig {
    /// Unlimited links both ways, seed 1, 120 s idle timeout, 1024 sessions, no trace.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            listen,
            upstream,
            uplink: LinkParams::unlimited(),
            downlink: LinkParams::unlimited(),
            seed: 1,
            session_idle_timeout: Duration::from_secs(120),
            max_sessions: 1024,
            trace: None,
        }
    }

    /// The same conditions both ways.
    #[must_use]
    pub fn with_both(mut self, params: LinkParams) -> Self {
        self.uplink = params;
        self.downlink = params;
        self
    }

    /// Client → upstream conditions.
    #[must_use]
    pub fn with_uplink(mut self, params: LinkParams) -> Self {
        self.uplink = params;
        self
    }

    /// Upstream → client conditions.
    #[must_use]
    pub fn with_downlink(mut self, params: LinkParams) -> Self {
        self.downlink = params;
        self
    }

    /// Seed of the loss generators.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// A trace played from the moment the relay is bound.
    #[must_use]
    pub fn with_trace(mut self, trace: Trace) -> Self {
        self.trace = Some(trace);
        self
    }
}

/// Failures while starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The uplink or downlink parameters failed [`LinkParams::validate`].
    #[error("invalid {direction:?} parameters: {source}")]
    Params {
        /// The direction whose parameters were rejected.
        direction: Direction,
        /// Why they were rejected.
        source: ParamsError,
    },
    /// The listening socket could not be bound or its address read.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The configured listening address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// `max_sessions` is 0.
    #[error("max_sessions must be ≥ 1")]
    NoSessions,
}

#[derive(Debug)]
struct Inner {
    uplink: Arc<Shaper>,
    downlink: Arc<Shaper>,
    sessions_active: AtomicU64,
    sessions_total: AtomicU64,
    sessions_refused: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// A cheap, cloneable controller of a running relay: live parameter changes, counters, traces,
/// shutdown.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    inner: Arc<Inner>,
}

impl LinkHandle {
    /// Current client → upstream parameters.
    pub fn uplink(&self) -> LinkParams {
        self.inner.uplink.params()
    }

    /// Current upstream → client parameters.
    pub fn downlink(&self) -> LinkParams {
        self.inner.downlink.params()
    }

    /// Changes the client → upstream parameters. Datagrams already serialised keep their timing;
    /// the next one to start serialisation uses the new rate and delay.
    pub fn set_uplink(&self, params: LinkParams) -> Result<(), ParamsError> {
        self.set(Direction::Uplink, params)
    }

    /// Changes the upstream → client parameters.
    pub fn set_downlink(&self, params: LinkParams) -> Result<(), ParamsError> {
        self.set(Direction::Downlink, params)
    }

    /// Changes both directions.
    pub fn set_both(&self, params: LinkParams) -> Result<(), ParamsError> {
        self.set(Direction::Both, params)
    }

    /// Changes the selected direction(s).
    pub fn set(&self, direction: Direction, params: LinkParams) -> Result<(), ParamsError> {
        params.validate()?;
        if direction.has_uplink() {
            self.inner.uplink.set_params(params);
        }
        if direction.has_downlink() {
            self.inner.downlink.set_params(params);
        }
        debug!(?direction, %params, "link parameters changed");
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            uplink: self.inner.uplink.stats(),
            downlink: self.inner.downlink.stats(),
            sessions_active: self.inner.sessions_active.load(Ordering::Relaxed),
            sessions_total: self.inner.sessions_total.load(Ordering::Relaxed),
            sessions_refused: self.inner.sessions_refused.load(Ordering::Relaxed),
        }
    }

    /// Plays `trace` from now on, in a background task that ends with the trace (or when the relay
    /// shuts down, with `cancelled` set). Must be called inside a tokio runtime.
    pub fn play_trace(&self, trace: Trace) -> JoinHandle<TraceReport> {
        self.play_trace_from(trace, Instant::now())
    }

    fn play_trace_from(&self, trace: Trace, start: Instant) -> JoinHandle<TraceReport> {
        tokio::spawn(trace::play(
            trace,
            self.clone(),
            start,
            self.inner.shutdown.subscribe(),
        ))
    }

    /// Asks every task of the relay to stop (see [`Relay::shutdown`] to also wait for them).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether shutdown was requested.
    pub fn is_shut_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }
}

/// A running relay. Dropping it stops every task; [`Relay::shutdown`] also waits for them.
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    handle: LinkHandle,
    tasks: JoinSet<()>,
    trace: Option<JoinHandle<TraceReport>>,
}

impl Relay {
    /// Binds the listening socket and starts forwarding (inside a tokio runtime).
    pub async fn bind(config: RelayConfig) -> Result<Self, RelayError> {
        for (direction, params) in [
            (Direction::Uplink, config.uplink),
            (Direction::Downlink, config.downlink),
        ] {
            params
                .validate()
                .map_err(|source| RelayError::Params { direction, source })?;
        }
        if config.max_sessions == 0 {
            return Err(RelayError::NoSessions);
        }
        let listen = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| RelayError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listen.local_addr().map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let start = Instant::now();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            uplink: Arc::new(Shaper::new(config.uplink, config.seed)),
            downlink: Arc::new(Shaper::new(
                config.downlink,
                config.seed ^ 0x9E37_79B9_7F4A_7C15,
            )),
            sessions_active: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            sessions_refused: AtomicU64::new(0),
            shutdown: shutdown_tx,
        });
        let handle = LinkHandle { inner };
        let mut tasks = JoinSet::new();
        handle.inner.uplink.spawn(&mut tasks, &shutdown_rx);
        handle.inner.downlink.spawn(&mut tasks, &shutdown_rx);
        let listener = Listener {
            socket: Arc::new(listen),
            upstream: config.upstream,
            inner: handle.inner.clone(),
            idle_timeout: config.session_idle_timeout,
            max_sessions: config.max_sessions,
            start,
        };
        tasks.spawn(listener.run(shutdown_rx));
        let trace = config
            .trace
            .map(|trace| handle.play_trace_from(trace, start));
        debug!(%local_addr, upstream = %config.upstream, "relay started");
        Ok(Self {
            local_addr,
            handle,
            tasks,
            trace,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A controller for live changes, counters and shutdown.
    pub fn handle(&self) -> LinkHandle {
        self.handle.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LinkStats {
        self.handle.stats()
    }

    /// Waits for the trace given in [`RelayConfig::trace`] to finish (immediately `None` without
    /// one, or when it was already taken).
    pub async fn trace_finished(&mut self) -> Option<TraceReport> {
        let task = self.trace.take()?;
        task.await.ok()
    }

    /// Waits until shutdown is requested through a [`LinkHandle`].
    pub async fn stopped(&self) {
        let mut rx = self.handle.inner.shutdown.subscribe();
        cancelled(&mut rx).await;
    }

    /// Stops forwarding (datagrams still queued or delayed are discarded), waits up to two seconds
    /// for the tasks to end, aborts any left, and returns the final counters.
    pub async fn shutdown(mut self) -> LinkStats {
        self.handle.shutdown();
        let mut tasks = std::mem::take(&mut self.tasks);
        let joined = tokio::time::timeout(Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            warn!("relay tasks did not stop within 2 s; aborting them");
            tasks.shutdown().await;
        }
        if let Some(trace) = self.trace.take() {
            trace.abort();
        }
        self.handle.stats()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The JoinSet aborts the tasks when dropped; the signal also ends traces started by handles.
        self.handle.shutdown();
        if let Some(trace) = &self.trace {
            trace.abort();
        }
    }
}

#[derive(Debug)]
struct Session {
    socket: Arc<UdpSocket>,
    last_active_ms: Arc<AtomicU64>,
    task: AbortHandle,
}

struct Listener {
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    inner: Arc<Inner>,
    idle_timeout: Duration,
    max_sessions: usize,
    start: Instant,
}

impl Listener {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The local address an upstream socket binds to: the loopback address when the upstream is on
    /// loopback (so nothing listens beyond it), else the unspecified address of its family.
    fn upstream_bind_addr(&self) -> SocketAddr {
        let ip = self.upstream.ip();
        let local = if ip.is_loopback() {
            ip
        } else if ip.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        SocketAddr::new(local, 0)
    }

    async fn open_session(
        &self,
        client: SocketAddr,
        sessions: &mut JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) -> std::io::Result<Session> {
        let socket = UdpSocket::bind(self.upstream_bind_addr()).await?;
        socket.connect(self.upstream).await?;
        let socket = Arc::new(socket);
        let last_active_ms = Arc::new(AtomicU64::new(self.now_ms()));
        let task = sessions.spawn(session_downlink(
            socket.clone(),
            self.socket.clone(),
            client,
            self.inner.downlink.clone(),
            last_active_ms.clone(),
            self.start,
            shutdown.clone(),
        ));
        self.inner.sessions_total.fetch_add(1, Ordering::Relaxed);
        debug!(%client, upstream_local = ?socket.local_addr().ok(), "new session");
        Ok(Session {
            socket,
            last_active_ms,
            task,
        })
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
        let mut session_tasks = JoinSet::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let sweep_every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle_ms = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::select! {
                () = cancelled(&mut shutdown) => break,
                _ = sweep.tick() => {
                    let now = self.now_ms();
                    sessions.retain(|client, s| {
                        let idle = now.saturating_sub(s.last_active_ms.load(Ordering::Relaxed));
                        let keep = idle < idle_ms;
                        if !keep {
                            debug!(%client, "session idle, closed");
                            s.task.abort();
                        }
                        keep
                    });
                    while session_tasks.try_join_next().is_some() {}
                    self.inner.sessions_active.store(sessions.len() as u64, Ordering::Relaxed);
                }
                received = self.socket.recv_from(&mut buf) => {
                    let (len, client) = match received {
                        Ok(r) => r,
                        Err(e) => {
                            debug!(error = %e, "receive on the listening socket failed");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    };
                    if !sessions.contains_key(&client) {
                        if sessions.len() >= self.max_sessions {
                            self.inner.sessions_refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        match self.open_session(client, &mut session_tasks, &shutdown).await {
                            Ok(s) => {
                                sessions.insert(client, s);
                                self.inner.sessions_active.store(sessions.len() as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                warn!(%client, error = %e, "cannot open an upstream socket");
                                continue;
                            }
                        }
                    }
                    let Some(session) = sessions.get(&client) else { continue };
                    session.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
                    self.inner
                        .uplink
                        .enqueue(buf[..len].to_vec(), Dest::Upstream(session.socket.clone()));
                }
            }
        }
        session_tasks.shutdown().await;
        self.inner.sessions_active.store(0, Ordering::Relaxed);
    }
}

/// Reads the replies of the upstream server for one client and feeds them to the downlink.
async fn session_downlink(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    downlink: Arc<Shaper>,
    last_active_ms: Arc<AtomicU64>,
    start: Instant,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            () = cancelled(&mut shutdown) => return,
            received = upstream.recv(&mut buf) => match received {
                Ok(len) => {
                    let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    last_active_ms.store(now, Ordering::Relaxed);
                    downlink.enqueue(buf[..len].to_vec(), Dest::Client(listen.clone(), client));
                }
                Err(e) => {
                    // ECONNREFUSED after an ICMP unreachable (nobody upstream yet): keep going.
                    debug!(%client, error = %e, "receive from upstream failed");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}
