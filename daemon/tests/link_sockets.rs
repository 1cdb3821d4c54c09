//! Many forced reconnects of the cloud link must not leak sockets (the link keeps one quinn
//! endpoint, one UDP socket, for all its connections), and `close` must end the connection cleanly. Its own test binary
//! so that no other test opens descriptors meanwhile.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_edge::link::{CloudLink, LinkSettings, LinkState};

const CYCLES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_cycles_do_not_leak_sockets_and_close_is_clean() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (_certs, cert, key) = common::make_cert();
        let cloud = common::Cloud::start_at(
            4,
            "127.0.0.1:0".parse().expect("addr"),
            cert.clone(),
            key,
            tempfile::tempdir().expect("tmp"),
        )
        .await;
        let link = CloudLink::start(LinkSettings {
            endpoints: vec![cloud.addr],
            server_name: "localhost".into(),
            ca_cert: cert,
            identity: None,
            connect_timeout: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            fast_retry_for: Duration::ZERO,
            failures_before_reconnect: 1,
        })
        .expect("start");
        link.wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fds_before = common::open_fds();
        let socket = link
            .current()
            .expect("connected")
            .local_addr()
            .expect("local address");

        let mut times = Vec::with_capacity(CYCLES);
        for cycle in 0..CYCLES {
            let old = link.current().expect("connected");
            let t = Instant::now();
            link.report(&old, false);
            let mut changes = link.subscribe();
            let waited = tokio::time::timeout(
                Duration::from_secs(5),
                changes.wait_for(|c| c.as_ref().is_some_and(|c| !Arc::ptr_eq(c, &old))),
            )
            .await
            .map(|r| r.is_ok());
            assert_eq!(waited, Ok(true), "cycle {cycle}: no reconnect within 5 s");
            times.push(t.elapsed());
            let new = link.current().expect("connected");
            assert_eq!(
                new.local_addr().expect("local address"),
                socket,
                "cycle {cycle}: the new connection is on another socket"
            );
        }
        // Dropped connections drain in the background: wait (at most 5 s) for the descriptor count
        // to come back, instead of sleeping a fixed time.
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while common::open_fds() > fds_before + 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let fds_after = common::open_fds();
        println!("descriptors back within 5 s: {}", drained.is_ok());
        let mean = times.iter().sum::<Duration>() / CYCLES as u32;
        let max = times.iter().max().copied().unwrap_or_default();
        println!(
            "{CYCLES} reconnects: mean {:.1} ms, max {:.1} ms; fds {fds_before} → {fds_after}",
            mean.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        assert!(
            fds_after <= fds_before + 2,
            "descriptors grew from {fds_before} to {fds_after} over {CYCLES} reconnects"
        );
        let stats = link.stats();
        assert_eq!(stats.connects, CYCLES as u64 + 1, "{stats:?}");
        assert_eq!(stats.losses, CYCLES as u64, "{stats:?}");

        let last = link.current().expect("connected");
        link.close().await;
        assert!(link.current().is_none());
        assert_eq!(link.stats().state, LinkState::Closed);
        assert!(
            matches!(
                last.close_reason(),
                Some(quinn::ConnectionError::LocallyClosed)
            ),
            "closed by us: {:?}",
            last.close_reason()
        );
        // Closing twice is harmless.
        link.close().await;
        drop(last);
        cloud.stop().await;
    })
    .await
    .expect("test finished in time");
}
