//! Device identity with the real binary: `jmdc-cloud gen-ca`, `gen-device-cert` and
//! `fingerprint --revoke` make the files, `jmdc-cloud serve` requires client certificates from the
//! device CA. Refused: no certificate, one from another CA, an expired one, a revoked one (the
//! deny list re-read on SIGHUP, the process staying up); served: a good one, whose name appears
//! in the worker's log. A device over `limits.max_connections_per_device` is closed after its
//! handshake while another device is served. Every wait is bounded.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use common::{packages_dir, BIN};
use jmdc_core::protocol::{self, ProbeRequest, ServerMessage};

mod common;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run jmdc-cloud");
    assert!(
        out.status.success(),
        "jmdc-cloud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// `jmdc-cloud CMD --cert <stem>.pem --key <stem>-key.pem` (for `gen-ca`; `gen-cert` writes
/// the worker's `cert.pem`/`key.pem`).
fn pair(dir: &Path, cmd: &str, cert: &str, key: &str) {
    run(&[cmd, "--cert", &p(dir, cert), "--key", &p(dir, key)]);
}

/// A device certificate `name` signed by the CA `ca` (files `<ca>.pem`, `<ca>-key.pem`).
fn device(dir: &Path, ca: &str, name: &str, days: i64) {
    run(&[
        "gen-device-cert",
        "--ca-cert",
        &p(dir, &format!("{ca}.pem")),
        "--ca-key",
        &p(dir, &format!("{ca}-key.pem")),
        "--device",
        name,
        "--cert",
        &p(dir, &format!("{name}.pem")),
        "--key",
        &p(dir, &format!("{name}-key.pem")),
        &format!("--days={days}"),
    ]);
}

struct Worker {
    child: Child,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real worker requiring certificates of `device-ca.pem`, with `extra` appended to its
/// configuration (after `[runtime]`: start it with a section header).
fn start_worker(dir: &Path, extra: &str) -> Worker {
    let config = dir.join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmodels_dir = \"{}\"\nlog_level = \"info\"\n\
             [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nclient_ca = \"device-ca.pem\"\n\
             revoked = \"revoked.txt\"\n[runtime]\nworkers = 1\n{extra}",
            packages_dir().display()
        ),
    )
    .expect("config");
    let (mut child, addr) = common::serve(&config, true);
    let mut stderr = child.stderr.take().expect("stderr");
    let (log_tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = log_tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    Worker { child, addr, log }
}

/// A client trusting the worker's certificate, presenting `identity` (cert, key) if given.
fn client(dir: &Path, identity: Option<&str>) -> quinn::Endpoint {
    let identity = identity.map(|name| {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .expect("pem")
                .map(|c| c.expect("cert"))
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-key.pem"))).expect("key");
        (chain, key)
    });
    client_presenting(dir, identity)
}

/// [`client`] presenting a certificate chain and key given as DER.
fn client_presenting(
    dir: &Path,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("cert.pem")).expect("pem") {
        roots.add(c.expect("cert")).expect("trust");
    }
    let builder = rustls::ClientConfig::builder_with_provider(jmdc_cloud::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots);
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
    };
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// Whether a probe gets its answer over `conn` within 10 s.
async fn probe(conn: &quinn::Connection) -> bool {
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let probe = protocol::encode_probe_request(&ProbeRequest {
            probe_id: 1,
            reply_bytes: 16,
            padding_len: 16,
        })
        .ok()?;
        send.write_all(&probe).await.ok()?;
        send.finish().ok()?;
        let reply = recv.read_to_end(1 << 20).await.ok()?;
        matches!(
            protocol::decode_server_message(&reply),
            Ok(ServerMessage::ProbeReply(_))
        )
        .then_some(())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// A connection from `endpoint` to the worker, within 10 s.
async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Option<quinn::Connection> {
    let connecting = endpoint.connect(addr, "localhost").ok()?;
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .ok()?
        .ok()
}

/// Whether a probe gets its answer over a connection made with `identity`.
async fn served(dir: &Path, addr: SocketAddr, identity: Option<&str>) -> bool {
    served_by(client(dir, identity), addr).await
}

/// Whether a probe gets its answer over a connection from `endpoint`.
async fn served_by(endpoint: quinn::Endpoint, addr: SocketAddr) -> bool {
    let ok = match connect(&endpoint, addr).await {
        Some(conn) => {
            let ok = probe(&conn).await;
            conn.close(0u32.into(), b"done");
            ok
        }
        None => false,
    };
    endpoint.close(0u32.into(), b"done");
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_current_devices_of_the_device_ca_are_served() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    pair(dir, "gen-cert", "cert.pem", "key.pem");
    for ca in ["device-ca", "other-ca"] {
        pair(
            dir,
            "gen-ca",
            &format!("{ca}.pem"),
            &format!("{ca}-key.pem"),
        );
    }
    device(dir, "device-ca", "pi-good", 30);
    device(dir, "device-ca", "pi-lost", 30);
    device(dir, "device-ca", "pi-expired", -1);
    device(dir, "other-ca", "pi-foreign", 30);
    std::fs::write(dir.join("revoked.txt"), "# revoked devices\n").expect("deny list");
    let worker = start_worker(dir, "");

    assert!(
        served(dir, worker.addr, Some("pi-good")).await,
        "good device refused"
    );
    assert!(
        served(dir, worker.addr, Some("pi-lost")).await,
        "not revoked yet"
    );
    assert!(
        !served(dir, worker.addr, None).await,
        "served without a certificate"
    );
    assert!(
        !served(dir, worker.addr, Some("pi-foreign")).await,
        "served with another CA's certificate"
    );
    assert!(
        !served(dir, worker.addr, Some("pi-expired")).await,
        "served with an expired certificate"
    );

    // Revoke pi-lost: append its fingerprint, SIGHUP, the process stays up.
    let printed = run(&[
        "fingerprint",
        "--cert",
        &p(dir, "pi-lost.pem"),
        "--revoke",
        &p(dir, "revoked.txt"),
    ]);
    assert!(printed.contains("pi-lost"), "{printed}");
    let status = Command::new("kill")
        .args(["-HUP", &worker.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut log = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.contains("revocation list re-read") && std::time::Instant::now() < deadline {
        if let Ok(chunk) = worker.log.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&chunk);
        }
    }
    assert!(log.contains("revocation list re-read"), "{log}");
    assert!(
        !served(dir, worker.addr, Some("pi-lost")).await,
        "revoked device served"
    );
    // Its certificate with the other valid ECDSA signature (another fingerprint, made without
    // the CA's key) is refused too; it got in before the deny list checked these twins.
    let lost = CertificateDer::pem_file_iter(dir.join("pi-lost.pem"))
        .expect("pem")
        .next()
        .expect("a certificate")
        .expect("cert");
    // Of its twins (one per ECDSA curve) the one of the CA's curve verifies when not revoked.
    let unrevoked =
        jmdc_cloud::identity::client_verifier(&dir.join("device-ca.pem"), Arc::default())
            .expect("verifier");
    let twin = jmdc_cloud::identity::ecdsa_twins(lost.as_ref())
        .into_iter()
        .find(|t| {
            unrevoked
                .verify_client_cert(&CertificateDer::from(t.as_slice()), &[], UnixTime::now())
                .is_ok()
        })
        .expect("a twin that verifies");
    let key = PrivateKeyDer::from_pem_file(dir.join("pi-lost-key.pem")).expect("key");
    let twin_client = client_presenting(dir, Some((vec![CertificateDer::from(twin)], key)));
    assert!(
        !served_by(twin_client, worker.addr).await,
        "revoked device served with its certificate's other ECDSA signature"
    );
    assert!(
        served(dir, worker.addr, Some("pi-good")).await,
        "good device refused after reload"
    );

    // The worker logs the proven identity of each connection: read its log until both lines are
    // there (at most 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(log.contains("device=pi-good") && log.contains("handshake failed")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match worker.log.recv_timeout(left) {
            Ok(chunk) => log.push_str(&chunk),
            Err(_) => break,
        }
    }
    assert!(log.contains("device=pi-good"), "{log}");
    assert!(log.contains("handshake failed"), "{log}");
}

