//! Byte-format freeze for the codec's performance work (issue 14, part 4).
//!
//! * [`golden_hash`]: a fixed, seeded set of tensors (ranks 0–4, many shapes, keep ratios 1.0, 0.5
//!   and 0.1, every mode; ReLU-like, signed, constant, near ±`f32::MAX`, subnormal, integer grids
//!   that put values exactly on rounding ties, non-finite inputs) is encoded and decoded, and the
//!   SHA-256 of every output byte and every decoded `f32` bit pattern must equal the constant
//!   recorded with the implementation before the optimisation (commit `4fd09e7`).
//! * [`matches_baseline`]: random tensors, parameters and mutated encodings give the same bytes,
//!   the same decoded bits and the same errors as that frozen implementation, which lives in
//!   `core/proto/benches/codec/baseline.rs` (shared with the side-by-side benchmark).
#![allow(clippy::unwrap_used)]

use sha2::{Digest, Sha256};

use super::{decode, encode, CodecParams, DecodeLimits, Encoder, QuantMode};

/// What `baseline.rs` imports.
mod api {
    pub(super) use crate::codec::{
        kept_positions, CodecError, CodecParams, DecodeLimits, Decoded, QuantMode, FORMAT_VERSION,
        MAGIC,
    };
}

#[path = "../../benches/codec/baseline.rs"]
mod baseline;

/// SHA-256 of [`golden_stream`] computed with the implementation of commit `4fd09e7`.
const GOLDEN_SHA256: &str = "0121712ae077e7f4915e530c71f7e3d51d48ad818a9bf716eee4fe9842777ddf";

/// splitmix64: a tiny seeded generator whose sequence cannot change under us.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Roughly normal (sum of 4 uniforms, centred, unit-ish variance).
    fn normal(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7
    }
}

const GENERATORS: usize = 15;

/// Value generator `g` for `n` values.
fn values(g: usize, n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|i| match g {
            // ReLU-like: about half exact zeros, the rest positive.
            0 => rng.normal().max(0.0) * 3.0,
            // Signed, random magnitude per tensor is emulated by index-dependent decades.
            1 => rng.normal() * 10f32.powi((i % 7) as i32 - 3),
            2 => 0.0,
            3 => -3.25,
            // Near ±f32::MAX.
            4 => match rng.below(4) {
                0 => f32::MAX,
                1 => -f32::MAX,
                _ => (rng.unit() * 2.0 - 1.0) * f32::MAX,
            },
            // Subnormals of both signs.
            5 => {
                let bits = (rng.next() as u32) & 0x807f_ffff;
                f32::from_bits(bits)
            }
            // Subnormals mixed with tiny normals and zeros.
            6 => match rng.below(3) {
                0 => f32::from_bits((rng.next() as u32) & 0x007f_ffff),
                1 => f32::MIN_POSITIVE * (1.0 + rng.unit()),
                _ => 0.0,
            },
            // Integer grid 0..=30: with 4 bits scale = 2 and every odd value is an exact tie.
            7 => rng.below(31) as f32,
            // Integer grid 0..=510: ties at 8 bits.
            8 => rng.below(511) as f32,
            // Half-integer grid (ties at other widths), negative offset.
            9 => rng.below(64) as f32 * 0.5 - 7.0,
            // Few distinct values: many importance ties.
            10 => [0.0f32, 1.0, -1.0][rng.below(3) as usize],
            // Any finite bit pattern.
            11 => loop {
                let x = f32::from_bits(rng.next() as u32);
                if x.is_finite() {
                    break x;
                }
            },
            // A huge range that overflows f32 when subtracted: [-f32::MAX, 2^127].
            12 => {
                if i % 2 == 0 {
                    -f32::MAX
                } else {
                    rng.unit() * 1.7e38
                }
            }
            // Large but not extreme, positive offset (min far from 0).
            13 => 1.0e6 + rng.unit() * 1.0e3,
            // Random data; a NaN or infinity is planted below.
            _ => rng.normal(),
        })
        .collect()
}

