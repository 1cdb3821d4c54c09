//! The QUIC endpoint: accepts connections, reads one request per bidirectional stream, answers it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::protocol::{self, ClientMessage, ErrorKind, ErrorReply, Response};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::CloudConfig;
use crate::engine::TailEngine;
use crate::health::{HealthView, Heartbeat, HEARTBEAT_PERIOD};
pub use crate::stats::ServerStats;
use crate::tls;

/// How long [`CloudServer::serve`] lets requests in flight finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a finished response stream may wait for the peer's acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// A bound, not yet serving, cloud worker.
#[derive(Debug)]
pub struct CloudServer {
    endpoint: quinn::Endpoint,
    engine: Arc<TailEngine>,
    admission: Arc<Semaphore>,
    stats: Arc<ServerStats>,
    heartbeat: Arc<Heartbeat>,
    draining: Arc<AtomicBool>,
}

/// Failures while starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl CloudServer {
    /// Binds the QUIC endpoint described by `cfg`.
    pub fn bind(cfg: &CloudConfig, engine: Arc<TailEngine>) -> Result<Self, ServerError> {
        let crypto = tls::server_crypto(&cfg.tls.cert, &cfg.tls.key)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(cfg.limits.max_streams_per_connection.into())
            .max_concurrent_uni_streams(0u32.into())
            .keep_alive_interval(Some(Duration::from_secs(5)));
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
        Ok(Self {
            endpoint,
            engine,
            admission: Arc::new(Semaphore::new(cfg.limits.max_inflight)),
            stats: Arc::new(ServerStats::default()),
            heartbeat: Arc::new(Heartbeat::default()),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
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
                    let ctx = StreamContext {
                        engine: self.engine.clone(),
                        admission: self.admission.clone(),
                        stats: self.stats.clone(),
                        draining: self.draining.clone(),
                    };
                    tokio::spawn(async move {
                        if let Err(e) = handle_connection(incoming, ctx).await {
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
}

async fn handle_connection(
    incoming: quinn::Incoming,
    ctx: StreamContext,
) -> Result<(), quinn::ConnectionError> {
    let connection = incoming.await?;
    let peer = connection.remote_address();
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    ctx.stats.open_connections.fetch_add(1, Ordering::Relaxed);
    let _open = OpenConnection(ctx.stats.clone());
    info!(%peer, "connection open");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let ctx = ctx.clone();
                let in_flight = InFlight::start(&ctx.stats);
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    if let Err(e) = handle_stream(send, recv, ctx).await {
                        debug!(%peer, error = %e, "stream failed");
                    }
                });
            }
            Err(quinn::ConnectionError::ApplicationClosed(_))
            | Err(quinn::ConnectionError::LocallyClosed) => {
                info!(%peer, "connection closed");
                return Ok(());
            }
            Err(e) => {
                info!(%peer, reason = %e, "connection lost");
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

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: StreamContext,
) -> Result<(), StreamError> {
    let bytes = match recv.read_to_end(protocol::MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(quinn::ReadToEndError::TooLong) => {
            let reply = error_reply(
                None,
                ErrorKind::Malformed,
                format!("request exceeds {} bytes", protocol::MAX_REQUEST_BYTES),
            );
            ctx.stats.record_error(ErrorKind::Malformed);
            let _ = recv.stop(0u32.into());
            return respond(&mut send, &reply).await;
        }
        Err(quinn::ReadToEndError::Read(e)) => return Err(e.into()),
    };
    // The worker's time starts when the whole request is here: the upload before it is network
    // time (the edge derives bandwidth from round trip − server time), not queueing.
    let arrived = Instant::now();
    let reply_bytes = match protocol::decode_client_message(&bytes) {
        Err(e) => {
            warn!(error = %e, len = bytes.len(), "malformed request");
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
    };
    send.write_all(&reply_bytes).await?;
    send.finish()?;
    // Stay in flight until the peer has the whole answer, so a shutdown does not cut it.
    let _ = tokio::time::timeout(ACK_WAIT, send.stopped()).await;
    Ok(())
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
    let engine = ctx.engine.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        engine.infer(&request, arrived)
    })
    .await;
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
        Err(join) => {
            ctx.stats.record_error(ErrorKind::Internal);
            warn!(frame_id, error = %join, "inference task failed");
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
