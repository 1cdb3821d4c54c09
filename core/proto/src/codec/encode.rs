//! Encoder: region selection, quantization, serialization.
//!
//! Passes over the input (see "Performance" in `docs/codec.md`):
//!
//! 1. one fused pass over every element: finiteness, and either the tensor's min/max (no mask) or
//!    the per-position importance `Σ_c x²` in `f64` plus per-position min/max over the channels
//!    (with a mask, so that the kept values' min/max needs no pass of its own);
//! 2. top-k selection over the `H·W` positions;
//! 3. one pass over the kept values: quantize (in `f32` where that provably gives the `f64`
//!    formula's code, else in `f64`) and bit-pack with the width a compile-time constant.

use half::slice::HalfFloatSliceExt;

use super::bits::pack_groups;
use super::entropy;
use super::{CodecError, CodecParams, Layout, QuantMode, FORMAT_VERSION, MAGIC};

/// Offset of the mode byte in the header (after the magic and the version).
const MODE_BYTE_AT: usize = 5;

/// 2⁵²: for 0 ≤ t < 2⁵¹, the low bits of `(t + 2⁵²).to_bits()` are `t` rounded to nearest.
const ROUND_MAGIC: f64 = 4_503_599_627_370_496.0;

/// 2²³: for 0 ≤ t < 2²², `t + 2²³` in `f32` is `t` rounded to nearest (ties to even) plus 2²³,
/// exactly, and the low bits of its representation are that integer.
const ROUND_MAGIC_F32: f32 = 8_388_608.0;

/// Largest finite `f16`; F16 mode saturates to ±this.
const F16_MAX: f32 = 65504.0;

/// Kept values are processed in blocks of this many (a multiple of 8, so that every block but the
/// last fills whole groups of 8 codes, i.e. whole bytes).
const BLOCK: usize = 256;

/// The `f32` quantizer checks its margin, and falls back to `f64`, per sub-block of this many.
const SUB: usize = 32;

/// Independent accumulators in the min/max/finiteness pass (enough to hide the latency of the
/// vector min/max instructions).
const LANES: usize = 16;

/// `f32` exponent bits: a value is NaN or infinite iff all are set.
const EXP_MASK: u32 = 0x7f80_0000;

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

