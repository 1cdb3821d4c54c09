//! The entropy stage of [`QuantMode::Coded`](super::QuantMode::Coded): an adaptive binary range
//! coder over the `b`-bit quantization codes.
//!
//! Why this coder (measurements in `docs/codec.md` §8–§10): the codes of a ReLU split tensor are
//! mostly zero and cluster (a zero is usually next to zeros, in its own channel and at the same
//! position of the neighbouring channel). An order-0 coder with a static table (rANS) would need the
//! table in the package or on the wire; LZ-style compressors (zlib, lzma, zstd) find few repeated
//! strings in packed codes. This coder needs no table at all: every code is sent MSB first through
//! a binary tree of adaptive probabilities, one tree per *context*, and the context is the class
//! (zero / small / large) of two already-coded neighbours — the previous code of the same channel
//! and the code at the same kept position of the previous channel. The probabilities start at ½
//! and adapt with a rate that starts at ½ and settles at 2⁻⁵, which approximates counting (the
//! Krichevsky–Trofimov estimator) on short tensors and tracks drift on long ones.
//!
//! The range coder is the classic carry-less design of LZMA (32-bit range, 64-bit low with a
//! carry byte), with two byte savings: the first output byte, always zero, is not written, and the
//! final value is the one in the last interval with the most trailing zero bytes, which are then
//! dropped (the decoder reads missing bytes as zeros).
//!
//! Pure, no allocation beyond the probability table (`O(3²·2^b)`), never panics on hostile input:
//! any byte string decodes to *some* codes; what the decoder can check — that it ended where the
//! stream ends and that the stream is in canonical form — it checks.

use super::CodecError;

/// Probability resolution: probabilities are `p / 2¹⁶` that the next bit is 0.
const PROB_BITS: u32 = 16;
/// A fresh probability: ½.
const PROB_INIT: u16 = 1 << (PROB_BITS - 1);
/// The range is renormalised (shifted by a byte) whenever it drops below this.
const TOP: u32 = 1 << 24;
/// The slowest adaptation rate is `2^-RATE_LIMIT` (5 measured best of 4–7 on AlexNet split tensors;
/// 7 costs 0.6 % more bytes, 4 0.2 %).
const RATE_LIMIT: u32 = 5;
/// Context classes per neighbour (zero, small, large).
const CLASSES: usize = 3;
/// Contexts: one per (class of the previous code, class of the code in the previous channel).
const CONTEXTS: usize = CLASSES * CLASSES;

/// One adaptive binary probability with its observation count (which sets the adaptation rate).
#[derive(Debug, Clone, Copy)]
struct Bit {
    /// Probability that the bit is 0, times 2¹⁶; always in `1..=65535` (so neither sub-interval
    /// is ever empty).
    p0: u16,
    /// Observations so far, saturating.
    seen: u8,
}

impl Bit {
    const FRESH: Bit = Bit {
        p0: PROB_INIT,
        seen: 0,
    };

    /// Moves the probability towards the observed bit by `2^-shift`, where
    /// `shift ≈ log₂(seen + 2)` (rounded), clamped to `1..=RATE_LIMIT`.
    #[inline(always)]
    fn update(&mut self, bit: u32) {
        let shift = u32::from(RATE_SHIFT[usize::from(self.seen)]);
        if bit == 0 {
            self.p0 += (u16::MAX - self.p0) >> shift;
        } else {
            self.p0 -= self.p0 >> shift;
        }
        self.seen = self.seen.saturating_add(1);
    }
}

/// `round(log₂(seen + 2))` clamped to `1..=RATE_LIMIT` (`log₂(x·√2)` floored, with `√2 ≈ 181/128`),
/// for every `seen`.
const RATE_SHIFT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut seen = 0;
    while seen < 256 {
        let x = (seen as u32 + 2) * 181 / 128;
        let mut shift = x.ilog2();
        if shift < 1 {
            shift = 1;
        }
        if shift > RATE_LIMIT {
            shift = RATE_LIMIT;
        }
        t[seen] = shift as u8;
        seen += 1;
    }
    t
};

/// The class of a code for context selection: 0 for zero, 1 for small (below `2^max(1, b−3)`),
/// 2 otherwise.
#[inline(always)]
fn class(code: u8, small_below: u8) -> usize {
    if code == 0 {
        0
    } else if code < small_below {
        1
    } else {
        2
    }
}

