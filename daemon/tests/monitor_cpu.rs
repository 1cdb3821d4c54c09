//! The CPU monitor on this machine: a busy thread of our own raises *own* usage; a busy child
//! process raises *others'* load (when the machine has room for it to show).
//!
//! Tolerant on purpose: other work may run on the machine at the same time, so the assertions
//! compare the peak during the hog with generous margins, and the others'-load check is skipped
//! (with a message) when the machine is already too busy for one more process to show.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_edge::monitor::cpu::{CpuMonitor, CpuMonitorConfig, CpuSnapshot, MIN_SAMPLE_INTERVAL};

fn config() -> CpuMonitorConfig {
    CpuMonitorConfig {
        interval: MIN_SAMPLE_INTERVAL,
        ..CpuMonitorConfig::default()
    }
}

/// Collects snapshots for `dur` (bounded), returning them.
fn collect(monitor: &CpuMonitor, dur: Duration) -> Vec<CpuSnapshot> {
    let end = Instant::now() + dur;
    let mut last = monitor.snapshot().samples;
    let mut out = Vec::new();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        let s = monitor.snapshot();
        if s.samples != last {
            last = s.samples;
            out.push(s);
        }
    }
    out
}

#[test]
fn own_busy_thread_raises_own_usage() {
    let monitor = CpuMonitor::start(config()).expect("cpu monitor");
    assert_eq!(
        monitor.snapshot().samples,
        0,
        "nothing before the second refresh"
    );
    assert_eq!(monitor.load_factor(), 1.0);
    let idle = collect(&monitor, Duration::from_millis(800));
    assert!(!idle.is_empty(), "no sample within 800 ms");
    let idle_own = idle.iter().map(|s| s.own_cores).fold(0.0, f64::max);

    let stop = Arc::new(AtomicBool::new(false));
    let hog_stop = Arc::clone(&stop);
    let hog = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut x = 0u64;
        while !hog_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    });
    let busy = collect(&monitor, Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let _ = hog.join();
    let busy_own = busy.iter().map(|s| s.own_cores).fold(0.0, f64::max);
    println!(
        "own usage idle {idle_own:.2} cores, with a busy thread {busy_own:.2} cores; samples {:?}",
        busy.iter()
            .map(|s| (s.own_cores, s.others_busy, s.global_busy))
            .collect::<Vec<_>>()
    );
    assert!(busy.len() >= 3, "{} samples in 1.5 s", busy.len());
    assert!(
        busy_own > 0.5,
        "a spinning thread should show as ≥ 0.5 core, saw {busy_own}"
    );
    assert!(busy.iter().all(|s| (0.0..=1.0).contains(&s.others_busy)));
    assert!(busy.iter().all(|s| s.load_factor >= 1.0));
    monitor.stop();
}

#[test]
fn busy_child_process_raises_others_load() {
    let monitor = CpuMonitor::start(config()).expect("cpu monitor");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let baseline = collect(&monitor, Duration::from_millis(800));
    assert!(!baseline.is_empty());
    let base = baseline.iter().map(|s| s.others_busy).sum::<f64>() / baseline.len() as f64;
    // One spinning process is 1/cores of the machine. Skip when it cannot show.
    let expected = 1.0 / cores as f64;
    if base + expected > 0.95 {
        println!("skipped: machine already busy (others {base:.2}, {cores} cores)");
        return;
    }
    // `timeout` bounds the child even if this test dies.
    let mut child = std::process::Command::new("timeout")
        .args(["5", "sh", "-c", "while :; do :; done"])
        .spawn()
        .expect("spawn a busy shell");
    let changes = monitor.changes();
    let busy = collect(&monitor, Duration::from_millis(1750));
    let _ = child.kill();
    let _ = child.wait();
    let peak = busy.iter().map(|s| s.others_busy).fold(0.0, f64::max);
    let smoothed = busy
        .iter()
        .map(|s| s.others_busy_smoothed)
        .fold(0.0, f64::max);
    println!(
        "others' load: baseline {base:.2}, peak with a busy child {peak:.2} (smoothed {smoothed:.2}), {cores} cores, change flagged: {}",
        changes.has_changed().unwrap_or(false)
    );
    assert!(
        peak > base + 0.5 * expected,
        "others' load should rise by about {expected:.2}: baseline {base:.2}, peak {peak:.2}"
    );
    // A step of 1/cores is above the 15-point threshold on machines with up to 6 cores.
    if cores <= 4 && base < 0.3 {
        assert!(
            changes.has_changed().unwrap_or(false) || changes.borrow().is_some(),
            "a one-core step should be flagged on {cores} cores"
        );
    }
}
