//! The profile estimators (`jmdc_proto::estimate`): EWMA, online edge profile, cloud estimator, codec fit.

use std::time::Duration;

use jmdc_proto::estimate::*;
use jmdc_proto::optimizer::CodecCost;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-9)
}

#[test]
fn ewma_first_sample_then_smooths_and_ignores_nan() {
    let mut e = Ewma::new(0.5);
    assert_eq!(e.value(), None);
    assert_eq!(e.update(10.0), 10.0);
    assert_eq!(e.update(20.0), 15.0);
    assert_eq!(e.update(f64::NAN), 15.0);
    assert_eq!(e.count(), 2);
    e.reset_to(100.0);
    assert_eq!(e.value(), Some(100.0));
    assert_eq!(e.count(), 1);
    // Converges to a constant series.
    let mut e = Ewma::new(0.2);
    for _ in 0..200 {
        e.update(3.0);
    }
    assert!(close(e.value().unwrap_or(0.0), 3.0, 1e-12));
    assert_eq!(Ewma::new(f64::NAN).alpha(), 1.0);
    assert_eq!(Ewma::new(7.0).alpha(), 1.0);
}

#[test]
fn median_odd_even_empty() {
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(&mut []).is_nan());
}

fn us(x: f64) -> Duration {
    Duration::from_secs_f64(x * 1e-6)
}

fn online() -> OnlineProfile {
    OnlineProfile::new(
        [
            ("a".to_string(), vec![100.0, 200.0, 300.0, 400.0]),
            ("b".to_string(), vec![50.0, 50.0, 50.0, 50.0]),
        ],
        OnlineProfileConfig::default(),
    )
}

#[test]
fn online_profile_correction_learns_unmodelled_slowdown() {
    let mut p = online();
    assert_eq!(p.effective_load_factor(), 1.0);
    // The CPU monitor says 1.5; frames actually run 3× the base: correction → 2.
    p.set_load_factor(1.5);
    for _ in 0..100 {
        let r = p.observe("a", 0, &[us(300.0), us(600.0)]);
        assert!(r.is_some());
    }
    assert!(close(p.correction(), 2.0, 1e-3), "{}", p.correction());
    assert!(close(p.effective_load_factor(), 3.0, 1e-3));
    assert!(close(p.predicted_us("b", 0..4).unwrap_or(0.0), 600.0, 1e-3));
    // The smoothed layer times follow the measurements; unobserved layers keep the base.
    let a = p.variant("a").expect("variant a");
    assert!(close(a.smoothed_us(1).unwrap_or(0.0), 600.0, 1e-6));
    assert_eq!(a.smoothed_us(2), None);
    assert_eq!(a.samples(0), 100);
    assert_eq!(a.current_us()[3], 400.0);
    // The monitor's model catches up (load 3): the correction returns to 1.
    p.set_load_factor(3.0);
    for _ in 0..200 {
        p.observe("a", 2, &[us(900.0), us(1200.0)]);
    }
    assert!(close(p.correction(), 1.0, 1e-3), "{}", p.correction());
    assert!(close(p.effective_load_factor(), 3.0, 1e-3));
}

#[test]
fn online_profile_ignores_bad_frames_and_clamps_outliers() {
    let mut p = online();
    assert_eq!(p.observe("nope", 0, &[us(1.0)]), None);
    assert_eq!(p.observe("a", 3, &[us(1.0), us(1.0)]), None);
    assert_eq!(p.observe("a", 0, &[]), None);
    assert_eq!(p.frames(), 0);
    // A 100× frame is clamped to max_ratio (5).
    assert_eq!(p.observe("a", 0, &[us(10_000.0)]), Some(5.0));
    p.set_load_factor(f64::NAN);
    assert_eq!(p.load_factor(), 1.0);
    p.set_load_factor(-2.0);
    assert_eq!(p.load_factor(), 1.0);
    assert_eq!(
        p.observe_with_load("b", 1, &[us(100.0), us(100.0)], 2.0),
        Some(1.0)
    );
    p.reset_correction();
    assert_eq!(p.correction(), 1.0);
}

fn edge() -> Vec<(String, Vec<f64>)> {
    vec![
        ("full".to_string(), vec![100.0, 200.0, 300.0, 400.0]),
        ("half".to_string(), vec![50.0, 100.0, 150.0, 200.0]),
    ]
}

#[test]
fn cloud_estimator_starts_from_guess() {
    let c = CloudProfileEstimator::new(edge(), 0.25, 0.5);
    assert_eq!(c.layer_us("full"), Some(&[25.0, 50.0, 75.0, 100.0][..]));
    assert_eq!(c.learned_ratio(), 0.25);
    assert_eq!(c.range_us("half", 2), Some(87.5));
    assert_eq!(c.layer_us("nope"), None);
}

