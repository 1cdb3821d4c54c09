//! The benchmark runner behind `jmdc-bench`: runs the real `jmdc-edge`, `jmdc-cloud` and
//! `jmdc-linkemu` release binaries over a matrix of cells (bandwidth × RTT × edge profile × CPU
//! load), compares the adaptive loop with every fixed plan, the baselines and Neurosurgeon, and
//! writes `results.csv`, `summary.csv`, SVG figures and a markdown report.
//!
//! | module | job |
//! | --- | --- |
//! | [`cells`] | the matrix and its presets |
//! | [`plans`] | fixed plans from the calibration table (Pareto set, baselines) |
//! | [`process`] | child processes with deadlines, killed on drop; Ctrl-C/SIGTERM |
//! | [`services`] | the worker, the relay, the spinner |
//! | [`edge`] | edge configuration and runs |
//! | [`summary`] | the edge's summary JSON and per-frame lines |
//! | [`runner`] | one cell: repeats, interleaving, screening |
//! | [`dynamic`] | the bandwidth-step run and its analysis |
//! | [`results`], [`csvio`] | `results.csv` |
//! | [`analysis`] | oracle, baselines, ratios, targets, `summary.csv` |
//! | [`meta`] | `meta.json`: machine, commit, settings, timings |
//! | [`report`], [`plots`] | the markdown report and the SVG figures |

pub mod analysis;
pub mod cells;
pub mod csvio;
pub mod dynamic;
pub mod edge;
pub mod error;
pub mod meta;
pub mod plans;
pub mod plots;
pub mod process;
pub mod report;
pub mod results;
pub mod runner;
pub mod services;
pub mod summary;

pub use error::BenchError;
