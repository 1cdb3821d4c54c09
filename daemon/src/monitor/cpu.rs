//! CPU load of the edge device: global usage, this process's usage, and the load of everything
//! else ("others"), which is what slows the edge's layers down.
//!
//! A background thread refreshes [`sysinfo`] every `interval` (at least
//! [`MIN_SAMPLE_INTERVAL`]: CPU usage is a difference between two refreshes, and the first
//! refresh is meaningless, so the first snapshot is published only after the second one).
//!
//! ```text
//! global_busy  = sysinfo global CPU usage / 100                (fraction of the whole machine)
//! own_cores    = this process's CPU usage / 100                (cores' worth; can exceed 1)
//! others_busy  = clamp(global_busy − own_cores / cores, 0, 1)  (fraction of the whole machine)
//! ```
//!
//! `others_busy` is smoothed and watched by a [`ChangeDetector`] (default: a step of more than
//! 15 points sustained over 2 samples). The [`load_factor`] model maps it to an expected slowdown
//! of our compute threads under the kernel's fair-share scheduler (see its documentation);
//! `jmdc_core::profiling::OnlineProfile` corrects it online from measured frame times.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::watch;

use super::{ChangeDetector, ChangeThreshold, DetectorConfig, Step};

/// Shortest sampling interval accepted (sysinfo needs ≥ 200 ms between refreshes).
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Tuning of a [`CpuMonitor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuMonitorConfig {
    /// Time between samples (raised to [`MIN_SAMPLE_INTERVAL`]).
    pub interval: Duration,
    /// Smoothing and change detection of `others_busy` (fraction 0–1; the default threshold is
    /// 0.15 absolute, sustained over 2 samples, EWMA weight 0.3).
    pub detector: DetectorConfig,
    /// EWMA weight for the smoothed global and own usage (reported only).
    pub alpha: f64,
    /// Threads our inference uses (ONNX Runtime intra-op threads; 1 by default).
    pub compute_threads: usize,
    /// Upper bound of [`load_factor`].
    pub max_load_factor: f64,
}

impl Default for CpuMonitorConfig {
    fn default() -> Self {
        CpuMonitorConfig {
            interval: Duration::from_millis(500),
            detector: DetectorConfig {
                alpha: 0.3,
                threshold: ChangeThreshold::absolute(0.15),
                sustain: 2,
            },
            alpha: 0.3,
            compute_threads: 1,
            max_load_factor: 10.0,
        }
    }
}

/// One raw reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSample {
    /// Global usage averaged over all cores, percent (0–100).
    pub global_pct: f64,
    /// This process's usage, percent of one core (0–100·cores).
    pub own_pct: f64,
    /// Logical cores.
    pub cores: usize,
}

/// The monitor's state after a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSnapshot {
    /// When the sample was taken (`None` before the first valid sample).
    pub at: Option<Instant>,
    /// Valid samples so far.
    pub samples: u64,
    /// Logical cores.
    pub cores: usize,
    /// Last raw global busy fraction (0–1).
    pub global_busy: f64,
    /// Last raw usage of this process, in cores.
    pub own_cores: f64,
    /// Last raw busy fraction of the machine used by other processes (0–1).
    pub others_busy: f64,
    /// Smoothed `global_busy`.
    pub global_busy_smoothed: f64,
    /// Smoothed `own_cores`.
    pub own_cores_smoothed: f64,
    /// Smoothed `others_busy` (with step detection).
    pub others_busy_smoothed: f64,
    /// [`load_factor`] of the smoothed others' load.
    pub load_factor: f64,
    /// Steps detected so far.
    pub changes: u64,
}

impl CpuSnapshot {
    fn empty(cores: usize) -> Self {
        CpuSnapshot {
            at: None,
            samples: 0,
            cores,
            global_busy: 0.0,
            own_cores: 0.0,
            others_busy: 0.0,
            global_busy_smoothed: 0.0,
            own_cores_smoothed: 0.0,
            others_busy_smoothed: 0.0,
            load_factor: 1.0,
            changes: 0,
        }
    }
}

/// A detected step in others' load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuChange {
    /// When it was confirmed.
    pub at: Instant,
    /// Smoothed others' busy fraction before → after.
    pub others_busy: Step,
    /// Load factor before → after.
    pub load_factor: Step,
}

/// Expected slowdown of our compute work when other processes keep `others_busy` (fraction of
/// the machine) busy, on `cores` cores, with `threads` compute threads of ours:
///
/// ```text
/// demand      = others_busy · cores + threads          (runnable threads' worth of work)
/// load_factor = clamp(demand / cores, 1, max)          (fair share: each gets cores/demand)
/// ```
///
/// On a 2-core machine with one inference thread, one busy process elsewhere costs nothing
/// (1.0), two cost 1.5×. On one core, others at 50 % give 1.5× (not 1/(1 − 0.5) = 2×, which
/// would assume the others keep their share whatever we do). Non-finite inputs give 1.
pub fn load_factor(others_busy: f64, cores: usize, threads: usize, max: f64) -> f64 {
    if !others_busy.is_finite() || cores == 0 {
        return 1.0;
    }
    let cores = cores as f64;
    let demand = others_busy.clamp(0.0, 1.0) * cores + threads.max(1) as f64;
    let max = if max.is_finite() && max >= 1.0 {
        max
    } else {
        1.0
    };
    (demand / cores).clamp(1.0, max)
}

/// The pure part of the monitor: turns raw samples into snapshots and changes. Exposed for tests
/// and for callers with their own sampling.
#[derive(Debug, Clone)]
pub struct CpuEstimator {
    config: CpuMonitorConfig,
    others: ChangeDetector,
    global: super::Ewma,
    own: super::Ewma,
    snapshot: CpuSnapshot,
}

impl CpuEstimator {
    /// A fresh estimator.
    pub fn new(config: CpuMonitorConfig, cores: usize) -> Self {
        CpuEstimator {
            config,
            others: ChangeDetector::new(config.detector),
            global: super::Ewma::new(config.alpha),
            own: super::Ewma::new(config.alpha),
            snapshot: CpuSnapshot::empty(cores),
        }
    }

    /// Adds one sample taken at `at`.
    pub fn update(&mut self, sample: CpuSample, at: Instant) -> Option<CpuChange> {
        let cores = sample.cores.max(1);
        let global_busy = (sample.global_pct / 100.0).clamp(0.0, 1.0);
        let own_cores = (sample.own_pct / 100.0).clamp(0.0, cores as f64);
        let others_busy = (global_busy - own_cores / cores as f64).clamp(0.0, 1.0);
        let lf = |o: f64| {
            load_factor(
                o,
                cores,
                self.config.compute_threads,
                self.config.max_load_factor,
            )
        };
        let step = self.others.update(others_busy);
        let smoothed = self.others.value().unwrap_or(others_busy);
        let s = &mut self.snapshot;
        s.at = Some(at);
        s.samples += 1;
        s.cores = cores;
        s.global_busy = global_busy;
        s.own_cores = own_cores;
        s.others_busy = others_busy;
        s.global_busy_smoothed = self.global.update(global_busy);
        s.own_cores_smoothed = self.own.update(own_cores);
        s.others_busy_smoothed = smoothed;
        s.load_factor = lf(smoothed);
        s.changes = self.others.changes();
        step.map(|st| CpuChange {
            at,
            others_busy: st,
            load_factor: Step {
                from: lf(st.from),
                to: lf(st.to),
            },
        })
    }

    /// The state after the last sample.
    pub fn snapshot(&self) -> CpuSnapshot {
        self.snapshot
    }
}

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum CpuMonitorError {
    /// sysinfo is not supported here or could not read the system.
    #[error("cannot read CPU usage: {0}")]
    Sysinfo(String),
    /// The sampling thread could not be spawned.
    #[error("cannot start the CPU monitor thread: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug)]
struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// CPU load sampled on a background thread. Dropping it stops the thread (within one interval's
/// wake-up, promptly).
#[derive(Debug)]
pub struct CpuMonitor {
    snapshots: watch::Receiver<CpuSnapshot>,
    changes: watch::Receiver<Option<CpuChange>>,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    config: CpuMonitorConfig,
}

impl CpuMonitor {
    /// Starts sampling this machine with sysinfo. The first snapshot (`samples == 1`) arrives
    /// after about one interval.
    pub fn start(config: CpuMonitorConfig) -> Result<CpuMonitor, CpuMonitorError> {
        Self::start_with(config, SysinfoSampler::new()?)
    }

    /// Starts sampling with `sampler` (the machine's counters, or a script in tests): one sample
    /// per interval on a background thread.
    pub fn start_with(
        config: CpuMonitorConfig,
        mut sampler: impl CpuSampler,
    ) -> Result<CpuMonitor, CpuMonitorError> {
        let mut config = config;
        config.interval = config.interval.max(MIN_SAMPLE_INTERVAL);
        let cores = sampler.cores().max(1);
        let (snap_tx, snapshots) = watch::channel(CpuSnapshot::empty(cores));
        let (change_tx, changes) = watch::channel(None);
        let stop = Arc::new(Stop {
            flag: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("jmdc-cpu-monitor".into())
            .spawn(move || {
                let mut estimator = CpuEstimator::new(config, cores);
                loop {
                    {
                        let guard = thread_stop.lock.lock().unwrap_or_else(|p| p.into_inner());
                        if thread_stop.flag.load(Ordering::Acquire) {
                            return;
                        }
                        let _unused = thread_stop
                            .wake
                            .wait_timeout(guard, config.interval)
                            .unwrap_or_else(|p| p.into_inner());
                    }
                    if thread_stop.flag.load(Ordering::Acquire) {
                        return;
                    }
                    let sample = sampler.sample();
                    let change = estimator.update(sample, Instant::now());
                    let snapshot = estimator.snapshot();
                    if let Some(change) = change {
                        tracing::info!(
                            others_from = change.others_busy.from,
                            others_to = change.others_busy.to,
                            load_factor = change.load_factor.to,
                            "CPU load changed"
                        );
                        change_tx.send_replace(Some(change));
                    }
                    snap_tx.send_replace(snapshot);
                }
            })
            .map_err(CpuMonitorError::Thread)?;
        Ok(CpuMonitor {
            snapshots,
            changes,
            stop,
            thread: Some(thread),
            config,
        })
    }

    /// The latest snapshot (`samples == 0` until the first valid sample).
    pub fn snapshot(&self) -> CpuSnapshot {
        *self.snapshots.borrow()
    }

    /// The load factor of the latest snapshot (1 before the first sample).
    pub fn load_factor(&self) -> f64 {
        self.snapshot().load_factor
    }

    /// A receiver of every snapshot (`changed().await` wakes after each sample).
    pub fn subscribe(&self) -> watch::Receiver<CpuSnapshot> {
        self.snapshots.clone()
    }

    /// A receiver of detected changes only (`None` until the first one).
    pub fn changes(&self) -> watch::Receiver<Option<CpuChange>> {
        self.changes.clone()
    }

    /// The configuration in use (interval raised to the minimum).
    pub fn config(&self) -> &CpuMonitorConfig {
        &self.config
    }

    /// Stops the sampling thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        {
            let _guard = self.stop.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.stop.flag.store(true, Ordering::Release);
            self.stop.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CpuMonitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a [`CpuMonitor`] gets its samples: the machine's counters ([`SysinfoSampler`]) or, in
/// tests, a script, so that the monitor's behaviour can be checked whatever else the machine runs.
pub trait CpuSampler: Send + 'static {
    /// Logical cores of the machine.
    fn cores(&self) -> usize;
    /// Usage since the previous call (or since creation, for the first).
    fn sample(&mut self) -> CpuSample;
}

/// This machine's CPU usage and this process's, from sysinfo.
#[derive(Debug)]
pub struct SysinfoSampler {
    system: System,
    pid: Pid,
}

impl SysinfoSampler {
    /// Reads the counters once: usage is a difference between two reads, so the first
    /// [`CpuSampler::sample`] covers the time since this call.
    pub fn new() -> Result<Self, CpuMonitorError> {
        let mut system = System::new().map_err(|e| CpuMonitorError::Sysinfo(e.to_string()))?;
        let pid =
            sysinfo::get_current_pid().map_err(|e| CpuMonitorError::Sysinfo(e.to_string()))?;
        refresh(&mut system, pid);
        Ok(Self { system, pid })
    }
}

impl CpuSampler for SysinfoSampler {
    fn cores(&self) -> usize {
        self.system.cpus().len().max(1)
    }

    fn sample(&mut self) -> CpuSample {
        refresh(&mut self.system, self.pid);
        CpuSample {
            global_pct: f64::from(self.system.global_cpu_usage()),
            own_pct: self
                .system
                .process(self.pid)
                .map_or(0.0, |p| f64::from(p.cpu_usage())),
            cores: self.cores(),
        }
    }
}

fn refresh(system: &mut System, pid: Pid) {
    system.refresh_cpu_usage();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_cpu(),
    );
}
