//! What `jmdc-cloud check-config` checks beyond parsing: that every file the configuration points
//! at exists and is what it should be, naming the key that points at it.

use std::path::{Path, PathBuf};

use jmdc_core::package::{LoadOptions, ModelRegistry};

use crate::config::CloudConfig;
use crate::identity::RevocationList;
use crate::tls;

/// One referenced file that is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The configuration key, e.g. `tls.client_ca`.
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

/// Checks the certificate, key, device CA, deny list, model packages (hashes included) and the
/// ONNX Runtime library of `cfg`; every problem found, in that order.
pub fn check_files(cfg: &CloudConfig) -> Vec<FileProblem> {
    let mut out = Vec::new();
    if let Err(e) = tls::load_certs(&cfg.tls.cert) {
        out.push(problem("tls.cert", &cfg.tls.cert, e));
    }
    if let Err(e) = tls::load_key(&cfg.tls.key) {
        out.push(problem("tls.key", &cfg.tls.key, e));
    }
    if let Some(ca) = &cfg.tls.client_ca {
        if let Err(e) =
            crate::identity::client_verifier(ca, RevocationList::load(None).unwrap_or_default())
        {
            out.push(problem("tls.client_ca", ca, e));
        }
    }
    if let Some(list) = &cfg.tls.revoked {
        if let Err(e) = RevocationList::load(Some(list)) {
            out.push(problem("tls.revoked", list, e));
        }
    }
    match ModelRegistry::load(&cfg.models_dir, &LoadOptions::default()) {
        Ok(registry) if registry.names().next().is_none() => {
            out.push(problem(
                "models_dir",
                &cfg.models_dir,
                "no model package in it",
            ));
        }
        Ok(_) => {}
        Err(e) => out.push(problem("models_dir", &cfg.models_dir, e)),
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
