//! The network monitor against a real jmdc-cloud worker (in-process, loopback) behind the
//! userspace link emulator: probes at 10 Mbit/s, then at 2 Mbit/s; each estimate within ±30 %,
//! and the step flagged. Also the background prober and passive samples from real transfers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};
use jmdc_edge::client::{client_config, CloudClient};
use jmdc_edge::monitor::network::{
    ChangeKind, EstimateSource, NetworkMonitor, NetworkMonitorConfig,
};

const DELAY: Duration = Duration::from_millis(5);

/// A worker behind the link emulator at `rate_mbit` with [`DELAY`] each way, and a client
/// connected through it (handshake allowed `connect_within`).
async fn through_link(
    rate_mbit: f64,
    connect_within: Duration,
) -> (common::Cloud, LinkParams, Relay, CloudClient) {
    let cloud = common::Cloud::start(4).await;
    let link = LinkParams::unlimited()
        .with_rate_mbit(rate_mbit)
        .with_delay(DELAY);
    let relay = Relay::bind(
        RelayConfig::new("127.0.0.1:0".parse().expect("addr"), cloud.addr).with_both(link),
    )
    .await
    .expect("relay");
    let config = client_config(&cloud.cert).expect("client config");
    let client = CloudClient::connect(relay.local_addr(), "localhost", config, connect_within)
        .await
        .expect("connect through the relay");
    (cloud, link, relay, client)
}

fn within(x: f64, target: f64, tol: f64) -> bool {
    (x - target).abs() <= tol * target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_estimates_follow_a_rate_step() {
    let outcome = tokio::time::timeout(Duration::from_secs(90), async {
        let (cloud, link, relay, client) = through_link(10.0, Duration::from_secs(5)).await;
        let handle = relay.handle();
        let monitor = NetworkMonitor::new(NetworkMonitorConfig {
            probe_timeout: Duration::from_secs(10),
            ..NetworkMonitorConfig::default()
        });
        monitor.observe_connection(client.connection());
        assert_eq!(monitor.estimate().source, EstimateSource::QuinnPath);
        let changes = monitor.changes();

        let mut report = Vec::new();
        for i in 0..4 {
            let o = monitor.probe(&client).await.expect("probe at 10 Mbit/s");
            report.push(format!(
                "10 Mbit/s probe {i}: {} B up, {} B down, {:.1} ms (min RTT {:.1} ms) → {:.2} Mbit/s",
                o.bytes_up,
                o.bytes_down,
                o.elapsed.as_secs_f64() * 1e3,
                o.min_rtt.as_secs_f64() * 1e3,
                o.sample_bps.unwrap_or(0.0) / 1e6
            ));
        }
        let at10 = monitor.estimate();
        report.push(format!("estimate at 10 Mbit/s: {:.2} Mbit/s, RTT {:.1} ms", at10.bandwidth_bps / 1e6, at10.rtt_s * 1e3));
        let changes_at10 = at10.changes;

        handle
            .set_both(link.with_rate_mbit(2.0))
            .expect("set 2 Mbit/s");
        let mut flagged = None;
        for i in 0..4 {
            let o = monitor.probe(&client).await.expect("probe at 2 Mbit/s");
            report.push(format!(
                "2 Mbit/s probe {i}: {:.1} ms → {:.2} Mbit/s{}",
                o.elapsed.as_secs_f64() * 1e3,
                o.sample_bps.unwrap_or(0.0) / 1e6,
                if o.change.is_some() { " (change flagged)" } else { "" }
            ));
            if let Some(c) = o.change.filter(|c| c.kind == ChangeKind::Bandwidth) {
                flagged.get_or_insert(c);
            }
        }
        let at2 = monitor.estimate();
        report.push(format!(
            "estimate at 2 Mbit/s: {:.2} Mbit/s; probes {}, probe bytes {}; link {}",
            at2.bandwidth_bps / 1e6,
            at2.probes,
            at2.probe_bytes,
            handle.stats()
        ));
        println!("{}", report.join("\n"));

        assert_eq!(at2.source, EstimateSource::Probe);
        assert!(
            within(at10.bandwidth_bps, 10e6, 0.3),
            "estimate {:.2} Mbit/s at 10 Mbit/s",
            at10.bandwidth_bps / 1e6
        );
        assert!(
            within(at2.bandwidth_bps, 2e6, 0.3),
            "estimate {:.2} Mbit/s at 2 Mbit/s",
            at2.bandwidth_bps / 1e6
        );
        let c = flagged.expect("the 10 → 2 Mbit/s step is flagged");
        assert!(c.step.relative() < -0.5, "{c:?}");
        assert!(at2.changes > changes_at10);
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(at2.probes, 8);

        client.close().await;
        relay.shutdown().await;
        cloud.stop().await;
    })
    .await;
    outcome.expect("test finished within 90 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_prober_and_passive_samples() {
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let (cloud, _link, relay, client) = through_link(10.0, Duration::from_secs(5)).await;
        let client = Arc::new(client);
        let monitor = Arc::new(NetworkMonitor::new(NetworkMonitorConfig {
            min_probe_interval: Duration::from_millis(300),
            stale_after: Duration::from_millis(300),
            ..NetworkMonitorConfig::default()
        }));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(Arc::clone(&monitor).run(
            Arc::clone(&client),
            Duration::from_millis(100),
            stop_rx,
        ));
        // The prober probes on its own while nothing else measures.
        let mut estimates = monitor.subscribe();
        let mut probes = 0;
        for _ in 0..100 {
            if tokio::time::timeout(Duration::from_millis(200), estimates.changed())
                .await
                .is_ok()
            {
                probes = estimates.borrow_and_update().probes;
                if probes >= 2 {
                    break;
                }
            }
        }
        assert!(probes >= 2, "background prober sent {probes} probes");
        stop_tx.send(true).expect("stop prober");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("prober stops")
            .expect("prober task");
        let probed = monitor.estimate();
        assert!(within(probed.bandwidth_bps, 10e6, 0.3), "{probed:?}");

        // A passive sample from a real, large exchange (a probe used as a stand-in for a frame):
        // goodput from round trip − min RTT, with no server time.
        let request =
            jmdc_core::protocol::encode_probe_request(&jmdc_core::protocol::ProbeRequest {
                probe_id: 999,
                reply_bytes: 0,
                padding_len: 48 * 1024,
            })
            .expect("encode");
        monitor.observe_connection(client.connection());
        let t0 = std::time::Instant::now();
        client
            .exchange(&request, Duration::from_secs(10))
            .await
            .expect("exchange");
        let sample = monitor
            .record_transfer(request.len(), t0.elapsed(), Duration::ZERO)
            .expect("a 48 KiB transfer at 10 Mbit/s is measurable");
        println!(
            "passive sample {:.2} Mbit/s; probed estimate {:.2} Mbit/s",
            sample / 1e6,
            probed.bandwidth_bps / 1e6
        );
        assert!(within(sample, 10e6, 0.3), "passive sample {sample}");
        assert_eq!(monitor.estimate().source, EstimateSource::Passive);

        drop(client);
        relay.shutdown().await;
        cloud.stop().await;
    })
    .await;
    outcome.expect("test finished within 60 s");
}

