//! The link's state machine on virtual time: the same `Core` and `Driver` as over QUIC, with an
//! in-memory [`Connector`] whose endpoints accept, refuse at once, or never answer, and whose
//! connections end when a test says so. tokio's clock is paused (`start_paused`), so every wait
//! and timeout is exact: a test asserts the millisecond at which each attempt and change happens.
//! The same behaviour over real QUIC on loopback is `daemon/tests/link_reconnect.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::driver::preference_order;
use super::transport::{Closed, Connection, Connector, QuicConnector};
use super::*;
use crate::backoff::{equal_jitter, Backoff};

const A: &str = "127.0.0.1:4001";
const B: &str = "127.0.0.1:4002";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings() -> LinkSettings {
    LinkSettings {
        endpoints: vec!["127.0.0.1:1".parse().expect("addr")],
        server_name: "localhost".into(),
        ca_cert: PathBuf::from("/nonexistent/ca.pem"),
        identity: None,
        connect_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(800),
        fast_retry_for: Duration::ZERO,
        failures_before_reconnect: 3,
    }
}

/// What an endpoint of the in-memory network does with a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// Completes the handshake at once.
    Accepts,
    /// Refuses at once (a worker that is down: port unreachable).
    Refuses,
    /// Never answers: the attempt fails after `connect_timeout` (a silent path).
    Silent,
}

/// One attempt: when (since the test's start), where, whether it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    at_ms: u128,
    addr: SocketAddr,
    ok: bool,
}

#[derive(Debug, Default)]
struct NetState {
    endpoints: HashMap<SocketAddr, Endpoint>,
    attempts: Vec<Attempt>,
    conns: Vec<Arc<FakeConn>>,
}

/// The in-memory network, shared by the test and the connector.
#[derive(Debug)]
struct Net {
    start: Instant,
    state: Mutex<NetState>,
    attempted: Notify,
}

impl Net {
    fn new(endpoints: &[(&str, Endpoint)]) -> Arc<Net> {
        let net = Arc::new(Net {
            start: Instant::now(),
            state: Mutex::default(),
            attempted: Notify::new(),
        });
        for (a, e) in endpoints {
            net.set(a, *e);
        }
        net
    }

    fn set(&self, a: &str, e: Endpoint) {
        lock(&self.state).endpoints.insert(addr(a), e);
    }

    fn elapsed_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    fn attempts(&self) -> Vec<Attempt> {
        lock(&self.state).attempts.clone()
    }

    /// The times of the attempts, in ms.
    fn attempt_times(&self) -> Vec<u128> {
        self.attempts().iter().map(|a| a.at_ms).collect()
    }

    /// Waits (virtual time) until at least `n` attempts were made.
    async fn wait_attempts(&self, n: usize) {
        loop {
            let notified = self.attempted.notified();
            if lock(&self.state).attempts.len() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Ends every open connection to `a` the way the transport would report it.
    fn end_connections(&self, a: &str, closed: Closed) {
        for c in lock(&self.state).conns.iter() {
            if c.addr == addr(a) {
                c.end(closed.clone());
            }
        }
    }

    /// Connections to `a` still open.
    fn open(&self, a: &str) -> usize {
        lock(&self.state)
            .conns
            .iter()
            .filter(|c| c.addr == addr(a) && c.ended.borrow().is_none())
            .count()
    }
}

/// A connection of the in-memory network.
#[derive(Debug)]
struct FakeConn {
    addr: SocketAddr,
    ended: watch::Sender<Option<Closed>>,
}

impl FakeConn {
    fn end(&self, closed: Closed) {
        self.ended.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(closed);
                true
            } else {
                false
            }
        });
    }
}

/// The link's connections are `Arc`s of the network's, so the test sees what the link closed.
#[derive(Debug)]
struct Conn(Arc<FakeConn>);

impl Connection for Conn {
    fn closed(&self) -> impl Future<Output = Closed> + Send {
        let mut rx = self.0.ended.subscribe();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(closed) => closed.clone().unwrap_or_else(gone),
                Err(_) => gone(),
            }
        }
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        self.0.end(Closed {
            idle: false,
            reason: "closed by the link".into(),
        });
        std::future::ready(())
    }

    fn wait_idle(&self, _limit: Duration) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }
}

fn gone() -> Closed {
    Closed {
        idle: false,
        reason: "network gone".into(),
    }
}

#[derive(Debug)]
struct FakeConnector(Arc<Net>);

impl Connector for FakeConnector {
    type Conn = Conn;
    type Trust = ();

    fn trust(&self, _settings: &LinkSettings) -> Result<(), LinkError> {
        Ok(())
    }

