//! Benchmark of `Optimizer::decide` on a synthetic full-size candidate set:
//! 4 variants × 15 layers (14 inner splits × 6 ρ × 8 codecs, plus cloud-only and edge-only)
//! = 2,696 candidates.
//!
//! `cargo bench -p jmdc-proto --bench optimizer`. Figures are in `docs/optimizer.md`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jmdc_proto::codec::QuantMode;
use jmdc_proto::optimizer::{
    candidate_grid, Candidate, CodecCost, Conditions, Objective, Optimizer, OptimizerConfig,
    Profile, VariantProfile,
};

const RHOS: [f32; 6] = [1.0, 0.75, 0.5, 0.35, 0.25, 0.1];
const MODES: [QuantMode; 8] = QuantMode::ALL;

/// A VGG-like CIFAR-10 network with its channel counts scaled by `width` (a pruning level).
fn variant(name: &str, width: f64) -> VariantProfile {
    let ch = |c: usize| ((c as f64 * width).round() as usize).max(1);
    let boundary_shapes = vec![
        vec![3, 32, 32],
        vec![ch(64), 32, 32],
        vec![ch(64), 32, 32],
        vec![ch(64), 16, 16],
        vec![ch(128), 16, 16],
        vec![ch(128), 16, 16],
        vec![ch(128), 8, 8],
        vec![ch(256), 8, 8],
        vec![ch(256), 8, 8],
        vec![ch(256), 4, 4],
        vec![ch(512), 4, 4],
        vec![ch(512), 4, 4],
        vec![ch(512), 2, 2],
        vec![ch(512)],
        vec![ch(256)],
        vec![10],
    ];
    let l = boundary_shapes.len() - 1;
    // Edge time ∝ output elements (a rough MAC proxy), cloud 8× faster.
    let edge_layer_us: Vec<f64> = (0..l)
        .map(|i| 20.0 + boundary_shapes[i + 1].iter().product::<usize>() as f64 * 0.02 * width)
        .collect();
    let cloud_layer_us = edge_layer_us.iter().map(|t| t / 8.0).collect();
    VariantProfile {
        name: name.into(),
        edge_layer_us,
        cloud_layer_us,
        boundary_shapes,
    }
}

fn profile() -> Profile {
    let mut p = Profile::new(vec![
        variant("full", 1.0),
        variant("prune-25", 0.75),
        variant("prune-50", 0.5),
        variant("prune-75", 0.25),
    ]);
    p.encode = CodecCost {
        fixed_us: 30.0,
        per_element_us: 0.004,
        per_byte_us: 0.002,
    };
    p.decode = CodecCost {
        fixed_us: 20.0,
        per_element_us: 0.002,
        per_byte_us: 0.002,
    };
    p.input_decode = CodecCost {
        fixed_us: 5.0,
        per_element_us: 0.001,
        per_byte_us: 0.0,
    };
    p
}

fn candidates(p: &Profile) -> Vec<Candidate> {
    candidate_grid(p, &RHOS, &MODES, |v, s, c| {
        let base = [0.93, 0.925, 0.91, 0.87][v];
        let Some(c) = c else { return Some(base) };
        let l = p.variants[v].layers() as f32;
        let early = 1.0 - s as f32 / l; // early splits are more fragile
        let mode_loss = match c.mode {
            QuantMode::Bits(b) => 0.12 / f32::from(b * b),
            _ => 0.0,
        };
        let rho_loss = (1.0 - c.keep_ratio) * 0.05;
        Some((base - (mode_loss + rho_loss) * (0.5 + early)).max(0.0))
    })
}

fn conditions() -> [Conditions; 4] {
    [
        Conditions {
            bandwidth_bps: 100e6,
            rtt_s: 0.002,
            edge_load_factor: 1.0,
            cloud_available: true,
        },
        Conditions {
            bandwidth_bps: 2e6,
            rtt_s: 0.030,
            edge_load_factor: 1.0,
            cloud_available: true,
        },
        Conditions {
            bandwidth_bps: 20e6,
            rtt_s: 0.010,
            edge_load_factor: 4.0,
            cloud_available: true,
        },
        Conditions {
            bandwidth_bps: 20e6,
            rtt_s: 0.010,
            edge_load_factor: 1.0,
            cloud_available: false,
        },
    ]
}

fn objectives() -> [(&'static str, Objective); 3] {
    [
        (
            "min_latency",
            Objective::MinLatency {
                accuracy_floor: 0.90,
            },
        ),
        (
            "max_accuracy",
            Objective::MaxAccuracy {
                latency_budget_s: 0.010,
            },
        ),
        (
            "max_throughput",
            Objective::MaxThroughput {
                accuracy_floor: 0.90,
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let p = profile();
    let cands = candidates(&p);
    assert_eq!(cands.len(), 4 * (14 * RHOS.len() * MODES.len() + 2));
    let opt = Optimizer::new(p.clone(), cands.clone(), OptimizerConfig::default()).unwrap();
    let mut pruned = opt.clone();
    let dropped = pruned.prune_dominated();
    eprintln!(
        "candidates: {} full, {} after pruning ({dropped} dominated)",
        opt.candidates().len(),
        pruned.candidates().len()
    );
    let conds = conditions();

    let mut g = c.benchmark_group("decide");
    for (name, obj) in objectives() {
        // One decision per iteration, cycling through four network situations.
        let mut k = 0usize;
        g.bench_function(format!("{name}/full_{}", opt.candidates().len()), |b| {
            b.iter(|| {
                k = (k + 1) % conds.len();
                black_box(opt.decide(black_box(&conds[k]), black_box(&obj), None))
            })
        });
        let current = opt.decide(&conds[0], &obj, None).plan;
        let mut k = 0usize;
        g.bench_function(format!("{name}/full_with_current"), |b| {
            b.iter(|| {
                k = (k + 1) % conds.len();
                black_box(opt.decide(black_box(&conds[k]), black_box(&obj), Some(&current)))
            })
        });
        let mut k = 0usize;
        g.bench_function(
            format!("{name}/pruned_{}", pruned.candidates().len()),
            |b| {
                b.iter(|| {
                    k = (k + 1) % conds.len();
                    black_box(pruned.decide(black_box(&conds[k]), black_box(&obj), None))
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("setup");
    g.bench_function("new_full", |b| {
        b.iter(|| {
            Optimizer::new(
                black_box(p.clone()),
                black_box(cands.clone()),
                OptimizerConfig::default(),
            )
            .unwrap()
        })
    });
    g.bench_function("prune_dominated", |b| {
        b.iter(|| {
            let mut o = opt.clone();
            black_box(o.prune_dominated())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
