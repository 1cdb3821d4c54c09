//! The feature codec as it was before the performance work of issue 14 (part 4), frozen: encoder,
//! decoder and the private helpers they used, copied from `core/proto/src/codec/` at commit `4fd09e7`
//! with only the imports changed (and `QuantMode::Coded`, added later, matched like `Bits`: the
//! baseline is only ever given fixed-width modes). Only for side-by-side benchmarks (`benches/codec/main.rs`) and
//! the differential tests (`core/proto/src/codec/golden.rs`); never used by the library.
//!
//! The including module provides `super::api` with the public codec items.
#![allow(dead_code, clippy::unwrap_used)]

use super::api::{
    kept_positions, CodecError, CodecParams, DecodeLimits, Decoded, QuantMode, FORMAT_VERSION,
    MAGIC,
};

const MODE_F16: u8 = 16;
const MODE_F32: u8 = 32;
const MAX_FORMAT_RANK: usize = u8::MAX as usize;
const HEADER_FIXED: usize = 8;
const HEADER_TAIL: usize = 16;

fn to_byte(m: QuantMode) -> u8 {
    match m {
        QuantMode::Bits(b) | QuantMode::Coded(b) => b,
        QuantMode::F16 => MODE_F16,
        QuantMode::F32 => MODE_F32,
    }
}

fn from_byte(b: u8) -> Result<QuantMode, CodecError> {
    match b {
        MODE_F16 => Ok(QuantMode::F16),
        MODE_F32 => Ok(QuantMode::F32),
        b if [2, 3, 4, 5, 6, 8].contains(&b) => Ok(QuantMode::Bits(b)),
        b => Err(CodecError::UnsupportedMode(b)),
    }
}

fn validate_keep_ratio(keep_ratio: f32) -> Result<(), CodecError> {
    if keep_ratio > 0.0 && keep_ratio <= 1.0 {
        Ok(())
    } else {
        Err(CodecError::InvalidKeepRatio(keep_ratio))
    }
}

fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    elements: usize,
    spatial: Option<(usize, usize)>,
    kept: usize,
    kept_values: usize,
    mask_len: usize,
    payload_len: usize,
    header_len: usize,
    total_len: usize,
}

impl Layout {
    fn new(shape: &[usize], keep_ratio: f32, mode: QuantMode) -> Result<Self, CodecError> {
        if shape.len() > MAX_FORMAT_RANK {
            return Err(CodecError::RankTooLargeForFormat(shape.len()));
        }
        for &d in shape {
            if d == 0 {
                return Err(CodecError::ZeroDimension);
            }
            if u32::try_from(d).is_err() {
                return Err(CodecError::DimensionTooLarge(d));
            }
        }
        let elements = checked_product(shape).ok_or(CodecError::SizeOverflow)?;
        Self::from_parts(shape, elements, keep_ratio, mode)
    }

    fn from_parts(
        shape: &[usize],
        elements: usize,
        keep_ratio: f32,
        mode: QuantMode,
    ) -> Result<Self, CodecError> {
        let (spatial, kept, kept_values, mask_len) = if let [c, h, w] = *shape {
            let hw = h.checked_mul(w).ok_or(CodecError::SizeOverflow)?;
            if u32::try_from(hw).is_err() {
                return Err(CodecError::DimensionTooLarge(hw));
            }
            let kept = kept_positions(h, w, keep_ratio);
            let kept_values = c.checked_mul(kept).ok_or(CodecError::SizeOverflow)?;
            let mask_len = if kept < hw { hw.div_ceil(8) } else { 0 };
            (Some((c, hw)), kept, kept_values, mask_len)
        } else {
            (None, elements, elements, 0)
        };
        if u32::try_from(kept).is_err() {
            return Err(CodecError::DimensionTooLarge(kept));
        }
        let payload_bits = kept_values
            .checked_mul(mode.bits_per_value() as usize)
            .ok_or(CodecError::SizeOverflow)?;
        let payload_len = payload_bits.div_ceil(8);
        let header_len = HEADER_FIXED + 4 * shape.len() + HEADER_TAIL;
        let total_len = header_len
            .checked_add(mask_len)
            .and_then(|n| n.checked_add(payload_len))
            .ok_or(CodecError::SizeOverflow)?;
        Ok(Layout {
            elements,
            spatial,
            kept,
            kept_values,
            mask_len,
            payload_len,
            header_len,
            total_len,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// bits.rs
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            pos: 0,
            acc: 0,
            nbits: 0,
        }
    }

    #[inline(always)]
    fn get(&mut self, width: u32) -> u32 {
        if self.nbits < width {
            let mut chunk = [0u8; 4];
            let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
            let n = rest.len().min(4);
            chunk[..n].copy_from_slice(&rest[..n]);
            self.pos += 4;
            self.acc |= u64::from(u32::from_le_bytes(chunk)) << self.nbits;
            self.nbits += 32;
        }
        let mask = if width >= 32 {
            u32::MAX
        } else {
            (1u32 << width) - 1
        };
        let v = (self.acc as u32) & mask;
        self.acc >>= width;
        self.nbits -= width;
        v
    }
}

fn padding_is_zero(bytes: &[u8], used_bits: usize) -> bool {
    let full = used_bits / 8;
    let rem = used_bits % 8;
    let tail_start = if rem == 0 {
        full
    } else {
        match bytes.get(full) {
            Some(&b) if b >> rem != 0 => return false,
            _ => full + 1,
        }
    };
    bytes
        .get(tail_start..)
        .is_none_or(|t| t.iter().all(|&b| b == 0))
}

// ------------------------------------------------------------------------------------------------
// encode.rs
// ------------------------------------------------------------------------------------------------

const ROUND_MAGIC: f64 = 4_503_599_627_370_496.0;
const F16_MAX: f32 = 65504.0;

pub(super) fn encode(
    data: &[f32],
    shape: &[usize],
    params: &CodecParams,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    Encoder::new().encode_into(data, shape, params, &mut out)?;
    Ok(out)
}

#[derive(Debug, Default, Clone)]
pub(super) struct Encoder {
    importance: Vec<f64>,
    order: Vec<u32>,
}

impl Encoder {
    pub(super) fn new() -> Self {
        Self::default()
    }

