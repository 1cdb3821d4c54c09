//! A frame as a source delivers it: 8-bit CHW pixels already at the model's input size.

use std::sync::Arc;
use std::time::Instant;

/// One input frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Sequence number given by the source (0, 1, 2, … in delivery order).
    pub id: u64,
    /// Ground-truth class when the source knows it (CIFAR files); gives a running top-1.
    pub label: Option<u8>,
    /// `C × H × W` bytes, channel-major, at the model's input size.
    pub pixels: Vec<u8>,
    /// Where the frame came from: a file name, `mjpeg`, `/dev/video0`, … (`None` when obvious).
    pub origin: Option<String>,
    /// When the source captured or read the frame (latency is measured from here).
    pub captured: Instant,
    /// The JPEG the source delivered, when it was already exactly at the model input size (so
    /// `pixels` are these bytes decoded): a cloud-only plan with `forward_jpeg` sends it as is.
    pub jpeg: Option<Arc<[u8]>>,
}

impl Frame {
    /// A frame captured now.
    pub fn new(id: u64, label: Option<u8>, pixels: Vec<u8>) -> Self {
        Self {
            id,
            label,
            pixels,
            origin: None,
            captured: Instant::now(),
            jpeg: None,
        }
    }

    /// Attaches the source's JPEG bytes (see [`Frame::jpeg`]).
    pub fn with_jpeg(mut self, jpeg: impl Into<Arc<[u8]>>) -> Self {
        self.jpeg = Some(jpeg.into());
        self
    }
}
