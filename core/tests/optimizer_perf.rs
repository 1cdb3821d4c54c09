//! Guard for the decision budget: one `decide` over a full-size candidate set (4 variants × 14
//! inner splits × 6 ρ × 8 codecs + cloud-only + edge-only = 2,696 candidates) takes ≤ 1 ms.
//!
//! The best of 25 runs is compared, so a busy machine does not make it flaky; the release-mode
//! figures (about 100× below the budget) come from `benches/optimizer.rs` and are in
//! `docs/optimizer.md`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jmdc_core::codec::QuantMode;
use jmdc_core::optimizer::{
    candidate_grid, Conditions, Objective, Optimizer, OptimizerConfig, Profile, VariantProfile,
};

fn variant(width: usize) -> VariantProfile {
    let mut shapes = vec![vec![3, 32, 32]];
    for i in 0..14 {
        let hw = 32 >> (i / 3);
        shapes.push(vec![width * (1 + i / 3), hw.max(1), hw.max(1)]);
    }
    shapes.push(vec![10]);
    VariantProfile {
        name: format!("w{width}"),
        edge_layer_us: (0..15).map(|i| 100.0 + 10.0 * i as f64).collect(),
        cloud_layer_us: (0..15).map(|i| 10.0 + i as f64).collect(),
        boundary_shapes: shapes,
    }
}

#[test]
fn one_decision_over_2696_candidates_takes_under_a_millisecond() {
    let p = Profile::new(vec![variant(64), variant(48), variant(32), variant(16)]);
    let rhos = [1.0, 0.75, 0.5, 0.35, 0.25, 0.1];
    let modes = [
        QuantMode::Bits(2),
        QuantMode::Bits(3),
        QuantMode::Bits(4),
        QuantMode::Bits(5),
        QuantMode::Bits(6),
        QuantMode::Bits(8),
        QuantMode::F16,
        QuantMode::F32,
    ];
    let mut k = 0u32;
    let cands = candidate_grid(&p, &rhos, &modes, |_, _, _| {
        k += 1;
        Some(0.8 + (k % 17) as f32 / 100.0)
    });
    assert_eq!(cands.len(), 2696);
    let opt = Optimizer::new(p, cands, OptimizerConfig::default()).unwrap();
    let c = Conditions {
        bandwidth_bps: 10e6,
        rtt_s: 0.005,
        edge_load_factor: 1.5,
        cloud_available: true,
    };
    for obj in [
        Objective::MinLatency {
            accuracy_floor: 0.9,
        },
        Objective::MaxAccuracy {
            latency_budget_s: 0.005,
        },
        Objective::MaxThroughput {
            accuracy_floor: 0.9,
        },
    ] {
        let current = opt.decide(&c, &obj, None).plan;
        let mut best = Duration::MAX;
        for _ in 0..25 {
            let t = Instant::now();
            let d = opt.decide(&c, &obj, Some(&current));
            best = best.min(t.elapsed());
            assert!(!d.reason.is_empty());
        }
        assert!(
            best <= Duration::from_millis(1),
            "{obj:?}: best of 25 decisions took {best:?}"
        );
    }
}
