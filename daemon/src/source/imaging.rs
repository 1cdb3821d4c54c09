//! Pixel work shared by all sources: decode PNG/JPEG, convert YUYV, centre-crop to the model's
//! aspect ratio, resize, and lay out as channel-major (CHW) RGB bytes.

use std::io::Cursor;

use image::imageops::{self, FilterType};
use image::{ImageFormat, ImageReader, RgbImage};

/// The most pixels an input image may have (4096 × 4096; a 12 MP camera frame fits), checked
/// from the image header before anything is decoded.
pub const MAX_INPUT_PIXELS: u64 = 4096 * 4096;
/// What the decoder may allocate for one image (the decoded buffer included); the RGB
/// conversion after it adds at most 3 bytes per pixel (48 MiB at [`MAX_INPUT_PIXELS`]). So one
/// image costs at most 128 + 48 MiB beyond its file's bytes.
pub const MAX_DECODE_ALLOC: u64 = 128 << 20;

/// Why a frame could not be turned into model input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image decoder refused the bytes.
    #[error("cannot decode image: {0}")]
    Decode(#[from] image::ImageError),
    /// A raw YUYV buffer is shorter than its format says.
    #[error("YUYV frame {width}x{height} (stride {stride}) needs {needed} bytes, got {got}")]
    ShortYuyv {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per row.
        stride: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The header announces more pixels than [`MAX_INPUT_PIXELS`].
    #[error(
        "image of {width}x{height} pixels is larger than the {max} pixels allowed; not decoded"
    )]
    TooManyPixels {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// [`MAX_INPUT_PIXELS`].
        max: u64,
    },
    /// A file larger than `source.max_file_bytes` (not read).
    #[error("file of {bytes} bytes is larger than source.max_file_bytes = {max}; not read")]
    FileTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The image has no pixels.
    #[error("image has no pixels ({width}x{height})")]
    Empty {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// Target size of the model input (width, height in pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSize {
    /// Width (W).
    pub width: u32,
    /// Height (H).
    pub height: u32,
}

impl TargetSize {
    /// From a CHW shape; `None` unless it is `[3, H, W]` with H, W ≥ 1 fitting in u32.
    pub fn from_chw(input: [usize; 3]) -> Option<Self> {
        let [c, h, w] = input;
        if c != 3 || h == 0 || w == 0 {
            return None;
        }
        Some(Self {
            width: u32::try_from(w).ok()?,
            height: u32::try_from(h).ok()?,
        })
    }
}

/// A reader of `bytes` (format as given, else guessed from the bytes) with the decoder limits.
fn reader(
    bytes: &[u8],
    format: Option<ImageFormat>,
) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    match format {
        Some(f) => reader.set_format(f),
        None => {
            reader = reader
                .with_guessed_format()
                .map_err(|e| ImageError::Decode(image::ImageError::IoError(e)))?;
        }
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits.max_image_width = Some(u32::try_from(MAX_INPUT_PIXELS).unwrap_or(u32::MAX));
    limits.max_image_height = Some(u32::try_from(MAX_INPUT_PIXELS).unwrap_or(u32::MAX));
    reader.limits(limits);
    Ok(reader)
}

/// Decodes `bytes` after checking the header's dimensions against [`MAX_INPUT_PIXELS`] (a
/// 389 KB PNG of 20000 × 20000 grey pixels took the edge to 1.6 GB when decoded first).
fn decode_bounded(bytes: &[u8], format: Option<ImageFormat>) -> Result<RgbImage, ImageError> {
    let (width, height) = reader(bytes, format)?.into_dimensions()?;
    if u64::from(width) * u64::from(height) > MAX_INPUT_PIXELS {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            max: MAX_INPUT_PIXELS,
        });
    }
    Ok(reader(bytes, format)?.decode()?.into_rgb8())
}

/// Decodes a PNG or JPEG (format guessed from the bytes) into RGB, within the bounds above.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_bounded(bytes, None)
}

/// Decodes a JPEG into RGB. A JPEG without Huffman tables (MJPEG from many USB webcams) gets the
/// standard tables it implies.
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let bytes = super::mjpeg_dht::with_huffman_tables(bytes);
    decode_bounded(&bytes, Some(ImageFormat::Jpeg))
}

