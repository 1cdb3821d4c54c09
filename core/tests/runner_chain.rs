//! Per-layer chains against the fused model, with the real ONNX Runtime library and real
//! package files.
//!
//! Needs `libonnxruntime.so.1.31.1` (run `scripts/fetch-onnxruntime.sh` first; it lands in
//! `.cache/onnxruntime/<arch>/`, which `init_onnxruntime` finds) and the package
//! `$JMDC_TEST_PACKAGE` or `models/packages/alexnet-cifar10`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayD, Axis, IxDyn};

use jmdc_core::cifar::CifarFile;
use jmdc_core::package::{ModelPackage, MANIFEST_FILE};
use jmdc_core::preprocess::{normalize_batch_chw_u8, normalize_chw_u8};
use jmdc_core::runner::{FullModelRunner, LayerRunner, RunnerError, RunnerOptions, RunnerPool};
use jmdc_core::runtime::{init_onnxruntime, init_onnxruntime_with, RuntimeOptions};

const TOL: f32 = 1e-4;
const SAMPLES: usize = 4;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn init() {
    if let Err(e) = init_onnxruntime(None) {
        panic!("these tests need ONNX Runtime: {e}");
    }
}

fn package() -> Arc<ModelPackage> {
    let dir = std::env::var_os("JMDC_TEST_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/packages/alexnet-cifar10"));
    assert!(
        dir.join(MANIFEST_FILE).is_file(),
        "model package not found at {} (build it under models/, or set JMDC_TEST_PACKAGE to a package folder)",
        dir.display()
    );
    Arc::new(ModelPackage::load(&dir).unwrap_or_else(|e| panic!("{e}")))
}

