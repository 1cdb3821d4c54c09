//! Feature codec: JMDC's compression of intermediate feature maps sent from the edge to the cloud.
//!
//! Two stages, both applied per frame (shapes never include the batch dimension):
//!
//! 1. **Region selection** (rank-3 tensors `[C, H, W]` only): the importance of a spatial position
//!    `(h, w)` is the mean over channels of `x²`. The top [`kept_positions`]`(H, W, ρ)` positions are
//!    kept (ties broken by the lower row-major index) and described by an `H·W`-bit mask; the decoder
//!    fills dropped positions with `0.0`. When every position is kept the mask is omitted. Tensors of
//!    any other rank keep every element and never carry a mask.
//! 2. **Quantization** of the kept values only: per-tensor affine `b`-bit codes
//!    (`b ∈ {2,3,4,5,6,8}`), or half precision ([`QuantMode::F16`]), or exact `f32` ([`QuantMode::F32`]).
//! 3. Optionally (**[`QuantMode::Coded`]**) an **entropy stage** over the `b`-bit codes: an adaptive
//!    binary range coder with neighbour contexts (`entropy.rs`). It is lossless: the decoded tensor is
//!    bit for bit the one fixed-width codes give. When coding would not make the payload smaller the
//!    encoder writes the fixed-width form instead (its header says [`QuantMode::Bits`]).
//!
//! The byte format, the size formula and the error bound are documented in `docs/codec.md`.
//!
//! Everything here is pure (no I/O), never panics on hostile input and never allocates more than
//! [`DecodeLimits`] allow when decoding.

mod bits;
pub mod compact;
mod decode;
mod encode;
mod entropy;
#[cfg(test)]
mod golden;

use std::fmt;
use std::str::FromStr;

pub use decode::decode;
pub use encode::{encode, encode_into, Encoder};

/// The four magic bytes that start every encoded feature tensor.
pub const MAGIC: [u8; 4] = *b"JMFC";
/// Version of the byte format written by [`encode`] and accepted by [`decode`].
pub const FORMAT_VERSION: u8 = 1;
/// Bit widths accepted by [`QuantMode::Bits`].
pub const SUPPORTED_BITS: [u8; 6] = [2, 3, 4, 5, 6, 8];
/// Largest rank the format can describe (the rank is stored in one byte).
pub const MAX_FORMAT_RANK: usize = u8::MAX as usize;

/// Mode byte values in the header for the float modes (bit widths are stored as themselves).
pub(crate) const MODE_F16: u8 = 16;
pub(crate) const MODE_F32: u8 = 32;
/// Flag added to the bit width in the mode byte of an entropy-coded payload ([`QuantMode::Coded`]).
pub(crate) const MODE_CODED_FLAG: u8 = 0x80;

/// How kept values are represented on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum QuantMode {
    /// Per-tensor affine quantization to `b` bits per value; `b` is one of [`SUPPORTED_BITS`].
    Bits(u8),
    /// The same `b`-bit codes, entropy-coded (adaptive binary range coder with neighbour contexts):
    /// lossless, so exactly as accurate as [`QuantMode::Bits`]`(b)`, and smaller where the codes are
    /// predictable (ReLU tensors: mostly zeros). Its size depends on the values; the encoder falls
    /// back to `Bits(b)` when coding would not save a byte.
    Coded(u8),
    /// IEEE 754 half precision (round to nearest, values beyond ±65504 saturate).
    F16,
    /// Exact `f32`.
    F32,
}

impl QuantMode {
    /// Every entropy-coded mode ([`QuantMode::Coded`]), fewest bits first.
    pub const CODED: [QuantMode; 6] = [
        QuantMode::Coded(2),
        QuantMode::Coded(3),
        QuantMode::Coded(4),
        QuantMode::Coded(5),
        QuantMode::Coded(6),
        QuantMode::Coded(8),
    ];

    /// Every fixed-size mode (fixed-width codes and floats), fewest bits first; the entropy-coded
    /// ones are [`QuantMode::CODED`].
    pub const ALL: [QuantMode; 8] = [
        QuantMode::Bits(2),
        QuantMode::Bits(3),
        QuantMode::Bits(4),
        QuantMode::Bits(5),
        QuantMode::Bits(6),
        QuantMode::Bits(8),
        QuantMode::F16,
        QuantMode::F32,
    ];

