//! Scenario tests of the optimizer on a synthetic profile whose optimum can be worked out by hand.
//!
//! The profile (one variant, 4 layers, codec and protocol costs zero unless a test says otherwise):
//!
//! | layer | edge µs | cloud µs | output shape |
//! | --- | --- | --- | --- |
//! | input | | | `[3, 32, 32]` (3,072 B as 8-bit image) |
//! | 0 | 500 | 50 | `[32, 16, 16]` |
//! | 1 | 500 | 50 | `[64, 8, 8]` |
//! | 2 | 500 | 50 | `[64, 4, 4]` |
//! | 3 | 20,000 | 2,000 | `[10]` |
//!
//! Accuracy = 0.92 − mode loss (f32/f16 0, q8 0.001, q4 0.01, q2 0.05) − ρ loss (1 → 0, 0.5 → 0.01,
//! 0.25 → 0.04). Codec sizes (header 8 + 4·rank + 16 bytes, mask ⌈H·W/8⌉ when ρ < 1):
//! split 3, q4, ρ 0.25: 4 positions · 64 channels · 4 bits = 128 B + 36 + 2 = 166 B;
//! split 2, q4, ρ 0.25: 16 · 64 · 4 bits = 512 B + 36 + 8 = 556 B;
//! split 1, q4, ρ 0.25: 64 · 32 · 4 bits = 1,024 B + 36 + 32 = 1,092 B.
#![allow(clippy::unwrap_used)]

use jmdc_proto::codec::{compact, encoded_len, CodecParams, QuantMode};
use jmdc_proto::optimizer::{
    candidate_grid, Candidate, CodecCost, Conditions, InputCodec, Objective, Optimizer,
    OptimizerConfig, OptimizerError, Profile, VariantProfile, DEFAULT_HEADER_OVERHEAD_BYTES,
};

const MODES: [QuantMode; 5] = [
    QuantMode::F32,
    QuantMode::F16,
    QuantMode::Bits(8),
    QuantMode::Bits(4),
    QuantMode::Bits(2),
];
const RHOS: [f32; 3] = [1.0, 0.5, 0.25];

fn variant() -> VariantProfile {
    VariantProfile {
        name: "full".into(),
        edge_layer_us: vec![500.0, 500.0, 500.0, 20_000.0],
        cloud_layer_us: vec![50.0, 50.0, 50.0, 2_000.0],
        boundary_shapes: vec![
            vec![3, 32, 32],
            vec![32, 16, 16],
            vec![64, 8, 8],
            vec![64, 4, 4],
            vec![10],
        ],
    }
}

fn accuracy(codec: Option<CodecParams>) -> f32 {
    let Some(c) = codec else { return 0.92 };
    let mode_loss = match c.mode {
        QuantMode::F32 | QuantMode::F16 => 0.0,
        QuantMode::Bits(8) => 0.001,
        QuantMode::Bits(4) => 0.01,
        _ => 0.05,
    };
    let rho_loss = if c.keep_ratio >= 1.0 {
        0.0
    } else if c.keep_ratio >= 0.5 {
        0.01
    } else {
        0.04
    };
    0.92 - mode_loss - rho_loss
}

fn profile() -> Profile {
    let mut p = Profile::new(vec![variant()]);
    p.header_overhead_bytes = 0;
    p
}

fn optimizer_with(profile: Profile, config: OptimizerConfig) -> Optimizer {
    let cands = candidate_grid(&profile, &RHOS, &MODES, |_, _, c| Some(accuracy(c)));
    Optimizer::new(profile, cands, config).unwrap()
}

fn optimizer() -> Optimizer {
    optimizer_with(profile(), OptimizerConfig::default())
}

fn cond(bandwidth_bps: f64, rtt_s: f64, load: f64) -> Conditions {
    Conditions {
        bandwidth_bps,
        rtt_s,
        edge_load_factor: load,
        cloud_available: true,
    }
}

