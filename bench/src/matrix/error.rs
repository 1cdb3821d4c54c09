//! The one error type of the benchmark runner library.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while planning, running or reporting a benchmark matrix.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or folder cannot be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (summary, calibration table, `meta.json`) cannot be parsed or written.
    #[error("{path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parse or serialisation error.
        #[source]
        source: serde_json::Error,
    },
    /// A CSV file (`results.csv`, `dynamic.csv`) has a bad line.
    #[error("{path}, line {line}: {message}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// Line number in the file (1-based; the header is line 1).
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// The model's calibration table is unusable (it has no entries).
    #[error("calibration table {path}: {message}")]
    Calibration {
        /// The calibration table file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A bad argument, name or selection, or a missing binary (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// A child process (or a helper: the signal handler, a reader thread, the in-process link
    /// emulator) failed.
    #[error("{name}: {message}")]
    Process {
        /// What failed (`jmdc-edge`, `jmdc-cloud`, `signal handler`, …).
        name: String,
        /// What happened (with the tail of the child's stderr when there is one).
        message: String,
    },
    /// Something did not finish in time: a child (then killed), a start-up, the soak warm-up.
    #[error("{name} did not finish within {:.0} s", .after.as_secs_f64())]
    Timeout {
        /// What was waited for.
        name: String,
        /// How long it was given.
        after: Duration,
    },
    /// Ctrl-C or SIGTERM arrived; the children were stopped.
    #[error("interrupted (Ctrl-C or SIGTERM)")]
    Interrupted,
    /// An SVG figure cannot be drawn or written.
    #[error("plot {path}: {message}")]
    Plot {
        /// The figure file.
        path: PathBuf,
        /// The plotting error.
        message: String,
    },
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