#[test]
fn cloud_estimator_matches_observed_range_sums() {
    let mut c = CloudProfileEstimator::new(edge(), 0.25, 1.0);
    // Split 2 of "full": layers 2..4 (edge 300 + 400) took 140 µs → ratio 0.2, edge-shaped.
    assert!(c.observe("full", 2, 140.0));
    let full = c.layer_us("full").expect("full").to_vec();
    assert!(
        close(full[2], 60.0, 1e-9) && close(full[3], 80.0, 1e-9),
        "{full:?}"
    );
    // Uncovered layers use the learned ratio 0.2 instead of the guess.
    assert!(
        close(full[0], 20.0, 1e-9) && close(full[1], 40.0, 1e-9),
        "{full:?}"
    );
    // An unobserved variant uses the global learned ratio.
    let half = c.layer_us("half").expect("half");
    assert!(close(half[0], 10.0, 1e-9), "{half:?}");
    // A second split: layers 1..2 get T(1) − T(2).
    assert!(c.observe("full", 1, 240.0));
    let full = c.layer_us("full").expect("full").to_vec();
    assert!(close(full[1], 100.0, 1e-9), "{full:?}");
    assert!(close(c.range_us("full", 1).unwrap_or(0.0), 240.0, 1e-9));
    assert!(close(c.range_us("full", 2).unwrap_or(0.0), 140.0, 1e-9));
    // Layer 0 follows the variant's ratio over 1..4: 240 / 900.
    assert!(close(full[0], 100.0 * 240.0 / 900.0, 1e-9), "{full:?}");
    // Noisy totals that are not monotone never give negative layers.
    assert!(c.observe("full", 3, 500.0));
    assert!(c.layer_us("full").expect("full").iter().all(|t| *t >= 0.0));
    // Bad observations are refused.
    assert!(!c.observe("full", 4, 1.0));
    assert!(!c.observe("full", 0, f64::NAN));
    assert!(!c.observe("nope", 0, 1.0));
}

#[test]
fn cloud_estimator_ewma_and_exact_layers() {
    let mut c = CloudProfileEstimator::new(edge(), 0.25, 0.5);
    c.observe("half", 0, 100.0);
    c.observe("half", 0, 200.0);
    assert!(close(c.range_us("half", 0).unwrap_or(0.0), 150.0, 1e-9));
    // Exact per-layer times take precedence; the split total is shared among the other layers.
    let mut c = CloudProfileEstimator::new(edge(), 0.25, 1.0);
    assert!(c.observe_layers("full", 3, &[10.0]));
    assert!(c.observe("full", 2, 100.0));
    let full = c.layer_us("full").expect("full");
    assert!(
        close(full[3], 10.0, 1e-9) && close(full[2], 90.0, 1e-9),
        "{full:?}"
    );
    assert!(!c.observe_layers("full", 3, &[1.0, 2.0]));
    assert!(!c.observe_layers("full", 0, &[-1.0]));
    let all = c.all();
    assert_eq!(all.len(), 2);
    assert_eq!(all["full"].len(), 4);
}

#[test]
fn codec_fit_recovers_exact_affine_costs() {
    let truth = CodecCost {
        fixed_us: 5.0,
        per_element_us: 0.002,
        per_byte_us: 0.01,
    };
    let samples: Vec<CodecSample> = [(1000, 300), (4000, 500), (4000, 2000), (16000, 900)]
        .iter()
        .map(|&(elements, bytes)| CodecSample {
            elements,
            bytes,
            us: truth.cost_us(elements, bytes),
        })
        .collect();
    let fit = fit_codec_cost(&samples);
    assert!(close(fit.cost.fixed_us, 5.0, 1e-6), "{fit:?}");
    assert!(close(fit.cost.per_element_us, 0.002, 1e-6), "{fit:?}");
    assert!(close(fit.cost.per_byte_us, 0.01, 1e-6), "{fit:?}");
    assert!(fit.rms_residual_us < 1e-6);
    assert_eq!(fit.samples, 4);
}

#[test]
fn codec_fit_is_non_negative() {
    // Time falls with bytes: unconstrained LS would give a negative per-byte cost.
    let samples = [
        CodecSample {
            elements: 1000,
            bytes: 100,
            us: 10.0,
        },
        CodecSample {
            elements: 1000,
            bytes: 1000,
            us: 8.0,
        },
        CodecSample {
            elements: 2000,
            bytes: 500,
            us: 15.0,
        },
    ];
    let fit = fit_codec_cost(&samples);
    let c = fit.cost;
    for v in [c.fixed_us, c.per_element_us, c.per_byte_us] {
        assert!(v.is_finite() && v >= 0.0, "{fit:?}");
    }
    assert!(fit.rms_residual_us.is_finite());
    let empty = fit_codec_cost(&[]);
    assert_eq!(empty.cost, CodecCost::ZERO);
}

#[test]
fn synthetic_features_are_deterministic_and_half_zero() {
    let a = synthetic_features(10_000, 7);
    assert_eq!(a, synthetic_features(10_000, 7));
    let zeros = a.iter().filter(|v| **v == 0.0).count();
    assert!((4000..6000).contains(&zeros), "{zeros}");
    assert!(a.iter().all(|v| (0.0..4.0).contains(v)));
}
