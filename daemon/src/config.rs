//! `jmdc-edge` configuration: a TOML file, its `edge.d/*.toml` drop-ins and `JMDC_EDGE__SECTION__KEY`
//! environment overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jmdc_service::settings;
pub use jmdc_service::settings::ConfigError;
use serde::Deserialize;

use crate::adaptive::AdaptiveSection;
use crate::emulation::EmulationSection;
use crate::metrics::MetricsSection;
use crate::plan_spec::PlanSpec;
pub use crate::source::{SourceKind, SourceSection};

/// Everything `jmdc-edge run` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Name this device reports to the cloud.
    #[serde(default = "default_device_id")]
    pub device_id: String,
    /// Log filter (`info`, `debug`, `jmdc_edge=debug`).
    #[serde(default = "default_log")]
    pub log_level: String,
    /// `[model]`: which package to load, from where.
    pub model: ModelSection,
    /// `[plan]`: the fixed plan (variant, split, ρ, codec), or the adaptive loop's start.
    pub plan: PlanSpec,
    /// `[cloud]`: the workers and the link's settings (absent: every frame on the edge).
    #[serde(default)]
    pub cloud: Option<CloudSection>,
    /// `[source]`: where frames come from.
    pub source: SourceSection,
    /// `[runtime]`: ONNX Runtime library and threads.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[output]`: where per-frame results go.
    #[serde(default)]
    pub output: OutputSection,
    /// The adaptive loop (off by default: the fixed `[plan]` is used).
    #[serde(default)]
    pub adaptive: AdaptiveSection,
    /// Emulation of a slower edge device (benchmarks; off by default).
    #[serde(default)]
    pub emulation: EmulationSection,
    /// Frames in flight.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// systemd integration and shutdown.
    #[serde(default)]
    pub service: ServiceSection,
    /// Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// Which model package to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Folder of model packages (`<dir>/<name>/manifest.json`).
    pub packages_dir: PathBuf,
    /// Package name, e.g. `alexnet-cifar10`.
    pub name: String,
}

/// Where the cloud workers are and how the edge stays connected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    /// UDP address of the worker (one endpoint; `endpoints` lists several).
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// Workers in order of preference; the edge fails over down the list.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Name the worker's certificate is issued for.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// PEM file with the certificate(s) to trust (the worker's self-signed certificate or a CA).
    pub ca_cert: PathBuf,
    /// This device's certificate (PEM, `jmdc-cloud gen-device-cert`) for workers that require
    /// client authentication; with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Give up on the cloud for a frame after this long and finish it on the edge.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Give up one connection attempt (QUIC handshake) after this long.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// After every endpoint failed, wait this long before trying again, doubling…
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// …up to this.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// For this long after the cloud became unreachable the wait stays at `reconnect_initial_ms`
    /// (it only starts doubling after), so a short outage ends within about one connect attempt.
    #[serde(default = "default_reconnect_fast_ms")]
    pub reconnect_fast_ms: u64,
    /// This many failed frames in a row on one connection drop it and reconnect.
    #[serde(default = "default_failures_before_reconnect")]
    pub failures_before_reconnect: u32,
}

impl CloudSection {
    /// Every configured endpoint, `endpoint` first.
    pub fn all_endpoints(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = self.endpoint.into_iter().collect();
        for e in &self.endpoints {
            if !all.contains(e) {
                all.push(*e);
            }
        }
        all
    }
}

/// `[pipeline]`: how many frames may be in flight at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Frames whose head has run and whose result is still outstanding (cloud round trip or edge
    /// fallback). 1 = one frame at a time. Results are always emitted in frame order.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            max_in_flight: default_in_flight(),
        }
    }
}

/// `[service]`: systemd integration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// How often the STATUS line (plan, bandwidth, CPU, fps) is refreshed.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// On SIGTERM, wait at most this long for in-flight frames.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for ServiceSection {
    fn default() -> Self {
        Self {
            status_interval_ms: default_status_interval_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

/// ONNX Runtime settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Path to `libonnxruntime.so`; otherwise `ORT_DYLIB_PATH` and well-known places are tried.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Intra-op threads for the head.
    #[serde(default)]
    pub intra_op_threads: Option<usize>,
    /// Memory for merged layer ranges (the head `0..s` and the fallback tail `s..L` as one session
    /// each, built in the background on first use), MiB; absent = 64, 0 = always chains.
    #[serde(default)]
    pub merged_cache_mib: Option<usize>,
}

impl RuntimeSection {
    /// Bytes for merged ranges (`merged_cache_mib`, default 64 MiB).
    pub fn merged_cache_bytes(&self) -> usize {
        self.merged_cache_mib.unwrap_or(64).saturating_mul(1 << 20)
    }
}

/// The largest `[output] top_k` (a model with fewer classes lists all of them).
pub const MAX_TOP_K: usize = 1000;

/// Where results go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Write one result per frame (the summary is always printed at the end of a finite run).
    #[serde(default = "default_true")]
    pub per_frame: bool,
    /// `text` (readable lines) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: OutputFormat,
    /// Append results to this file instead of stdout.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Add the `top_k` most probable classes with their softmax probabilities to every result
    /// (0: only the predicted class).
    #[serde(default)]
    pub top_k: usize,
    /// Add the softmax probability of every class to every JSON result (`scores`, by class
    /// index).
    #[serde(default)]
    pub scores: bool,
}

