//! The QUIC endpoint: accepts connections, reads one request per bidirectional stream, answers it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::protocol::{self, ClientMessage, ErrorKind, ErrorReply, Response};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::{ClientAuth, CloudConfig};
use crate::contexts::{BoundContext, ContextTable};
use crate::engine::TailEngine;
use crate::guard::{ByteBudget, ConnectionLimiter, ConnectionSlot, HeldBytes, LogLimiter};
use crate::health::{HealthView, Heartbeat, HEARTBEAT_PERIOD};
use crate::identity::{self, RevocationList};
pub use crate::stats::ServerStats;
use crate::tls;

/// How long [`CloudServer::serve`] lets requests in flight finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a finished response stream may wait for the peer's acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// Bad requests and refused connections write at most this many log lines per
/// [`LOG_WINDOW`]; the rest are counted (`jmdc_cloud_log_lines_suppressed_total`).
const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// What one remote address may hold of a request-byte budget of `budget` bytes: a quarter, but
/// at least one largest request.
fn address_share(budget: usize) -> usize {
    (budget / 4).max(protocol::MAX_REQUEST_BYTES).min(budget)
}

/// The application close of a connection over `limits.max_connections_per_device`: code 1 (code 0
/// is an ordinary close: `idle`, `shutdown`) and this reason.
pub const DEVICE_LIMIT_CODE: u32 = 1;
/// See [`DEVICE_LIMIT_CODE`].
pub const DEVICE_LIMIT_REASON: &[u8] = b"too many connections with this device identity";

/// Requests are read in chunks of at most this many bytes, each taken from the byte budget.
const READ_CHUNK: usize = 64 * 1024;

/// A bound, not yet serving, cloud worker.
#[derive(Debug)]
pub struct CloudServer {
    endpoint: quinn::Endpoint,
    engine: Arc<TailEngine>,
    admission: Arc<Semaphore>,
    connections: Arc<ConnectionLimiter>,
    budget: Arc<ByteBudget>,
    log_limiter: Arc<LogLimiter>,
    read_timeout: Duration,
    idle_timeout: Duration,
    revocations: Arc<RevocationList>,
    stats: Arc<ServerStats>,
    heartbeat: Arc<Heartbeat>,
    draining: Arc<AtomicBool>,
}

