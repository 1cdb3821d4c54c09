//! The cloud link against real jmdc-cloud workers (in-process, loopback, real QUIC): failover
//! from a dead endpoint and failback, a worker stopped and restarted on the same address, a
//! silent path (link emulator at 100 % loss), request failures forcing a reconnect,
//! reconfiguration (endpoint, CA file) and bad CA files. Every wait is bounded;
//! detection and reconnection times are printed
//! (`cargo test -p jmdc-edge --test link_reconnect -- --nocapture`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};
use jmdc_core::protocol::{self, ProbeRequest};
use jmdc_edge::client::{CloudClient, IDLE_TIMEOUT};
use jmdc_edge::link::{CloudLink, LinkError, LinkSettings, LinkState};

const WHOLE_TEST: Duration = Duration::from_secs(120);

fn settings(endpoints: Vec<SocketAddr>, ca: &Path) -> LinkSettings {
    LinkSettings {
        endpoints,
        server_name: "localhost".into(),
        ca_cert: ca.to_path_buf(),
        identity: None,
        connect_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        fast_retry_for: Duration::ZERO,
        failures_before_reconnect: 3,
    }
}

/// A worker on `listen` with the shared certificate.
async fn worker(listen: SocketAddr, cert: &Path, key: &Path) -> common::Cloud {
    let dir = tempfile::tempdir().expect("tmp");
    common::Cloud::start_at(4, listen, cert.to_path_buf(), key.to_path_buf(), dir).await
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// Polls `cond` every 10 ms for at most `limit`; panics naming `what` when it never holds.
async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    let waited = tokio::time::timeout(limit, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within {limit:?}");
    start.elapsed()
}

/// One real request/response on the connection (a small probe).
async fn probe_ok(client: &CloudClient) -> bool {
    let bytes = protocol::encode_probe_request(&ProbeRequest {
        probe_id: 7,
        reply_bytes: 64,
        padding_len: 64,
    })
    .expect("encode probe");
    client
        .exchange(&bytes, Duration::from_secs(3))
        .await
        .is_ok()
}

fn endpoint_of(link: &CloudLink) -> Option<SocketAddr> {
    link.current().map(|c| c.remote_address())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_a_dead_endpoint_and_fails_back() {
    tokio::time::timeout(WHOLE_TEST, async {
        let (_certs, cert, key) = common::make_cert();
        let dead = common::unused_udp_addr();
        let b = worker(any_port(), &cert, &key).await;
        let started = Instant::now();
        let link = CloudLink::start(settings(vec![dead, b.addr], &cert)).expect("start");
        let client = link
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connected through the second endpoint");
        let failover = started.elapsed();
        println!("failover: on endpoint 2 {:.0} ms after start", ms(failover));
        assert_eq!(client.remote_address(), b.addr);
        assert!(probe_ok(&client).await, "the failover connection answers");
        let stats = link.stats();
        assert_eq!(stats.state, LinkState::Connected);
        assert_eq!(stats.endpoint, Some(b.addr));
        assert_eq!(stats.failovers, 1, "{stats:?}");
        assert!(stats.failed_attempts >= 1, "{stats:?}");
        assert!(
            stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(&dead.to_string())),
            "last error names the dead endpoint: {stats:?}"
        );

        // The preferred endpoint comes to life: the link moves back to it by itself.
        let a = worker(dead, &cert, &key).await;
        let failback = wait_until(
            "failback to the preferred endpoint",
            Duration::from_secs(10),
            || endpoint_of(&link) == Some(dead),
        )
        .await;
        println!(
            "failback: on endpoint 1 {:.0} ms after it came up",
            ms(failback)
        );
        assert!(
            failback < Duration::from_secs(4),
            "failback took {failback:?}"
        );
        assert_eq!(link.stats().failbacks, 1);
        let current = link.current().expect("connected");
        assert!(probe_ok(&current).await);
        // The old connection is closed once drained (we still hold it: after the drain timeout).
        wait_until("old connection closed", Duration::from_secs(6), || {
            client.close_reason().is_some()
        })
        .await;

        link.close().await;
        assert!(link.current().is_none());
        assert_eq!(link.stats().state, LinkState::Closed);
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_stopped_then_restarted_on_the_same_address() {
    tokio::time::timeout(WHOLE_TEST, async {
        let (_certs, cert, key) = common::make_cert();
        let a = worker(any_port(), &cert, &key).await;
        let addr = a.addr;
        let link = CloudLink::start(settings(vec![addr], &cert)).expect("start");
        let first = link
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        assert!(probe_ok(&first).await);

        let stopping = Instant::now();
        let stop = tokio::spawn(a.stop());
        wait_until(
            "loss of a gracefully stopped worker noticed",
            Duration::from_secs(3),
            || link.current().is_none(),
        )
        .await;
        let detected = stopping.elapsed();
        println!("graceful stop: link down after {:.1} ms", ms(detected));
        assert!(detected < Duration::from_secs(1), "took {detected:?}");
        tokio::time::timeout(Duration::from_secs(15), stop)
            .await
            .expect("worker stopped")
            .expect("join");
        assert!(first.close_reason().is_some());
        let stats = link.stats();
        assert_eq!(stats.losses, 1, "{stats:?}");
        // While down, frames see no client (they finish on the edge at once), round after round.
        wait_until(
            "a failed round while the worker is down",
            Duration::from_secs(5),
            || link.stats().failed_rounds >= 1,
        )
        .await;
        assert!(link.current().is_none());

        let a = worker(addr, &cert, &key).await;
        let back = wait_until(
            "reconnect after the worker restarted",
            Duration::from_secs(10),
            || link.current().is_some(),
        )
        .await;
        println!(
            "restart: reconnected {:.0} ms after the worker was up",
            ms(back)
        );
        assert!(back < Duration::from_secs(3), "took {back:?}");
        let second = link.current().expect("connected");
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(probe_ok(&second).await);
        let stats = link.stats();
        assert_eq!(
            (stats.connects, stats.reconnects, stats.failovers),
            (2, 1, 0),
            "{stats:?}"
        );

        link.close().await;
        a.stop().await;
    })
    .await
    .expect("test finished in time");
}

/// The worker closes connections without requests after `limits.idle_timeout_s` (keep-alives do
/// not count); the link reconnects at once and counts no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_worker_closes_as_idle_is_replaced_without_a_loss() {
    tokio::time::timeout(WHOLE_TEST, async {
        let (_certs, cert, key) = common::make_cert();
        let dir = tempfile::tempdir().expect("tmp");
        let limits = jmdc_cloud::config::LimitsSection {
            idle_timeout_s: 3,
            ..jmdc_cloud::config::LimitsSection::default()
        };
        let w = common::Cloud::start_with_limits(limits, any_port(), cert.clone(), key, dir).await;
        let link = CloudLink::start(settings(vec![w.addr], &cert)).expect("start");
        let first = link
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        assert!(probe_ok(&first).await);
        // The link may close its side first once it has seen the worker's `idle` (the reason
        // read here is then `closed`); that the link took it for idleness shows in `losses`.
        tokio::time::timeout(Duration::from_secs(8), first.connection().closed())
            .await
            .expect("the worker closes the idle connection");
        wait_until("a new connection", Duration::from_secs(3), || {
            link.current().is_some_and(|c| !Arc::ptr_eq(&c, &first))
        })
        .await;
        let second = link.current().expect("connected");
        assert!(probe_ok(&second).await);
        let stats = link.stats();
        assert_eq!(stats.losses, 0, "{stats:?}");
        assert!(stats.connects >= 2, "{stats:?}");
        link.close().await;
        w.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_path_is_detected_by_the_idle_timeout() {
    tokio::time::timeout(WHOLE_TEST, async {
        let (_certs, cert, key) = common::make_cert();
        let a = worker(any_port(), &cert, &key).await;
        let relay = Relay::bind(RelayConfig::new(any_port(), a.addr))
            .await
            .expect("relay");
        let link = CloudLink::start(settings(vec![relay.local_addr()], &cert)).expect("start");
        let first = link
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connected through the relay");
        assert!(probe_ok(&first).await);

        relay
            .handle()
            .set_both(LinkParams::unlimited().with_loss(1.0))
            .expect("loss 100 %");
        let silent = Instant::now();
        // A request on the silent path fails by its own timeout; the link sees the idle timeout.
        assert!(
            !probe_ok(&first).await,
            "nothing gets through at 100 % loss"
        );
        let detected = silent.elapsed()
            + wait_until(
                "silent path detected",
                IDLE_TIMEOUT + Duration::from_secs(3),
                || link.current().is_none(),
            )
            .await;
        println!(
            "silent path: link down {:.0} ms after the path went silent (idle timeout {:?})",
            ms(detected),
            IDLE_TIMEOUT
        );
        assert!(
            detected >= IDLE_TIMEOUT - Duration::from_secs(1),
            "too early: {detected:?}"
        );
        assert!(
            detected <= IDLE_TIMEOUT + Duration::from_millis(1500),
            "too late: {detected:?}"
        );
        let stats = link.stats();
        assert!(
            stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
            "{stats:?}"
        );

        relay
            .handle()
            .set_both(LinkParams::unlimited())
            .expect("path back");
        let healed = Instant::now();
        let back = wait_until(
            "reconnect after the path healed",
            Duration::from_secs(10),
            || link.current().is_some(),
        )
        .await;
        println!(
            "silent path: reconnected {:.0} ms after the path came back",
            ms(back)
        );
        assert!(healed.elapsed() < Duration::from_secs(3));
        let current = link.current().expect("connected");
        assert!(probe_ok(&current).await);

        link.close().await;
        relay.shutdown().await;
        a.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_request_failures_force_a_reconnect() {
    tokio::time::timeout(WHOLE_TEST, async {
        let (_certs, cert, key) = common::make_cert();
        let a = worker(any_port(), &cert, &key).await;
        let b = worker(any_port(), &cert, &key).await;
        let mut s = settings(vec![a.addr, b.addr], &cert);
        s.backoff_max = Duration::from_secs(2);
        let link = CloudLink::start(s).expect("start");
        let first = link
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        assert_eq!(first.remote_address(), a.addr);

        // Two failures, a success, two failures: never three in a row → the connection stays.
        for ok in [false, false, true, false, false] {
            link.report(&first, ok);
        }
        // Below the threshold nothing is requested of the link, so the connection is the same
        // one now; that nothing happens later either is asserted on virtual time
        // (`failed_requests_drop_the_connection_and_demote_its_endpoint` in link/tests.rs).
        let same = link.current().expect("still connected");
        assert!(
            Arc::ptr_eq(&first, &same),
            "no reconnect below the threshold"
        );

        let dropped = Instant::now();
        link.report(&first, false);
        wait_until(
            "reconnect after three failures",
            Duration::from_secs(5),
            || link.current().is_some_and(|c| !Arc::ptr_eq(&c, &first)),
        )
        .await;
        println!(
            "3 failed requests: reconnected {:.1} ms after the third report",
            ms(dropped.elapsed())
        );
        assert_eq!(
            endpoint_of(&link),
            Some(b.addr),
            "the dropped endpoint is tried last"
        );
        wait_until("dropped connection closed", Duration::from_secs(3), || {
            first.close_reason().is_some()
        })
        .await;
        let stats = link.stats();
        assert_eq!((stats.losses, stats.reconnects), (1, 1), "{stats:?}");

        // Reports about a connection that is no longer current change nothing.
        let second = link.current().expect("connected");
        // Reports about the old connection are ignored (on virtual time: link/tests.rs).
        for _ in 0..5 {
            link.report(&first, false);
        }
        assert!(link.current().is_some_and(|c| Arc::ptr_eq(&c, &second)));

        // The preferred endpoint still handshakes, so the link fails back to it after backoff_max.
        let failback = wait_until(
            "failback to the preferred endpoint",
            Duration::from_secs(6),
            || endpoint_of(&link) == Some(a.addr),
        )
        .await;
        println!(
            "3 failed requests: failed back to the preferred endpoint after {:.0} ms",
            ms(failback)
        );

        link.close().await;
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_moves_the_link_and_keeps_bad_settings_out() {
    tokio::time::timeout(WHOLE_TEST, async {
        let (_certs, cert, key) = common::make_cert();
        let (_other_dir, other_cert, _other_key) = common::make_cert();
        let a = worker(any_port(), &cert, &key).await;
        let b = worker(any_port(), &cert, &key).await;
        let work = tempfile::tempdir().expect("tmp");
        let ca = work.path().join("ca.pem");
        std::fs::copy(&cert, &ca).expect("copy CA");
        let base = settings(vec![a.addr], &ca);
        let link = CloudLink::start(base.clone()).expect("start");
        let first = link
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");

        // Same settings, or only timing changes: the connection stays.
        assert!(!link.reconfigure(base.clone()).expect("same settings"));
        let mut slower = base.clone();
        slower.connect_timeout = Duration::from_secs(1);
        slower.failures_before_reconnect = 5;
        assert!(!link.reconfigure(slower.clone()).expect("timing only"));
        assert_eq!(link.settings(), slower);

        // A bad CA file is refused by name and the old settings stay in force.
        let mut bad = slower.clone();
        bad.endpoints = vec![b.addr];
        bad.ca_cert = work.path().join("missing.pem");
        let err = link.reconfigure(bad).expect_err("missing CA");
        assert!(matches!(err, LinkError::Trust(_)));
        assert!(err.to_string().contains("missing.pem"), "{err}");
        // Refused before anything is asked of the link: the connection stays.
        assert_eq!(link.settings(), slower);
        assert!(link.current().is_some_and(|c| Arc::ptr_eq(&c, &first)));

        // A new endpoint: the link moves, the old connection is closed cleanly.
        let mut to_b = slower.clone();
        to_b.endpoints = vec![b.addr];
        let asked = Instant::now();
        assert!(link.reconfigure(to_b.clone()).expect("new endpoint"));
        wait_until("moved to the new endpoint", Duration::from_secs(5), || {
            endpoint_of(&link) == Some(b.addr)
        })
        .await;
        let moved = asked.elapsed();
        println!(
            "reconfigure: on the new endpoint {:.1} ms after reconfigure()",
            ms(moved)
        );
        wait_until("old connection closed", Duration::from_secs(5), || {
            first.close_reason().is_some()
        })
        .await;
        assert!(
            matches!(
                first.close_reason(),
                Some(quinn::ConnectionError::LocallyClosed)
            ),
            "closed by us: {:?}",
            first.close_reason()
        );
        assert!(asked.elapsed() < Duration::from_secs(5));
        let on_b = link.current().expect("connected");
        assert!(probe_ok(&on_b).await);

        // The CA file's contents change in place (another CA added): reconnect with it.
        let both = [
            std::fs::read(&other_cert).expect("read"),
            std::fs::read(&cert).expect("read"),
        ]
        .concat();
        std::fs::write(&ca, both).expect("rewrite CA");
        assert!(link.reconfigure(to_b.clone()).expect("changed CA contents"));
        wait_until(
            "new connection with the new CA",
            Duration::from_secs(5),
            || link.current().is_some_and(|c| !Arc::ptr_eq(&c, &on_b)),
        )
        .await;

        // A CA that does not trust the worker: the link goes down and says why.
        std::fs::copy(&other_cert, &ca).expect("untrusting CA");
        assert!(link.reconfigure(to_b.clone()).expect("valid file"));
        wait_until("untrusted worker refused", Duration::from_secs(5), || {
            link.current().is_none()
        })
        .await;
        let stats = link.stats();
        println!("untrusted CA: {stats:?}");
        assert!(
            stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(&b.addr.to_string())),
            "{stats:?}"
        );

        link.close().await;
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn bad_ca_files_are_named() {
    let work = tempfile::tempdir().expect("tmp");
    let missing = work.path().join("nope/ca.pem");
    let err = CloudLink::start(settings(vec![common::unused_udp_addr()], &missing))
        .expect_err("missing CA");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let garbage = work.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let err =
        CloudLink::start(settings(vec![common::unused_udp_addr()], &garbage)).expect_err("no PEM");
    let text = err.to_string();
    assert!(
        text.contains("garbage.pem") && text.contains("CERTIFICATE"),
        "{text}"
    );

    let err = CloudLink::start(settings(vec![], &garbage)).expect_err("no endpoints");
    assert!(matches!(err, LinkError::NoEndpoints), "{err}");
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let (_certs, cert, _key) = common::make_cert();
    let err =
        CloudLink::start(settings(vec![common::unused_udp_addr()], &cert)).expect_err("no runtime");
    assert!(matches!(err, LinkError::NoRuntime), "{err}");
}

// The waits between failed rounds (fast retries while an outage is young, then doubling), the
// failback interval and the silent-path timing are asserted to the millisecond on virtual time
// in `daemon/src/link/tests.rs`; this file checks the same link over real QUIC.
