//! `jmdc-cloud` configuration: `/etc/jmdc/cloud.toml`, then `/etc/jmdc/cloud.d/*.toml` in name
//! order, then `JMDC_CLOUD__SECTION__KEY` environment overrides (see `docs/configuration.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jmdc_service::settings;
pub use jmdc_service::settings::ConfigError;
use serde::Deserialize;

use jmdc_core::runtime::ExecutionDevice;

use crate::batch::policy::BatchConfig;
use crate::engine::EngineOptions;

/// Everything `jmdc-cloud serve` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// UDP address the QUIC endpoint binds to (`127.0.0.1:4433`, `[::]:4433`, port 0 for tests).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS certificate chain and private key (PEM).
    pub tls: TlsSection,
    /// Folder holding model packages (`<dir>/<model>/manifest.json`).
    pub models_dir: PathBuf,
    /// ONNX Runtime settings.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[batching]`: how frames of one (model, variant, split) share a run.
    #[serde(default)]
    pub batching: BatchingSection,
    /// `[limits]`: what protects the worker.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Log filter (`info`, `debug`, `jmdc_cloud=debug`).
    #[serde(default = "default_log")]
    pub log_level: String,
    /// Optional plain-HTTP listener for `/healthz`, `/readyz` and `/metrics`; absent = off.
    #[serde(default)]
    pub health: Option<HealthSection>,
}

/// `[health]`: the health and metrics HTTP listener (plain HTTP, no authentication: keep it on
/// a cluster-internal or loopback address, never on a public one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// TCP address (`0.0.0.0:9465` in a pod, `127.0.0.1:9465` on a host, port 0 for tests).
    pub listen: SocketAddr,
}

/// `[tls]`: PEM files for the server identity, and how devices prove theirs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The worker's certificate chain (PEM).
    pub cert: PathBuf,
    /// The worker's private key (PEM).
    pub key: PathBuf,
    /// `required` (default): every device presents a certificate issued by `client_ca`;
    /// `off`: anyone who reaches the port may use the worker (warned at start).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The CA (PEM) that issues device certificates (`jmdc-cloud gen-ca`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Revoked device certificates: SHA-256 fingerprints, one per line; re-read on SIGHUP.
    #[serde(default)]
    pub revoked: Option<PathBuf>,
}

/// Whether devices must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// A device certificate from `tls.client_ca` is required.
    #[default]
    Required,
    /// No client authentication.
    Off,
}

/// ONNX Runtime settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Path to `libonnxruntime.so`; otherwise `ORT_DYLIB_PATH` and well-known places are tried.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Sessions per (model, variant): how many frames of one variant run at once.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Intra-op threads per session; absent = ONNX Runtime's shared global pool.
    #[serde(default)]
    pub intra_op_threads: Option<usize>,
    /// Memory for merged layer ranges (each tail `split..L` as one session, built in the
    /// background the first time a split is used), MiB; 0 = always run chains of layer sessions.
    #[serde(default = "default_merged_cache_mib")]
    pub merged_cache_mib: usize,
    /// Every this many batches of a (model, variant, split) run as the chain of layer sessions,
    /// whose per-layer times the edge's profiler learns from; 0 = only while a range builds.
    #[serde(default = "default_profile_every")]
    pub profile_every: u64,
    /// `cpu` (default) or `cuda`: run the tails with ONNX Runtime's CUDA execution provider
    /// (needs the GPU build of the library in `onnxruntime`; the worker refuses to start without it).
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    /// The GPU the CUDA execution provider uses.
    #[serde(default)]
    pub cuda_device_id: u16,
}

/// Which ONNX Runtime execution provider runs the tails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionProvider {
    /// CPU kernels.
    #[default]
    Cpu,
    /// CUDA on an NVIDIA GPU.
    Cuda,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        Self {
            onnxruntime: None,
            workers: default_workers(),
            intra_op_threads: None,
            merged_cache_mib: default_merged_cache_mib(),
            profile_every: default_profile_every(),
            execution_provider: ExecutionProvider::Cpu,
            cuda_device_id: 0,
        }
    }
}

/// `[batching]`: frames for the same (model, variant, split) from any device run as one batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSection {
    /// Frames per batch at most; 1 = no batching.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The longest a frame waits for others to join it, µs; it waits only while the worker is
    /// under load (recent batches held more frames than are queued), 0 = never.
    #[serde(default = "default_max_wait_us")]
    pub max_wait_us: u64,
}

impl Default for BatchingSection {
    fn default() -> Self {
        let defaults = BatchConfig::default();
        Self {
            max_batch: defaults.max_batch,
            max_wait_us: u64::try_from(defaults.max_wait.as_micros()).unwrap_or(u64::MAX),
        }
    }
}

