//! Profiling: measuring the costs the optimizer ([`crate::optimizer`]) is built from, on this
//! machine with the real ONNX Runtime and the real codec.
//!
//! * [`measure_edge_profile`] / [`measure_layers`]: per-layer edge latency (median of several runs
//!   after warm-up) with [`LayerRunner::run_timed`].
//! * [`measure_codec_costs`]: times the real [`crate::codec`] on tensors of the split shapes and
//!   fits [`CodecCost`] (`fixed + per_element·elements + per_byte·bytes`, non-negative least
//!   squares) for encode and decode, with the fit residual.
//! * [`measure_input_codec_costs`]: the cloud-only input paths — raw image (copy, normalise)
//!   and JPEG (encode on the edge; decode and normalise on the cloud) at the table's qualities.
//! * [`build_optimizer_profile`]: assembles an [`Profile`] from per-variant layer times,
//!   the codec costs and the package's boundary shapes.
//!
//! The estimators that correct a profile online from real frames ([`OnlineProfile`],
//! [`CloudProfileEstimator`]) and the cost fit are pure and live in [`jmdc_proto::estimate`],
//! re-exported here. See `docs/monitoring.md`.

use std::collections::BTreeMap;
use std::time::Instant;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

pub use jmdc_proto::estimate::{
    duration_us, fit_codec_cost, median, synthetic_features, synthetic_image,
    CloudProfileEstimator, CodecCosts, CodecFit, CodecSample, CodedCosts, Ewma, InputCosts,
    LayerProfile, OnlineProfile, OnlineProfileConfig, DEFAULT_CLOUD_GUESS_RATIO,
};

use crate::codec::{self, CodecError, CodecParams, DecodeLimits, QuantMode};
use crate::jpeg::{self, JpegError};
use crate::optimizer::{CodecCost, Profile, VariantProfile};
use crate::package::{ModelPackage, PackageError};
use crate::preprocess::{self, PreprocessError};
use crate::runner::{LayerRunner, RunnerError, RunnerOptions};

/// Errors from the measuring functions and [`build_optimizer_profile`].
#[derive(Debug, thiserror::Error)]
pub enum ProfilingError {
    /// Building or running the layers failed.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// A package lookup failed (unknown variant, split out of range).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The codec rejected a shape or parameters.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Building the profiling input failed.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The JPEG encoder or decoder failed on the profiling image.
    #[error(transparent)]
    Jpeg(#[from] JpegError),
    /// An argument is unusable (no runs, no shapes, wrong number of layer times, …).
    #[error("{0}")]
    InvalidArgument(String),
}

// ---------------------------------------------------------------------------------------------
// Edge layer timing
// ---------------------------------------------------------------------------------------------

/// A realistic layer-0 input for timing `pkg`: a batch-1 tensor of the model input shape.
///
/// For a `[C, H, W]` input it is the image `pixels` (C·H·W bytes, CHW, e.g. a CIFAR-10 record)
/// normalised as the manifest says, or, without pixels, a deterministic textured test pattern
/// normalised the same way. Other input ranks get zeros.
pub fn profiling_input(
    pkg: &ModelPackage,
    pixels: Option<&[u8]>,
) -> Result<ArrayD<f32>, ProfilingError> {
    let shape = pkg.input_shape();
    if let [c, h, w] = *shape {
        let pattern: Vec<u8>;
        let px = match pixels {
            Some(p) => p,
            None => {
                pattern = (0..c * h * w)
                    .map(|i| {
                        let (ch, y, x) = (i / (h * w), (i / w) % h, i % w);
                        ((x * 13 + y * 7 + ch * 61 + (x * y) % 17) * 37 % 256) as u8
                    })
                    .collect();
                &pattern
            }
        };
        let a = preprocess::normalize_chw_u8(px, [c, h, w], pkg.normalization())?;
        Ok(a.into_dyn())
    } else {
        let mut full = vec![1];
        full.extend_from_slice(shape);
        Ok(ArrayD::zeros(IxDyn(&full)))
    }
}

/// Times every layer of `runner` on `input` (which must fit the runner's first layer): `warmup`
/// untimed runs, then the per-layer median over `runs` runs, in µs (index 0 = the runner's first
/// layer).
pub fn measure_layers(
    runner: &mut LayerRunner,
    input: ArrayViewD<'_, f32>,
    warmup: usize,
    runs: usize,
) -> Result<Vec<f64>, ProfilingError> {
    if runs == 0 {
        return Err(ProfilingError::InvalidArgument(
            "measure_layers needs at least one run".into(),
        ));
    }
    for _ in 0..warmup {
        runner.run_timed(input.view())?;
    }
    let layers = runner.range().len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); layers];
    for _ in 0..runs {
        let (_, timings) = runner.run_timed(input.view())?;
        for (s, t) in samples.iter_mut().zip(&timings) {
            s.push(duration_us(*t));
        }
    }
    Ok(samples.iter_mut().map(|s| median(s)).collect())
}

