//! No frame lost: real frames through the real edge pipeline (ONNX Runtime head, codec, QUIC) with
//! the client taken from the cloud link, while the worker is stopped and restarted, or the path goes
//! silent. Every frame gets a result; frames finish on the edge while the cloud is away without
//! waiting on the dead connection (beyond the requests that reveal it), and go back to the cloud by
//! themselves once it is reachable again.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};
use jmdc_core::cifar::CifarFile;
use jmdc_core::codec::QuantMode;
use jmdc_core::package::ModelPackage;
use jmdc_edge::link::{CloudLink, LinkSettings};
use jmdc_edge::pipeline::{EdgePipeline, Frame};
use jmdc_edge::plan_spec::{CodecSpec, InputSpec, PlanSpec, SplitSpec};
use jmdc_edge::stats::FrameRecord;

/// The per-request cloud timeout of the pipeline.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
const FAILURES: u32 = 3;
const MAX_FRAMES: u64 = 2000;

fn plan() -> PlanSpec {
    PlanSpec {
        variant: "keep100".into(),
        split: SplitSpec::After(6),
        keep_ratio: 1.0,
        codec: CodecSpec(QuantMode::Bits(8)),
        input: InputSpec::Raw,
    }
}

fn pipeline() -> EdgePipeline {
    common::init_runtime();
    let package = Arc::new(
        ModelPackage::load(&common::packages_dir().join("alexnet-cifar10")).expect("package"),
    );
    let mut p = EdgePipeline::new(package, "link-test".into(), REQUEST_TIMEOUT, Some(1));
    p.prepare("keep100").expect("prepare");
    p
}

fn samples() -> Vec<(u8, Vec<u8>)> {
    let file = CifarFile::open(&common::sample_file()).expect("sample file");
    file.iter().take(64).map(|(l, p)| (l, p.to_vec())).collect()
}

fn settings(endpoint: SocketAddr, ca: &std::path::Path) -> LinkSettings {
    LinkSettings {
        endpoints: vec![endpoint],
        server_name: "localhost".into(),
        ca_cert: ca.to_path_buf(),
        identity: None,
        connect_timeout: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        fast_retry_for: Duration::ZERO,
        failures_before_reconnect: FAILURES,
    }
}

/// Runs frames (one every 20 ms) through the pipeline with `link.current()` and reports each
/// outcome to the link, until `done` says so (bounded by `MAX_FRAMES`).
struct Driver {
    pipeline: EdgePipeline,
    samples: Vec<(u8, Vec<u8>)>,
    records: Vec<(FrameRecord, Duration)>,
}

impl Driver {
    async fn frame(&mut self, link: &CloudLink) -> (FrameRecord, Duration) {
        let id = self.records.len() as u64;
        assert!(id < MAX_FRAMES, "test ran away");
        let (label, pixels) = self.samples[id as usize % self.samples.len()].clone();
        let frame = Frame::new(id, Some(label), pixels);
        let client = link.current();
        let t = Instant::now();
        let (record, _) = self
            .pipeline
            .process(&frame, &plan(), client.as_deref())
            .await
            .expect("the pipeline itself never fails");
        let took = t.elapsed();
        if let Some(client) = &client {
            link.report(client, !record.fallback);
        }
        self.records.push((record.clone(), took));
        tokio::time::sleep(Duration::from_millis(20)).await;
        (record, took)
    }

