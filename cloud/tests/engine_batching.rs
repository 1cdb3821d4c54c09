//! The worker's engine with the real packages and ONNX Runtime: frames of many devices batched
//! and run as merged ranges answer exactly what the chain of layer sessions gives each frame
//! alone, the first frames of a split run as the chain (per-layer times for the edge's profiler)
//! while the merged range builds, and bad payloads in a batch fail alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jmdc_cloud::batch::policy::BatchConfig;
use jmdc_cloud::engine::{EngineOptions, TailEngine};
use jmdc_core::cifar::CifarFile;
use jmdc_core::codec::{self, CodecParams, DecodeLimits};
use jmdc_core::package::ModelPackage;
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::protocol::{ErrorKind, InferRequest, PayloadKind};
use jmdc_core::runner::{LayerRunner, RunnerOptions};
use ndarray::{ArrayD, IxDyn};

const MODEL: &str = "alexnet-cifar10";
const VARIANT: &str = "keep050";
const SPLIT: usize = 6;

fn packages() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/packages")
}

/// Encoded split tensors of the first `n` sample frames (f16, lossless enough to compare) and,
/// for each, the scores the chain gives that frame alone.
fn frames(n: usize) -> Vec<(Vec<u8>, Vec<f32>)> {
    let pkg = ModelPackage::load(&packages().join(MODEL)).expect("package");
    let options = RunnerOptions::default();
    let mut chain = LayerRunner::new(&pkg, VARIANT, 0..13, &options).expect("chain");
    let samples = CifarFile::open(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/samples/cifar10-test-256.bin"),
    )
    .expect("samples");
    let params = CodecParams {
        keep_ratio: 1.0,
        mode: jmdc_core::calibration::parse_codec("f16").expect("codec"),
    };
    samples
        .iter()
        .take(n)
        .map(|(_, px)| {
            let x = normalize_batch_chw_u8(&[&px[..]], [3, 32, 32], pkg.normalization())
                .expect("normalize")
                .into_dyn();
            let head = chain.run_range(0..SPLIT, x.view()).expect("head");
            let shape = head.shape()[1..].to_vec();
            let data: Vec<f32> = head.iter().copied().collect();
            let payload = codec::encode(&data, &shape, &params).expect("encode");
            // What the worker decodes, run alone through the chain.
            let decoded = codec::decode(&payload, &DecodeLimits::default()).expect("decode");
            let mut batched = vec![1];
            batched.extend_from_slice(&decoded.shape);
            let t = ArrayD::from_shape_vec(IxDyn(&batched), decoded.data).expect("shape");
            let scores = chain.run_range(SPLIT..13, t.view()).expect("tail");
            (payload, scores.iter().copied().collect())
        })
        .collect()
}

fn request(id: u64, payload: Vec<u8>) -> InferRequest {
    InferRequest {
        device_id: format!("device-{}", id % 7),
        frame_id: id,
        model: MODEL.into(),
        variant: VARIANT.into(),
        split: SPLIT as u16,
        payload_kind: PayloadKind::Feature,
        payload,
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4)
}

#[test]
fn batched_merged_answers_equal_each_frame_alone() {
    jmdc_core::runtime::init_onnxruntime(None).expect("ONNX Runtime");
    let frames = frames(16);
    let engine = TailEngine::load(
        &packages(),
        &EngineOptions {
            workers: 2,
            intra_op_threads: Some(1),
            batching: BatchConfig {
                max_batch: 8,
                max_wait: Duration::from_millis(2),
            },
            merged_cache_bytes: 256 << 20,
            profile_every: 0,
            ..EngineOptions::default()
        },
    )
    .expect("engine");

    // The split's first frame runs as the chain (the merged range starts building) and reports
    // per-layer times.
    let first = engine
        .infer_blocking(request(0, frames[0].0.clone()), Instant::now())
        .expect("first frame");
    assert_eq!(
        first.layer_us.len(),
        13 - SPLIT,
        "chain run with per-layer times"
    );
    assert!(close(&first.scores, &frames[0].1));
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.merged_stats().map_or(0, |s| s.ready) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(engine.merged_stats().map(|s| s.ready), Some(1));

    // 64 frames (16 images, four times each) at once, one corrupt payload among them.
    let before = engine.batch_stats();
    let mut waiting = Vec::new();
    for id in 0..64u64 {
        let mut payload = frames[id as usize % 16].0.clone();
        if id == 37 {
            payload.truncate(payload.len() / 2);
        }
        let answer = engine
            .submit(request(id, payload), Instant::now())
            .expect("queued");
        waiting.push((id, answer));
    }
    for (id, answer) in waiting {
        let reply = answer.blocking_recv().expect("answered");
        if id == 37 {
            let error = reply.expect_err("truncated payload refused");
            assert_eq!(error.kind, ErrorKind::BadPayload);
            assert_eq!(error.frame_id, Some(37));
            continue;
        }
        let result = reply.unwrap_or_else(|e| panic!("frame {id}: {e:?}"));
        assert_eq!(result.frame_id, id);
        assert!(
            close(&result.scores, &frames[id as usize % 16].1),
            "frame {id} got another frame's scores or wrong ones"
        );
        assert!(
            result.layer_us.is_empty(),
            "merged runs have no layer times"
        );
    }
    let after = engine.batch_stats();
    assert_eq!(after.frames - before.frames, 64);
    let batches = after.batches - before.batches;
    let cap = engine.batch_cap(MODEL, VARIANT, SPLIT as u16);
    println!("64 frames in {batches} batches; batch cap from the measured cost: {cap:?}");
    assert!(cap.is_some(), "a ready range has a measured cost");
    if cap > Some(1) {
        assert!(
            batches < 64,
            "64 frames queued at once ran in {batches} batches"
        );
    }

    // Unknown names and a split with nothing left are refused before queueing.
    let mut unknown = request(99, frames[0].0.clone());
    unknown.variant = "keep033".into();
    let refused = engine
        .submit(unknown, Instant::now())
        .expect_err("unknown variant");
    assert_eq!(refused.kind, ErrorKind::UnknownVariant);
    let mut past_end = request(100, frames[0].0.clone());
    past_end.split = 13;
    assert_eq!(
        engine
            .submit(past_end, Instant::now())
            .expect_err("no layer left")
            .kind,
        ErrorKind::BadSplit
    );
}

/// `runtime.execution_provider = "cuda"`: with a GPU build of ONNX Runtime and a GPU the tails run
/// there and answer what the CPU chain does; with the CPU-only library (what CI and the bundled
/// fetch script have) the worker refuses to start and says why, instead of silently using the CPU.
#[test]
fn cuda_runs_on_a_gpu_build_or_is_refused_with_a_reason() {
    jmdc_core::runtime::init_onnxruntime(None).expect("ONNX Runtime");
    let frames = frames(2);
    let options = EngineOptions {
        workers: 1,
        device: jmdc_core::runtime::ExecutionDevice::Cuda { device_id: 0 },
        ..EngineOptions::default()
    };
    match TailEngine::load(&packages(), &options) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("CUDA execution provider") && message.contains("onnxruntime-gpu"),
                "unclear refusal: {message}"
            );
            println!("CUDA not available here (expected with the CPU library): {message}");
        }
        Ok(engine) => {
            for (id, (payload, want)) in frames.into_iter().enumerate() {
                let got = engine
                    .infer_blocking(request(id as u64, payload), Instant::now())
                    .expect("answer on the GPU");
                assert!(
                    got.scores
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| (a - b).abs() <= 1e-3),
                    "GPU scores differ from the CPU chain"
                );
            }
            println!("ran on CUDA");
        }
    }
}
