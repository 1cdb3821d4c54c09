//! Property tests of the optimizer on random profiles, candidate sets, conditions and current plans:
//!
//! * a decision always answers, and its predictions are those of [`Optimizer::evaluate`];
//! * when some allowed candidate meets the constraint, the chosen plan meets it too;
//! * no allowed feasible candidate beats the chosen one by more than the hysteresis margin (by
//!   nothing at all when there is no current plan);
//! * a switch away from a feasible current plan happens only for a gain beyond the margin;
//! * when nothing is feasible, the same holds for the fallback metric;
//! * pruning dominated candidates never changes what a decision predicts.
#![allow(clippy::unwrap_used)]

use jmdc_proto::codec::{CodecParams, QuantMode};
use jmdc_proto::optimizer::{
    candidate_grid, Candidate, CodecCost, Conditions, Evaluation, Objective, Optimizer,
    OptimizerConfig, Profile, VariantProfile,
};
use proptest::prelude::*;

const ALL_MODES: [QuantMode; 8] = QuantMode::ALL;
const ALL_RHOS: [f32; 5] = [1.0, 0.75, 0.5, 0.25, 0.1];

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (1usize..16, 1usize..9, 1usize..9).prop_map(|(c, h, w)| vec![c, h, w]),
        (1usize..512).prop_map(|n| vec![n]),
    ]
}

fn variant() -> impl Strategy<Value = VariantProfile> {
    (1usize..6).prop_flat_map(|l| {
        (
            prop::collection::vec(0.0f64..5000.0, l),
            prop::collection::vec(0.0f64..1000.0, l),
            prop::collection::vec(shape(), l + 1),
        )
            .prop_map(|(edge, cloud, shapes)| VariantProfile {
                name: "v".into(),
                edge_layer_us: edge,
                cloud_layer_us: cloud,
                boundary_shapes: shapes,
            })
    })
}

fn cost() -> impl Strategy<Value = CodecCost> {
    (0.0f64..200.0, 0.0f64..0.05, 0.0f64..0.05).prop_map(|(f, e, b)| CodecCost {
        fixed_us: f,
        per_element_us: e,
        per_byte_us: b,
    })
}

fn profile() -> impl Strategy<Value = Profile> {
    (
        prop::collection::vec(variant(), 1..4),
        cost(),
        cost(),
        cost(),
        cost(),
        cost(),
        cost(),
        0usize..128,
    )
        .prop_map(|(variants, e, d, ie, id, je, jd, overhead)| {
            let mut p = Profile::new(variants);
            p.encode = e;
            p.decode = d;
            p.input_encode = ie;
            p.input_decode = id;
            p.jpeg_encode = je;
            p.jpeg_decode = jd;
            p.header_overhead_bytes = overhead;
            p
        })
}

fn conditions() -> impl Strategy<Value = Conditions> {
    (
        4.0f64..10.0,
        0.0f64..0.1,
        1.0f64..20.0,
        prop::bool::weighted(0.8),
    )
        .prop_map(|(log_bw, rtt, load, up)| Conditions {
            bandwidth_bps: 10f64.powf(log_bw),
            rtt_s: rtt,
            edge_load_factor: load,
            cloud_available: up,
        })
}

fn objective() -> impl Strategy<Value = Objective> {
    prop_oneof![
        (0.5f32..1.0).prop_map(|f| Objective::MinLatency { accuracy_floor: f }),
        (0.0005f64..0.2).prop_map(|b| Objective::MaxAccuracy {
            latency_budget_s: b
        }),
        (0.5f32..1.0).prop_map(|f| Objective::MaxThroughput { accuracy_floor: f }),
    ]
}

fn config() -> impl Strategy<Value = OptimizerConfig> {
    prop_oneof![
        Just(OptimizerConfig::NO_HYSTERESIS),
        Just(OptimizerConfig::default()),
        (0.0f64..0.5, 0.0f32..0.05).prop_map(|(m, a)| OptimizerConfig {
            hysteresis_margin: m,
            accuracy_margin: a,
        }),
    ]
}