/// Edge latency of each layer of `variant` (µs, median of `runs` after `warmup` runs), measured
/// with a fresh [`LayerRunner`] over all layers on [`profiling_input`]`(pkg, None)`.
///
/// Measure on an otherwise idle device (that is load factor 1); with 2–5 warm-up runs and 20–50
/// timed runs the medians are stable to a few per cent for models of AlexNet's size.
pub fn measure_edge_profile(
    pkg: &ModelPackage,
    variant: &str,
    warmup: usize,
    runs: usize,
    options: &RunnerOptions,
) -> Result<Vec<f64>, ProfilingError> {
    let layers = pkg.variant(variant)?.num_layers();
    let mut runner = LayerRunner::new(pkg, variant, 0..layers, options)?;
    let input = profiling_input(pkg, None)?;
    measure_layers(&mut runner, input.view(), warmup, runs)
}

/// Times the real codec on every `shape × keep_ratio × mode` (warm-up call, then the median of
/// `runs` calls each for encode and decode) and fits [`CodecCost`]s to the medians.
///
/// Use the package's inner split shapes ([`split_shapes`]) and the ρ/modes of the candidate grid.
/// The encoder is reused between calls, as the pipeline does.
pub fn measure_codec_costs(
    shapes: &[Vec<usize>],
    keep_ratios: &[f32],
    modes: &[QuantMode],
    runs: usize,
) -> Result<CodecCosts, ProfilingError> {
    if runs == 0 || shapes.is_empty() || keep_ratios.is_empty() || modes.is_empty() {
        return Err(ProfilingError::InvalidArgument(
            "measure_codec_costs needs runs ≥ 1 and at least one shape, keep ratio and mode".into(),
        ));
    }
    // The entropy-coded modes cost ~4 ns per code bit: timing them on every shape would make
    // start-up slow for a deep model, and an affine fit needs only a few sizes. They are timed on
    // at most `CODED_SHAPES` shapes spread over the element counts, at the first and last ρ.
    const CODED_SHAPES: usize = 4;
    let mut by_size: Vec<usize> = (0..shapes.len()).collect();
    by_size.sort_by_key(|&i| shapes[i].iter().product::<usize>());
    by_size.dedup_by_key(|i| shapes[*i].iter().product::<usize>());
    let coded_shapes: Vec<usize> = if by_size.len() <= CODED_SHAPES {
        by_size
    } else {
        (0..CODED_SHAPES)
            .map(|k| by_size[k * (by_size.len() - 1) / (CODED_SHAPES - 1)])
            .collect()
    };
    let last_ratio = keep_ratios.len() - 1;
    let mut encoder = codec::Encoder::new();
    let mut out = Vec::new();
    let mut enc_samples = Vec::new();
    let mut dec_samples = Vec::new();
    let mut coded_samples = Vec::new();
    let mut times = Vec::with_capacity(runs);
    for (si, shape) in shapes.iter().enumerate() {
        let elements: usize = shape.iter().product();
        let data = synthetic_features(elements, si as u64 + 1);
        let limits = DecodeLimits {
            max_elements: elements.max(1),
            max_rank: shape.len().max(1),
        };
        for (ri, &keep_ratio) in keep_ratios.iter().enumerate() {
            for &mode in modes {
                if mode.is_coded() && (!coded_shapes.contains(&si) || (ri != 0 && ri != last_ratio))
                {
                    continue;
                }
                let params = CodecParams { keep_ratio, mode };
                encoder.encode_into(&data, shape, &params, &mut out)?;
                times.clear();
                for _ in 0..runs {
                    let t0 = Instant::now();
                    encoder.encode_into(&data, shape, &params, &mut out)?;
                    times.push(duration_us(t0.elapsed()));
                }
                // The range coder's work follows the code bits: coded modes are sized by their
                // fixed-width form. Sizes are the compact bodies a frame carries (the optimizer
                // costs and sends those).
                let encoded = if mode.is_coded() {
                    codec::encoded_len(shape, &params)?
                } else {
                    out.len()
                };
                let bytes = codec::compact::body_len(encoded, shape.len(), mode);
                let enc = CodecSample {
                    elements,
                    bytes,
                    us: median(&mut times),
                };
                codec::decode(&out, &limits)?;
                times.clear();
                for _ in 0..runs {
                    let t0 = Instant::now();
                    let d = codec::decode(&out, &limits)?;
                    times.push(duration_us(t0.elapsed()));
                    drop(d);
                }
                let dec = CodecSample {
                    elements,
                    bytes,
                    us: median(&mut times),
                };
                if mode.is_coded() {
                    coded_samples.push((enc, dec));
                } else {
                    enc_samples.push(enc);
                    dec_samples.push(dec);
                }
            }
        }
    }
    let coded = (!coded_samples.is_empty()).then(|| {
        let (enc, dec): (Vec<CodecSample>, Vec<CodecSample>) =
            coded_samples.iter().copied().unzip();
        CodedCosts {
            encode: fit_codec_cost(&enc),
            decode: fit_codec_cost(&dec),
            samples: coded_samples,
        }
    });
    Ok(CodecCosts {
        encode: fit_codec_cost(&enc_samples),
        decode: fit_codec_cost(&dec_samples),
        encode_samples: enc_samples,
        decode_samples: dec_samples,
        coded,
        input: None,
    })
}

