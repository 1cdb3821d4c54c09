//! LSB-first bit packing: value `i` of width `b` occupies bits `i·b .. i·b+b` of the little-endian
//! bit stream, where bit `j` is bit `j % 8` (least significant first) of byte `j / 8`.

/// Appends fixed-width codes to a byte vector, LSB-first (reference implementation for tests; the
/// encoder packs groups of 8 codes directly).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    nbits: u32,
}

#[cfg(test)]
impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            nbits: 0,
        }
    }

    /// Appends the low `width` bits of `code` (`width ≤ 32`, `code < 2^width`).
    #[inline(always)]
    pub(crate) fn put(&mut self, code: u32, width: u32) {
        self.acc |= u64::from(code) << self.nbits;
        self.nbits += width;
        if self.nbits >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.nbits -= 32;
        }
    }

    /// Writes the remaining partial bytes (zero-padded).
    pub(crate) fn finish(self) {
        let bytes = self.nbits.div_ceil(8) as usize;
        let le = self.acc.to_le_bytes();
        self.out.extend_from_slice(&le[..bytes]);
    }
}

/// Reads fixed-width codes from a byte slice, LSB-first. Reads past the end yield zero bits
/// (reference implementation for tests; the decoder unpacks groups of 8 codes directly).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
}

#[cfg(test)]
impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            pos: 0,
            acc: 0,
            nbits: 0,
        }
    }

    /// Reads the next `width` bits (`1 ≤ width ≤ 32`).
    #[inline(always)]
    pub(crate) fn get(&mut self, width: u32) -> u32 {
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

/// Packs groups of 8 codes (each `< 2^B`) into `B` bytes each, LSB-first: code `i` of a group
/// occupies bits `i·B .. i·B+B` of the group's little-endian `B`-byte word. `codes.len()` is a
/// multiple of 8 and `dst.len() == codes.len() / 8 · B` (extra codes or bytes are ignored).
///
/// `B` is a constant so that every shift is one, and 2, 4 and 8 bits (whole codes per byte) are
/// plain byte loops the compiler vectorizes.
#[inline(always)]
pub(crate) fn pack_groups<const B: usize>(codes: &[u8], dst: &mut [u8]) {
    match B {
        8 => {
            for (d, &c) in dst.iter_mut().zip(codes) {
                *d = c;
            }
        }
        4 => {
            // Two codes as one little-endian u16 (contiguous loads the compiler vectorizes).
            for (d, c) in dst.iter_mut().zip(codes.as_chunks::<2>().0) {
                let v = u16::from_le_bytes(*c);
                *d = (v | (v >> 4)) as u8;
            }
        }
        2 => {
            for (d, c) in dst.iter_mut().zip(codes.as_chunks::<4>().0) {
                let v = u32::from_le_bytes(*c);
                *d = (v | (v >> 6) | (v >> 12) | (v >> 18)) as u8;
            }
        }
        _ => {
            // SWAR: merge neighbouring codes pairwise, 8 → 4 → 2 → 1 fields of B, 2B, 4B, 8B bits.
            const M8: u64 = 0x00ff_00ff_00ff_00ff;
            const M16: u64 = 0x0000_ffff_0000_ffff;
            for (d, g) in dst.chunks_exact_mut(B).zip(codes.as_chunks::<8>().0) {
                let w = u64::from_le_bytes(*g);
                let w = (w & M8) | (((w >> 8) & M8) << B);
                let w = (w & M16) | (((w >> 16) & M16) << (2 * B));
                let w = (w & 0xffff_ffff) | ((w >> 32) << (4 * B));
                d.copy_from_slice(&w.to_le_bytes()[..B]);
            }
        }
    }
}

/// The inverse of [`pack_groups`] through a lookup table: every `B` bytes of `src` give 8 values
/// `table[code]`. `out.len()` is a multiple of 8 and `src.len() == out.len() / 8 · B` (extra values
/// or bytes are ignored).
#[inline(always)]
pub(crate) fn unpack_groups<const B: usize>(src: &[u8], table: &[f32; 256], out: &mut [f32]) {
    match B {
        8 => {
            for (o, &c) in out.iter_mut().zip(src) {
                *o = table[usize::from(c)];
            }
        }
        4 => {
            for (o, &c) in out.as_chunks_mut::<2>().0.iter_mut().zip(src) {
                *o = [table[usize::from(c & 0x0f)], table[usize::from(c >> 4)]];
            }
        }
        2 => {
            for (o, &c) in out.as_chunks_mut::<4>().0.iter_mut().zip(src) {
                *o = [
                    table[usize::from(c & 3)],
                    table[usize::from((c >> 2) & 3)],
                    table[usize::from((c >> 4) & 3)],
                    table[usize::from(c >> 6)],
                ];
            }
        }
        _ => {
            let mask = (1u64 << B) - 1;
            for (o, s) in out.chunks_exact_mut(8).zip(src.chunks_exact(B)) {
                let mut word = [0u8; 8];
                word[..B].copy_from_slice(s);
                let w = u64::from_le_bytes(word);
                for (i, o) in o.iter_mut().enumerate() {
                    // Masked to < 2^B ≤ 256.
                    *o = table[((w >> (i * B)) & mask) as usize];
                }
            }
        }
    }
}

/// The codes of [`pack_groups`] back: every `B` bytes of `src` give 8 codes. `out.len()` is a
/// multiple of 8 and `src.len() == out.len() / 8 · B` (extra codes or bytes are ignored).
#[inline(always)]
pub(crate) fn unpack_codes<const B: usize>(src: &[u8], out: &mut [u8]) {
    match B {
        8 => {
            for (o, &c) in out.iter_mut().zip(src) {
                *o = c;
            }
        }
        4 => {
            for (o, &c) in out.as_chunks_mut::<2>().0.iter_mut().zip(src) {
                *o = [c & 0x0f, c >> 4];
            }
        }
        2 => {
            for (o, &c) in out.as_chunks_mut::<4>().0.iter_mut().zip(src) {
                *o = [c & 3, (c >> 2) & 3, (c >> 4) & 3, c >> 6];
            }
        }
        _ => {
            let mask = (1u64 << B) - 1;
            for (o, s) in out.chunks_exact_mut(8).zip(src.chunks_exact(B)) {
                let mut word = [0u8; 8];
                word[..B].copy_from_slice(s);
                let w = u64::from_le_bytes(word);
                for (i, o) in o.iter_mut().enumerate() {
                    *o = ((w >> (i * B)) & mask) as u8;
                }
            }
        }
    }
}

/// True when the bits of `bytes` from bit `used_bits` on are all zero (`used_bits ≤ 8·len`).
pub(crate) fn padding_is_zero(bytes: &[u8], used_bits: usize) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_widths() {
        for width in 1..=32u32 {
            let max = if width == 32 {
                u32::MAX
            } else {
                (1u32 << width) - 1
            };
            let codes: Vec<u32> = (0..103u32)
                .map(|i| i.wrapping_mul(2_654_435_761) & max)
                .collect();
            let mut out = Vec::new();
            let mut w = BitWriter::new(&mut out);
            for &c in &codes {
                w.put(c, width);
            }
            w.finish();
            assert_eq!(out.len(), (codes.len() * width as usize).div_ceil(8));
            assert!(padding_is_zero(&out, codes.len() * width as usize));
            let mut r = BitReader::new(&out);
            for &c in &codes {
                assert_eq!(r.get(width), c, "width {width}");
            }
        }
    }

    /// The group packers against the bit-at-a-time reference, every width, full groups.
    #[test]
    fn groups_match_reference() {
        fn check<const B: usize>() {
            let codes: Vec<u8> = (0..8 * 37u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8 & ((1u16 << B) - 1) as u8)
                .collect();
            let mut reference = Vec::new();
            let mut w = BitWriter::new(&mut reference);
            for &c in &codes {
                w.put(u32::from(c), B as u32);
            }
            w.finish();
            let mut packed = vec![0u8; codes.len() / 8 * B];
            pack_groups::<B>(&codes, &mut packed);
            assert_eq!(packed, reference, "{B} bits");
            let table: [f32; 256] = std::array::from_fn(|i| i as f32);
            let mut values = vec![0.0f32; codes.len()];
            unpack_groups::<B>(&packed, &table, &mut values);
            let back: Vec<u8> = values.iter().map(|&v| v as u8).collect();
            assert_eq!(back, codes, "{B} bits");
            let mut back = vec![0u8; codes.len()];
            unpack_codes::<B>(&packed, &mut back);
            assert_eq!(back, codes, "{B} bits");
        }
        check::<2>();
        check::<3>();
        check::<4>();
        check::<5>();
        check::<6>();
        check::<8>();
    }

    #[test]
    fn lsb_first_layout() {
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        w.put(0b01, 2);
        w.put(0b11, 2);
        w.put(0b10, 2);
        w.finish();
        assert_eq!(out, vec![0b0010_1101]);
    }

    #[test]
    fn padding_check() {
        assert!(padding_is_zero(&[0xff, 0x0f], 12));
        assert!(!padding_is_zero(&[0xff, 0x1f], 12));
        assert!(padding_is_zero(&[0xff], 8));
        assert!(!padding_is_zero(&[0xff, 0x01], 8));
        assert!(padding_is_zero(&[], 0));
    }
}
