//! What both binaries' `check-config` report about the files a configuration names: one
//! [`FileProblem`] per missing or unusable file, with the key that points at it.

use std::path::{Path, PathBuf};

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

impl FileProblem {
    /// A problem with `path`, named by `key`.
    pub fn new(key: &'static str, path: &Path, reason: impl ToString) -> Self {
        Self {
            key,
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.key, self.path.display(), self.reason)
    }
}

/// Whether the ONNX Runtime library of `runtime.onnxruntime` (`explicit`; else `ORT_DYLIB_PATH`
/// and the default places) loads.
pub fn check_onnxruntime(explicit: Option<&Path>) -> Option<FileProblem> {
    let error = crate::runtime::init_onnxruntime(explicit).err()?;
    let path = explicit.map_or_else(
        || PathBuf::from("(ORT_DYLIB_PATH or the default places)"),
        Path::to_path_buf,
    );
    Some(FileProblem::new("runtime.onnxruntime", &path, error))
}
