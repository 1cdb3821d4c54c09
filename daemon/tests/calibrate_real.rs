//! Real calibration: the bundled AlexNet package, the bundled 256 CIFAR-10 samples, ONNX Runtime
//! and the real codec.

use std::path::PathBuf;
use std::time::Instant;

use jmdc_core::calibration;
use jmdc_core::calibration::{CalibrationTable, CODEC_IMAGE, CODEC_NONE};
use jmdc_core::codec::{CodecParams, QuantMode};
use jmdc_core::package::ModelPackage;
use jmdc_edge::calibrate::{run_calibration, CalibrateOptions};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

fn package_dir() -> PathBuf {
    repo_root().join("models/packages/alexnet-cifar10")
}

fn samples() -> PathBuf {
    repo_root().join("models/samples/cifar10-test-256.bin")
}

fn init_runtime() {
    jmdc_core::runtime::init_onnxruntime(None)
        .expect("ONNX Runtime not found: run scripts/fetch-onnxruntime.sh (make test does)");
}

/// Small grid over every variant and every inner split: ρ ∈ {1, 0.25} × {f32, int2}.
fn small_grid() -> CalibrateOptions {
    let mut o = CalibrateOptions::new(package_dir(), samples());
    o.keep_ratios = vec![1.0, 0.25];
    o.modes = vec![QuantMode::F32, QuantMode::Bits(2)];
    o.progress = false;
    o.threads = 2;
    o.batch_size = 64;
    o
}

#[test]
fn small_grid_on_bundled_samples() {
    init_runtime();
    let t0 = Instant::now();
    let table = run_calibration(&small_grid()).expect("calibration runs");
    eprintln!(
        "small grid: {} entries on {} images in {:.1} s",
        table.entries.len(),
        table.dataset.images,
        t0.elapsed().as_secs_f64()
    );
    let pkg = ModelPackage::load(&package_dir()).expect("package");
    let n = 256u64;
    assert_eq!(table.dataset.images, n);
    assert_eq!(table.package, pkg.name());
    assert_eq!(
        table.codecs,
        vec!["f32", "int2", "jpeg90", "jpeg75", "jpeg50"]
    );
    assert_eq!(table.jpeg_qualities(), vec![90, 75, 50]);
    // Every variant: cloud-only (raw + 3 JPEG) + 12 inner splits × 4 + edge-only.
    for v in pkg.variants() {
        let l = v.num_layers();
        let of_v: Vec<_> = table
            .entries
            .iter()
            .filter(|e| e.variant == v.name)
            .collect();
        assert_eq!(of_v.len(), 2 + 3 + (l - 1) * 4, "{}", v.name);
        let cloud = of_v
            .iter()
            .find(|e| e.split == 0)
            .expect("cloud-only entry");
        let edge = of_v.iter().find(|e| e.split == l).expect("edge-only entry");
        assert_eq!(cloud.codec, CODEC_IMAGE);
        assert_eq!(cloud.bytes, 3 * 32 * 32);
        assert_eq!(edge.codec, CODEC_NONE);
        assert_eq!(edge.bytes, 0);
        assert_eq!(cloud.correct, edge.correct);
        let unsplit = cloud.correct;
        // Cloud-only JPEG (the real encoder and decoder): right after the raw entry, a mean
        // size well below the raw image, and q90/q75 within a few images of raw on 256.
        let jpeg: Vec<_> = of_v.iter().skip(1).take(3).collect();
        let mut last_bytes = usize::MAX;
        for (e, q) in jpeg.iter().zip([90u8, 75, 50]) {
            assert_eq!((e.split, e.jpeg_quality()), (0, Some(q)), "{e:?}");
            assert!(e.bytes > 500 && e.bytes < 1500, "{e:?}");
            assert!(e.bytes < last_bytes, "size falls with quality: {e:?}");
            last_bytes = e.bytes;
            if q >= 75 {
                assert!(
                    e.correct.abs_diff(unsplit) <= 8,
                    "{} {e:?} vs raw {unsplit}",
                    v.name
                );
            }
            println!(
                "{} jpeg{q}: {} B mean, {}/256 correct (raw {unsplit}/256)",
                v.name, e.bytes, e.correct
            );
        }
        for s in 1..l {
            // Lossless round trip: exactly the unsplit accuracy (same correct count).
            let lossless = table
                .entry(&v.name, s, &CodecParams::LOSSLESS)
                .expect("f32 ρ=1 entry");
            assert_eq!(
                lossless.correct, unsplit,
                "{} split {s}: f32 ρ=1 gives {} correct, unsplit {unsplit}",
                v.name, lossless.correct
            );
            // Heavy compression is not more accurate than lossless beyond noise (3 σ of the
            // difference of two proportions on N = 256 is ≈ 13 points; use a generous 0.15).
            let heavy = table
                .lookup(
                    &v.name,
                    s,
                    &CodecParams {
                        keep_ratio: 0.25,
                        mode: QuantMode::Bits(2),
                    },
                )
                .expect("int2 ρ=0.25 entry");
            let exact = table
                .lookup(&v.name, s, &CodecParams::LOSSLESS)
                .expect("lossless");
            assert!(
                heavy <= exact + 0.15,
                "{} split {s}: int2 ρ=0.25 {heavy} vs f32 {exact}",
                v.name
            );
            for e in of_v.iter().filter(|e| e.split == s) {
                assert!(e.bytes > 0);
                assert!(e.ci95 >= 0.0 && e.ci95 < 0.07, "{e:?}");
            }
        }
    }
    // The manifest's own accuracy was measured on the full test set; on the first 256 images
    // the unsplit figure must at least be plausible for the same model (not chance level).
    let keep100 = table.lookup_cloud_only("keep100").expect("keep100");
    assert!(keep100 > 0.15, "keep100 top-1 {keep100} on 256 samples");

    // Stamp matches this package: the table loads for it.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("calibration.json");
    calibration::save(&table, &path).expect("save");
    let back = calibration::load_for(&path, &pkg).expect("stamp matches");
    assert_eq!(back, table);
}

