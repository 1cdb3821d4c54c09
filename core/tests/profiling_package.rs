//! `jmdc_core::profiling` on the real model package with ONNX Runtime: edge layer timing,
//! codec costs on the split shapes, and a profile the optimizer accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jmdc_core::codec::QuantMode;
use jmdc_core::optimizer::{candidate_grid, Optimizer, OptimizerConfig};
use jmdc_core::package::ModelPackage;
use jmdc_core::profiling::*;
use jmdc_core::runner::RunnerOptions;
use jmdc_core::runtime::init_onnxruntime;

fn package() -> ModelPackage {
    let dir = std::env::var_os("JMDC_TEST_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/packages/alexnet-cifar10")
        });
    ModelPackage::load(&dir).unwrap_or_else(|e| panic!("model package {}: {e}", dir.display()))
}

#[test]
fn edge_profile_codec_costs_and_optimizer_profile() {
    if let Err(e) = init_onnxruntime(None) {
        panic!("these tests need ONNX Runtime: {e}");
    }
    let pkg = package();
    let input = profiling_input(&pkg, None).expect("input");
    assert_eq!(&input.shape()[1..], pkg.input_shape());
    assert!(input.iter().all(|v| v.is_finite()));

    let mut edge = BTreeMap::new();
    for v in pkg.variant_names().collect::<Vec<_>>() {
        let times = measure_edge_profile(&pkg, v, 2, 5, &RunnerOptions::default())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(times.len(), pkg.variant(v).expect("variant").num_layers());
        assert!(
            times.iter().all(|t| t.is_finite() && *t > 0.0),
            "{v}: {times:?}"
        );
        println!(
            "{v}: {:.0} µs total, per layer {times:.0?}",
            times.iter().sum::<f64>()
        );
        edge.insert(v.to_string(), times);
    }
    assert!(measure_edge_profile(&pkg, "nope", 0, 1, &RunnerOptions::default()).is_err());

    let first = pkg.variant_names().next().expect("a variant").to_string();
    let shapes = split_shapes(&pkg, &first).expect("shapes");
    assert_eq!(
        shapes.len(),
        pkg.variant(&first).expect("v").num_layers() - 1
    );
    let costs = measure_codec_costs(
        &shapes,
        &[1.0, 0.5, 0.25],
        &[QuantMode::Bits(4), QuantMode::Bits(8)],
        3,
    )
    .expect("codec costs");
    println!(
        "encode {:?} (rms {:.1} µs, {:.0} %), decode {:?} (rms {:.1} µs, {:.0} %)",
        costs.encode.cost,
        costs.encode.rms_residual_us,
        costs.encode.relative_residual * 100.0,
        costs.decode.cost,
        costs.decode.rms_residual_us,
        costs.decode.relative_residual * 100.0
    );

    let cloud_est = CloudProfileEstimator::new(
        edge.iter().map(|(k, v)| (k.clone(), v.clone())),
        DEFAULT_CLOUD_GUESS_RATIO,
        0.2,
    );
    let cloud = cloud_est.all();
    let mut profile = build_optimizer_profile(&pkg, &edge, &cloud, &costs).expect("profile");
    let (ie, id) = measure_input_costs(&pkg, 5).expect("input costs");
    profile.input_encode = ie;
    profile.input_decode = id;
    assert_eq!(profile.variants.len(), edge.len());
    for vp in &profile.variants {
        let l = vp.edge_layer_us.len();
        assert_eq!(vp.boundary_shapes.len(), l + 1);
        assert_eq!(vp.boundary_shapes[0], pkg.input_shape());
    }
    let grid = candidate_grid(&profile, &[1.0, 0.5], &[QuantMode::Bits(4)], |_, _, _| {
        Some(0.8)
    });
    Optimizer::new(profile.clone(), grid, OptimizerConfig::default())
        .expect("the optimizer accepts the measured profile");

    // Missing cloud times for a variant and wrong lengths are errors.
    let mut short = cloud.clone();
    short.remove(&first);
    assert!(build_optimizer_profile(&pkg, &edge, &short, &costs).is_err());
    let mut bad = edge.clone();
    bad.insert(first.clone(), vec![1.0]);
    assert!(build_optimizer_profile(&pkg, &bad, &cloud, &costs).is_err());
    let mut unknown = edge.clone();
    unknown.insert("nope".into(), vec![1.0]);
    assert!(build_optimizer_profile(&pkg, &unknown, &cloud, &costs).is_err());
}