/// An encoder that keeps its scratch buffers (importance, per-position min/max and position lists,
/// `O(H·W)`) between calls, so that encoding a stream of frames does not allocate once warmed up.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    importance: Vec<f64>,
    pos_min: Vec<f32>,
    pos_max: Vec<f32>,
    order: Vec<u32>,
    /// Codes and entropy-coded bytes of [`QuantMode::Coded`] (`O(kept values)`).
    codes: Vec<u8>,
    coded: Vec<u8>,
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
        // A coded payload starts as its fixed-width form; the entropy stage rewrites it at the end.
        let mode = params.mode.fixed_width();
        let layout = Layout::new(shape, params.keep_ratio, mode)?;
        if data.len() != layout.elements {
            return Err(CodecError::ShapeMismatch {
                expected: layout.elements,
                actual: data.len(),
            });
        }
        let quantized = matches!(mode, QuantMode::Bits(_));
        let masked_hw = match layout.spatial {
            Some((_, hw)) if layout.mask_len > 0 => Some(hw),
            _ => None,
        };

        // ---- pass 1: finiteness + range (no mask) or importance + per-position range ----
        let whole_range = match masked_hw {
            Some(hw) => {
                self.scan_positions(data, hw, quantized)?;
                None
            }
            None => scan_all(data, quantized)?,
        };

        // ---- header (min/scale patched below) ----
        out.reserve(layout.total_len);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(mode.to_byte());
        out.push(shape.len() as u8); // Layout checked rank ≤ 255.
        out.push(0); // reserved
        for &d in shape {
            out.extend_from_slice(&(d as u32).to_le_bytes()); // Layout checked d ≤ u32::MAX.
        }
        out.extend_from_slice(&params.keep_ratio.to_le_bytes());
        out.extend_from_slice(&(layout.kept as u32).to_le_bytes());
        let quant_at = out.len();
        debug_assert_eq!(quant_at + 8, layout.header_len);
        // Everything after the header starts as zeros (min/scale, mask, payload).
        out.resize(layout.total_len, 0);
        let (header, rest) = out.split_at_mut(layout.header_len);
        let (mask, payload) = rest.split_at_mut(layout.mask_len);

        // ---- region selection and mask ----
        let kept = match masked_hw {
            Some(hw) => {
                self.select(hw, layout.kept, mask);
                KeptValues::Masked {
                    data,
                    hw,
                    positions: &self.order,
                }
            }
            None => KeptValues::All(data),
        };

        // ---- payload ----
        match mode {
            // `mode` is fixed-width: `Coded` does not occur here.
            QuantMode::Bits(bits) | QuantMode::Coded(bits) => {
                let (min, max) = match whole_range {
                    Some(r) => r,
                    None => positions_range(&self.order, &self.pos_min, &self.pos_max),
                };
                let (min, scale) = write_quantized(&kept, min, max, bits, payload);
                if let Some(q) = header.get_mut(quant_at..quant_at + 8) {
                    q[..4].copy_from_slice(&min.to_le_bytes());
                    q[4..].copy_from_slice(&scale.to_le_bytes());
                }
            }
            QuantMode::F16 => write_f16(&kept, payload),
            QuantMode::F32 => {
                let mut at = 0;
                kept.for_each_block(|xs| {
                    let end = at + 4 * xs.len();
                    if let Some(dst) = payload.get_mut(at..end) {
                        for (d, &x) in dst.as_chunks_mut::<4>().0.iter_mut().zip(xs) {
                            *d = x.to_le_bytes();
                        }
                    }
                    at = end;
                });
                debug_assert_eq!(at, payload.len());
            }
        }
        debug_assert_eq!(out.len(), layout.total_len);
        if let QuantMode::Coded(bits) = params.mode {
            self.entropy_code(out, &layout, bits);
        }
        Ok(())
    }

    /// The entropy stage: replaces the fixed-width payload at the end of `out` by its coded form
    /// and marks the mode byte, unless that would not make it smaller.
    fn entropy_code(&mut self, out: &mut Vec<u8>, layout: &Layout, bits: u8) {
        let start = layout.header_len + layout.mask_len;
        let Some(payload) = out.get(start..) else {
            return;
        };
        self.codes.clear();
        self.codes.resize(layout.kept_values, 0);
        entropy::unpack_fixed(payload, bits, &mut self.codes);
        self.coded.clear();
        let row = match layout.spatial {
            Some(_) => layout.kept,
            None => layout.kept_values,
        };
        entropy::encode_codes(&self.codes, bits, row, &mut self.coded);
        if self.coded.len() < layout.payload_len {
            out.truncate(start);
            out.extend_from_slice(&self.coded);
            if let Some(m) = out.get_mut(MODE_BYTE_AT) {
                *m = QuantMode::Coded(bits).to_byte();
            }
        }
    }

    /// Pass 1 with a mask: `importance[p] = Σ_c x[c,p]²` accumulated in `f64` over `c = 0..C` (the
    /// mean's 1/C factor does not change the order; `f64` cannot overflow for finite input), and,
    /// when `ranges`, the min and max over the channels at each position. Fails on the first
    /// non-finite value (a NaN or ±∞ makes its position's importance non-finite).
    fn scan_positions(&mut self, data: &[f32], hw: usize, ranges: bool) -> Result<(), CodecError> {
        let importance = &mut self.importance;
        importance.clear();
        importance.resize(hw, 0.0);
        let (lo, hi) = (&mut self.pos_min, &mut self.pos_max);
        lo.clear();
        hi.clear();
        if ranges {
            lo.resize(hw, f32::INFINITY);
            hi.resize(hw, f32::NEG_INFINITY);
        }
        // Four channels per sweep: `acc = (((acc + a²) + b²) + c²) + d²` is the same sequence of
        // f64 additions as four sweeps, with a quarter of the loads and stores of `importance`.
        let quads = data.chunks_exact(4 * hw);
        let rest = quads.remainder();
        for quad in quads {
            let (ab, cd) = quad.split_at(2 * hw);
            let (a, b) = ab.split_at(hw);
            let (c, d) = cd.split_at(hw);
            accumulate([a, b, c, d], importance, lo, hi);
        }
        for channel in rest.chunks_exact(hw) {
            accumulate([channel], importance, lo, hi);
        }
        if importance.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(first_non_finite(data))
        }
    }

    /// Picks the `k` most important positions (ties: lower index), writes the mask (zeroed,
    /// `⌈hw/8⌉` bytes) and leaves the kept positions, ascending, in `self.order`.
    fn select(&mut self, hw: usize, k: usize, mask: &mut [u8]) {
        let order = &mut self.order;
        order.clear();
        order.extend(0..hw as u32); // Layout checked hw ≤ u32::MAX.
        let imp = &*self.importance;
        // Descending importance, then ascending index: a strict total order.
        let cmp = |a: &u32, b: &u32| {
            let ia = imp.get(*a as usize).copied().unwrap_or_default();
            let ib = imp.get(*b as usize).copied().unwrap_or_default();
            ib.total_cmp(&ia).then_with(|| a.cmp(b))
        };
        // 1 ≤ k < hw here, so index k-1 is in bounds; afterwards order[..k] are the top k.
        if k == 0 || k > order.len() {
            return;
        }
        order.select_nth_unstable_by(k - 1, cmp);

        for &p in &order[..k] {
            let p = p as usize;
            if let Some(byte) = mask.get_mut(p / 8) {
                *byte |= 1 << (p % 8);
            }
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

/// Adds `Σ x²` of `N` channels, in order, to each position's importance, and (when `lo` and `hi`
/// are not empty) folds the values into the per-position min and max.
#[inline(always)]
fn accumulate<const N: usize>(
    channels: [&[f32]; N],
    importance: &mut [f64],
    lo: &mut [f32],
    hi: &mut [f32],
) {
    let hw = importance.len();
    let channels = channels.map(|c| c.get(..hw).unwrap_or(&[]));
    if channels.iter().any(|c| c.len() != hw) {
        return; // cannot happen: every channel has hw values
    }
    if lo.len() == hw && hi.len() == hw {
        for p in 0..hw {
            let (mut acc, mut l, mut h) = (importance[p], lo[p], hi[p]);
            for c in &channels {
                let x = c[p];
                let y = f64::from(x);
                acc += y * y;
                l = if x < l { x } else { l };
                h = if x > h { x } else { h };
            }
            (importance[p], lo[p], hi[p]) = (acc, l, h);
        }
    } else {
        for p in 0..hw {
            let mut acc = importance[p];
            for c in &channels {
                let y = f64::from(c[p]);
                acc += y * y;
            }
            importance[p] = acc;
        }
    }
}

/// The row-major index of the first NaN or infinity in `data` (which has one).
#[cold]
fn first_non_finite(data: &[f32]) -> CodecError {
    let index = data
        .iter()
        .position(|x| !x.is_finite())
        .unwrap_or(data.len());
    CodecError::NonFiniteInput { index }
}

/// Pass 1 without a mask: fails on the first non-finite value; when `range`, returns the min and
/// max of all values (numerically; the sign of a zero min is settled by [`settle_zero_min`]).
fn scan_all(data: &[f32], range: bool) -> Result<Option<(f32, f32)>, CodecError> {
    let chunks = data.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut bad = [0u32; LANES];
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    if range {
        for c in chunks {
            for i in 0..LANES {
                let x = c[i];
                bad[i] |= u32::from(x.to_bits() & EXP_MASK == EXP_MASK);
                lo[i] = if x < lo[i] { x } else { lo[i] };
                hi[i] = if x > hi[i] { x } else { hi[i] };
            }
        }
    } else {
        for c in chunks {
            for i in 0..LANES {
                bad[i] |= u32::from(c[i].to_bits() & EXP_MASK == EXP_MASK);
            }
        }
    }
    for &x in tail {
        bad[0] |= u32::from(x.to_bits() & EXP_MASK == EXP_MASK);
        lo[0] = if x < lo[0] { x } else { lo[0] };
        hi[0] = if x > hi[0] { x } else { hi[0] };
    }
    if bad.iter().any(|&b| b != 0) {
        return Err(first_non_finite(data));
    }
    if !range {
        return Ok(None);
    }
    let min = lo
        .iter()
        .fold(f32::INFINITY, |m, &x| if x < m { x } else { m });
    let max = hi
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    Ok(Some((min, max)))
}

/// Min and max of the kept values from the per-position ranges (numerically; see
/// [`settle_zero_min`]).
fn positions_range(positions: &[u32], pos_min: &[f32], pos_max: &[f32]) -> (f32, f32) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    for &p in positions {
        let p = p as usize;
        if let (Some(&lo), Some(&hi)) = (pos_min.get(p), pos_max.get(p)) {
            min = if lo < min { lo } else { min };
            max = if hi > max { hi } else { max };
        }
    }
    (min, max)
}

/// The kept values in wire order: channel-major, kept positions row-major.
enum KeptValues<'a> {
    /// Every element, in order.
    All(&'a [f32]),
    /// With a mask: `positions` (ascending, each `< hw`) of every channel of `hw` values.
    Masked {
        data: &'a [f32],
        hw: usize,
        positions: &'a [u32],
    },
}

impl KeptValues<'_> {
    /// Calls `f` on consecutive blocks of kept values; every block but the last has [`BLOCK`]
    /// values.
    #[inline(always)]
    fn for_each_block(&self, mut f: impl FnMut(&[f32])) {
        match *self {
            KeptValues::All(data) => data.chunks(BLOCK).for_each(f),
            KeptValues::Masked {
                data,
                hw,
                positions,
            } => {
                let mut buf = [0.0f32; BLOCK];
                let mut n = 0;
                for channel in data.chunks_exact(hw) {
                    // p < hw by construction; the clamp (a conditional move) lets the compiler
                    // drop the bounds check without a branch per value.
                    let Some(last) = channel.len().checked_sub(1) else {
                        continue;
                    };
                    let mut ps = positions;
                    while !ps.is_empty() {
                        let take = (BLOCK - n).min(ps.len());
                        let (now, later) = ps.split_at(take);
                        for (dst, &p) in buf[n..n + take].iter_mut().zip(now) {
                            *dst = channel[(p as usize).min(last)];
                        }
                        n += take;
                        ps = later;
                        if n == BLOCK {
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

    /// The first zero (`+0.0` or `-0.0`) in wire order, if any.
    fn first_zero(&self) -> Option<f32> {
        match *self {
            KeptValues::All(data) => data.iter().copied().find(|&x| x == 0.0),
            KeptValues::Masked {
                data,
                hw,
                positions,
            } => data.chunks_exact(hw).find_map(|channel| {
                positions
                    .iter()
                    .filter_map(|&p| channel.get(p as usize).copied())
                    .find(|&x| x == 0.0)
            }),
        }
    }
}

/// The header's `min` must be bit-identical to a sequential `if x < min { x }` scan in wire order,
/// which keeps the *first* of equal values: that only matters for zeros (`-0.0 == +0.0`), so a
/// zero min takes the sign of the first zero among the kept values.
fn settle_zero_min(kept: &KeptValues<'_>, min: f32) -> f32 {
    if min == 0.0 {
        kept.first_zero().unwrap_or(min)
    } else {
        min
    }
}

/// Quantizes and bit-packs the kept values (whose numeric min and max are given) into `payload`
/// (exactly `⌈n·bits/8⌉` zero bytes); returns the `(min, scale)` written to the header.
fn write_quantized(
    kept: &KeptValues<'_>,
    min: f32,
    max: f32,
    bits: u8,
    payload: &mut [u8],
) -> (f32, f32) {
    if min > max {
        // No kept values at all (cannot happen: every shape has at least one).
        return (0.0, 0.0);
    }
    let min = settle_zero_min(kept, min);
    let levels = f64::from((1u32 << bits) - 1);
    let range = f64::from(max) - f64::from(min);
    let scale = quant_scale(range, levels);
    if scale == 0.0 {
        // Constant: every code is 0 and the payload is already zeros.
        return (min, scale);
    }
    let q = Quantizer::new(min, scale, range, bits);
    match bits {
        2 => pack_all::<2>(kept, &q, payload),
        3 => pack_all::<3>(kept, &q, payload),
        4 => pack_all::<4>(kept, &q, payload),
        5 => pack_all::<5>(kept, &q, payload),
        6 => pack_all::<6>(kept, &q, payload),
        _ => pack_all::<8>(kept, &q, payload),
    }
    (min, scale)
}

/// Quantizes and packs every kept value with a compile-time width `B`.
fn pack_all<const B: usize>(kept: &KeptValues<'_>, q: &Quantizer, payload: &mut [u8]) {
    let mut codes = [0u8; BLOCK];
    let mut at = 0;
    kept.for_each_block(|xs| {
        let n = xs.len().min(BLOCK);
        q.quantize(xs, &mut codes[..n]);
        let full = n / 8 * 8;
        let bytes = full / 8 * B;
        if let Some(dst) = payload.get_mut(at..at + bytes) {
            pack_groups::<B>(&codes[..full], dst);
        }
        at += bytes;
        if full < n {
            // Only the last block ends in a partial group; its missing codes are zero.
            let mut group = [0u8; 8];
            group[..n - full].copy_from_slice(&codes[full..n]);
            let mut word = [0u8; 8];
            pack_groups::<B>(&group, &mut word[..B]);
            let len = ((n - full) * B).div_ceil(8);
            if let Some(dst) = payload.get_mut(at..at + len) {
                dst.copy_from_slice(&word[..len]);
            }
            at += len;
        }
    });
    debug_assert_eq!(at, payload.len());
}

/// Code of a kept value `x`: `round((x − min)·inv)` with `inv = 1/scale`, both in `f64`, rounded
/// to nearest, ties to even (the format's definition). See [`Quantizer::quantize`] for the `f32`
/// shortcut.
#[derive(Debug)]
struct Quantizer {
    min64: f64,
    inv64: f64,
    /// Largest code, `2^b − 1`.
    top: u8,
    /// Whether the `f32` shortcut may be used at all (scale and range of ordinary size).
    fast: bool,
    min: f32,
    inv: f32,
    /// `0.5 − δ`: an `f32` result this close to a tie (or closer) is redone in `f64`.
    threshold: f32,
}

impl Quantizer {
    /// `scale > 0` and `range = max − min` (in `f64`) with `scale·(2^bits − 1) ≥ range`.
    fn new(min: f32, scale: f32, range: f64, bits: u8) -> Self {
        let inv64 = 1.0 / f64::from(scale);
        // The shortcut needs `x − min` not to overflow in f32 (range ≤ 2¹²⁶) and 1/scale to be a
        // normal f32 (2⁻¹⁰⁰ ≤ scale, and scale < range ≤ 2¹²⁶).
        let fast = range <= 2f64.powi(126) && f64::from(scale) >= 2f64.powi(-100);
        // δ = 2^(bits−22) = (levels + 1)·2⁻²², exactly representable, as is 0.5 − δ.
        let delta = 2f32.powi(i32::from(bits) - 22);
        Quantizer {
            min64: f64::from(min),
            inv64,
            top: ((1u32 << bits) - 1) as u8,
            fast,
            min,
            inv: inv64 as f32,
            threshold: 0.5 - delta,
        }
    }

    /// Codes of `xs` into `codes` (same length).
    ///
    /// **The `f32` shortcut gives the `f64` formula's code, or is not used.** With `d = x − min ≥ 0`
    /// and `T = d·inv64` (real numbers), the `f64` path computes `t64 = fl64(fl64(d)·inv64)` and
    /// the shortcut `t32 = fl32(fl32(d)·fl32(inv64))`. `fl32(d)` is exact or within a relative
    /// 2⁻²⁴ (no overflow since `d ≤ range ≤ 2¹²⁶`; subnormal differences are exact), `fl32(inv64)`
    /// is normal and within 2⁻²⁴, the product within 2⁻²⁴ plus at most 2⁻¹⁵⁰ if it underflows;
    /// `t64` is within 2·2⁻⁵³ of `T`. So `|t32 − t64| ≤ 3.0001·2⁻²⁴·T + 2⁻¹⁵⁰`, and
    /// `T ≤ range·inv64 ≤ levels·(1 + 2⁻⁵²)` because `scale·levels ≥ range`: the difference is
    /// below `δ = (levels + 1)·2⁻²²`. `t32 + 2²³` rounds `t32` to the nearest integer `k` (ties to
    /// even) exactly, and `|t32 − k|` is exact. If `|t32 − k| < 0.5 − δ`, then `t64` lies strictly
    /// inside `(k − ½, k + ½)` too and the `f64` path rounds it to the same `k` (and `k ≤ levels`).
    /// Otherwise the sub-block is recomputed in `f64`. For random data that happens for about
    /// `2δ·32` of the sub-blocks (0.4 % at 8 bits).
    #[inline(always)]
    fn quantize(&self, xs: &[f32], codes: &mut [u8]) {
        if self.fast {
            for (xs, codes) in xs.chunks(SUB).zip(codes.chunks_mut(SUB)) {
                if !self.codes_f32(xs, codes) {
                    self.codes_f64(xs, codes);
                }
            }
        } else {
            self.codes_f64(xs, codes);
        }
    }

    /// The `f32` shortcut; false when some value came too close to a tie.
    #[inline(always)]
    fn codes_f32(&self, xs: &[f32], codes: &mut [u8]) -> bool {
        let mut near_tie = 0u32;
        for (c, &x) in codes.iter_mut().zip(xs) {
            let t = (x - self.min) * self.inv;
            let r = t + ROUND_MAGIC_F32;
            let k = r - ROUND_MAGIC_F32;
            near_tie |= u32::from((t - k).abs() >= self.threshold);
            *c = (r.to_bits() as u8).min(self.top);
        }
        near_tie == 0
    }

    /// The format's definition, in `f64`.
    #[inline(always)]
    fn codes_f64(&self, xs: &[f32], codes: &mut [u8]) {
        for (c, &x) in codes.iter_mut().zip(xs) {
            // 0 ≤ t ≤ levels·(1 + 2⁻⁵⁰) (scale·levels ≥ range). Adding 2⁵² rounds t to the nearest
            // integer (ties to even) in the low mantissa bits: a branch-free, vectorizable round.
            let t = (f64::from(x) - self.min64) * self.inv64;
            *c = ((t + ROUND_MAGIC).to_bits() as u8).min(self.top);
        }
    }
}

/// F16 payload: saturate to ±65504, round to nearest even (hardware F16C through `half` where the
/// CPU has it; the same results as its software conversion for these finite inputs).
fn write_f16(kept: &KeptValues<'_>, payload: &mut [u8]) {
    let mut at = 0;
    let mut clamped = [0.0f32; BLOCK];
    let mut halves = [half::f16::ZERO; BLOCK];
    kept.for_each_block(|xs| {
        let n = xs.len().min(BLOCK);
        for (c, &x) in clamped.iter_mut().zip(xs) {
            *c = x.clamp(-F16_MAX, F16_MAX);
        }
        halves[..n].convert_from_f32_slice(&clamped[..n]);
        let end = at + 2 * n;
        if let Some(dst) = payload.get_mut(at..end) {
            for (d, h) in dst.as_chunks_mut::<2>().0.iter_mut().zip(&halves[..n]) {
                *d = h.to_bits().to_le_bytes();
            }
        }
        at = end;
    });
    debug_assert_eq!(at, payload.len());
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

    /// Codes of single values: the shortcut (when it accepts), the dispatcher and the `f64`
    /// definition agree. Returns whether the shortcut accepted.
    fn check_one(q: &Quantizer, x: f32) -> bool {
        let (mut fast, mut exact, mut both) = ([0u8], [0u8], [0u8]);
        q.codes_f64(&[x], &mut exact);
        q.quantize(&[x], &mut both);
        assert_eq!(both, exact, "x = {x:e}, {q:?}");
        // The shortcut is only ever called when `q.fast`.
        let accepted = q.fast && q.codes_f32(&[x], &mut fast);
        if accepted {
            assert_eq!(fast, exact, "x = {x:e}, {q:?}");
        }
        accepted
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Values a few ulps either side of every rounding tie `min + (k + ½)·scale`, for random
    /// ranges from 2⁻⁴⁰ to 2⁴⁰, offsets of either sign and every width.
    #[test]
    fn f32_shortcut_agrees_near_ties() {
        let mut s = 0x1234_5678_9abc_def1u64;
        let (mut accepted, mut rejected) = (0usize, 0usize);
        for bits in [2u8, 3, 4, 5, 6, 8] {
            let levels = f64::from((1u32 << bits) - 1);
            for _ in 0..300 {
                let mag = 2f32.powi((xorshift(&mut s) % 81) as i32 - 40);
                let min = ((xorshift(&mut s) % 2001) as f32 / 1000.0 - 1.0) * mag;
                let max = min + (xorshift(&mut s) % 1000 + 1) as f32 / 100.0 * mag;
                if max <= min {
                    continue;
                }
                let range = f64::from(max) - f64::from(min);
                let scale = quant_scale(range, levels);
                let q = Quantizer::new(min, scale, range, bits);
                assert!(q.fast);
                for k in 0..=(1u32 << bits) - 1 {
                    let tie = f64::from(min) + (f64::from(k) + 0.5) * f64::from(scale);
                    let mut x = tie as f32;
                    for _ in 0..4 {
                        x = x.next_down();
                    }
                    for _ in 0..9 {
                        if x >= min && x <= max {
                            if check_one(&q, x) {
                                accepted += 1;
                            } else {
                                rejected += 1;
                            }
                        }
                        x = x.next_up();
                    }
                }
                for _ in 0..64 {
                    let u = (xorshift(&mut s) >> 40) as f32 / (1u64 << 24) as f32;
                    let x = (min + u * (max - min)).clamp(min, max);
                    check_one(&q, x);
                }
            }
        }
        assert!(
            accepted > 10_000 && rejected > 1_000,
            "{accepted} {rejected}"
        );
    }

    /// Every `f32` in small ranges (a few thousand ulps wide, so that consecutive values step
    /// through the codes finely), every width.
    #[test]
    fn f32_shortcut_agrees_exhaustively_on_narrow_ranges() {
        let mut accepted = 0usize;
        for bits in [2u8, 3, 4, 5, 6, 8] {
            let levels = f64::from((1u32 << bits) - 1);
            for (min, ulps) in [
                (1.0f32, 3000u32),
                (-1.0, 5000),
                (0.0, 4000),
                (1.0e-30, 2500),
                (-7.5e12, 6000),
                (f32::MIN_POSITIVE, 3000),
                (f32::from_bits(1), 2000), // subnormals
            ] {
                let mut max = min;
                for _ in 0..ulps {
                    max = max.next_up();
                }
                let range = f64::from(max) - f64::from(min);
                let scale = quant_scale(range, levels);
                let q = Quantizer::new(min, scale, range, bits);
                let mut x = min;
                while x <= max {
                    accepted += usize::from(check_one(&q, x));
                    x = x.next_up();
                }
            }
        }
        assert!(accepted > 50_000, "{accepted}");
    }

    /// Ranges where the shortcut is not allowed (huge ranges, tiny scales) use `f64` only.
    #[test]
    fn f32_shortcut_disabled_at_the_extremes() {
        let q = Quantizer::new(-f32::MAX, 1.0e38, 2.0 * f64::from(f32::MAX), 4);
        assert!(!q.fast);
        let q = Quantizer::new(0.0, 1.0e-35, 1.0e-33, 8);
        assert!(!q.fast);
        let q = Quantizer::new(0.0, 1.0, 255.0, 8);
        assert!(q.fast);
    }
}