    /// Frames until `n` consecutive ones were answered by the cloud.
    async fn until_cloud_serves(&mut self, link: &CloudLink, n: usize) {
        let mut run = 0;
        while run < n {
            let (record, _) = self.frame(link).await;
            run = if record.fallback { 0 } else { run + 1 };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_frame_lost_when_the_worker_stops_and_comes_back() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (_certs, cert, key) = common::make_cert();
        let dir = tempfile::tempdir().expect("tmp");
        let any = "127.0.0.1:0".parse().expect("addr");
        let cloud = common::Cloud::start_at(4, any, cert.clone(), key.clone(), dir).await;
        let addr = cloud.addr;
        let link = CloudLink::start(settings(addr, &cert)).expect("start");
        link.wait_connected(Duration::from_secs(10))
            .await
            .expect("connected");
        let mut d = Driver {
            pipeline: pipeline(),
            samples: samples(),
            records: Vec::new(),
        };
        d.until_cloud_serves(&link, 5).await;

        let stop = tokio::spawn(cloud.stop());
        let down_from = d.records.len();
        for _ in 0..30 {
            d.frame(&link).await;
        }
        tokio::time::timeout(Duration::from_secs(15), stop)
            .await
            .expect("worker stopped")
            .expect("join");
        let dir = tempfile::tempdir().expect("tmp");
        let cloud = common::Cloud::start_at(4, addr, cert.clone(), key.clone(), dir).await;
        let up_at = d.records.len();
        let back = Instant::now();
        d.until_cloud_serves(&link, 5).await;
        println!(
            "worker restart: frames back on the cloud {:.0} ms after it served again",
            back.elapsed().as_secs_f64() * 1e3
        );

        let down = &d.records[down_from..up_at];
        let fallback = down.iter().filter(|(r, _)| r.fallback).count();
        let slowest = down.iter().map(|(_, t)| *t).max().unwrap_or_default();
        println!(
            "worker stopped: {} frames, {fallback} finished on the edge, slowest {:.1} ms",
            down.len(),
            slowest.as_secs_f64() * 1e3
        );
        assert!(
            fallback >= 25,
            "frames while the worker was away: {fallback}"
        );
        assert!(
            slowest < REQUEST_TIMEOUT,
            "no frame waits on the dead connection: {slowest:?}"
        );
        // Every frame has a result and ids are consecutive: none lost.
        for (i, (r, _)) in d.records.iter().enumerate() {
            assert_eq!(r.frame_id, i as u64);
        }
        link.close().await;
        cloud.stop().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_path_costs_at_most_the_failure_threshold_in_waiting_frames() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (_certs, cert, key) = common::make_cert();
        let dir = tempfile::tempdir().expect("tmp");
        let any = "127.0.0.1:0".parse().expect("addr");
        let cloud = common::Cloud::start_at(4, any, cert.clone(), key, dir).await;
        let relay = Relay::bind(RelayConfig::new(any, cloud.addr))
            .await
            .expect("relay");
        let link = CloudLink::start(settings(relay.local_addr(), &cert)).expect("start");
        link.wait_connected(Duration::from_secs(10)).await.expect("connected");
        let mut d = Driver {
            pipeline: pipeline(),
            samples: samples(),
            records: Vec::new(),
        };
        d.until_cloud_serves(&link, 5).await;

        relay
            .handle()
            .set_both(LinkParams::unlimited().with_loss(1.0))
            .expect("silence");
        let silent_from = d.records.len();
        let silent = Instant::now();
        while silent.elapsed() < Duration::from_secs(5) {
            d.frame(&link).await;
        }
        let during = &d.records[silent_from..];
        let waited = during
            .iter()
            .filter(|(_, t)| *t >= REQUEST_TIMEOUT)
            .count();
        println!(
            "silent path for 5 s: {} frames, all on the edge: {}, {waited} waited for the {:?} timeout",
            during.len(),
            during.iter().all(|(r, _)| r.fallback),
            REQUEST_TIMEOUT
        );
        assert!(during.iter().all(|(r, _)| r.fallback));
        // FAILURES frames reveal the silence; one more may slip in while the task reacts on a busy
        // machine. Without `report` about 8 would wait (until the 4 s idle timeout).
        assert!(
            waited <= FAILURES as usize + 1,
            "{waited} frames waited on the silent connection"
        );
        assert!(during.len() > 3 * FAILURES as usize, "frames kept flowing");

        relay
            .handle()
            .set_both(LinkParams::unlimited())
            .expect("heal");
        let healed = Instant::now();
        d.until_cloud_serves(&link, 5).await;
        println!(
            "silent path healed: frames back on the cloud after {:.0} ms",
            healed.elapsed().as_secs_f64() * 1e3
        );
        for (i, (r, _)) in d.records.iter().enumerate() {
            assert_eq!(r.frame_id, i as u64);
        }
        link.close().await;
        relay.shutdown().await;
        cloud.stop().await;
    })
    .await
    .expect("test finished in time");
}
