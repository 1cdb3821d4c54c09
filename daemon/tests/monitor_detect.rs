//! Synthetic series through the monitors' pure parts: the EWMA step detector, the CPU estimator
//! and load-factor model, and the network monitor's passive samples and probe schedule.

use std::time::{Duration, Instant};

use jmdc_edge::monitor::cpu::{load_factor, CpuEstimator, CpuMonitorConfig, CpuSample};
use jmdc_edge::monitor::network::{
    ChangeKind, EstimateSource, NetworkMonitor, NetworkMonitorConfig,
};
use jmdc_edge::monitor::{ChangeDetector, ChangeThreshold, DetectorConfig};

fn detector(threshold: ChangeThreshold, sustain: usize) -> ChangeDetector {
    ChangeDetector::new(DetectorConfig {
        alpha: 0.3,
        threshold,
        sustain,
    })
}

#[test]
fn detector_ignores_noise_and_single_outliers() {
    let mut d = detector(ChangeThreshold::relative(0.3), 2);
    // ±10 % noise around 10 never flags.
    for i in 0..100 {
        let x = 10.0 * (1.0 + 0.1 * ((i * 7 % 5) as f64 - 2.0) / 2.0);
        assert_eq!(d.update(x), None, "sample {i}");
    }
    let v = d.value().unwrap_or(0.0);
    assert!((v - 10.0).abs() < 1.0, "{v}");
    // One outlier (×5) does not flag and does not move the EWMA.
    assert_eq!(d.update(50.0), None);
    assert_eq!(d.pending(), 1);
    assert_eq!(d.value(), Some(v));
    // A normal sample clears it.
    assert_eq!(d.update(10.0), None);
    assert_eq!(d.pending(), 0);
    // Alternating deviations in opposite directions never confirm.
    for _ in 0..10 {
        assert_eq!(d.update(20.0), None);
        assert_eq!(d.update(2.0), None);
    }
    assert_eq!(d.changes(), 0);
    assert_eq!(d.update(f64::NAN), None);
}

#[test]
fn detector_flags_sustained_step_and_jumps_to_it() {
    let mut d = detector(ChangeThreshold::relative(0.3), 2);
    for _ in 0..20 {
        d.update(10.0);
    }
    assert_eq!(d.update(2.1), None);
    let step = d.update(1.9).expect("a step after two deviating samples");
    assert_eq!(step.from, 10.0);
    assert!((step.to - 2.0).abs() < 1e-12);
    assert!((step.relative() + 0.8).abs() < 1e-12);
    assert_eq!(d.value(), Some(step.to));
    assert_eq!(d.changes(), 1);
    // And back up.
    d.update(9.0);
    assert!(d.update(11.0).is_some());
    assert_eq!(d.changes(), 2);
}

#[test]
fn detector_absolute_threshold_and_sustain_one() {
    let mut d = detector(ChangeThreshold::absolute(0.15), 1);
    d.update(0.0);
    assert_eq!(d.update(0.1), None);
    let s = d
        .update(0.5)
        .expect("0.5 departs from ~0.03 by more than 0.15");
    assert!(s.to == 0.5 && s.from < 0.1);
}

#[test]
fn load_factor_fair_share_model() {
    // 2 cores, one inference thread: one busy process elsewhere costs nothing, two cost 1.5×.
    assert_eq!(load_factor(0.0, 2, 1, 10.0), 1.0);
    assert_eq!(load_factor(0.5, 2, 1, 10.0), 1.0);
    assert_eq!(load_factor(1.0, 2, 1, 10.0), 1.5);
    // 1 core: others at 50 % → 1.5×.
    assert_eq!(load_factor(0.5, 1, 1, 10.0), 1.5);
    // 4 cores, 4 threads: any other load slows us.
    assert_eq!(load_factor(0.25, 4, 4, 10.0), 1.25);
    // Capped, sanitised.
    assert_eq!(load_factor(1.0, 1, 20, 10.0), 10.0);
    assert_eq!(load_factor(f64::NAN, 2, 1, 10.0), 1.0);
    assert_eq!(load_factor(0.5, 0, 1, 10.0), 1.0);
}

