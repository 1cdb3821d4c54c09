//! Decoder: validates everything before allocating, then reconstructs the dense tensor.

use super::bits::{padding_is_zero, unpack_codes, unpack_groups};
use super::entropy;
use super::{
    checked_product, validate_keep_ratio, CodecError, DecodeLimits, Decoded, Layout, QuantMode,
    FORMAT_VERSION, MAGIC,
};

/// Decodes bytes produced by [`encode`](super::encode). Every header field is validated against
/// the format and `limits` before the output (at most `limits.max_elements` `f32`s) is allocated;
/// trailing or missing bytes are errors.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, CodecError> {
    let mut r = Reader { bytes, pos: 0 };

    let magic = r.take(4, "magic")?;
    if magic != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mode = QuantMode::from_byte(r.u8("mode")?)?;
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
    // rank ≤ 255, so this allocation is bounded.
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

    let layout = Layout::from_parts(&shape, elements, keep_ratio, mode.fixed_width())?;
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
    let mut payload = r.rest();
    // The entropy stage: its payload is shorter than the fixed-width one (else the encoder writes
    // that); decode the codes and re-pack them, then go on as for `Bits`.
    let repacked;
    if let QuantMode::Coded(bits) = mode {
        if payload.len() >= layout.payload_len {
            return Err(CodecError::EntropyStream(
                "not smaller than the fixed-width payload",
            ));
        }
        // `kept_values ≤ elements ≤ max_elements`: bounded.
        let mut codes = vec![0u8; layout.kept_values];
        let row = match layout.spatial {
            Some(_) => layout.kept,
            None => layout.kept_values,
        };
        entropy::decode_codes(payload, bits, row, &mut codes)?;
        let mut fixed = vec![0u8; layout.payload_len];
        entropy::pack_fixed(&codes, bits, &mut fixed);
        repacked = fixed;
        payload = &repacked;
    }
    if payload.len() != layout.payload_len {
        return Err(CodecError::PayloadLength {
            expected: layout.payload_len,
            actual: payload.len(),
        });
    }

    // Kept positions (ascending) when a mask is present.
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
            // `found == kept ≤ hw ≤ elements ≤ max_elements`: bounded.
            let mut positions = Vec::with_capacity(kept);
            for (byte_index, &byte) in mask.iter().enumerate() {
                let mut bits = byte;
                while bits != 0 {
                    positions.push(byte_index as u32 * 8 + bits.trailing_zeros());
                    bits &= bits - 1;
                }
            }
            Some((hw, positions))
        }
        _ => None,
    };

    match mode {
        QuantMode::Bits(bits) | QuantMode::Coded(bits) => {
            if !padding_is_zero(payload, layout.kept_values * usize::from(bits)) {
                return Err(CodecError::NonZeroPadding("payload"));
            }
        }
        QuantMode::F16 => {
            let halves = payload.as_chunks::<2>().0;
            let is_bad = |c: &[u8; 2]| u16::from_le_bytes(*c) & 0x7c00 == 0x7c00;
            // A branch-free sweep (it vectorizes), then the index only if there is one.
            if halves.iter().fold(false, |acc, c| acc | is_bad(c)) {
                let index = halves.iter().position(is_bad).unwrap_or(0);
                return Err(CodecError::NonFiniteValue { index });
            }
        }
        QuantMode::F32 => {
            let words = payload.as_chunks::<4>().0;
            let is_bad = |c: &[u8; 4]| u32::from_le_bytes(*c) & 0x7f80_0000 == 0x7f80_0000;
            if words.iter().fold(false, |acc, c| acc | is_bad(c)) {
                let index = words.iter().position(is_bad).unwrap_or(0);
                return Err(CodecError::NonFiniteValue { index });
            }
        }
    }

    // Everything validated: allocate the output (≤ limits.max_elements) and fill it.
    let mut data = vec![0.0f32; elements];
    let mut sink = match &positions {
        None => Sink::Dense {
            out: &mut data,
            at: 0,
        },
        Some((hw, positions)) => Sink::Scatter {
            channels: data.chunks_exact_mut(*hw),
            channel: None,
            positions,
            next: 0,
        },
    };
    decode_values(
        mode.fixed_width(),
        payload,
        min,
        scale,
        layout.kept_values,
        &mut sink,
    );

    Ok(Decoded {
        shape,
        data,
        keep_ratio,
        mode,
    })
}

