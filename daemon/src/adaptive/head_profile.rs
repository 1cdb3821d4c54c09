//! The start-up profile of the head layers, measured the way frames will run them.
//!
//! On a real device this is the plain back-to-back median of each layer
//! ([`measure_edge_profile`]). Under emulation (`crate::emulation`) every head run is followed by
//! a stretch that spins for `(factor − 1) ×` its CPU time, and on a shared host the next run then
//! starts with colder caches: AlexNet keep050's head took 282 µs back to back and 405 µs after a
//! 2.6 ms spin on the development VM (`docs/edge-profiles.md`). A profile taken back to back and
//! multiplied by the factor under-predicted emulated frames by 2–3×, so the loop's first decisions
//! were made on the wrong numbers. Here each profiling run is stretched like a frame's head, so
//! the per-layer times carry what the stretch does to the run after it.

use std::time::Duration;

use jmdc_core::package::ModelPackage;
use jmdc_core::profiling::{measure_edge_profile, median, profiling_input, ProfilingError};
use jmdc_core::runner::{LayerRunner, RunnerOptions};

use crate::emulation::EdgeSpeed;

/// Unmeasured runs before the timed ones.
const WARM_UP_RUNS: usize = 5;

/// Per-layer head time of `variant` on the (emulated) edge, µs: the median over `runs` of each
/// layer's time as a frame would see it, times the emulated speed factor.
pub(super) fn measure_head_profile(
    package: &ModelPackage,
    variant: &str,
    runs: usize,
    options: &RunnerOptions,
    speed: EdgeSpeed,
) -> Result<Vec<f64>, ProfilingError> {
    let factor = speed.factor();
    if !speed.is_emulated() {
        return measure_edge_profile(package, variant, WARM_UP_RUNS, runs, options);
    }
    if runs == 0 {
        return Err(ProfilingError::InvalidArgument(
            "the head profile needs at least one run".into(),
        ));
    }
    let layers = package.variant(variant)?.num_layers();
    let mut runner = LayerRunner::new(package, variant, 0..layers, options)?;
    let input = profiling_input(package, None)?;
    let run_stretched = |runner: &mut LayerRunner| -> Result<Vec<Duration>, ProfilingError> {
        let watch = speed.start();
        let (_, timings) = runner.run_timed(input.view())?;
        speed.finish(watch);
        Ok(timings)
    };
    for _ in 0..WARM_UP_RUNS {
        run_stretched(&mut runner)?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); layers];
    for _ in 0..runs {
        let timings = run_stretched(&mut runner)?;
        for (s, t) in samples.iter_mut().zip(&timings) {
            s.push(t.as_secs_f64() * 1e6);
        }
    }
    Ok(samples.iter_mut().map(|s| median(s) * factor).collect())
}