    fn same_trust(_a: &(), _b: &()) -> bool {
        true
    }

    fn connect(
        &self,
        settings: &LinkSettings,
        _trust: &(),
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Conn, String>> + Send {
        let net = self.0.clone();
        let timeout = settings.connect_timeout;
        async move {
            let at_ms = net.elapsed_ms();
            let behaviour = lock(&net.state)
                .endpoints
                .get(&addr)
                .copied()
                .unwrap_or(Endpoint::Refuses);
            let result = match behaviour {
                Endpoint::Accepts => {
                    let (ended, _) = watch::channel(None);
                    let conn = Arc::new(FakeConn { addr, ended });
                    lock(&net.state).conns.push(conn.clone());
                    Ok(Conn(conn))
                }
                Endpoint::Refuses => Err(format!("{addr}: refused")),
                Endpoint::Silent => {
                    tokio::time::sleep(timeout).await;
                    Err(format!("{addr}: no handshake within {timeout:?}"))
                }
            };
            lock(&net.state).attempts.push(Attempt {
                at_ms,
                addr,
                ok: result.is_ok(),
            });
            net.attempted.notify_waiters();
            result
        }
    }

    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

fn fake_settings(endpoints: &[&str]) -> LinkSettings {
    LinkSettings {
        endpoints: endpoints.iter().map(|a| addr(a)).collect(),
        backoff_max: Duration::from_secs(5),
        ..settings()
    }
}

/// A link over `net` whose jitter always draws 1.0, so every wait is the full backoff.
fn start(net: &Arc<Net>, s: LinkSettings) -> Core<FakeConnector> {
    Core::start(s, FakeConnector(net.clone()), Jitter::fixed(1.0)).unwrap()
}

/// Waits for the next change of the published connection; the virtual ms it happened at and
/// where the new connection goes (`None`: disconnected).
async fn next_change(
    net: &Net,
    rx: &mut watch::Receiver<Option<Arc<Conn>>>,
) -> (u128, Option<SocketAddr>) {
    rx.changed().await.unwrap();
    let to = rx.borrow_and_update().as_ref().map(|c| c.0.addr);
    (net.elapsed_ms(), to)
}

#[tokio::test(start_paused = true)]
async fn fails_over_at_once_and_fails_back_after_the_interval() {
    let net = Net::new(&[(A, Endpoint::Refuses), (B, Endpoint::Accepts)]);
    let link = start(&net, fake_settings(&[A, B]));
    let mut rx = link.subscribe();
    assert_eq!(next_change(&net, &mut rx).await, (0, Some(addr(B))));
    assert_eq!(
        net.attempts(),
        vec![
            Attempt {
                at_ms: 0,
                addr: addr(A),
                ok: false
            },
            Attempt {
                at_ms: 0,
                addr: addr(B),
                ok: true
            },
        ]
    );
    let s = link.stats();
    assert_eq!((s.connects, s.failovers, s.failbacks), (1, 1, 0));
    assert_eq!(s.state, LinkState::Connected);

    // A comes back; the link tries it every max(backoff_max, 1 s) = 5 s and moves at 5,000 ms.
    net.set(A, Endpoint::Accepts);
    assert_eq!(next_change(&net, &mut rx).await, (5_000, Some(addr(A))));
    let s = link.stats();
    assert_eq!((s.connects, s.failbacks, s.losses), (2, 1, 0));
    assert_eq!(s.endpoint, Some(addr(A)));
    // The replaced connection was drained and closed, not lost.
    tokio::task::yield_now().await;
    assert_eq!(net.open(B), 0);
    assert_eq!(net.open(A), 1);
    link.close().await;
    assert_eq!(net.open(A), 0, "close ends the connection");
    assert_eq!(link.stats().state, LinkState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_rounds_back_off_doubling_to_the_maximum() {
    let net = Net::new(&[(A, Endpoint::Refuses), (B, Endpoint::Refuses)]);
    let s = LinkSettings {
        backoff_initial: ms(100),
        backoff_max: ms(800),
        fast_retry_for: Duration::ZERO,
        ..fake_settings(&[A, B])
    };
    let link = start(&net, s);
    // Frames do not wait: nothing is published, and a start-up wait ends at its limit.
    assert!(link.current().is_none());
    assert!(link.wait_connected(ms(250)).await.is_none());
    assert_eq!(net.elapsed_ms(), 250);
    net.wait_attempts(12).await;
    // Both endpoints per round; waits of 100, 200, 400, 800, 800 ms between rounds.
    assert_eq!(
        net.attempt_times(),
        vec![0, 0, 100, 100, 300, 300, 700, 700, 1_500, 1_500, 2_300, 2_300]
    );
    let s = link.stats();
    assert_eq!((s.failed_rounds, s.failed_attempts, s.connects), (6, 12, 0));
    link.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_young_outage_retries_at_the_initial_wait_then_backs_off() {
    let net = Net::new(&[(A, Endpoint::Refuses)]);
    let s = LinkSettings {
        backoff_initial: ms(100),
        backoff_max: ms(800),
        fast_retry_for: ms(1_000),
        ..fake_settings(&[A])
    };
    let link = start(&net, s);
    net.wait_attempts(16).await;
    // Every 100 ms while the outage is younger than 1 s, then 100, 200, 400, 800 doubling.
    let mut want: Vec<u128> = (0..=10).map(|i| i * 100).collect();
    want.extend([1_100, 1_300, 1_700, 2_500, 3_300]);
    assert_eq!(net.attempt_times(), want);
    link.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_path_is_lost_then_retried_until_it_answers() {
    let net = Net::new(&[(A, Endpoint::Accepts)]);
    let s = LinkSettings {
        connect_timeout: ms(500),
        backoff_initial: ms(100),
        ..fake_settings(&[A])
    };
    let link = start(&net, s);
    let mut rx = link.subscribe();
    assert_eq!(next_change(&net, &mut rx).await, (0, Some(addr(A))));

    // At 3 s the path goes silent: QUIC's idle timeout ends the connection and handshakes get
    // no answer.
    tokio::time::sleep(ms(3_000)).await;
    net.set(A, Endpoint::Silent);
    net.end_connections(
        A,
        Closed {
            idle: false,
            reason: "timed out".into(),
        },
    );
    // Unpublished at once (frames finish on the edge); the connection had been healthy (≥ 1 s),
    // so the first attempt is immediate.
    assert_eq!(next_change(&net, &mut rx).await, (3_000, None));
    let s = link.stats();
    assert_eq!(s.losses, 1);
    assert!(s.last_error.unwrap_or_default().contains("timed out"));
    // The attempt at 3,000 ms times out at 3,500; the next (100 ms later) finds the path back.
    net.wait_attempts(2).await;
    net.set(A, Endpoint::Accepts);
    assert_eq!(next_change(&net, &mut rx).await, (3_600, Some(addr(A))));
    assert_eq!(net.attempt_times(), vec![0, 3_000, 3_600]);
    let s = link.stats();
    assert_eq!((s.connects, s.reconnects, s.losses), (2, 1, 1));
    link.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_young_waits_before_the_next_round() {
    let net = Net::new(&[(A, Endpoint::Accepts)]);
    let link = start(&net, fake_settings(&[A]));
    let mut rx = link.subscribe();
    assert_eq!(next_change(&net, &mut rx).await, (0, Some(addr(A))));
    // Lost after 400 ms (< 1 s: not healthy): the link backs off (100 ms) instead of spinning.
    tokio::time::sleep(ms(400)).await;
    net.end_connections(
        A,
        Closed {
            idle: false,
            reason: "reset".into(),
        },
    );
    assert_eq!(next_change(&net, &mut rx).await, (400, None));
    assert_eq!(next_change(&net, &mut rx).await, (500, Some(addr(A))));
    link.close().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_close_by_the_worker_reconnects_without_a_loss() {
    let net = Net::new(&[(A, Endpoint::Accepts)]);
    let link = start(&net, fake_settings(&[A]));
    let mut rx = link.subscribe();
    assert_eq!(next_change(&net, &mut rx).await, (0, Some(addr(A))));
    tokio::time::sleep(ms(2_000)).await;
    net.end_connections(
        A,
        Closed {
            idle: true,
            reason: "closed by peer: idle".into(),
        },
    );
    // Replaced in the same instant (the watch shows the new connection, not the gap).
    assert_eq!(next_change(&net, &mut rx).await, (2_000, Some(addr(A))));
    assert_eq!(net.attempt_times(), vec![0, 2_000]);
    let s = link.stats();
    assert_eq!((s.connects, s.losses, s.reconnects), (2, 0, 0));
    link.close().await;
}

#[tokio::test(start_paused = true)]
async fn failed_requests_drop_the_connection_and_demote_its_endpoint() {
    let net = Net::new(&[(A, Endpoint::Accepts), (B, Endpoint::Accepts)]);
    let link = start(&net, fake_settings(&[A, B]));
    let mut rx = link.subscribe();
    assert_eq!(next_change(&net, &mut rx).await, (0, Some(addr(A))));
    let on_a = link.current().unwrap();
    tokio::time::sleep(ms(1_500)).await;
    // Two failures and a success: the count starts over. A second of virtual time later nothing
    // has happened: no attempt, the same connection.
    link.report(&on_a, false);
    link.report(&on_a, false);
    link.report(&on_a, true);
    link.report(&on_a, false);
    link.report(&on_a, false);
    tokio::time::sleep(ms(1_000)).await;
    assert_eq!(net.attempt_times(), vec![0]);
    assert!(Arc::ptr_eq(&link.current().unwrap(), &on_a));
    assert_eq!(link.stats().losses, 0);
    // The third consecutive failure drops it; B is tried first and serves at once.
    link.report(&on_a, false);
    assert_eq!(next_change(&net, &mut rx).await, (2_500, Some(addr(B))));
    assert_eq!(net.open(A), 0);
    // Reports about the old connection are ignored: the next attempt is the failback to A (still
    // preferred), 5 s later.
    for _ in 0..5 {
        link.report(&on_a, false);
    }
    assert_eq!(next_change(&net, &mut rx).await, (7_500, Some(addr(A))));
    assert_eq!(net.attempt_times(), vec![0, 2_500, 7_500]);
    let s = link.stats();
    assert_eq!((s.losses, s.failbacks, s.connects), (1, 1, 3));
    link.close().await;
}

#[tokio::test(start_paused = true)]
async fn reconfiguring_the_endpoints_moves_before_it_breaks() {
    let net = Net::new(&[(A, Endpoint::Accepts), (B, Endpoint::Accepts)]);
    let link = start(&net, fake_settings(&[A]));
    let mut rx = link.subscribe();
    assert_eq!(next_change(&net, &mut rx).await, (0, Some(addr(A))));
    tokio::time::sleep(ms(700)).await;
    // Same endpoints, other timings: no reconnect.
    let same = LinkSettings {
        backoff_initial: ms(50),
        ..fake_settings(&[A])
    };
    assert!(!link.reconfigure(same).unwrap());
    assert!(link.reconfigure(fake_settings(&[B])).unwrap());
    assert_eq!(next_change(&net, &mut rx).await, (700, Some(addr(B))));
    tokio::task::yield_now().await;
    assert_eq!(net.open(A), 0, "the old connection is closed once drained");
    assert_eq!(link.stats().losses, 0);
    link.close().await;
    assert!(link.reconfigure(fake_settings(&[A])).is_err());
}

#[test]
fn link_backoff_doubles_with_jitter_caps_and_resets() {
    let s = settings();
    let mut b = Backoff::default();
    let mut jitter = Jitter::new();
    let bases = [100u64, 200, 400, 800, 800, 800];
    for base in bases {
        let d = equal_jitter(b.next_delay(s.backoff_bounds()), jitter.unit());
        let base = Duration::from_millis(base);
        assert!(
            d >= base / 2 && d <= base,
            "{d:?} outside [{:?}, {base:?}]",
            base / 2
        );
    }
    b.reset();
    assert_eq!(b.next_delay(s.backoff_bounds()), Duration::from_millis(100));
    assert_eq!(b.next_delay(s.backoff_bounds()), Duration::from_millis(200));
}

#[test]
fn demoted_endpoint_goes_last() {
    let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
    let c: SocketAddr = "[::1]:3".parse().expect("addr");
    assert_eq!(preference_order(&[a, b, c], Some(a)), vec![b, c, a]);
    assert_eq!(preference_order(&[a, b, c], None), vec![a, b, c]);
    assert_eq!(preference_order(&[a], Some(a)), vec![a]);
}

#[test]
fn settings_are_checked_by_name() {
    let check = |f: fn(&mut LinkSettings), needle: &str| {
        let mut s = settings();
        f(&mut s);
        let e = validate(&s).expect_err("must be refused").to_string();
        assert!(e.contains(needle), "{e:?} should name {needle}");
    };
    check(|s| s.endpoints.clear(), "no endpoint");
    check(|s| s.server_name.clear(), "server_name");
    check(|s| s.connect_timeout = Duration::ZERO, "connect_timeout");
    check(|s| s.backoff_initial = Duration::ZERO, "backoff_initial");
    check(|s| s.backoff_max = Duration::from_millis(10), "backoff_max");
    check(
        |s| s.failures_before_reconnect = 0,
        "failures_before_reconnect",
    );
    assert!(validate(&settings()).is_ok());
}

#[test]
fn missing_ca_file_is_named() {
    let e = QuicConnector::default()
        .trust(&settings())
        .expect_err("no CA file")
        .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}