impl OutputSection {
    /// Whether per-frame JSON lines go to stdout: then stdout carries nothing else (summaries and
    /// tables go to stderr) so that it stays one JSON object per line.
    pub fn json_on_stdout(&self, quiet: bool) -> bool {
        self.per_frame && !quiet && self.format == OutputFormat::Json && self.file.is_none()
    }
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            per_frame: true,
            format: OutputFormat::default(),
            file: None,
            top_k: 0,
            scores: false,
        }
    }
}

/// Result line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// One readable line per frame.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_device_id() -> String {
    "edge".into()
}
fn default_log() -> String {
    "info".into()
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    2000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_reconnect_fast_ms() -> u64 {
    30_000
}
fn default_failures_before_reconnect() -> u32 {
    3
}
fn default_in_flight() -> usize {
    4
}
fn default_status_interval_ms() -> u64 {
    2000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}

impl EdgeConfig {
    /// Reads `path` (TOML), then its drop-ins `<dir>/<stem>.d/*.toml` in name order, then
    /// `JMDC_EDGE__SECTION__KEY` environment overrides (see `docs/configuration.md`).
    /// Relative paths inside the file are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: EdgeConfig = settings::load_toml(path, "JMDC_EDGE")?;
        cfg.resolve_relative(settings::base_dir(path));
        cfg.validate().map_err(|m| ConfigError::new(path, m))?;
        Ok(cfg)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| settings::resolve_relative(p, base);
        fix(&mut self.model.packages_dir);
        self.source.resolve_relative(base);
        self.metrics.resolve_relative(base);
        if let Some(cloud) = self.cloud.as_mut() {
            fix(&mut cloud.ca_cert);
            if let Some(p) = cloud.client_cert.as_mut() {
                fix(p);
            }
            if let Some(p) = cloud.client_key.as_mut() {
                fix(p);
            }
        }
        if let Some(p) = self.runtime.onnxruntime.as_mut() {
            fix(p);
        }
        if let Some(p) = self.output.file.as_mut() {
            fix(p);
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        jmdc_service::logging::parse_level(&self.log_level)
            .map_err(|e| format!("log_level: {e}"))?;
        if self.runtime.intra_op_threads == Some(0) {
            return Err("runtime.intra_op_threads must be at least 1".into());
        }
        if let Some(cloud) = &self.cloud {
            if cloud.client_cert.is_some() != cloud.client_key.is_some() {
                return Err(
                    "cloud.client_cert and cloud.client_key: set both (the device's certificate and its key) or neither"
                        .into(),
                );
            }
            if cloud.all_endpoints().is_empty() {
                return Err("cloud: set `endpoint` or `endpoints` (at least one worker)".into());
            }
            for (key, value) in [
                ("timeout_ms", cloud.timeout_ms),
                ("connect_timeout_ms", cloud.connect_timeout_ms),
                ("reconnect_initial_ms", cloud.reconnect_initial_ms),
                ("reconnect_max_ms", cloud.reconnect_max_ms),
            ] {
                if value == 0 {
                    return Err(format!("cloud.{key} must be at least 1"));
                }
            }
            if cloud.reconnect_max_ms < cloud.reconnect_initial_ms {
                return Err("cloud.reconnect_max_ms must be ≥ cloud.reconnect_initial_ms".into());
            }
            if cloud.failures_before_reconnect == 0 {
                return Err("cloud.failures_before_reconnect must be at least 1".into());
            }
        }
        if !(1..=256).contains(&self.pipeline.max_in_flight) {
            return Err("pipeline.max_in_flight must be between 1 and 256".into());
        }
        if self.output.top_k > MAX_TOP_K {
            return Err(format!(
                "output.top_k must be at most {MAX_TOP_K} (it is {})",
                self.output.top_k
            ));
        }
        if self.service.status_interval_ms == 0 {
            return Err("service.status_interval_ms must be at least 1".into());
        }
        self.adaptive.validate()?;
        self.emulation.validate()?;
        self.source.validate()?;
        self.metrics.validate()?;
        self.plan.validate().map_err(|e| format!("plan: {e}"))
    }
}
