//! Turns raw live frames (JPEG bytes or YUYV buffers) into model input, newest first.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;

use super::capture::{Captured, Counters};
use super::imaging::{decode_jpeg, to_model_input, yuyv_to_rgb, ImageError, TargetSize};
use super::mjpeg_dht::with_huffman_tables;
use super::slot::LatestSlot;

/// Pixels as they come from a live source.
#[derive(Debug)]
pub(crate) enum RawImage {
    /// One JPEG.
    Jpeg(Vec<u8>),
    /// A packed YUYV buffer.
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
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
    let (img, jpeg) = match raw.image {
        RawImage::Jpeg(bytes) => {
            let img = decode_jpeg(&bytes)?;
            // A JPEG already at the model input size can be forwarded as it is (with the
            // Huffman tables an MJPEG frame may lack, so that any decoder reads it).
            let jpeg = (img.dimensions() == (target.width, target.height))
                .then(|| Arc::<[u8]>::from(with_huffman_tables(&bytes).as_ref()));
            (img, jpeg)
        }
        RawImage::Yuyv {
            data,
            width,
            height,
            stride,
        } => (yuyv_to_rgb(&data, width, height, stride)?, None),
    };
    Ok(Captured {
        label: None,
        pixels: to_model_input(&img, target)?,
        origin: raw.origin,
        captured: raw.captured,
        jpeg,
    })
}

/// Decodes live frames on demand: when the consumer asks, the newest raw frame is converted on
/// a blocking thread (frames nobody asks for are never decoded). Cancel-safe: a conversion in
/// progress is kept and its result delivered by the next call.
#[derive(Debug)]
pub(crate) struct LiveDecoder {
    what: String,
    pending: Arc<LatestSlot<RawFrame>>,
    target: TargetSize,
    decoding: Option<JoinHandle<Result<Captured, ImageError>>>,
}

impl LiveDecoder {
    pub(crate) fn new(
        what: String,
        pending: Arc<LatestSlot<RawFrame>>,
        target: TargetSize,
    ) -> Self {
        Self {
            what,
            pending,
            target,
            decoding: None,
        }
    }

    /// The next decodable frame; `None` if the producer closed the slot.
    pub(crate) async fn next(&mut self, counters: &Counters) -> Option<Captured> {
        loop {
            let job = match self.decoding.as_mut() {
                Some(job) => job,
                None => {
                    let raw = self.pending.recv().await?;
                    let target = self.target;
                    self.decoding
                        .insert(tokio::task::spawn_blocking(move || convert(raw, target)))
                }
            };
            let result = job.await;
            self.decoding = None;
            match result {
                Ok(Ok(frame)) => return Some(frame),
                Ok(Err(e)) => counters.decode_error(&self.what, &e),
                Err(e) => counters.decode_error(&self.what, &e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn raw(image: RawImage) -> RawFrame {
        RawFrame {
            image,
            origin: "test".into(),
            captured: Instant::now(),
        }
    }

    #[tokio::test]
    async fn yuyv_and_jpeg_frames_reach_model_size_bad_ones_are_counted() {
        let pending = LatestSlot::new();
        let target = TargetSize {
            width: 4,
            height: 2,
        };
        let mut dec = LiveDecoder::new("test".into(), pending.clone(), target);
        let counters = Counters::default();
        // 8x4 YUYV mid-grey frame (Y=126 → 128), cropped/resized to 4x2.
        let yuyv: Vec<u8> = [126u8, 128].repeat(8 * 4);
        pending.put(raw(RawImage::Yuyv {
            data: yuyv,
            width: 8,
            height: 4,
            stride: 16,
        }));
        let f = dec.next(&counters).await.expect("frame");
        assert_eq!(f.pixels, vec![128; 3 * 4 * 2]);
        // A broken JPEG is skipped and counted; the good one after it is delivered.
        pending.put(raw(RawImage::Jpeg(vec![0xFF, 0xD8, 0xFF, 0xD9])));
        let p2 = pending.clone();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let img = image::RgbImage::from_pixel(16, 8, image::Rgb([10, 200, 30]));
            let mut jpg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 95)
                .encode_image(&img)
                .expect("encode");
            p2.put(raw(RawImage::Jpeg(jpg)));
        });
        let f = tokio::time::timeout(Duration::from_secs(10), dec.next(&counters))
            .await
            .expect("in time")
            .expect("frame");
        feeder.await.expect("feeder");
        assert_eq!(f.pixels.len(), 24);
        assert!(f.pixels[8..16].iter().all(|&g| g > 180), "{:?}", f.pixels);
        assert_eq!(counters.decode_errors.load(Ordering::Relaxed), 1);
        assert!(
            f.jpeg.is_none(),
            "16x8 is not the model size: nothing to forward"
        );

        // A JPEG already at the model size (4x2) is kept for forwarding, byte for byte.
        let img = image::RgbImage::from_pixel(4, 2, image::Rgb([200, 20, 60]));
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 80)
            .encode_image(&img)
            .expect("encode");
        pending.put(raw(RawImage::Jpeg(jpg.clone())));
        let f = dec.next(&counters).await.expect("frame");
        assert_eq!(f.jpeg.as_deref(), Some(&jpg[..]));
        assert_eq!(
            jmdc_core::jpeg::decode_chw(&jpg, [3, 2, 4]).expect("decodes"),
            f.pixels,
            "the forwarded JPEG decodes to exactly the frame's pixels"
        );
    }
}
