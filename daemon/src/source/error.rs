//! Errors starting a frame source.

use std::path::PathBuf;

use jmdc_core::cifar::CifarError;

/// Why a frame source could not be started. Every message names the file, folder, device or
/// program concerned.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The `[source]` section is inconsistent (message names the key).
    #[error("{0}")]
    Config(String),
    /// The model input is not a 3-channel image.
    #[error("model input {0:?}: frame sources deliver RGB images, the input must be [3, H, W] with H, W >= 1")]
    Input([usize; 3]),
    /// The CIFAR file could not be read.
    #[error("cifar source: {0}")]
    Cifar(#[from] CifarError),
    /// The image folder could not be read.
    #[error("{}: cannot read image folder: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The folder path is not a folder.
    #[error("{}: not a folder (kind = \"folder\" needs a folder of PNG/JPEG files)", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
    /// The MJPEG program could not be started.
    #[error("mjpeg source: cannot start `{program}`: {source}{hint}")]
    Spawn {
        /// The program (first element of `source.command`).
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// Extra advice (e.g. "is it installed and on PATH?").
        hint: &'static str,
    },
    /// The V4L2 device could not be opened.
    #[error("{}: cannot open ({source}) — is the camera connected and is the user in the `video` group?", path.display())]
    DeviceOpen {
        /// The device.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The V4L2 device opened but cannot be used as configured.
    #[error("{}: {message}", path.display())]
    Device {
        /// The device.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// V4L2 support was not compiled in.
    #[error("source.kind = \"v4l2\": this build has no V4L2 support (build jmdc-edge with feature `v4l2`)")]
    V4l2Disabled,
    /// `spawn` was called outside a Tokio runtime.
    #[error("frame source: must be started inside a Tokio runtime")]
    NoRuntime,
}
