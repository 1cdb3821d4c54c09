//! jmdc-service: the service plumbing both binaries (`jmdc-edge`, `jmdc-cloud`) share, kept out
//! of `jmdc-core` so that the core has no async runtime and no service framework:
//!
//! - [`logging`]: journald with structured fields under systemd, readable lines on stderr
//!   otherwise, a reload handle for the level;
//! - [`settings`]: the layered TOML configuration (file, drop-ins, environment) whose errors name
//!   the file or variable and the key;
//! - [`http_lite`]: the minimal HTTP/1.1 exchange of the metrics and health listeners;
//! - [`http_listener`]: their one accept loop (bounded concurrency, owned connection tasks);
//! - [`exposition`]: the Prometheus text-format writer both `/metrics` endpoints render with;
//! - [`histogram`]: the lock-free latency histogram both record request and stage times in;
//! - [`notify`]: the service manager's `Type=notify` protocol (READY, RELOADING, STOPPING,
//!   STATUS, watchdog).
#![warn(missing_docs, unreachable_pub)]
pub mod exposition;
pub mod histogram;
pub mod http_listener;
pub mod http_lite;
pub mod logging;
pub mod notify;
pub mod settings;
