//! The optional plain-HTTP health listener (`[health] listen`): `/healthz`, `/readyz`,
//! `/metrics` for Kubernetes probes and Prometheus. Connections are served concurrently up to a
//! bound (the shared `jmdc_service::http_listener` loop); each gets one bounded request and one
//! response. Not meant to be exposed publicly.

use std::net::SocketAddr;

use jmdc_service::http_listener::accept_loop;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::health::HealthView;
use crate::http::serve_connection;

/// Limits of the health HTTP server (5 s, 8 KiB; the service uses
/// [`HEALTH_MAX_CONNECTIONS`]).
pub use jmdc_service::http_listener::Limits as HealthOptions;

/// Health connections the service serves at once.
pub(crate) const HEALTH_MAX_CONNECTIONS: usize = 32;

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
        let task = tokio::spawn(accept_health(listener, view, options));
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

async fn accept_health(listener: TcpListener, view: HealthView, options: HealthOptions) {
    let max = options.max_connections;
    accept_loop(listener, "health".into(), max, move |stream| {
        let (view, options) = (view.clone(), options.clone());
        async move {
            let served = serve_connection(
                stream,
                &view,
                options.max_request_bytes,
                options.request_timeout,
            )
            .await;
            match served {
                Ok(route) => debug!(?route, "health request served"),
                Err(e) => debug!(error = %e, "health connection ended"),
            }
        }
    })
    .await;
}
