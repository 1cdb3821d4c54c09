//! Loading the binaries' TOML configuration files (`jmdc-edge`, `jmdc-cloud`): one file plus
//! `PREFIX__SECTION__KEY` environment overrides, deserialised into a `deny_unknown_fields` struct,
//! with errors that name the file and the key.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl ConfigError {
    /// An error about `path`.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Reads `path` (TOML) with `env_prefix__SECTION__KEY` environment overrides into `T`.
pub fn load_toml<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigError> {
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(env_prefix)
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigError::new(path, e.to_string()))
}

/// Makes `path` absolute relative to `base` (the configuration file's folder) when it is relative.
pub fn resolve_relative(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// The folder relative paths in the file `path` are taken from.
pub fn base_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}
