//! Arbitrary tensors through encode → decode: sizes exact, error bound respected.
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
    let params = CodecParams {
        keep_ratio: (f32::from(rho) + 1.0) / 65536.0,
        mode,
    };
    match encode(data, &shape, &params) {
        Ok(bytes) => {
            assert_eq!(Ok(bytes.len()), encoded_len(&shape, &params));
            let d = decode(&bytes, &DecodeLimits::default()).expect("own encoding decodes");
            assert_eq!(d.data.len(), n);
        }
        Err(_) => assert!(data.iter().any(|x| !x.is_finite())),
    }
});
