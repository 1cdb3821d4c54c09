//! Measures the cloud-only input paths on real images: mean JPEG bytes, edge encode time, cloud
//! decode (+ normalisation) time and PSNR per quality, against the raw 8-bit image.
//!
//! `cargo run --release -p jmdc-core --example jpeg_input_costs -- [CIFAR .bin] [N] [qualities]`
//! (default: the 256 bundled samples, all of them, `90,75,50`). The package's normalisation is
//! taken from `models/packages/alexnet-cifar10`. Timings are medians over the images of the
//! median of 5 calls each, single-threaded.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use jmdc_core::cifar::{CifarFile, IMAGE_SHAPE};
use jmdc_core::jpeg::{decode_chw, JpegEncoder};
use jmdc_core::package::{LoadOptions, ModelPackage, VerifyMode};
use jmdc_core::preprocess::normalize_chw_u8;
use jmdc_core::profiling::{measure_input_codec_costs, median};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/samples/cifar10-test-256.bin"));
    let cifar = CifarFile::open(&file).unwrap();
    let n = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cifar.len())
        .min(cifar.len());
    let qualities =
        jmdc_core::calibration::parse_jpeg_list(&args.next().unwrap_or_else(|| "90,75,50".into()))
            .unwrap();
    let pkg = ModelPackage::load_with(
        &root.join("models/packages/alexnet-cifar10"),
        &LoadOptions {
            verify: VerifyMode::Lazy,
        },
    )
    .unwrap();
    let norm = pkg.normalization();
    let time = |f: &mut dyn FnMut()| {
        let mut t = Vec::with_capacity(5);
        f();
        for _ in 0..5 {
            let t0 = Instant::now();
            f();
            t.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        median(&mut t)
    };
    println!("{} images of {}", n, file.display());
    let mut raw_dec = Vec::new();
    for i in 0..n {
        let (_, px) = cifar.get(i).unwrap();
        raw_dec.push(time(&mut || {
            std::hint::black_box(normalize_chw_u8(px, IMAGE_SHAPE, norm).unwrap());
        }));
    }
    println!(
        "raw  : 3072 B, encode 0 µs (copy), cloud normalise {:.2} µs (median)",
        median(&mut raw_dec)
    );
    let mut enc = JpegEncoder::new();
    let mut out = Vec::new();
    for &q in &qualities {
        let (mut bytes, mut sq_err, mut headers) = (0usize, 0.0f64, 0usize);
        let (mut te, mut td) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (_, px) = cifar.get(i).unwrap();
            te.push(time(&mut || {
                enc.encode_into(px, IMAGE_SHAPE, q, &mut out).unwrap();
            }));
            bytes += out.len();
            headers += header_bytes(&out);
            td.push(time(&mut || {
                let back = decode_chw(&out, IMAGE_SHAPE).unwrap();
                std::hint::black_box(normalize_chw_u8(&back, IMAGE_SHAPE, norm).unwrap());
            }));
            let back = decode_chw(&out, IMAGE_SHAPE).unwrap();
            let mse = px
                .iter()
                .zip(&back)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                / px.len() as f64;
            sq_err += 10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10();
        }
        println!(
            "jpeg{q}: {:.1} B mean ({:.1} B of headers and tables), edge encode {:.1} µs, \
             cloud decode+normalise {:.1} µs (medians), PSNR {:.2} dB (mean)",
            bytes as f64 / n as f64,
            headers as f64 / n as f64,
            median(&mut te),
            median(&mut td),
            sq_err / n as f64
        );
    }
    let fit = measure_input_codec_costs(&pkg, &qualities, 20).unwrap();
    println!(
        "profile fit (synthetic images, as the adaptive planner measures it): jpeg_encode {:?} \
         (rms {:.1} µs), jpeg_decode {:?} (rms {:.1} µs), raw {:?} / {:?}",
        fit.jpeg_encode.cost,
        fit.jpeg_encode.rms_residual_us,
        fit.jpeg_decode.cost,
        fit.jpeg_decode.rms_residual_us,
        fit.raw_encode,
        fit.raw_decode
    );
    for (q, e, d) in &fit.jpeg_samples {
        println!(
            "  synthetic q{q}: {} B, encode {:.1} µs, decode {:.1} µs",
            e.bytes, e.us, d.us
        );
    }
}

/// Bytes before the entropy-coded data: everything up to the end of the SOS segment, plus EOI.
fn header_bytes(jpg: &[u8]) -> usize {
    let Some(sos) = jpg.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return 0;
    };
    let len = usize::from(u16::from_be_bytes([jpg[sos + 2], jpg[sos + 3]]));
    sos + 2 + len + 2
}