    pub(super) fn encode_into(
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

        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(to_byte(params.mode));
        out.push(shape.len() as u8);
        out.push(0);
        for &d in shape {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        out.extend_from_slice(&params.keep_ratio.to_le_bytes());
        out.extend_from_slice(&(layout.kept as u32).to_le_bytes());
        let quant_at = out.len();
        out.extend_from_slice(&[0u8; 8]);
        debug_assert_eq!(out.len(), layout.header_len);

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

        match params.mode {
            QuantMode::Bits(bits) | QuantMode::Coded(bits) => {
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

    fn select(
        &mut self,
        data: &[f32],
        channels: usize,
        hw: usize,
        k: usize,
        out: &mut Vec<u8>,
        mask_len: usize,
    ) {
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
        order.extend(0..hw as u32);
        let imp = &*importance;
        let cmp = |a: &u32, b: &u32| {
            imp[*b as usize]
                .total_cmp(&imp[*a as usize])
                .then_with(|| a.cmp(b))
        };
        order.select_nth_unstable_by(k - 1, cmp);

        let mask_start = out.len();
        out.resize(mask_start + mask_len, 0);
        let mask = &mut out[mask_start..];
        for &p in &order[..k] {
            let p = p as usize;
            mask[p / 8] |= 1 << (p % 8);
        }
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

const CHUNK: usize = 256;

struct Kept<'a> {
    data: &'a [f32],
    positions: &'a [u32],
    hw: Option<usize>,
}

impl Kept<'_> {
    #[inline]
    fn for_each_chunk(&self, mut f: impl FnMut(&[f32])) {
        match self.hw {
            None => self.data.chunks(CHUNK).for_each(f),
            Some(hw) => {
                let mut buf = [0.0f32; CHUNK];
                let mut n = 0;
                for channel in self.data.chunks_exact(hw) {
                    for &p in self.positions {
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

fn write_quantized(kept: &Kept<'_>, bits: u8, payload_len: usize, out: &mut Vec<u8>) -> (f32, f32) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    kept.for_each_chunk(|chunk| {
        for &x in chunk {
            min = if x < min { x } else { min };
            max = if x > max { x } else { max };
        }
    });
    if min > max {
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
    let start = out.len();
    out.resize(start + payload_len + 8, 0);
    let mut pos = start;
    let mut codes = [0u8; CHUNK];
    kept.for_each_chunk(|chunk| {
        for (c, &x) in codes.iter_mut().zip(chunk) {
            let t = (f64::from(x) - min64) * inv;
            *c = ((t + ROUND_MAGIC).to_bits() as u8).min(top);
        }
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

fn quant_scale(range: f64, levels: f64) -> f32 {
    if range <= 0.0 {
        return 0.0;
    }
    let mut scale = (range / levels) as f32;
    while f64::from(scale) * levels < range {
        scale = scale.next_up();
    }
    scale
}

// ------------------------------------------------------------------------------------------------
// decode.rs
// ------------------------------------------------------------------------------------------------

pub(super) fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, CodecError> {
    let mut r = Reader { bytes, pos: 0 };

    let magic = r.take(4, "magic")?;
    if magic != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mode = from_byte(r.u8("mode")?)?;
    let rank = usize::from(r.u8("rank")?);
    let reserved = r.u8("reserved")?;
    if reserved != 0 {
        return Err(CodecError::ReservedNonZero(reserved));
    }
    if rank > limits.max_rank {
        return Err(CodecError::RankLimit {
            rank,
            limit: limits.max_rank,
        });
    }
    let dims = r.take(4 * rank, "shape")?;
    let mut shape = Vec::with_capacity(rank);
    for chunk in dims.chunks_exact(4) {
        let d = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        if d == 0 {
            return Err(CodecError::ZeroDimension);
        }
        shape.push(d);
    }
    let elements = checked_product(&shape);
    match elements {
        Some(n) if n <= limits.max_elements => {}
        _ => {
            return Err(CodecError::ElementLimit {
                elements,
                limit: limits.max_elements,
            })
        }
    }
    let elements = elements.unwrap_or_default();

    let keep_ratio = r.f32("keep_ratio")?;
    validate_keep_ratio(keep_ratio)?;
    let kept = r.u32("kept")? as usize;
    let min = r.f32("min")?;
    let scale = r.f32("scale")?;

    let layout = Layout::from_parts(&shape, elements, keep_ratio, mode)?;
    if kept != layout.kept {
        return Err(CodecError::KeptCountMismatch {
            expected: layout.kept,
            found: kept,
        });
    }
    let quant_ok = match mode {
        QuantMode::Bits(_) | QuantMode::Coded(_) => {
            min.is_finite() && scale.is_finite() && scale >= 0.0
        }
        QuantMode::F16 | QuantMode::F32 => min.to_bits() == 0 && scale.to_bits() == 0,
    };
    if !quant_ok {
        return Err(CodecError::InvalidQuantParams { min, scale });
    }

    let mask = r.take(layout.mask_len, "mask")?;
    let payload = r.rest();
    if payload.len() != layout.payload_len {
        return Err(CodecError::PayloadLength {
            expected: layout.payload_len,
            actual: payload.len(),
        });
    }

    let positions = match layout.spatial {
        Some((_, hw)) if layout.mask_len > 0 => {
            let found: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
            if found != kept {
                return Err(CodecError::MaskPopcountMismatch {
                    expected: kept,
                    found,
                });
            }
            if !padding_is_zero(mask, hw) {
                return Err(CodecError::NonZeroPadding("mask"));
            }
            let mut positions = Vec::with_capacity(kept);
            for (byte_index, &byte) in mask.iter().enumerate() {
                let mut bits = byte;
                while bits != 0 {
                    positions.push(byte_index * 8 + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
            Some((hw, positions))
        }
        _ => None,
    };

    if let QuantMode::Bits(bits) = mode {
        if !padding_is_zero(payload, layout.kept_values * usize::from(bits)) {
            return Err(CodecError::NonZeroPadding("payload"));
        }
    }

    let mut data = vec![0.0f32; elements];
    match positions {
        None => decode_values(mode, payload, min, scale, &mut data)?,
        Some((hw, positions)) => {
            let mut values = vec![0.0f32; layout.kept_values];
            decode_values(mode, payload, min, scale, &mut values)?;
            let k = positions.len();
            if k > 0 {
                for (channel, vals) in data.chunks_exact_mut(hw).zip(values.chunks_exact(k)) {
                    for (&p, &v) in positions.iter().zip(vals) {
                        if let Some(slot) = channel.get_mut(p) {
                            *slot = v;
                        }
                    }
                }
            }
        }
    }

    Ok(Decoded {
        shape,
        data,
        keep_ratio,
        mode,
    })
}

fn decode_values(
    mode: QuantMode,
    payload: &[u8],
    min: f32,
    scale: f32,
    out: &mut [f32],
) -> Result<(), CodecError> {
    match mode {
        QuantMode::Bits(bits) | QuantMode::Coded(bits) => {
            let mut table = [0.0f32; 256];
            for (q, slot) in table.iter_mut().take(1usize << bits).enumerate() {
                let v = f64::from(min) + q as f64 * f64::from(scale);
                *slot = v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32;
            }
            let b = usize::from(bits);
            let code_mask = (1u64 << b) - 1;
            let full_groups = out.len() / 8;
            let mut out_groups = out.chunks_exact_mut(8);
            for (dst, src) in (&mut out_groups).zip(payload.chunks_exact(b)) {
                let mut word = [0u8; 8];
                word[..b].copy_from_slice(src);
                let w = u64::from_le_bytes(word);
                for (i, o) in dst.iter_mut().enumerate() {
                    *o = table[((w >> (i * b)) & code_mask) as usize];
                }
            }
            let rest = payload.get(full_groups * b..).unwrap_or(&[]);
            let mut reader = BitReader::new(rest);
            for o in out_groups.into_remainder() {
                *o = table[(u64::from(reader.get(u32::from(bits))) & code_mask) as usize];
            }
            Ok(())
        }
        QuantMode::F16 => {
            for (o, c) in out.iter_mut().zip(payload.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
            all_finite(out)
        }
        QuantMode::F32 => {
            for (o, c) in out.iter_mut().zip(payload.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            all_finite(out)
        }
    }
}

fn all_finite(values: &[f32]) -> Result<(), CodecError> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(CodecError::NonFiniteValue { index }),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let available = self.bytes.len() - self.pos;
        if n > available {
            return Err(CodecError::Truncated {
                field,
                needed: n,
                available,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        s
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self, field: &'static str) -> Result<f32, CodecError> {
        Ok(f32::from_bits(self.u32(field)?))
    }
}
