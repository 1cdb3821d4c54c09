//! The real `jmdc-cloud serve` against a slowloris from one address while a device on another
//! address keeps sending frames: the worker's memory stays bounded, the device is served
//! throughout, every stalled stream is ended (refused `Overloaded` or reset at the read timeout),
//! a connection over the per-address cap is refused, and idle connections are closed whatever
//! keep-alives they send. Client authentication is off here: the bounds must hold against any
//! client that completes a handshake, a device with a valid certificate included. Every wait is
//! bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use jmdc_core::protocol::{self, ErrorKind, Response};
use no_auth::Worker;

mod common;
mod no_auth;

/// Budget of request bytes buffered at once (MiB) and the read timeout given to the worker.
const BUDGET_MIB: u64 = 32;
const READ_TIMEOUT: Duration = Duration::from_millis(1500);
const IDLE_S: u64 = 3;
const PER_ADDRESS: usize = 4;
/// The slowloris: connections × streams, each sending this much of a request and stalling.
const STREAMS_PER_CONNECTION: usize = 60;
const STALLED_BYTES: usize = 1 << 20;

/// Resident memory of the worker, bytes (`VmRSS` of /proc/PID/status).
fn rss(worker: &Worker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.child.id()))
        .expect("worker status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// A client endpoint bound to `local` (a loopback address) trusting the worker's certificate,
/// sending keep-alives every 500 ms.
fn client(local: &str, cert: &Path) -> quinn::Endpoint {
    no_auth::client(
        local,
        cert,
        protocol::ALPN,
        Some(Duration::from_millis(500)),
    )
}

async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(addr, "localhost").expect("connect"),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

fn frame(frame_id: u64) -> Vec<u8> {
    protocol::encode_request(&no_auth::image_request("good-device", frame_id)).expect("encode")
}

async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    protocol::decode_response(&no_auth::exchange(conn, bytes).await).expect("decodable reply")
}

/// How a stalled stream ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Ended {
    Overloaded,
    Reset,
    Other,
}

/// Sends `STALLED_BYTES` of a request on a new stream, never finishes it, and waits (bounded)
/// for the worker to end it.
async fn stall(conn: quinn::Connection) -> Ended {
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return Ended::Other;
    };
    let mut head = frame(u64::MAX);
    head.resize(STALLED_BYTES, 0);
    // The worker may stop reading (refused) before all of it is sent.
    let _ = tokio::time::timeout(Duration::from_secs(10), send.write_all(&head)).await;
    match tokio::time::timeout(
        Duration::from_secs(15),
        recv.read_to_end(protocol::MAX_RESPONSE_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => match protocol::decode_response(&bytes) {
            Ok(Response::Error(e)) if e.kind == ErrorKind::Overloaded => Ended::Overloaded,
            _ => Ended::Other,
        },
        Ok(Err(_)) => Ended::Reset,
        Err(_) => Ended::Other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_leaves_memory_bounded_and_devices_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = Worker::start(
        dir.path(),
        &format!(
            "[limits]\nmax_buffered_mib = {BUDGET_MIB}\nrequest_read_timeout_ms = {}\n\
             idle_timeout_s = {IDLE_S}\nmax_connections_per_address = {PER_ADDRESS}\n",
            READ_TIMEOUT.as_millis()
        ),
    );
    let cert = dir.path().join("cert.pem");

    let device = client("127.0.0.2:0", &cert);
    let device_conn = connect(&device, worker.addr).await;
    match exchange(&device_conn, &frame(0)).await {
        Response::Result(r) => assert_eq!(r.scores.len(), 10),
        Response::Error(e) => panic!("first frame refused: {e:?}"),
    }
    let baseline = rss(&worker);

    let attacker = client("127.0.0.1:0", &cert);
    let mut conns = Vec::new();
    for _ in 0..PER_ADDRESS {
        conns.push(connect(&attacker, worker.addr).await);
    }
    // One connection over the per-address cap is refused.
    let over = tokio::time::timeout(
        Duration::from_secs(10),
        attacker.connect(worker.addr, "localhost").expect("connect"),
    )
    .await
    .expect("refusal in time");
    assert!(
        over.is_err(),
        "a connection over the per-address cap was admitted"
    );

    let mut stalls = Vec::new();
    for conn in &conns {
        for _ in 0..STREAMS_PER_CONNECTION {
            stalls.push(tokio::spawn(stall(conn.clone())));
        }
    }
    // While the attack runs: the device's frames are served, and the worker's memory is sampled.
    let started = Instant::now();
    let mut peak = baseline;
    let mut served = 0u64;
    while started.elapsed() < READ_TIMEOUT * 3 {
        match exchange(&device_conn, &frame(served + 1)).await {
            Response::Result(_) => served += 1,
            Response::Error(e) => panic!("device refused during the attack: {e:?}"),
        }
        peak = peak.max(rss(&worker));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ended = Vec::new();
    for s in stalls {
        ended.push(
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .expect("stalled stream ended")
                .expect("task"),
        );
    }
    peak = peak.max(rss(&worker));
    let overloaded = ended.iter().filter(|e| **e == Ended::Overloaded).count();
    let reset = ended.iter().filter(|e| **e == Ended::Reset).count();
    let unbounded = (PER_ADDRESS * STREAMS_PER_CONNECTION * STALLED_BYTES) as u64;
    println!(
        "worker RSS {:.0} MiB before, peak {:.0} MiB during {} stalled streams of {} MiB \
         ({:.0} MiB if all were buffered); {served} device frames served meanwhile; \
         {overloaded} refused Overloaded, {reset} reset at the read timeout",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        ended.len(),
        STALLED_BYTES >> 20,
        unbounded as f64 / 1048576.0
    );
    assert_eq!(
        overloaded + reset,
        ended.len(),
        "every stalled stream is refused or reset: {ended:?}"
    );
    assert!(overloaded > 0 && reset > 0, "{overloaded} / {reset}");
    assert!(served >= 10, "only {served} device frames in the attack");
    // The budget plus what quinn and the allocator keep around it.
    let bound = (BUDGET_MIB + 64) << 20;
    assert!(
        peak.saturating_sub(baseline) < bound,
        "worker grew by {} MiB (bound {} MiB)",
        peak.saturating_sub(baseline) >> 20,
        bound >> 20
    );

    // Idle connections are closed after idle_timeout_s, keep-alives notwithstanding.
    let idle_since = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(IDLE_S + 5), conns[0].closed())
        .await
        .expect("idle connection closed in time");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(&c.reason[..], b"idle"),
        other => panic!("closed for another reason: {other}"),
    }
    assert!(idle_since.elapsed() <= Duration::from_secs(IDLE_S + 5));
    device.close(0u32.into(), b"done");
    attacker.close(0u32.into(), b"done");
}
