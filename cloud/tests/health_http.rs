//! The health listener on real sockets: `/readyz` turns 200 once the accept loop serves, the
//! metrics move after real requests over QUIC (encoded with jmdc-core's protocol), `/readyz`
//! answers 503 while the worker drains after shutdown, and the binary serves `[health] listen`
//! from its config file. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use jmdc_cloud::config::{ClientAuth, CloudConfig, LimitsSection, RuntimeSection, TlsSection};
use jmdc_cloud::{tls, CloudServer, HealthOptions, HealthServer, TailEngine};
use jmdc_core::package::ModelPackage;
use jmdc_core::protocol::{self, InferRequest, PayloadKind, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn packages_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cloud/ has a parent")
        .join("models/packages")
}

/// One GET over a fresh TCP connection: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("read");
        text
    };
    let text = tokio::time::timeout(T, work).await.expect("answer in time");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{head}"
    );
    (code, body.to_owned())
}

/// The value of an unlabelled-or-labelled sample line `name value`.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
}

/// Polls `path` until it answers `code` (bounded by [`T`]).
async fn wait_for(addr: SocketAddr, path: &str, code: u16) -> String {
    let deadline = Instant::now() + T;
    loop {
        let (c, body) = get(addr, path).await;
        if c == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still {c} ({body}), wanted {code}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client_config(ca: &Path) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read cert") {
        roots.add(cert.expect("pem")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic crypto");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Sends one encoded message on a fresh stream and decodes the reply.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
        send.write_all(bytes).await.expect("send");
        send.finish().expect("finish");
        let reply = recv
            .read_to_end(protocol::MAX_RESPONSE_BYTES)
            .await
            .expect("reply");
        protocol::decode_response(&reply).expect("decode reply")
    };
    tokio::time::timeout(T, work).await.expect("reply in time")
}

fn gen_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    tls::generate_self_signed(&["localhost".into()], &cert, &key).expect("gen cert");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_start_metrics_move_and_503_while_draining() {
    jmdc_core::runtime::init_onnxruntime(None)
        .expect("ONNX Runtime not found: run scripts/fetch-onnxruntime.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = gen_cert(dir.path());
    let cfg = CloudConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls: TlsSection {
            cert: cert.clone(),
            key,
            client_auth: ClientAuth::Off,
            client_ca: None,
            revoked: None,
        },
        models_dir: packages_dir(),
        runtime: RuntimeSection {
            workers: 1,
            ..RuntimeSection::default()
        },
        batching: Default::default(),
        limits: LimitsSection::default(),
        log_level: "warn".into(),
        health: None,
    };
    let engine = TailEngine::load(&cfg.models_dir, &cfg.engine_options()).expect("models load");
    let server = CloudServer::bind(&cfg, Arc::new(engine)).expect("bind");
    let quic_addr = server.local_addr().expect("local addr");
    let view = server.health_view();
    let stats = server.stats();
    let health = HealthServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        view,
        HealthOptions::default(),
    )
    .await
    .expect("health listener");
    let http = health.local_addr();

    // Bound but not serving yet: neither live nor ready.
    let (code, body) = get(http, "/readyz").await;
    assert_eq!((code, body.as_str()), (503, "not_serving\n"));
    assert_eq!(get(http, "/healthz").await.0, 503);
    assert_eq!(get(http, "/nope").await.0, 404);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server.serve_with_drain(
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(20),
    ));
    assert_eq!(wait_for(http, "/readyz", 200).await, "ready\n");
    assert_eq!(get(http, "/healthz").await, (200, "ok\n".to_owned()));
    let before = get(http, "/metrics").await.1;
    assert_eq!(sample(&before, "jmdc_cloud_ready"), 1);
    assert_eq!(sample(&before, "jmdc_cloud_frames_served_total"), 0);
    assert_eq!(
        sample(&before, "jmdc_cloud_request_duration_seconds_count"),
        0
    );

    // Real frames over QUIC: one served, one refused as an unknown model.
    let package = ModelPackage::load(&packages_dir().join("alexnet-cifar10")).expect("package");
    let variant = package
        .variant_names()
        .next()
        .expect("a variant")
        .to_owned();
    let pixels: usize = package.input_shape().iter().product();
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(client_config(&cert));
    let conn = tokio::time::timeout(
        T,
        endpoint
            .connect(quic_addr, "localhost")
            .expect("connect start"),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let mut request = InferRequest {
        device_id: "test-device".into(),
        frame_id: 7,
        model: package.name().to_owned(),
        variant,
        split: 0,
        payload_kind: PayloadKind::Image,
        payload: vec![128; pixels],
    };
    match exchange(&conn, &protocol::encode_request(&request).expect("encode")).await {
        Response::Result(r) => assert_eq!(r.frame_id, 7),
        other => panic!("expected a result, got {other:?}"),
    }
    request.model = "no-such-model".into();
    match exchange(&conn, &protocol::encode_request(&request).expect("encode")).await {
        Response::Error(e) => assert_eq!(e.kind, protocol::ErrorKind::UnknownModel),
        other => panic!("expected an error, got {other:?}"),
    }
    let after = get(http, "/metrics").await.1;
    println!("GET /metrics after two frames:\n{after}");
    assert_eq!(sample(&after, "jmdc_cloud_frames_served_total"), 1);
    // The served frame ran in one batch (the refused one never reached the queue).
    assert_eq!(sample(&after, "jmdc_cloud_batches_total"), 1);
    assert_eq!(sample(&after, "jmdc_cloud_batched_frames_total"), 1);
    assert_eq!(sample(&before, "jmdc_cloud_merged_ranges_ready"), 0);
    assert_eq!(sample(&after, "jmdc_cloud_frames_failed_total"), 1);
    assert_eq!(
        sample(&after, "jmdc_cloud_errors_total{kind=\"unknown_model\"}"),
        1
    );
    assert_eq!(sample(&after, "jmdc_cloud_connections_total"), 1);
    assert_eq!(sample(&after, "jmdc_cloud_connections_open"), 1);
    assert_eq!(
        sample(&after, "jmdc_cloud_request_duration_seconds_count"),
        2
    );
    assert_eq!(
        sample(
            &after,
            "jmdc_cloud_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        2
    );

    // Hold a request in flight (a stream not finished), then begin shutdown: the drain waits for
    // it, and meanwhile /readyz says 503 draining while /healthz stays 200.
    // First let the answered streams end (the worker counts a stream until the peer has
    // acknowledged the whole answer), so the count below is the held stream alone.
    let deadline = Instant::now() + T;
    while stats.in_flight.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "answered streams still in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(b"JMD").await.expect("partial request");
    let deadline = Instant::now() + T;
    while stats.in_flight.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "held stream never in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(()).expect("server still serving");
    assert_eq!(wait_for(http, "/readyz", 503).await, "draining\n");
    println!("GET /readyz while draining: 503 draining");
    assert_eq!(get(http, "/healthz").await.0, 200, "draining is alive");
    let draining = get(http, "/metrics").await.1;
    assert_eq!(sample(&draining, "jmdc_cloud_draining"), 1);
    assert_eq!(sample(&draining, "jmdc_cloud_ready"), 0);
    assert_eq!(sample(&draining, "jmdc_cloud_requests_in_flight"), 1);
    assert!(!serve.is_finished(), "drain ended with a request in flight");

    // A stream opened after the drain began is not waited for (under steady traffic new streams
    // would keep the drain from ever ending): hold one unfinished, it does not count.
    let (mut late_send, _late_recv) = conn.open_bi().await.expect("open late stream");
    late_send
        .write_all(b"JMD")
        .await
        .expect("partial late request");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats.in_flight.load(Ordering::SeqCst),
        1,
        "only the stream from before the drain is waited for"
    );

    // Let the held request end (it is malformed: three bytes); the drain then completes.
    send.finish().expect("finish held stream");
    let reply = tokio::time::timeout(T, recv.read_to_end(protocol::MAX_RESPONSE_BYTES))
        .await
        .expect("reply in time")
        .expect("reply");
    match protocol::decode_response(&reply).expect("decode") {
        Response::Error(e) => assert_eq!(e.kind, protocol::ErrorKind::Malformed),
        other => panic!("expected malformed, got {other:?}"),
    }
    tokio::time::timeout(T, serve)
        .await
        .expect("drain finished in time")
        .expect("serve task");
    let end = get(http, "/metrics").await.1;
    assert_eq!(
        sample(&end, "jmdc_cloud_errors_total{kind=\"malformed\"}"),
        1
    );
    assert_eq!(sample(&end, "jmdc_cloud_requests_in_flight"), 0);
    endpoint.close(0u32.into(), b"");
}

