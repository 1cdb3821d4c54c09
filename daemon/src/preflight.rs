//! What `jmdc-edge check-config` checks beyond parsing: that every file the configuration points
//! at exists and is what it should be, naming the key that points at it.

use std::path::{Path, PathBuf};

use jmdc_core::package::{LoadOptions, ModelPackage};

use crate::client::client_config_with_identity;
use crate::config::EdgeConfig;
use crate::source::SourceKind;

/// One referenced file that is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The configuration key, e.g. `cloud.ca_cert`.
    pub key: &'static str,
    /// The file it names (as resolved).
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.key, self.path.display(), self.reason)
    }
}

fn problem(key: &'static str, path: &Path, reason: impl ToString) -> FileProblem {
    FileProblem {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Checks the model package (hashes included), the cloud's CA and the device certificate and
/// key, the source's file or folder, the accuracy table and the ONNX Runtime library of `cfg`;
/// every problem found.
pub fn check_files(cfg: &EdgeConfig) -> Vec<FileProblem> {
    let mut out = Vec::new();
    let package_dir = cfg.model.packages_dir.join(&cfg.model.name);
    if let Err(e) = ModelPackage::load_with(&package_dir, &LoadOptions::default()) {
        out.push(problem("model.name", &package_dir, e));
    }
    if let Some(cloud) = &cfg.cloud {
        if !cloud.ca_cert.is_file() {
            out.push(problem("cloud.ca_cert", &cloud.ca_cert, "no such file"));
        }
        for (key, path) in [
            ("cloud.client_cert", &cloud.client_cert),
            ("cloud.client_key", &cloud.client_key),
        ] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_file()) {
                out.push(problem(key, p, "no such file"));
            }
        }
        if out.iter().all(|p| !p.key.starts_with("cloud.")) {
            let identity = cloud
                .client_cert
                .as_deref()
                .zip(cloud.client_key.as_deref());
            if let Err(e) = client_config_with_identity(&cloud.ca_cert, identity) {
                out.push(problem("cloud.ca_cert", &cloud.ca_cert, e));
            }
        }
    }
    if let Some(path) = &cfg.source.path {
        let (ok, what) = match cfg.source.kind {
            SourceKind::Cifar => (path.is_file(), "no such file"),
            SourceKind::Folder => (path.is_dir(), "no such folder"),
            SourceKind::V4l2 => (path.exists(), "no such device"),
            SourceKind::Mjpeg => (true, ""),
        };
        if !ok {
            out.push(problem("source.path", path, what));
        }
    }
    if let Some(table) = &cfg.adaptive.calibration {
        if !table.is_file() {
            out.push(problem("adaptive.calibration", table, "no such file"));
        }
    }
    if let Err(e) = jmdc_core::runtime::init_onnxruntime(cfg.runtime.onnxruntime.as_deref()) {
        let path = cfg
            .runtime
            .onnxruntime
            .clone()
            .unwrap_or_else(|| PathBuf::from("(ORT_DYLIB_PATH or the default places)"));
        out.push(problem("runtime.onnxruntime", &path, e));
    }
    out
}
