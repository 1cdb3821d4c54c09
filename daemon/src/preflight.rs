//! What `jmdc-edge check-config` checks beyond parsing: that every file the configuration points
//! at exists and is what it should be, naming the key that points at it.

use jmdc_core::package::{LoadOptions, ModelPackage};
use jmdc_core::preflight::{check_onnxruntime, FileProblem};

use crate::client::client_config_with_identity;
use crate::config::EdgeConfig;
use crate::source::SourceKind;

/// Checks the model package (hashes included), the cloud's CA and the device certificate and
/// key, the source's file or folder, the accuracy table and the ONNX Runtime library of `cfg`;
/// every problem found.
pub fn check_files(cfg: &EdgeConfig) -> Vec<FileProblem> {
    let mut out = Vec::new();
    let package_dir = cfg.model.packages_dir.join(&cfg.model.name);
    if let Err(e) = ModelPackage::load_with(&package_dir, &LoadOptions::default()) {
        out.push(FileProblem::new("model.name", &package_dir, e));
    }
    if let Some(cloud) = &cfg.cloud {
        if !cloud.ca_cert.is_file() {
            out.push(FileProblem::new(
                "cloud.ca_cert",
                &cloud.ca_cert,
                "no such file",
            ));
        }
        for (key, path) in [
            ("cloud.client_cert", &cloud.client_cert),
            ("cloud.client_key", &cloud.client_key),
        ] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_file()) {
                out.push(FileProblem::new(key, p, "no such file"));
            }
        }
        if out.iter().all(|p| !p.key.starts_with("cloud.")) {
            let identity = cloud
                .client_cert
                .as_deref()
                .zip(cloud.client_key.as_deref());
            if let Err(e) = client_config_with_identity(&cloud.ca_cert, identity) {
                out.push(FileProblem::new("cloud.ca_cert", &cloud.ca_cert, e));
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
            out.push(FileProblem::new("source.path", path, what));
        }
    }
    if let Some(table) = &cfg.adaptive.calibration {
        if !table.is_file() {
            out.push(FileProblem::new(
                "adaptive.calibration",
                table,
                "no such file",
            ));
        }
    }
    out.extend(check_onnxruntime(cfg.runtime.onnxruntime.as_deref()));
    out
}