const SHAPES: &[&[usize]] = &[
    &[],
    &[1],
    &[7],
    &[13],
    &[1000],
    &[3, 5],
    &[2, 3, 4, 5],
    &[1, 1, 1],
    &[1, 3, 3],
    &[3, 5, 7],
    &[16, 8, 8],
    &[64, 5, 5],
    &[5, 13, 13],
    &[2, 1, 100],
    &[7, 9, 1],
    &[32, 28, 28],
];

const KEEPS: [f32; 3] = [1.0, 0.5, 0.1];

/// Every case's encoding (or error) and decoded bits, in a fixed order, fed to `sink`; from the
/// frozen implementation when `frozen` is true.
fn golden_stream(frozen: bool, mut sink: impl FnMut(&[u8])) {
    let mut rng = Rng(0x6a6d_6463_636f_6465);
    let mut enc = Encoder::new();
    let mut base_enc = baseline::Encoder::new();
    let mut out = Vec::new();
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        for g in 0..GENERATORS {
            let mut data = values(g, n, &mut rng);
            if g == GENERATORS - 1 {
                let at = rng.below(n as u64) as usize;
                data[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][at % 3];
            }
            for keep_ratio in KEEPS {
                for mode in QuantMode::ALL {
                    let p = CodecParams { keep_ratio, mode };
                    let tag = format!("{shape:?} g{g} rho{keep_ratio} {mode}");
                    sink(tag.as_bytes());
                    let r = if frozen {
                        base_enc.encode_into(&data, shape, &p, &mut out)
                    } else {
                        let r = enc.encode_into(&data, shape, &p, &mut out);
                        assert_eq!(r.clone().map(|()| out.clone()), encode(&data, shape, &p));
                        r
                    };
                    match r {
                        Err(e) => sink(format!("encode error {e:?}").as_bytes()),
                        Ok(()) => {
                            sink(&(out.len() as u64).to_le_bytes());
                            sink(&out);
                            let limits = DecodeLimits::default();
                            let d = if frozen {
                                baseline::decode(&out, &limits)
                            } else {
                                decode(&out, &limits)
                            };
                            match d {
                                Err(e) => sink(format!("decode error {e:?}").as_bytes()),
                                Ok(d) => {
                                    assert_eq!(&d.shape[..], *shape);
                                    for x in &d.data {
                                        sink(&x.to_bits().to_le_bytes());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn stream_hash(frozen: bool) -> String {
    let mut h = Sha256::new();
    let mut records = 0usize;
    golden_stream(frozen, |b| {
        records += 1;
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    });
    assert!(records > 10_000);
    hex::encode(h.finalize())
}

#[test]
fn golden_hash() {
    // The frozen copy still reproduces the recorded hash (so the generator did not change) ...
    assert_eq!(
        stream_hash(true),
        GOLDEN_SHA256,
        "the test's generator changed"
    );
    // ... and so does the library.
    assert_eq!(
        stream_hash(false),
        GOLDEN_SHA256,
        "the codec's bytes or decoded values changed"
    );
}

/// Random shapes, values, parameters and byte mutations: the optimised codec and the frozen one
/// agree on every output byte, every decoded bit and every error.
#[test]
fn matches_baseline() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let limits = DecodeLimits::default();
    let mut enc = Encoder::new();
    let mut base_enc = baseline::Encoder::new();
    let mut out = Vec::new();
    let mut base_out = Vec::new();
    // JMDC_CODEC_DIFF_ITERS=1000000 for a long run.
    let iterations = std::env::var("JMDC_CODEC_DIFF_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 3000 } else { 20_000 });
    for _ in 0..iterations {
        let rank = rng.below(5) as usize;
        let shape: Vec<usize> = (0..rank)
            .map(|d| {
                if rank == 3 && d == 0 {
                    1 + rng.below(40) as usize
                } else {
                    1 + rng.below(if rank == 3 { 20 } else { 9 }) as usize
                }
            })
            .collect();
        let n: usize = shape.iter().product();
        let g = rng.below(GENERATORS as u64) as usize;
        let mut data = values(g, n, &mut rng);
        if g == GENERATORS - 1 && rng.below(2) == 0 {
            let at = rng.below(n as u64) as usize;
            data[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][at % 3];
        }
        let keep_ratio = match rng.below(4) {
            0 => 1.0,
            1 => 0.5,
            _ => rng.unit().max(1e-6),
        };
        let mode = QuantMode::ALL[rng.below(8) as usize];
        let p = CodecParams { keep_ratio, mode };
        let r = enc.encode_into(&data, &shape, &p, &mut out);
        let br = base_enc.encode_into(&data, &shape, &p, &mut base_out);
        assert_eq!(r, br, "{shape:?} g{g} {p:?}");
        assert_eq!(out, base_out, "{shape:?} g{g} {p:?}");
        if r.is_err() {
            continue;
        }
        // The clean encoding and a few mutations of it.
        for m in 0..4 {
            let mut bytes = out.clone();
            if m > 0 {
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] ^= 1 << rng.below(8);
                    }
                    1 => {
                        let cut = rng.below(bytes.len() as u64 + 1) as usize;
                        bytes.truncate(cut);
                    }
                    _ => bytes.push(rng.next() as u8),
                }
                // A flipped top bit of the mode byte makes an entropy-coded mode, which the
                // baseline predates: the entropy stage has its own tests.
                if bytes.get(5).is_some_and(|&b| b & 0x80 != 0) {
                    continue;
                }
            }
            let d = decode(&bytes, &limits);
            let bd = baseline::decode(&bytes, &limits);
            match (&d, &bd) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.shape, b.shape);
                    assert_eq!(a.mode, b.mode);
                    assert_eq!(a.keep_ratio.to_bits(), b.keep_ratio.to_bits());
                    let ab: Vec<u32> = a.data.iter().map(|x| x.to_bits()).collect();
                    let bb: Vec<u32> = b.data.iter().map(|x| x.to_bits()).collect();
                    assert!(ab == bb, "{shape:?} g{g} {p:?} mutation {m}");
                }
                // Debug text: errors may carry NaN fields, which `==` never matches.
                _ => assert_eq!(
                    format!("{:?}", d.map(|_| ())),
                    format!("{:?}", bd.map(|_| ())),
                    "{shape:?} g{g} {p:?} mutation {m}"
                ),
            }
        }
    }
}

/// The header's `min` is the first of the smallest kept values in wire order, so a zero min
/// keeps the sign of the first zero: `+0.0` and `-0.0` mixed in every order, with and without a
/// mask, give the frozen implementation's bytes (and both signs do occur in the headers).
#[test]
fn zero_signs_match_baseline() {
    let mut rng = Rng(0x7a65_726f_7369_676e);
    let mut seen = [false; 2];
    for shape in [&[1000usize][..], &[16, 8, 8], &[3, 5, 7], &[64, 5, 5]] {
        let n: usize = shape.iter().product();
        for trial in 0..40 {
            let data: Vec<f32> = (0..n)
                .map(|_| match rng.below(4) {
                    0 => 0.0,
                    1 => -0.0,
                    _ if trial % 2 == 0 => rng.unit() * 5.0,
                    _ => rng.unit() * 5.0 - 2.5,
                })
                .collect();
            for keep_ratio in KEEPS {
                for mode in [QuantMode::Bits(2), QuantMode::Bits(4), QuantMode::Bits(8)] {
                    let p = CodecParams { keep_ratio, mode };
                    let new = encode(&data, shape, &p).unwrap();
                    let old = baseline::encode(&data, shape, &p).unwrap();
                    assert_eq!(new, old, "{shape:?} {p:?}");
                    let at = 8 + 4 * shape.len() + 8;
                    let min = f32::from_le_bytes(new[at..at + 4].try_into().unwrap());
                    if min == 0.0 {
                        seen[usize::from(min.is_sign_negative())] = true;
                    }
                }
            }
        }
    }
    assert_eq!(seen, [true, true]);
}
