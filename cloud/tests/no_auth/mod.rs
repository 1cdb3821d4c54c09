//! A real `jmdc-cloud serve` without client authentication, and client endpoints for it (tests
//! whose clients are not devices with certificates: hostile clients, old protocol versions).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use jmdc_core::protocol::{self, InferRequest, PayloadKind};

use crate::common::{self, packages_dir, BIN};

/// The worker process, killed when dropped.
pub struct Worker {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Worker {
    /// Writes a self-signed certificate (`cert.pem`, `key.pem`) and a config into `dir` — one
    /// worker, client authentication off, then the TOML in `extra` — and starts the worker.
    pub fn start(dir: &Path, extra: &str) -> Self {
        let status = Command::new(BIN)
            .args(["gen-cert", "--cert"])
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .status()
            .expect("gen-cert");
        assert!(status.success());
        let config = dir.join("cloud.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nmodels_dir = \"{}\"\nlog_level = \"info\"\n\
                 [tls]\nclient_auth = \"off\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
                 [runtime]\nworkers = 1\n{extra}",
                packages_dir().display(),
            ),
        )
        .expect("write config");
        let (child, addr) = common::serve(&config, false);
        Self { child, addr }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client endpoint bound to `local` (a loopback address) trusting the worker's certificate
/// `cert`, offering the ALPN `alpn`, with keep-alives every `keep_alive` if given.
pub fn client(
    local: &str,
    cert: &Path,
    alpn: &[u8],
    keep_alive: Option<Duration>,
) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for c in jmdc_cloud::tls::load_certs(cert).expect("cert") {
        roots.add(c).expect("trust");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(jmdc_cloud::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(keep_alive);
    config.transport_config(Arc::new(transport));
    let mut endpoint =
        quinn::Endpoint::client(local.parse().expect("local address")).expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

/// A cloud-only request from `device` with a grey 32×32 image for the bundled AlexNet.
pub fn image_request(device: &str, frame_id: u64) -> InferRequest {
    InferRequest {
        device_id: device.into(),
        frame_id,
        model: "alexnet-cifar10".into(),
        variant: "keep100".into(),
        split: 0,
        payload_kind: PayloadKind::Image,
        payload: vec![128; 3 * 32 * 32],
    }
}

/// Sends `bytes` on a new stream and reads the whole answer (within 10 s).
pub async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("send");
    send.finish().expect("finish");
    tokio::time::timeout(
        Duration::from_secs(10),
        recv.read_to_end(protocol::MAX_RESPONSE_BYTES),
    )
    .await
    .expect("reply in time")
    .expect("reply")
}
