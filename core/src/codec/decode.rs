//! Decoder: validates everything before allocating, then reconstructs the dense tensor.

use super::bits::{padding_is_zero, BitReader};
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

    let layout = Layout::from_parts(&shape, elements, keep_ratio, mode)?;
    if kept != layout.kept {
        return Err(CodecError::KeptCountMismatch {
            expected: layout.kept,
            found: kept,
        });
    }
    let quant_ok = match mode {
        QuantMode::Bits(_) => min.is_finite() && scale.is_finite() && scale >= 0.0,
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

    // Everything validated: allocate the output (≤ limits.max_elements).
    let mut data = vec![0.0f32; elements];
    match positions {
        None => decode_values(mode, payload, min, scale, &mut data)?,
        Some((hw, positions)) => {
            // kept_values ≤ elements ≤ max_elements: bounded.
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

/// Decodes `out.len()` kept values from a payload whose length has been validated.
fn decode_values(
    mode: QuantMode,
    payload: &[u8],
    min: f32,
    scale: f32,
    out: &mut [f32],
) -> Result<(), CodecError> {
    match mode {
        QuantMode::Bits(bits) => {
            let mut table = [0.0f32; 256];
            for (q, slot) in table.iter_mut().take(1usize << bits).enumerate() {
                let v = f64::from(min) + q as f64 * f64::from(scale);
                *slot = v.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32;
            }
            let b = usize::from(bits);
            let code_mask = (1u64 << b) - 1;
            // Groups of 8 codes occupy exactly `b` bytes.
            let full_groups = out.len() / 8;
            let mut out_groups = out.chunks_exact_mut(8);
            for (dst, src) in (&mut out_groups).zip(payload.chunks_exact(b)) {
                let mut word = [0u8; 8];
                word[..b].copy_from_slice(src);
                let w = u64::from_le_bytes(word);
                for (i, o) in dst.iter_mut().enumerate() {
                    // The index is masked to < 2^b ≤ 256.
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