/// The first `SAMPLES` test images, normalised: (one batch-1 tensor per image, one batch).
fn samples(pkg: &ModelPackage) -> (Vec<Array4<f32>>, Array4<f32>) {
    let root = repo_root();
    let candidates = [
        root.join("models/samples/cifar10-test-256.bin"),
        root.join("../shared/datasets/cifar-10/cifar-10-batches-bin/test_batch.bin"),
    ];
    let path = candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no CIFAR-10 sample file; tried {candidates:?}"));
    let file = CifarFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let shape: [usize; 3] = pkg
        .input_shape()
        .try_into()
        .unwrap_or_else(|_| panic!("input shape {:?} is not CHW", pkg.input_shape()));
    let images: Vec<&[u8]> = file.iter().take(SAMPLES).map(|(_, px)| &px[..]).collect();
    let singles = images
        .iter()
        .map(|px| normalize_chw_u8(px, shape, pkg.normalization()).expect("normalize"))
        .collect();
    let batch = normalize_batch_chw_u8(&images, shape, pkg.normalization()).expect("batch");
    (singles, batch)
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn chain_equals_full_model_for_every_variant_and_split() {
    init();
    let pkg = package();
    let (singles, batch) = samples(&pkg);
    let opts = RunnerOptions::default();
    let l = pkg.num_layers();
    for v in pkg.variants() {
        let mut full = FullModelRunner::new(&pkg, &v.name, &opts).expect("full runner");
        let refs: Vec<ArrayD<f32>> = singles
            .iter()
            .map(|x| full.run(x.view().into_dyn()).expect("full run"))
            .collect();
        let ref_batch = full.run(batch.view().into_dyn()).expect("full batch");
        assert_eq!(ref_batch.shape(), &[SAMPLES, pkg.classes().len()]);

        // Whole chain 0..L, batch 1 and batch N, with timings.
        let mut chain = LayerRunner::new(&pkg, &v.name, 0..l, &opts).expect("chain");
        for (x, r) in singles.iter().zip(&refs) {
            let (out, times) = chain.run_timed(x.view().into_dyn()).expect("chain run");
            assert_eq!(times.len(), l);
            assert_eq!(chain.last_timings().len(), l);
            let d = max_abs_diff(&out, r);
            assert!(d < TOL, "{}: chain 0..{l} differs from full by {d}", v.name);
        }
        let out = chain.run(batch.view().into_dyn()).expect("chain batch");
        let d = max_abs_diff(&out, &ref_batch);
        assert!(d < TOL, "{}: batch chain differs by {d}", v.name);
        // The batch result equals the per-image results.
        for (i, r) in refs.iter().enumerate() {
            let row = out.index_axis(Axis(0), i).insert_axis(Axis(0)).to_owned();
            assert!(max_abs_diff(&row, r) < TOL);
        }

        // Every split s: edge [0, s) then cloud [s, L).
        for s in 1..l {
            let mut edge = LayerRunner::new(&pkg, &v.name, 0..s, &opts).expect("edge");
            let mut cloud = LayerRunner::new(&pkg, &v.name, s..l, &opts).expect("cloud");
            assert_eq!(edge.output_shape(), cloud.input_shape());
            assert_eq!(
                cloud.input_shape(),
                pkg.split_tensor_shape(&v.name, s).expect("split shape")
            );
            let mid = edge.run(batch.view().into_dyn()).expect("edge run");
            let mut want = vec![SAMPLES];
            want.extend_from_slice(pkg.split_tensor_shape(&v.name, s).expect("shape"));
            assert_eq!(mid.shape(), want.as_slice());
            let out = cloud.run(mid.view()).expect("cloud run");
            let d = max_abs_diff(&out, &ref_batch);
            assert!(d < TOL, "{}: split {s} differs from full by {d}", v.name);
        }
    }
}

#[test]
fn wrong_input_shape_is_an_error() {
    init();
    let pkg = package();
    let v = pkg.variants()[0].name.clone();
    let l = pkg.num_layers();
    let opts = RunnerOptions::default();
    let mut chain = LayerRunner::new(&pkg, &v, 0..l, &opts).expect("chain");
    let mut full = FullModelRunner::new(&pkg, &v, &opts).expect("full");
    let [c, h, w] = [
        pkg.input_shape()[0],
        pkg.input_shape()[1],
        pkg.input_shape()[2],
    ];
    let bad_shapes: Vec<Vec<usize>> = vec![
        vec![c, h, w],        // no batch dimension
        vec![1, c, h, w + 1], // wrong width
        vec![1, c + 1, h, w], // wrong channels
        vec![0, c, h, w],     // empty batch
        vec![1, 1, c, h, w],  // extra dimension
    ];
    for s in &bad_shapes {
        let x = ArrayD::<f32>::zeros(IxDyn(s));
        let e = chain.run(x.view()).expect_err("chain must reject");
        assert!(matches!(e, RunnerError::InputShape { .. }), "{s:?}: {e:?}");
        assert!(e.to_string().contains("input shape"), "{e}");
        let e = full.run(x.view()).expect_err("full must reject");
        assert!(matches!(e, RunnerError::InputShape { .. }), "{s:?}: {e:?}");
    }
    // A mid-model runner wants the split tensor, not the image.
    let mut tail = LayerRunner::new(&pkg, &v, 1..l, &opts).expect("tail");
    let img = ArrayD::<f32>::zeros(IxDyn(&[1, c, h, w]));
    if pkg.split_tensor_shape(&v, 1).expect("shape") != pkg.input_shape() {
        assert!(matches!(
            tail.run(img.view()),
            Err(RunnerError::InputShape { .. })
        ));
    }
    // A non-contiguous (transposed) view with the right shape still works.
    let mut t = ArrayD::<f32>::zeros(IxDyn(&[1, c, w, h]));
    t.swap_axes(2, 3);
    assert!(chain.run(t.view()).is_ok());
}

#[test]
fn bad_ranges_and_variants_are_errors() {
    init();
    let pkg = package();
    let v = pkg.variants()[0].name.clone();
    let l = pkg.num_layers();
    let opts = RunnerOptions::default();
    for (a, b) in [(0, 0), (1, 1), (2, 1), (0, l + 1), (l, l)] {
        let r = a..b;
        let e = LayerRunner::new(&pkg, &v, r.clone(), &opts).expect_err("bad range");
        assert!(matches!(e, RunnerError::BadRange { .. }), "{r:?}: {e:?}");
    }
    let e = LayerRunner::new(&pkg, "nope", 0..1, &opts).expect_err("bad variant");
    assert!(e.to_string().contains("nope"), "{e}");
}

/// A layer file whose declared shapes disagree with the manifest fails at load, naming the file.
#[test]
fn swapped_layer_file_is_detected_at_load() {
    init();
    let src = package();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pkg");
    copy_dir(src.dir(), &dir);
    let mpath = dir.join(MANIFEST_FILE);
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).expect("read")).expect("json");
    let vdir = dir.join(m["variants"][0]["dir"].as_str().expect("dir"));
    let f0 = m["variants"][0]["layers"][0]["file"]
        .as_str()
        .expect("f0")
        .to_string();
    let f2 = m["variants"][0]["layers"][2]["file"]
        .as_str()
        .expect("f2")
        .to_string();
    std::fs::copy(vdir.join(&f2), vdir.join(&f0)).expect("copy");
    let bytes = std::fs::read(vdir.join(&f0)).expect("read");
    m["variants"][0]["layers"][0]["sha256"] = jmdc_core::package::sha256_hex(&bytes).into();
    std::fs::write(&mpath, serde_json::to_string(&m).expect("ser")).expect("write");
    let pkg = ModelPackage::load(&dir).expect("hashes match the manifest");
    let v = pkg.variants()[0].name.clone();
    let e = LayerRunner::new(&pkg, &v, 0..1, &RunnerOptions::default()).expect_err("mismatch");
    assert!(matches!(e, RunnerError::ModelMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(&f0), "{e}");
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

#[test]
fn pool_serves_concurrent_callers() {
    init();
    let pkg = package();
    let v = pkg.variants()[0].name.clone();
    let l = pkg.num_layers();
    let (singles, _) = samples(&pkg);
    let opts = RunnerOptions::default();
    let mut full = FullModelRunner::new(&pkg, &v, &opts).expect("full");
    let want = full.run(singles[0].view().into_dyn()).expect("ref");
    let pool = RunnerPool::build(2, || LayerRunner::new(&pkg, &v, 0..l, &opts)).expect("pool");
    assert_eq!(pool.capacity(), 2);
    let x = Arc::new(singles[0].clone());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            let x = Arc::clone(&x);
            std::thread::spawn(move || {
                let mut r = pool.checkout().expect("checkout");
                r.run(x.view().into_dyn()).expect("run")
            })
        })
        .collect();
    for h in handles {
        let out = h.join().expect("thread");
        assert!(max_abs_diff(&out, &want) < TOL);
    }
    let a = pool.try_checkout().expect("a");
    let b = pool.try_checkout().expect("b");
    assert!(pool.try_checkout().is_none(), "both busy: overload");
    drop((a, b));
    assert_eq!(pool.idle(), 2);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Timing of the fused model against the per-layer chain, batch 1 (run with
/// `cargo test --release -p jmdc-core --test runner_chain -- --ignored --nocapture`;
/// `JMDC_TEST_THREADS=n` sets the shared intra-op pool size, default 1).
#[test]
#[ignore = "timing report, not a check"]
fn timing_chain_vs_full() {
    let threads = std::env::var("JMDC_TEST_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let rt = RuntimeOptions {
        intra_op_threads: threads,
        ..RuntimeOptions::default()
    };
    if let Err(e) = init_onnxruntime_with(None, &rt) {
        panic!("this test needs ONNX Runtime: {e}");
    }
    println!("intra-op threads (shared pool): {threads}");
    let pkg = package();
    let (singles, _) = samples(&pkg);
    let x = singles[0].view().into_dyn();
    let opts = RunnerOptions::default();
    let l = pkg.num_layers();
    let iters = 300;
    for v in pkg.variants() {
        let t0 = Instant::now();
        let mut full = FullModelRunner::new(&pkg, &v.name, &opts).expect("full");
        let t_full_load = t0.elapsed();
        let t0 = Instant::now();
        let mut chain = LayerRunner::new(&pkg, &v.name, 0..l, &opts).expect("chain");
        let t_chain_load = t0.elapsed();
        for _ in 0..20 {
            full.run(x.view()).expect("warm");
            chain.run(x.view()).expect("warm");
        }
        let mut tf = Vec::new();
        let mut tc = Vec::new();
        let mut per_layer: Vec<Vec<Duration>> = vec![Vec::new(); l];
        for _ in 0..iters {
            let t = Instant::now();
            full.run(x.view()).expect("full");
            tf.push(t.elapsed());
            let t = Instant::now();
            let (_, layers) = chain.run_timed(x.view()).expect("chain");
            tc.push(t.elapsed());
            for (i, d) in layers.into_iter().enumerate() {
                per_layer[i].push(d);
            }
        }
        let (mf, mc) = (median(tf), median(tc));
        let layers: Vec<String> = per_layer
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                format!(
                    "{}:{:.0}",
                    pkg.layers()[i].name,
                    median(d).as_secs_f64() * 1e6
                )
            })
            .collect();
        println!(
            "{} {}: full {:.1} us, chain {:.1} us (x{:.2}); session build full {:.1} ms, chain {:.1} ms; per-layer us [{}]",
            pkg.name(),
            v.name,
            mf.as_secs_f64() * 1e6,
            mc.as_secs_f64() * 1e6,
            mc.as_secs_f64() / mf.as_secs_f64(),
            t_full_load.as_secs_f64() * 1e3,
            t_chain_load.as_secs_f64() * 1e3,
            layers.join(" ")
        );
    }
}

/// Sessions with their own intra-op pool (instead of the shared one) give the same results.
#[test]
fn own_thread_pool_option_matches_shared_pool() {
    init();
    let pkg = package();
    let v = pkg.variants()[0].name.clone();
    let l = pkg.num_layers();
    let (singles, _) = samples(&pkg);
    let x = singles[0].view().into_dyn();
    let mut shared = LayerRunner::new(&pkg, &v, 0..l, &RunnerOptions::default()).expect("shared");
    let own_opts = RunnerOptions {
        intra_op_threads: Some(1),
        load_from_file: true,
        ..RunnerOptions::default()
    };
    let mut own = LayerRunner::new(&pkg, &v, 0..l, &own_opts).expect("own pool, from file");
    let a = shared.run(x.view()).expect("shared run");
    let b = own.run(x.view()).expect("own run");
    assert!(max_abs_diff(&a, &b) < TOL);
}