/// With `max_connections_per_device = 2`, a device's third connection (same certificate, same
/// address, well under the per-address cap) is closed after its handshake with the device-limit
/// reason while its first two are served, another device is served, and a place freed by
/// closing one is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_connection_cap_is_refused_while_others_are_served() {
    const PER_DEVICE: usize = 2;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    pair(dir, "gen-cert", "cert.pem", "key.pem");
    pair(dir, "gen-ca", "device-ca.pem", "device-ca-key.pem");
    device(dir, "device-ca", "pi-busy", 30);
    device(dir, "device-ca", "pi-other", 30);
    std::fs::write(dir.join("revoked.txt"), "").expect("deny list");
    let worker = start_worker(
        dir,
        &format!("[limits]\nmax_connections_per_device = {PER_DEVICE}\n"),
    );
    let whole = async {
        let busy = client(dir, Some("pi-busy"));
        let mut held = Vec::new();
        for i in 0..PER_DEVICE {
            let conn = connect(&busy, worker.addr)
                .await
                .unwrap_or_else(|| panic!("pi-busy connection {} not established", i + 1));
            assert!(
                probe(&conn).await,
                "pi-busy connection {} not served",
                i + 1
            );
            held.push(conn);
        }

        // One more with the same certificate: the handshake succeeds, then the worker closes it.
        let refused = match connect(&busy, worker.addr).await {
            Some(conn) => tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .expect("the connection over the device cap is closed within 10 s"),
            None => panic!("the connection over the cap did not complete its handshake"),
        };
        match &refused {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    close.error_code,
                    jmdc_cloud::server::DEVICE_LIMIT_CODE.into(),
                    "{refused}"
                );
                assert_eq!(
                    &close.reason[..],
                    jmdc_cloud::server::DEVICE_LIMIT_REASON,
                    "{refused}"
                );
            }
            other => panic!("closed otherwise than by the device cap: {other}"),
        }

        // The device's first connections keep working; another device is served.
        for conn in &held {
            assert!(
                probe(conn).await,
                "a held pi-busy connection stopped working"
            );
        }
        assert!(
            served(dir, worker.addr, Some("pi-other")).await,
            "another device was refused while pi-busy was at its cap"
        );

        // Closing one of pi-busy's connections frees a place (the worker notices the close
        // asynchronously: a few tries).
        held.remove(0).close(0u32.into(), b"done");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut again = false;
        while !again && tokio::time::Instant::now() < deadline {
            again = served(dir, worker.addr, Some("pi-busy")).await;
            if !again {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(again, "pi-busy refused after one of its connections closed");
        for conn in held {
            conn.close(0u32.into(), b"done");
        }
        busy.close(0u32.into(), b"done");
    };
    tokio::time::timeout(Duration::from_secs(90), whole)
        .await
        .expect("the test finishes within 90 s");

    let mut log = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !log.contains("device=pi-busy") || !log.contains("PerDevice") {
        if std::time::Instant::now() > deadline {
            break;
        }
        if let Ok(chunk) = worker.log.recv_timeout(Duration::from_millis(100)) {
            log.push_str(&chunk);
        }
    }
    assert!(
        log.lines()
            .any(|l| l.contains("connection refused") && l.contains("PerDevice")),
        "{log}"
    );
}

