//! The CPU monitor. Its behaviour (others' load, smoothing, the change it flags, the load factor)
//! is checked with a scripted sampler, so the result does not depend on what else the machine runs;
//! one test on the real sysinfo counters checks that a busy thread of our own shows as *own* usage
//! (with margins: other work may share the machine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_edge::monitor::cpu::{
    CpuMonitor, CpuMonitorConfig, CpuSample, CpuSampler, CpuSnapshot, MIN_SAMPLE_INTERVAL,
};

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

/// Samples from a script: (global %, own %) per interval, the last one repeated.
struct Script {
    cores: usize,
    samples: Vec<(f64, f64)>,
    next: usize,
}

impl CpuSampler for Script {
    fn cores(&self) -> usize {
        self.cores
    }

    fn sample(&mut self) -> CpuSample {
        let (global_pct, own_pct) = self.samples[self.next.min(self.samples.len() - 1)];
        self.next += 1;
        CpuSample {
            global_pct,
            own_pct,
            cores: self.cores,
        }
    }
}

/// Waits (bounded) until the monitor has taken `n` samples; returns every snapshot seen.
fn wait_samples(monitor: &CpuMonitor, n: u64) -> Vec<CpuSnapshot> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<CpuSnapshot> = Vec::new();
    let mut rx = monitor.subscribe();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        while seen.last().map_or(0, |s| s.samples) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                tokio::time::timeout(left, rx.changed()).await.is_ok(),
                "only {} samples before the deadline",
                seen.len()
            );
            let s = *rx.borrow_and_update();
            if seen.last().is_none_or(|l| l.samples != s.samples) {
                seen.push(s);
            }
        }
    });
    seen
}

#[test]
fn a_step_in_others_load_is_measured_smoothed_and_flagged() {
    // 4 cores; this process uses half a core (12.5 % of the machine) throughout; the others go
    // from 10 % of the machine to 85 % after four samples.
    let (quiet, busy) = ((22.5, 50.0), (97.5, 50.0));
    let mut samples = vec![quiet; 4];
    samples.extend([busy; 8]);
    let monitor = CpuMonitor::start_with(
        config(),
        Script {
            cores: 4,
            samples,
            next: 0,
        },
    )
    .expect("monitor");
    assert_eq!(monitor.snapshot().samples, 0);
    let seen = wait_samples(&monitor, 12);
    // The quiet samples are all alike: the first and the last of them that the test saw (a busy
    // test machine may make it miss some; `watch` keeps only the newest).
    let quiet_seen: Vec<CpuSnapshot> = seen.iter().filter(|s| s.samples <= 4).copied().collect();
    assert!(!quiet_seen.is_empty(), "no quiet sample seen: {seen:?}");
    let first = quiet_seen[0];
    assert_eq!(first.cores, 4);
    assert!((first.own_cores - 0.5).abs() < 1e-9, "{first:?}");
    assert!((first.others_busy - 0.10).abs() < 1e-9, "{first:?}");
    assert_eq!(first.load_factor, 1.0, "a quiet machine does not slow us");
    let before = quiet_seen[quiet_seen.len() - 1];
    assert!(
        (before.others_busy_smoothed - 0.10).abs() < 1e-9,
        "{before:?}"
    );
    assert_eq!(
        before.changes, 0,
        "no change while the load is flat: {before:?}"
    );
    let last = seen[seen.len() - 1];
    assert!((last.others_busy - 0.85).abs() < 1e-9, "{last:?}");
    assert!(
        last.others_busy_smoothed > 0.8,
        "the smoothed load follows the step: {last:?}"
    );
    assert!(
        last.load_factor > 1.0,
        "a busy machine slows our thread: {last:?}"
    );
    assert_eq!(last.changes, 1, "one step, one change: {last:?}");
    let change = monitor.changes().borrow().expect("the step is flagged");
    assert!(
        change.others_busy.from < 0.3 && change.others_busy.to > 0.7,
        "{change:?}"
    );
    assert!(
        change.load_factor.to > change.load_factor.from,
        "{change:?}"
    );
    monitor.stop();
}
