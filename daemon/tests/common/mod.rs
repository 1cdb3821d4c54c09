//! Shared test setup: a real jmdc-cloud worker started in-process on a loopback port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jmdc_cloud::config::{ClientAuth, CloudConfig, LimitsSection, RuntimeSection, TlsSection};
use jmdc_cloud::{tls, CloudServer, TailEngine};
use jmdc_edge::client::{client_config, CloudClient};
use tokio::sync::oneshot;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

pub fn packages_dir() -> PathBuf {
    repo_root().join("models/packages")
}

pub fn sample_file() -> PathBuf {
    repo_root().join("models/samples/cifar10-test-256.bin")
}

pub fn init_runtime() {
    jmdc_core::runtime::init_onnxruntime(None)
        .expect("ONNX Runtime not found: run scripts/fetch-onnxruntime.sh (make test does)");
}

/// A running worker; dropping it does not stop it — call `stop`.
pub struct Cloud {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cloud {
    pub async fn start(max_inflight: usize) -> Cloud {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        tls::generate_self_signed(&["localhost".to_string()], &cert, &key).expect("cert");
        Cloud::start_at(
            max_inflight,
            "127.0.0.1:0".parse().expect("addr"),
            cert,
            key,
            dir,
        )
        .await
    }

    /// Starts a worker on `listen` (a loopback address; port 0 picks one) with an existing
    /// certificate and key, so that several workers — or one restarted on the same address — are
    /// trusted through the same CA file. `dir` is kept for the life of the worker.
    pub async fn start_at(
        max_inflight: usize,
        listen: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
        dir: tempfile::TempDir,
    ) -> Cloud {
        let limits = LimitsSection {
            max_inflight,
            ..LimitsSection::default()
        };
        Cloud::start_with_limits(limits, listen, cert, key, dir).await
    }

    /// [`Cloud::start_at`] with all of `[limits]`.
    pub async fn start_with_limits(
        limits: LimitsSection,
        listen: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
        dir: tempfile::TempDir,
    ) -> Cloud {
        init_runtime();
        assert!(listen.ip().is_loopback(), "tests listen on loopback only");
        let cfg = CloudConfig {
            listen,
            tls: TlsSection {
                cert: cert.clone(),
                key,
                client_auth: ClientAuth::Off,
                client_ca: None,
                revoked: None,
            },
            models_dir: packages_dir(),
            runtime: RuntimeSection {
                workers: 2,
                ..RuntimeSection::default()
            },
            batching: Default::default(),
            limits,
            log_level: "warn".into(),
            health: None,
        };
        let engine = TailEngine::load(&cfg.models_dir, &cfg.engine_options()).expect("models load");
        let server = CloudServer::bind(&cfg, Arc::new(engine)).expect("bind");
        let addr = server.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Cloud {
            addr,
            cert,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> CloudClient {
        let config = client_config(&self.cert).expect("client config");
        CloudClient::connect(self.addr, "localhost", config, Duration::from_secs(5))
            .await
            .expect("connect")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// A self-signed certificate for "localhost" in a new temporary folder: (folder, cert, key).
pub fn make_cert() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    tls::generate_self_signed(&["localhost".to_string()], &cert, &key).expect("cert");
    (dir, cert, key)
}

/// A loopback UDP address nothing listens on (bound, read and released; good until someone else
/// takes the port, which is unlikely within a test).
pub fn unused_udp_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("local addr")
}

/// Open file descriptors of this process (Linux `/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}