/// `check-config` checks the files the configuration names and says which key points at each
/// missing one; `--syntax-only` does not.
#[test]
fn check_config_names_the_key_of_each_missing_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    pair(dir, "gen-cert", "cert.pem", "key.pem");
    pair(dir, "gen-ca", "device-ca.pem", "device-ca-key.pem");
    std::fs::write(dir.join("revoked.txt"), "").expect("deny list");
    let config = dir.join("cloud.toml");
    let write = |ca: &str, revoked: &str, models: &str| {
        std::fs::write(
            &config,
            format!(
                "models_dir = \"{models}\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
                 client_ca = \"{ca}\"\nrevoked = \"{revoked}\"\n"
            ),
        )
        .expect("config");
    };
    let check = |flags: &[&str]| {
        let out = Command::new(BIN)
            .arg("check-config")
            .args(flags)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("check-config");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let models = packages_dir().display().to_string();
    write("device-ca.pem", "revoked.txt", &models);
    let (code, text) = check(&[]);
    assert_eq!(code, Some(0), "{text}");
    write(
        "missing-ca.pem",
        "missing-revoked.txt",
        "/nonexistent/models",
    );
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    for key in ["tls.client_ca = ", "tls.revoked = ", "models_dir = "] {
        assert!(text.contains(key), "{key} not named:\n{text}");
    }
    let (code, text) = check(&["--syntax-only"]);
    assert_eq!(code, Some(0), "{text}");
}
