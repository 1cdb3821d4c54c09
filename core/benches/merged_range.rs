//! Chain of per-layer sessions vs one merged session vs `full.onnx`, side by side in one run:
//! for every variant of the bundled packages, each round runs the three once each on the same
//! batch-1 image in turn (so machine noise hits all three alike), and the table gives the medians
//! and the ratios to `full.onnx` (VGG16 ships no `full.onnx`: chain vs merged only). Also a
//! typical head and tail (AlexNet keep050 split 6). ONNX Runtime with one intra-op thread.
//!
//! `cargo bench -p jmdc-core --bench merged_range` (`JMDC_BENCH_ROUNDS`, default 300).
#![allow(missing_docs, clippy::unwrap_used)]

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jmdc_core::cifar::CifarFile;
use jmdc_core::package::{LoadOptions, ModelPackage, VerifyMode};
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::runner::{FullModelRunner, LayerRunner, MergedRunner, RunnerOptions};
use jmdc_core::runtime::{init_onnxruntime_with, RuntimeOptions};
use ndarray::ArrayD;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn package(name: &str) -> ModelPackage {
    let dir = root().join("models/packages").join(name);
    let lazy = LoadOptions {
        verify: VerifyMode::Lazy,
    };
    ModelPackage::load_with(&dir, &lazy).unwrap()
}

fn image(pkg: &ModelPackage) -> ArrayD<f32> {
    let file = CifarFile::open(&root().join("models/samples/cifar10-test-256.bin")).unwrap();
    let (_, px) = file.get(0).unwrap();
    normalize_batch_chw_u8(&[&px[..]], [3, 32, 32], pkg.normalization())
        .unwrap()
        .into_dyn()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One row: medians of chain, merged and (if any) full over `rounds` interleaved rounds.
fn row(pkg: &ModelPackage, variant: &str, range: Range<usize>, rounds: usize, full: bool) {
    let opts = RunnerOptions::default();
    let x = image(pkg);
    let input = if range.start == 0 {
        x
    } else {
        let mut head = LayerRunner::new(pkg, variant, 0..range.start, &opts).unwrap();
        head.run(x.view()).unwrap()
    };
    let mut chain = LayerRunner::new(pkg, variant, range.clone(), &opts).unwrap();
    let mut merged = MergedRunner::new(pkg, variant, range.clone(), &opts).unwrap();
    let mut fused = if full {
        Some(FullModelRunner::new(pkg, variant, &opts).unwrap())
    } else {
        None
    };
    let (mut tc, mut tm, mut tf) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 20 {
        let t = Instant::now();
        std::hint::black_box(chain.run(input.view()).unwrap());
        let c = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(merged.run(input.view()).unwrap());
        let m = t.elapsed();
        let f = fused.as_mut().map(|r| {
            let t = Instant::now();
            std::hint::black_box(r.run(input.view()).unwrap());
            t.elapsed()
        });
        if round >= 20 {
            tc.push(c);
            tm.push(m);
            tf.extend(f);
        }
    }
    let (c, m) = (median(tc), median(tm));
    let label = format!("{} {variant} {}..{}", pkg.name(), range.start, range.end);
    if tf.is_empty() {
        println!(
            "| {label} | {:.1} | {:.1} | – | – | – | {:.3} |",
            us(c),
            us(m),
            us(c) / us(m)
        );
    } else {
        let f = median(tf);
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} |",
            us(c),
            us(m),
            us(f),
            us(c) / us(f),
            us(m) / us(f),
            us(c) / us(m)
        );
    }
}

fn main() {
    let rounds: usize = std::env::var("JMDC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    init_onnxruntime_with(None, &RuntimeOptions::default()).unwrap();
    println!("batch 1, one intra-op thread, median of {rounds} interleaved rounds (µs)\n");
    println!(
        "| range | chain | merged | full.onnx | chain ÷ full | merged ÷ full | chain ÷ merged |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let alexnet = package("alexnet-cifar10");
    let l = alexnet.num_layers();
    for v in alexnet
        .variant_names()
        .map(String::from)
        .collect::<Vec<_>>()
    {
        row(&alexnet, &v, 0..l, rounds, true);
    }
    row(&alexnet, "keep050", 0..6, rounds, false);
    row(&alexnet, "keep050", 6..l, rounds, false);
    let vgg = package("vgg16-cifar10");
    let lv = vgg.num_layers();
    for v in vgg.variant_names().map(String::from).collect::<Vec<_>>() {
        row(&vgg, &v, 0..lv, rounds / 3, false);
    }
}
