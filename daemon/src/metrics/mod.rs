//! Prometheus metrics of one `jmdc-edge` process: frames, drops, fallbacks, latency histograms,
//! bytes, the current plan, bandwidth, CPU load — rendered in the Prometheus text exposition
//! format 0.0.4 and served over HTTP on a Unix socket in the runtime directory and/or a loopback
//! TCP port.
//!
//! - [`section`]: the `[metrics]` configuration section;
//! - [`registry`]: [`Metrics`], the counters/gauges/histograms and their rendering;
//! - [`histogram`]: the lock-free latency histogram;
//! - [`http`]: one HTTP/1.1 exchange (bounded, timed);
//! - [`server`]: the listeners and [`MetricsServer`].
//!
//! The metric names and their meaning are listed in `docs/metrics.md`.

pub mod histogram;
pub mod http;
pub mod registry;
pub mod section;
pub mod server;

pub use registry::{FrameOutcome, Metrics};
pub use section::MetricsSection;
pub use server::{serve, serve_with, MetricsError, MetricsServer, ServerOptions};
