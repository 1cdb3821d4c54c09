//! The metrics listeners: a Unix socket (stale file replaced, mode 0660) and/or a loopback TCP
//! port, each with an accept loop that serves connections concurrently.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jmdc_service::http_listener::{accept_loop, Accept};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::http::serve_connection;
use super::registry::Metrics;
use super::section::MetricsSection;

/// Limits of the metrics HTTP server (per listener; default 5 s, 8 KiB, 64 connections).
pub use jmdc_service::http_listener::Limits as ServerOptions;

/// Why the metrics server could not start. Each message names the key and the path or address.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The section did not validate.
    #[error("{0}")]
    Config(String),
    /// The TCP address could not be bound.
    #[error("metrics.tcp: cannot listen on {addr}: {source}")]
    BindTcp {
        /// The address in `metrics.tcp`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket's folder did not exist and could not be created.
    #[error("metrics.socket: cannot create folder {}: {source}", path.display())]
    CreateDir {
        /// The path in question.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket path could not be inspected.
    #[error("metrics.socket: cannot inspect {}: {source}", path.display())]
    Inspect {
        /// The path in question.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something that is not a socket is at the socket path; it is left alone.
    #[error("metrics.socket: {} exists and is not a socket; not replacing it", path.display())]
    NotASocket {
        /// The path in `metrics.socket`.
        path: PathBuf,
    },
    /// A live process is listening on the socket path.
    #[error("metrics.socket: {} is in use by a running process (another jmdc-edge?)", path.display())]
    SocketInUse {
        /// The path in `metrics.socket`.
        path: PathBuf,
    },
    /// A stale socket file could not be removed.
    #[error("metrics.socket: cannot remove stale socket {}: {source}", path.display())]
    RemoveStale {
        /// The path in question.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The Unix socket could not be bound.
    #[error("metrics.socket: cannot listen on {}: {source}", path.display())]
    BindUnix {
        /// The path in question.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket's mode could not be set to 0660.
    #[error("metrics.socket: cannot set mode 0660 on {}: {source}", path.display())]
    Permissions {
        /// The path in question.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The socket file this server created (removed on shutdown only if it is still this one).
#[derive(Debug)]
struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    fn remove_if_ours(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!(path = %self.path.display(), error = %e, "cannot remove metrics socket");
                }
            }
            Ok(_) => {
                debug!(path = %self.path.display(), "metrics socket was replaced; not removing it")
            }
            Err(_) => {}
        }
    }
}

/// A running metrics server. Dropping it stops it too (without waiting).
#[derive(Debug)]
pub struct MetricsServer {
    tcp_addr: Option<SocketAddr>,
    socket: Option<BoundSocket>,
    tasks: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound TCP address (the real port when 0 was asked for).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The Unix socket served on.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_ref().map(|s| s.path.as_path())
    }

    /// Stops accepting, ends open connections and removes the socket file.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // A cancelled task is the expected outcome; a panicked one was logged by tokio.
            let _ = t.await;
        }
        if let Some(s) = self.socket.take() {
            s.remove_if_ours();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.socket.take() {
            s.remove_if_ours();
        }
    }
}

/// Serves `GET /metrics` on the section's Unix socket and/or TCP address with default limits.
/// A disabled section (or one with neither endpoint) gives a server that listens nowhere.
pub async fn serve(
    metrics: Arc<Metrics>,
    section: &MetricsSection,
) -> Result<MetricsServer, MetricsError> {
    serve_with(metrics, section, ServerOptions::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    metrics: Arc<Metrics>,
    section: &MetricsSection,
    options: ServerOptions,
) -> Result<MetricsServer, MetricsError> {
    section.validate().map_err(MetricsError::Config)?;
    let mut server = MetricsServer {
        tcp_addr: None,
        socket: None,
        tasks: Vec::new(),
    };
    if !section.enabled {
        return Ok(server);
    }
    let tcp = match section.tcp {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| MetricsError::BindTcp { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| MetricsError::BindTcp { addr, source })?;
            Some((listener, local))
        }
        None => None,
    };
    let unix = match section.socket_path() {
        Some(path) => Some(bind_unix(&path).await?),
        None => None,
    };
    let options = Arc::new(options);
    if let Some((listener, local)) = tcp {
        info!(addr = %local, "serving metrics over TCP");
        server.tcp_addr = Some(local);
        let (m, o) = (metrics.clone(), options.clone());
        server.tasks.push(tokio::spawn(accept_metrics(
            listener,
            local.to_string(),
            m,
            o,
        )));
    }
    if let Some((listener, bound)) = unix {
        info!(path = %bound.path.display(), "serving metrics on Unix socket");
        let label = bound.path.display().to_string();
        server.socket = Some(bound);
        server.tasks.push(tokio::spawn(accept_metrics(
            listener, label, metrics, options,
        )));
    }
    if server.tasks.is_empty() {
        info!("metrics enabled but neither metrics.socket nor metrics.tcp is set (nor RUNTIME_DIRECTORY); not serving");
    }
    Ok(server)
}

/// Binds the Unix socket: creates the folder, replaces a stale socket file (one nobody listens
/// on), refuses a live socket or a non-socket file, sets mode 0660.
async fn bind_unix(path: &Path) -> Result<(UnixListener, BoundSocket), MetricsError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| MetricsError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(MetricsError::SocketInUse { path: path.into() });
            }
            debug!(path = %path.display(), "replacing stale metrics socket");
            std::fs::remove_file(path).map_err(|source| MetricsError::RemoveStale {
                path: path.into(),
                source,
            })?;
        }
        Ok(_) => return Err(MetricsError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(MetricsError::Inspect {
                path: path.into(),
                source,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| MetricsError::BindUnix {
        path: path.into(),
        source,
    })?;
    let perms = || -> io::Result<std::fs::Metadata> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        std::fs::symlink_metadata(path)
    };
    let meta = match perms() {
        Ok(m) => m,
        Err(source) => {
            drop(listener);
            let _ = std::fs::remove_file(path);
            return Err(MetricsError::Permissions {
                path: path.into(),
                source,
            });
        }
    };
    Ok((
        listener,
        BoundSocket {
            path: path.into(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

/// Serves metrics on `listener` until aborted (the shared accept loop).
async fn accept_metrics<L: Accept>(
    listener: L,
    label: String,
    metrics: Arc<Metrics>,
    options: Arc<ServerOptions>,
) {
    let max = options.max_connections;
    accept_loop(listener, label.clone(), max, move |stream| {
        let (m, o, l) = (metrics.clone(), options.clone(), label.clone());
        async move {
            match serve_connection(stream, &m, o.max_request_bytes, o.request_timeout).await {
                Ok(route) => debug!(listener = %l, ?route, "metrics request served"),
                Err(e) => debug!(listener = %l, error = %e, "metrics connection ended"),
            }
        }
    })
    .await;
}