/// Values are decoded in blocks of this many (a multiple of 8: whole bytes of codes per block).
const BLOCK: usize = 256;

/// Where decoded kept values go, in wire order.
enum Sink<'a> {
    /// No mask: every element, in order.
    Dense { out: &'a mut [f32], at: usize },
    /// With a mask: for each channel of `hw` values in turn, the ascending `positions`; the
    /// output is zero elsewhere.
    Scatter {
        channels: std::slice::ChunksExactMut<'a, f32>,
        channel: Option<&'a mut [f32]>,
        positions: &'a [u32],
        /// Index in `positions` of the next value in the current channel.
        next: usize,
    },
}

impl Sink<'_> {
    /// A slice to decode the next `n ≤ BLOCK` values into directly, when there is one.
    #[inline(always)]
    fn direct(&mut self, n: usize) -> Option<&mut [f32]> {
        match self {
            Sink::Dense { out, at } => {
                let start = *at;
                *at += n;
                out.get_mut(start..start + n)
            }
            Sink::Scatter { .. } => None,
        }
    }

    /// Stores `f(v)` for the next `values.len()` values `v` (only used for [`Sink::Scatter`]).
    #[inline(always)]
    fn put<T: Copy>(&mut self, mut values: &[T], f: impl Fn(T) -> f32) {
        let Sink::Scatter {
            channels,
            channel,
            positions,
            next,
        } = self
        else {
            return;
        };
        while !values.is_empty() {
            if channel.is_none() {
                *channel = channels.next();
            }
            let Some(ch) = channel.as_deref_mut() else {
                return;
            };
            let Some(last) = ch.len().checked_sub(1) else {
                return;
            };
            let todo = positions.get(*next..).unwrap_or(&[]);
            let take = todo.len().min(values.len());
            for (&p, &v) in todo[..take].iter().zip(&values[..take]) {
                // p < hw by construction (mask padding checked); the clamp (a conditional move)
                // lets the compiler drop the bounds check without a branch per value.
                ch[(p as usize).min(last)] = f(v);
            }
            values = &values[take..];
            *next += take;
            if *next >= positions.len() {
                *next = 0;
                *channel = None;
                if take == 0 {
                    // No positions at all (cannot happen: the mask has ≥ 1 bit set).
                    return;
                }
            }
        }
    }
}

/// Decodes `n` kept values from a payload whose length, padding and (float modes) finiteness have
/// been validated, into `sink`.
fn decode_values(mode: QuantMode, payload: &[u8], min: f32, scale: f32, n: usize, sink: &mut Sink) {
    match mode {
        // Called with fixed-width modes; `Coded` payloads are re-packed first.
        QuantMode::Bits(bits) | QuantMode::Coded(bits) => {
            let mut table = [0.0f32; 256];
            let (min, scale) = (f64::from(min), f64::from(scale));
            for (q, slot) in (0u32..).zip(table.iter_mut().take(1usize << bits)) {
                let v = min + f64::from(q) * scale;
                *slot = v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32;
            }
            match bits {
                2 => unpack_all::<2>(payload, &table, n, sink),
                3 => unpack_all::<3>(payload, &table, n, sink),
                4 => unpack_all::<4>(payload, &table, n, sink),
                5 => unpack_all::<5>(payload, &table, n, sink),
                6 => unpack_all::<6>(payload, &table, n, sink),
                _ => unpack_all::<8>(payload, &table, n, sink),
            }
        }
        QuantMode::F16 => {
            let mut buf = [0.0f32; BLOCK];
            for src in payload.as_chunks::<2>().0.chunks(BLOCK) {
                let fill = |dst: &mut [f32]| {
                    for (o, c) in dst.iter_mut().zip(src) {
                        *o = f16_bits_to_f32(u16::from_le_bytes(*c));
                    }
                };
                match sink.direct(src.len()) {
                    Some(dst) => fill(dst),
                    None => {
                        fill(&mut buf);
                        sink.put(&buf[..src.len()], |v| v);
                    }
                }
            }
        }
        QuantMode::F32 => {
            let mut buf = [0.0f32; BLOCK];
            for src in payload.as_chunks::<4>().0.chunks(BLOCK) {
                let fill = |dst: &mut [f32]| {
                    for (o, c) in dst.iter_mut().zip(src) {
                        *o = f32::from_le_bytes(*c);
                    }
                };
                match sink.direct(src.len()) {
                    Some(dst) => fill(dst),
                    None => {
                        fill(&mut buf);
                        sink.put(&buf[..src.len()], |v| v);
                    }
                }
            }
        }
    }
}