/// The adaptive model shared by encoder and decoder: `CONTEXTS` binary trees of `2^bits` nodes.
struct Model {
    bits: u32,
    nodes: Vec<Bit>,
    /// Offset of the tree for a left neighbour with this code (its class × `CLASSES` trees).
    left_off: [u32; 256],
    /// Offset added for an upper neighbour with this code (its class in trees).
    up_off: [u32; 256],
}

impl Model {
    fn new(bits: u8) -> Model {
        let bits = u32::from(bits.clamp(1, 8));
        let small_below = 1u8 << (bits.saturating_sub(3)).max(1);
        let mut left_off = [0u32; 256];
        let mut up_off = [0u32; 256];
        for code in 0..=255u8 {
            let c = class(code, small_below) as u32;
            left_off[usize::from(code)] = (c * CLASSES as u32) << bits;
            up_off[usize::from(code)] = c << bits;
        }
        Model {
            bits,
            nodes: vec![Bit::FRESH; CONTEXTS << bits],
            left_off,
            up_off,
        }
    }

    /// The tree for a code whose neighbours are `left` (previous code in the same row) and `up`
    /// (same index, previous row): `2^bits` nodes, node 1 the root.
    #[inline(always)]
    fn tree(&mut self, left: u8, up: u8) -> &mut [Bit] {
        let start = (self.left_off[usize::from(left)] + self.up_off[usize::from(up)]) as usize;
        let len = 1usize << self.bits;
        // Offsets are below `CONTEXTS << bits` by construction; the empty fallback is never taken.
        self.nodes.get_mut(start..start + len).unwrap_or_default()
    }
}

/// Visits codes `0..n` laid out in rows of `row` codes with their neighbours: the previous code of
/// the row (at a row start, the code above) and the code above (in the first row, the previous
/// code; the very first code has neighbours 0, 0). `get(j)` reads code `j < i` (already known).
#[inline(always)]
fn for_each_with_neighbours(
    n: usize,
    row: usize,
    mut get: impl FnMut(usize) -> u8,
    mut f: impl FnMut(usize, u8, u8),
) {
    let mut col = 0usize;
    for i in 0..n {
        let (left, up) = match (col != 0, i >= row) {
            (true, true) => (get(i - 1), get(i - row)),
            (true, false) => {
                let l = get(i - 1);
                (l, l)
            }
            (false, true) => {
                let u = get(i - row);
                (u, u)
            }
            (false, false) => (0, 0),
        };
        f(i, left, up);
        col += 1;
        if col == row {
            col = 0;
        }
    }
}

/// Appends the entropy-coded form of `codes` (each `< 2^bits`, `bits ∈ 1..=8`; laid out in rows of
/// `row ≥ 1` codes, e.g. one row per channel) to `out`.
pub(crate) fn encode_codes(codes: &[u8], bits: u8, row: usize, out: &mut Vec<u8>) {
    let row = row.max(1);
    let mut model = Model::new(bits);
    let mut rc = RangeEncoder::new(out);
    let top = model.bits;
    let get = |j: usize| codes.get(j).copied().unwrap_or(0);
    for_each_with_neighbours(codes.len(), row, get, |i, left, up| {
        let code = u32::from(get(i));
        let tree = model.tree(left, up);
        let mut node = 1usize;
        for k in (0..top).rev() {
            let bit = (code >> k) & 1;
            if let Some(p) = tree.get_mut(node) {
                rc.encode(p, bit);
            }
            node = (node << 1) | bit as usize;
        }
    });
    rc.finish();
}

