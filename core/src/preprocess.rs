//! Image preprocessing for layer 0: `(pixel / pixel_scale - mean[c]) / std[c]`, CHW, batch 1.

use ndarray::{Array4, ArrayViewMut3, Axis};

use crate::package::Normalization;

/// Errors from preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
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
    /// Normalisation has a different channel count than the shape.
    #[error("normalization has {mean} means / {std} stds for {channels} channels")]
    Channels {
        /// Number of means.
        mean: usize,
        /// Number of stds.
        std: usize,
        /// Channels of the shape.
        channels: usize,
    },
}

/// Normalises CHW u8 pixels into a `[1, C, H, W]` f32 tensor per the manifest.
///
/// Errors (never panics) if `pixels.len() != C·H·W` or the normalisation's channel count differs.
pub fn normalize_chw_u8(
    pixels: &[u8],
    shape: [usize; 3],
    norm: &Normalization,
) -> Result<Array4<f32>, PreprocessError> {
    let mut out = Array4::<f32>::zeros((1, shape[0], shape[1], shape[2]));
    normalize_into(pixels, shape, norm, out.index_axis_mut(Axis(0), 0))?;
    Ok(out)
}

/// Normalises a batch of CHW u8 images (each `C·H·W` bytes) into `[N, C, H, W]`.
pub fn normalize_batch_chw_u8(
    images: &[&[u8]],
    shape: [usize; 3],
    norm: &Normalization,
) -> Result<Array4<f32>, PreprocessError> {
    let mut out = Array4::<f32>::zeros((images.len(), shape[0], shape[1], shape[2]));
    for (img, dst) in images.iter().zip(out.axis_iter_mut(Axis(0))) {
        normalize_into(img, shape, norm, dst)?;
    }
    Ok(out)
}

fn normalize_into(
    pixels: &[u8],
    shape: [usize; 3],
    norm: &Normalization,
    mut dst: ArrayViewMut3<'_, f32>,
) -> Result<(), PreprocessError> {
    let [c, h, w] = shape;
    let expected = c * h * w;
    if pixels.len() != expected {
        return Err(PreprocessError::Size {
            got: pixels.len(),
            expected,
            shape,
        });
    }
    if norm.mean.len() != c || norm.std.len() != c {
        return Err(PreprocessError::Channels {
            mean: norm.mean.len(),
            std: norm.std.len(),
            channels: c,
        });
    }
    let plane = h * w;
    for (ch, mut d) in dst.axis_iter_mut(Axis(0)).enumerate() {
        // (p / scale - mean) / std  ==  p * a + b
        let a = 1.0 / (norm.pixel_scale * norm.std[ch]);
        let b = -norm.mean[ch] / norm.std[ch];
        let src = &pixels[ch * plane..(ch + 1) * plane];
        for (o, &p) in d.iter_mut().zip(src) {
            *o = f32::from(p) * a + b;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_formula() {
        let norm = Normalization {
            pixel_scale: 255.0,
            mean: vec![0.5, 0.25],
            std: vec![0.5, 0.25],
        };
        let px: Vec<u8> = (0..8).map(|i| (i * 30) as u8).collect();
        let t = normalize_chw_u8(&px, [2, 2, 2], &norm).expect("ok");
        assert_eq!(t.shape(), &[1, 2, 2, 2]);
        for ch in 0..2 {
            for i in 0..4 {
                let p = px[ch * 4 + i] as f32;
                let want = (p / 255.0 - norm.mean[ch]) / norm.std[ch];
                let got = t[[0, ch, i / 2, i % 2]];
                assert!((got - want).abs() < 1e-5, "{got} vs {want}");
            }
        }
        assert!(normalize_chw_u8(&px[..7], [2, 2, 2], &norm).is_err());
        assert!(normalize_chw_u8(&px, [1, 2, 4], &norm).is_err());
    }
}
