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

    // The cloud-only input paths: raw image and JPEG at the calibration qualities, copied into
    // the profile by build_optimizer_profile.
    let input = measure_input_codec_costs(&pkg, &[90, 75, 50], 5).expect("input codec costs");
    assert_eq!(
        input.jpeg_samples.len(),
        3 * 3,
        "3 synthetic images × 3 qualities"
    );
    for (q, e, d) in &input.jpeg_samples {
        assert_eq!(e.elements, 3 * 32 * 32);
        assert!(e.bytes > 300 && e.bytes < 3000, "q{q}: {} B", e.bytes);
        assert!(e.us > 0.0 && d.us > 0.0);
    }
    println!(
        "jpeg encode {:?} (rms {:.1} µs), decode {:?} (rms {:.1} µs)",
        input.jpeg_encode.cost,
        input.jpeg_encode.rms_residual_us,
        input.jpeg_decode.cost,
        input.jpeg_decode.rms_residual_us
    );
    let with_input = CodecCosts {
        coded: None,
        input: Some(input.clone()),
        ..costs.clone()
    };
    let p = build_optimizer_profile(&pkg, &edge, &cloud, &with_input).expect("profile");
    assert_eq!(p.jpeg_encode, input.jpeg_encode.cost);
    assert_eq!(p.jpeg_decode, input.jpeg_decode.cost);
    assert_eq!(p.input_decode, input.raw_decode);
    // A 1,120-byte q90 JPEG costs more to encode + decode than shipping the raw image.
    let jpeg_us = p.jpeg_encode.cost_us(3072, 1120) + p.jpeg_decode.cost_us(3072, 1120);
    let raw_us = p.input_encode.cost_us(3072, 3072) + p.input_decode.cost_us(3072, 3072);
    assert!(jpeg_us > raw_us, "jpeg {jpeg_us} µs vs raw {raw_us} µs");
    // No quality: zero JPEG costs.
    let none = measure_input_codec_costs(&pkg, &[], 2).expect("no jpeg");
    assert!(none.jpeg_samples.is_empty());
    assert_eq!(none.jpeg_encode.cost, jmdc_core::optimizer::CodecCost::ZERO);
    assert!(measure_input_codec_costs(&pkg, &[90], 0).is_err());

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
