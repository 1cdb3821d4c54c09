//! Frame sources: where the edge's frames come from.
//!
//! | kind | what | drops |
//! | --- | --- | --- |
//! | `cifar` | a CIFAR-10 binary file (labels known) | never: read on demand |
//! | `folder` | PNG/JPEG files in name order; with `follow`, new files are picked up | never: a bounded queue waits for the pipeline |
//! | `mjpeg` | an MJPEG stream on a child process's stdout, restarted with backoff | newest frame wins |
//! | `v4l2` | a V4L2 camera (MJPEG or YUYV), re-opened with backoff | newest frame wins |
//!
//! Every frame is decoded, centre-cropped to the model's aspect ratio, resized (triangle
//! filter) to the model input and delivered as 8-bit RGB, channel-major (normalisation is the
//! pipeline's job). See `docs/sources.md`.

mod capture;
mod cifar;
mod decoder;
mod error;
mod feed;
mod folder;
pub mod imaging;
pub mod jpeg_split;
mod mjpeg;
mod mjpeg_dht;
mod section;
mod slot;
#[cfg(feature = "v4l2")]
mod v4l2;

pub use error::SourceError;
pub use feed::{FrameFeed, SourceStats};
pub use folder::is_image_name;
pub use section::{CaptureFormat, SourceKind, SourceSection, DEFAULT_DEVICE};

use capture::Started;
use decoder::LiveDecoder;
use feed::Inner;
use imaging::TargetSize;

/// Starts the source described by `section` for a model whose input is `input` = `[C, H, W]`
/// (C must be 3). Fails with an error naming the file, folder, device or program when it does
/// not exist or cannot be opened. Live sources (`mjpeg`, `v4l2`) must be started inside a Tokio
/// runtime; they run in the background until the feed is dropped.
pub fn spawn(section: &SourceSection, input: [usize; 3]) -> Result<FrameFeed, SourceError> {
    section.validate().map_err(SourceError::Config)?;
    let target = TargetSize::from_chw(input).ok_or(SourceError::Input(input))?;
    let started = match section.kind {
        SourceKind::Cifar => cifar::start(section, target)?.map(Inner::Cifar),
        SourceKind::Folder => folder::start(section, target)?.map(Inner::Queue),
        SourceKind::Mjpeg => mjpeg::start(section, target)?.map(Inner::Live),
        SourceKind::V4l2 => start_v4l2(section, target)?.map(Inner::Live),
    };
    Ok(FrameFeed::new(started, section))
}

#[cfg(feature = "v4l2")]
fn start_v4l2(
    section: &SourceSection,
    target: TargetSize,
) -> Result<Started<LiveDecoder>, SourceError> {
    v4l2::start(section, target)
}

#[cfg(not(feature = "v4l2"))]
fn start_v4l2(
    _section: &SourceSection,
    _target: TargetSize,
) -> Result<Started<LiveDecoder>, SourceError> {
    Err(SourceError::V4l2Disabled)
}