    /// Bits each kept value occupies in the payload (for [`QuantMode::Coded`], in the
    /// fixed-width form that bounds its size).
    pub fn bits_per_value(self) -> u32 {
        match self {
            QuantMode::Bits(b) | QuantMode::Coded(b) => u32::from(b),
            QuantMode::F16 => 16,
            QuantMode::F32 => 32,
        }
    }

    /// The fixed-width mode with the same codes: `Coded(b)` → `Bits(b)`, others unchanged.
    pub fn fixed_width(self) -> QuantMode {
        match self {
            QuantMode::Coded(b) => QuantMode::Bits(b),
            m => m,
        }
    }

    /// True for [`QuantMode::Coded`]: the encoded size depends on the values.
    pub fn is_coded(self) -> bool {
        matches!(self, QuantMode::Coded(_))
    }

    /// Checks that a [`QuantMode::Bits`] or [`QuantMode::Coded`] width is supported.
    pub fn validate(self) -> Result<(), CodecError> {
        match self {
            QuantMode::Bits(b) | QuantMode::Coded(b) if !SUPPORTED_BITS.contains(&b) => {
                Err(CodecError::UnsupportedBits(b))
            }
            _ => Ok(()),
        }
    }

    /// The mode byte of the header.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            QuantMode::Bits(b) => b,
            QuantMode::Coded(b) => MODE_CODED_FLAG | b,
            QuantMode::F16 => MODE_F16,
            QuantMode::F32 => MODE_F32,
        }
    }

    /// Parses the mode byte of the header.
    pub(crate) fn from_byte(b: u8) -> Result<Self, CodecError> {
        match b {
            MODE_F16 => Ok(QuantMode::F16),
            MODE_F32 => Ok(QuantMode::F32),
            b if SUPPORTED_BITS.contains(&b) => Ok(QuantMode::Bits(b)),
            b if b & MODE_CODED_FLAG != 0 && SUPPORTED_BITS.contains(&(b & !MODE_CODED_FLAG)) => {
                Ok(QuantMode::Coded(b & !MODE_CODED_FLAG))
            }
            b => Err(CodecError::UnsupportedMode(b)),
        }
    }
}

impl fmt::Display for QuantMode {
    /// `q2` … `q8`, `q2ac` … `q8ac` (entropy-coded), `f16`, `f32` (the inverse of [`FromStr`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantMode::Bits(b) => write!(f, "q{b}"),
            QuantMode::Coded(b) => write!(f, "q{b}ac"),
            QuantMode::F16 => f.write_str("f16"),
            QuantMode::F32 => f.write_str("f32"),
        }
    }
}

impl FromStr for QuantMode {
    type Err = CodecError;

    /// Accepts `q2`…`q8` and `q2ac`…`q8ac` (supported widths only), `f16` and `f32`,
    /// case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "f16" => Ok(QuantMode::F16),
            "f32" => Ok(QuantMode::F32),
            other => {
                let (digits, coded) = match other.strip_suffix("ac") {
                    Some(d) => (d, true),
                    None => (other, false),
                };
                let bits = digits
                    .strip_prefix('q')
                    .and_then(|d| d.parse::<u8>().ok())
                    .ok_or_else(|| CodecError::InvalidModeName(s.to_owned()))?;
                let mode = if coded {
                    QuantMode::Coded(bits)
                } else {
                    QuantMode::Bits(bits)
                };
                mode.validate()?;
                Ok(mode)
            }
        }
    }
}

/// Codec parameters chosen per frame by the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodecParams {
    /// Fraction ρ of spatial positions kept, in `(0, 1]`.
    pub keep_ratio: f32,
    /// Representation of the kept values.
    pub mode: QuantMode,
}

impl CodecParams {
    /// Lossless parameters: keep everything, exact `f32`.
    pub const LOSSLESS: CodecParams = CodecParams {
        keep_ratio: 1.0,
        mode: QuantMode::F32,
    };

    /// Checks `0 < keep_ratio ≤ 1` (finite) and that the mode is supported.
    pub fn validate(&self) -> Result<(), CodecError> {
        validate_keep_ratio(self.keep_ratio)?;
        self.mode.validate()
    }
}

