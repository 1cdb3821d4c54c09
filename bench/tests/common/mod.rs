//! Helpers shared by the link emulator tests: loopback UDP echo and sink servers, a paced sender.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Timing tests share two cores: run them one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every test body runs under this limit.
pub const TEST_LIMIT: Duration = Duration::from_secs(30);

/// A loopback address with a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A UDP server that sends every datagram back to its sender. Aborted when the handle is dropped
/// by the caller's `abort()`.
pub async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind(loopback()).await.expect("bind echo server");
    let addr = socket.local_addr().expect("echo address");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    (addr, task)
}

/// Arrival times and sizes of the datagrams a sink received.
pub type Arrivals = Arc<Mutex<Vec<(Instant, usize)>>>;

/// A UDP server that records each datagram's arrival time and size (at most `cap` entries).
pub async fn sink_server(cap: usize) -> (SocketAddr, Arrivals, JoinHandle<()>) {
    let socket = UdpSocket::bind(loopback()).await.expect("bind sink");
    let addr = socket.local_addr().expect("sink address");
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(cap)));
    let record = arrivals.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok(len) = socket.recv(&mut buf).await else {
                continue;
            };
            let now = Instant::now();
            let mut list = record.lock().unwrap_or_else(PoisonError::into_inner);
            if list.len() < cap {
                list.push((now, len));
            }
        }
    });
    (addr, arrivals, task)
}

/// Snapshot of the arrivals.
pub fn arrivals(a: &Arrivals) -> Vec<(Instant, usize)> {
    a.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Received rate in bit/s over `[from, to)` measured from `origin`.
pub fn rate_between(list: &[(Instant, usize)], origin: Instant, from: f64, to: f64) -> f64 {
    let a = origin + Duration::from_secs_f64(from);
    let b = origin + Duration::from_secs_f64(to);
    let bytes: usize = list
        .iter()
        .filter(|(t, _)| *t >= a && *t < b)
        .map(|(_, n)| n)
        .sum();
    bytes as f64 * 8.0 / (to - from)
}

/// Sends `size`-byte datagrams to `target` at `rate_bps` (paced per millisecond) for `duration`
/// from one socket; returns how many were sent.
pub async fn blast(target: SocketAddr, rate_bps: f64, size: usize, duration: Duration) -> u64 {
    let socket = UdpSocket::bind(loopback()).await.expect("bind sender");
    let payload = vec![0xA5u8; size];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate_bps / (size as f64 * 8.0)) as u64;
        while sent < due {
            socket
                .send_to(&payload, target)
                .await
                .expect("send to the relay");
            sent += 1;
        }
    }
    sent
}

/// Waits (bounded) until `check` holds, polling every 5 ms.
pub async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check()
}

/// Median of a non-empty list.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