/// Cost of the raw-image path of cloud-only plans, `(input_encode, input_decode)`: the edge
/// copies the 8-bit image (timed as a copy), the cloud normalises it ([`preprocess`]). Both as
/// `per_element_us` only (one shape gives no fixed/per-element split); median of `runs`.
pub fn measure_input_costs(
    pkg: &ModelPackage,
    runs: usize,
) -> Result<(CodecCost, CodecCost), ProfilingError> {
    let shape = pkg.input_shape();
    let [c, h, w] = *shape else {
        return Ok((CodecCost::ZERO, CodecCost::ZERO));
    };
    if runs == 0 {
        return Err(ProfilingError::InvalidArgument(
            "measure_input_costs needs at least one run".into(),
        ));
    }
    let n = c * h * w;
    let pixels: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
    let mut enc = Vec::with_capacity(runs);
    let mut dec = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let copy = std::hint::black_box(pixels.clone());
        enc.push(duration_us(t0.elapsed()));
        let t0 = Instant::now();
        let a = preprocess::normalize_chw_u8(&copy, [c, h, w], pkg.normalization())?;
        dec.push(duration_us(t0.elapsed()));
        drop(std::hint::black_box(a));
    }
    let per = |t: &mut Vec<f64>| CodecCost {
        fixed_us: 0.0,
        per_element_us: (median(t) / n.max(1) as f64).max(0.0),
        per_byte_us: 0.0,
    };
    Ok((per(&mut enc), per(&mut dec)))
}

/// Costs of the cloud-only input paths of `pkg`: the raw image ([`measure_input_costs`]) and,
/// for each quality in `jpeg_qualities`, the real JPEG path on a few [`synthetic_image`]s at the
/// model input size — edge: [`jpeg::JpegEncoder::encode_into`]; cloud: [`jpeg::decode_chw`] +
/// [`preprocess::normalize_chw_u8`], exactly what the worker times as its decode — median of
/// `runs` calls each, fitted as [`CodecCost`]s (`elements` = pixels, `bytes` = JPEG bytes).
/// With no quality, or an input that is not an image, the JPEG costs are zero.
pub fn measure_input_codec_costs(
    pkg: &ModelPackage,
    jpeg_qualities: &[u8],
    runs: usize,
) -> Result<InputCosts, ProfilingError> {
    let (raw_encode, raw_decode) = measure_input_costs(pkg, runs)?;
    let mut jpeg_samples = Vec::new();
    if let [c, h, w] = *pkg.input_shape() {
        let shape = [c, h, w];
        let elements = c * h * w;
        let mut encoder = jpeg::JpegEncoder::new();
        let mut out = Vec::new();
        let mut enc = Vec::with_capacity(runs);
        let mut dec = Vec::with_capacity(runs);
        for (i, noise) in [8u8, 24, 48].into_iter().enumerate() {
            let pixels = synthetic_image(shape, i as u64 + 1, noise);
            for &quality in jpeg_qualities {
                encoder.encode_into(&pixels, shape, quality, &mut out)?;
                enc.clear();
                dec.clear();
                for _ in 0..runs {
                    let t0 = Instant::now();
                    encoder.encode_into(&pixels, shape, quality, &mut out)?;
                    enc.push(duration_us(t0.elapsed()));
                    let t0 = Instant::now();
                    let back = jpeg::decode_chw(&out, shape)?;
                    let a = preprocess::normalize_chw_u8(&back, shape, pkg.normalization())?;
                    dec.push(duration_us(t0.elapsed()));
                    drop(std::hint::black_box(a));
                }
                let bytes = out.len();
                jpeg_samples.push((
                    quality,
                    CodecSample {
                        elements,
                        bytes,
                        us: median(&mut enc),
                    },
                    CodecSample {
                        elements,
                        bytes,
                        us: median(&mut dec),
                    },
                ));
            }
        }
    }
    let encode: Vec<CodecSample> = jpeg_samples.iter().map(|s| s.1).collect();
    let decode: Vec<CodecSample> = jpeg_samples.iter().map(|s| s.2).collect();
    Ok(InputCosts {
        raw_encode,
        raw_decode,
        jpeg_encode: fit_codec_cost(&encode),
        jpeg_decode: fit_codec_cost(&decode),
        jpeg_samples,
    })
}

