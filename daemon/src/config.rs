//! `jmdc-edge` configuration: a TOML file plus `JMDC_EDGE__SECTION__KEY` environment overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jmdc_core::settings;
pub use jmdc_core::settings::ConfigError;
use serde::Deserialize;

use crate::adaptive::AdaptiveConfig;
use crate::plan_spec::PlanSpec;

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
    pub model: ModelSection,
    pub plan: PlanSpec,
    #[serde(default)]
    pub cloud: Option<CloudSection>,
    pub source: SourceSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub output: OutputSection,
    /// The adaptive loop (off by default: the fixed `[plan]` is used).
    #[serde(default)]
    pub adaptive: AdaptiveConfig,
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

/// Where the cloud worker is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    /// UDP address of the worker.
    pub endpoint: SocketAddr,
    /// Name the worker's certificate is issued for.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// PEM file with the certificate(s) to trust (the worker's self-signed certificate or a CA).
    pub ca_cert: PathBuf,
    /// Give up on the cloud for a frame after this long and finish it on the edge.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Frame source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Source type; `cifar` reads a CIFAR-10 binary file (labels give a running accuracy).
    pub kind: SourceKind,
    pub path: PathBuf,
    /// Stop after this many frames (all frames when absent).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Supported frame sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Cifar,
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
}

/// Where results go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Print one line per frame (the summary is always printed).
    #[serde(default = "default_true")]
    pub per_frame: bool,
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

impl EdgeConfig {
    /// Reads `path` (TOML) and applies `JMDC_EDGE__SECTION__KEY` environment overrides.
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
        fix(&mut self.source.path);
        if let Some(cloud) = self.cloud.as_mut() {
            fix(&mut cloud.ca_cert);
        }
        if let Some(p) = self.runtime.onnxruntime.as_mut() {
            fix(p);
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.runtime.intra_op_threads == Some(0) {
            return Err("runtime.intra_op_threads must be at least 1".into());
        }
        if self.cloud.as_ref().is_some_and(|c| c.timeout_ms == 0) {
            return Err("cloud.timeout_ms must be at least 1".into());
        }
        self.adaptive.validate()?;
        self.plan.validate().map_err(|e| format!("plan: {e}"))
    }
}
