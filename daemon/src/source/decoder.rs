//! Turns raw live frames (JPEG bytes or YUYV buffers) into model input in the background,
//! always working on the newest one.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;

use super::feed::{Captured, Counters};
use super::imaging::{decode_jpeg, to_model_input, yuyv_to_rgb, ImageError, TargetSize};
use super::slot::LatestSlot;

/// Pixels as they come from a live source.
#[derive(Debug)]
pub(crate) enum RawImage {
    /// One JPEG.
    Jpeg(Vec<u8>),
    /// A packed YUYV buffer.
    Yuyv {
        data: Vec<u8>,
        width: u32,
        height: u32,
        stride: usize,
    },
}

/// A raw live frame and when it was captured.
#[derive(Debug)]
pub(crate) struct RawFrame {
    pub image: RawImage,
    pub origin: String,
    pub captured: Instant,
}

fn convert(raw: RawFrame, target: TargetSize) -> Result<Captured, ImageError> {
    let img = match raw.image {
        RawImage::Jpeg(bytes) => decode_jpeg(&bytes)?,
        RawImage::Yuyv {
            data,
            width,
            height,
            stride,
        } => yuyv_to_rgb(&data, width, height, stride)?,
    };
    Ok(Captured {
        label: None,
        pixels: to_model_input(&img, target)?,
        origin: raw.origin,
        captured: raw.captured,
    })
}

/// Spawns the decoder: takes the newest raw frame from `pending`, converts it on a blocking
/// thread and puts it into `out`. Raw or decoded frames replaced before use count as dropped.
pub(crate) fn spawn_decoder(
    what: String,
    pending: Arc<LatestSlot<RawFrame>>,
    out: Arc<LatestSlot<Captured>>,
    counters: Arc<Counters>,
    target: TargetSize,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(raw) = pending.recv().await {
            match tokio::task::spawn_blocking(move || convert(raw, target)).await {
                Ok(Ok(frame)) => {
                    if out.put(frame) {
                        counters.add_dropped(1);
                    }
                }
                Ok(Err(e)) => counters.decode_error(&what, &e),
                Err(e) => {
                    tracing::error!("{what}: frame conversion failed: {e}");
                    counters.decode_error(&what, &e);
                }
            }
        }
        out.close();
    })
}
