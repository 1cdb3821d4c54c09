//! Unit tests of the feature codec's public API: golden bytes, edge cases, every decode error.
#![allow(clippy::unwrap_used)]

use jmdc_proto::codec::{
    decode, encode, encode_into, encoded_len, kept_positions, CodecError, CodecParams,
    DecodeLimits, Encoder, QuantMode, FORMAT_VERSION, MAGIC,
};

const ALL_MODES: [QuantMode; 8] = QuantMode::ALL;

fn params(keep_ratio: f32, mode: QuantMode) -> CodecParams {
    CodecParams { keep_ratio, mode }
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn golden_bytes_rank3_two_bits() {
    // Importance of the 4 positions: 1, 16, 4, 9 → keep positions 1 and 3.
    let data = [1.0f32, 4.0, 2.0, 3.0];
    let bytes = encode(&data, &[1, 2, 2], &params(0.5, QuantMode::Bits(2))).unwrap();
    let scale = f32::from_bits(0x3EAA_AAAB); // smallest f32 ≥ 1/3
    let mut expected = Vec::new();
    expected.extend_from_slice(b"JMFC");
    expected.extend_from_slice(&[1, 2, 3, 0]);
    for d in [1u32, 2, 2] {
        expected.extend_from_slice(&d.to_le_bytes());
    }
    expected.extend_from_slice(&0.5f32.to_le_bytes());
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(&3.0f32.to_le_bytes());
    expected.extend_from_slice(&scale.to_le_bytes());
    expected.push(0b0000_1010); // mask: positions 1 and 3
    expected.push(0b0000_0011); // codes [3, 0], LSB-first
    assert_eq!(bytes, expected);
    assert_eq!(
        encoded_len(&[1, 2, 2], &params(0.5, QuantMode::Bits(2))).unwrap(),
        38
    );

    let d = decode(&bytes, &limits()).unwrap();
    assert_eq!(d.shape, vec![1, 2, 2]);
    assert_eq!(d.mode, QuantMode::Bits(2));
    assert_eq!(d.keep_ratio, 0.5);
    assert_eq!(d.data[0], 0.0);
    assert_eq!(d.data[2], 0.0);
    assert_eq!(d.data[3], 3.0);
    assert!((d.data[1] - 4.0).abs() <= 1e-6);
}

#[test]
fn golden_bytes_rank1_f32() {
    let data = [1.5f32, -2.0];
    let bytes = encode(&data, &[2], &params(0.3, QuantMode::F32)).unwrap();
    let mut expected = Vec::new();
    expected.extend_from_slice(&MAGIC);
    expected.extend_from_slice(&[FORMAT_VERSION, 32, 1, 0]);
    expected.extend_from_slice(&2u32.to_le_bytes());
    expected.extend_from_slice(&0.3f32.to_le_bytes());
    expected.extend_from_slice(&2u32.to_le_bytes()); // rank ≠ 3: every element kept
    expected.extend_from_slice(&[0; 8]);
    expected.extend_from_slice(&1.5f32.to_le_bytes());
    expected.extend_from_slice(&(-2.0f32).to_le_bytes());
    assert_eq!(bytes, expected);
    let d = decode(&bytes, &limits()).unwrap();
    assert_eq!(d.data, data);
    assert_eq!(d.keep_ratio, 0.3);
}

#[test]
fn constant_tensors_decode_exactly() {
    for mode in ALL_MODES {
        for value in [0.0f32, -3.25, 7.0, 1e-30] {
            let data = vec![value; 2 * 4 * 5];
            for rho in [1.0, 0.5, 0.01] {
                let p = params(rho, mode);
                let bytes = encode(&data, &[2, 4, 5], &p).unwrap();
                let d = decode(&bytes, &limits()).unwrap();
                let k = kept_positions(4, 5, rho);
                // Ties: the first k positions (row-major) are kept.
                for c in 0..2 {
                    for p in 0..20 {
                        let expect = if p < k { value } else { 0.0 };
                        let got = d.data[c * 20 + p];
                        if mode == QuantMode::F16 {
                            assert_eq!(got, half::f16::from_f32(expect).to_f32());
                        } else {
                            assert_eq!(got, expect, "mode {mode} rho {rho}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn full_keep_omits_mask() {
    let shape = [3, 4, 4];
    let p = params(1.0, QuantMode::Bits(4));
    assert_eq!(encoded_len(&shape, &p).unwrap(), 36 + 3 * 16 * 4 / 8);
    // A ratio whose ceiling reaches H·W also omits the mask.
    let p = params(0.999, QuantMode::Bits(4));
    assert_eq!(encoded_len(&shape, &p).unwrap(), 36 + 3 * 16 * 4 / 8);
    let p = params(0.9, QuantMode::Bits(4));
    assert_eq!(
        encoded_len(&shape, &p).unwrap(),
        36 + 2 + (3 * 15 * 4usize).div_ceil(8)
    );
}

#[test]
fn non_finite_input_rejected() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut data = vec![1.0f32; 12];
        data[7] = bad;
        for mode in ALL_MODES {
            let err = encode(&data, &[3, 2, 2], &params(0.5, mode)).unwrap_err();
            assert_eq!(err, CodecError::NonFiniteInput { index: 7 });
        }
    }
}

#[test]
fn encoder_input_errors() {
    let p = params(0.5, QuantMode::Bits(4));
    assert_eq!(
        encode(&[1.0; 5], &[2, 3], &p),
        Err(CodecError::ShapeMismatch {
            expected: 6,
            actual: 5
        })
    );
    assert_eq!(encode(&[], &[0], &p), Err(CodecError::ZeroDimension));
    assert_eq!(
        encode(&[1.0], &[1], &params(0.0, QuantMode::F32)),
        Err(CodecError::InvalidKeepRatio(0.0))
    );
    assert_eq!(
        encode(&[1.0], &[1], &params(1.0, QuantMode::Bits(7))),
        Err(CodecError::UnsupportedBits(7))
    );
    let big_rank = vec![1usize; 256];
    assert_eq!(
        encode(&[1.0], &big_rank, &p),
        Err(CodecError::RankTooLargeForFormat(256))
    );
    // encode_into leaves the buffer empty on error.
    let mut out = vec![1, 2, 3];
    assert!(encode_into(&[f32::NAN], &[1], &p, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn rank0_and_rank2_and_rank4() {
    let p = params(0.2, QuantMode::Bits(8));
    for shape in [vec![], vec![3, 5], vec![2, 3, 2, 2]] {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = encode(&data, &shape, &p).unwrap();
        assert_eq!(bytes.len(), encoded_len(&shape, &p).unwrap());
        let d = decode(&bytes, &limits()).unwrap();
        assert_eq!(d.shape, shape);
        // Nothing dropped: every value within half a step.
        let range = data.iter().copied().fold(f32::MIN, f32::max)
            - data.iter().copied().fold(f32::MAX, f32::min);
        for (x, y) in data.iter().zip(&d.data) {
            assert!((x - y).abs() <= range / 255.0 / 2.0 + 1e-6, "{x} vs {y}");
        }
    }
}

#[test]
fn extreme_values_bits2() {
    let data = [
        f32::MAX,
        -f32::MAX,
        0.0,
        1.0,
        f32::MAX / 3.0,
        -f32::MAX / 2.0,
    ];
    for mode in [QuantMode::Bits(2), QuantMode::Bits(8)] {
        let bytes = encode(&data, &[6], &params(1.0, mode)).unwrap();
        let d = decode(&bytes, &limits()).unwrap();
        let levels = f64::from(mode.bits_per_value()).exp2() - 1.0;
        let step = (2.0 * f64::from(f32::MAX)) / levels;
        for (x, y) in data.iter().zip(&d.data) {
            assert!(y.is_finite());
            assert!((f64::from(*x) - f64::from(*y)).abs() <= step / 2.0 * (1.0 + 1e-6));
        }
    }
}

#[test]
fn f16_saturates() {
    let data = [1e6f32, -1e6, 65504.0, 1.0];
    let d = decode(
        &encode(&data, &[4], &params(1.0, QuantMode::F16)).unwrap(),
        &limits(),
    )
    .unwrap();
    assert_eq!(d.data, vec![65504.0, -65504.0, 65504.0, 1.0]);
}

#[test]
fn encoder_reuse_matches_fresh() {
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    for (i, shape) in [[4usize, 6, 6], [2, 3, 9], [8, 1, 1], [4, 6, 6]]
        .iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|j| ((j * 37 + i * 11) % 23) as f32 - 11.0)
            .collect();
        let p = params(0.3, QuantMode::Bits(5));
        enc.encode_into(&data, shape, &p, &mut out).unwrap();
        assert_eq!(out, encode(&data, shape, &p).unwrap());
    }
}

// ---------------------------------------------------------------- decoder errors

fn sample() -> Vec<u8> {
    let data: Vec<f32> = (0..2 * 3 * 5).map(|i| (i as f32 * 0.7).sin()).collect();
    encode(&data, &[2, 3, 5], &params(0.4, QuantMode::Bits(3))).unwrap()
}

/// Header offsets for a rank-3 encoding.
const KEEP_AT: usize = 20;
const KEPT_AT: usize = 24;
const MIN_AT: usize = 28;
const SCALE_AT: usize = 32;
const MASK_AT: usize = 36;

#[test]
fn sample_decodes() {
    let bytes = sample();
    assert_eq!(bytes.len(), 36 + 2 + (2 * 6 * 3usize).div_ceil(8));
    assert!(decode(&bytes, &limits()).is_ok());
}

#[test]
fn decode_rejects_bad_header() {
    let good = sample();
    let l = limits();

    assert!(matches!(decode(&[], &l), Err(CodecError::Truncated { .. })));
    assert!(matches!(
        decode(&good[..3], &l),
        Err(CodecError::Truncated { .. })
    ));

    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(decode(&b, &l), Err(CodecError::BadMagic));

    let mut b = good.clone();
    b[4] = 2;
    assert_eq!(decode(&b, &l), Err(CodecError::UnsupportedVersion(2)));

    for mode in [0u8, 1, 7, 9, 15, 17, 64, 255] {
        let mut b = good.clone();
        b[5] = mode;
        assert_eq!(decode(&b, &l), Err(CodecError::UnsupportedMode(mode)));
    }

    let mut b = good.clone();
    b[7] = 1;
    assert_eq!(decode(&b, &l), Err(CodecError::ReservedNonZero(1)));

    let mut b = good.clone();
    b[6] = 5;
    assert_eq!(
        decode(&b, &l),
        Err(CodecError::RankLimit { rank: 5, limit: 4 })
    );

    let mut b = good.clone();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(decode(&b, &l), Err(CodecError::ZeroDimension));

    let mut b = good.clone();
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode(&b, &l),
        Err(CodecError::ElementLimit { .. })
    ));
    let tight = DecodeLimits {
        max_elements: 29,
        max_rank: 4,
    };
    assert!(matches!(
        decode(&good, &tight),
        Err(CodecError::ElementLimit {
            elements: Some(30),
            limit: 29
        })
    ));

    for bad in [0.0f32, -1.0, 1.5, f32::NAN] {
        let mut b = good.clone();
        b[KEEP_AT..KEEP_AT + 4].copy_from_slice(&bad.to_le_bytes());
        assert!(matches!(
            decode(&b, &l),
            Err(CodecError::InvalidKeepRatio(_))
        ));
    }

    let mut b = good.clone();
    b[KEPT_AT..KEPT_AT + 4].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        decode(&b, &l),
        Err(CodecError::KeptCountMismatch {
            expected: 6,
            found: 7
        })
    );

    for (at, bad) in [
        (MIN_AT, f32::NAN),
        (SCALE_AT, f32::INFINITY),
        (SCALE_AT, -1.0),
    ] {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        assert!(matches!(
            decode(&b, &l),
            Err(CodecError::InvalidQuantParams { .. })
        ));
    }
}

#[test]
fn decode_rejects_bad_body() {
    let good = sample();
    let l = limits();

    // Trailing byte, missing byte.
    let mut b = good.clone();
    b.push(0);
    assert!(matches!(
        decode(&b, &l),
        Err(CodecError::PayloadLength { .. })
    ));
    assert!(matches!(
        decode(&good[..good.len() - 1], &l),
        Err(CodecError::PayloadLength { .. })
    ));
    assert!(matches!(
        decode(&good[..MASK_AT + 1], &l),
        Err(CodecError::Truncated { field: "mask", .. })
    ));

    // Mask with one extra bit.
    let mut b = good.clone();
    let mask = u16::from_le_bytes([b[MASK_AT], b[MASK_AT + 1]]);
    let free = (0..15).find(|i| mask & (1 << i) == 0).unwrap();
    let mask = mask | (1 << free);
    b[MASK_AT..MASK_AT + 2].copy_from_slice(&mask.to_le_bytes());
    assert_eq!(
        decode(&b, &l),
        Err(CodecError::MaskPopcountMismatch {
            expected: 6,
            found: 7
        })
    );

    // Mask bit moved into the padding (popcount unchanged).
    let mut b = good.clone();
    let mask = u16::from_le_bytes([b[MASK_AT], b[MASK_AT + 1]]);
    let lowest = mask.trailing_zeros();
    let mask = (mask & !(1 << lowest)) | (1 << 15);
    b[MASK_AT..MASK_AT + 2].copy_from_slice(&mask.to_le_bytes());
    assert_eq!(decode(&b, &l), Err(CodecError::NonZeroPadding("mask")));

    // Payload padding: 36 bits used of 40.
    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] |= 0x80;
    assert_eq!(decode(&b, &l), Err(CodecError::NonZeroPadding("payload")));
}

#[test]
fn decode_rejects_non_finite_float_payload() {
    let good = encode(&[1.0, 2.0, 3.0], &[3], &params(1.0, QuantMode::F32)).unwrap();
    let mut b = good.clone();
    let n = b.len();
    b[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(
        decode(&b, &limits()),
        Err(CodecError::NonFiniteValue { index: 2 })
    );

    let good = encode(&[1.0, 2.0, 3.0], &[3], &params(1.0, QuantMode::F16)).unwrap();
    let mut b = good.clone();
    b[28..30].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    assert_eq!(
        decode(&b, &limits()),
        Err(CodecError::NonFiniteValue { index: 0 })
    );

    // Float modes require min = scale = 0.
    let mut b = good;
    b[20..24].copy_from_slice(&1.0f32.to_le_bytes());
    assert!(matches!(
        decode(&b, &limits()),
        Err(CodecError::InvalidQuantParams { .. })
    ));
}

#[test]
fn documented_example_size() {
    let p = params(0.5, QuantMode::Bits(4));
    assert_eq!(kept_positions(13, 13, 0.5), 85);
    assert_eq!(encoded_len(&[64, 13, 13], &p).unwrap(), 2778);
}

/// Rough timing, not a benchmark: `cargo test --release -p jmdc-core --test codec_unit -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing() {
    use std::time::Instant;
    let shape = [64usize, 55, 55];
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 100.0 - 3.0)
        .collect();
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    for mode in [
        QuantMode::Bits(2),
        QuantMode::Bits(4),
        QuantMode::Bits(8),
        QuantMode::F16,
        QuantMode::F32,
    ] {
        for rho in [1.0, 0.5, 0.1] {
            let p = params(rho, mode);
            let iters = 50;
            let t = Instant::now();
            for _ in 0..iters {
                enc.encode_into(&data, &shape, &p, &mut out).unwrap();
            }
            let e = t.elapsed() / iters;
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(decode(&out, &limits()).unwrap());
            }
            let d = t.elapsed() / iters;
            println!(
                "{shape:?} {mode} rho={rho}: {} bytes, encode {e:?}, decode {d:?}",
                out.len()
            );
        }
    }
}
