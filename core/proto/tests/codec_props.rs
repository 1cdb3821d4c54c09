//! Property tests of the feature codec: round-trip error bound, exact sizes, top-k selection, and
//! robustness of the decoder against random and mutated input.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

use jmdc_proto::codec::{
    decode, encode, encode_into, encoded_len, kept_positions, CodecParams, DecodeLimits, QuantMode,
};
use proptest::prelude::*;

fn mode_strategy() -> impl Strategy<Value = QuantMode> {
    prop_oneof![
        prop::sample::select(vec![2u8, 3, 4, 5, 6, 8]).prop_map(QuantMode::Bits),
        Just(QuantMode::F16),
        Just(QuantMode::F32),
    ]
}

fn coded_strategy() -> impl Strategy<Value = QuantMode> {
    prop::sample::select(vec![2u8, 3, 4, 5, 6, 8]).prop_map(QuantMode::Coded)
}

fn any_mode_strategy() -> impl Strategy<Value = QuantMode> {
    prop_oneof![mode_strategy(), coded_strategy()]
}

fn keep_ratio_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(1.0f32),
        Just(1e-6f32),
        Just(0.5f32),
        (1e-4f32..=1.0f32),
        (1u32..=100).prop_map(|p| p as f32 / 100.0),
    ]
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        3 => (1usize..=8, 1usize..=12, 1usize..=12).prop_map(|(c, h, w)| vec![c, h, w]),
        2 => (1usize..=300).prop_map(|n| vec![n]),
        1 => Just(vec![]),
        1 => (1usize..=6, 1usize..=6).prop_map(|(a, b)| vec![a, b]),
        1 => (1usize..=3, 1usize..=3, 1usize..=4, 1usize..=4).prop_map(|(a, b, c, d)| vec![a, b, c, d]),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Uniform in `[-a, a]` with `a = 10^exp`.
    Uniform(i32),
    /// Uniform in `[0, a]`, like post-ReLU features, with many exact zeros.
    Relu(i32),
    /// All values equal.
    Constant(f32),
    /// Few distinct small integers (many importance ties).
    Ties,
}

fn fill_strategy() -> impl Strategy<Value = Fill> {
    prop_oneof![
        (-30i32..=30).prop_map(Fill::Uniform),
        (-5i32..=5).prop_map(Fill::Relu),
        prop_oneof![Just(0.0f32), Just(-2.5f32), (-1e30f32..1e30f32)].prop_map(Fill::Constant),
        Just(Fill::Ties),
    ]
}

fn make_data(fill: Fill, n: usize, seed: u64) -> Vec<f32> {
    // Small deterministic generator (splitmix64): proptest shrinks the seed.
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let unit = |u: u64| (u >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| match fill {
            Fill::Uniform(exp) => ((unit(next()) * 2.0 - 1.0) * 10f64.powi(exp)) as f32,
            Fill::Relu(exp) => {
                let u = unit(next());
                if u < 0.4 {
                    0.0
                } else {
                    (u * 10f64.powi(exp)) as f32
                }
            }
            Fill::Constant(v) => v,
            Fill::Ties => (next() % 3) as f32 - 1.0,
        })
        .collect()
}

/// Reference top-k (naive full sort) of the spatial positions of a `[C, H, W]` tensor.
fn reference_kept(data: &[f32], c: usize, hw: usize, k: usize) -> Vec<bool> {
    let mut imp = vec![0.0f64; hw];
    for ch in 0..c {
        for p in 0..hw {
            let x = f64::from(data[ch * hw + p]);
            imp[p] += x * x;
        }
    }
    let mut order: Vec<usize> = (0..hw).collect();
    order.sort_by(|&a, &b| imp[b].total_cmp(&imp[a]).then(a.cmp(&b)));
    let mut kept = vec![false; hw];
    for &p in &order[..k] {
        kept[p] = true;
    }
    kept
}