/// Failures while starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS identity or client-authentication setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The QUIC socket cannot be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl CloudServer {
    /// Binds the QUIC endpoint described by `cfg`.
    pub fn bind(cfg: &CloudConfig, engine: Arc<TailEngine>) -> Result<Self, ServerError> {
        let revocations = RevocationList::load(cfg.tls.revoked.as_deref())?;
        let clients = match (cfg.tls.client_auth, &cfg.tls.client_ca) {
            (ClientAuth::Required, Some(ca)) => {
                Some(identity::client_verifier(ca, revocations.clone())?)
            }
            _ => {
                warn!(
                    "tls.client_auth = \"off\": any client that reaches {} may use this worker",
                    cfg.listen
                );
                None
            }
        };
        let crypto = tls::server_crypto(&cfg.tls.cert, &cfg.tls.key, clients)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(cfg.limits.max_streams_per_connection.into())
            .max_concurrent_uni_streams(0u32.into())
            // No keep-alives of our own: they kept idle (and stalled) connections open past
            // `idle_timeout_s`. Connections without requests are closed by `handle_connection`.
            .keep_alive_interval(None);
        if let Ok(idle) = Duration::from_secs(cfg.limits.idle_timeout_s).try_into() {
            transport.max_idle_timeout(Some(idle));
        }
        server_config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server_config, cfg.listen).map_err(|source| {
            ServerError::Bind {
                addr: cfg.listen,
                source,
            }
        })?;
        let budget_bytes = cfg.limits.max_buffered_mib.saturating_mul(1 << 20);
        let budget = ByteBudget::new(budget_bytes);
        let stats = Arc::new(ServerStats::default());
        let _ = stats.budget.set(budget.clone());
        Ok(Self {
            endpoint,
            engine,
            admission: Arc::new(Semaphore::new(cfg.limits.max_inflight)),
            connections: ConnectionLimiter::new(
                cfg.limits.max_connections,
                cfg.limits.max_connections_per_address,
                cfg.limits.max_connections_per_device,
                address_share(budget_bytes),
            ),
            budget,
            log_limiter: Arc::new(LogLimiter::new(LOG_WINDOW, LOG_BURST)),
            read_timeout: Duration::from_millis(cfg.limits.request_read_timeout_ms),
            idle_timeout: Duration::from_secs(cfg.limits.idle_timeout_s),
            revocations,
            stats,
            heartbeat: Arc::new(Heartbeat::default()),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The deny list of device certificates (re-read it on SIGHUP with
    /// [`RevocationList::reload`]; new handshakes see the new list at once).
    pub fn revocations(&self) -> Arc<RevocationList> {
        self.revocations.clone()
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The accept loop's heartbeat (beats every [`HEARTBEAT_PERIOD`] while serving).
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        self.heartbeat.clone()
    }

    /// What `/healthz`, `/readyz` and `/metrics` read: heartbeat, draining flag and counters.
    /// Stays valid after [`CloudServer::serve`] consumed the server.
    pub fn health_view(&self) -> HealthView {
        HealthView::new(
            self.heartbeat.clone(),
            self.draining.clone(),
            self.stats.clone(),
        )
        .with_engine(self.engine.clone())
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully with [`DRAIN_TIMEOUT`]
    /// (see [`CloudServer::serve_with_drain`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        self.serve_with_drain(shutdown, DRAIN_TIMEOUT).await;
    }

    /// Serves until `shutdown` resolves. Then: new connections are refused, new frames on open
    /// connections are answered `Overloaded` (the edge finishes them itself), frames already
    /// admitted run to completion and are answered, for at most `drain`; then every connection is
    /// closed (application code 0, reason `shutdown`) and the endpoint waits briefly to be idle.
    pub async fn serve_with_drain(self, shutdown: impl Future<Output = ()>, drain: Duration) {
        tokio::pin!(shutdown);
        let mut beat = tokio::time::interval(HEARTBEAT_PERIOD);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let peer = incoming.remote_address();
                    let slot = match self.connections.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            self.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                            if let Some(suppressed) = self.log_limiter.allow(Instant::now()) {
                                warn!(%peer, reason = ?why, suppressed, "connection refused: limit reached");
                            } else {
                                self.stats.log_lines_suppressed.fetch_add(1, Ordering::Relaxed);
                            }
                            incoming.refuse();
                            continue;
                        }
                    };
                    let ctx = StreamContext {
                        engine: self.engine.clone(),
                        admission: self.admission.clone(),
                        stats: self.stats.clone(),
                        draining: self.draining.clone(),
                        budget: self.budget.clone(),
                        address_budget: slot.address_budget.clone(),
                        log_limiter: self.log_limiter.clone(),
                        read_timeout: self.read_timeout,
                    };
                    let idle = self.idle_timeout;
                    tokio::spawn(async move {
                        if let Err(e) = handle_connection(incoming, ctx, slot, idle).await {
                            debug!(error = %e, "connection ended");
                        }
                    });
                }
                _ = beat.tick() => self.heartbeat.beat(),
                () = &mut shutdown => break,
            }
        }
        self.draining.store(true, Ordering::SeqCst);
        self.endpoint.set_server_config(None);
        let in_flight = self.stats.in_flight.load(Ordering::SeqCst);
        info!(
            in_flight,
            drain_s = drain.as_secs_f64(),
            "shutting down: refusing new frames, finishing those in flight"
        );
        let deadline = tokio::time::Instant::now() + drain;
        while self.stats.in_flight.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.stats.in_flight.load(Ordering::SeqCst);
        if left > 0 {
            warn!(left, "drain time over: closing with requests unanswered");
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!(
            frames_ok = self.stats.frames_ok.load(Ordering::Relaxed),
            "connections closed"
        );
    }
}

/// Counts one request in flight while alive.
struct InFlight(Arc<ServerStats>);

