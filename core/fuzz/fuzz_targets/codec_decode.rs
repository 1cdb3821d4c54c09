//! Arbitrary bytes into the codec decoder: must never panic, and anything accepted must respect the
//! limits. The same bytes, after five that choose a context (mode, shape, ρ), also go in as the
//! compact body of a frame on that context (`codec::compact::expand`, then `decode`); an accepted
//! body splits back out of its expansion unchanged.
#![no_main]

use jmdc_core::codec::compact::{expand, split_body, TensorContext};
use jmdc_core::codec::{decode, DecodeLimits, Decoded, QuantMode};
use libfuzzer_sys::fuzz_target;

fn check(d: &Decoded, limits: &DecodeLimits) {
    let n: usize = d.shape.iter().product();
    assert!(d.shape.len() <= limits.max_rank);
    assert!(n <= limits.max_elements);
    assert_eq!(d.data.len(), n);
    assert!(d.data.iter().all(|x| x.is_finite()));
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_elements: 1 << 20,
        max_rank: 4,
    };
    if let Ok(d) = decode(data, &limits) {
        check(&d, &limits);
    }
    if let [mode, c, h, w, rho, body @ ..] = data {
        let modes: Vec<QuantMode> = QuantMode::ALL
            .iter()
            .chain(QuantMode::CODED.iter())
            .copied()
            .collect();
        let context = TensorContext {
            shape: match *w {
                0 => vec![1 + usize::from(*c) % 64],
                _ => vec![
                    1 + usize::from(*c) % 32,
                    1 + usize::from(*h) % 8,
                    1 + usize::from(*w) % 8,
                ],
            },
            keep_ratio: f32::from(1 + rho % 100) / 100.0,
            mode: modes[usize::from(*mode) % modes.len()],
        };
        if let Ok(full) = expand(&context, body) {
            if let Ok(d) = decode(&full, &limits) {
                check(&d, &limits);
                let (written, again) = split_body(&full).expect("an accepted encoding splits");
                assert_eq!(again, body);
                assert_eq!(written.shape, context.shape);
                assert_eq!(written.mode.fixed_width(), context.mode.fixed_width());
            }
        }
    }
});