fn header_f32(bytes: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn header_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn check_value(x: f32, y: f32, mode: QuantMode, scale: f32) -> Result<(), TestCaseError> {
    prop_assert!(y.is_finite());
    match mode {
        QuantMode::F32 => prop_assert_eq!(x, y),
        QuantMode::F16 => {
            if x.abs() <= 65504.0 {
                let tol = f64::from(x.abs()) * 2f64.powi(-11) + 2f64.powi(-25);
                prop_assert!(
                    (f64::from(x) - f64::from(y)).abs() <= tol,
                    "f16 {} vs {}",
                    x,
                    y
                );
            } else {
                prop_assert_eq!(y, 65504.0f32.copysign(x));
            }
        }
        QuantMode::Bits(_) | QuantMode::Coded(_) => {
            // Documented bound: scale/2 plus half an f32 ulp of the reconstruction.
            let tol = f64::from(scale) / 2.0 * (1.0 + 1e-9)
                + f64::from(x.abs().max(y.abs())) * f64::from(f32::EPSILON) / 2.0
                + 1e-45;
            let err = (f64::from(x) - f64::from(y)).abs();
            prop_assert!(
                err <= tol,
                "x={} y={} err={} tol={} scale={}",
                x,
                y,
                err,
                tol,
                scale
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_within_bound(
        shape in shape_strategy(),
        fill in fill_strategy(),
        seed in any::<u64>(),
        keep_ratio in keep_ratio_strategy(),
        mode in mode_strategy(),
    ) {
        let n: usize = shape.iter().product();
        let data = make_data(fill, n, seed);
        let params = CodecParams { keep_ratio, mode };
        let bytes = encode(&data, &shape, &params).unwrap();
        prop_assert_eq!(bytes.len(), encoded_len(&shape, &params).unwrap());

        let decoded = decode(&bytes, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(&decoded.shape, &shape);
        prop_assert_eq!(decoded.mode, mode);
        prop_assert_eq!(decoded.keep_ratio.to_bits(), keep_ratio.to_bits());
        prop_assert_eq!(decoded.data.len(), n);

        let rank = shape.len();
        let quant_at = 8 + 4 * rank + 8;
        let scale = header_f32(&bytes, quant_at + 4);
        let kept_field = header_u32(&bytes, 8 + 4 * rank + 4) as usize;

        if let [c, h, w] = shape[..] {
            let hw = h * w;
            let k = kept_positions(h, w, keep_ratio);
            prop_assert_eq!(kept_field, k);
            let expect_k = ((f64::from(keep_ratio) * hw as f64) - 1e-6 * hw as f64).ceil().max(1.0) as usize;
            prop_assert!(k == expect_k || k == expect_k + 1 || k == hw, "k={} expect≈{}", k, expect_k);
            let reference = reference_kept(&data, c, hw, k);
            if k < hw {
                // The mask is exactly the reference top-k set.
                let mask = &bytes[8 + 12 + 16..8 + 12 + 16 + hw.div_ceil(8)];
                let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
                prop_assert_eq!(ones as usize, k);
                for (p, &keep) in reference.iter().enumerate() {
                    prop_assert_eq!(mask[p / 8] >> (p % 8) & 1 == 1, keep, "position {}", p);
                }
            }
            for ch in 0..c {
                for p in 0..hw {
                    let i = ch * hw + p;
                    if reference[p] {
                        check_value(data[i], decoded.data[i], mode, scale)?;
                    } else {
                        prop_assert_eq!(decoded.data[i], 0.0);
                    }
                }
            }
        } else {
            prop_assert_eq!(kept_field, n);
            for (&x, &y) in data.iter().zip(&decoded.data) {
                check_value(x, y, mode, scale)?;
            }
        }
        if let (Fill::Constant(v), QuantMode::Bits(_)) = (fill, mode) {
            prop_assert_eq!(scale, 0.0);
            prop_assert!(decoded.data.iter().all(|&y| y == v || y == 0.0));
        }
    }

    #[test]
    fn entropy_stage_is_lossless_and_never_larger(
        shape in shape_strategy(),
        fill in fill_strategy(),
        seed in any::<u64>(),
        keep_ratio in keep_ratio_strategy(),
        mode in coded_strategy(),
    ) {
        let n: usize = shape.iter().product();
        let data = make_data(fill, n, seed);
        let coded_params = CodecParams { keep_ratio, mode };
        let fixed_params = CodecParams { keep_ratio, mode: mode.fixed_width() };
        let coded = encode(&data, &shape, &coded_params).unwrap();
        let fixed = encode(&data, &shape, &fixed_params).unwrap();
        prop_assert!(coded.len() <= fixed.len());
        prop_assert_eq!(fixed.len(), encoded_len(&shape, &coded_params).unwrap());
        let a = decode(&coded, &DecodeLimits::default()).unwrap();
        let b = decode(&fixed, &DecodeLimits::default()).unwrap();
        // Falls back to the fixed-width form (and says so) when coding saves nothing.
        let expected_mode = if coded.len() < fixed.len() { mode } else { mode.fixed_width() };
        prop_assert_eq!(a.mode, expected_mode);
        prop_assert_eq!(&a.shape, &b.shape);
        let bits_a: Vec<u32> = a.data.iter().map(|x| x.to_bits()).collect();
        let bits_b: Vec<u32> = b.data.iter().map(|x| x.to_bits()).collect();
        prop_assert!(bits_a == bits_b, "coded and fixed-width decodes differ");
        // Same header (both forms carry all of it) but for the mode byte.
        let header = 24 + 4 * shape.len();
        prop_assert_eq!(&coded[..5], &fixed[..5]);
        prop_assert_eq!(&coded[6..header], &fixed[6..header]);
    }

    #[test]
    fn encoded_len_is_exact(
        shape in shape_strategy(),
        keep_ratio in keep_ratio_strategy(),
        mode in mode_strategy(),
        seed in any::<u64>(),
    ) {
        let n: usize = shape.iter().product();
        let data = make_data(Fill::Uniform(0), n, seed);
        let params = CodecParams { keep_ratio, mode };
        let mut out = vec![0xAA; 7];
        encode_into(&data, &shape, &params, &mut out).unwrap();
        prop_assert_eq!(out.len(), encoded_len(&shape, &params).unwrap());
        prop_assert_eq!(out, encode(&data, &shape, &params).unwrap());
    }

    #[test]
    fn decode_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = DecodeLimits { max_elements: 4096, max_rank: 4 };
        if let Ok(d) = decode(&bytes, &limits) {
            check_decoded(&d, &limits)?;
        }
    }

    #[test]
    fn decode_random_header_never_panics(
        mode in prop::sample::select(vec![2u8, 3, 4, 5, 6, 8, 16, 32, 0x82, 0x83, 0x84, 0x88, 0x87]),
        dims in prop::collection::vec(any::<u32>(), 0..5),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        // A valid prefix makes the decoder go deeper than fully random bytes would.
        let mut bytes = b"JMFC".to_vec();
        bytes.extend_from_slice(&[1, mode, dims.len() as u8, 0]);
        for d in &dims {
            bytes.extend_from_slice(&(d % 16).to_le_bytes());
        }
        bytes.extend_from_slice(&tail);
        let limits = DecodeLimits { max_elements: 4096, max_rank: 4 };
        if let Ok(d) = decode(&bytes, &limits) {
            check_decoded(&d, &limits)?;
        }
    }

    #[test]
    fn decode_mutated_never_panics(
        shape in shape_strategy(),
        keep_ratio in keep_ratio_strategy(),
        mode in any_mode_strategy(),
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        how in 0u8..4,
    ) {
        let n: usize = shape.iter().product();
        let data = make_data(Fill::Uniform(1), n, seed);
        let mut bytes = encode(&data, &shape, &CodecParams { keep_ratio, mode }).unwrap();
        match how {
            0 => for (i, x) in &flips { let i = i.index(bytes.len()); bytes[i] ^= x | 1; },
            1 => bytes.truncate(cut.index(bytes.len())),
            2 => bytes.extend_from_slice(&[0, 1, 2][..cut.index(3) + 1]),
            _ => for (i, x) in &flips { let i = i.index(bytes.len()); bytes[i] = *x; },
        }
        let limits = DecodeLimits::default();
        if let Ok(d) = decode(&bytes, &limits) {
            check_decoded(&d, &limits)?;
        }
    }
}

fn check_decoded(
    d: &jmdc_proto::codec::Decoded,
    limits: &DecodeLimits,
) -> Result<(), TestCaseError> {
    prop_assert!(d.shape.len() <= limits.max_rank);
    let n: usize = d.shape.iter().product();
    prop_assert!(n <= limits.max_elements);
    prop_assert_eq!(d.data.len(), n);
    prop_assert!(d.data.iter().all(|x| x.is_finite()));
    prop_assert!(d.keep_ratio > 0.0 && d.keep_ratio <= 1.0);
    Ok(())
}
