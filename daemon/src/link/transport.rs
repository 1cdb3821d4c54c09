//! What the link needs from a transport: a [`Connector`] that makes one connection to an address
//! under the link's settings, and [`Connection`]s that say when and why they ended. The real one
//! is QUIC ([`QuicConnector`] making [`CloudClient`]s); the link's tests drive the same state
//! machine through an in-memory one on virtual time (`link/tests.rs`).

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::{lock, LinkError, LinkSettings};
use crate::client::{client_config_with_identity, ClientError, CloudClient};

/// How long a closing link waits for its endpoints to send the last connection closes.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closed {
    /// The worker closed it because it carried no request for its idle timeout: nothing was lost.
    pub(crate) idle: bool,
    /// The transport's words, for the log and `LinkStats::last_error`.
    pub(crate) reason: String,
}

/// One connection to a worker, as the link sees it.
pub(crate) trait Connection: Debug + Send + Sync + 'static {
    /// Resolves when the connection has ended (closed by either side, timed out, reset).
    fn closed(&self) -> impl Future<Output = Closed> + Send;
    /// Closes the connection cleanly.
    fn close(&self) -> impl Future<Output = ()> + Send;
    /// Waits until no request is in progress, at most `limit`; whether it got there.
    fn wait_idle(&self, limit: Duration) -> impl Future<Output = bool> + Send;
}

/// Makes connections.
pub(crate) trait Connector: Debug + Send + Sync + 'static {
    /// What it makes.
    type Conn: Connection;
    /// What the settings' files give the transport (the TLS configuration and the bytes it was
    /// made from), built when settings are applied so a bad file is refused then.
    type Trust: Debug + Send + Sync + 'static;

    /// Reads and checks what `settings` name for the transport (CA file, identity).
    fn trust(&self, settings: &LinkSettings) -> Result<Self::Trust, LinkError>;

    /// Whether two trusts are the same (else a reconfiguration reconnects).
    fn same_trust(a: &Self::Trust, b: &Self::Trust) -> bool;

    /// One connection attempt with `addr`, within `settings.connect_timeout`; the error says why.
    fn connect(
        &self,
        settings: &LinkSettings,
        trust: &Self::Trust,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::Conn, String>> + Send;

    /// The link is closing: flush what the transport still has to send, release its sockets.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// QUIC: one `quinn::Endpoint` (UDP socket) per address family, made on first use and shared by
/// every connection attempt and connection of the link.
#[derive(Debug, Default)]
pub(crate) struct QuicConnector {
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

/// The QUIC client configuration and the file contents it was built from.
#[derive(Debug)]
pub(crate) struct QuicTrust {
    quic: quinn::ClientConfig,
    ca_bytes: Vec<u8>,
    identity_bytes: Vec<u8>,
}

fn trust_error(path: &std::path::Path, e: &std::io::Error) -> LinkError {
    LinkError::Trust(ClientError::Trust {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl Connector for QuicConnector {
    type Conn = CloudClient;
    type Trust = QuicTrust;

    fn trust(&self, settings: &LinkSettings) -> Result<QuicTrust, LinkError> {
        let ca_bytes =
            std::fs::read(&settings.ca_cert).map_err(|e| trust_error(&settings.ca_cert, &e))?;
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
                identity_bytes.extend(std::fs::read(path).map_err(|e| trust_error(path, &e))?);
            }
        }
        Ok(QuicTrust {
            quic,
            ca_bytes,
            identity_bytes,
        })
    }

    fn same_trust(a: &QuicTrust, b: &QuicTrust) -> bool {
        a.ca_bytes == b.ca_bytes && a.identity_bytes == b.identity_bytes
    }

    fn connect(
        &self,
        settings: &LinkSettings,
        trust: &QuicTrust,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<CloudClient, String>> + Send {
        let endpoint = lock(&self.sockets).for_addr(addr);
        let server_name = settings.server_name.clone();
        let config = trust.quic.clone();
        let timeout = settings.connect_timeout;
        async move {
            let endpoint = endpoint.map_err(|e| e.to_string())?;
            CloudClient::connect_on(&endpoint, addr, &server_name, config, timeout)
                .await
                .map_err(|e| e.to_string())
        }
    }

    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        let sockets = std::mem::take(&mut *lock(&self.sockets));
        async move {
            // The endpoints send the pending closes (briefly), then shut.
            for endpoint in [sockets.v4, sockets.v6].into_iter().flatten() {
                let _ = tokio::time::timeout(CLOSE_FLUSH, endpoint.wait_idle()).await;
                endpoint.close(0u32.into(), b"bye");
            }
        }
    }
}

impl Connection for CloudClient {
    fn closed(&self) -> impl Future<Output = Closed> + Send {
        let connection = self.connection().clone();
        async move {
            let error = connection.closed().await;
            Closed {
                idle: closed_for_idleness(&error),
                reason: error.to_string(),
            }
        }
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        CloudClient::close(self)
    }

    fn wait_idle(&self, limit: Duration) -> impl Future<Output = bool> + Send {
        CloudClient::wait_idle(self, limit)
    }
}

/// Whether the worker closed the connection because it carried no request for its idle timeout
/// (application close, reason `idle`: `jmdc-cloud`'s `limits.idle_timeout_s`).
fn closed_for_idleness(error: &quinn::ConnectionError) -> bool {
    matches!(error, quinn::ConnectionError::ApplicationClosed(c) if &c.reason[..] == b"idle")
}
