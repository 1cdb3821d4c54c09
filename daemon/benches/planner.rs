//! Benchmark of one re-plan of the adaptive loop (`Planner::decide`) on the bundled AlexNet
//! package: the optimizer rebuilt from the learned profiles, every candidate's measured
//! correction applied, the decision with hysteresis. It runs on the frame path (the frame that
//! triggers a re-plan waits for it), so its cost adds to that frame's latency on the device.
//!
//! `cargo bench -p jmdc-edge --bench planner` (needs the ONNX Runtime library: `make ort`, and
//! `ORT_DYLIB_PATH` or the library in `.cache/onnxruntime/`). Figures in `docs/adaptive-loop.md`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use jmdc_core::optimizer::Conditions;
use jmdc_core::package::ModelPackage;
use jmdc_edge::adaptive::{AdaptiveSection, Planner};
use jmdc_edge::emulation::EdgeSpeed;

fn planner_decide(c: &mut Criterion) {
    jmdc_core::runtime::init_onnxruntime(None).expect("ONNX Runtime (make ort)");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/packages/alexnet-cifar10");
    let package = Arc::new(ModelPackage::load(&dir).expect("bundled package"));
    let settings = AdaptiveSection {
        enabled: true,
        profile_runs: 5,
        ..AdaptiveSection::default()
    };
    let mut planner =
        Planner::new(package, &settings, Some(1), EdgeSpeed::default()).expect("planner");
    println!("{} candidates", planner.candidate_count());
    let conditions = Conditions {
        bandwidth_bps: 20e6,
        rtt_s: 0.002,
        edge_load_factor: 1.0,
        cloud_available: true,
    };
    c.bench_function("planner_decide_alexnet", |b| {
        b.iter(|| {
            planner
                .decide(black_box(&conditions), false)
                .expect("decide")
        })
    });
}

criterion_group!(benches, planner_decide);
criterion_main!(benches);
