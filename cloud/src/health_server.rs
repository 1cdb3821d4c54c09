//! The optional plain-HTTP health listener (`[health] listen`): `/healthz`, `/readyz`,
//! `/metrics` for Kubernetes probes and Prometheus. Connections are served concurrently up to a
//! bound; each gets one bounded request and one response. Not meant to be exposed publicly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::health::HealthView;
use crate::http::serve_connection;

/// Limits of the health HTTP server.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// Time a client has to send its request head, and again to take the response.
    pub request_timeout: Duration,
    /// Largest request head accepted (larger gets 431).
    pub max_request_bytes: usize,
    /// Connections served at once; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for HealthOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
            max_connections: 32,
        }
    }
}

/// The health listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The TCP address could not be bound.
    #[error("health.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running health listener; dropping it stops accepting.
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HealthServer {
    /// Binds `addr` (TCP) and serves `view` until dropped.
    pub async fn start(
        addr: SocketAddr,
        view: HealthView,
        options: HealthOptions,
    ) -> Result<Self, HealthError> {
        let bind_err = |source| HealthError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let bound = listener.local_addr().map_err(bind_err)?;
        info!(addr = %bound, "health and metrics on http://{bound}/ (/healthz, /readyz, /metrics)");
        let task = tokio::spawn(accept_loop(listener, view, options));
        Ok(Self { addr: bound, task })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, view: HealthView, options: HealthOptions) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "health listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "health listener: too many connections; closing");
            continue;
        };
        let view = view.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match serve_connection(
                stream,
                &view,
                options.max_request_bytes,
                options.request_timeout,
            )
            .await
            {
                Ok(route) => debug!(%peer, ?route, "health request served"),
                Err(e) => debug!(%peer, error = %e, "health connection ended"),
            }
        });
    }
}