impl InFlight {
    fn start(stats: &Arc<ServerStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts one open stream of a connection while alive.
struct StreamOpen(Arc<std::sync::atomic::AtomicUsize>);

impl StreamOpen {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts one open connection while alive.
struct OpenConnection(Arc<ServerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct StreamContext {
    engine: Arc<TailEngine>,
    admission: Arc<Semaphore>,
    stats: Arc<ServerStats>,
    draining: Arc<AtomicBool>,
    budget: Arc<ByteBudget>,
    address_budget: Arc<ByteBudget>,
    log_limiter: Arc<LogLimiter>,
    read_timeout: Duration,
}

/// Serves one connection's streams. A connection whose device identity has
/// `max_connections_per_device` connections open already is closed after its handshake
/// ([`DEVICE_LIMIT_CODE`], [`DEVICE_LIMIT_REASON`]). A connection with no stream open and none
/// started for `idle` is closed (application code 0, reason `idle`), whatever keep-alives the
/// peer sends.
async fn handle_connection(
    incoming: quinn::Incoming,
    ctx: StreamContext,
    mut slot: ConnectionSlot,
    idle: Duration,
) -> Result<(), quinn::ConnectionError> {
    let peer = incoming.remote_address();
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // No certificate, another CA's, expired or revoked: the handshake fails here.
            ctx.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = ctx.log_limiter.allow(Instant::now()) {
                warn!(%peer, error = %e, suppressed, "handshake failed");
            } else {
                ctx.stats
                    .log_lines_suppressed
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
    };
    // The device's proven identity (certificate), not what its requests claim; none without
    // client authentication (then only the address and total caps apply).
    let proven = identity::device_name(&connection);
    if let Some(name) = &proven {
        if let Err(why) = slot.admit_device(name) {
            ctx.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            ctx.stats
                .connections_refused_per_device
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = ctx.log_limiter.allow(Instant::now()) {
                warn!(%peer, device = %name, reason = ?why, suppressed, "connection refused: limit reached");
            } else {
                ctx.stats
                    .log_lines_suppressed
                    .fetch_add(1, Ordering::Relaxed);
            }
            connection.close(DEVICE_LIMIT_CODE.into(), DEVICE_LIMIT_REASON);
            return Ok(());
        }
    }
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    ctx.stats.open_connections.fetch_add(1, Ordering::Relaxed);
    let _open = OpenConnection(ctx.stats.clone());
    // What this connection's frames stand for (protocol version 2), dropped with the connection.
    let contexts = Arc::new(ContextTable::default());
    let proven: Option<Arc<str>> = proven.map(Arc::from);
    let device: Arc<str> = proven.clone().unwrap_or_else(|| Arc::from("-"));
    info!(%peer, %device, "connection open");
    let streams_open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut last_stream = tokio::time::Instant::now();
    loop {
        let accepted = tokio::select! {
            accepted = connection.accept_bi() => accepted,
            () = tokio::time::sleep_until(last_stream + idle) => {
                if streams_open.load(Ordering::SeqCst) == 0 {
                    ctx.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    info!(%peer, %device, idle_s = idle.as_secs_f64(), "connection idle: closing");
                    connection.close(0u32.into(), b"idle");
                    return Ok(());
                }
                last_stream = tokio::time::Instant::now();
                continue;
            }
        };
        match accepted {
            Ok((send, recv)) => {
                last_stream = tokio::time::Instant::now();
                let ctx = ctx.clone();
                // A stream opened after shutdown began is still answered (Overloaded, so the edge
                // finishes the frame at once) but the drain does not wait for it: under steady
                // traffic new streams kept the count above zero and every drain ran to its limit
                // (`make soak`: 64 devices, 7 "in flight" for the whole 5 s).
                let in_flight =
                    (!ctx.draining.load(Ordering::SeqCst)).then(|| InFlight::start(&ctx.stats));
                let open = StreamOpen::start(&streams_open);
                let stream_device = device.clone();
                let link = ConnectionState {
                    contexts: contexts.clone(),
                    proven: proven.clone(),
                };
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    let _open = open;
                    if let Err(e) = handle_stream(send, recv, ctx, link).await {
                        debug!(%peer, device = %stream_device, error = %e, "stream failed");
                    }
                });
            }
            Err(quinn::ConnectionError::ApplicationClosed(_))
            | Err(quinn::ConnectionError::LocallyClosed) => {
                info!(%peer, %device, "connection closed");
                return Ok(());
            }
            Err(e) => {
                info!(%peer, %device, reason = %e, "connection lost");
                return Err(e);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("reading request: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing response: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("finishing stream: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("encoding response: {0}")]
    Encode(#[from] protocol::ProtocolError),
}

/// Why a request could not be read whole.
enum ReadFailure {
    /// Longer than [`protocol::MAX_REQUEST_BYTES`].
    TooLong,
    /// The byte budget could not cover it.
    OverBudget,
    /// Not all there within the read timeout.
    TimedOut,
    Read(quinn::ReadError),
}

/// Reads a whole request, taking its bytes from the budget as they arrive (held until the
/// returned permit is dropped), within `ctx.read_timeout`.
async fn read_request(
    recv: &mut quinn::RecvStream,
    ctx: &StreamContext,
) -> Result<(Vec<u8>, HeldBytes), ReadFailure> {
    let mut held = HeldBytes::default();
    let mut bytes = Vec::new();
    let read = async {
        while let Some(chunk) = recv
            .read_chunk(READ_CHUNK, true)
            .await
            .map_err(ReadFailure::Read)?
        {
            if bytes.len() + chunk.bytes.len() > protocol::MAX_REQUEST_BYTES {
                return Err(ReadFailure::TooLong);
            }
            if !held.take(chunk.bytes.len(), &ctx.address_budget, &ctx.budget) {
                return Err(ReadFailure::OverBudget);
            }
            bytes.extend_from_slice(&chunk.bytes);
        }
        Ok(())
    };
    match tokio::time::timeout(ctx.read_timeout, read).await {
        Ok(Ok(())) => Ok((bytes, held)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ReadFailure::TimedOut),
    }
}

/// Logs a bad request unless too many were logged lately (then it is only counted).
fn warn_limited(ctx: &StreamContext, what: &str, detail: &str) {
    if let Some(suppressed) = ctx.log_limiter.allow(Instant::now()) {
        warn!(detail, suppressed, "{what}");
    } else {
        ctx.stats
            .log_lines_suppressed
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// What a stream needs of its connection.
struct ConnectionState {
    /// The contexts bound on the connection.
    contexts: Arc<ContextTable>,
    /// The device name the certificate proved, if any.
    proven: Option<Arc<str>>,
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: StreamContext,
    link: ConnectionState,
) -> Result<(), StreamError> {
    let (bytes, _held) = match read_request(&mut recv, &ctx).await {
        Ok(read) => read,
        Err(ReadFailure::TooLong) => {
            let reply = error_reply(
                None,
                ErrorKind::Malformed,
                format!("request exceeds {} bytes", protocol::MAX_REQUEST_BYTES),
            );
            ctx.stats.record_error(ErrorKind::Malformed);
            warn_limited(&ctx, "request too long", "");
            let _ = recv.stop(0u32.into());
            return respond(&mut send, &reply).await;
        }
        Err(ReadFailure::OverBudget) => {
            let reply = error_reply(
                None,
                ErrorKind::Overloaded,
                "too many request bytes buffered".into(),
            );
            ctx.stats.record_error(ErrorKind::Overloaded);
            ctx.stats.over_budget.fetch_add(1, Ordering::Relaxed);
            let _ = recv.stop(0u32.into());
            return respond(&mut send, &reply).await;
        }
        Err(ReadFailure::TimedOut) => {
            ctx.stats.read_timeouts.fetch_add(1, Ordering::Relaxed);
            warn_limited(&ctx, "request not received within the read timeout", "");
            let _ = recv.stop(0u32.into());
            let _ = send.reset(0u32.into());
            return Ok(());
        }
        Err(ReadFailure::Read(e)) => return Err(e.into()),
    };
    // The worker's time starts when the whole request is here: the upload before it is network
    // time (the edge derives bandwidth from round trip − server time), not queueing.
    let arrived = Instant::now();
    let reply_bytes = match protocol::decode_client_message(&bytes) {
        Err(e) => {
            warn_limited(&ctx, "malformed request", &e.to_string());
            let reply = ErrorReply::for_decode_error(&bytes, &e);
            ctx.stats.record_error(reply.kind);
            protocol::encode_response(&Response::Error(reply))?
        }
        Ok(ClientMessage::Probe(probe)) => {
            ctx.stats.probes.fetch_add(1, Ordering::Relaxed);
            protocol::encode_probe_reply(&protocol::ProbeReply::answer(&probe))?
        }
        Ok(ClientMessage::Infer(request)) => {
            let response = infer(request, &ctx, arrived).await;
            let encoded = protocol::encode_response(&response)?;
            ctx.stats.latency.observe(arrived.elapsed());
            encoded
        }
        Ok(ClientMessage::Bind(bind)) => bind_context(&bind, &ctx, &link)?,
        Ok(ClientMessage::Frame(frame)) => {
            let frame_id = frame.frame_id;
            let response = match link.contexts.get(frame.context_id) {
                None => {
                    ctx.stats.record_error(ErrorKind::UnknownContext);
                    error_reply(
                        Some(frame_id),
                        ErrorKind::UnknownContext,
                        format!(
                            "context {} is not bound on this connection",
                            frame.context_id
                        ),
                    )
                }
                Some(bound) => match bound.request(frame) {
                    Ok(request) => infer(request, &ctx, arrived).await,
                    Err(reply) => {
                        ctx.stats.record_error(reply.kind);
                        Response::Error(reply)
                    }
                },
            };
            let encoded = protocol::encode_response(&response)?;
            ctx.stats.latency.observe(arrived.elapsed());
            encoded
        }
    };
    send.write_all(&reply_bytes).await?;
    send.finish()?;
    // Stay in flight until the peer has the whole answer, so a shutdown does not cut it.
    let _ = tokio::time::timeout(ACK_WAIT, send.stopped()).await;
    Ok(())
}

/// Checks a binding against the packages, records it on the connection and encodes the answer:
/// the shape frames on it carry, or why not.
fn bind_context(
    bind: &protocol::BindContext,
    ctx: &StreamContext,
    link: &ConnectionState,
) -> Result<Vec<u8>, StreamError> {
    let bound = ctx.engine.bind(bind).and_then(|(shape, tensor)| {
        let internal = |why: String| {
            ErrorReply::new(None, ErrorKind::Internal, format!("shape {shape:?}: {why}"))
        };
        let dims = shape
            .iter()
            .map(|&d| u32::try_from(d).map_err(|e| internal(e.to_string())))
            .collect::<Result<Vec<u32>, _>>()?;
        let reply = protocol::ContextBound {
            context_id: bind.context_id,
            shape: dims,
        };
        let encoded = protocol::encode_bound(&reply).map_err(|e| internal(e.to_string()))?;
        let device = match &link.proven {
            Some(name) => name.to_string(),
            None => bind.device_id.clone(),
        };
        link.contexts.bind(
            bind.context_id,
            BoundContext {
                device,
                model: bind.model.clone(),
                variant: bind.variant.clone(),
                split: bind.split,
                payload_kind: bind.payload_kind,
                tensor,
            },
        );
        Ok(encoded)
    });
    match bound {
        Ok(encoded) => {
            ctx.stats.contexts_bound.fetch_add(1, Ordering::Relaxed);
            Ok(encoded)
        }
        Err(reply) => {
            // A refused binding leaves its id unbound, whatever it held before.
            link.contexts.unbind(bind.context_id);
            ctx.stats.record_error(reply.kind);
            debug!(kind = ?reply.kind, message = %reply.message, "binding refused");
            Ok(protocol::encode_response(&Response::Error(reply))?)
        }
    }
}

async fn infer(request: protocol::InferRequest, ctx: &StreamContext, arrived: Instant) -> Response {
    let frame_id = request.frame_id;
    if ctx.draining.load(Ordering::SeqCst) {
        ctx.stats.record_error(ErrorKind::Overloaded);
        return error_reply(
            Some(frame_id),
            ErrorKind::Overloaded,
            "worker is shutting down".into(),
        );
    }
    let Ok(permit) = ctx.admission.clone().try_acquire_owned() else {
        ctx.stats.record_error(ErrorKind::Overloaded);
        return error_reply(
            Some(frame_id),
            ErrorKind::Overloaded,
            "too many frames in flight".into(),
        );
    };
    let answer = match ctx.engine.submit(request, arrived) {
        Ok(answer) => answer,
        Err(reply) => {
            ctx.stats.record_error(reply.kind);
            debug!(frame_id, kind = ?reply.kind, message = %reply.message, "frame rejected");
            return Response::Error(reply);
        }
    };
    // Held until the answer is in: admission bounds the frames queued and running.
    let outcome = answer.await;
    drop(permit);
    match outcome {
        Ok(Ok(result)) => {
            ctx.stats.frames_ok.fetch_add(1, Ordering::Relaxed);
            Response::Result(result)
        }
        Ok(Err(reply)) => {
            ctx.stats.record_error(reply.kind);
            debug!(frame_id, kind = ?reply.kind, message = %reply.message, "frame rejected");
            Response::Error(reply)
        }
        Err(_) => {
            ctx.stats.record_error(ErrorKind::Internal);
            warn!(frame_id, "inference task ended without an answer");
            error_reply(
                Some(frame_id),
                ErrorKind::Internal,
                "inference task failed".into(),
            )
        }
    }
}

fn error_reply(frame_id: Option<u64>, kind: ErrorKind, message: String) -> Response {
    Response::Error(ErrorReply {
        frame_id,
        kind,
        message,
    })
}

async fn respond(send: &mut quinn::SendStream, reply: &Response) -> Result<(), StreamError> {
    let bytes = protocol::encode_response(reply)?;
    send.write_all(&bytes).await?;
    send.finish()?;
    Ok(())
}
