//! QUIC client to a cloud worker: one connection, one bidirectional stream per frame.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jmdc_core::protocol::{self, InferRequest, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why a frame could not be answered by the cloud.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read trusted certificate {path}: {reason}")]
    Trust { path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Tls(String),
    #[error("cannot open UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("sending request: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("reading response: {0}")]
    Read(#[from] quinn::ReadToEndError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
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
    connection: quinn::Connection,
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
    /// Connects to `addr`, checking the certificate against `server_name`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(ClientError::Socket)?;
        endpoint.set_default_client_config(config);
        let connect_err = |reason: String| ClientError::Connect { addr, reason };
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let connection = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                endpoint.close(0u32.into(), b"");
                return Err(connect_err(e.to_string()));
            }
            Err(_) => {
                // Abandon the half-open attempt now so the socket is released promptly.
                endpoint.close(0u32.into(), b"");
                return Err(connect_err(format!("no handshake within {timeout:?}")));
            }
        };
        Ok(Self {
            endpoint,
            connection,
        })
    }

    /// Sends one frame and waits for its answer (a result or a typed error from the worker).
    pub async fn infer(
        &self,
        request: &InferRequest,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let bytes = protocol::encode_request(request)?;
        let reply = self.exchange(&bytes, timeout).await?;
        Ok(protocol::decode_response(&reply)?)
    }

    /// One request/response exchange on a fresh bidirectional stream.
    pub async fn exchange(
        &self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let work = async {
            let (mut send, mut recv) = self.connection.open_bi().await?;
            send.write_all(request).await?;
            send.finish()?;
            Ok::<_, ClientError>(recv.read_to_end(protocol::MAX_RESPONSE_BYTES).await?)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// The underlying connection (path statistics, RTT).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The worker's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Why the connection ended, or `None` while it is up.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.connection.close_reason()
    }

    /// Closes the connection cleanly and waits briefly for the close to be sent.
    pub async fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}
