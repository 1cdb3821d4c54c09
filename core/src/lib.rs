//! jmdc-core: what the edge daemon and the cloud worker share that touches files or ONNX Runtime —
//! loading and verifying model packages, the ONNX Runtime runner, calibration tables on disk,
//! CIFAR files, preprocessing and profiling (timing layers and the codec on this machine).
//!
//! The pure half (codec, wire protocol, optimizer, in-memory JPEG, manifest schema, calibration
//! table, profile estimators) is the crate `jmdc-proto` (`core/proto/`), re-exported here under
//! the same module names so both binaries have one path to each thing. The service plumbing both
//! binaries share (logging, settings, HTTP, sd_notify) is the crate `jmdc-service`
//! (`core/service/`); this crate has no async runtime.
#![warn(missing_docs, unreachable_pub)]
pub use jmdc_proto::{codec, jpeg, optimizer, protocol};

pub mod calibration;
pub mod cifar;
pub mod package;
pub mod preflight;
pub mod preprocess;
pub mod profiling;
pub mod runner;
pub mod runtime;