#[test]
fn thread_count_does_not_change_the_table() {
    init_runtime();
    let mut o = small_grid();
    o.limit = Some(96);
    o.batch_size = 32;
    o.variants = vec!["keep025".into()];
    o.splits = vec![3, 6, 10, 11];
    o.threads = 1;
    let one = run_calibration(&o).expect("1 thread");
    o.threads = 3;
    let three = run_calibration(&o).expect("3 threads");
    let counts = |t: &CalibrationTable| -> Vec<(usize, String, u32, u64)> {
        t.entries
            .iter()
            .map(|e| (e.split, e.codec.clone(), e.keep_ratio.to_bits(), e.correct))
            .collect()
    };
    assert_eq!(counts(&one), counts(&three));
    assert_eq!(one.entries.len(), 2 + 3 + 4 * 4);
}

#[test]
fn bad_options_are_refused() {
    init_runtime();
    let mut o = small_grid();
    o.splits = vec![0];
    let e = run_calibration(&o).expect_err("split 0 is not inner");
    assert!(e.to_string().contains("inner split"), "{e}");
    let mut o = small_grid();
    o.variants = vec!["nope".into()];
    assert!(run_calibration(&o).is_err());
    let mut o = small_grid();
    o.images = repo_root().join("does-not-exist.bin");
    let e = run_calibration(&o).expect_err("missing images");
    assert!(e.to_string().contains("does-not-exist.bin"), "{e}");
    let mut o = small_grid();
    o.limit = Some(0);
    assert!(run_calibration(&o).is_err());
    let mut o = small_grid();
    o.jpeg_qualities = vec![0];
    assert!(run_calibration(&o).is_err());
}

