//! The one accept loop of both binaries' small HTTP listeners (the edge's `/metrics` on a Unix
//! socket or loopback TCP, the worker's `/healthz` `/readyz` `/metrics`): connections are served
//! concurrently up to a bound, each in a task the loop owns, so stopping the loop ends them too.
//! What a connection gets is the caller's handler (one exchange of `http_lite`).

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Limits of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send its request head, and again to take the response.
    pub request_timeout: Duration,
    /// Largest request head accepted (larger gets 431).
    pub max_request_bytes: usize,
    /// Connections served at once; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 5 s, 8 KiB, 64 connections.
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
            max_connections: 64,
        }
    }
}

/// After a failed accept (e.g. out of file descriptors) the loop waits this long instead of
/// spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A listener the accept loop can take connections from.
pub trait Accept: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts connections until the task running it is aborted; each connection is served by
/// `serve` in its own task (owned by a `JoinSet`, so aborting the loop ends them too). Beyond
/// `max_connections` a new connection is closed at once. `label` names the listener in logs.
pub async fn accept_loop<L, F, Fut>(listener: L, label: String, max_connections: usize, serve: F)
where
    L: Accept,
    F: Fn(L::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept_stream() => match accepted {
                Ok(stream) if connections.len() >= max_connections => {
                    debug!(listener = %label, "too many connections; closing a new one");
                    drop(stream);
                }
                Ok(stream) => {
                    connections.spawn(serve(stream));
                }
                Err(e) => {
                    warn!(listener = %label, error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    warn!(listener = %label, error = %e, "connection task failed");
                }
            }
        }
    }
}