/// Builds an optimizer from a profile, with accuracies drawn from `accs` (cycled) and some
/// candidates (edge-only ones included) left out; every variant also gets cloud-only JPEG
/// candidates (q90, q75, q50) with sizes and accuracies drawn the same way.
fn build(
    profile: Profile,
    accs: &[f32],
    rhos: &[f32],
    modes: &[QuantMode],
    drop_edge_only: bool,
    config: OptimizerConfig,
) -> Option<Optimizer> {
    let mut k = 0usize;
    let cands = candidate_grid(&profile, rhos, modes, |v, s, _c| {
        let l = profile.variants[v].layers();
        if drop_edge_only && s == l {
            return None;
        }
        k += 1;
        Some(accs[k % accs.len()])
    });
    let mut cands = cands;
    for v in 0..profile.variants.len() {
        for q in [90u8, 75, 50] {
            k += 1;
            if k.is_multiple_of(5) {
                continue;
            }
            let bytes = 100 + (k as u32 * 977) % 4000;
            cands.push(Candidate::cloud_only_jpeg(
                v,
                q,
                bytes,
                accs[k % accs.len()],
            ));
        }
    }
    if cands.is_empty() {
        return None;
    }
    Some(Optimizer::new(profile, cands, config).unwrap())
}

fn feasible(o: &Objective, e: &Evaluation) -> bool {
    match *o {
        Objective::MinLatency { accuracy_floor } | Objective::MaxThroughput { accuracy_floor } => {
            e.accuracy >= accuracy_floor
        }
        Objective::MaxAccuracy { latency_budget_s } => e.latency_s <= latency_budget_s,
    }
}

/// The metric a decision is judged by: the objective's own, or (`fallback`, when no plan meets
/// the constraint) the one the optimizer falls back to (`docs/optimizer.md`).
#[derive(Clone, Copy)]
enum Metric {
    Latency,
    Throughput,
    Accuracy,
}

fn metric(o: &Objective, fallback: bool) -> Metric {
    match (o, fallback) {
        (Objective::MinLatency { .. }, false) | (Objective::MaxAccuracy { .. }, true) => {
            Metric::Latency
        }
        (Objective::MaxThroughput { .. }, false) => Metric::Throughput,
        _ => Metric::Accuracy,
    }
}

/// The hysteresis margin of a metric: relative for latency and throughput, absolute for accuracy.
fn margin(m: Metric, cfg: &OptimizerConfig) -> f64 {
    match m {
        Metric::Latency | Metric::Throughput => cfg.hysteresis_margin,
        Metric::Accuracy => f64::from(cfg.accuracy_margin),
    }
}

/// Whether `new` is better than `cur` by more than `bound`, stated as the comparison the
/// documentation gives (`docs/optimizer.md`: a new plan must be more than 10 % faster, …) rather
/// than with the optimizer's own relative-gain arithmetic.
fn better_by_more_than(m: Metric, cur: &Evaluation, new: &Evaluation, bound: f64) -> bool {
    match m {
        Metric::Latency => new.latency_s < cur.latency_s * (1.0 - bound),
        Metric::Throughput => new.throughput_fps > cur.throughput_fps * (1.0 + bound),
        Metric::Accuracy => f64::from(new.accuracy) > f64::from(cur.accuracy) + bound,
    }
}