fn min_latency(floor: f32) -> Objective {
    Objective::MinLatency {
        accuracy_floor: floor,
    }
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn grid_has_every_combination() {
    let opt = optimizer();
    // cloud-only + 3 inner splits × 3 ρ × 5 modes + edge-only.
    assert_eq!(opt.candidates().len(), 1 + 3 * 3 * 5 + 1);
}

#[test]
fn bytes_are_the_compact_body_of_the_exact_encoded_len_plus_overhead() {
    let mut p = profile();
    p.header_overhead_bytes = 40;
    let opt = optimizer_with(p, OptimizerConfig::default());
    let shapes = variant().boundary_shapes;
    for (i, c) in opt.candidates().iter().enumerate() {
        let expected = match (c.split, c.codec) {
            (0, None) => 3072 + 40,
            (4, None) => 0,
            (s, Some(codec)) => {
                let full = encoded_len(&shapes[s], &codec).unwrap();
                compact::body_len(full, shapes[s].len(), codec.mode) + 40
            }
            _ => unreachable!(),
        };
        assert_eq!(opt.bytes(i), Some(expected), "candidate {c:?}");
        assert_eq!(opt.plan(i).unwrap().bytes, expected);
    }
    // The hand-computed size from the module docs.
    let i = opt
        .candidates()
        .iter()
        .position(|c| {
            c.split == 3
                && c.codec
                    == Some(CodecParams {
                        keep_ratio: 0.25,
                        mode: QuantMode::Bits(4),
                    })
        })
        .unwrap();
    // The compact body: the 36 B codec header less the 8 B of min and scale stays home.
    assert_eq!(opt.bytes(i), Some(166 - 28 + 40));
    assert_eq!(
        Profile::new(vec![variant()]).header_overhead_bytes,
        DEFAULT_HEADER_OVERHEAD_BYTES
    );
}

#[test]
fn latency_model_matches_hand_computation() {
    let mut p = profile();
    p.encode = CodecCost {
        fixed_us: 100.0,
        per_element_us: 0.01,
        per_byte_us: 0.0,
    };
    p.decode = CodecCost {
        fixed_us: 50.0,
        per_element_us: 0.0,
        per_byte_us: 0.1,
    };
    let opt = optimizer_with(p, OptimizerConfig::default());
    let i = opt
        .candidates()
        .iter()
        .position(|c| {
            c.split == 3
                && c.codec
                    == Some(CodecParams {
                        keep_ratio: 0.25,
                        mode: QuantMode::Bits(4),
                    })
        })
        .unwrap();
    let e = opt.evaluate(i, &cond(1e6, 0.005, 2.0)).unwrap();
    let edge = 3.0 * 500e-6 * 2.0;
    let encode = (100.0 + 0.01 * 1024.0) * 1e-6;
    // The compact body of the 166-byte encoding: 138 B on the wire.
    let transfer = 138.0 * 8.0 / 1e6;
    let cloud = 2000e-6;
    let decode = (50.0 + 0.1 * 138.0) * 1e-6;
    assert!(approx(e.breakdown.edge_s, edge));
    assert!(approx(e.breakdown.encode_s, encode));
    assert!(approx(e.breakdown.transfer_s, transfer));
    assert!(approx(e.breakdown.rtt_s, 0.005));
    assert!(approx(e.breakdown.cloud_s, cloud));
    assert!(approx(e.breakdown.decode_s, decode));
    assert!(approx(
        e.latency_s,
        edge + encode + transfer + 0.005 + cloud + decode
    ));
    // Pipelined: stages are edge+encode, transfer, cloud+decode; RTT does not count.
    let bottleneck = (edge + encode).max(transfer).max(cloud + decode);
    assert!(approx(e.throughput_fps, 1.0 / bottleneck));

    // Edge-only: all edge layers × load, no network.
    let edge_only = opt.candidates().iter().position(|c| c.split == 4).unwrap();
    let e = opt.evaluate(edge_only, &cond(1e6, 0.005, 2.0)).unwrap();
    assert!(approx(e.latency_s, 21.5e-3 * 2.0));
    assert!(approx(e.throughput_fps, 1.0 / (21.5e-3 * 2.0)));
    assert_eq!(e.breakdown.transfer_s, 0.0);
    assert_eq!(e.breakdown.rtt_s, 0.0);

    // Cloud-only: the 3,072-byte image, every cloud layer.
    let cloud_only = opt.candidates().iter().position(|c| c.split == 0).unwrap();
    let e = opt.evaluate(cloud_only, &cond(1e6, 0.005, 2.0)).unwrap();
    assert!(approx(e.latency_s, 3072.0 * 8.0 / 1e6 + 0.005 + 2150e-6));
}

#[test]
fn high_bandwidth_slow_edge_picks_cloud_only() {
    // Cloud-only: 0.025 + 1 + 2.15 = 3.175 ms; the best split (1) needs ≥ 0.5 + 1 + 2.1 = 3.6 ms.
    let d = optimizer().decide(&cond(1e9, 0.001, 1.0), &min_latency(0.9), None);
    assert!(d.feasible);
    assert!(d.switched);
    assert!(d.plan.is_cloud_only(), "{}", d.reason);
    assert!(approx(
        d.predicted_latency_s,
        3072.0 * 8.0 / 1e9 + 0.001 + 2150e-6
    ));
    assert!(d.reason.contains("min latency"), "{}", d.reason);
}

#[test]
fn low_bandwidth_picks_late_split_with_few_bits() {
    // 1 Mbit/s, 5 ms RTT, accuracy ≥ 85 %: split 3, q4, ρ 0.25 (138 B on the wire, 87 %):
    // 1.5 + 1.104 + 5 + 2 = 9.60 ms; edge-only 21.5 ms; cloud-only 31.7 ms.
    let d = optimizer().decide(&cond(1e6, 0.005, 1.0), &min_latency(0.85), None);
    assert!(d.feasible);
    assert_eq!(d.plan.split, 3, "{}", d.reason);
    assert_eq!(
        d.plan.codec,
        Some(CodecParams {
            keep_ratio: 0.25,
            mode: QuantMode::Bits(4)
        })
    );
    assert!(approx(
        d.predicted_latency_s,
        1.5e-3 + 138.0 * 8.0 / 1e6 + 0.005 + 2e-3
    ));
    assert!((d.predicted_accuracy - 0.87).abs() < 1e-6);
}

#[test]
fn very_low_bandwidth_picks_edge_only() {
    // 50 kbit/s: even 166 B take 26.6 ms; edge-only takes 21.5 ms.
    let d = optimizer().decide(&cond(50e3, 0.005, 1.0), &min_latency(0.85), None);
    assert!(d.feasible);
    assert!(d.plan.is_edge_only(), "{}", d.reason);
    assert_eq!(d.plan.bytes, 0);
    assert!(approx(d.predicted_latency_s, 21.5e-3));
}

#[test]
fn heavily_loaded_edge_picks_cloud_only() {
    let opt = optimizer();
    // 5 Mbit/s, 2 ms RTT. Load 1: split 3 q4 ρ 0.25 = 1.5 + 0.27 + 2 + 2 = 5.77 ms beats
    // split 2 (1 + 0.89 + 2 + 2.05 = 5.94 ms) and cloud-only (4.92 + 2 + 2.15 = 9.07 ms).
    let d = opt.decide(&cond(5e6, 0.002, 1.0), &min_latency(0.85), None);
    assert_eq!(d.plan.split, 3, "{}", d.reason);
    // Load 10: split 1 takes 5 + 1.75 + 2 + 2.1 = 10.85 ms, so cloud-only (9.07 ms) wins.
    let d = opt.decide(&cond(5e6, 0.002, 10.0), &min_latency(0.85), None);
    assert!(d.plan.is_cloud_only(), "{}", d.reason);
    assert!(approx(
        d.predicted_latency_s,
        3072.0 * 8.0 / 5e6 + 0.002 + 2150e-6
    ));
}

#[test]
fn infeasible_accuracy_floor_returns_most_accurate_with_reason() {
    // Nothing reaches 95 %. The most accurate plans (92 %) are cloud-only, edge-only and every
    // lossless split; at 1 Gbit/s cloud-only is the fastest of them.
    let d = optimizer().decide(&cond(1e9, 0.001, 1.0), &min_latency(0.95), None);
    assert!(!d.feasible);
    assert!((d.predicted_accuracy - 0.92).abs() < 1e-6);
    assert!(d.plan.is_cloud_only(), "{}", d.reason);
    assert!(
        d.reason
            .contains("no plan meets accuracy ≥ 95.0 %; closest:"),
        "{}",
        d.reason
    );
    // At 50 kbit/s the fastest 92 % plan is edge-only.
    let d = optimizer().decide(&cond(50e3, 0.001, 1.0), &min_latency(0.95), None);
    assert!(!d.feasible);
    assert!(d.plan.is_edge_only(), "{}", d.reason);
}

#[test]
fn max_accuracy_within_budget() {
    let opt = optimizer();
    // Generous budget: a 92 % plan. At 1 Gbit/s cloud-only (3.175 ms) is one.
    let d = opt.decide(
        &cond(1e9, 0.001, 1.0),
        &Objective::MaxAccuracy {
            latency_budget_s: 0.05,
        },
        None,
    );
    assert!(d.feasible);
    assert!((d.predicted_accuracy - 0.92).abs() < 1e-6);
    // Ties in accuracy go to the lower latency: cloud-only.
    assert!(d.plan.is_cloud_only(), "{}", d.reason);

    // 1 Mbit/s, 5 ms RTT, 10 ms budget: split 3 q4 ρ 0.25 (87 %, 9.83 ms) fits; split 3 q4 ρ 0.5
    // (90 %: 256 + 36 + 2 = 294 B → 2.35 ms → 10.85 ms) does not; q8 ρ 0.25 (87.9 %: 256 + 38 =
    // 294 B) neither; q2 ρ 0.5 (86 %: 128 + 38 = 166 B → 9.83 ms) fits but is less accurate.
    let d = opt.decide(
        &cond(1e6, 0.005, 1.0),
        &Objective::MaxAccuracy {
            latency_budget_s: 0.010,
        },
        None,
    );
    assert!(d.feasible, "{}", d.reason);
    assert!(d.predicted_latency_s <= 0.010);
    assert!((d.predicted_accuracy - 0.87).abs() < 1e-6, "{}", d.reason);
}

#[test]
fn infeasible_budget_returns_fastest() {
    let opt = optimizer();
    let c = cond(1e6, 0.005, 1.0);
    let d = opt.decide(
        &c,
        &Objective::MaxAccuracy {
            latency_budget_s: 0.001,
        },
        None,
    );
    assert!(!d.feasible);
    let fastest = (0..opt.candidates().len())
        .map(|i| opt.evaluate(i, &c).unwrap().latency_s)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(d.predicted_latency_s, fastest);
    assert!(
        d.reason
            .contains("no plan meets latency ≤ 1.000 ms; fastest:"),
        "{}",
        d.reason
    );
}

#[test]
fn max_throughput_picks_best_bottleneck() {
    // 1 Gbit/s, 1 ms RTT. Min latency: cloud-only (3.175 ms), but its cloud stage is 2.15 ms
    // (465 fps). Split 3: stages 1.5 ms edge, ~0 transfer, 2.0 ms cloud → 500 fps.
    let opt = optimizer();
    let c = cond(1e9, 0.001, 1.0);
    let lat = opt.decide(&c, &min_latency(0.9), None);
    assert!(lat.plan.is_cloud_only());
    let d = opt.decide(
        &c,
        &Objective::MaxThroughput {
            accuracy_floor: 0.9,
        },
        None,
    );
    assert!(d.feasible);
    assert_eq!(d.plan.split, 3, "{}", d.reason);
    assert!(approx(d.predicted_throughput_fps, 500.0));
    // RTT does not limit a pipelined stream.
    let far = opt.decide(
        &cond(1e9, 0.5, 1.0),
        &Objective::MaxThroughput {
            accuracy_floor: 0.9,
        },
        None,
    );
    assert!(approx(far.predicted_throughput_fps, 500.0));
}

#[test]
fn cloud_unavailable_allows_only_edge_only() {
    let opt = optimizer();
    let mut c = cond(1e9, 0.001, 1.0);
    c.cloud_available = false;
    let current = opt
        .decide(&cond(1e9, 0.001, 1.0), &min_latency(0.9), None)
        .plan;
    assert!(current.is_cloud_only());
    for objective in [
        min_latency(0.9),
        Objective::MaxAccuracy {
            latency_budget_s: 1.0,
        },
        Objective::MaxThroughput {
            accuracy_floor: 0.9,
        },
    ] {
        let d = opt.decide(&c, &objective, Some(&current));
        assert!(d.plan.is_edge_only(), "{}", d.reason);
        assert!(d.feasible);
        assert!(d.switched);
        assert!(d.reason.starts_with("cloud unavailable"), "{}", d.reason);
        assert!(d.reason.contains("needs the cloud"), "{}", d.reason);
    }
}

#[test]
fn cloud_unavailable_without_edge_only_candidate_is_infeasible() {
    let p = profile();
    let cands: Vec<Candidate> =
        candidate_grid(&p, &RHOS, &MODES, |_, s, c| (s != 4).then_some(accuracy(c)));
    let opt = Optimizer::new(p, cands, OptimizerConfig::default()).unwrap();
    let mut c = cond(1e9, 0.001, 1.0);
    c.cloud_available = false;
    let d = opt.decide(&c, &min_latency(0.9), None);
    assert!(!d.feasible);
    assert!(d.reason.contains("no edge-only plan"), "{}", d.reason);
}

#[test]
fn hysteresis_keeps_plan_on_noise_and_switches_on_big_change() {
    let opt = optimizer();
    let obj = min_latency(0.85);
    let first = opt.decide(&cond(5e6, 0.002, 1.0), &obj, None);
    assert_eq!(first.plan.split, 3);
    // ±10 % bandwidth noise, RTT jitter: keep.
    for (bw, rtt) in [(4.5e6, 0.0021), (5.5e6, 0.0019), (5.2e6, 0.002)] {
        let d = opt.decide(&cond(bw, rtt, 1.0), &obj, Some(&first.plan));
        assert_eq!(d.plan, first.plan, "{}", d.reason);
        assert!(!d.switched);
    }
    // 8 Mbit/s: split 2 (1 + 0.556 + 2 + 2.05 = 5.606 ms) beats split 3 (1.5 + 0.166 + 2 + 2 =
    // 5.666 ms) by 1 %: keep.
    let d = opt.decide(&cond(8e6, 0.002, 1.0), &obj, Some(&first.plan));
    assert_eq!(d.plan, first.plan, "{}", d.reason);
    assert!(d.reason.starts_with("kept current plan"), "{}", d.reason);
    assert!(d.reason.contains("split 2/4"), "{}", d.reason);
    let fresh = opt.decide(&cond(8e6, 0.002, 1.0), &obj, None);
    assert_eq!(fresh.plan.split, 2, "{}", fresh.reason);
    // Load 10 makes the split plan 20 ms vs cloud-only 9.07 ms: switch.
    let d = opt.decide(&cond(5e6, 0.002, 10.0), &obj, Some(&first.plan));
    assert!(d.switched);
    assert!(d.plan.is_cloud_only(), "{}", d.reason);
    assert!(d.reason.starts_with("switched to"), "{}", d.reason);
    assert!(d.reason.contains("improves latency by"), "{}", d.reason);
    // Back to load 1: split 3 is 36 % faster than cloud-only, beyond the margin.
    let back = opt.decide(&cond(5e6, 0.002, 1.0), &obj, Some(&d.plan));
    assert_eq!(back.plan.split, 3);
    assert!(back.switched);
}

#[test]
fn hysteresis_margin_is_configurable_and_gain_is_relative() {
    // Current: cloud-only. At 5 Mbit/s, 2 ms RTT, load 1.42: split 2 q4 ρ .25 takes
    // 1.42 + 0.89 + 2 + 2.05 = 6.36 ms vs cloud-only 9.07 ms: 30 % better.
    let c = cond(5e6, 0.002, 1.42);
    let obj = min_latency(0.85);
    let base = optimizer();
    let current = base.decide(&cond(5e6, 0.002, 10.0), &obj, None).plan;
    assert!(current.is_cloud_only());
    let d = base.decide(&c, &obj, Some(&current));
    assert!(d.switched, "{}", d.reason);
    let lazy = optimizer_with(
        profile(),
        OptimizerConfig {
            hysteresis_margin: 0.5,
            ..OptimizerConfig::default()
        },
    );
    let d = lazy.decide(&c, &obj, Some(&current));
    assert!(!d.switched, "{}", d.reason);
    assert!(d.plan.is_cloud_only());
    assert!(d.reason.starts_with("kept current plan"), "{}", d.reason);
    assert!(d.reason.contains("(≤ 50.0 % margin)"), "{}", d.reason);
}

#[test]
fn violated_constraint_switches_at_once() {
    let opt = optimizer();
    // Current: split 3 q4 ρ .25 at 87 %; the floor rises to 90 %.
    let current = opt
        .decide(&cond(1e6, 0.005, 1.0), &min_latency(0.85), None)
        .plan;
    assert!((current.accuracy - 0.87).abs() < 1e-6);
    let d = opt.decide(&cond(1e6, 0.005, 1.0), &min_latency(0.90), Some(&current));
    assert!(d.switched);
    assert!(d.predicted_accuracy >= 0.90);
    assert!(
        d.reason.contains("violates accuracy ≥ 90.0 %"),
        "{}",
        d.reason
    );
    // Budget: current plan now exceeds the budget even though a near-identical plan fits.
    let cur = opt
        .decide(
            &cond(1e6, 0.005, 1.0),
            &Objective::MaxAccuracy {
                latency_budget_s: 0.010,
            },
            None,
        )
        .plan;
    // 138 B at 0.7 Mbit/s: 1.5 + 1.58 + 5 + 2 = 10.08 ms.
    let d = opt.decide(
        &cond(0.7e6, 0.005, 1.0),
        &Objective::MaxAccuracy {
            latency_budget_s: 0.010,
        },
        Some(&cur),
    );
    assert!(d.predicted_latency_s <= 0.010 || !d.feasible);
    assert!(d.switched, "{}", d.reason);
}

#[test]
fn current_plan_matched_by_fields_when_index_is_stale() {
    let opt = optimizer();
    let c = cond(5e6, 0.002, 1.0);
    let obj = min_latency(0.85);
    let mut plan = opt.decide(&c, &obj, None).plan;
    plan.candidate = 9999;
    let d = opt.decide(&c, &obj, Some(&plan));
    assert!(!d.switched);
    assert_ne!(d.plan.candidate, 9999);
    // A plan that is not in the set is ignored.
    plan.split = 2;
    plan.codec = None;
    let d = opt.decide(&c, &obj, Some(&plan));
    assert!(d.switched);
    assert!(
        d.reason.contains("not in the candidate set"),
        "{}",
        d.reason
    );
}

#[test]
fn nonsense_conditions_still_answer() {
    let opt = optimizer();
    for c in [
        cond(0.0, 0.001, 1.0),
        cond(f64::NAN, f64::NAN, f64::NAN),
        cond(-1.0, -1.0, -1.0),
        cond(f64::INFINITY, 0.0, 1.0),
        cond(1e6, f64::INFINITY, f64::INFINITY),
    ] {
        for obj in [
            min_latency(0.85),
            Objective::MaxAccuracy {
                latency_budget_s: 0.01,
            },
            Objective::MaxThroughput {
                accuracy_floor: 0.85,
            },
        ] {
            let d = opt.decide(&c, &obj, None);
            assert!(
                !d.predicted_latency_s.is_nan(),
                "{c:?} {obj:?}: {}",
                d.reason
            );
            assert!(!d.predicted_throughput_fps.is_nan(), "{c:?} {obj:?}");
            assert!(!d.reason.is_empty());
        }
    }
    // No bandwidth: only edge-only has a finite latency.
    let d = opt.decide(&cond(0.0, 0.001, 1.0), &min_latency(0.85), None);
    assert!(d.plan.is_edge_only());
}

#[test]
fn pruning_drops_dominated_and_keeps_decisions() {
    let p = profile();
    let mut cands = candidate_grid(&p, &RHOS, &MODES, |_, _, c| Some(accuracy(c)));
    // An exact duplicate and a dominated twin (same bytes, lower accuracy).
    let dup = cands[5];
    let mut worse = cands[6];
    worse.accuracy -= 0.1;
    cands.push(dup);
    cands.push(worse);
    let full = Optimizer::new(p, cands, OptimizerConfig::NO_HYSTERESIS).unwrap();
    let mut pruned = full.clone();
    let dropped = pruned.prune_dominated();
    assert!(dropped >= 2, "dropped {dropped}");
    // f32 vs f16 at the same split/ρ: f16 has fewer bytes and the same accuracy → f32 dropped.
    assert!(pruned
        .candidates()
        .iter()
        .all(|c| c.codec.is_none_or(|k| k.mode != QuantMode::F32)));
    // The [64,4,4] at ρ 1 vs ρ .5 with q2/q4: every survivor is on its group's Pareto front.
    for (i, a) in pruned.candidates().iter().enumerate() {
        for (j, b) in pruned.candidates().iter().enumerate() {
            if i == j || (a.variant, a.split) != (b.variant, b.split) {
                continue;
            }
            let (ba, bb) = (pruned.bytes(i).unwrap(), pruned.bytes(j).unwrap());
            let dominated = bb <= ba && b.accuracy >= a.accuracy;
            assert!(!dominated, "{a:?} dominated by {b:?}");
        }
    }
    for c in [
        cond(1e9, 0.001, 1.0),
        cond(1e6, 0.005, 1.0),
        cond(5e6, 0.002, 10.0),
        cond(50e3, 0.005, 1.0),
    ] {
        for obj in [
            min_latency(0.85),
            min_latency(0.99),
            Objective::MaxAccuracy {
                latency_budget_s: 0.01,
            },
            Objective::MaxThroughput {
                accuracy_floor: 0.88,
            },
        ] {
            let a = full.decide(&c, &obj, None);
            let b = pruned.decide(&c, &obj, None);
            assert_eq!(
                a.predicted_latency_s, b.predicted_latency_s,
                "{obj:?} {c:?}"
            );
            assert_eq!(a.predicted_accuracy, b.predicted_accuracy);
            assert_eq!(a.predicted_throughput_fps, b.predicted_throughput_fps);
            assert_eq!(a.feasible, b.feasible);
        }
    }
}

#[test]
fn construction_errors() {
    let p = profile();
    let codec = CodecParams {
        keep_ratio: 0.5,
        mode: QuantMode::Bits(4),
    };
    let cfg = OptimizerConfig::default();
    let err = |cands: Vec<Candidate>| Optimizer::new(profile(), cands, cfg).unwrap_err();
    assert_eq!(
        Optimizer::new(p.clone(), vec![], cfg).unwrap_err(),
        OptimizerError::NoCandidates
    );
    assert!(matches!(
        err(vec![Candidate::cloud_only(1, 0.9)]),
        OptimizerError::UnknownVariant { .. }
    ));
    assert!(matches!(
        err(vec![Candidate::split(0, 5, codec, 0.9)]),
        OptimizerError::SplitOutOfRange { .. }
    ));
    assert!(matches!(
        err(vec![Candidate {
            variant: 0,
            split: 2,
            codec: None,
            input: InputCodec::Raw,
            accuracy: 0.9,
            mean_payload_bytes: None,
        }]),
        OptimizerError::CodecPlacement { .. }
    ));
    assert!(matches!(
        err(vec![Candidate {
            variant: 0,
            split: 0,
            codec: Some(codec),
            input: InputCodec::Raw,
            accuracy: 0.9,
            mean_payload_bytes: None,
        }]),
        OptimizerError::CodecPlacement { .. }
    ));
    assert!(matches!(
        err(vec![Candidate::split(
            0,
            2,
            CodecParams {
                keep_ratio: 0.5,
                mode: QuantMode::Bits(7)
            },
            0.9
        )]),
        OptimizerError::Codec { .. }
    ));
    assert!(matches!(
        err(vec![Candidate::cloud_only(0, f32::NAN)]),
        OptimizerError::InvalidAccuracy { .. }
    ));
    assert!(matches!(
        err(vec![Candidate::edge_only(0, 4, 1.5)]),
        OptimizerError::InvalidAccuracy { .. }
    ));
    let mut bad = p.clone();
    bad.variants[0].cloud_layer_us.pop();
    assert!(matches!(
        Optimizer::new(bad, vec![Candidate::cloud_only(0, 0.9)], cfg).unwrap_err(),
        OptimizerError::InvalidVariant { .. }
    ));
    let mut bad = p.clone();
    bad.variants[0].boundary_shapes.pop();
    assert!(matches!(
        Optimizer::new(bad, vec![Candidate::cloud_only(0, 0.9)], cfg).unwrap_err(),
        OptimizerError::InvalidVariant { .. }
    ));
    let mut bad = p.clone();
    bad.variants[0].edge_layer_us[0] = -1.0;
    assert!(matches!(
        Optimizer::new(bad, vec![Candidate::cloud_only(0, 0.9)], cfg).unwrap_err(),
        OptimizerError::InvalidVariant { .. }
    ));
    let mut bad = p.clone();
    bad.encode.per_byte_us = f64::NAN;
    assert_eq!(
        Optimizer::new(bad, vec![Candidate::cloud_only(0, 0.9)], cfg).unwrap_err(),
        OptimizerError::InvalidCost("encode")
    );
    assert_eq!(
        Optimizer::new(
            Profile::new(vec![]),
            vec![Candidate::cloud_only(0, 0.9)],
            cfg
        )
        .unwrap_err(),
        OptimizerError::NoVariants
    );
    assert!(matches!(
        Optimizer::new(
            p,
            vec![Candidate::cloud_only(0, 0.9)],
            OptimizerConfig {
                hysteresis_margin: -0.1,
                accuracy_margin: 0.0
            }
        )
        .unwrap_err(),
        OptimizerError::InvalidConfig(_)
    ));
}

#[test]
fn decision_serializes_and_plan_displays() {
    let d = optimizer().decide(&cond(1e6, 0.005, 1.0), &min_latency(0.85), None);
    let json = serde_json::to_string(&d).unwrap();
    let back: jmdc_proto::optimizer::Decision = serde_json::from_str(&json).unwrap();
    assert_eq!(back.plan, d.plan);
    assert_eq!(
        d.plan.to_string(),
        format!("#{} 'full' split 3/4 ρ=0.25 q4 (138 B)", d.plan.candidate)
    );
}

#[test]
fn infeasible_fallback_has_hysteresis_too() {
    let opt = optimizer();
    let c = cond(1e6, 0.005, 1.0);
    let budget = Objective::MaxAccuracy {
        latency_budget_s: 0.001,
    };
    // Fastest: split 3 q2 ρ .25 (74 B on the wire) → 9.092 ms. The current plan, split 3 q4
    // ρ .25 (138 B, 9.604 ms), is only 5.6 % slower: keep it.
    let current = opt.decide(&c, &min_latency(0.85), None).plan;
    let d = opt.decide(&c, &budget, Some(&current));
    assert!(!d.feasible);
    assert!(!d.switched, "{}", d.reason);
    assert_eq!(d.plan, current);
    assert!(d.reason.contains("; kept current plan"), "{}", d.reason);
    // Cloud-only (31.7 ms) is far slower: switch to the fastest.
    let cloud_only = opt.plan(0).unwrap();
    assert!(cloud_only.is_cloud_only());
    let d = opt.decide(&c, &budget, Some(&cloud_only));
    assert!(!d.feasible);
    assert!(d.switched);
    assert_eq!(d.plan.bytes, 74, "{}", d.reason);
    assert!(
        d.reason.contains("; switched from current plan"),
        "{}",
        d.reason
    );
}

// ---------------------------------------------------------------------------------------------
// Cloud-only with a JPEG input
// ---------------------------------------------------------------------------------------------
//
// The same 4-layer profile plus two cloud-only JPEG candidates, as a calibration table gives
// them: q90 with a mean of 1,100 B at 91.5 % and q50 with 880 B at 90.0 % (the raw image is
// 3,072 B at 92.0 %). JPEG costs: encode 50 µs on the edge, decode 25 µs on the cloud (fixed);
// the raw image path is free. Header overhead 0.
//
// Cloud-only latency = encode + 8·bytes / B + RTT + 2,150 µs (all cloud layers) + decode, so
// jpeg90 beats raw when 8·(3,072 − 1,100) / B > 75 µs, i.e. below B* = 15,776 / 75e-6 bit/s
// = 210.35 Mbit/s, and raw wins above.

const JPEG90_BYTES: u32 = 1_100;
const JPEG50_BYTES: u32 = 880;

fn jpeg_profile() -> Profile {
    let mut p = profile();
    p.jpeg_encode = CodecCost {
        fixed_us: 50.0,
        ..CodecCost::ZERO
    };
    p.jpeg_decode = CodecCost {
        fixed_us: 25.0,
        ..CodecCost::ZERO
    };
    p
}

fn jpeg_optimizer(config: OptimizerConfig) -> Optimizer {
    let profile = jpeg_profile();
    let mut cands = candidate_grid(&profile, &RHOS, &MODES, |_, _, c| Some(accuracy(c)));
    cands.push(Candidate::cloud_only_jpeg(0, 90, JPEG90_BYTES, 0.915));
    cands.push(Candidate::cloud_only_jpeg(0, 50, JPEG50_BYTES, 0.900));
    Optimizer::new(profile, cands, config).unwrap()
}

fn jpeg_index(opt: &Optimizer, quality: u8) -> usize {
    opt.candidates()
        .iter()
        .position(|c| c.input.jpeg_quality() == Some(quality))
        .unwrap()
}

#[test]
fn jpeg_candidate_bytes_costs_and_latency() {
    let mut p = jpeg_profile();
    p.header_overhead_bytes = 40;
    let mut cands = vec![Candidate::cloud_only(0, 0.92)];
    cands.push(Candidate::cloud_only_jpeg(0, 90, JPEG90_BYTES, 0.915));
    let opt = Optimizer::new(p, cands, OptimizerConfig::default()).unwrap();
    assert_eq!(opt.bytes(0), Some(3072 + 40));
    assert_eq!(opt.bytes(1), Some(1100 + 40));
    let c = cond(10e6, 0.004, 3.0);
    let e = opt.evaluate(1, &c).unwrap();
    assert!(approx(e.breakdown.encode_s, 50e-6));
    assert!(approx(e.breakdown.decode_s, 25e-6));
    assert!(approx(e.breakdown.transfer_s, 1140.0 * 8.0 / 10e6));
    assert_eq!(
        e.breakdown.edge_s, 0.0,
        "no edge layers, load does not matter"
    );
    assert!(approx(
        e.latency_s,
        50e-6 + 1140.0 * 8.0 / 10e6 + 0.004 + 2150e-6 + 25e-6
    ));
    // Pipelined: edge stage = encode, net = transfer, cloud = layers + decode.
    assert!(approx(
        e.throughput_fps,
        1.0 / (1140.0 * 8.0 / 10e6_f64).max(2175e-6)
    ));
    let plan = opt.plan(1).unwrap();
    assert!(plan.is_cloud_only());
    assert_eq!(
        plan.input,
        InputCodec::Jpeg {
            quality: 90,
            mean_bytes: 1100
        }
    );
    assert_eq!(plan.to_string(), "#1 'full' cloud-only (jpeg q90, 1140 B)");
    assert_eq!(opt.plan(0).unwrap().input, InputCodec::Raw);
}

#[test]
fn low_bandwidth_fast_cloud_picks_jpeg_cloud_only() {
    // 2 Mbit/s, 10 ms RTT, a busy edge (load 10): every split pays ≥ 5 ms of edge layers.
    let opt = jpeg_optimizer(OptimizerConfig::NO_HYSTERESIS);
    let c = cond(2e6, 0.010, 10.0);
    let d = opt.decide(&c, &min_latency(0.91), None);
    assert!(d.feasible, "{}", d.reason);
    assert_eq!(d.plan.candidate, jpeg_index(&opt, 90), "{}", d.reason);
    assert_eq!(d.plan.input.jpeg_quality(), Some(90));
    // By hand: 50 µs + 1,100·8 / 2e6 + 10 ms + 2,150 µs + 25 µs = 16.625 ms.
    assert!(
        approx(d.predicted_latency_s, 16.625e-3),
        "{}",
        d.predicted_latency_s
    );
    // Raw cloud-only would take 12.288 ms to send alone.
    let raw = opt.evaluate(0, &c).unwrap();
    assert!(approx(raw.latency_s, 3072.0 * 8.0 / 2e6 + 0.010 + 2150e-6));
    assert!(
        d.reason.contains("cloud-only (jpeg q90, 1100 B)"),
        "{}",
        d.reason
    );
    // A lower floor admits jpeg50 (880 B), which is then faster still.
    let d = opt.decide(&c, &min_latency(0.895), None);
    assert_eq!(d.plan.input.jpeg_quality(), Some(50), "{}", d.reason);
}

#[test]
fn high_bandwidth_picks_raw_cloud_only_and_crossover_is_where_predicted() {
    let opt = jpeg_optimizer(OptimizerConfig::NO_HYSTERESIS);
    let crossover = 8.0 * (3072.0 - f64::from(JPEG90_BYTES)) / 75e-6; // 210.35 Mbit/s
    for (bw, raw_expected) in [
        (1e9, true),
        (crossover * 1.05, true),
        (crossover * 0.95, false),
        (50e6, false),
    ] {
        let d = opt.decide(&cond(bw, 0.001, 10.0), &min_latency(0.91), None);
        assert!(d.feasible);
        assert!(d.plan.is_cloud_only(), "{bw}: {}", d.reason);
        assert_eq!(
            d.plan.input == InputCodec::Raw,
            raw_expected,
            "{bw} bit/s: {}",
            d.reason
        );
    }
    // With a fast, idle edge and plenty of bandwidth, cloud-only (raw) beats every JPEG and
    // split as in `high_bandwidth_slow_edge_picks_cloud_only`.
    let d = opt.decide(&cond(1e9, 0.001, 1.0), &min_latency(0.85), None);
    assert_eq!(d.plan.input, InputCodec::Raw, "{}", d.reason);
}

#[test]
fn max_accuracy_prefers_raw_over_a_less_accurate_jpeg() {
    let opt = jpeg_optimizer(OptimizerConfig::NO_HYSTERESIS);
    // 2 Mbit/s: raw takes 12.3 + 10 + 2.15 = 24.4 ms, jpeg90 16.6 ms.
    let budget = |ms: f64| Objective::MaxAccuracy {
        latency_budget_s: ms * 1e-3,
    };
    let c = cond(2e6, 0.010, 10.0);
    let d = opt.decide(&c, &budget(30.0), None);
    assert_eq!(d.plan.input, InputCodec::Raw, "{}", d.reason);
    assert!(d.plan.is_cloud_only());
    let d = opt.decide(&c, &budget(20.0), None);
    assert_eq!(d.plan.input.jpeg_quality(), Some(90), "{}", d.reason);
}

#[test]
fn jpeg_plans_resolve_by_quality_and_switch_with_hysteresis() {
    let opt = jpeg_optimizer(OptimizerConfig::default());
    let slow = cond(2e6, 0.010, 10.0);
    let first = opt.decide(&slow, &min_latency(0.91), None);
    assert_eq!(first.plan.input.jpeg_quality(), Some(90));
    // Same conditions: kept.
    let again = opt.decide(&slow, &min_latency(0.91), Some(&first.plan));
    assert!(!again.switched, "{}", again.reason);
    // A stale index still finds the plan by (variant, split, codec, input quality).
    let mut stale = first.plan.clone();
    stale.candidate = 0;
    let kept = opt.decide(&slow, &min_latency(0.91), Some(&stale));
    assert!(!kept.switched, "{}", kept.reason);
    assert_eq!(kept.plan.candidate, first.plan.candidate);
    // Raw cloud-only is not the same plan as jpeg90.
    let mut raw = first.plan.clone();
    raw.candidate = 1_000;
    raw.input = InputCodec::Raw;
    let d = opt.decide(&slow, &min_latency(0.91), Some(&raw));
    assert!(d.switched, "{}", d.reason);
    assert!(d.reason.contains("improves latency"), "{}", d.reason);
    // 1 Gbit/s: raw is better, but only by (75 − 15.8) µs of 2.2 ms ≈ 2.6 %: kept (10 % margin).
    let fast = cond(1e9, 0.0, 10.0);
    let d = opt.decide(&fast, &min_latency(0.91), Some(&first.plan));
    assert!(!d.switched, "{}", d.reason);
    assert!(d.reason.contains("only"), "{}", d.reason);
    // Serde round trip keeps the input codec.
    let json = serde_json::to_string(&first).unwrap();
    let back: jmdc_proto::optimizer::Decision = serde_json::from_str(&json).unwrap();
    assert_eq!(back.plan.input, first.plan.input);
}

#[test]
fn pruning_keeps_raw_and_jpeg_apart() {
    let profile = jpeg_profile();
    // q75 of a JPEG-q75 source: fewer bytes *and* more accurate than raw (it happens on our
    // CIFAR copy); it dominates jpeg90 but must not remove the raw image, which needs no codec.
    let cands = vec![
        Candidate::cloud_only(0, 0.92),
        Candidate::cloud_only_jpeg(0, 90, 1100, 0.921),
        Candidate::cloud_only_jpeg(0, 75, 960, 0.925),
        Candidate::edge_only(0, 4, 0.92),
    ];
    let mut opt = Optimizer::new(profile, cands, OptimizerConfig::NO_HYSTERESIS).unwrap();
    let fast = cond(1e9, 0.001, 10.0);
    let before = opt.decide(&fast, &min_latency(0.9), None);
    assert_eq!(opt.prune_dominated(), 1);
    let kept: Vec<InputCodec> = opt.candidates().iter().map(|c| c.input).collect();
    assert_eq!(
        kept,
        vec![
            InputCodec::Raw,
            InputCodec::Jpeg {
                quality: 75,
                mean_bytes: 960
            },
            InputCodec::Raw
        ]
    );
    let after = opt.decide(&fast, &min_latency(0.9), None);
    assert_eq!(after.plan.input, InputCodec::Raw, "{}", after.reason);
    assert!(approx(
        before.predicted_latency_s,
        after.predicted_latency_s
    ));
}

#[test]
fn jpeg_construction_errors() {
    let cfg = OptimizerConfig::default();
    let err = |c: Candidate| Optimizer::new(jpeg_profile(), vec![c], cfg).unwrap_err();
    let jpeg_at_split = Candidate {
        split: 2,
        ..Candidate::cloud_only_jpeg(0, 90, 1100, 0.9)
    };
    assert!(matches!(
        err(jpeg_at_split),
        OptimizerError::CodecPlacement { .. }
    ));
    let jpeg_edge_only = Candidate {
        split: 4,
        ..Candidate::cloud_only_jpeg(0, 90, 1100, 0.9)
    };
    assert!(matches!(
        err(jpeg_edge_only),
        OptimizerError::CodecPlacement { .. }
    ));
    for (q, bytes) in [(0u8, 1100u32), (101, 1100), (90, 0)] {
        assert!(matches!(
            err(Candidate::cloud_only_jpeg(0, q, bytes, 0.9)),
            OptimizerError::CodecPlacement { .. }
        ));
    }
    let mut p = jpeg_profile();
    p.jpeg_decode.per_byte_us = -1.0;
    assert_eq!(
        Optimizer::new(p, vec![Candidate::cloud_only(0, 0.9)], cfg).unwrap_err(),
        OptimizerError::InvalidCost("jpeg_decode")
    );
    // A candidate serialized before the input field existed reads as raw.
    let old = r#"{"variant":0,"split":0,"codec":null,"accuracy":0.9}"#;
    let c: Candidate = serde_json::from_str(old).unwrap();
    assert_eq!(c.input, InputCodec::Raw);
}

/// An entropy-coded plan: its bytes are the calibration table's measured mean, its codec time the
/// coded fit at its fixed-width size; without a measured mean it is refused.
#[test]
fn entropy_coded_plans_use_measured_bytes_and_their_own_cost() {
    let codec = CodecParams {
        keep_ratio: 0.25,
        mode: QuantMode::Bits(4),
    };
    let coded = CodecParams {
        keep_ratio: 0.25,
        mode: QuantMode::Coded(4),
    };
    let acc = accuracy(Some(codec));
    let mut p = profile();
    p.coded_encode = CodecCost {
        fixed_us: 0.0,
        per_element_us: 0.0,
        per_byte_us: 1.0,
    };
    let err = Optimizer::new(
        p.clone(),
        vec![Candidate::split(0, 3, coded, acc)],
        OptimizerConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, OptimizerError::CodecPlacement { .. }));

    let cands = vec![
        Candidate::split(0, 3, codec, acc),
        Candidate::split(0, 3, coded, acc).with_mean_payload_bytes(60),
    ];
    let mut opt = Optimizer::new(p, cands, OptimizerConfig::default()).unwrap();
    // On the wire both lose the 28 B of header their context fixes.
    assert_eq!(opt.bytes(0), Some(138));
    assert_eq!(opt.bytes(1), Some(32));
    // Neither dominates the other (fewer bytes, more codec work): both survive pruning.
    assert_eq!(opt.prune_dominated(), 0);
    // 138 µs of coding (138 fixed-width body bytes × 1 µs) against 106 B × 8 bits saved: the
    // coded plan wins below 106·8 / 138e-6 ≈ 6.1 Mbit/s and loses above.
    let slow = cond(1e6, 0.0, 1.0);
    let fast = cond(100e6, 0.0, 1.0);
    let e = |opt: &Optimizer, i, c: &Conditions| opt.evaluate(i, c).unwrap().latency_s;
    assert!(e(&opt, 1, &slow) < e(&opt, 0, &slow));
    assert!(e(&opt, 1, &fast) > e(&opt, 0, &fast));
    assert!(approx(
        e(&opt, 1, &fast) - e(&opt, 0, &fast),
        138e-6 - 106.0 * 8.0 / 100e6
    ));
}
