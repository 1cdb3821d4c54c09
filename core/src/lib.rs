//! jmdc-core: what the edge daemon and the cloud worker share.
pub mod calibration;
pub mod cifar;
pub mod package;
pub mod preprocess;
pub mod profiling;
pub mod runner;
pub mod runtime;
pub mod codec;
pub mod optimizer;
pub mod protocol;
