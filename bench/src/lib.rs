//! Tooling for tests and benchmarks of jmdc.
//!
//! [`linkemu`] is a userspace UDP link emulator: a relay between a client and one upstream server
//! that shapes each direction to a rate, a one-way delay, a random loss probability and a drop-tail
//! queue, without root and without kernel `netem` (which this project's kernels lack).
//!
//! [`matrix`] is the benchmark runner of `jmdc-bench`: the real binaries over a matrix of link
//! and device conditions, the adaptive loop against fixed plans and baselines, and the report.
//!
//! [`soak`] is `jmdc-bench soak`: many devices with certificates, loss, a blackout and a worker
//! restart; frames lost, recovery times and memory over time.
//!
//! [`load`] is `jmdc-bench load`: N simulated devices over real QUIC against one worker
//! (closed or open loop), frames/s and latency percentiles, against bare ONNX Runtime.
#![warn(missing_docs, unreachable_pub)]

pub mod linkemu;
pub mod load;
pub mod matrix;
pub mod soak;
