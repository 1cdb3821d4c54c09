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

/// Reads fixed-width codes from a byte slice, LSB-first. Reads past the end yield zero bits; callers
/// validate the slice length beforehand.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
}

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
