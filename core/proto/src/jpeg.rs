//! JPEG input for cloud-only plans: the edge compresses the 8-bit CHW model input as a baseline
//! JPEG (payload kind [`crate::protocol::PayloadKind::Jpeg`]), the cloud decodes it back to CHW
//! bytes and normalises them exactly as a raw image.
//!
//! Pure (no I/O). The encoder is the `image` crate's (`image::codecs::jpeg::JpegEncoder`: baseline,
//! 4:4:4, standard Huffman tables, libjpeg quality scaling); the decoder is the `image` crate's
//! (zune-jpeg). [`decode_chw`] reads the header first and refuses a JPEG whose dimensions differ
//! from the model input **before any pixel is decoded**, so a hostile payload cannot make the
//! worker allocate more than the model input; it never panics (a panic inside the third-party
//! decoder is caught and reported as [`JpegError::Decode`]).
//!
//! ```
//! use jmdc_proto::jpeg::{decode_chw, JpegEncoder};
//! let shape = [3, 32, 32];
//! let pixels: Vec<u8> = (0..3 * 32 * 32).map(|i| (i % 251) as u8).collect();
//! let mut jpg = Vec::new();
//! JpegEncoder::new().encode_into(&pixels, shape, 90, &mut jpg).unwrap();
//! let back = decode_chw(&jpg, shape).unwrap();
//! assert_eq!(back.len(), pixels.len());
//! assert!(decode_chw(&jpg, [3, 16, 16]).is_err()); // wrong size: refused before decoding
//! ```

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::codecs::jpeg::JpegDecoder;
use image::{ColorType, ExtendedColorType, ImageDecoder};

/// Lowest JPEG quality.
pub const MIN_QUALITY: u8 = 1;
/// Highest JPEG quality.
pub const MAX_QUALITY: u8 = 100;
/// Prefix of the codec names (`jpeg90`) used by plans and calibration tables.
pub const CODEC_PREFIX: &str = "jpeg";

/// Why an image could not be encoded or a payload decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JpegError {
    /// The quality is not in `1..=100`.
    #[error("JPEG quality {0} is not in 1..=100")]
    Quality(u8),
    /// The model input is not an image JPEG can carry.
    #[error("shape {0:?} is not a JPEG image [C, H, W] with C = 1 or 3 and 1 ≤ H, W ≤ 65535")]
    Shape([usize; 3]),
    /// The pixel buffer does not match the shape.
    #[error("pixel buffer has {got} bytes, shape {shape:?} needs {expected}")]
    Size {
        /// Given length.
        got: usize,
        /// Required length.
        expected: usize,
        /// The CHW shape.
        shape: [usize; 3],
    },
    /// The encoder failed.
    #[error("cannot encode JPEG: {0}")]
    Encode(String),
    /// The bytes are not a JPEG the decoder accepts (or the decoder failed).
    #[error("not a decodable JPEG: {0}")]
    Decode(String),
    /// The JPEG's header dimensions differ from the model input (nothing was decoded).
    #[error("JPEG is {width}x{height}, the model input is {expected_width}x{expected_height}")]
    Dimensions {
        /// Width in the JPEG header.
        width: u32,
        /// Height in the JPEG header.
        height: u32,
        /// Model input width W.
        expected_width: usize,
        /// Model input height H.
        expected_height: usize,
    },
    /// The JPEG's colour type cannot give the model's channels.
    #[error("JPEG has colour type {found:?}; a {channels}-channel model input needs RGB or grey")]
    Color {
        /// What the JPEG holds.
        found: ColorType,
        /// Channels of the model input.
        channels: usize,
    },
}

/// The codec name of quality `q`: `jpeg90`.
pub fn codec_name(quality: u8) -> String {
    format!("{CODEC_PREFIX}{quality}")
}

