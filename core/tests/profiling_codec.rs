//! `jmdc_core::profiling::measure_codec_costs`: times the real codec and fits its costs.

use jmdc_core::codec::QuantMode;
use jmdc_core::profiling::measure_codec_costs;

#[test]
fn measure_codec_costs_on_real_codec() {
    let shapes = vec![vec![16, 8, 8], vec![64, 16, 16], vec![10]];
    let costs = measure_codec_costs(
        &shapes,
        &[1.0, 0.5, 0.25],
        &[QuantMode::Bits(4), QuantMode::Bits(8), QuantMode::F16],
        3,
    )
    .expect("measure");
    assert_eq!(costs.encode.samples, 27);
    assert_eq!(costs.decode_samples.len(), 27);
    for fit in [costs.encode, costs.decode] {
        let c = fit.cost;
        for v in [c.fixed_us, c.per_element_us, c.per_byte_us] {
            assert!(v.is_finite() && v >= 0.0, "{fit:?}");
        }
        assert!(fit.rms_residual_us.is_finite());
    }
    // Bigger tensors cost more to encode (a generous, non-flaky ordering check on medians).
    let small = costs.encode_samples[0].us;
    let big = costs.encode_samples[9].us;
    assert!(big > 0.0 && small > 0.0);
    assert!(costs.coded.is_none(), "no coded mode was timed");
    assert!(measure_codec_costs(&shapes, &[], &[QuantMode::F32], 1).is_err());
    assert!(measure_codec_costs(&shapes, &[0.5], &[QuantMode::F32], 0).is_err());
}

/// Entropy-coded modes get their own fit, sized by the fixed-width bytes, on at most four shapes
/// and the first and last ρ; the fixed-width fit is unchanged by them.
#[test]
fn coded_modes_are_fitted_apart_on_a_few_shapes() {
    let shapes: Vec<Vec<usize>> = (1..=6).map(|c| vec![8 * c, 8, 8]).collect();
    let modes = [QuantMode::Bits(4), QuantMode::Coded(4), QuantMode::Coded(2)];
    let costs = measure_codec_costs(&shapes, &[1.0, 0.5, 0.25], &modes, 2).expect("measure");
    assert_eq!(costs.encode.samples, 6 * 3);
    let coded = costs.coded.expect("coded fits");
    assert_eq!(coded.samples.len(), 4 * 2 * 2);
    for (enc, dec) in &coded.samples {
        // Bytes are a fixed-width size: the compact body of one of the shapes' encoded_len at 2
        // or 4 bits.
        let fixed = |c: usize, keep: f32, b: u8| {
            let full = jmdc_core::codec::encoded_len(
                &[c, 8, 8],
                &jmdc_core::codec::CodecParams {
                    keep_ratio: keep,
                    mode: QuantMode::Bits(b),
                },
            )
            .expect("len");
            jmdc_core::codec::compact::body_len(full, 3, QuantMode::Bits(b))
        };
        let c = enc.elements / 64;
        assert!(
            [1.0, 0.25]
                .iter()
                .any(|&k| [2, 4].iter().any(|&b| fixed(c, k, b) == enc.bytes)),
            "{enc:?}"
        );
        assert_eq!(enc.bytes, dec.bytes);
        assert!(enc.us > 0.0 && dec.us > 0.0);
    }
    // The coded encode of the largest shape costs more than its fixed-width encode.
    let largest_fixed = costs
        .encode_samples
        .iter()
        .filter(|s| s.elements == 48 * 64)
        .map(|s| s.us)
        .fold(f64::INFINITY, f64::min);
    let largest_coded = coded
        .samples
        .iter()
        .filter(|(e, _)| e.elements == 48 * 64)
        .map(|(e, _)| e.us)
        .fold(0.0, f64::max);
    assert!(
        largest_coded > largest_fixed,
        "{largest_coded} vs {largest_fixed}"
    );
}
