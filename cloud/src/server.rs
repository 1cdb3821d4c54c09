//! The QUIC endpoint: accepts connections, reads one request per bidirectional stream, answers it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::protocol::{self, ClientMessage, ErrorKind, ErrorReply, Response};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::CloudConfig;
use crate::engine::TailEngine;
use crate::tls;

/// Counters a health or metrics endpoint can read.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub frames_ok: AtomicU64,
    pub frames_failed: AtomicU64,
    pub overloaded: AtomicU64,
    pub probes: AtomicU64,
}

/// A bound, not yet serving, cloud worker.
#[derive(Debug)]
pub struct CloudServer {
    endpoint: quinn::Endpoint,
    engine: Arc<TailEngine>,
    admission: Arc<Semaphore>,
    stats: Arc<ServerStats>,
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

    /// Serves until `shutdown` resolves, then closes every connection and waits for the endpoint to be idle.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let ctx = StreamContext {
                        engine: self.engine.clone(),
                        admission: self.admission.clone(),
                        stats: self.stats.clone(),
                    };
                    tokio::spawn(async move {
                        if let Err(e) = handle_connection(incoming, ctx).await {
                            debug!(error = %e, "connection ended");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        info!("shutting down: closing connections");
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
    }
}

#[derive(Clone)]
struct StreamContext {
    engine: Arc<TailEngine>,
    admission: Arc<Semaphore>,
    stats: Arc<ServerStats>,
}

async fn handle_connection(
    incoming: quinn::Incoming,
    ctx: StreamContext,
) -> Result<(), quinn::ConnectionError> {
    let connection = incoming.await?;
    let peer = connection.remote_address();
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    info!(%peer, "connection open");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
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
    let arrived = Instant::now();
    let bytes = match recv.read_to_end(protocol::MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(quinn::ReadToEndError::TooLong) => {
            let reply = error_reply(
                None,
                ErrorKind::Malformed,
                format!("request exceeds {} bytes", protocol::MAX_REQUEST_BYTES),
            );
            ctx.stats.frames_failed.fetch_add(1, Ordering::Relaxed);
            let _ = recv.stop(0u32.into());
            return respond(&mut send, &reply).await;
        }
        Err(quinn::ReadToEndError::Read(e)) => return Err(e.into()),
    };
    let reply_bytes = match protocol::decode_client_message(&bytes) {
        Err(e) => {
            warn!(error = %e, len = bytes.len(), "malformed request");
            ctx.stats.frames_failed.fetch_add(1, Ordering::Relaxed);
            protocol::encode_response(&Response::Error(ErrorReply::for_decode_error(&bytes, &e)))?
        }
        Ok(ClientMessage::Probe(probe)) => {
            ctx.stats.probes.fetch_add(1, Ordering::Relaxed);
            protocol::encode_probe_reply(&protocol::ProbeReply::answer(&probe))?
        }
        Ok(ClientMessage::Infer(request)) => {
            let response = infer(request, &ctx, arrived).await;
            protocol::encode_response(&response)?
        }
    };
    send.write_all(&reply_bytes).await?;
    send.finish()?;
    Ok(())
}

async fn infer(request: protocol::InferRequest, ctx: &StreamContext, arrived: Instant) -> Response {
    let frame_id = request.frame_id;
    let Ok(permit) = ctx.admission.clone().try_acquire_owned() else {
        ctx.stats.overloaded.fetch_add(1, Ordering::Relaxed);
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
            ctx.stats.frames_failed.fetch_add(1, Ordering::Relaxed);
            debug!(frame_id, kind = ?reply.kind, message = %reply.message, "frame rejected");
            Response::Error(reply)
        }
        Err(join) => {
            ctx.stats.frames_failed.fetch_add(1, Ordering::Relaxed);
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
