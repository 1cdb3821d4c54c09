//! The adaptive loop through the userspace link emulator: bandwidth steps 50 → 0.5 → 20 Mbit/s.
//! The plan must move to one that sends fewer bytes (later split, fewer bits, JPEG input or
//! edge-only) within 2 s of the drop; within 2 s of the recovery latency must fall below
//! [`RECOVERED`] × what it was at 0.5 Mbit/s (by a plan change or because the plan in force is good
//! at both); every plan must meet the accuracy floor.
//!
//! The development machine's CPU runs AlexNet in well under a millisecond, where sending anything
//! never pays; an emulated edge speed of ×40 (slower than a Raspberry Pi Zero 2 W's ×25,
//! `docs/edge-profiles.md`; see [`SLOWDOWN`]) stretches edge compute (really, by spinning) to
//! slow-Raspberry-Pi-like times so that offloading is worth it on a fast link.
//!
//! The slow phase is 0.5 Mbit/s, not 1: under `make test` the two cores are shared with other test
//! binaries and edge compute runs 2–3× slower than profiled; at 1 Mbit/s cloud-only, a split and
//! edge-only then measured within 10 % of each other (32–36 ms), so "lighter" was not what a
//! latency-minimising loop must choose. At 0.5 Mbit/s cloud-only costs ≥ 50 ms and a split wins
//! clearly on a loaded machine too.

mod common;

/// Emulated edge speed. ×25 made edge-only and cloud-only within 10–30 % of each other at 50 Mbit/s
/// once the emulation stopped multiplying this host's cache noise (edge-only keep050 7.5–9.6 ms,
/// JPEG cloud-only 4–12 ms with `make test` loading both cores): the loop rightly chose edge-only
/// at 50 Mbit/s in some runs, and the test, which needs a lighter plan to move to at 0.5 Mbit/s,
/// passed 16 of 20 runs under load (`scripts/adaptive-under-load.sh`). ×40 gives the margins the
/// test was designed with (the old emulation ran 1.5–1.7× slower than its factor, measured at
/// ×7.6: its ×25 was about ×37–43).
const SLOWDOWN: f64 = 40.0;

/// After the recovery the latency must fall below this fraction of the 0.5 Mbit/s phase's
/// (edge-only keep050 measured 11.5–15.8 ms at ×40 under load; JPEG cloud-only at 20 Mbit/s a
/// few ms).
const RECOVERED: f64 = 0.7;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{packages_dir, sample_file, Cloud};
use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};
use jmdc_core::calibration;
use jmdc_core::cifar::CifarFile;
use jmdc_core::package::ModelPackage;
use jmdc_edge::adaptive::{plan_spec, AdaptiveSection, ObjectiveKind};
use jmdc_edge::client::{client_config, CloudClient};
use jmdc_edge::emulation::EdgeSpeed;
use jmdc_edge::pipeline::{EdgePipeline, Frame};
use jmdc_edge::planning::AdaptiveSession;

const FLOOR_PCT: f64 = 80.0;

fn link(mbit: f64) -> LinkParams {
    LinkParams::unlimited()
        .with_rate_mbit(mbit)
        .with_delay(Duration::from_millis(1))
        .with_queue_bytes(16 * 1024)
}