/// Decodes exactly `codes.len()` codes of `bits` bits (rows of `row`) from `bytes`, the whole
/// entropy-coded payload. Fails when the stream has bytes the decoder did not need, ends in a zero
/// byte (the encoder never writes one there) or leaves the coder in a state no encoder produces.
pub(crate) fn decode_codes(
    bytes: &[u8],
    bits: u8,
    row: usize,
    codes: &mut [u8],
) -> Result<(), CodecError> {
    if bytes.last() == Some(&0) {
        return Err(CodecError::EntropyStream("ends in a zero byte"));
    }
    let row = row.max(1);
    let mut model = Model::new(bits);
    let mut rc = RangeDecoder::new(bytes);
    let top = model.bits;
    let n = codes.len();
    let cell = std::cell::Cell::from_mut(codes).as_slice_of_cells();
    let get = |j: usize| cell.get(j).map_or(0, std::cell::Cell::get);
    for_each_with_neighbours(n, row, get, |i, left, up| {
        let tree = model.tree(left, up);
        let mut node = 1usize;
        for _ in 0..top {
            let bit = match tree.get_mut(node) {
                Some(p) => rc.decode(p),
                None => 0,
            };
            node = (node << 1) | bit as usize;
        }
        // `node` is `2^bits + code` with `bits ≤ 8`.
        if let Some(c) = cell.get(i) {
            c.set((node - (1usize << top)) as u8);
        }
    });
    rc.check_end()
}

/// Reads the `codes.len()` fixed-width codes of a packed payload (LSB-first, see `bits.rs`).
pub(crate) fn unpack_fixed(payload: &[u8], bits: u8, codes: &mut [u8]) {
    let b = usize::from(bits);
    let mask = (1u16 << bits) - 1;
    for (i, c) in codes.iter_mut().enumerate() {
        let at = i * b;
        let (byte, off) = (at / 8, at % 8);
        let lo = u16::from(payload.get(byte).copied().unwrap_or(0));
        let hi = u16::from(payload.get(byte + 1).copied().unwrap_or(0));
        *c = ((((hi << 8) | lo) >> off) & mask) as u8;
    }
}

/// Packs codes (each `< 2^bits`) into a zeroed payload of `⌈n·bits/8⌉` bytes, LSB-first.
pub(crate) fn pack_fixed(codes: &[u8], bits: u8, payload: &mut [u8]) {
    let b = usize::from(bits);
    for (i, &c) in codes.iter().enumerate() {
        let at = i * b;
        let (byte, off) = (at / 8, at % 8);
        let wide = u16::from(c) << off;
        if let Some(d) = payload.get_mut(byte) {
            *d |= wide as u8;
        }
        if off + b > 8 {
            if let Some(d) = payload.get_mut(byte + 1) {
                *d |= (wide >> 8) as u8;
            }
        }
    }
}

/// LZMA-style range encoder (see the module doc).
struct RangeEncoder<'a> {
    out: &'a mut Vec<u8>,
    /// Length of `out` before this encoder wrote anything.
    start: usize,
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    /// The first byte shifted out is always 0 and is not written.
    skip_first: bool,
}

