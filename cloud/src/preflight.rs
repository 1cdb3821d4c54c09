//! What `jmdc-cloud check-config` checks beyond parsing: that every file the configuration points
//! at exists and is what it should be, naming the key that points at it.

use jmdc_core::package::{LoadOptions, ModelRegistry};
use jmdc_core::preflight::{check_onnxruntime, FileProblem};

use crate::config::CloudConfig;
use crate::identity::RevocationList;
use crate::tls;

/// Checks the certificate, key, device CA, deny list, model packages (hashes included) and the
/// ONNX Runtime library of `cfg`; every problem found, in that order.
pub fn check_files(cfg: &CloudConfig) -> Vec<FileProblem> {
    let mut out = Vec::new();
    if let Err(e) = tls::load_certs(&cfg.tls.cert) {
        out.push(FileProblem::new("tls.cert", &cfg.tls.cert, e));
    }
    if let Err(e) = tls::load_key(&cfg.tls.key) {
        out.push(FileProblem::new("tls.key", &cfg.tls.key, e));
    }
    if let Some(ca) = &cfg.tls.client_ca {
        if let Err(e) = crate::identity::client_verifier(ca, std::sync::Arc::default()) {
            out.push(FileProblem::new("tls.client_ca", ca, e));
        }
    }
    if let Some(list) = &cfg.tls.revoked {
        if let Err(e) = RevocationList::load(Some(list)) {
            out.push(FileProblem::new("tls.revoked", list, e));
        }
    }
    match ModelRegistry::load(&cfg.models_dir, &LoadOptions::default()) {
        Ok(registry) if registry.names().next().is_none() => {
            out.push(FileProblem::new(
                "models_dir",
                &cfg.models_dir,
                "no model package in it",
            ));
        }
        Ok(_) => {}
        Err(e) => out.push(FileProblem::new("models_dir", &cfg.models_dir, e)),
    }
    out.extend(check_onnxruntime(cfg.runtime.onnxruntime.as_deref()));
    out
}
