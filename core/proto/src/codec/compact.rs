//! The compact form of an encoded tensor, for a stream on which shape, keep ratio and mode are
//! agreed once (protocol version 2's bound contexts, `docs/protocol.md`): the codec body without
//! the header fields that agreement fixes.
//!
//! An encoding is `header · min · scale · mask · payload` (`docs/codec.md` §3). Given a
//! [`TensorContext`] the receiver knows the magic, version, rank, shape, ρ and the kept count, so
//! the compact body is `min · scale · mask · payload` for the quantized modes and `mask · payload`
//! for `F16`/`F32` (whose `min` and `scale` are always zero). For a [`QuantMode::Coded`] context
//! the body's length says which form the encoder wrote: exactly the fixed-width payload means its
//! fallback to [`QuantMode::Bits`], anything shorter the range-coded stream.
//!
//! [`expand`] rebuilds the full encoding, which [`decode`](super::decode) then validates as it
//! validates any other: the compact form adds no decoder of its own and no new way to fail.

use super::{
    validate_keep_ratio, CodecError, Layout, QuantMode, FORMAT_VERSION, HEADER_FIXED, HEADER_TAIL,
    MAGIC,
};

/// Bytes of `min` and `scale` in a quantized body.
const QUANT_PARAMS_LEN: usize = 8;

/// What a context fixes about every tensor sent on it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorContext {
    /// Shape without the batch dimension.
    pub shape: Vec<usize>,
    /// Keep ratio ρ, in `(0, 1]`.
    pub keep_ratio: f32,
    /// The mode the tensors are encoded with.
    pub mode: QuantMode,
}

impl TensorContext {
    /// Checks the mode, ρ and shape (as [`encoded_len`](super::encoded_len) would).
    pub fn validate(&self) -> Result<(), CodecError> {
        self.layout().map(|_| ())
    }

    fn layout(&self) -> Result<Layout, CodecError> {
        self.mode.validate()?;
        validate_keep_ratio(self.keep_ratio)?;
        Layout::new(&self.shape, self.keep_ratio, self.mode.fixed_width())
    }
}

/// How many bytes the compact body of a tensor with this rank and mode saves on its full
/// encoding: the header less `min` and `scale` (kept in quantized bodies).
pub fn header_savings(rank: usize, mode: QuantMode) -> usize {
    let header = HEADER_FIXED + 4 * rank + HEADER_TAIL;
    match mode {
        QuantMode::Bits(_) | QuantMode::Coded(_) => header - QUANT_PARAMS_LEN,
        QuantMode::F16 | QuantMode::F32 => header,
    }
}

/// Splits a full encoding (from [`encode`](super::encode)) into the context it was written for
/// and its compact body. The context's mode is the one written: `Bits(b)` where a `Coded(b)`
/// encoder fell back to fixed width. Checks only what the split needs (magic, version, mode,
/// rank, ρ, lengths, zero `min`/`scale` in float modes); the receiver's [`decode`](super::decode)
/// checks the rest.
pub fn split_body(encoded: &[u8]) -> Result<(TensorContext, &[u8]), CodecError> {
    let truncated = |field: &'static str, needed: usize| CodecError::Truncated {
        field,
        needed,
        available: encoded.len(),
    };
    let fixed = encoded
        .get(..HEADER_FIXED)
        .ok_or_else(|| truncated("header", HEADER_FIXED))?;
    if fixed[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    if fixed[4] != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(fixed[4]));
    }
    let mode = QuantMode::from_byte(fixed[5])?;
    let rank = usize::from(fixed[6]);
    if fixed[7] != 0 {
        return Err(CodecError::ReservedNonZero(fixed[7]));
    }
    let header_len = HEADER_FIXED + 4 * rank + HEADER_TAIL;
    let header = encoded
        .get(..header_len)
        .ok_or_else(|| truncated("header", header_len))?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let shape: Vec<usize> = (0..rank)
        .map(|i| word(HEADER_FIXED + 4 * i) as usize)
        .collect();
    let tail = HEADER_FIXED + 4 * rank;
    let keep_ratio = f32::from_bits(word(tail));
    let body_start = match mode {
        QuantMode::Bits(_) | QuantMode::Coded(_) => header_len - QUANT_PARAMS_LEN,
        QuantMode::F16 | QuantMode::F32 => {
            let (min, scale) = (word(tail + 8), word(tail + 12));
            if min != 0 || scale != 0 {
                return Err(CodecError::InvalidQuantParams {
                    min: f32::from_bits(min),
                    scale: f32::from_bits(scale),
                });
            }
            header_len
        }
    };
    let context = TensorContext {
        shape,
        keep_ratio,
        mode,
    };
    context.validate()?;
    Ok((context, &encoded[body_start..]))
}

/// Size of the compact body of a full encoding of `encoded_len` bytes with this rank and mode
/// (saturating at 0).
pub fn body_len(encoded_len: usize, rank: usize, mode: QuantMode) -> usize {
    encoded_len.saturating_sub(header_savings(rank, mode))
}

