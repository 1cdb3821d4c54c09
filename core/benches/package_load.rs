//! How long a model package takes to load and verify (SHA-256 of every file): the figure that
//! matters on the edge device's start-up path. Lazy load (manifest only), verifying one variant,
//! and load + verify everything, on the bundled AlexNet package (or `JMDC_BENCH_PACKAGE`).
//!
//! `cargo bench -p jmdc-core --bench package_load`; prints the package's size first.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jmdc_core::package::{LoadOptions, ModelPackage, VerifyMode};

fn package_dir() -> PathBuf {
    std::env::var_os("JMDC_BENCH_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/packages/alexnet-cifar10")
        })
}

fn model_bytes(package: &ModelPackage, dir: &std::path::Path) -> u64 {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    package
        .variants()
        .iter()
        .map(|v| {
            let base = dir.join(&v.dir);
            let layers: u64 = v.layers.iter().map(|l| size(base.join(&l.file))).sum();
            layers
                + v.full_model
                    .as_ref()
                    .map_or(0, |f| size(base.join(&f.file)))
        })
        .sum()
}

fn package_load(c: &mut Criterion) {
    let dir = package_dir();
    let lazy = LoadOptions {
        verify: VerifyMode::Lazy,
    };
    let probe = ModelPackage::load_with(&dir, &lazy).unwrap();
    let bytes = model_bytes(&probe, &dir);
    let first = probe.variants()[0].name.clone();
    println!(
        "package {}: {} variants, {:.1} MiB of model files",
        probe.name(),
        probe.variants().len(),
        bytes as f64 / 1_048_576.0
    );
    let mut g = c.benchmark_group("package");
    g.sample_size(10);
    g.bench_function("load_lazy", |b| {
        b.iter(|| black_box(ModelPackage::load_with(&dir, &lazy).unwrap()))
    });
    g.bench_function(format!("verify_variant_{first}"), |b| {
        b.iter(|| {
            let p = ModelPackage::load_with(&dir, &lazy).unwrap();
            p.verify_variant(&first).unwrap();
            black_box(p)
        })
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("load_verify_all", |b| {
        b.iter(|| black_box(ModelPackage::load(&dir).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, package_load);
criterion_main!(benches);
