//! Arbitrary tensors through encode → decode: sizes exact (at most the fixed-width size for the
//! entropy-coded modes, which decode to exactly what the fixed-width form decodes to).
#![no_main]

use jmdc_core::codec::{decode, encode, encoded_len, CodecParams, DecodeLimits, QuantMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u8, u8, u8, u16, Vec<f32>)| {
    let (c, h, w, mode, rho, values) = input;
    let shape = [
        usize::from(c % 8) + 1,
        usize::from(h % 16) + 1,
        usize::from(w % 16) + 1,
    ];
    let n: usize = shape.iter().product();
    if values.len() < n {
        return;
    }
    let data = &values[..n];
    let coded = mode & 0x80 != 0;
    let mode = match mode % 8 {
        0 => QuantMode::Bits(2),
        1 => QuantMode::Bits(3),
        2 => QuantMode::Bits(4),
        3 => QuantMode::Bits(5),
        4 => QuantMode::Bits(6),
        5 => QuantMode::Bits(8),
        6 => QuantMode::F16,
        _ => QuantMode::F32,
    };
    let mode = match mode {
        QuantMode::Bits(b) if coded => QuantMode::Coded(b),
        m => m,
    };
    let params = CodecParams {
        keep_ratio: (f32::from(rho) + 1.0) / 65536.0,
        mode,
    };
    match encode(data, &shape, &params) {
        Ok(bytes) => {
            let d = decode(&bytes, &DecodeLimits::default()).expect("own encoding decodes");
            assert_eq!(d.data.len(), n);
            if mode.is_coded() {
                let fixed = CodecParams {
                    mode: mode.fixed_width(),
                    ..params
                };
                let plain = encode(data, &shape, &fixed).expect("fixed-width form encodes");
                assert!(bytes.len() <= plain.len());
                let p = decode(&plain, &DecodeLimits::default()).expect("own encoding decodes");
                let same = d
                    .data
                    .iter()
                    .zip(&p.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "the entropy stage changed a value");
            } else {
                assert_eq!(Ok(bytes.len()), encoded_len(&shape, &params));
            }
        }
        Err(_) => assert!(data.iter().any(|x| !x.is_finite())),
    }
});