/// The centred rectangle `(x, y, w, h)` of a `width`×`height` image that has the aspect ratio of
/// `target` and is as large as possible.
pub fn centre_crop_rect(width: u32, height: u32, target: TargetSize) -> (u32, u32, u32, u32) {
    let (w, h) = (u64::from(width), u64::from(height));
    let (tw, th) = (u64::from(target.width), u64::from(target.height));
    // Compare w/h with tw/th without division.
    let (cw, ch) = if w * th > h * tw {
        // Too wide: keep the full height.
        (((h * tw + th / 2) / th).clamp(1, w), h)
    } else {
        // Too tall (or exact): keep the full width.
        (w, ((w * th + tw / 2) / tw).clamp(1, h))
    };
    // cw ≤ w and ch ≤ h, so these fit in u32.
    let cw32 = u32::try_from(cw).unwrap_or(width);
    let ch32 = u32::try_from(ch).unwrap_or(height);
    ((width - cw32) / 2, (height - ch32) / 2, cw32, ch32)
}

/// Centre-crops `img` to the aspect ratio of `target`, resizes it (triangle filter) to the target
/// size and returns channel-major RGB bytes (`3 × H × W`). An image already at the target size is
/// passed through unchanged.
pub fn to_model_input(img: &RgbImage, target: TargetSize) -> Result<Vec<u8>, ImageError> {
    let (width, height) = img.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    if (width, height) == (target.width, target.height) {
        return Ok(hwc_to_chw(img));
    }
    let (x, y, cw, ch) = centre_crop_rect(width, height, target);
    // Large reductions: average kx×ky blocks first (cheap), so the triangle filter only has to
    // cover the last factor of 2–4 (its cost grows with the reduction ratio).
    let kx = (cw / target.width.saturating_mul(2)).max(1);
    let ky = (ch / target.height.saturating_mul(2)).max(1);
    let cropped = if kx > 1 || ky > 1 {
        box_shrink(img, (x, y, cw, ch), kx, ky)
    } else {
        imageops::crop_imm(img, x, y, cw, ch).to_image()
    };
    let resized = if cropped.dimensions() == (target.width, target.height) {
        cropped
    } else {
        imageops::resize(&cropped, target.width, target.height, FilterType::Triangle)
    };
    Ok(hwc_to_chw(&resized))
}

/// Averages `kx × ky` pixel blocks of the rectangle `(x, y, w, h)` of `img` (the few pixels
/// left over at the edges are trimmed symmetrically).
fn box_shrink(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32), kx: u32, ky: u32) -> RgbImage {
    let (ow, oh) = ((w / kx).max(1), (h / ky).max(1));
    let x0 = (x + (w - (ow * kx).min(w)) / 2) as usize;
    let y0 = (y + (h - (oh * ky).min(h)) / 2) as usize;
    let (ow, oh, kx, ky) = (ow as usize, oh as usize, kx as usize, ky as usize);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    let n = (kx * ky) as u32;
    let mut out = Vec::with_capacity(ow * oh * 3);
    let mut acc = vec![0u32; ow * 3];
    for oy in 0..oh {
        acc.fill(0);
        for dy in 0..ky {
            let start = (y0 + oy * ky + dy) * stride + x0 * 3;
            let Some(row) = src.get(start..start + ow * kx * 3) else {
                continue;
            };
            for (ox, block) in row.chunks_exact(kx * 3).enumerate() {
                for px in block.chunks_exact(3) {
                    acc[ox * 3] += u32::from(px[0]);
                    acc[ox * 3 + 1] += u32::from(px[1]);
                    acc[ox * 3 + 2] += u32::from(px[2]);
                }
            }
        }
        out.extend(acc.iter().map(|&a| ((a + n / 2) / n) as u8));
    }
    // The buffer has exactly ow × oh × 3 bytes.
    RgbImage::from_raw(ow as u32, oh as u32, out).unwrap_or_default()
}

/// Interleaved RGB (HWC) → planar (CHW).
pub fn hwc_to_chw(img: &RgbImage) -> Vec<u8> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0u8; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.pixels().enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
    out
}

