//! End to end on loopback: real QUIC + TLS, the real cloud worker, the real model package.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{packages_dir, sample_file, Cloud};
use jmdc_core::cifar::CifarFile;
use jmdc_core::codec::{self, CodecParams, QuantMode};
use jmdc_core::package::ModelPackage;
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::protocol::{self, ErrorKind, InferRequest, PayloadKind, Response, ServerMessage};
use jmdc_core::runner::{FullModelRunner, LayerRunner, RunnerOptions};
use jmdc_edge::pipeline::{EdgePipeline, Frame};
use jmdc_edge::plan_spec::{CodecSpec, InputSpec, PlanSpec, SplitSpec};
use ndarray::{ArrayD, Axis};

const TIMEOUT: Duration = Duration::from_secs(10);

fn load_package() -> Arc<ModelPackage> {
    common::init_runtime();
    Arc::new(ModelPackage::load(&packages_dir().join("alexnet-cifar10")).expect("package loads"))
}

fn samples(n: usize) -> Vec<(u8, Vec<u8>)> {
    let file = CifarFile::open(&sample_file()).expect("sample file");
    file.iter().take(n).map(|(l, p)| (l, p.to_vec())).collect()
}

fn request(
    pkg: &ModelPackage,
    variant: &str,
    split: usize,
    frame_id: u64,
    kind: PayloadKind,
    payload: Vec<u8>,
) -> InferRequest {
    InferRequest {
        device_id: "test".into(),
        frame_id,
        model: pkg.name().to_owned(),
        variant: variant.to_owned(),
        split: u16::try_from(split).expect("split fits"),
        payload_kind: kind,
        payload,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// An uncompressed (f32) split gives the full model's logits within 1e-4 for every split point of
/// every variant; split 0 sends the 8-bit image and the worker normalises it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f32_split_matches_full_model_for_every_split_and_variant() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let client = cloud.client().await;
    let images = samples(3);
    let shape: [usize; 3] = pkg.input_shape().try_into().expect("image input");
    let layers = pkg.num_layers();
    let mut checked = 0;
    for variant in pkg.variant_names().map(str::to_owned).collect::<Vec<_>>() {
        let options = RunnerOptions::default();
        let mut full = FullModelRunner::new(&pkg, &variant, &options).expect("full model");
        let mut edge = LayerRunner::new(&pkg, &variant, 0..layers, &options).expect("runner");
        for (i, (_, pixels)) in images.iter().enumerate() {
            let input = normalize_batch_chw_u8(&[pixels], shape, pkg.normalization())
                .expect("normalise")
                .into_dyn();
            let reference: Vec<f32> = full
                .run(input.view())
                .expect("full")
                .iter()
                .copied()
                .collect();
            for split in 0..layers {
                let (kind, payload) = if split == 0 {
                    (PayloadKind::Image, pixels.clone())
                } else {
                    let head: ArrayD<f32> = edge.run_range(0..split, input.view()).expect("head");
                    let tensor = head.index_axis(Axis(0), 0).to_owned();
                    let params = CodecParams {
                        keep_ratio: 1.0,
                        mode: QuantMode::F32,
                    };
                    let data: Vec<f32> = tensor.iter().copied().collect();
                    let bytes = codec::encode(&data, tensor.shape(), &params).expect("encode");
                    (PayloadKind::Feature, bytes)
                };
                let req = request(
                    &pkg,
                    &variant,
                    split,
                    (split * 100 + i) as u64,
                    kind,
                    payload,
                );
                let Response::Result(result) = client.infer(&req, TIMEOUT).await.expect("reply")
                else {
                    panic!("worker refused {variant} split {split}");
                };
                assert_eq!(result.frame_id, req.frame_id);
                let diff = max_abs_diff(&result.scores, &reference);
                assert!(
                    diff <= 1e-4,
                    "{variant} split {split} image {i}: max |Δlogit| = {diff}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4 * 13 * 3, "checked only {checked} cases");
    client.close().await;
    cloud.stop().await;
}

async fn top1_over_samples(
    pkg: &Arc<ModelPackage>,
    cloud: &Cloud,
    plan: PlanSpec,
    frames: &[Frame],
) -> (usize, usize) {
    let client = cloud.client().await;
    let mut pipeline = EdgePipeline::new(pkg.clone(), "test".into(), TIMEOUT, None);
    let mut correct = 0;
    let mut fallbacks = 0;
    for frame in frames {
        let (record, _) = pipeline
            .process(frame, &plan, Some(&client))
            .await
            .expect("frame");
        fallbacks += usize::from(record.fallback);
        correct += usize::from(record.correct() == Some(true));
    }
    client.close().await;
    (correct, fallbacks)
}

/// The 8-bit codec loses at most 0.5 points of top-1 against f32 on the 256 bundled images, at
/// every split point of the full model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_codec_costs_at_most_half_a_point_at_every_split() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let frames: Vec<Frame> = samples(256)
        .into_iter()
        .enumerate()
        .map(|(i, (label, pixels))| Frame::new(i as u64, Some(label), pixels))
        .collect();
    let n = frames.len() as f64;
    for split in 1..pkg.num_layers() {
        let plan = |mode| PlanSpec {
            variant: "keep100".into(),
            split: SplitSpec::After(split),
            keep_ratio: 1.0,
            codec: CodecSpec(mode),
            input: InputSpec::Raw,
        };
        let (exact, f1) = top1_over_samples(&pkg, &cloud, plan(QuantMode::F32), &frames).await;
        let (int8, f2) = top1_over_samples(&pkg, &cloud, plan(QuantMode::Bits(8)), &frames).await;
        assert_eq!(
            f1 + f2,
            0,
            "no frame may fall back to the edge on a healthy loopback"
        );
        let loss_points = (exact as f64 - int8 as f64) / n * 100.0;
        println!("split {split}: f32 {exact}/256, int8 {int8}/256, loss {loss_points:.2} points");
        assert!(
            loss_points <= 0.5,
            "split {split}: int8 loses {loss_points:.2} points (f32 {exact}, int8 {int8})"
        );
    }
    cloud.stop().await;
}

/// Garbage gets an error reply; a good request on the same connection is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_request_gets_error_and_connection_stays_up() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let client = cloud.client().await;

    for garbage in [
        &b"this is not a jmdc message"[..],
        &[0u8; 3][..],
        b"JMDC\x09\x01junk",
    ] {
        let reply = client
            .exchange(garbage, TIMEOUT)
            .await
            .expect("reply to garbage");
        match protocol::decode_server_message(&reply).expect("well-formed error reply") {
            ServerMessage::Error(e) => assert!(
                matches!(e.kind, ErrorKind::Malformed | ErrorKind::UnsupportedVersion),
                "unexpected kind {:?}",
                e.kind
            ),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    // A well-formed request with a corrupt payload is a BadPayload error, not a dropped connection.
    let bad = request(
        &pkg,
        "keep100",
        6,
        7,
        PayloadKind::Feature,
        vec![1, 2, 3, 4],
    );
    match client.infer(&bad, TIMEOUT).await.expect("reply") {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadPayload),
        Response::Result(_) => panic!("corrupt payload accepted"),
    }
    // Finite but extreme values decode, then overflow inside the network: a typed error, not NaN
    // scores in a successful reply.
    let shape = pkg
        .split_tensor_shape("keep100", 6)
        .expect("shape")
        .to_vec();
    let huge = vec![3e38f32; shape.iter().product()];
    let params = CodecParams {
        keep_ratio: 1.0,
        mode: QuantMode::F32,
    };
    let extreme = request(
        &pkg,
        "keep100",
        6,
        10,
        PayloadKind::Feature,
        codec::encode(&huge, &shape, &params).expect("encode"),
    );
    match client.infer(&extreme, TIMEOUT).await.expect("reply") {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BadPayload);
            assert!(e.message.contains("not finite"), "{}", e.message);
        }
        Response::Result(r) => panic!("extreme payload answered with scores {:?}", r.scores),
    }
    let unknown = request(&pkg, "keep999", 6, 8, PayloadKind::Feature, vec![]);
    match client.infer(&unknown, TIMEOUT).await.expect("reply") {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::UnknownVariant),
        Response::Result(_) => panic!("unknown variant accepted"),
    }

    let (_, pixels) = samples(1).remove(0);
    let good = request(&pkg, "keep100", 0, 9, PayloadKind::Image, pixels);
    match client.infer(&good, TIMEOUT).await.expect("reply") {
        Response::Result(r) => {
            assert_eq!(r.frame_id, 9);
            assert_eq!(r.scores.len(), pkg.classes().len());
        }
        Response::Error(e) => panic!("good request refused after garbage: {e:?}"),
    }
    client.close().await;
    cloud.stop().await;
}

/// With no worker listening, every frame is still answered: the edge finishes it and marks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cloud_frames_finish_on_edge() {
    let pkg = load_package();
    let plan = PlanSpec {
        variant: "keep100".into(),
        split: SplitSpec::After(6),
        keep_ratio: 1.0,
        codec: CodecSpec(QuantMode::Bits(8)),
        input: InputSpec::Raw,
    };
    let mut pipeline = EdgePipeline::new(pkg.clone(), "test".into(), TIMEOUT, None);
    for (i, (label, pixels)) in samples(8).into_iter().enumerate() {
        let frame = Frame::new(i as u64, Some(label), pixels);
        let (record, _) = pipeline.process(&frame, &plan, None).await.expect("frame");
        assert!(
            record.fallback,
            "frame {i} should be marked as finished on the edge"
        );
        assert!(record.predicted < pkg.classes().len());
    }
}