/// Rebuilds the full encoding of a compact `body` sent on `context`, for
/// [`decode`](super::decode) to validate and decode. Fails only when the context itself is
/// invalid or the body is too short to hold its fixed fields; everything else is the decoder's to
/// judge. The output is at most the body plus the header (≤ 24 + 4·rank bytes) long.
pub fn expand(context: &TensorContext, body: &[u8]) -> Result<Vec<u8>, CodecError> {
    let layout = context.layout()?;
    let rank = context.shape.len();
    let mode = match context.mode {
        QuantMode::Coded(b) => {
            let fixed_body = QUANT_PARAMS_LEN + layout.mask_len + layout.payload_len;
            if body.len() == fixed_body {
                QuantMode::Bits(b)
            } else {
                QuantMode::Coded(b)
            }
        }
        m => m,
    };
    let header_len = HEADER_FIXED + 4 * rank + HEADER_TAIL;
    let mut out = Vec::with_capacity(header_len + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(mode.to_byte());
    // `Layout::new` accepted the shape, so the rank fits the format's byte and every dimension
    // and the kept count fit in u32.
    out.push(rank as u8);
    out.push(0);
    for &d in &context.shape {
        out.extend_from_slice(&(d as u32).to_le_bytes());
    }
    out.extend_from_slice(&context.keep_ratio.to_le_bytes());
    out.extend_from_slice(&(layout.kept as u32).to_le_bytes());
    match mode {
        QuantMode::Bits(_) | QuantMode::Coded(_) => {
            if body.len() < QUANT_PARAMS_LEN {
                return Err(CodecError::Truncated {
                    field: "min and scale",
                    needed: QUANT_PARAMS_LEN,
                    available: body.len(),
                });
            }
        }
        QuantMode::F16 | QuantMode::F32 => out.extend_from_slice(&[0; QUANT_PARAMS_LEN]),
    }
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{decode, encode, encoded_len, CodecParams, DecodeLimits};
    use super::*;

    fn relu_like(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s % 1000) as f32 / 250.0 - 2.0;
                v.max(0.0)
            })
            .collect()
    }

    #[test]
    fn every_mode_round_trips_through_the_compact_body() {
        let shapes: [&[usize]; 4] = [&[16, 6, 6], &[64, 5, 5], &[384], &[]];
        for shape in shapes {
            let n = shape.iter().product();
            let x = relu_like(n, 7);
            for mode in QuantMode::ALL.iter().chain(QuantMode::CODED.iter()) {
                for keep_ratio in [1.0, 0.5] {
                    let p = CodecParams {
                        keep_ratio,
                        mode: *mode,
                    };
                    let full = encode(&x, shape, &p).unwrap();
                    let (context, body) = split_body(&full).unwrap();
                    assert_eq!(context.shape, shape);
                    assert_eq!(context.keep_ratio, keep_ratio);
                    assert_eq!(context.mode.fixed_width(), mode.fixed_width());
                    assert_eq!(
                        body.len(),
                        full.len() - header_savings(shape.len(), *mode),
                        "{shape:?} {mode}"
                    );
                    // The receiver knows the plan's mode, whichever form this frame took.
                    let planned = TensorContext {
                        mode: *mode,
                        ..context.clone()
                    };
                    assert_eq!(expand(&planned, body).unwrap(), full, "{shape:?} {mode}");
                    assert_eq!(expand(&context, body).unwrap(), full, "{shape:?} {mode}");
                    let bound = encoded_len(shape, &p).unwrap();
                    assert!(body.len() <= body_len(bound, shape.len(), *mode));
                }
            }
        }
    }

    #[test]
    fn a_coded_context_tells_fallback_from_stream_by_length() {
        // A tiny tensor: coding cannot save a byte, so the encoder falls back to fixed width.
        let x = [1.0f32, 0.0, 3.0, 2.0];
        let p = CodecParams {
            keep_ratio: 1.0,
            mode: QuantMode::Coded(4),
        };
        let full = encode(&x, &[4], &p).unwrap();
        let (written, body) = split_body(&full).unwrap();
        assert_eq!(written.mode, QuantMode::Bits(4));
        let planned = TensorContext {
            mode: QuantMode::Coded(4),
            ..written
        };
        let decoded = decode(&expand(&planned, body).unwrap(), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.mode, QuantMode::Bits(4));
        assert_eq!(decoded.data, x);
    }

    #[test]
    fn bad_contexts_and_short_bodies_are_errors_not_panics() {
        let ctx = |shape: Vec<usize>, keep_ratio, mode| TensorContext {
            shape,
            keep_ratio,
            mode,
        };
        assert!(expand(&ctx(vec![4, 0, 2], 1.0, QuantMode::Bits(4)), &[]).is_err());
        assert!(expand(&ctx(vec![4], 0.0, QuantMode::Bits(4)), &[]).is_err());
        assert!(expand(&ctx(vec![4], 1.0, QuantMode::Bits(7)), &[]).is_err());
        assert!(matches!(
            expand(&ctx(vec![4], 1.0, QuantMode::Bits(4)), &[0; 7]),
            Err(CodecError::Truncated { .. })
        ));
        // Too short or too long bodies expand, and the decoder refuses them.
        let context = ctx(vec![8, 4, 4], 0.5, QuantMode::Coded(3));
        for len in [8, 9, 12, 200] {
            let full = expand(&context, &vec![0u8; len]).unwrap();
            assert!(decode(&full, &DecodeLimits::default()).is_err(), "{len}");
        }
        for garbage in [
            &b""[..],
            b"JMFC",
            b"JMFC\x01\x04\x03\x00",
            b"XXXX\x01\x04\x01\x00",
        ] {
            assert!(split_body(garbage).is_err());
        }
    }
}
