//! QUIC client to a cloud worker: one connection, one bidirectional stream per frame.
//!
//! Frames go out in protocol version 2's compact form: the first frame of a plan on a connection
//! binds a context (model, variant, split, keep ratio, mode; the worker answers with the shape it
//! derived, which must match what the edge encodes), and every frame then carries a few header
//! bytes and the codec's compact body (`docs/protocol.md`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::codec::QuantMode;
use jmdc_core::protocol::{
    self, BindContext, ErrorKind, ErrorReply, Frame, InferRequest, PayloadKind, ProtocolError,
    Response, ServerMessage, MAX_CONTEXTS,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why a frame could not be answered by the cloud.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A CA or identity file cannot be read or holds no usable certificate or key.
    #[error("cannot read trusted certificate {path}: {reason}")]
    Trust {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls or quinn refused the TLS configuration.
    #[error("TLS configuration rejected: {0}")]
    Tls(String),
    /// The UDP socket cannot be opened.
    #[error("cannot open UDP socket: {0}")]
    Socket(std::io::Error),
    /// The handshake with a worker failed or timed out.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The worker.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection ended.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The request could not be written.
    #[error("sending request: {0}")]
    Write(#[from] quinn::WriteError),
    /// The request stream was already closed.
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    /// The answer could not be read (or was too long).
    #[error("reading response: {0}")]
    Read(#[from] quinn::ReadToEndError),
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not a valid message, or the request could not be encoded.
    #[error("bad message: {0}")]
    Protocol(#[from] protocol::ProtocolError),
}

/// How often an idle connection sends a QUIC PING, so that a silent path is noticed and a healthy
/// idle one is not closed by the idle timeout.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// A connection that hears nothing from the worker for this long is closed as lost
/// (`ConnectionError::TimedOut`); the effective value is the smaller of this and the worker's.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A connected cloud worker.
#[derive(Debug)]
pub struct CloudClient {
    endpoint: quinn::Endpoint,
    /// Whether the endpoint is this client's own (closed with it) or shared with other connections.
    owns_endpoint: bool,
    connection: quinn::Connection,
    contexts: tokio::sync::Mutex<BoundContexts>,
    in_flight: InFlight,
}

/// The unspecified address of `addr`'s family, port 0: where a client endpoint binds.
pub(crate) fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// Requests in progress on a connection, so that closing it can wait for them
/// ([`CloudClient::wait_idle`]) instead of guessing from who holds the client.
#[derive(Debug, Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One request in progress; dropping it (the request ended, failed, timed out or was cancelled)
/// ends it.
#[derive(Debug)]
struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self)
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until no request is in progress, at most `limit`; whether it got there.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a request ending in between is not missed.
            notified.as_mut().enable();
            if self.count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() == 0;
            }
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// What a context binds, as the edge looks it up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContextKey {
    model: String,
    variant: String,
    split: u16,
    payload_kind: PayloadKind,
    /// Feature contexts: ρ (as bits) and mode.
    coding: Option<(u32, QuantMode)>,
}

impl ContextKey {
    fn of(bind: &BindContext) -> Self {
        Self {
            model: bind.model.clone(),
            variant: bind.variant.clone(),
            split: bind.split,
            payload_kind: bind.payload_kind,
            coding: bind.coding.map(|c| (c.keep_ratio.to_bits(), c.mode)),
        }
    }
}

/// The contexts bound on this connection; when all [`MAX_CONTEXTS`] ids are taken the oldest
/// binding's id is reused (binding an id again replaces it on the worker).
#[derive(Debug, Default)]
struct BoundContexts {
    ids: HashMap<ContextKey, u8>,
    order: VecDeque<ContextKey>,
}

impl BoundContexts {
    /// The lowest id no binding holds; when all are held, the oldest binding's (which is dropped).
    /// An id still held by another plan is never handed out: binding it again would replace that
    /// plan's context on the worker while this table still sends the plan's frames under it.
    fn free_id(&mut self) -> u8 {
        if let Some(id) = (0..MAX_CONTEXTS).find(|id| !self.ids.values().any(|held| held == id)) {
            return id;
        }
        let oldest = self.order.pop_front();
        oldest.and_then(|k| self.ids.remove(&k)).unwrap_or(0)
    }

    fn insert(&mut self, key: ContextKey, id: u8) {
        self.ids.insert(key.clone(), id);
        self.order.push_back(key);
    }

    fn forget(&mut self, key: &ContextKey) {
        if self.ids.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

/// Builds the client-side QUIC configuration trusting the certificates in `ca_cert`, without a
/// device certificate.
pub fn client_config(ca_cert: &Path) -> Result<quinn::ClientConfig, ClientError> {
    client_config_with_identity(ca_cert, None)
}

/// [`client_config`] presenting the device certificate and key of `identity` (PEM files) to
/// workers that require client authentication.
pub fn client_config_with_identity(
    ca_cert: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<quinn::ClientConfig, ClientError> {
    let trust_err = |reason: String| ClientError::Trust {
        path: ca_cert.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_cert)
        .map_err(|e| trust_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| trust_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(trust_err("no CERTIFICATE block found".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| trust_err(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut tls = match identity {
        None => tls.with_no_client_auth(),
        Some((cert, key)) => {
            let id_err = |path: &Path, reason: String| ClientError::Trust {
                path: path.display().to_string(),
                reason,
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| id_err(cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| id_err(cert, e.to_string()))?;
            if chain.is_empty() {
                return Err(id_err(cert, "no CERTIFICATE block found".into()));
            }
            let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| id_err(key, e.to_string()))?;
            tls.with_client_auth_cert(chain, key_der)
                .map_err(|e| id_err(cert, e.to_string()))?
        }
    };
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
        .map_err(|e| ClientError::Tls(format!("idle timeout {IDLE_TIMEOUT:?}: {e}")))?;
    transport.max_idle_timeout(Some(idle));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

impl CloudClient {
    /// Connects to `addr`, checking the certificate against `server_name`, on an endpoint (UDP
    /// socket) of its own that closes with the client.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let endpoint =
            quinn::Endpoint::client(unspecified_for(addr)).map_err(ClientError::Socket)?;
        let client = Self::connect_on(&endpoint, addr, server_name, config, timeout).await;
        if client.is_err() {
            // Abandon a half-open attempt now so the socket is released promptly.
            endpoint.close(0u32.into(), b"");
        }
        let mut client = client?;
        client.owns_endpoint = true;
        Ok(client)
    }

    /// Connects to `addr` on `endpoint`, which the caller shares among its connections (the cloud
    /// link keeps one per address family); closing the client leaves the endpoint open.
    pub async fn connect_on(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect_err = |reason: String| ClientError::Connect { addr, reason };
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let connection = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(connect_err(e.to_string())),
            Err(_) => return Err(connect_err(format!("no handshake within {timeout:?}"))),
        };
        Ok(Self {
            endpoint: endpoint.clone(),
            owns_endpoint: false,
            connection,
            contexts: tokio::sync::Mutex::new(BoundContexts::default()),
            in_flight: InFlight::default(),
        })
    }

    /// Sends one frame and waits for its answer (a result or a typed error from the worker),
    /// all within `timeout`. The frame goes out in compact form on its plan's context, bound
    /// first if this connection has not bound it yet; a payload with no compact form goes out as
    /// a self-contained request. A refused binding is the frame's error reply.
    pub async fn infer(
        &self,
        request: &InferRequest,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        Ok(self.infer_measured(request, timeout).await?.0)
    }

    /// [`infer`](Self::infer), also returning the round trip of the frame's own exchange: from
    /// opening its stream to the end of the answer, without the context binding a plan's first
    /// frame on a connection waits for (the edge's bandwidth estimate uses this time).
    pub async fn infer_measured(
        &self,
        request: &InferRequest,
        timeout: Duration,
    ) -> Result<(Response, Duration), ClientError> {
        let _in_flight = self.in_flight.enter();
        tokio::time::timeout(timeout, self.infer_compact(request))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn infer_compact(
        &self,
        request: &InferRequest,
    ) -> Result<(Response, Duration), ClientError> {
        let Some(protocol::CompactRequest { bind, shape, body }) =
            protocol::request_context(request)
        else {
            let bytes = protocol::encode_request(request)?;
            let sent = Instant::now();
            let reply = self.exchange_untimed(&bytes).await?;
            let round_trip = sent.elapsed();
            return Ok((protocol::decode_response(&reply)?, round_trip));
        };
        let key = ContextKey::of(&bind);
        // Once more after an `UnknownContext` answer (the worker lost the binding).
        let mut rebound = false;
        loop {
            let context_id = match self.context_id(&key, &bind, shape.as_deref()).await? {
                Ok(id) => id,
                Err(reply) => {
                    let refused = Response::Error(ErrorReply {
                        frame_id: Some(request.frame_id),
                        ..reply
                    });
                    return Ok((refused, Duration::ZERO));
                }
            };
            let frame = Frame {
                context_id,
                frame_id: request.frame_id,
                body: body.to_vec(),
            };
            let bytes = protocol::encode_frame(&frame)?;
            let sent = Instant::now();
            let reply = self.exchange_untimed(&bytes).await?;
            let round_trip = sent.elapsed();
            let response = protocol::decode_response(&reply)?;
            if let Response::Error(e) = &response {
                if e.kind == ErrorKind::UnknownContext && !rebound {
                    self.contexts.lock().await.forget(&key);
                    rebound = true;
                    continue;
                }
            }
            return Ok((response, round_trip));
        }
    }

    /// The id `key` is bound to on this connection, binding it first if needed (one exchange,
    /// under the table's lock so that concurrent frames of a new plan bind it once). `Ok(Err)`
    /// is the worker's refusal, or a shape that differs from the one the edge encodes.
    async fn context_id(
        &self,
        key: &ContextKey,
        bind: &BindContext,
        shape: Option<&[usize]>,
    ) -> Result<Result<u8, ErrorReply>, ClientError> {
        let mut table = self.contexts.lock().await;
        if let Some(&id) = table.ids.get(key) {
            return Ok(Ok(id));
        }
        let id = table.free_id();
        let bind = BindContext {
            context_id: id,
            ..bind.clone()
        };
        let reply = self
            .exchange_untimed(&protocol::encode_bind(&bind)?)
            .await?;
        match protocol::decode_server_message(&reply)? {
            ServerMessage::ContextBound(bound) if bound.context_id == id => {
                let theirs: Vec<usize> = bound.shape.iter().map(|&d| d as usize).collect();
                if let Some(ours) = shape {
                    if ours != theirs.as_slice() {
                        return Ok(Err(ErrorReply::new(
                            None,
                            ErrorKind::BadSplit,
                            format!(
                                "the worker's package gives split {} of {}/{} the shape \
                                 {theirs:?}, this edge sends {ours:?} (different packages?)",
                                bind.split, bind.model, bind.variant
                            ),
                        )));
                    }
                }
                table.insert(key.clone(), id);
                Ok(Ok(id))
            }
            ServerMessage::Error(e) => Ok(Err(e)),
            other => Err(ClientError::Protocol(
                ProtocolError::UnexpectedMessageType {
                    expected: "the context binding's answer",
                    found: match other {
                        ServerMessage::Result(_) => protocol::MessageType::InferResult,
                        ServerMessage::ProbeReply(_) => protocol::MessageType::ProbeReply,
                        _ => protocol::MessageType::ContextBound,
                    },
                },
            )),
        }
    }

    /// Contexts bound on this connection.
    pub async fn bound_contexts(&self) -> usize {
        self.contexts.lock().await.ids.len()
    }

    /// One request/response exchange on a fresh bidirectional stream.
    pub async fn exchange(
        &self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let _in_flight = self.in_flight.enter();
        tokio::time::timeout(timeout, self.exchange_untimed(request))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn exchange_untimed(&self, request: &[u8]) -> Result<Vec<u8>, ClientError> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        send.write_all(request).await?;
        send.finish()?;
        Ok(recv.read_to_end(protocol::MAX_RESPONSE_BYTES).await?)
    }

    /// The underlying connection (path statistics, RTT).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The local address of the endpoint (UDP socket) this connection runs on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The worker's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Why the connection ended, or `None` while it is up.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.connection.close_reason()
    }

    /// Waits until no request is in progress, at most `limit`; whether it got there.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        self.in_flight.wait_idle(limit).await
    }

    /// Closes the connection cleanly. On an endpoint of its own, also waits briefly for the close to
    /// be sent; a shared endpoint sends it while it serves the others.
    pub async fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
        if self.owns_endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_for_idle_ends_with_the_last_request_or_at_the_limit() {
        let in_flight = Arc::new(InFlight::default());
        assert!(
            in_flight.wait_idle(Duration::ZERO).await,
            "idle from the start"
        );
        let a = in_flight.enter();
        let b = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        // Nothing ends: the wait gives up exactly at its limit (virtual time).
        let start = tokio::time::Instant::now();
        assert!(!in_flight.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // The requests end at 1 s and 2 s: the wait returns at the second, not before.
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let idle = in_flight.wait_idle(Duration::from_secs(10)).await;
                (idle, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(b);
        let (idle, waited) = waiter.await.unwrap();
        assert!(idle);
        assert_eq!(waited, Duration::from_secs(2));
        assert_eq!(in_flight.count(), 0);
    }

    fn key(split: u16) -> ContextKey {
        ContextKey {
            model: "m".into(),
            variant: "v".into(),
            split,
            payload_kind: PayloadKind::Feature,
            coding: Some((1.0f32.to_bits(), QuantMode::Bits(4))),
        }
    }

    #[test]
    fn ids_are_never_shared_after_a_forget_or_when_full() {
        let mut table = BoundContexts::default();
        for split in 0..3 {
            let id = table.free_id();
            table.insert(key(split), id);
        }
        // The worker lost split 0's binding: a new plan must not take an id split 1 or 2 holds.
        table.forget(&key(0));
        let id = table.free_id();
        assert_eq!(id, 0);
        table.insert(key(10), id);
        let id = table.free_id();
        assert_eq!(id, 3);
        table.insert(key(11), id);
        // Fill every id; the next binding takes the oldest one's and drops it.
        for split in 12..12 + u16::from(MAX_CONTEXTS) - 4 {
            let id = table.free_id();
            table.insert(key(split), id);
        }
        assert_eq!(table.ids.len(), usize::from(MAX_CONTEXTS));
        let mut held: Vec<u8> = table.ids.values().copied().collect();
        held.sort_unstable();
        assert_eq!(held, (0..MAX_CONTEXTS).collect::<Vec<_>>());
        let id = table.free_id();
        assert_eq!(id, 1, "split 1 is the oldest binding");
        assert!(!table.ids.contains_key(&key(1)));
        assert_eq!(table.ids.len(), usize::from(MAX_CONTEXTS) - 1);
    }
}