/// At 1 Mbit/s with 5 ms each way, quinn's path minimum after the handshake carries the
/// serialisation of 1,200-byte packets (≈ 9.6 ms each); tiny pings measure the propagation round
/// trip (10 ms plus a little), and the estimate's base RTT follows the shortest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_measure_the_propagation_round_trip_on_a_slow_link() {
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let (cloud, _link, relay, client) = through_link(1.0, Duration::from_secs(10)).await;
        let monitor = NetworkMonitor::new(NetworkMonitorConfig::default());
        monitor.observe_connection(client.connection());
        let quinn_min = monitor.estimate().min_rtt_s;
        let mut pings = Vec::new();
        for _ in 0..8 {
            let p = monitor.ping(&client, 1).await.expect("ping");
            pings.push(format!("{:.2}", p.as_secs_f64() * 1e3));
        }
        println!("pings (ms): {}", pings.join(", "));
        let ping = monitor.ping(&client, 1).await.expect("ping");
        let base = monitor.estimate().base_rtt_s;
        println!(
            "quinn min RTT after the handshake {:.2} ms, last ping {:.2} ms, base RTT {:.2} ms",
            quinn_min * 1e3,
            ping.as_secs_f64() * 1e3,
            base * 1e3
        );
        let propagation = 2.0 * DELAY.as_secs_f64();
        // The shortest of nine pings, the first of which queue behind the handshake's leftovers.
        assert!(base >= propagation, "{base}");
        assert!(base < propagation + 0.004, "{base}");
        assert!(
            quinn_min > base + 0.004,
            "quinn {quinn_min} s, base {base} s"
        );
        assert!(base <= ping.as_secs_f64());

        client.close().await;
        relay.shutdown().await;
        cloud.stop().await;
    })
    .await;
    outcome.expect("test finished within 60 s");
}
