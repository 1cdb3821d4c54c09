//! The one error type of the benchmark runner library.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while planning, running or reporting a benchmark matrix.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("calibration table {path}: {message}")]
    Calibration { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{name}: {message}")]
    Process { name: String, message: String },
    #[error("{name} did not finish within {:.0} s", .after.as_secs_f64())]
    Timeout { name: String, after: Duration },
    #[error("interrupted (Ctrl-C or SIGTERM)")]
    Interrupted,
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A failure of the child process `name`.
    pub fn process(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Process {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// Result with [`BenchError`].
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