/// The shapes crossing the inner splits `1..L` of `variant` (what the codec encodes).
pub fn split_shapes(pkg: &ModelPackage, variant: &str) -> Result<Vec<Vec<usize>>, ProfilingError> {
    let l = pkg.variant(variant)?.num_layers();
    (1..l)
        .map(|s| Ok(pkg.split_tensor_shape(variant, s)?.to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Optimizer profile
// ---------------------------------------------------------------------------------------------

/// Builds the optimizer's [`Profile`]: one [`VariantProfile`] per variant of `edge`, in the
/// package's variant order (so candidate variant indices follow the package), with the boundary
/// shapes from the package ([`ModelPackage::split_tensor_shape`] for splits `0..=L`), and the codec
/// costs (`input_encode`/`input_decode`/`jpeg_encode`/`jpeg_decode` come from
/// [`CodecCosts::input`] when it was measured, else they stay zero).
///
/// Errors when a variant of `edge` is unknown to the package, has no cloud times, or a time list
/// does not have `L` entries.
pub fn build_optimizer_profile(
    pkg: &ModelPackage,
    edge: &BTreeMap<String, Vec<f64>>,
    cloud: &BTreeMap<String, Vec<f64>>,
    codec: &CodecCosts,
) -> Result<Profile, ProfilingError> {
    for name in edge.keys() {
        pkg.variant(name)?;
    }
    let mut variants = Vec::with_capacity(edge.len());
    for v in pkg.variants() {
        let Some(edge_us) = edge.get(&v.name) else {
            continue;
        };
        let l = v.num_layers();
        let cloud_us = cloud.get(&v.name).ok_or_else(|| {
            ProfilingError::InvalidArgument(format!("no cloud layer times for variant {}", v.name))
        })?;
        for (what, times) in [("edge", edge_us), ("cloud", cloud_us)] {
            if times.len() != l {
                return Err(ProfilingError::InvalidArgument(format!(
                    "variant {} has {l} layers but {} {what} layer times",
                    v.name,
                    times.len()
                )));
            }
        }
        let boundary_shapes = (0..=l)
            .map(|s| Ok(pkg.split_tensor_shape(&v.name, s)?.to_vec()))
            .collect::<Result<Vec<_>, PackageError>>()?;
        variants.push(VariantProfile {
            name: v.name.clone(),
            edge_layer_us: edge_us.clone(),
            cloud_layer_us: cloud_us.clone(),
            boundary_shapes,
        });
    }
    let mut profile = Profile::new(variants);
    profile.encode = codec.encode.cost;
    profile.decode = codec.decode.cost;
    if let Some(coded) = &codec.coded {
        profile.coded_encode = coded.encode.cost;
        profile.coded_decode = coded.decode.cost;
    }
    if let Some(input) = &codec.input {
        profile.input_encode = input.raw_encode;
        profile.input_decode = input.raw_decode;
        profile.jpeg_encode = input.jpeg_encode.cost;
        profile.jpeg_decode = input.jpeg_decode.cost;
    }
    Ok(profile)
}