const EPS: f64 = 1e-9;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decision_is_optimal_up_to_hysteresis(
        profile in profile(),
        accs in prop::collection::vec(0.3f32..0.95, 1..64),
        rho_mask in 1u8..32,
        mode_mask in 1u8..=255,
        drop_edge_only in prop::bool::weighted(0.2),
        config in config(),
        conditions in conditions(),
        objective in objective(),
        current in prop::option::of(0usize..10_000),
        current_conditions in conditions(),
    ) {
        let rhos: Vec<f32> = ALL_RHOS.iter().enumerate().filter(|(i, _)| rho_mask & (1 << i) != 0).map(|(_, r)| *r).collect();
        let modes: Vec<QuantMode> = ALL_MODES.iter().enumerate().filter(|(i, _)| mode_mask & (1 << i) != 0).map(|(_, m)| *m).collect();
        let Some(opt) = build(profile, &accs, &rhos, &modes, drop_edge_only, config) else {
            return Ok(());
        };
        let n = opt.candidates().len();
        // A current plan as a previous decision would have produced it, or an arbitrary one.
        let current_plan = current.map(|c| {
            if c % 2 == 0 {
                opt.decide(&current_conditions, &objective, None).plan
            } else {
                opt.plan(c % n).unwrap()
            }
        });
        let d = opt.decide(&conditions, &objective, current_plan.as_ref());
        let chosen = d.plan.candidate;
        prop_assert!(chosen < n);
        prop_assert_eq!(Some(d.plan.clone()), opt.plan(chosen));
        let ev = opt.evaluate(chosen, &conditions).unwrap();
        prop_assert_eq!(d.predicted_latency_s, ev.latency_s);
        prop_assert_eq!(d.predicted_throughput_fps, ev.throughput_fps);
        prop_assert_eq!(d.predicted_accuracy, ev.accuracy);
        prop_assert_eq!(d.switched, current_plan.as_ref().map(|p| p.candidate) != Some(chosen));
        prop_assert!(!d.reason.is_empty());

        let has_edge_only = opt.candidates().iter().enumerate().any(|(i, _)| opt.plan(i).unwrap().is_edge_only());
        let allowed = |i: usize| conditions.cloud_available || !has_edge_only || opt.plan(i).unwrap().is_edge_only();
        prop_assert!(allowed(chosen), "chose a plan that needs the unavailable cloud");
        let evals: Vec<Evaluation> = (0..n).map(|i| opt.evaluate(i, &conditions).unwrap()).collect();
        let any_feasible = (0..n).any(|i| allowed(i) && feasible(&objective, &evals[i]));
        let cloud_blocked = !conditions.cloud_available && !has_edge_only;
        prop_assert_eq!(d.feasible, any_feasible && !cloud_blocked, "{}", d.reason);

        let cur = current_plan.as_ref().map(|p| p.candidate).filter(|&i| allowed(i));
        if any_feasible {
            prop_assert!(feasible(&objective, &ev), "{}", d.reason);
            let m = metric(&objective, false);
            let bound = if cur.is_some() { margin(m, &config) } else { 0.0 };
            for j in (0..n).filter(|&j| allowed(j) && feasible(&objective, &evals[j])) {
                prop_assert!(!better_by_more_than(m, &ev, &evals[j], bound + EPS), "candidate {} beats the choice by more than {}: {}", j, bound, d.reason);
            }
            if let Some(i) = cur {
                if feasible(&objective, &evals[i]) && i != chosen {
                    prop_assert!(better_by_more_than(m, &evals[i], &ev, margin(m, &config)), "switched for a gain within the margin: {}", d.reason);
                }
            }
        } else {
            prop_assert!(d.reason.contains("no plan meets"), "{}", d.reason);
            let m = metric(&objective, true);
            let bound = if cur.is_some() { margin(m, &config) } else { 0.0 };
            for j in (0..n).filter(|&j| allowed(j)) {
                prop_assert!(!better_by_more_than(m, &ev, &evals[j], bound + EPS), "fallback candidate {} beats the choice by more than {}: {}", j, bound, d.reason);
            }
        }
    }

    #[test]
    fn pruning_never_changes_predictions(
        profile in profile(),
        accs in prop::collection::vec(0.3f32..0.95, 1..16),
        conditions in conditions(),
        objective in objective(),
    ) {
        let Some(full) = build(profile, &accs, &ALL_RHOS, &ALL_MODES, false, OptimizerConfig::NO_HYSTERESIS) else {
            return Ok(());
        };
        let mut pruned = full.clone();
        let dropped = pruned.prune_dominated();
        prop_assert_eq!(pruned.candidates().len() + dropped, full.candidates().len());
        prop_assert!(!pruned.candidates().is_empty());
        let a = full.decide(&conditions, &objective, None);
        let b = pruned.decide(&conditions, &objective, None);
        prop_assert_eq!(a.predicted_latency_s, b.predicted_latency_s);
        prop_assert_eq!(a.predicted_accuracy, b.predicted_accuracy);
        prop_assert_eq!(a.predicted_throughput_fps, b.predicted_throughput_fps);
        prop_assert_eq!(a.feasible, b.feasible);
    }
}

#[test]
fn default_config_is_ten_percent() {
    let c = OptimizerConfig::default();
    assert_eq!(c.hysteresis_margin, 0.10);
    assert_eq!(c.accuracy_margin, 0.005);
    let _ = CodecParams::LOSSLESS;
}