impl<'a> RangeEncoder<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        RangeEncoder {
            out,
            start,
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            skip_first: true,
        }
    }

    #[inline(always)]
    fn encode(&mut self, p: &mut Bit, bit: u32) {
        let bound = (self.range >> PROB_BITS) * u32::from(p.p0);
        if bit == 0 {
            self.range = bound;
        } else {
            self.low += u64::from(bound);
            self.range -= bound;
        }
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    #[inline(always)]
    fn emit(&mut self, byte: u8) {
        if self.skip_first {
            debug_assert_eq!(byte, 0, "the first byte of a range-coded stream is zero");
            self.skip_first = false;
        } else {
            self.out.push(byte);
        }
    }

    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low > 0xFFFF_FFFF {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.emit(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    /// Picks the value of the final interval `[low, low + range)` with the most trailing zero
    /// bits, writes it and drops the trailing zero bytes.
    fn finish(mut self) {
        let end = self.low + u64::from(self.range); // exclusive
        for k in (0..=32u32).rev() {
            let mask = (1u64 << k) - 1;
            let v = (self.low + mask) & !mask;
            if v < end {
                self.low = v;
                break;
            }
        }
        for _ in 0..5 {
            self.shift_low();
        }
        while self.out.len() > self.start && self.out.last() == Some(&0) {
            self.out.pop();
        }
    }
}

/// The matching decoder; bytes past the end of the stream read as zeros.
struct RangeDecoder<'a> {
    bytes: &'a [u8],
    /// Bytes consumed, counting the virtual zeros past the end.
    pos: usize,
    code: u32,
    range: u32,
}

impl<'a> RangeDecoder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut d = RangeDecoder {
            bytes,
            pos: 0,
            code: 0,
            range: u32::MAX,
        };
        for _ in 0..4 {
            d.code = (d.code << 8) | u32::from(d.next_byte());
        }
        d
    }

    #[inline(always)]
    fn next_byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    #[inline(always)]
    fn decode(&mut self, p: &mut Bit) -> u32 {
        let bound = (self.range >> PROB_BITS) * u32::from(p.p0);
        let bit = if self.code < bound {
            self.range = bound;
            0
        } else {
            // A valid stream keeps `code < range`; a corrupt one may not, and must not underflow.
            self.code = self.code.wrapping_sub(bound);
            self.range -= bound;
            1
        };
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte());
        }
        bit
    }

    fn check_end(&self) -> Result<(), CodecError> {
        if self.code >= self.range {
            return Err(CodecError::EntropyStream("the coder state is out of range"));
        }
        if self.pos < self.bytes.len() {
            return Err(CodecError::EntropyStream(
                "bytes left over after the last code",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn roundtrip(codes: &[u8], bits: u8, row: usize) -> usize {
        let mut out = Vec::new();
        encode_codes(codes, bits, row, &mut out);
        let mut back = vec![0u8; codes.len()];
        decode_codes(&out, bits, row, &mut back).unwrap();
        assert_eq!(back, codes, "bits {bits} row {row}");
        out.len()
    }

    #[test]
    fn roundtrips_random_and_skewed_codes() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for bits in [1u8, 2, 3, 4, 5, 6, 8] {
            for n in [0usize, 1, 2, 7, 100, 1000, 5000] {
                for row in [1usize, 5, 16, 169] {
                    let uniform: Vec<u8> = (0..n)
                        .map(|_| (xorshift(&mut s) as u8) & ((1u16 << bits) - 1) as u8)
                        .collect();
                    roundtrip(&uniform, bits, row);
                    // Mostly zeros, as after a ReLU.
                    let sparse: Vec<u8> = (0..n)
                        .map(|_| {
                            let r = xorshift(&mut s);
                            if r % 10 < 8 {
                                0
                            } else {
                                ((r >> 8) as u8) & ((1u16 << bits) - 1) as u8
                            }
                        })
                        .collect();
                    roundtrip(&sparse, bits, row);
                }
            }
        }
    }

    #[test]
    fn compresses_what_is_predictable() {
        // All zeros: a few bytes whatever the length.
        assert!(roundtrip(&vec![0u8; 10_000], 4, 100) <= 8);
        // 80 % zeros at 2 bits: entropy ≈ 0.8·0.32 + 0.2·(2.32 + 1.58) ≈ 1.04 bits per code.
        let mut s = 7u64;
        let codes: Vec<u8> = (0..8000)
            .map(|_| {
                let r = xorshift(&mut s);
                if r % 10 < 8 {
                    0
                } else {
                    1 + (r >> 8) as u8 % 3
                }
            })
            .collect();
        let len = roundtrip(&codes, 2, 100);
        let bits_per_code = len as f64 * 8.0 / 8000.0;
        assert!(bits_per_code < 1.10, "{bits_per_code} bits per code");
        // Uniform codes cost their width plus the model's learning, not more than 3 % over.
        let uniform: Vec<u8> = (0..8000).map(|_| xorshift(&mut s) as u8 & 15).collect();
        let len = roundtrip(&uniform, 4, 100);
        assert!(
            len <= 4000 * 103 / 100,
            "{len} bytes for 4000 fixed-width bytes"
        );
    }

    #[test]
    fn rejects_non_canonical_and_left_over_bytes() {
        let codes = [1u8, 0, 0, 3, 2, 0, 0, 0];
        let mut out = Vec::new();
        encode_codes(&codes, 2, 4, &mut out);
        let mut back = [0u8; 8];
        let mut padded = out.clone();
        padded.push(0);
        assert!(matches!(
            decode_codes(&padded, 2, 4, &mut back),
            Err(CodecError::EntropyStream(_))
        ));
        let mut extra = out.clone();
        extra.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(matches!(
            decode_codes(&extra, 2, 4, &mut back),
            Err(CodecError::EntropyStream(_))
        ));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut s = 99u64;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut s) as u8).collect();
            for bits in [2u8, 3, 8] {
                let mut codes = vec![0u8; 300];
                let _ = decode_codes(&bytes, bits, 17, &mut codes);
                assert!(codes.iter().all(|&c| u16::from(c) < 1u16 << bits));
            }
        }
    }
}