struct Sample {
    at: Duration,
    bytes: usize,
    plan: String,
    accuracy: f32,
    latency_ms: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_follows_bandwidth_steps_50_1_20_mbit() {
    common::init_runtime();
    // RUST_LOG=jmdc_edge=debug shows every decision with its conditions.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let package =
        Arc::new(ModelPackage::load(&packages_dir().join("alexnet-cifar10")).expect("package"));
    if let Err(e) = calibration::load_default(&package) {
        panic!("the package needs its calibration table (jmdc-edge calibrate): {e}");
    }
    let cloud = Cloud::start(64).await;
    let relay = Relay::bind(
        RelayConfig::new("127.0.0.1:0".parse().expect("addr"), cloud.addr).with_both(link(50.0)),
    )
    .await
    .expect("relay");
    let handle = relay.handle();
    let client = Arc::new(
        CloudClient::connect(
            relay.local_addr(),
            "localhost",
            client_config(&cloud.cert).expect("client config"),
            Duration::from_secs(5),
        )
        .await
        .expect("connect through relay"),
    );
    let settings = AdaptiveSection {
        enabled: true,
        objective: ObjectiveKind::MinLatency,
        accuracy_floor_pct: FLOOR_PCT,
        replan_interval_ms: 250,
        profile_runs: 10,
        probe_bytes: 8 * 1024,
        probe_interval_ms: 150,
        ..AdaptiveSection::default()
    };
    // One ONNX Runtime thread, as on the device (`[runtime] intra_op_threads = 1`): the emulation
    // stretches the calling thread's CPU time, and a second intra-op thread would fight the spin.
    let pipeline = EdgePipeline::new(
        package.clone(),
        "test".into(),
        Duration::from_secs(3),
        Some(1),
    )
    .with_speed(EdgeSpeed::custom(SLOWDOWN));
    let mut session = AdaptiveSession::start(pipeline, &settings, Some(client.clone()), Some(1))
        .await
        .expect("adaptive session");

    let frames: Vec<Frame> = CifarFile::open(&sample_file())
        .expect("samples")
        .iter()
        .enumerate()
        .map(|(i, (label, pixels))| Frame::new(i as u64, Some(label), pixels.to_vec()))
        .collect();
    let phases = [
        (50.0, Duration::from_secs(4)),
        (0.5, Duration::from_secs(5)),
        (20.0, Duration::from_secs(5)),
    ];
    let start = Instant::now();
    let mut phase_starts = Vec::new();
    let mut samples = Vec::new();
    let mut next_frame = 0usize;
    let mut explored = 0usize;
    for (mbit, length) in phases {
        handle.set_both(link(mbit)).expect("link params");
        let phase_start = start.elapsed();
        phase_starts.push(phase_start);
        // Bounded: every frame ends within the pipeline timeout, the phase within its length.
        while start.elapsed() < phase_start + length {
            let frame = &frames[next_frame % frames.len()];
            next_frame += 1;
            let record = session.process(frame).await.expect("frame");
            let decision = session.decision().expect("a decision exists");
            if record.plan != plan_spec(&decision.plan).to_string() {
                // A frame the loop spent exploring another plan; the decision stands.
                explored += 1;
                continue;
            }
            samples.push(Sample {
                at: start.elapsed(),
                bytes: decision.plan.bytes,
                plan: record.plan.clone(),
                accuracy: decision.plan.accuracy,
                latency_ms: record.total_us as f64 / 1e3,
            });
        }
    }
    session.stop();
    client.close().await;
    relay.shutdown().await;
    cloud.stop().await;

    println!("{explored} frames explored other plans");
    for (frame, plan, reason) in &session.changes {
        println!("frame {frame}: {plan} ({reason})");
    }
    for s in &samples {
        assert!(
            f64::from(s.accuracy) * 100.0 >= FLOOR_PCT,
            "plan {} at {:?} predicts {:.2} % < floor",
            s.plan,
            s.at,
            s.accuracy * 100.0
        );
    }
    let settled_bytes = |until: Duration| {
        samples
            .iter()
            .rev()
            .find(|s| s.at < until)
            .map(|s| (s.bytes, s.plan.clone()))
            .expect("samples before the step")
    };
    let first_after = |from: Duration, pred: &dyn Fn(usize) -> bool| {
        samples
            .iter()
            .find(|s| s.at >= from && pred(s.bytes))
            .map(|s| s.at - from)
    };
    let (fast_bytes, fast_plan) = settled_bytes(phase_starts[1]);
    println!("50 Mbit/s settled on {fast_plan} ({fast_bytes} B)");
    let down = first_after(phase_starts[1], &|b| b < fast_bytes)
        .unwrap_or_else(|| panic!("the plan never got lighter than {fast_plan} at 0.5 Mbit/s"));
    println!("0.5 Mbit/s: lighter plan after {down:?}");
    assert!(
        down <= Duration::from_secs(2),
        "took {down:?} to react to 0.5 Mbit/s"
    );
    let (slow_bytes, slow_plan) = settled_bytes(phase_starts[2]);
    println!("0.5 Mbit/s settled on {slow_plan} ({slow_bytes} B)");
    // Back at 20 Mbit/s the plan need not send more bytes (JPEG cloud-only, say, is good at both
    // rates), but latency must follow the bandwidth: the 0.5 Mbit/s optimum costs 7–9 ms, at
    // 20 Mbit/s cloud-only costs a few ms. Reaction = the first 5 frames in a row averaging under
    // RECOVERED × the settled 0.5 Mbit/s latency.
    let slow: Vec<f64> = samples
        .iter()
        .filter(|s| s.at < phase_starts[2])
        .rev()
        .take(20)
        .map(|s| s.latency_ms)
        .collect();
    let slow_mean = slow.iter().sum::<f64>() / slow.len().max(1) as f64;
    let fast: Vec<&Sample> = samples.iter().filter(|s| s.at >= phase_starts[2]).collect();
    let up = fast
        .windows(5)
        .find(|w| w.iter().map(|s| s.latency_ms).sum::<f64>() / 5.0 <= RECOVERED * slow_mean)
        .map(|w| w[4].at - phase_starts[2])
        .unwrap_or_else(|| {
            panic!("latency never dropped below {RECOVERED} × {slow_mean:.1} ms at 20 Mbit/s (plan {slow_plan})")
        });
    let last_plan = fast.last().map_or("none", |s| s.plan.as_str());
    println!(
        "20 Mbit/s: latency below {RECOVERED} × the 0.5 Mbit/s {slow_mean:.1} ms after {up:?}; ended on {last_plan}"
    );
    assert!(
        up <= Duration::from_secs(2),
        "took {up:?} to react to 20 Mbit/s"
    );
}