/// Planar CHW RGB (e.g. a CIFAR record) → an RGB image; `None` if the length is not `3·w·h`.
pub fn chw_to_image(chw: &[u8], width: u32, height: u32) -> Option<RgbImage> {
    let plane = width as usize * height as usize;
    if chw.len() != 3 * plane {
        return None;
    }
    let mut buf = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        buf.extend_from_slice(&[chw[i], chw[plane + i], chw[2 * plane + i]]);
    }
    RgbImage::from_raw(width, height, buf)
}

/// Converts packed YUYV (YUV 4:2:2, `Y0 U Y1 V` per two pixels) to RGB with the BT.601
/// limited-range matrix. `stride` is the number of bytes per row (≥ `2 × width`).
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<RgbImage, ImageError> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 {
        return Err(ImageError::Empty { width, height });
    }
    let stride = stride.max(2 * w);
    let needed = stride * (h - 1) + 2 * w;
    let short = || ImageError::ShortYuyv {
        width,
        height,
        stride,
        needed,
        got: data.len(),
    };
    if data.len() < needed {
        return Err(short());
    }
    let mut out = Vec::with_capacity(3 * w * h);
    for row in 0..h {
        let line = data.get(row * stride..).ok_or_else(short)?;
        for x in 0..w {
            let pair = (x / 2) * 4;
            let quad = line.get(pair..pair + 4);
            let (y, u, v) = match quad {
                Some(q) => (q[if x % 2 == 0 { 0 } else { 2 }], q[1], q[3]),
                // Odd width: the last pixel's pair may be cut; reuse neutral chroma.
                None => (*line.get(2 * x).ok_or_else(short)?, 128, 128),
            };
            out.extend_from_slice(&yuv_to_rgb(y, u, v));
        }
    }
    RgbImage::from_raw(width, height, out).ok_or(ImageError::Empty { width, height })
}