#[tokio::test]
async fn oversized_and_slow_requests_are_bounded() {
    let hb = Arc::new(jmdc_cloud::health::Heartbeat::default());
    hb.beat();
    let view = jmdc_cloud::HealthView::new(hb, Arc::default(), Arc::default());
    let options = HealthOptions {
        request_timeout: Duration::from_millis(300),
        max_request_bytes: 512,
        max_connections: 4,
    };
    let health = HealthServer::start("127.0.0.1:0".parse().expect("addr"), view, options)
        .await
        .expect("listener");
    let addr = health.local_addr();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let big = format!("GET /readyz HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(4096));
    s.write_all(big.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut out))
        .await
        .expect("in time")
        .expect("read");
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");

    // A client that sends nothing is dropped after the request timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(T, silent.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "no response to a silent client");
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(get(addr, "/readyz").await.0, 200, "still serving");
}

/// The real binary with `[health] listen` in its config: prints the bound address, answers
/// `/readyz` 200, exits 0 on SIGTERM. A port already taken is a start-up error naming the key.
#[test]
fn binary_serves_health_from_config_and_names_a_taken_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    gen_cert(dir.path());
    let config = dir.path().join("cloud.toml");
    let write = |health: &str| {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nmodels_dir = \"{}\"\nlog_level = \"info\"\n\
             [tls]\nclient_auth = \"off\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[runtime]\nworkers = 1\n\
             [health]\nlisten = \"{health}\"\n",
            packages_dir().display()
        );
        std::fs::write(&config, text).expect("write config");
    };
    write("127.0.0.1:0");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jmdc-cloud"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jmdc-cloud");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("jmdc-cloud health on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(a) => a.parse().expect("address"),
        Err(e) => {
            let _ = child.kill();
            panic!("no health address line: {e}");
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = rt.block_on(wait_for(addr, "/readyz", 200));
    assert_eq!(body, "ready\n");

    // While it runs, a second worker configured for the same health port must refuse to start.
    write(&addr.to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_jmdc-cloud"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("second worker");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second worker started: {err}");
    assert!(
        err.contains(&format!("health.listen: cannot listen on {addr}")),
        "{err}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("jmdc-cloud did not stop within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
