//! Throughput of the feature codec, old (the frozen pre-optimisation copy in `baseline.rs`) and new
//! (`jmdc_proto::codec`) side by side: every case runs both, one right after the other, so the
//! ratio is meaningful even on a busy machine. Throughput is in bytes of `f32` input (encode) or
//! output (decode), i.e. `4 · C·H·W` per call, whatever the compressed size.
//!
//! `cargo bench -p jmdc-proto --bench codec` (a filter narrows it: `-- 'encode/q4'`). Figures are
//! in `docs/codec.md` ("Performance").
//!
//! The entropy stage (`coded-encode/…`, `coded-decode/…`): fixed-width `Bits(b)` and entropy-coded
//! `Coded(b)` of the same tensor side by side; the difference is the range coder's own time.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jmdc_proto::codec::{decode, CodecParams, DecodeLimits, Encoder, QuantMode};

/// What `baseline.rs` imports.
mod api {
    pub use jmdc_proto::codec::{
        kept_positions, CodecError, CodecParams, DecodeLimits, Decoded, QuantMode, FORMAT_VERSION,
        MAGIC,
    };
}
mod baseline;

/// Split shapes of the kind the models produce: a late conv block (VGG-ish [64, 8, 8]), an
/// Inception/AlexNet-ish [192, 7, 7], AlexNet-CIFAR's pool1 [64, 14, 14], and a large early map.
const SHAPES: [[usize; 3]; 4] = [[64, 8, 8], [192, 7, 7], [64, 14, 14], [256, 28, 28]];
const MODES: [QuantMode; 4] = [
    QuantMode::Bits(4),
    QuantMode::Bits(6),
    QuantMode::Bits(8),
    QuantMode::F16,
];
const KEEPS: [f32; 2] = [1.0, 0.5];

/// ReLU-like features: about half exact zeros, the rest positive with a long tail, and a
/// per-position gain so that spatial importance varies as in real feature maps.
fn relu_features(shape: [usize; 3]) -> Vec<f32> {
    let [c, h, w] = shape;
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (c * h * w) as u64;
    let mut unit = move || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let gain: Vec<f32> = (0..h * w).map(|_| 0.2 + 2.0 * unit()).collect();
    let mut data = Vec::with_capacity(c * h * w);
    for _ in 0..c {
        for g in &gain {
            let z = unit() + unit() + unit() - 1.6;
            data.push(if z > 0.0 { z * z * 4.0 * g } else { 0.0 });
        }
    }
    data
}

fn name(shape: [usize; 3]) -> String {
    format!("{}x{}x{}", shape[0], shape[1], shape[2])
}

fn bench_codec(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    for mode in MODES {
        for keep_ratio in KEEPS {
            let p = CodecParams { keep_ratio, mode };
            let mut enc_group = c.benchmark_group(format!("encode/{mode}/keep{keep_ratio}"));
            for shape in SHAPES {
                let data = relu_features(shape);
                let bytes = (data.len() * 4) as u64;
                enc_group.throughput(Throughput::Bytes(bytes));
                // Same bytes from both before timing anything.
                let mut old_enc = baseline::Encoder::new();
                let mut new_enc = Encoder::new();
                let (mut old_out, mut new_out) = (Vec::new(), Vec::new());
                old_enc
                    .encode_into(&data, &shape, &p, &mut old_out)
                    .unwrap();
                new_enc
                    .encode_into(&data, &shape, &p, &mut new_out)
                    .unwrap();
                assert_eq!(old_out, new_out, "{shape:?} {p:?}");
                enc_group.bench_function(BenchmarkId::new("old", name(shape)), |b| {
                    b.iter(|| {
                        old_enc
                            .encode_into(black_box(&data), &shape, &p, &mut old_out)
                            .unwrap()
                    })
                });
                enc_group.bench_function(BenchmarkId::new("new", name(shape)), |b| {
                    b.iter(|| {
                        new_enc
                            .encode_into(black_box(&data), &shape, &p, &mut new_out)
                            .unwrap()
                    })
                });
            }
            enc_group.finish();

            let mut dec_group = c.benchmark_group(format!("decode/{mode}/keep{keep_ratio}"));
            for shape in SHAPES {
                let data = relu_features(shape);
                let bytes = (data.len() * 4) as u64;
                dec_group.throughput(Throughput::Bytes(bytes));
                let encoded = jmdc_proto::codec::encode(&data, &shape, &p).unwrap();
                let old = baseline::decode(&encoded, &limits).unwrap();
                let new = decode(&encoded, &limits).unwrap();
                let bits = |d: &[f32]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&old.data), bits(&new.data), "{shape:?} {p:?}");
                dec_group.bench_function(BenchmarkId::new("old", name(shape)), |b| {
                    b.iter(|| baseline::decode(black_box(&encoded), &limits).unwrap())
                });
                dec_group.bench_function(BenchmarkId::new("new", name(shape)), |b| {
                    b.iter(|| decode(black_box(&encoded), &limits).unwrap())
                });
            }
            dec_group.finish();
        }
    }
}

/// Fixed-width against entropy-coded, same tensor, same codes.
fn bench_entropy(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    for bits in [2u8, 4] {
        let fixed = CodecParams {
            keep_ratio: 1.0,
            mode: QuantMode::Bits(bits),
        };
        let coded = CodecParams {
            keep_ratio: 1.0,
            mode: QuantMode::Coded(bits),
        };
        let mut enc_group = c.benchmark_group(format!("coded-encode/q{bits}"));
        for shape in SHAPES {
            let data = relu_features(shape);
            enc_group.throughput(Throughput::Bytes((data.len() * 4) as u64));
            let mut enc = Encoder::new();
            let mut out = Vec::new();
            for (label, p) in [("fixed", fixed), ("coded", coded)] {
                enc_group.bench_function(BenchmarkId::new(label, name(shape)), |b| {
                    b.iter(|| {
                        enc.encode_into(black_box(&data), &shape, &p, &mut out)
                            .unwrap()
                    })
                });
            }
        }
        enc_group.finish();
        let mut dec_group = c.benchmark_group(format!("coded-decode/q{bits}"));
        for shape in SHAPES {
            let data = relu_features(shape);
            dec_group.throughput(Throughput::Bytes((data.len() * 4) as u64));
            for (label, p) in [("fixed", fixed), ("coded", coded)] {
                let encoded = jmdc_proto::codec::encode(&data, &shape, &p).unwrap();
                dec_group.bench_function(BenchmarkId::new(label, name(shape)), |b| {
                    b.iter(|| decode(black_box(&encoded), &limits).unwrap())
                });
            }
        }
        dec_group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200));
    targets = bench_codec, bench_entropy
}
criterion_main!(benches);