#[test]
fn cpu_estimator_separates_own_and_others_load() {
    let config = CpuMonitorConfig {
        compute_threads: 1,
        ..CpuMonitorConfig::default()
    };
    let mut e = CpuEstimator::new(config, 2);
    let t = Instant::now();
    // Our process uses one core of two (global 50 %): others 0.
    for _ in 0..5 {
        assert!(e
            .update(
                CpuSample {
                    global_pct: 50.0,
                    own_pct: 100.0,
                    cores: 2
                },
                t
            )
            .is_none());
    }
    let s = e.snapshot();
    assert_eq!(s.samples, 5);
    assert!((s.own_cores - 1.0).abs() < 1e-9 && s.others_busy.abs() < 1e-9);
    assert_eq!(s.load_factor, 1.0);
    // Two hogs appear: global 100 %, ours still one core → others 50 % of the machine...
    let busy = CpuSample {
        global_pct: 100.0,
        own_pct: 100.0,
        cores: 2,
    };
    assert!(e.update(busy, t).is_none());
    let change = e.update(busy, t).expect("sustained step");
    assert!((change.others_busy.to - 0.5).abs() < 1e-9);
    // ... which with our thread is 2 threads on 2 cores: factor 1.
    assert_eq!(change.load_factor.to, 1.0);
    // Ours idle, machine full: others 100 % → 1.5×.
    let full = CpuSample {
        global_pct: 100.0,
        own_pct: 0.0,
        cores: 2,
    };
    e.update(full, t);
    let change = e.update(full, t).expect("second step");
    assert_eq!(change.load_factor.to, 1.5);
    assert_eq!(e.snapshot().changes, 2);
    assert_eq!(e.snapshot().load_factor, 1.5);
}

#[test]
fn network_passive_samples_guards_and_change() {
    let m = NetworkMonitor::new(NetworkMonitorConfig::default());
    assert_eq!(m.estimate().source, EstimateSource::None);
    assert_eq!(m.estimate().bandwidth_bps, 0.0);
    // Path stats first: quinn's cwnd/rtt placeholder.
    m.observe_path(
        Duration::from_millis(20),
        Duration::from_millis(20),
        25_000,
        0,
    );
    let e = m.estimate();
    assert_eq!(e.source, EstimateSource::QuinnPath);
    assert!((e.bandwidth_bps - 10e6).abs() < 1.0, "{}", e.bandwidth_bps);
    let mut changes = m.changes();
    // Too small a request: ignored.
    assert_eq!(
        m.record_transfer(500, Duration::from_millis(30), Duration::ZERO),
        None
    );
    // Round trip no longer than RTT + server time: ignored.
    assert_eq!(
        m.record_transfer(100_000, Duration::from_millis(21), Duration::from_millis(1)),
        None
    );
    // 100 kB in 80 ms after 20 ms RTT and 20 ms server time → 100e3·8 / 0.04 = 20 Mbit/s.
    for _ in 0..5 {
        let s = m.record_transfer(
            100_000,
            Duration::from_millis(80),
            Duration::from_millis(20),
        );
        assert!((s.unwrap_or(0.0) - 20e6).abs() < 1.0);
    }
    let e = m.estimate();
    assert_eq!(e.source, EstimateSource::Passive);
    assert!((e.bandwidth_bps - 20e6).abs() < 1.0);
    assert!(!changes.has_changed().unwrap_or(true));
    // Halved throughput, sustained: flagged.
    m.record_transfer(
        100_000,
        Duration::from_millis(120),
        Duration::from_millis(20),
    );
    m.record_transfer(
        100_000,
        Duration::from_millis(120),
        Duration::from_millis(20),
    );
    assert!(changes.has_changed().unwrap_or(false));
    let c = (*changes.borrow_and_update()).expect("change");
    assert_eq!(c.kind, ChangeKind::Bandwidth);
    assert!((c.step.to - 10e6).abs() < 1.0, "{c:?}");
    assert_eq!(m.estimate().changes, 1);
    assert!((m.estimate().bandwidth_bps - 10e6).abs() < 1.0);
}

#[test]
fn network_rtt_change_and_probe_schedule() {
    let config = NetworkMonitorConfig {
        stale_after: Duration::from_secs(3600),
        min_probe_interval: Duration::from_secs(3600),
        ..NetworkMonitorConfig::default()
    };
    let m = NetworkMonitor::new(config);
    let now = Instant::now();
    assert!(m.needs_probe(now), "no measurement yet");
    m.record_transfer(100_000, Duration::from_millis(50), Duration::ZERO);
    assert!(!m.needs_probe(Instant::now()), "fresh passive sample");
    let ms = Duration::from_millis;
    for _ in 0..5 {
        assert!(m.observe_path(ms(20), ms(20), 20_000, 0).is_none());
    }
    assert!(m.observe_path(ms(60), ms(20), 20_000, 0).is_none());
    assert!(m.observe_path(ms(60), ms(20), 20_000, 0).is_none());
    let c = m
        .observe_path(ms(60), ms(20), 20_000, 0)
        .expect("third sustained RTT sample");
    assert_eq!(c.kind, ChangeKind::Rtt);
    assert!((m.estimate().rtt_s - 0.06).abs() < 1e-9);
    // A small RTT wobble on loopback (0.2 → 0.4 ms) is below the 5 ms absolute floor.
    let m = NetworkMonitor::new(NetworkMonitorConfig::default());
    for i in 0..20 {
        let rtt = Duration::from_micros(if i % 2 == 0 { 200 } else { 400 });
        assert!(m.observe_path(rtt, rtt, 20_000, 0).is_none());
    }
}