/// One BT.601 limited-range YCbCr sample to RGB (integer arithmetic, rounded).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = i32::from(y) - 16;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clip = |x: i32| (x >> 8).clamp(0, 255) as u8;
    [
        clip(298 * c + 409 * e + 128),
        clip(298 * c - 100 * d - 208 * e + 128),
        clip(298 * c + 516 * d + 128),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const SQ32: TargetSize = TargetSize {
        width: 32,
        height: 32,
    };

    #[test]
    fn crop_rect_keeps_aspect_and_centres() {
        assert_eq!(centre_crop_rect(320, 240, SQ32), (40, 0, 240, 240));
        assert_eq!(centre_crop_rect(240, 320, SQ32), (0, 40, 240, 240));
        assert_eq!(centre_crop_rect(32, 32, SQ32), (0, 0, 32, 32));
        let wide = TargetSize {
            width: 64,
            height: 32,
        };
        assert_eq!(centre_crop_rect(100, 100, wide), (0, 25, 100, 50));
        assert_eq!(centre_crop_rect(1, 1000, wide), (0, 499, 1, 1));
    }

    #[test]
    fn identity_at_target_size_and_chw_layout() {
        let chw: Vec<u8> = (0..3 * 32 * 32).map(|i| (i % 251) as u8).collect();
        let img = chw_to_image(&chw, 32, 32).expect("sizes match");
        assert_eq!(to_model_input(&img, SQ32).expect("ok"), chw);
        assert!(chw_to_image(&chw[1..], 32, 32).is_none());
    }

    #[test]
    fn crop_then_resize_keeps_the_centre() {
        // 96x64: a red 32-wide band left, green centre 32x64, blue band right.
        let img = RgbImage::from_fn(96, 64, |x, _| match x {
            0..=31 => Rgb([255, 0, 0]),
            32..=63 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let out = to_model_input(
            &img,
            TargetSize {
                width: 16,
                height: 32,
            },
        )
        .expect("ok");
        assert_eq!(out.len(), 3 * 16 * 32);
        let plane = 16 * 32;
        // Crop is 32x64 (exactly the green band), so every pixel is pure green.
        assert!(out[..plane].iter().all(|&r| r == 0), "red leaked in");
        assert!(out[plane..2 * plane].iter().all(|&g| g == 255));
        assert!(out[2 * plane..].iter().all(|&b| b == 0), "blue leaked in");
        // Smooth downscale of a gradient stays monotone.
        let grad = RgbImage::from_fn(128, 128, |x, _| Rgb([(x * 2) as u8, 0, 0]));
        let out = to_model_input(&grad, SQ32).expect("ok");
        let row: Vec<u8> = out[..32].to_vec();
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert!(row[0] < 10 && row[31] > 240, "{row:?}");
    }

    #[test]
    fn large_reductions_match_a_plain_triangle_resize() {
        // A smooth 1280x720 pattern to 32x32 and 224x224: box pre-shrink + triangle stays within
        // a few levels of the direct triangle resize of the same crop.
        let img = RgbImage::from_fn(1280, 720, |x, y| {
            let fx = x as f32 / 1280.0;
            let fy = y as f32 / 720.0;
            Rgb([
                (255.0 * fx) as u8,
                (255.0 * fy) as u8,
                (127.5 + 127.0 * (6.0 * fx).sin() * (4.0 * fy).cos()) as u8,
            ])
        });
        for side in [32u32, 224] {
            let t = TargetSize {
                width: side,
                height: side,
            };
            let fast = to_model_input(&img, t).expect("ok");
            let (x, y, w, h) = centre_crop_rect(1280, 720, t);
            let crop = imageops::crop_imm(&img, x, y, w, h).to_image();
            let slow = hwc_to_chw(&imageops::resize(&crop, side, side, FilterType::Triangle));
            let max = fast
                .iter()
                .zip(&slow)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            assert!(max <= 6, "{side}: max difference {max}");
        }
    }

    #[test]
    fn yuyv_bt601() {
        // Reference points of BT.601 limited range.
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
        // Pure red in BT.601 limited range is Y=81, Cb=90, Cr=240.
        let [r, g, b] = yuv_to_rgb(81, 90, 240);
        assert!(r >= 253 && g <= 2 && b <= 2, "{r} {g} {b}");
        // Pure blue: Y=41, Cb=240, Cr=110.
        let [r, g, b] = yuv_to_rgb(41, 240, 110);
        assert!(r <= 2 && g <= 2 && b >= 253, "{r} {g} {b}");

        // A 4x2 frame with stride 10 (2 padding bytes per row): left pair red, right pair white.
        let row = [81, 90, 81, 240, 235, 128, 235, 128, 0xEE, 0xEE];
        let data: Vec<u8> = row.iter().chain(row.iter()).copied().collect();
        let img = yuyv_to_rgb(&data, 4, 2, 10).expect("ok");
        assert!(img.get_pixel(0, 1)[0] >= 253 && img.get_pixel(1, 0)[1] <= 2);
        assert_eq!(img.get_pixel(3, 1), &Rgb([255, 255, 255]));
        let e = yuyv_to_rgb(&data[..15], 4, 2, 10).expect_err("short");
        assert!(e.to_string().contains("needs 18 bytes, got 15"), "{e}");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode(b"not an image").is_err());
        assert!(decode(&[]).is_err());
        assert!(decode_jpeg(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
    }

    /// A small PNG that announces 20000 × 20000 pixels is refused from its header, before any
    /// pixel buffer exists.
    #[test]
    fn decompression_bombs_are_refused_from_the_header() {
        let mut png = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png, 20_000, 20_000);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().expect("header");
            let mut stream = w.stream_writer().expect("stream");
            let row = vec![0u8; 20_000];
            for _ in 0..20_000 {
                std::io::Write::write_all(&mut stream, &row).expect("row");
            }
            stream.finish().expect("finish");
        }
        assert!(png.len() < 2 << 20, "{} bytes", png.len());
        match decode(&png) {
            Err(ImageError::TooManyPixels { width, height, .. }) => {
                assert_eq!((width, height), (20_000, 20_000));
            }
            other => panic!("expected TooManyPixels, got {other:?}"),
        }
        // Within the bound, the same kind of image decodes.
        let mut small = Vec::new();
        image::GrayImage::from_pixel(64, 48, image::Luma([7]))
            .write_to(&mut Cursor::new(&mut small), ImageFormat::Png)
            .expect("png");
        assert_eq!(decode(&small).expect("decodes").dimensions(), (64, 48));
    }
}