pub(crate) fn validate_keep_ratio(keep_ratio: f32) -> Result<(), CodecError> {
    // NaN fails both comparisons.
    if keep_ratio > 0.0 && keep_ratio <= 1.0 {
        Ok(())
    } else {
        Err(CodecError::InvalidKeepRatio(keep_ratio))
    }
}

/// Bounds the decoder enforces before allocating anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted element count (product of the shape); the output buffer is this many `f32`s.
    pub max_elements: usize,
    /// Largest accepted rank.
    pub max_rank: usize,
}

impl Default for DecodeLimits {
    /// 16 Mi elements (64 MiB of `f32`), rank ≤ 4.
    fn default() -> Self {
        DecodeLimits {
            max_elements: 16 * 1024 * 1024,
            max_rank: 4,
        }
    }
}

/// A decoded feature tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Shape without batch dimension.
    pub shape: Vec<usize>,
    /// Row-major values; dropped positions are `0.0`. `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
    /// The ρ recorded by the encoder.
    pub keep_ratio: f32,
    /// The mode recorded by the encoder.
    pub mode: QuantMode,
}

/// Everything that can go wrong when encoding or decoding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    // ---- parameters / encoder input ----
    /// ρ is not a finite number in `(0, 1]`.
    #[error("keep ratio {0} is not in (0, 1]")]
    InvalidKeepRatio(f32),
    /// `QuantMode::Bits(b)` or `QuantMode::Coded(b)` with an unsupported `b`.
    #[error("unsupported quantization width {0} bits (supported: 2, 3, 4, 5, 6, 8)")]
    UnsupportedBits(u8),
    /// A mode name that [`QuantMode::from_str`] does not know.
    #[error("unknown quantization mode {0:?} (expected q2..q8, q2ac..q8ac, f16 or f32)")]
    InvalidModeName(String),
    /// `data.len()` differs from the product of `shape`.
    #[error("shape has {expected} elements but {actual} values were given")]
    ShapeMismatch {
        /// Product of the shape.
        expected: usize,
        /// `data.len()`.
        actual: usize,
    },
    /// The product of the shape, or a derived size, overflows `usize`.
    #[error("tensor size overflows")]
    SizeOverflow,
    /// A dimension is zero (empty tensors are not supported).
    #[error("zero-sized dimension in shape")]
    ZeroDimension,
    /// The rank exceeds what the format can store (255).
    #[error("rank {0} exceeds the format maximum of 255")]
    RankTooLargeForFormat(usize),
    /// A dimension, or the kept-position count, does not fit the format's `u32` fields.
    #[error("dimension or count {0} does not fit in u32")]
    DimensionTooLarge(usize),
    /// The input contains NaN or an infinity.
    #[error("non-finite input value at index {index}")]
    NonFiniteInput {
        /// Row-major index of the first offending value.
        index: usize,
    },

    // ---- decoder ----
    /// The input ended before a field of the format.
    #[error("truncated input: {field} needs {needed} bytes, {available} available")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The input does not start with [`MAGIC`].
    #[error("bad magic bytes (not a jmdc feature tensor)")]
    BadMagic,
    /// The format version is not [`FORMAT_VERSION`].
    #[error("unsupported codec format version {0}")]
    UnsupportedVersion(u8),
    /// The mode byte is neither a supported bit width nor a float mode.
    #[error("unsupported mode byte {0}")]
    UnsupportedMode(u8),
    /// The reserved header byte is not zero.
    #[error("reserved header byte is {0}, expected 0")]
    ReservedNonZero(u8),
    /// The rank exceeds [`DecodeLimits::max_rank`].
    #[error("rank {rank} exceeds the limit {limit}")]
    RankLimit {
        /// Rank in the header.
        rank: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The element count exceeds [`DecodeLimits::max_elements`] (or overflows).
    #[error("element count {elements:?} exceeds the limit {limit}")]
    ElementLimit {
        /// Product of the shape, `None` when it overflows `usize`.
        elements: Option<usize>,
        /// The configured limit.
        limit: usize,
    },
    /// The kept-position count is not what ρ and the shape imply.
    #[error("header says {found} kept positions, shape and keep ratio imply {expected}")]
    KeptCountMismatch {
        /// Implied by shape and ρ.
        expected: usize,
        /// Found in the header.
        found: usize,
    },
    /// The number of set mask bits differs from the kept-position count.
    #[error("mask has {found} set bits, header says {expected}")]
    MaskPopcountMismatch {
        /// Kept-position count from the header.
        expected: usize,
        /// Set bits in the mask.
        found: usize,
    },
    /// Unused bits at the end of the mask or of a bit-packed payload are not zero.
    #[error("non-zero padding bits in the {0}")]
    NonZeroPadding(&'static str),
    /// The bytes after the header/mask are not exactly the payload size the header implies.
    #[error("payload is {actual} bytes, expected exactly {expected}")]
    PayloadLength {
        /// Size implied by the header.
        expected: usize,
        /// Bytes actually present.
        actual: usize,
    },
    /// `min`/`scale` in the header are non-finite, `scale` is negative, or they are non-zero in a
    /// float mode.
    #[error("invalid quantization parameters min={min} scale={scale}")]
    InvalidQuantParams {
        /// `min` from the header.
        min: f32,
        /// `scale` from the header.
        scale: f32,
    },
    /// An entropy-coded payload is not what the encoder writes (see `docs/codec.md`).
    #[error("invalid entropy-coded payload: {0}")]
    EntropyStream(&'static str),
    /// An F16/F32 payload contains NaN or an infinity.
    #[error("non-finite value in payload at kept value {index}")]
    NonFiniteValue {
        /// Index among the kept values.
        index: usize,
    },
}

/// `⌈ρ·H·W⌉` clamped to `[1, H·W]` (0 when `H·W == 0`, `usize::MAX` when `H·W` overflows): the
/// number of spatial positions kept.
///
/// The ceiling is taken of `ρ·H·W·(1 − 2⁻²³)` computed in `f64`, which absorbs the representation
/// error of an `f32` ρ (so `ρ = 0.1` on a 10×10 map keeps exactly 10 positions, not 11). `ρ` values
/// that are not finite or not positive are treated as the smallest ratio (one position); values above
/// 1 as 1.
pub fn kept_positions(h: usize, w: usize, keep_ratio: f32) -> usize {
    let Some(hw) = h.checked_mul(w) else {
        return usize::MAX;
    };
    if hw == 0 {
        return 0;
    }
    if keep_ratio.is_nan() || keep_ratio <= 0.0 {
        return 1;
    }
    if keep_ratio >= 1.0 {
        return hw;
    }
    let exact = f64::from(keep_ratio) * hw as f64 * (1.0 - f64::from(f32::EPSILON));
    let k = exact.ceil();
    // `k` is at most hw (keep_ratio < 1) and at least 0; the cast saturates anyway.
    (k as usize).clamp(1, hw)
}

/// The exact byte size [`encode`] produces for a tensor of this shape with these parameters
/// (independent of the values), or for [`QuantMode::Coded`] the upper bound: the size of the same
/// tensor with fixed-width codes (the encoder never writes more). See `docs/codec.md` for the
/// formula.
pub fn encoded_len(shape: &[usize], params: &CodecParams) -> Result<usize, CodecError> {
    params.validate()?;
    let layout = Layout::new(shape, params.keep_ratio, params.mode)?;
    Ok(layout.total_len)
}

/// Sizes derived from the shape and parameters; shared by encoder, decoder and [`encoded_len`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Product of the shape.
    pub elements: usize,
    /// `Some((C, H·W))` for rank-3 tensors.
    pub spatial: Option<(usize, usize)>,
    /// Kept positions (rank 3) or elements (other ranks); the header's `kept` field.
    pub kept: usize,
    /// Number of kept values (`C·kept` for rank 3, `elements` otherwise).
    pub kept_values: usize,
    /// Mask bytes (0 when no mask is sent).
    pub mask_len: usize,
    /// Payload bytes.
    pub payload_len: usize,
    /// Header bytes.
    pub header_len: usize,
    /// Whole encoding.
    pub total_len: usize,
}

/// Fixed header bytes before the dimensions.
pub(crate) const HEADER_FIXED: usize = 8;
/// Header bytes after the dimensions (ρ, kept, min, scale).
pub(crate) const HEADER_TAIL: usize = 16;

impl Layout {
    /// Computes every size, failing on overflow or on values the `u32` fields cannot hold.
    pub(crate) fn new(
        shape: &[usize],
        keep_ratio: f32,
        mode: QuantMode,
    ) -> Result<Self, CodecError> {
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

    /// Like [`Layout::new`] with the element count already known and the dimensions known to fit.
    pub(crate) fn from_parts(
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

/// Product of the dimensions, `None` on overflow (1 for rank 0).
pub(crate) fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kept_positions_basic() {
        assert_eq!(kept_positions(10, 10, 0.1), 10);
        assert_eq!(kept_positions(10, 10, 0.25), 25);
        assert_eq!(kept_positions(10, 10, 0.251), 26);
        assert_eq!(kept_positions(10, 10, 1.0), 100);
        assert_eq!(kept_positions(10, 10, 1e-9), 1);
        assert_eq!(kept_positions(3, 3, 0.5), 5);
        assert_eq!(kept_positions(0, 7, 0.5), 0);
        assert_eq!(kept_positions(13, 13, 0.75), 127); // 126.75 -> 127
        assert_eq!(kept_positions(4, 4, f32::NAN), 1);
        assert_eq!(kept_positions(4, 4, 2.0), 16);
        for k in [0.05f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] {
            // Decimal ratios on 100 and 1000 positions give the decimal answer.
            assert_eq!(
                kept_positions(10, 10, k),
                (f64::from(k) * 100.0).round() as usize
            );
            assert_eq!(
                kept_positions(10, 100, k),
                (f64::from(k) * 1000.0).round() as usize
            );
        }
    }

    #[test]
    fn params_validate() {
        let ok = CodecParams {
            keep_ratio: 0.5,
            mode: QuantMode::Bits(4),
        };
        assert!(ok.validate().is_ok());
        for bad in [0.0, -0.1, 1.0001, f32::NAN, f32::INFINITY] {
            let p = CodecParams {
                keep_ratio: bad,
                ..ok
            };
            assert!(matches!(p.validate(), Err(CodecError::InvalidKeepRatio(_))));
        }
        for b in [0u8, 1, 7, 9, 16, 32] {
            let p = CodecParams {
                mode: QuantMode::Bits(b),
                ..ok
            };
            assert_eq!(p.validate(), Err(CodecError::UnsupportedBits(b)));
        }
        assert!(CodecParams::LOSSLESS.validate().is_ok());
    }

    #[test]
    fn mode_names() {
        for m in QuantMode::ALL {
            assert_eq!(m.to_string().parse::<QuantMode>().unwrap(), m);
            assert_eq!(QuantMode::from_byte(m.to_byte()).unwrap(), m);
        }
        assert_eq!("Q4".parse::<QuantMode>().unwrap(), QuantMode::Bits(4));
        assert!("q7".parse::<QuantMode>().is_err());
        assert!("int8".parse::<QuantMode>().is_err());
        assert!(QuantMode::from_byte(7).is_err());
    }

    #[test]
    fn encoded_len_formula() {
        let p = CodecParams {
            keep_ratio: 0.5,
            mode: QuantMode::Bits(4),
        };
        // 36-byte header, 64-bit mask = 8 bytes, 32 kept × 16 channels × 4 bits = 256 bytes.
        assert_eq!(encoded_len(&[16, 8, 8], &p).unwrap(), 36 + 8 + 256);
        // ρ=1: no mask.
        let p1 = CodecParams {
            keep_ratio: 1.0,
            mode: QuantMode::Bits(3),
        };
        assert_eq!(
            encoded_len(&[2, 3, 3], &p1).unwrap(),
            36 + (2 * 9 * 3usize).div_ceil(8)
        );
        // rank 1: ρ ignored.
        let pf = CodecParams {
            keep_ratio: 0.1,
            mode: QuantMode::F16,
        };
        assert_eq!(encoded_len(&[100], &pf).unwrap(), 28 + 200);
        assert_eq!(encoded_len(&[], &pf).unwrap(), 24 + 2);
        assert!(encoded_len(&[usize::MAX, 2], &pf).is_err());
        assert_eq!(encoded_len(&[3, 0, 2], &pf), Err(CodecError::ZeroDimension));
        assert_eq!(
            encoded_len(&[1 << 30, 1 << 30, 1 << 30], &pf),
            Err(CodecError::SizeOverflow)
        );
        assert!(matches!(
            encoded_len(&[1 << 20, 1 << 20, 1 << 20], &pf),
            Err(CodecError::DimensionTooLarge(_))
        ));
    }
}
