//! The real `jmdc-cloud serve` and the protocol version: an edge that speaks version 1 (ALPN
//! `jmdc/1`, version byte 1) completes its handshake and gets a typed `UnsupportedVersion` reply
//! naming both versions, on a connection that stays up; an unknown ALPN fails the handshake.
//! Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use common::{packages_dir, BIN};
use jmdc_core::protocol::{self, ErrorKind, InferRequest, PayloadKind, Response};

mod common;

struct Worker {
    child: Child,
    addr: SocketAddr,
}

impl Worker {
    fn start(dir: &Path) -> Self {
        let status = std::process::Command::new(BIN)
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
                 [runtime]\nworkers = 1\n",
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

fn endpoint(cert: &Path, alpn: &[u8]) -> quinn::Endpoint {
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
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
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

fn image_request(frame_id: u64) -> InferRequest {
    InferRequest {
        device_id: "old-edge".into(),
        frame_id,
        model: "alexnet-cifar10".into(),
        variant: "keep100".into(),
        split: 0,
        payload_kind: PayloadKind::Image,
        payload: vec![128; 3 * 32 * 32],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_edge_gets_a_typed_error_and_an_unknown_alpn_no_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = Worker::start(dir.path());
    let cert = dir.path().join("cert.pem");

    let old = endpoint(&cert, protocol::ALPN_V1);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        old.connect(worker.addr, "localhost").expect("connect"),
    )
    .await
    .expect("handshake in time")
    .expect("a jmdc/1 handshake is accepted");
    for frame_id in 0..2 {
        let mut v1 = protocol::encode_request(&image_request(frame_id)).expect("encode");
        v1[4] = 1;
        let reply = exchange(&conn, &v1).await;
        // A version-1 edge would refuse this version-2 reply with its own typed error; its bytes
        // say so at the same offset as in every version.
        assert_eq!(reply[4], protocol::PROTOCOL_VERSION);
        match protocol::decode_response(&reply).expect("a version-2 error reply") {
            Response::Error(e) => {
                assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
                assert!(
                    e.message.contains("version 1") && e.message.contains("speaks 2"),
                    "{}",
                    e.message
                );
            }
            Response::Result(_) => panic!("a version-1 request was served"),
        }
    }
    // The same connection serves a version-2 request.
    let v2 = protocol::encode_request(&image_request(9)).expect("encode");
    assert!(matches!(
        protocol::decode_response(&exchange(&conn, &v2).await),
        Ok(Response::Result(r)) if r.frame_id == 9
    ));
    conn.close(0u32.into(), b"");

    let stranger = endpoint(&cert, b"jmdc/9");
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        stranger.connect(worker.addr, "localhost").expect("connect"),
    )
    .await
    .expect("handshake outcome in time");
    assert!(attempt.is_err(), "an unknown ALPN completed a handshake");
}
