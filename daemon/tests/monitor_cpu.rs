//! The CPU monitor on this machine: a busy thread of our own raises *own* usage; busy child
//! processes (one per core) raise *others'* load towards 1 (when it was not there already).
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
    // On an idle machine the spinning thread gets a whole core; when other processes saturate
    // the machine (global busy ≈ 100 %), it gets only its fair share, but still clearly more than
    // the idle process had.
    let saturated = busy.iter().any(|s| s.global_busy >= 0.95);
    let expected = if saturated { 0.2 } else { 0.5 };
    assert!(
        busy_own > expected && busy_own > idle_own + 0.15,
        "a spinning thread should show as ≥ {expected} core (machine saturated: {saturated}), saw {busy_own} (idle {idle_own})"
    );
    assert!(busy.iter().all(|s| (0.0..=1.0).contains(&s.others_busy)));
    assert!(busy.iter().all(|s| s.load_factor >= 1.0));
    monitor.stop();
}

#[test]
fn busy_child_processes_raise_others_load() {
    let monitor = CpuMonitor::start(config()).expect("cpu monitor");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let baseline = collect(&monitor, Duration::from_millis(800));
    assert!(!baseline.is_empty());
    let base = baseline.iter().map(|s| s.others_busy).sum::<f64>() / baseline.len() as f64;
    // One spinning process per core (at most 8) saturates the machine: others' load → ~1 whatever
    // else runs. Skip when it is already that high.
    if base > 0.75 {
        println!("skipped: machine already busy (others {base:.2}, {cores} cores)");
        return;
    }
    let changes = monitor.changes();
    // Each child ends by itself after 3 s (`timeout` sends SIGTERM to the shell). The children
    // are waited for, never killed: killing the `timeout` wrapper would orphan the spinning shell.
    let mut children: Vec<_> = (0..cores.min(8))
        .map(|_| {
            std::process::Command::new("timeout")
                .args(["3", "sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("spawn a busy shell")
        })
        .collect();
    let busy = collect(&monitor, Duration::from_millis(1750));
    for c in &mut children {
        let _ = c.wait();
    }
    let peak = busy.iter().map(|s| s.others_busy).fold(0.0, f64::max);
    let smoothed = busy
        .iter()
        .map(|s| s.others_busy_smoothed)
        .fold(0.0, f64::max);
    let load = busy.iter().map(|s| s.load_factor).fold(1.0, f64::max);
    println!(
        "others' load: baseline {base:.2}, peak with {} busy children {peak:.2} (smoothed {smoothed:.2}, load factor {load:.2}), {cores} cores, change flagged: {}",
        children.len(),
        changes.borrow().is_some()
    );
    assert!(
        peak > 0.8 && peak > base + 0.15,
        "others' load should approach 1: baseline {base:.2}, peak {peak:.2}"
    );
    assert!(load > 1.0, "a saturated machine slows our thread");
    if base < 0.5 {
        assert!(
            changes.borrow().is_some(),
            "a step from {base:.2} to ~1 should be flagged"
        );
    }
}
