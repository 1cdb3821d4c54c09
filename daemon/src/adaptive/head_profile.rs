//! The start-up profile of the head layers, measured the way frames will run them.
//!
//! On a real device this is the plain back-to-back median of each layer
//! ([`measure_edge_profile`]). Under emulation (`crate::emulation`) every head run is followed by
//! a stretch of `(factor − 1) ×` its warm time, and on a shared host the next run then starts
//! with colder caches: AlexNet keep050's head took 282 µs back to back and 405 µs after a 2.6 ms
//! spin on the development VM. The stretch multiplies only the warm time and counts the rest once
//! ([`EdgeSpeed::finish_with_reference`]), so a layer's emulated time is its time in a stretched
//! run plus `(factor − 1) ×` its warm (shortest back-to-back) time — which is what this profile
//! measures. (A back-to-back
//! profile × factor under-predicted the first frames of every emulated run.)

use std::time::Duration;

use jmdc_core::package::ModelPackage;
use jmdc_core::profiling::{measure_edge_profile, median, profiling_input, ProfilingError};
use jmdc_core::runner::{LayerRunner, RunnerOptions};

use crate::emulation::EdgeSpeed;

/// Unmeasured runs before the timed ones.
const WARM_UP_RUNS: usize = 5;

/// Per-layer head time of `variant` on the (emulated) edge, µs: on a real device the median of
/// `runs` back-to-back runs; under emulation the median time of each layer in stretched runs plus
/// `(factor − 1) ×` its shortest back-to-back time.
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
    // Warm: back to back, the shortest of each layer, as the pipeline measures its reference.
    for _ in 0..WARM_UP_RUNS {
        runner.run_timed(input.view())?;
    }
    let mut warm = vec![f64::INFINITY; layers];
    for _ in 0..runs {
        let (_, timings) = runner.run_timed(input.view())?;
        for (w, t) in warm.iter_mut().zip(&timings) {
            *w = w.min(t.as_secs_f64() * 1e6);
        }
    }
    let reference = Duration::from_secs_f64(warm.iter().sum::<f64>() * 1e-6);
    let run_stretched = |runner: &mut LayerRunner| -> Result<Vec<Duration>, ProfilingError> {
        let watch = speed.start();
        let (_, timings) = runner.run_timed(input.view())?;
        speed.finish_with_reference(watch, Some(reference));
        Ok(timings)
    };
    run_stretched(&mut runner)?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); layers];
    for _ in 0..runs {
        let timings = run_stretched(&mut runner)?;
        for (s, t) in samples.iter_mut().zip(&timings) {
            s.push(t.as_secs_f64() * 1e6);
        }
    }
    Ok(samples
        .iter_mut()
        .zip(&warm)
        .map(|(s, &warm_us)| {
            let stretched_us = median(s);
            stretched_us + (factor - 1.0) * stretched_us.min(warm_us)
        })
        .collect())
}
