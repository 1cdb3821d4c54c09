//! Encoder: region selection, quantization, serialization.

use super::{CodecError, CodecParams, Layout, QuantMode, FORMAT_VERSION, MAGIC};

/// 2⁵²: for 0 ≤ t < 2⁵¹, the low bits of `(t + 2⁵²).to_bits()` are `t` rounded to nearest.
const ROUND_MAGIC: f64 = 4_503_599_627_370_496.0;

/// Largest finite `f16`; F16 mode saturates to ±this.
const F16_MAX: f32 = 65504.0;

/// Encodes one frame's feature tensor. `shape` excludes the batch dimension and its product must
/// equal `data.len()`.
pub fn encode(data: &[f32], shape: &[usize], params: &CodecParams) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    Encoder::new().encode_into(data, shape, params, &mut out)?;
    Ok(out)
}

/// Like [`encode`], writing into `out`: `out` is cleared first and its capacity reused. On error
/// `out` is left empty.
pub fn encode_into(
    data: &[f32],
    shape: &[usize],
    params: &CodecParams,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    Encoder::new().encode_into(data, shape, params, out)
}

/// An encoder that keeps its scratch buffers (importance and position lists, `O(H·W)`) between
/// calls, so that encoding a stream of frames does not allocate once warmed up.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    importance: Vec<f64>,
    order: Vec<u32>,
}

impl Encoder {
    /// A fresh encoder with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Same contract as [`encode_into`].
    pub fn encode_into(
        &mut self,
        data: &[f32],
        shape: &[usize],
        params: &CodecParams,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        let result = self.encode_inner(data, shape, params, out);
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn encode_inner(
        &mut self,
        data: &[f32],
        shape: &[usize],
        params: &CodecParams,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        params.validate()?;
        let layout = Layout::new(shape, params.keep_ratio, params.mode)?;
        if data.len() != layout.elements {
            return Err(CodecError::ShapeMismatch {
                expected: layout.elements,
                actual: data.len(),
            });
        }
        if let Some(index) = data.iter().position(|x| !x.is_finite()) {
            return Err(CodecError::NonFiniteInput { index });
        }
        out.reserve(layout.total_len);

        // ---- header (min/scale patched below) ----
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(params.mode.to_byte());
        out.push(shape.len() as u8); // Layout checked rank ≤ 255.
        out.push(0); // reserved
        for &d in shape {
            out.extend_from_slice(&(d as u32).to_le_bytes()); // Layout checked d ≤ u32::MAX.
        }
        out.extend_from_slice(&params.keep_ratio.to_le_bytes());
        out.extend_from_slice(&(layout.kept as u32).to_le_bytes());
        let quant_at = out.len();
        out.extend_from_slice(&[0u8; 8]);
        debug_assert_eq!(out.len(), layout.header_len);

        // ---- region selection and mask ----
        let selection = match layout.spatial {
            Some((channels, hw)) if layout.mask_len > 0 => {
                self.select(data, channels, hw, layout.kept, out, layout.mask_len);
                Some(hw)
            }
            _ => None,
        };
        let kept = Kept {
            data,
            positions: &self.order,
            hw: selection,
        };

        // ---- payload ----
        match params.mode {
            QuantMode::Bits(bits) => {
                let (min, scale) = write_quantized(&kept, bits, layout.payload_len, out);
                out[quant_at..quant_at + 4].copy_from_slice(&min.to_le_bytes());
                out[quant_at + 4..quant_at + 8].copy_from_slice(&scale.to_le_bytes());
            }
            QuantMode::F16 => kept.for_each_chunk(|chunk| {
                let start = out.len();
                out.resize(start + 2 * chunk.len(), 0);
                for (dst, &x) in out[start..].chunks_exact_mut(2).zip(chunk) {
                    let h = half::f16::from_f32(x.clamp(-F16_MAX, F16_MAX));
                    dst.copy_from_slice(&h.to_le_bytes());
                }
            }),
            QuantMode::F32 => kept.for_each_chunk(|chunk| {
                let start = out.len();
                out.resize(start + 4 * chunk.len(), 0);
                for (dst, &x) in out[start..].chunks_exact_mut(4).zip(chunk) {
                    dst.copy_from_slice(&x.to_le_bytes());
                }
            }),
        }
        debug_assert_eq!(out.len(), layout.total_len);
        Ok(())
    }

    /// Picks the `k` most important positions (ties: lower index), writes the mask after the header
    /// and leaves the kept positions, ascending, in `self.order`.
    fn select(
        &mut self,
        data: &[f32],
        channels: usize,
        hw: usize,
        k: usize,
        out: &mut Vec<u8>,
        mask_len: usize,
    ) {
        // Importance: Σ_c x² (the mean's 1/C factor does not change the order). f64 cannot overflow.
        let importance = &mut self.importance;
        importance.clear();
        importance.resize(hw, 0.0);
        for channel in data.chunks_exact(hw).take(channels) {
            for (acc, &x) in importance.iter_mut().zip(channel) {
                let x = f64::from(x);
                *acc += x * x;
            }
        }

        let order = &mut self.order;
        order.clear();
        order.extend(0..hw as u32); // Layout checked hw ≤ u32::MAX.
        let imp = &*importance;
        // Descending importance, then ascending index: a strict total order.
        let cmp = |a: &u32, b: &u32| {
            imp[*b as usize]
                .total_cmp(&imp[*a as usize])
                .then_with(|| a.cmp(b))
        };
        // 1 ≤ k < hw here, so index k-1 is in bounds; afterwards order[..k] are the top k.
        order.select_nth_unstable_by(k - 1, cmp);

        let mask_start = out.len();
        out.resize(mask_start + mask_len, 0);
        let mask = &mut out[mask_start..];
        for &p in &order[..k] {
            let p = p as usize;
            mask[p / 8] |= 1 << (p % 8);
        }
        // Kept positions in row-major order, from the mask.
        order.clear();
        for (byte_index, &byte) in mask.iter().enumerate() {
            let mut bits = byte;
            while bits != 0 {
                let bit = bits.trailing_zeros();
                order.push((byte_index * 8) as u32 + bit);
                bits &= bits - 1;
            }
        }
    }
}

/// Values are handed out in chunks of this many (a multiple of 8, so that every chunk but the last
/// fills whole groups of 8 codes).
const CHUNK: usize = 256;

/// The kept values in wire order (channel-major, kept positions row-major).
struct Kept<'a> {
    data: &'a [f32],
    /// Kept positions (ascending) when a mask is used.
    positions: &'a [u32],
    /// `Some(H·W)` when a mask is used; `None` means every element is kept.
    hw: Option<usize>,
}

