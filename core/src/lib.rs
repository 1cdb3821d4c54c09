//! jmdc-core: what the edge daemon and the cloud worker share — model packages, the ONNX Runtime
//! runner, the feature codec, the wire protocol, profiling, calibration and the optimizer.
//! `codec`, `jpeg`, `protocol` and `optimizer` are pure (no I/O) so they test in isolation. `http_lite` is the
//! minimal HTTP/1.1 exchange both services' plain-HTTP listeners (metrics, health) use.
pub mod calibration;
pub mod cifar;
pub mod codec;
pub mod http_lite;
pub mod jpeg;
pub mod logging;
pub mod optimizer;
pub mod package;
pub mod preflight;
pub mod preprocess;
pub mod profiling;
pub mod protocol;
pub mod runner;
pub mod runtime;
pub mod settings;