/// IEEE binary16 → binary32 for finite inputs (validated before), exactly, branch-free so that
/// the loop vectorizes, and without arithmetic on subnormal `f32`s (slow on x86). The 15 magnitude
/// bits shifted into an `f32`'s exponent and mantissa fields plus 112 in the exponent (the bias
/// difference) are a normal `f16`'s value; a subnormal one (`m·2⁻²⁴`) is `2⁻¹⁴·(1 + m/1024) −
/// 2⁻¹⁴`, computed exactly from normal `f32`s.
#[inline(always)]
fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let o = (h & 0x7fff) << 13;
    let normal = f32::from_bits(o + (112 << 23));
    let subnormal = f32::from_bits(o + (113 << 23)) - f32::from_bits(113 << 23);
    let magnitude = if o & (0x1f << 23) == 0 {
        subnormal
    } else {
        normal
    };
    f32::from_bits(magnitude.to_bits() | ((h & 0x8000) << 16))
}

/// Decodes `n` codes of width `B` through `table`, a block of [`BLOCK`] at a time: straight into
/// the output without a mask, else as codes scattered to the kept positions.
fn unpack_all<const B: usize>(payload: &[u8], table: &[f32; 256], n: usize, sink: &mut Sink) {
    let lookup = |c: u8| table[usize::from(c)];
    let block_bytes = BLOCK / 8 * B;
    let full_blocks = n / BLOCK;
    let (head, tail) = payload.split_at(payload.len().min(full_blocks * block_bytes));
    let mut codes = [0u8; BLOCK];
    for src in head.chunks_exact(block_bytes) {
        match sink.direct(BLOCK) {
            Some(dst) => unpack_groups::<B>(src, table, dst),
            None if B == 8 => sink.put(src, lookup),
            None => {
                unpack_codes::<B>(src, &mut codes);
                sink.put(&codes, lookup);
            }
        }
    }
    // The last, partial block: whole groups of 8, then a partial group zero-padded to 8 bytes.
    let rest = n - full_blocks * BLOCK;
    if rest == 0 {
        return;
    }
    let groups = rest / 8;
    let (src, partial) = tail.split_at(tail.len().min(groups * B));
    unpack_codes::<B>(src, &mut codes[..groups * 8]);
    let mut word = [0u8; 8];
    let len = partial.len().min(8);
    word[..len].copy_from_slice(&partial[..len]);
    let mut last = [0u8; 8];
    unpack_codes::<B>(&word[..B], &mut last);
    let extra = rest - groups * 8;
    codes[groups * 8..rest].copy_from_slice(&last[..extra]);
    match sink.direct(rest) {
        Some(dst) => {
            for (o, &c) in dst.iter_mut().zip(&codes[..rest]) {
                *o = lookup(c);
            }
        }
        None => sink.put(&codes[..rest], lookup),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finite half-precision value converts exactly as `half` does.
    #[test]
    fn f16_conversion_exhaustive() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            if h.is_finite() {
                assert_eq!(
                    f16_bits_to_f32(bits).to_bits(),
                    h.to_f32().to_bits(),
                    "{bits:#06x}"
                );
            }
        }
    }
}