impl Kept<'_> {
    /// Calls `f` on consecutive chunks of kept values; every chunk but the last has [`CHUNK`] values.
    #[inline]
    fn for_each_chunk(&self, mut f: impl FnMut(&[f32])) {
        match self.hw {
            None => self.data.chunks(CHUNK).for_each(f),
            Some(hw) => {
                let mut buf = [0.0f32; CHUNK];
                let mut n = 0;
                for channel in self.data.chunks_exact(hw) {
                    for &p in self.positions {
                        // p < hw by construction.
                        buf[n % CHUNK] = channel.get(p as usize).copied().unwrap_or_default();
                        n += 1;
                        if n == CHUNK {
                            f(&buf);
                            n = 0;
                        }
                    }
                }
                if n > 0 {
                    f(&buf[..n]);
                }
            }
        }
    }
}

/// Quantizes and bit-packs the kept values; returns the `(min, scale)` written to the header.
fn write_quantized(kept: &Kept<'_>, bits: u8, payload_len: usize, out: &mut Vec<u8>) -> (f32, f32) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    kept.for_each_chunk(|chunk| {
        // Inputs are finite, so plain comparisons (which vectorize) suffice.
        for &x in chunk {
            min = if x < min { x } else { min };
            max = if x > max { x } else { max };
        }
    });
    if min > max {
        // No kept values at all.
        return (0.0, 0.0);
    }
    let levels = f64::from((1u32 << bits) - 1);
    let range = f64::from(max) - f64::from(min);
    let scale = quant_scale(range, levels);
    let inv = if scale > 0.0 {
        1.0 / f64::from(scale)
    } else {
        0.0
    };
    let min64 = f64::from(min);
    let top = ((1u32 << bits) - 1) as u8;
    let b = usize::from(bits);
    // Each group of 8 codes is written as a whole u64 at `pos` and advances `pos` by `b` bytes; the
    // next group overwrites the (zero) excess. 8 bytes of slack are truncated at the end.
    let start = out.len();
    out.resize(start + payload_len + 8, 0);
    let mut pos = start;
    let mut codes = [0u8; CHUNK];
    kept.for_each_chunk(|chunk| {
        for (c, &x) in codes.iter_mut().zip(chunk) {
            // 0 ≤ t ≤ levels·(1 + 2⁻⁵⁰) (scale·levels ≥ range). Adding 2⁵² rounds t to the nearest
            // integer (ties to even) in the low mantissa bits: a branch-free, vectorizable round.
            let t = (f64::from(x) - min64) * inv;
            *c = ((t + ROUND_MAGIC).to_bits() as u8).min(top);
        }
        // Only the last chunk can end in a partial group; its missing codes are zero.
        let n = chunk.len();
        codes[n..].fill(0);
        for g in codes[..n.div_ceil(8) * 8].chunks_exact(8) {
            let mut w = 0u64;
            for (i, &c) in g.iter().enumerate() {
                w |= u64::from(c) << (i * b);
            }
            if let Some(dst) = out.get_mut(pos..pos + 8) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
            pos += b;
        }
    });
    out.truncate(start + payload_len);
    (min, scale)
}

/// The smallest `f32` scale with `scale·levels ≥ range` near `range/levels` (0 iff range is 0), so
/// that the largest value is never clamped.
fn quant_scale(range: f64, levels: f64) -> f32 {
    if range <= 0.0 {
        return 0.0;
    }
    let mut scale = (range / levels) as f32;
    // At most a couple of steps: the cast is within half an ulp.
    while f64::from(scale) * levels < range {
        scale = scale.next_up();
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_covers_range() {
        for &(range, levels) in &[
            (1.0, 3.0),
            (1e-44, 255.0),
            (1e-45, 3.0),
            (6.8e38, 3.0),
            (0.1, 15.0),
            (123.456, 63.0),
        ] {
            let s = quant_scale(range, levels);
            assert!(s.is_finite() && s > 0.0);
            assert!(f64::from(s) * levels >= range);
            assert!(f64::from(s.next_down()) * levels < range || s.next_down() <= 0.0);
        }
        assert_eq!(quant_scale(0.0, 255.0), 0.0);
    }
}
