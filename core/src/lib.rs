//! jmdc-core: what the edge daemon and the cloud worker share — model packages, the ONNX Runtime
//! runner, the feature codec, the wire protocol, profiling, calibration and the optimizer.
//! `codec`, `jpeg`, `protocol` and `optimizer` are pure (no I/O) so they test in isolation. The
//! service plumbing both binaries share (logging, settings, HTTP, sd_notify) is the crate
//! `jmdc-service` (`core/service/`); this crate has no async runtime.
#![warn(missing_docs, unreachable_pub)]
pub mod calibration;
pub mod cifar;
pub mod codec;
pub mod jpeg;
pub mod optimizer;
pub mod package;
pub mod preflight;
pub mod preprocess;
pub mod profiling;
pub mod protocol;
pub mod runner;
pub mod runtime;
