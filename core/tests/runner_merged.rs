//! Merged layer ranges (one session composed from the per-layer files) against the chain of
//! per-layer sessions and the fused `full.onnx`, on both bundled packages (AlexNet with float32
//! weights, VGG16 with int8 weights), with the real ONNX Runtime library.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

use jmdc_core::cifar::CifarFile;
use jmdc_core::package::{LoadOptions, ModelPackage, VerifyMode};
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::runner::{FullModelRunner, LayerRunner, MergedRunner, RunnerError, RunnerOptions};
use jmdc_core::runtime::init_onnxruntime;

/// The merged model computes exactly what the chain computes, in the same operator order; what
/// may differ is only ONNX Runtime's choice of kernels once it sees the whole graph.
const TOL: f32 = 1e-5;

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

fn package(name: &str) -> ModelPackage {
    let dir = repo_root().join("models/packages").join(name);
    let options = LoadOptions {
        verify: VerifyMode::Lazy,
    };
    ModelPackage::load_with(&dir, &options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The first `n` bundled test images, normalised as `pkg` says: `[n, 3, 32, 32]`.
fn images(pkg: &ModelPackage, n: usize) -> ArrayD<f32> {
    let path = repo_root().join("models/samples/cifar10-test-256.bin");
    let file = CifarFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let px: Vec<&[u8]> = file.iter().take(n).map(|(_, p)| &p[..]).collect();
    normalize_batch_chw_u8(&px, [3, 32, 32], pkg.normalization())
        .expect("normalize")
        .into_dyn()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The tensor entering layer `start`: the chain's output of `0..start` (the input for 0).
fn entering(pkg: &ModelPackage, variant: &str, start: usize, x: &ArrayD<f32>) -> ArrayD<f32> {
    if start == 0 {
        return x.clone();
    }
    let mut head =
        LayerRunner::new(pkg, variant, 0..start, &RunnerOptions::default()).expect("head");
    head.run(x.view()).expect("head runs")
}

#[test]
fn merged_whole_model_equals_full_onnx_for_every_alexnet_variant() {
    init();
    let pkg = package("alexnet-cifar10");
    let x = images(&pkg, 8);
    let l = pkg.num_layers();
    for v in pkg.variants() {
        let opts = RunnerOptions::default();
        let mut merged = MergedRunner::new(&pkg, &v.name, 0..l, &opts).expect("merged");
        let mut full = FullModelRunner::new(&pkg, &v.name, &opts).expect("full");
        let got = merged.run(x.view()).expect("merged runs");
        let want = full.run(x.view()).expect("full runs");
        let d = max_abs_diff(&got, &want);
        println!(
            "{} 0..{l}: merged vs full.onnx max |diff| {d:.2e} ({} B model)",
            v.name,
            merged.model_bytes()
        );
        assert!(d <= TOL, "{}: max |diff| {d}", v.name);
    }
}

#[test]
fn merged_ranges_equal_the_chain_on_both_packages() {
    init();
    for name in ["alexnet-cifar10", "vgg16-cifar10"] {
        let pkg = package(name);
        let x = images(&pkg, 4);
        let l = pkg.num_layers();
        for v in pkg.variants().iter().take(2) {
            // Heads, tails and an inner range of each variant.
            for range in [0..1, 0..l / 2, l / 2..l, 1..l - 1, 0..l] {
                let input = entering(&pkg, &v.name, range.start, &x);
                let opts = RunnerOptions::default();
                let mut chain =
                    LayerRunner::new(&pkg, &v.name, range.clone(), &opts).expect("chain");
                let mut merged =
                    MergedRunner::new(&pkg, &v.name, range.clone(), &opts).expect("merged");
                assert_eq!(merged.input_shape(), chain.input_shape());
                assert_eq!(merged.output_shape(), chain.output_shape());
                let want = chain.run(input.view()).expect("chain runs");
                let got = merged.run(input.view()).expect("merged runs");
                let d = max_abs_diff(&got, &want);
                assert!(d <= TOL, "{name}/{} {range:?}: max |diff| {d}", v.name);
            }
        }
    }
}

#[test]
fn bad_ranges_and_inputs_are_refused() {
    init();
    let pkg = package("alexnet-cifar10");
    let opts = RunnerOptions::default();
    let l = pkg.num_layers();
    #[allow(clippy::reversed_empty_ranges)]
    let ranges = [3..3, 5..2, 0..l + 1];
    for range in ranges {
        let e = MergedRunner::new(&pkg, "keep100", range.clone(), &opts).expect_err("bad range");
        assert!(matches!(e, RunnerError::BadRange { .. }), "{range:?}: {e}");
    }
    let e = MergedRunner::new(&pkg, "keep999", 0..2, &opts).expect_err("unknown variant");
    assert!(e.to_string().contains("keep999"), "{e}");
    let mut merged = MergedRunner::new(&pkg, "keep100", 2..5, &opts).expect("merged");
    let wrong = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 32, 32]));
    let e = merged
        .run(wrong.view())
        .expect_err("the range starts at layer 2");
    assert!(matches!(e, RunnerError::InputShape { .. }), "{e}");
}

