//! Arbitrary bytes into the codec decoder: must never panic, and anything accepted must respect the
//! limits.
#![no_main]

use jmdc_core::codec::{decode, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_elements: 1 << 20,
        max_rank: 4,
    };
    if let Ok(d) = decode(data, &limits) {
        let n: usize = d.shape.iter().product();
        assert!(d.shape.len() <= limits.max_rank);
        assert!(n <= limits.max_elements);
        assert_eq!(d.data.len(), n);
        assert!(d.data.iter().all(|x| x.is_finite()));
    }
});