/// Full default grid (4 ρ × 8 codecs, every split, every variant) on `JMDC_CALIB_IMAGES`
/// (default: the full CIFAR-10 test set in ../shared) and `JMDC_CALIB_N` images (default 10,000);
/// `JMDC_CALIB_PACKAGE` (default: the bundled package), `JMDC_CALIB_THREADS` (default: one per
/// core), `JMDC_CALIB_OUT` (write the table there).
/// Run in release mode:
/// `cargo test --release -p jmdc-edge --test calibrate_real -- --ignored --nocapture`
#[test]
#[ignore = "timing of the full grid; minutes"]
fn full_grid_timing() {
    init_runtime();
    let images = std::env::var_os("JMDC_CALIB_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root().join("../shared/datasets/cifar-10/cifar-10-batches-bin/test_batch.bin")
        });
    let n: usize = std::env::var("JMDC_CALIB_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let package = std::env::var_os("JMDC_CALIB_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(package_dir);
    let mut o = CalibrateOptions::new(package, images);
    o.limit = Some(n);
    o.threads = std::env::var("JMDC_CALIB_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let t0 = Instant::now();
    let (table, t) = jmdc_edge::calibrate::run_calibration_timed(&o).expect("calibration");
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "full grid: {} entries on {} images, {} threads, in {secs:.1} s ({:.2} ms/image)",
        table.entries.len(),
        table.dataset.images,
        o.threads,
        secs * 1e3 / table.dataset.images as f64
    );
    println!(
        "thread-seconds: head {:.1} s, codec {:.1} s, tail {:.1} s",
        t.head.as_secs_f64(),
        t.codec.as_secs_f64(),
        t.tail.as_secs_f64()
    );
    println!("{}", jmdc_edge::calibrate::summary(&table));
    if let Some(out) = std::env::var_os("JMDC_CALIB_OUT") {
        calibration::save(&table, std::path::Path::new(&out)).expect("save");
    }
}

/// The entropy-coded codecs: the accuracy of their fixed-width twin (same decoded tensor, which
/// `run_calibration` checks per image), and bytes measured as a mean that is smaller on these
/// ReLU tensors; the optimizer's candidates carry that mean.
#[test]
fn entropy_coded_entries_share_accuracy_and_measure_their_mean_bytes() {
    init_runtime();
    let mut o = CalibrateOptions::new(package_dir(), samples());
    o.keep_ratios = vec![1.0, 0.5];
    o.modes = vec![QuantMode::Bits(3), QuantMode::Coded(3)];
    o.variants = vec!["keep050".into()];
    o.splits = vec![3, 6];
    o.jpeg_qualities = Vec::new();
    o.progress = false;
    o.threads = 2;
    let table = run_calibration(&o).expect("calibration runs");
    assert_eq!(table.codecs, vec!["int3", "int3ac"]);
    let mut coded_seen = 0;
    for e in table.entries.iter().filter(|e| e.codec == "int3ac") {
        let twin = table
            .entries
            .iter()
            .find(|f| f.split == e.split && f.keep_ratio == e.keep_ratio && f.codec == "int3")
            .expect("fixed-width twin");
        assert_eq!(e.correct, twin.correct, "{e:?} vs {twin:?}");
        // Smaller than the fixed-width form, more than its 36-byte header.
        assert!(e.bytes < twin.bytes && e.bytes > 36, "{e:?} vs {twin:?}");
        coded_seen += 1;
    }
    assert_eq!(coded_seen, 4);
    let pkg = ModelPackage::load(&package_dir()).expect("package");
    let profile = jmdc_core::optimizer::Profile::new(
        pkg.variants()
            .iter()
            .filter(|v| v.name == "keep050")
            .map(|v| jmdc_core::optimizer::VariantProfile {
                name: v.name.clone(),
                edge_layer_us: vec![1.0; v.num_layers()],
                cloud_layer_us: vec![1.0; v.num_layers()],
                boundary_shapes: (0..=v.num_layers())
                    .map(|s| pkg.split_tensor_shape(&v.name, s).expect("shape").to_vec())
                    .collect(),
            })
            .collect(),
    );
    let candidates = table.candidates(&profile);
    let coded: Vec<_> = candidates
        .iter()
        .filter(|c| c.codec.is_some_and(|p| p.mode.is_coded()))
        .collect();
    assert_eq!(coded.len(), 4);
    for c in coded {
        let codec = c.codec.expect("codec");
        let e = table.entry("keep050", c.split, &codec).expect("entry");
        assert_eq!(c.mean_payload_bytes, Some(e.bytes as u32));
    }
}