mod cache {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use jmdc_core::runner::{LayerRunner, MergedCache, MergedCacheConfig, RunnerOptions};

    use super::{images, init, max_abs_diff, package, TOL};

    /// Polls until `range` is ready (bounded: 60 s).
    fn wait_ready(cache: &MergedCache, variant: &str, range: std::ops::Range<usize>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if cache.is_ready("alexnet-cifar10", variant, range.clone()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn cache(budget_bytes: usize) -> MergedCache {
        MergedCache::new(MergedCacheConfig {
            sessions: 2,
            budget_bytes,
            options: RunnerOptions::default(),
        })
        .expect("builder thread")
    }

    #[test]
    fn a_miss_builds_in_the_background_and_later_checkouts_run_merged() {
        init();
        let pkg = Arc::new(package("alexnet-cifar10"));
        let cache = cache(256 << 20);
        assert!(
            cache.checkout(&pkg, "keep050", 6..13).is_none(),
            "first use misses"
        );
        assert!(
            wait_ready(&cache, "keep050", 6..13),
            "range never became ready"
        );
        let x = images(&pkg, 4);
        let mut chain =
            LayerRunner::new(&pkg, "keep050", 0..13, &RunnerOptions::default()).expect("chain");
        let entering = chain.run_range(0..6, x.view()).expect("head");
        let want = chain.run_range(6..13, entering.view()).expect("tail");
        let mut a = cache.checkout(&pkg, "keep050", 6..13).expect("ready");
        let b = cache
            .checkout(&pkg, "keep050", 6..13)
            .expect("a second session");
        assert!(
            cache.checkout(&pkg, "keep050", 6..13).is_none(),
            "only two sessions per range"
        );
        drop(b);
        let got = a.run(entering.view()).expect("merged batch of 4");
        assert!(max_abs_diff(&got, &want) <= TOL);
        let cost = cache
            .cost("alexnet-cifar10", "keep050", 6..13)
            .expect("measured when built");
        assert!(cost.single > Duration::ZERO && cost.batched > cost.single);
        let stats = cache.stats();
        assert_eq!((stats.built, stats.ready, stats.failed), (1, 1, 0));
        assert_eq!(stats.hits, 2);
        assert!(stats.bytes > 0);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_refuses_what_never_fits() {
        init();
        let pkg = Arc::new(package("alexnet-cifar10"));
        // Learn one range's accounted size, then allow a little more than one.
        let probe = cache(256 << 20);
        let _ = probe.checkout(&pkg, "keep025", 6..13);
        assert!(wait_ready(&probe, "keep025", 6..13));
        let one = probe.stats().bytes;
        let cache = cache(one + one / 2);
        let _ = cache.checkout(&pkg, "keep025", 6..13);
        assert!(wait_ready(&cache, "keep025", 6..13));
        let _ = cache.checkout(&pkg, "keep025", 7..13);
        assert!(wait_ready(&cache, "keep025", 7..13));
        assert!(
            !cache.is_ready("alexnet-cifar10", "keep025", 6..13),
            "the older range makes room"
        );
        let stats = cache.stats();
        assert_eq!((stats.built, stats.evicted, stats.ready), (2, 1, 1));
        assert!(stats.bytes <= one + one / 2);

        // The whole keep100 model is far larger than this budget: refused, served by the chain.
        let _ = cache.checkout(&pkg, "keep100", 0..13);
        let deadline = Instant::now() + Duration::from_secs(60);
        while cache.stats().failed == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cache.stats().failed, 1);
        assert!(cache.checkout(&pkg, "keep100", 0..13).is_none());
        assert!(cache.is_ready("alexnet-cifar10", "keep025", 7..13));
    }
}