/// Parses a codec name `jpegQ` (Q in `1..=100`, case-insensitive); `None` for anything else.
pub fn parse_codec_name(name: &str) -> Option<u8> {
    let lower = name.trim().to_ascii_lowercase();
    let digits = lower.strip_prefix(CODEC_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 3 {
        return None;
    }
    digits
        .parse::<u8>()
        .ok()
        .filter(|q| (MIN_QUALITY..=MAX_QUALITY).contains(q))
}

/// Checks a quality.
pub fn validate_quality(quality: u8) -> Result<(), JpegError> {
    if (MIN_QUALITY..=MAX_QUALITY).contains(&quality) {
        Ok(())
    } else {
        Err(JpegError::Quality(quality))
    }
}

/// Checks that `shape` is `[1 | 3, H, W]` with `1 ≤ H, W ≤ 65535`; returns (W, H).
fn image_dims(shape: [usize; 3]) -> Result<(u32, u32), JpegError> {
    let [c, h, w] = shape;
    let ok = |d: usize| (1..=usize::from(u16::MAX)).contains(&d);
    if !(c == 1 || c == 3) || !ok(h) || !ok(w) {
        return Err(JpegError::Shape(shape));
    }
    // Both ≤ 65535 (checked above).
    Ok((w as u32, h as u32))
}

/// Encodes CHW 8-bit images as JPEG, reusing its interleaving buffer between calls.
#[derive(Debug, Default, Clone)]
pub struct JpegEncoder {
    interleaved: Vec<u8>,
}

impl JpegEncoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes `pixels` (CHW, `shape = [C, H, W]`, C = 3 for RGB or 1 for grey) at `quality`
    /// (1–100) into `out` (cleared first).
    pub fn encode_into(
        &mut self,
        pixels: &[u8],
        shape: [usize; 3],
        quality: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), JpegError> {
        validate_quality(quality)?;
        let (width, height) = image_dims(shape)?;
        let [c, h, w] = shape;
        let expected = c * h * w;
        if pixels.len() != expected {
            return Err(JpegError::Size {
                got: pixels.len(),
                expected,
                shape,
            });
        }
        out.clear();
        let color = if c == 3 {
            let plane = h * w;
            self.interleaved.clear();
            self.interleaved.resize(expected, 0);
            for (p, px) in self.interleaved.chunks_exact_mut(3).enumerate() {
                px[0] = pixels[p];
                px[1] = pixels[plane + p];
                px[2] = pixels[2 * plane + p];
            }
            ExtendedColorType::Rgb8
        } else {
            self.interleaved.clear();
            self.interleaved.extend_from_slice(pixels);
            ExtendedColorType::L8
        };
        // The buffer length equals width·height·channels (checked above), so `encode` does not
        // hit its length assertion.
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut *out, quality)
            .encode(&self.interleaved, width, height, color)
            .map_err(|e| JpegError::Encode(e.to_string()))
    }
}

/// Encodes CHW `pixels` as a JPEG at `quality` (see [`JpegEncoder::encode_into`]).
pub fn encode_chw(pixels: &[u8], shape: [usize; 3], quality: u8) -> Result<Vec<u8>, JpegError> {
    let mut out = Vec::new();
    JpegEncoder::new().encode_into(pixels, shape, quality, &mut out)?;
    Ok(out)
}

/// Reads only the header of a JPEG: `(width, height)`.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), JpegError> {
    guarded(|| {
        let decoder =
            JpegDecoder::new(Cursor::new(bytes)).map_err(|e| JpegError::Decode(e.to_string()))?;
        Ok(decoder.dimensions())
    })
}

/// Decodes a JPEG into CHW 8-bit pixels of `shape = [C, H, W]`.
///
/// The header is read first: a JPEG whose dimensions are not exactly W×H is refused with
/// [`JpegError::Dimensions`] before any pixel is decoded. An RGB JPEG gives C = 3; a grey JPEG
/// gives C = 1, or C = 3 with the grey value in every channel. Never panics.
pub fn decode_chw(bytes: &[u8], shape: [usize; 3]) -> Result<Vec<u8>, JpegError> {
    let (width, height) = image_dims(shape)?;
    let [c, h, w] = shape;
    guarded(|| {
        let decoder =
            JpegDecoder::new(Cursor::new(bytes)).map_err(|e| JpegError::Decode(e.to_string()))?;
        let (jw, jh) = decoder.dimensions();
        if (jw, jh) != (width, height) {
            return Err(JpegError::Dimensions {
                width: jw,
                height: jh,
                expected_width: w,
                expected_height: h,
            });
        }
        let color = decoder.color_type();
        let src_channels = match (color, c) {
            (ColorType::Rgb8, 3) => 3,
            (ColorType::L8, 1 | 3) => 1,
            (found, channels) => return Err(JpegError::Color { found, channels }),
        };
        let plane = h * w;
        let mut interleaved = vec![0u8; plane * src_channels];
        // `total_bytes` of an Rgb8/L8 image of the checked size is exactly this length.
        decoder
            .read_image(&mut interleaved)
            .map_err(|e| JpegError::Decode(e.to_string()))?;
        let mut out = vec![0u8; c * plane];
        if src_channels == 3 {
            for (p, px) in interleaved.chunks_exact(3).enumerate() {
                out[p] = px[0];
                out[plane + p] = px[1];
                out[2 * plane + p] = px[2];
            }
        } else {
            for ch in out.chunks_exact_mut(plane) {
                ch.copy_from_slice(&interleaved);
            }
        }
        Ok(out)
    })
}

/// Runs `f`, turning a panic of the third-party decoder into [`JpegError::Decode`].
fn guarded<T>(f: impl FnOnce() -> Result<T, JpegError>) -> Result<T, JpegError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(JpegError::Decode("the JPEG decoder panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(codec_name(90), "jpeg90");
        assert_eq!(parse_codec_name("jpeg90"), Some(90));
        assert_eq!(parse_codec_name("JPEG1"), Some(1));
        assert_eq!(parse_codec_name("jpeg100"), Some(100));
        for bad in [
            "jpeg", "jpeg0", "jpeg101", "jpeg-5", "jpeg+5", "jpeg 9", "jpg90", "int8", "jpeg0090",
        ] {
            assert_eq!(parse_codec_name(bad), None, "{bad}");
        }
    }
}