/// `[limits]`: admission limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Frames admitted at once (running + waiting for a session); beyond this the reply is `Overloaded`.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Concurrent bidirectional streams one connection may open.
    #[serde(default = "default_streams")]
    pub max_streams_per_connection: u32,
    /// Seconds without a request before a connection is closed (whatever keep-alives it sends).
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// Connections open at once, in all.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Connections open at once with one device identity (the name its client certificate
    /// proved, whatever its addresses); not applied with `tls.client_auth = "off"`.
    #[serde(default = "default_max_connections_per_device")]
    pub max_connections_per_device: usize,
    /// Request bytes buffered at once across all connections, MiB; a request that does not fit
    /// is answered `Overloaded`.
    #[serde(default = "default_max_buffered_mib")]
    pub max_buffered_mib: usize,
    /// A request's bytes must all arrive within this many milliseconds of its stream opening.
    #[serde(default = "default_request_read_timeout")]
    pub request_read_timeout_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_inflight: default_max_inflight(),
            max_streams_per_connection: default_streams(),
            idle_timeout_s: default_idle(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_connections_per_device: default_max_connections_per_device(),
            max_buffered_mib: default_max_buffered_mib(),
            request_read_timeout_ms: default_request_read_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4433))
}
fn default_log() -> String {
    "info".to_owned()
}
fn default_workers() -> usize {
    2
}
fn default_merged_cache_mib() -> usize {
    256
}
fn default_profile_every() -> u64 {
    64
}
fn default_max_batch() -> usize {
    BatchConfig::default().max_batch
}
fn default_max_wait_us() -> u64 {
    BatchingSection::default().max_wait_us
}
fn default_max_inflight() -> usize {
    256
}
fn default_streams() -> u32 {
    64
}
fn default_idle() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_address() -> usize {
    16
}
fn default_max_connections_per_device() -> usize {
    4
}
fn default_max_buffered_mib() -> usize {
    128
}
fn default_request_read_timeout() -> u64 {
    10_000
}

impl CloudConfig {
    /// Reads `path` (TOML), its drop-ins (`<stem>.d/*.toml`) and `JMDC_CLOUD__SECTION__KEY`
    /// environment overrides. Relative paths in any layer are taken relative to the folder of
    /// `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: CloudConfig = settings::load_toml(path, "JMDC_CLOUD")?;
        cfg.resolve_relative(settings::base_dir(path));
        cfg.validate().map_err(|m| ConfigError::new(path, m))?;
        Ok(cfg)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| settings::resolve_relative(p, base);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        if let Some(p) = self.tls.client_ca.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.revoked.as_mut() {
            fix(p);
        }
        fix(&mut self.models_dir);
        if let Some(p) = self.runtime.onnxruntime.as_mut() {
            fix(p);
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls.client_auth == ClientAuth::Required && self.tls.client_ca.is_none() {
            return Err(
                "tls.client_ca: required (the CA of the device certificates, `jmdc-cloud gen-ca`) \
                 unless tls.client_auth = \"off\""
                    .into(),
            );
        }
        if self.tls.client_auth == ClientAuth::Off && self.tls.revoked.is_some() {
            return Err("tls.revoked: only used with tls.client_auth = \"required\"".into());
        }
        if self.runtime.workers == 0 {
            return Err("runtime.workers must be at least 1".into());
        }
        if self.runtime.intra_op_threads == Some(0) {
            return Err("runtime.intra_op_threads must be at least 1".into());
        }
        if self.runtime.merged_cache_mib > 1 << 20 {
            return Err("runtime.merged_cache_mib must be at most 1048576 (1 TiB)".into());
        }
        if self.batching.max_batch == 0 || self.batching.max_batch > 1024 {
            return Err("batching.max_batch must be within 1..1024".into());
        }
        if self.batching.max_wait_us > 100_000 {
            return Err("batching.max_wait_us must be at most 100000 (0.1 s)".into());
        }
        if self.limits.max_inflight == 0 {
            return Err("limits.max_inflight must be at least 1".into());
        }
        if self.limits.max_streams_per_connection == 0 {
            return Err("limits.max_streams_per_connection must be at least 1".into());
        }
        if self.limits.idle_timeout_s == 0 {
            return Err("limits.idle_timeout_s must be at least 1".into());
        }
        if self.limits.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        if self.limits.max_connections_per_address == 0 {
            return Err("limits.max_connections_per_address must be at least 1".into());
        }
        if self.limits.max_connections_per_device == 0 {
            return Err("limits.max_connections_per_device must be at least 1".into());
        }
        // A budget smaller than one largest request would refuse it however idle the worker is.
        let min_mib = jmdc_core::protocol::MAX_REQUEST_BYTES.div_ceil(1 << 20);
        if self.limits.max_buffered_mib < min_mib || self.limits.max_buffered_mib > 65_536 {
            return Err(format!(
                "limits.max_buffered_mib must be within {min_mib}..65536 (one request may be {min_mib} MiB)"
            ));
        }
        if self.limits.request_read_timeout_ms == 0 {
            return Err("limits.request_read_timeout_ms must be at least 1".into());
        }
        jmdc_service::logging::parse_level(&self.log_level)
            .map(|_| ())
            .map_err(|e| format!("log_level: {e}"))
    }

    /// How the engine runs tails, from `[runtime]` and `[batching]`.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            workers: self.runtime.workers,
            intra_op_threads: self.runtime.intra_op_threads,
            batching: BatchConfig {
                max_batch: self.batching.max_batch,
                max_wait: Duration::from_micros(self.batching.max_wait_us),
            },
            merged_cache_bytes: self.runtime.merged_cache_mib << 20,
            profile_every: self.runtime.profile_every,
            device: match self.runtime.execution_provider {
                ExecutionProvider::Cpu => ExecutionDevice::Cpu,
                ExecutionProvider::Cuda => ExecutionDevice::Cuda {
                    device_id: i32::from(self.runtime.cuda_device_id),
                },
            },
        }
    }

    /// The settings that differ in `new` and need a restart to apply (all but `log_level`).
    pub fn restart_needed(&self, new: &CloudConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.tls != new.tls {
            changed.push("tls");
        }
        if self.models_dir != new.models_dir {
            changed.push("models_dir");
        }
        if self.runtime != new.runtime {
            changed.push("runtime");
        }
        if self.batching != new.batching {
            changed.push("batching");
        }
        if self.limits != new.limits {
            changed.push("limits");
        }
        if self.health != new.health {
            changed.push("health");
        }
        changed
    }
}
